//! Capacity end to end: a rep with room for 2 call-now tasks a day and 4 hot leads gets
//! the 2 highest-scored today; the other 2 wait (status says so) and get their tasks,
//! once each, when the pipeline's clock passes into the next day. On a weekend (and a
//! holiday) every crossing waits for the next working day.

use crate::common;

use std::time::Duration;

use chrono::{Datelike, Timelike};

use common::{Daemon, Options};
use leadscore::config::{CapacitySection, Config};
use leadscore::status::{self, PortalSpec};

/// Room for 2 tasks a day on the given working days, no holidays.
fn two_a_day(working_days: Vec<String>) -> CapacitySection {
    CapacitySection {
        per_rep_per_day: 2,
        fallback_responsible: None,
        utc_offset: None,
        working_days: Some(working_days),
        holidays: Vec::new(),
    }
}

/// The week's days but `off` (none: every day).
fn week_without(off: Option<chrono::Weekday>) -> Vec<String> {
    ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        .into_iter()
        .filter(|d| off.is_none() || leadscore::config::weekday_of(d) != off)
        .map(String::from)
        .collect()
}

/// Room for 2 tasks a day, every day of the week (the test runs on any weekday).
fn capacity_two(config: &mut Config) {
    config.portals[0].task.capacity = Some(two_a_day(week_without(None)));
}

/// A hot lead for rep 3: the strong lead with its headcount and region varied, plus a
/// demo request (+20).
fn hot_lead(d: &Daemon, n: usize, employees: &str, region: &str) -> u64 {
    let id = d.add_lead_of(n, employees, region);
    d.add_demo_request(id);
    id
}

/// `n` hot leads of four different scores (at most 4), each announced by its event.
async fn hot_leads(d: &Daemon, n: usize) -> Vec<u64> {
    let shapes = [
        ("50", "Москва"),
        ("240", "Москва"),
        ("600", "Москва"),
        ("240", "Магадан"),
    ];
    let mut leads = Vec::new();
    for (i, (employees, region)) in shapes.into_iter().take(n).enumerate() {
        leads.push(hot_lead(d, i + 1, employees, region));
    }
    for &id in &leads {
        let (code, _) = d.post(&d.lead_event(id)).await;
        assert_eq!(code, 200);
    }
    leads
}

fn report(d: &Daemon, config: &Config) -> status::StatusReport {
    let specs = vec![PortalSpec {
        id: config.portals[0].id.clone(),
        crm: "bitrix24".into(),
        capacity: config.portals[0].task.capacity.clone(),
        stages: Default::default(),
    }];
    status::collect(d.store(), &specs, &[], None, d.pipeline().now()).unwrap()
}

/// Wait (bounded) until the sandbox holds `n` tasks, then for the daemon to settle.
async fn tasks_reach(d: &Daemon, n: usize) {
    for _ in 0..300 {
        if d.sandbox.tasks().len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    d.settle().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_day_makes_the_rest_wait_for_the_next_one_highest_first() {
    // No webhooks and a 10-minute window: the four leads become due together, in one turn.
    let d = Daemon::start(Options {
        coalesce_ms: 600_000,
        bind_events: false,
        configure: Some(capacity_two),
        ..Options::default()
    })
    .await;
    let leads: [u64; 4] = hot_leads(&d, 4).await.try_into().unwrap();
    d.pipeline().advance_clock(Duration::from_secs(660));
    d.settle().await;

    let mut scores: Vec<(i64, u64)> = leads
        .iter()
        .map(|&id| (d.crm_score(id).expect("scored"), id))
        .collect();
    scores.sort_by(|a, b| b.cmp(a));
    assert!(scores.iter().all(|(s, _)| *s > 70), "all hot: {scores:?}");
    let distinct: std::collections::BTreeSet<i64> = scores.iter().map(|(s, _)| *s).collect();
    assert_eq!(distinct.len(), 4, "four different scores: {scores:?}");
    let holders = |d: &Daemon| -> Vec<u64> {
        scores
            .iter()
            .filter(|(_, id)| d.tasks_for(*id) > 0)
            .map(|(_, id)| *id)
            .collect()
    };
    assert_eq!(d.sandbox.tasks().len(), 2, "two tasks today");
    assert_eq!(
        holders(&d),
        vec![scores[0].1, scores[1].1],
        "the highest first"
    );

    let r = report(&d, &d.config);
    let cap = &r.portals[0].capacity;
    assert_eq!(cap.len(), 1, "{cap:?}");
    assert_eq!(
        (cap[0].rep.as_str(), cap[0].today, cap[0].waiting),
        ("3", 2, 2)
    );
    let text = status::render(&r);
    assert!(
        text.contains("rep 3 2/2 tasks today, OVER CAPACITY: 2 waiting"),
        "{text}"
    );

    // The next day: the waiting two get their tasks, each once.
    d.pipeline().advance_clock(Duration::from_secs(86_400));
    tasks_reach(&d, 4).await;
    assert_eq!(d.sandbox.tasks().len(), 4);
    for id in leads {
        assert_eq!(d.tasks_for(id), 1, "lead {id} has exactly one task");
    }
    let r = report(&d, &d.config);
    let cap = &r.portals[0].capacity;
    assert_eq!((cap[0].today, cap[0].waiting), (2, 0), "{cap:?}");

    // And nothing more on the day after.
    d.pipeline().advance_clock(Duration::from_secs(86_400));
    tokio::time::sleep(Duration::from_millis(500)).await;
    d.settle().await;
    assert_eq!(d.sandbox.tasks().len(), 4);
}

/// Crossings on a day off wait for the next working day's start; then they get their
/// tasks, once each and within the day's capacity. (Today is made the day off, so the
/// leads' behaviour does not decay while the clock moves days ahead.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crossings_on_a_day_off_wait_for_the_next_working_day() {
    let d = Daemon::start(Options {
        coalesce_ms: 600_000,
        bind_events: false,
        ..Options::default()
    })
    .await;
    let ahead = Duration::from_secs(660);
    let today = (d.pipeline().now() + chrono::Duration::seconds(660)).weekday();
    let mut config = d.config.clone();
    config.portals[0].task.capacity = Some(two_a_day(week_without(Some(today))));
    d.pipeline().reload(&config).unwrap();
    let leads = hot_leads(&d, 3).await;
    d.pipeline().advance_clock(ahead);
    d.settle().await;
    assert!(leads
        .iter()
        .all(|&id| d.crm_score(id).is_some_and(|s| s > 70)));
    assert_eq!(d.sandbox.tasks().len(), 0, "no task on a day off");
    let r = report(&d, &config);
    let cap = &r.portals[0].capacity;
    assert_eq!((cap[0].today, cap[0].waiting), (0, 3), "{cap:?}");

    // The next day is a working one: two tasks (the capacity); the third waits again.
    let to_midnight = 86_400 - d.pipeline().now().num_seconds_from_midnight() as u64;
    d.pipeline()
        .advance_clock(Duration::from_secs(to_midnight + 60));
    tasks_reach(&d, 2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    d.settle().await;
    assert_eq!(d.sandbox.tasks().len(), 2);
    d.pipeline().advance_clock(Duration::from_secs(86_400));
    tasks_reach(&d, 3).await;
    for &id in &leads {
        assert_eq!(d.tasks_for(id), 1, "lead {id} has exactly one task");
    }
}

//! Volume: a 1,000-lead burst in five waves against the Bitrix24 sandbox with its
//! leaky bucket *and* its per-method operating-time limit (issue: under this load the
//! daemon used to spend the 480 s budget of `crm.activity.list` itself, then stopped
//! every lead for minutes with nothing logged).
//!
//! The CI variant runs the same shape ten times faster (bucket drains 20/s, operating
//! window 60 s with a 48 s limit, costs per call unchanged), so "no pause longer than a
//! minute" becomes "no gap over 6 s"; `--ignored` runs it at the real limits.

use crate::common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use common::{Daemon, Options};
use leadscore::config::{Config, RateLimitSection};
use leadscore_bitrix24_sandbox::{OperatingLimit, RateLimit, SandboxOptions};
use serde_json::json;

const LEADS: usize = 1000;

/// What one run measured.
struct Figures {
    drained_in: Duration,
    /// From the last event sent to the last request to the CRM (issue 19: quiet within
    /// 30 s at the real pace).
    quiet_after: Duration,
    longest_gap: Duration,
    requests: usize,
    activity_subcalls: usize,
    operating_secs: BTreeMap<String, f64>,
    crossed: usize,
    /// Requests by what they carried (a batch named by its commands' methods), with
    /// their command count: where the requests went.
    shapes: BTreeMap<String, (usize, usize)>,
}

fn scaled(scale: f64) -> Options {
    Options {
        sandbox: SandboxOptions {
            rate_limit: Some(RateLimit {
                burst: 50.0,
                drain_per_sec: 2.0 * scale,
            }),
            // Each list costs the portal 50 ms plus 2 ms per row it returns (a busy
            // portal: at this cost the old one-list-per-lead reads burned more than the
            // 432 s the client allows itself in 10 minutes); costs, window and limit all
            // shrink with the scale, so the budget is as tight as at the real pace.
            operating_limit: Some(OperatingLimit {
                limit: Duration::from_secs_f64(480.0 / scale),
                cost_per_call: Duration::from_secs_f64(0.050 / scale),
                cost_per_row: Duration::from_secs_f64(0.002 / scale),
                window: Duration::from_secs_f64(600.0 / scale),
            }),
            ..SandboxOptions::default()
        },
        coalesce_ms: (2000.0 / scale) as u64,
        configure: Some(if scale > 1.0 { fast } else { real }),
        ..Options::default()
    }
}

/// The portal's limits at `scale` times the real pace (bucket 50, 2/s; 480 s of
/// operating time per 600 s).
fn limits(scale: f64) -> RateLimitSection {
    RateLimitSection {
        per_second: 2.0 * scale,
        burst: 50,
        operating_limit_secs: Some(480.0 / scale),
        operating_window_secs: Some((600.0 / scale) as u64),
    }
}

fn fast(c: &mut Config) {
    c.portals[0].rate_limit = limits(10.0);
    c.server.hot_wait_warn_secs = 6;
}

fn real(c: &mut Config) {
    c.portals[0].rate_limit = limits(1.0);
}

fn weak_lead(d: &Daemon, n: usize) -> u64 {
    d.sandbox
        .add_lead(json!({
            "TITLE": format!("Weak {n}"),
            "NAME": format!("Гость{n}"),
            "EMAIL": [{"VALUE": format!("guest{n}@mail.ru"), "VALUE_TYPE": "HOME"}],
            "ASSIGNED_BY_ID": "3",
        }))
        .unwrap()
}

fn activity(d: &Daemon, lead: u64, fields: serde_json::Value) {
    let mut f = fields;
    f["OWNER_TYPE_ID"] = json!(1);
    f["OWNER_ID"] = json!(lead);
    d.sandbox.add_activity(f).unwrap();
}

async fn five_waves(scale: f64, leads: usize) -> Figures {
    let d = Daemon::start(scaled(scale)).await;
    let gap = Duration::from_secs_f64(4.0 / scale);
    let started = SystemTime::now();
    let clock = Instant::now();

    // Wave 1: the leads arrive (30% with a strong fit: 60 points).
    let mut strong = Vec::new();
    let mut weak = Vec::new();
    for n in 0..leads {
        if n % 10 < 3 {
            strong.push(d.add_strong_lead(n));
        } else {
            weak.push(weak_lead(&d, n));
        }
    }
    tokio::time::sleep(gap).await;
    // Wave 2: an incoming e-mail on every lead (no points: engagement without intent).
    for &l in strong.iter().chain(&weak) {
        activity(
            &d,
            l,
            json!({"TYPE_ID": 4, "DIRECTION": 1, "SUBJECT": "Вопрос", "COMPLETED": "Y"}),
        );
    }
    tokio::time::sleep(gap).await;
    // Wave 3: demo requests on the strong leads (+20: they cross 70), blog reads on
    // the weak ones.
    for &l in &strong {
        d.add_demo_request(l);
    }
    for &l in weak.iter().step_by(2) {
        activity(
            &d,
            l,
            json!({"TYPE_ID": 6, "PROVIDER_ID": "REST_APP", "SUBJECT": "[page] Блог", "DESCRIPTION": "https://example.ru/blog/post", "COMPLETED": "Y"}),
        );
    }
    tokio::time::sleep(gap).await;
    // Wave 4: incoming calls everywhere (+8).
    for &l in strong.iter().chain(&weak) {
        activity(
            &d,
            l,
            json!({"TYPE_ID": 2, "DIRECTION": 2, "PROVIDER_ID": "VOXIMPLANT_CALL", "SUBJECT": "Звонок", "COMPLETED": "Y"}),
        );
    }
    tokio::time::sleep(gap).await;
    // Wave 5: reps edit 60% of the leads, a third of those saved twice.
    for (i, &l) in strong.iter().chain(&weak).take(leads * 3 / 5).enumerate() {
        d.sandbox
            .update_lead(l, json!({"COMMENTS": format!("перезвонить {i}")}))
            .unwrap();
        if i % 3 == 0 {
            d.sandbox
                .update_lead(l, json!({"COMMENTS": format!("перезвонить {i}!")}))
                .unwrap();
        }
    }
    let last_event = SystemTime::now();
    demo_settle(&d, scale).await;
    let drained_in = clock.elapsed();

    // Exactly one task for every lead that crossed, none for the rest.
    let mut crossed = 0;
    for &l in strong.iter().chain(&weak) {
        let score = d.crm_score(l).expect("every lead scored");
        let tasks = d.tasks_for(l);
        if score > 70 {
            crossed += 1;
            assert_eq!(tasks, 1, "lead {l} at {score} has {tasks} tasks");
        } else {
            assert_eq!(tasks, 0, "lead {l} at {score} has {tasks} tasks");
        }
    }
    assert!(
        crossed >= strong.len() * 9 / 10,
        "{crossed} of {} strong leads crossed",
        strong.len()
    );
    assert_eq!(d.sandbox.count_status(503), 0, "rate limit exceeded");
    let refused = d.sandbox.calls().iter().filter(|c| c.status == 429).count();
    assert_eq!(refused, 0, "operating limit exceeded");

    // The longest stretch with no request while work was waiting.
    let mut times: Vec<SystemTime> = d
        .sandbox
        .calls()
        .iter()
        .filter(|c| !c.in_batch && c.at >= started)
        .map(|c| c.at)
        .collect();
    times.sort();
    let longest_gap = times
        .windows(2)
        .map(|w| w[1].duration_since(w[0]).unwrap_or_default())
        .max()
        .unwrap_or_default();
    let calls = d.sandbox.calls();
    let quiet_after = calls
        .iter()
        .map(|c| c.at)
        .max()
        .and_then(|last| last.duration_since(last_event).ok())
        .unwrap_or_default();
    Figures {
        drained_in,
        quiet_after,
        longest_gap,
        requests: calls.iter().filter(|c| !c.in_batch).count(),
        activity_subcalls: calls
            .iter()
            .filter(|c| c.method == "crm.activity.list")
            .count(),
        operating_secs: d.sandbox.operating_spent(),
        crossed,
        shapes: common::request_shapes(&calls),
    }
}

async fn demo_settle(d: &Daemon, scale: f64) {
    leadscore::demo::settle(
        &d.sandbox,
        d.pipeline(),
        Duration::from_secs_f64(1800.0 / scale),
    )
    .await
    .expect("the queue drains");
}

fn report(scale: f64, leads: usize, f: &Figures) {
    let per_lead = |n: f64| n / leads as f64;
    eprintln!(
        "scale {scale}: drained in {:.1} s (last request {:.1} s after the last event), longest gap {:.2} s, {} requests ({:.3}/lead), \
         {} crm.activity.list subcalls ({:.3}/lead), operating s/lead {:?}, {} crossed",
        f.drained_in.as_secs_f64(),
        f.quiet_after.as_secs_f64(),
        f.longest_gap.as_secs_f64(),
        f.requests,
        per_lead(f.requests as f64),
        f.activity_subcalls,
        per_lead(f.activity_subcalls as f64),
        f.operating_secs
            .iter()
            .map(|(m, s)| (m.as_str(), (per_lead(*s) * 1000.0).round() / 1000.0))
            .collect::<Vec<_>>(),
        f.crossed,
    );
    common::print_shapes(&f.shapes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_lead_burst_in_five_waves_drains_without_a_long_pause() {
    let scale = 10.0;
    let f = five_waves(scale, LEADS).await;
    report(scale, LEADS, &f);
    // A minute of silence at the real pace is 6 s here.
    assert!(
        f.longest_gap < Duration::from_secs(6),
        "no request for {:?}",
        f.longest_gap
    );
    // Activities are read for many leads at once and only what is new: about 0.4
    // subcalls per lead (25 leads to a list, so a burst's first page seldom fills and
    // needs a request of its own for the next), not one per lead per fetch (7.3 per
    // lead before).
    assert!(
        f.activity_subcalls * 2 <= LEADS,
        "{} activity subcalls",
        f.activity_subcalls
    );
    // A turn reads up to 245 leads in one request and writes them in five: 159-174
    // requests measured, 409-443 with turns of one write batch (issue 19).
    assert!(f.requests <= 250, "{} requests", f.requests);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs at the real limits: about five minutes"]
async fn a_thousand_lead_burst_at_the_real_limits() {
    let f = five_waves(1.0, LEADS).await;
    report(1.0, LEADS, &f);
    assert!(
        f.longest_gap < Duration::from_secs(60),
        "{:?}",
        f.longest_gap
    );
}

/// Issue 19's shape: 300 leads in five waves. The floor is about 50 requests (each
/// wave's reads in one or two `batch` requests, writes only where the score moved, 49
/// to a batch, tasks in batches); measured 47-56 with turns of five write batches,
/// 132-143 with turns of one. The bound leaves room for a loaded CI machine and still
/// fails a return to one write batch per turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_leads_in_five_waves_share_their_batches() {
    let scale = 10.0;
    let f = five_waves(scale, 300).await;
    report(scale, 300, &f);
    assert!(f.requests <= 80, "{} requests for 300 leads", f.requests);
}

/// The same at the real limits (coalescing 2 s, bucket 50 drained 2 per second,
/// waves 4 s apart): the figures BENCHMARKS.md quotes for issue 19's shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs at the real limits: about two minutes"]
async fn three_hundred_leads_in_five_waves_at_the_real_limits() {
    let f = five_waves(1.0, 300).await;
    report(1.0, 300, &f);
    assert!(f.requests <= 80, "{} requests for 300 leads", f.requests);
}

fn small_budget(c: &mut Config) {
    c.portals[0].rate_limit = limits(10.0);
}

/// The activity-list budget the running daemon reports for the demo portal.
fn activity_budget(d: &Daemon) -> Option<leadscore::crm::MethodBudget> {
    d.pipeline()
        .portal(leadscore::demo::PORTAL)?
        .crm
        .pacing()?
        .methods
        .into_iter()
        .find(|m| m.method == "crm.activity.list")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operating_budget_survives_a_restart_and_a_pause_is_visible() {
    let mut d = Daemon::start(Options {
        sandbox: SandboxOptions {
            operating_limit: Some(OperatingLimit {
                limit: Duration::from_secs(48),
                cost_per_call: Duration::from_millis(300),
                cost_per_row: Duration::ZERO,
                window: Duration::from_secs(60),
            }),
            ..SandboxOptions::default()
        },
        configure: Some(small_budget),
        ..Options::default()
    })
    .await;
    for n in 0..5 {
        let lead = d.add_strong_lead(n);
        d.add_demo_request(lead);
    }
    d.settle().await;
    let before = activity_budget(&d).expect("activity reads were counted");
    assert!(before.used_secs >= 0.3, "{before:?}");
    assert_eq!(before.limit_secs, 48.0);

    // A restart takes the spent budget along (the portal keeps counting it).
    d.restart().await;
    let after = activity_budget(&d).expect("restored from the store");
    assert!(
        (after.used_secs - before.used_secs).abs() < 0.01,
        "{before:?} vs {after:?}"
    );

    // Now the previous run left the method over the stop (47 of 48 s, spent 50 s ago
    // so it rolls out in about 10 s): the new run holds it back and says so.
    d.stop().await;
    {
        let store = leadscore::store::Store::open(&d.config.server.data_dir).unwrap();
        let now = chrono::Utc::now().timestamp_millis();
        let snap = leadscore_bitrix24::LimitsSnapshot {
            at_ms: now,
            bucket_level: 0.0,
            operating: leadscore_bitrix24::OperatingSnapshot {
                methods: [("crm.activity.list".to_string(), vec![(now - 50_000, 47.0)])].into(),
                paused_until: BTreeMap::new(),
            },
        };
        store
            .meta_set(
                &format!("limits:bitrix24:{}", leadscore::demo::PORTAL),
                &serde_json::to_string(&snap).unwrap(),
            )
            .unwrap();
        store.flush().await.unwrap();
    }
    d.launch(true).await;
    let paused = activity_budget(&d).expect("restored");
    assert!(paused.paused_until.is_some(), "{paused:?}");
    let lead = d.add_strong_lead(99);
    d.add_demo_request(lead);

    let base = format!("http://{}", d.addr());
    let status: serde_json::Value = reqwest::get(format!("{base}/status"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let methods = &status["portals"][0]["pacing"]["methods"];
    let listed = methods
        .as_array()
        .and_then(|m| m.iter().find(|m| m["method"] == "crm.activity.list"))
        .cloned()
        .unwrap_or_default();
    assert!(listed["paused_until"].is_string(), "{status}");
    assert!(
        listed["used_secs"].as_f64().unwrap_or(0.0) >= 47.0,
        "{status}"
    );
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            "leadscore_crm_operating_paused{portal=\"demo\",method=\"crm.activity.list\"} 1"
        ),
        "{metrics}"
    );
    let report =
        leadscore::status::render(&serde_json::from_value(status).expect("the /status shape"));
    assert!(
        report.contains("paused until") && report.contains("crm.activity.list, operating limit"),
        "{report}"
    );
    // Once the old use rolls out, the waiting lead is scored and tasked.
    d.settle().await;
    assert_eq!(d.tasks_for(lead), 1);
    let later = activity_budget(&d).expect("still counted");
    assert!(later.used_secs < 47.0, "the old use rolled out: {later:?}");
}

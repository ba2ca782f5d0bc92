//! Volume on amoCRM: issue 19's 300 leads in five waves against the sandbox account at
//! its real limit (7 requests/s), every request counted. The same shape as the
//! Bitrix24 volume test: leads arrive, then an e-mail note on every lead, demo requests
//! on the strong ones and blog reads on half the rest, a call on every lead, and rep
//! edits on 60% of the leads, a third of them saved twice.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use leadscore_amocrm_sandbox::{FieldValue, LeadChange, NewLead};
use serde_json::json;

use crate::e2e_amocrm::Daemon;

/// Issue 19's five waves on `leads` leads; asserts exactly one task for every lead
/// above 70 and none for the rest, every strong lead crossing and no 429, and returns
/// the API requests after the setup, per route.
async fn five_waves(leads: usize) -> BTreeMap<String, usize> {
    let d = Daemon::start(true).await;
    let setup = d.sandbox.calls().len();
    let clock = Instant::now();
    // Between waves: a pause longer than the coalescing window, as between real
    // bursts of activity.
    let gap = Duration::from_secs(1);

    // Wave 1: the leads (30% with a strong fit: 60 points).
    let mut strong = Vec::new();
    let mut weak = Vec::new();
    for n in 0..leads {
        if n % 10 < 3 {
            strong.push(d.add_strong_lead(n));
        } else {
            let mut lead = NewLead::named(&format!("Гость {n}"));
            lead.fields = vec![(d.fit.employees, FieldValue::Number(3.0))];
            weak.push(d.sandbox.add_lead(lead).unwrap());
        }
    }
    let all: Vec<u64> = strong.iter().chain(&weak).copied().collect();
    tokio::time::sleep(gap).await;
    // Wave 2: an e-mail noted on every lead (engagement without intent: no points).
    for &l in &all {
        d.sandbox
            .add_note(l, "common", json!({"text": "Письмо: вопрос по продукту"}))
            .unwrap();
    }
    tokio::time::sleep(gap).await;
    // Wave 3: demo requests on the strong leads (they cross 70), blog reads on half of
    // the weak ones.
    for &l in &strong {
        d.sandbox
            .add_note(l, "common", json!({"text": "[demo] Заявка на демо"}))
            .unwrap();
    }
    for &l in weak.iter().step_by(2) {
        d.sandbox
            .add_note(
                l,
                "common",
                json!({"text": "[page] https://example.ru/blog/post"}),
            )
            .unwrap();
    }
    tokio::time::sleep(gap).await;
    // Wave 4: an incoming call on every lead.
    for (i, &l) in all.iter().enumerate() {
        let params = json!({"uniq": format!("call-{l}-{i}"), "duration": 60, "source": "sandbox",
                            "link": "", "phone": "", "call_result": "", "call_status": 4});
        d.sandbox.add_note(l, "call_in", params).unwrap();
    }
    tokio::time::sleep(gap).await;
    // Wave 5: reps rename 60% of the leads, a third of those saved twice.
    let user = d.sandbox.current_user_id();
    for (i, &l) in all.iter().take(leads * 3 / 5).enumerate() {
        let rename = |s: &str| LeadChange::default().name(&format!("Сделка {i}{s}"));
        assert!(d
            .sandbox
            .update_lead(l, rename(" перезвонить"), user)
            .unwrap());
        if i % 3 == 0 {
            assert!(d
                .sandbox
                .update_lead(l, rename(" перезвонить!"), user)
                .unwrap());
        }
    }
    d.settle().await;
    let drained_in = clock.elapsed();

    // Exactly one task for every lead above 70, none for the rest.
    let mut crossed = 0;
    for &l in &all {
        let score = d.score(l).expect("every lead scored");
        let tasks = d.sandbox.tasks_of(l).len();
        if score > 70 {
            crossed += 1;
            assert_eq!(tasks, 1, "lead {l} at {score} has {tasks} tasks");
        } else {
            assert_eq!(tasks, 0, "lead {l} at {score} has {tasks} tasks");
        }
    }
    assert_eq!(crossed, strong.len(), "every strong lead crossed");
    assert_eq!(d.sandbox.count_status(429), 0, "rate limit exceeded");

    let calls = d.sandbox.calls();
    let mut routes: BTreeMap<String, usize> = BTreeMap::new();
    for c in calls[setup..]
        .iter()
        .filter(|c| c.path.starts_with("/api/"))
    {
        *routes
            .entry(format!("{} {}", c.method, c.route))
            .or_default() += 1;
    }
    let requests: usize = routes.values().sum();
    eprintln!(
        "amoCRM, {leads} leads in five waves: drained in {:.1} s, {requests} requests \
         ({:.3}/lead), {crossed} crossed",
        drained_in.as_secs_f64(),
        requests as f64 / leads as f64
    );
    for (route, n) in &routes {
        eprintln!("  {n:>4} {route}");
    }
    routes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_leads_in_five_waves_share_their_requests() {
    let requests: usize = five_waves(300).await.values().sum();
    // 64-78 requests measured with turns of 250 and new leads' events from the feed,
    // 95-116 before (issue 19; the target, 60, is not met: see BENCHMARKS.md).
    assert!(requests <= 90, "{requests} requests for 300 leads");
}

/// The same at 1,000 leads (300 cross 70): the queue drains, each hot lead gets exactly
/// one task, no 429, turns of 250 and feed reads included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_leads_in_five_waves_drain_with_one_task_per_hot_lead() {
    let requests: usize = five_waves(1000).await.values().sum();
    assert!(requests <= 500, "{requests} requests for 1,000 leads");
}

/// A rep's edit (and our own write's echo) reads the lead, not its events: amoCRM's
/// `leads[update]` says nothing of notes, and the activities were read minutes ago. A
/// note's webhook marks its lead's activities as changed, so the note is read and
/// scored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_reads_no_events_and_a_note_does() {
    let d = Daemon::start(true).await;
    let leads: Vec<u64> = (0..20).map(|n| d.add_strong_lead(n)).collect();
    d.settle().await;
    assert_eq!(d.score(leads[0]), Some(60));
    let events = |d: &Daemon| d.sandbox.count_route("GET", "/api/v4/events");
    let before = events(&d);
    let user = d.sandbox.current_user_id();
    for (i, &l) in leads.iter().enumerate() {
        let rename = LeadChange::default().name(&format!("Сделка {i}: перезвонить"));
        assert!(d.sandbox.update_lead(l, rename, user).unwrap());
    }
    d.settle().await;
    assert_eq!(events(&d), before, "20 edits read no events");
    assert_eq!(d.score(leads[0]), Some(60));

    d.sandbox
        .add_note(leads[0], "common", json!({"text": "[demo] Заявка на демо"}))
        .unwrap();
    d.settle().await;
    assert!(events(&d) > before, "the note's lead had its events read");
    assert_eq!(d.score(leads[0]), Some(80), "60 fit + 20 demo request");
}

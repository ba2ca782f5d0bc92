//! The Bitrix24 path end to end: sandbox portal → webhook → sled → fetch → score →
//! write-back → call-now task, over real HTTP on 127.0.0.1.

mod common;

use common::{Daemon, Options};
use leadscore::demo;
use leadscore_bitrix24::sandbox::{FaultConfig, SandboxOptions};
use serde_json::json;

/// The 2018 capture from the CRM notes, verbatim (no event_handler_id).
const CAPTURE_2018: &str = "event=ONCRMLEADADD&data%5BFIELDS%5D%5BID%5D=365&ts=1545851621&auth%5Bdomain%5D=b24-46hovy.bitrix24.ru&auth%5Bclient_endpoint%5D=https%3A%2F%2Fb24-46hovy.bitrix24.ru%2Frest%2F&auth%5Bserver_endpoint%5D=https%3A%2F%2Foauth.bitrix.info%2Frest%2F&auth%5Bmember_id%5D=1b87798bc2d16c4b7f2a604e0c899a34&auth%5Bapplication_token%5D=o8kfcne3du24sfvoeahh43uf9oygu2x3";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intake_accepts_the_real_capture_and_refuses_bad_input_without_queueing() {
    let d = Daemon::start(Options {
        token: "o8kfcne3du24sfvoeahh43uf9oygu2x3".into(),
        // Long window: accepted events stay visible in the queue for the assertions.
        coalesce_ms: 600_000,
        bind_events: false,
        ..Options::default()
    })
    .await;

    let (status, body) = d.post(CAPTURE_2018).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "queued");
    assert_eq!(d.store().pending_len(), 1);

    // The same event again merges into the waiting entry (a duplicate is not new work).
    assert_eq!(d.post(CAPTURE_2018).await.0, 200);
    assert_eq!(d.store().pending_len(), 1);

    // Wrong token: 401 and nothing queued.
    let forged = CAPTURE_2018.replace("ID%5D=365", "ID%5D=366").replace(
        "o8kfcne3du24sfvoeahh43uf9oygu2x3",
        "o8kfcne3du24sfvoeahh43uf9oygu2x4",
    );
    let (status, body) = d.post(&forged).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(d.store().pending_len(), 1);

    // Missing token: 401 (the token is looked for before anything else is decoded).
    let (status, _) = d
        .post("event=ONCRMLEADADD&data%5BFIELDS%5D%5BID%5D=9&auth%5Bdomain%5D=x&auth%5Bmember_id%5D=y")
        .await;
    assert_eq!(
        status, 401,
        "a body without auth[application_token] is not authenticated"
    );

    // Malformed without the token: 401; malformed with it: 400.
    assert_eq!(d.post("event=%ZZ&data[").await.0, 401);
    let token = "auth%5Bapplication_token%5D=o8kfcne3du24sfvoeahh43uf9oygu2x3";
    assert_eq!(d.post(&format!("event=%ZZ&data[&{token}")).await.0, 400);
    assert_eq!(d.store().pending_len(), 1);

    // Not about leads: acknowledged, ignored.
    let deal = CAPTURE_2018.replace("ONCRMLEADADD", "ONCRMDEALADD");
    let (status, body) = d.post(&deal).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ignored")));
    assert_eq!(d.store().pending_len(), 1);

    // Unknown portal: 404.
    let other = d.hook.replace("/demo", "/nope");
    assert_eq!(common::post(&other, CAPTURE_2018).await.0, 404);
    let wrong_crm = d.hook.replace("/bitrix24/", "/amocrm/");
    assert_eq!(common::post(&wrong_crm, CAPTURE_2018).await.0, 404);

    // Over the body limit: 413.
    let huge = format!("{CAPTURE_2018}&pad={}", "x".repeat(70 * 1024));
    assert_eq!(d.post(&huge).await.0, 413);
    assert_eq!(d.store().pending_len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crossing_makes_exactly_one_task_through_duplicates_and_a_restart() {
    let mut d = Daemon::start(Options::default()).await;
    let lead = d.add_strong_lead(1);
    d.settle().await;
    assert_eq!(d.crm_score(lead), Some(60));
    assert_eq!(d.tasks_for(lead), 0, "60 is below the threshold");

    d.add_demo_request(lead);
    d.settle().await;
    assert_eq!(d.crm_score(lead), Some(80));
    assert_eq!(d.tasks_for(lead), 1);
    let task = d.sandbox.tasks().into_iter().next().unwrap();
    assert_eq!(
        task.responsible_id, 3,
        "the lead's responsible rep gets the task"
    );
    assert_eq!(task.priority, 2);

    // The portal's queue delivers the event twice more.
    let body = demo::event_body(&d.sandbox, "ONCRMLEADUPDATE", lead, &d.token);
    for _ in 0..2 {
        assert_eq!(d.post(&body).await.0, 200);
    }
    d.settle().await;
    assert_eq!(d.tasks_for(lead), 1);

    // A restart, then more activity on the hot lead.
    d.restart().await;
    d.add_demo_request(lead);
    assert_eq!(d.post(&body).await.0, 200);
    d.settle().await;
    assert_eq!(d.tasks_for(lead), 1, "still one task after a restart");

    // The ledger's latest entry is what the CRM shows.
    let ledger = d.store().ledger(demo::PORTAL, &lead.to_string()).unwrap();
    assert_eq!(ledger.last().map(|e| i64::from(e.score)), d.crm_score(lead));
    assert_eq!(ledger.first().map(|e| e.score), Some(60));
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_own_update_webhooks_cause_no_further_writes() {
    let d = Daemon::start(Options::default()).await;
    let leads: Vec<u64> = (0..5).map(|n| d.add_strong_lead(n)).collect();
    d.settle().await;
    let updates = d.sandbox.count_method("crm.lead.update");
    assert_eq!(updates, 5, "one write per new lead");
    let echoes = d
        .sandbox
        .delivered()
        .iter()
        .filter(|x| x.event == "ONCRMLEADUPDATE")
        .count();
    assert_eq!(echoes, 5, "each write came back as an update webhook");

    // A user edits something that does not change the score: fetched, not written.
    for id in &leads {
        d.sandbox
            .update_lead(*id, json!({"COMMENTS": "перезвонить"}))
            .unwrap();
    }
    d.settle().await;
    assert_eq!(d.sandbox.count_method("crm.lead.update"), updates);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_500_leads_never_draws_a_503() {
    let d = Daemon::start(Options {
        coalesce_ms: 500,
        ..Options::default()
    })
    .await;
    let ids: Vec<u64> = (0..500)
        .map(|n| {
            d.sandbox
                .add_lead(json!({
                    "TITLE": format!("Burst {n}"),
                    "POST": if n % 2 == 0 { "Директор" } else { "Менеджер" },
                    "EMAIL": [{"VALUE": format!("x{n}@corp{n}.ru"), "VALUE_TYPE": "WORK"}],
                    "UF_CRM_EMPLOYEES": (50 + n).to_string(),
                }))
                .unwrap()
        })
        .collect();
    d.settle().await;
    assert_eq!(
        d.sandbox.count_status(503),
        0,
        "the pacer kept inside the bucket"
    );
    for id in &ids {
        assert!(d.crm_score(*id).is_some(), "lead {id} was scored");
    }
    let c = d.sandbox.counters();
    let per_lead = c.requests as f64 / ids.len() as f64;
    assert!(per_lead < 0.5, "batched: {per_lead:.3} requests per lead");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_faults_are_retried_and_nothing_is_lost() {
    let d = Daemon::start(Options {
        sandbox: SandboxOptions {
            delivery_timeout: std::time::Duration::from_secs(5),
            ..SandboxOptions::default()
        },
        ..Options::default()
    })
    .await;
    d.sandbox.set_faults(FaultConfig::uniform(0.2, 7));
    let ids: Vec<u64> = (0..40).map(|n| d.add_strong_lead(n)).collect();
    d.settle().await;
    d.sandbox.set_faults(FaultConfig::default());
    d.settle().await;
    let faults = d
        .sandbox
        .calls()
        .iter()
        .filter(|c| c.fault.is_some())
        .count();
    assert!(faults > 0, "faults were injected");
    for id in &ids {
        assert_eq!(
            d.crm_score(*id),
            Some(60),
            "lead {id} scored despite faults"
        );
    }
    assert!(d.store().dead_letters().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_scores_a_lead_whose_webhook_was_lost() {
    let d = Daemon::start(Options {
        bind_events: false,
        ..Options::default()
    })
    .await;
    // The first sweep only sets the cursor.
    let now = chrono::Utc::now();
    assert_eq!(
        leadscore::app::sweep_once(d.pipeline(), demo::PORTAL, now)
            .await
            .unwrap(),
        0
    );
    let lead = d.add_strong_lead(1);
    let queued = leadscore::app::sweep_once(d.pipeline(), demo::PORTAL, chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(queued, 1);
    d.settle().await;
    assert_eq!(d.crm_score(lead), Some(60));
}

/// Parse Prometheus text into (series, value) pairs.
fn parse_metrics(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("series and value");
            (
                series.to_string(),
                value.parse::<f64>().expect("numeric value"),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_health_and_readiness_report_the_work_done() {
    let d = Daemon::start(Options::default()).await;
    let lead = d.add_strong_lead(1);
    d.add_demo_request(lead);
    d.settle().await;
    let garbage = format!("garbage=%ZZ&auth%5Bapplication_token%5D={}", d.token);
    assert_eq!(d.post(&garbage).await.0, 400);
    // The lead and its activity arrived within one coalesce window: one fetch, one write.

    let base = d.hook.split("/webhooks").next().unwrap().to_string();
    let http = reqwest::Client::new();
    let get = |path: &str| http.get(format!("{base}{path}")).send();
    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    assert_eq!(get("/readyz").await.unwrap().status(), 200);
    let text = get("/metrics").await.unwrap().text().await.unwrap();
    let m = parse_metrics(&text);
    let value = |series: &str| m.iter().find(|(s, _)| s == series).map(|(_, v)| *v);
    assert!(
        value(r#"leadscore_webhooks_total{crm="bitrix24",portal="demo",outcome="queued"}"#)
            .unwrap()
            >= 2.0,
        "{text}"
    );
    assert_eq!(
        value(r#"leadscore_webhooks_total{crm="bitrix24",portal="demo",outcome="malformed"}"#),
        Some(1.0)
    );
    assert_eq!(
        value(r#"leadscore_tasks_total{portal="demo",kind="created"}"#),
        Some(1.0)
    );
    assert_eq!(value("leadscore_queue_depth"), Some(0.0));
    assert!(
        value(r#"leadscore_leads_processed_total{portal="demo",kind="written"}"#).unwrap() == 1.0
    );
    assert!(text.ends_with("# EOF\n"));
}

//! The Bitrix24 path end to end: sandbox portal → webhook → sled → fetch → score →
//! write-back → call-now task, over real HTTP on 127.0.0.1.

use crate::common;

use common::{Daemon, Options};
use leadscore::demo;
use leadscore_bitrix24_sandbox::{FaultConfig, SandboxOptions};
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
    eprintln!("Bitrix24 500-lead burst: {per_lead:.3} requests per lead");
    common::print_shapes(&common::request_shapes(&d.sandbox.calls()));
    // 23 requests measured (0.046: six for setup, eleven write batches of 49, the rest
    // reads), 38 (0.076) with turns of one write batch.
    assert!(per_lead < 0.065, "batched: {per_lead:.3} requests per lead");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_lead_that_goes_quiet_cools_by_itself_without_a_crm_read() {
    let mut d = Daemon::start(Options::default()).await;
    let lead = d.add_strong_lead(1);
    d.add_demo_request(lead);
    d.settle().await;
    assert_eq!(d.crm_score(lead), Some(80));
    assert_eq!(d.tasks_for(lead), 1);
    let card = |d: &Daemon| {
        d.sandbox.get_lead(lead).unwrap()["UF_CRM_LEADSCORE_WHY"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let before = card(&d);
    assert!(before.contains("запрос демо ("), "{before}");
    assert!(!before.contains("сегодня"), "dated, not aged: {before}");
    let store = d.store();
    assert!(store.timers_len() >= 1, "the decay is scheduled");

    // No webhook from here on: only the clock moves (15 days: the demo request is
    // worth half, 80 -> 70, no longer hot).
    d.unbind_events();
    d.sandbox.reset_counters();
    d.pipeline()
        .advance_clock(std::time::Duration::from_secs(15 * 86_400));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while d.crm_score(lead) != Some(70) {
        assert!(
            std::time::Instant::now() < deadline,
            "no decay written: {:?}",
            d.crm_score(lead)
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let c = d.sandbox.counters();
    // The one list is the modification stamp read riding in the write's batch.
    assert_eq!(c.requests, 1, "one batch, no read: {c:?}");
    assert_eq!(c.by_method.get("crm.lead.list"), Some(&1), "{c:?}");
    assert_eq!(c.by_method.get("crm.activity.list"), None, "no read: {c:?}");
    assert_eq!(c.by_method.get("crm.lead.update"), Some(&1), "{c:?}");
    let after = card(&d);
    assert!(after.starts_with("70 — тёплый"), "{after}");
    // The demo request keeps its date: the card says when, not how long ago.
    let date = |s: &str| s.split("запрос демо (").nth(1).map(|t| t[..5].to_string());
    assert_eq!(date(&after), date(&before));
    assert_eq!(d.tasks_for(lead), 1, "cooling makes no task");
    let ledger = d.store().ledger(demo::PORTAL, &lead.to_string()).unwrap();
    let last = ledger.last().unwrap();
    assert_eq!(last.score, 70);
    assert!(last
        .causes
        .iter()
        .all(|c| c.source == leadscore::store::CauseSource::Decay));

    // After a restart, overdue timers still run: another 20 days take the demo request
    // out of its 30-day window (70 -> 60).
    d.stop().await;
    d.launch(false).await;
    d.pipeline()
        .advance_clock(std::time::Duration::from_secs(35 * 86_400));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while d.crm_score(lead) != Some(60) {
        assert!(
            std::time::Instant::now() < deadline,
            "no decay after restart: {:?}",
            d.crm_score(lead)
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The demo config with the fit group capped at 75 instead of 60 and the "должность"
/// (job title) rule worth `points` instead of 15, with `listen` where the
/// `leadscore rescore` binary looks for the daemon.
pub(crate) fn config_with_title_points(
    d: &Daemon,
    points: i64,
    listen: &str,
    path: &std::path::Path,
) {
    title_points_config(&d.config_path(), points, listen, path);
}

/// [`config_with_title_points`] from any demo config file (`src`), for either CRM.
pub(crate) fn title_points_config(
    src: &std::path::Path,
    points: i64,
    listen: &str,
    path: &std::path::Path,
) {
    let text = std::fs::read_to_string(src).unwrap();
    let mut doc: toml::Table = toml::from_str(&text).unwrap();
    doc["server"]["listen"] = toml::Value::String(listen.to_string());
    let scoring = doc["scoring"].as_table_mut().unwrap();
    let fit = scoring["groups"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|g| g["id"].as_str() == Some("fit"))
        .expect("the fit group");
    fit["max"] = toml::Value::Integer(75);
    let title = scoring["rules"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|r| r["id"].as_str() == Some("title_exec"))
        .expect("the title rule");
    title["points"] = toml::Value::Integer(points);
    std::fs::write(path, toml::to_string(&doc).unwrap()).unwrap();
}

pub(crate) fn rescore_cli(
    config: &std::path::Path,
    extra: &[&str],
    crash: Option<&str>,
) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_leadscore"));
    cmd.arg("rescore").arg("--config").arg(config).args(extra);
    if let Some(c) = crash {
        cmd.env(leadscore::crashpoint::ENV, c);
    }
    cmd.output().expect("the binary runs")
}

/// 60 strong leads scored by the daemon: 55 warm (60) and 5 with a demo request, hot
/// (80) with a task each; returns (warm, hot).
pub(crate) async fn sixty_scored_leads(d: &Daemon) -> (Vec<u64>, Vec<u64>) {
    let mut plain = Vec::new();
    let mut asked = Vec::new();
    for n in 0..60 {
        let lead = d.add_strong_lead(n);
        if n < 5 {
            d.add_demo_request(lead);
            asked.push(lead);
        } else {
            plain.push(lead);
        }
    }
    d.settle().await;
    (plain, asked)
}

/// The output of a command that must have succeeded: (stdout, stderr).
pub(crate) fn succeeded(out: &std::process::Output) -> (String, String) {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stdout}\n{stderr}");
    (stdout, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_change_is_previewed_then_rescored_through_the_daemon_and_resumes_after_a_crash() {
    let mut d = Daemon::start(Options::default()).await;
    let (plain, asked) = sixty_scored_leads(&d).await;
    assert_eq!(d.crm_score(plain[0]), Some(60));
    assert_eq!(d.crm_score(asked[0]), Some(80));
    let tasks_before = d.sandbox.tasks().len();
    assert_eq!(tasks_before, 5);

    // A new model: the job title is worth 30, so 55 warm leads become hot (75).
    let path = d.dir.path().join("rescore.toml");
    config_with_title_points(&d, 30, &d.addr().to_string(), &path);
    let new = leadscore::config::load(&path).unwrap();
    d.pipeline().reload(&new).unwrap();

    // Preview: nothing written.
    d.sandbox.reset_counters();
    let (stdout, _) = succeeded(&rescore_cli(&path, &["--dry-run"], None));
    assert!(
        stdout.contains("55 would newly cross the threshold"),
        "{stdout}"
    );
    assert!(
        stdout.contains("тёплый") || stdout.contains("warm"),
        "{stdout}"
    );
    assert_eq!(d.sandbox.counters().by_method.get("crm.lead.update"), None);

    // The real thing, through the running daemon: progress lines, no task.
    let (stdout, stderr) = succeeded(&rescore_cli(&path, &[], None));
    assert!(stderr.contains("rescore: 60/60 leads"), "{stderr}");
    assert!(stdout.contains("rescore finished: 60 leads"), "{stdout}");
    d.settle().await;
    assert_eq!(d.crm_score(plain[0]), Some(75));
    assert_eq!(d.crm_score(asked[0]), Some(95));
    assert_eq!(
        d.sandbox.tasks().len(),
        tasks_before,
        "a model change makes no tasks"
    );
    let c = d.sandbox.counters();
    assert_eq!(c.by_method.get("crm.lead.update"), Some(&60), "{c:?}");
    assert_eq!(
        c.by_method.get("crm.activity.list"),
        None,
        "scored from stored inputs: {c:?}"
    );

    // Again with the daemon stopped: the command runs it in-process and is killed after
    // its first batch; the second run resumes and writes only what is left. A Bitrix24
    // turn carries up to 245 leads (five write batches), so 250 more leads make two.
    let more: Vec<u64> = (60..310).map(|n| d.add_strong_lead(n)).collect();
    d.settle().await;
    assert_eq!(d.crm_score(more[0]), Some(75));
    // Hot under the model in force when they arrived: each has its call-now task.
    let tasks_before = d.sandbox.tasks().len();
    assert_eq!(tasks_before, 5 + more.len());
    let leads = 310;
    d.stop().await;
    // Nothing listens on port 1: the command finds no daemon.
    config_with_title_points(&d, 25, "127.0.0.1:1", &path);
    d.sandbox.reset_counters();
    let crashed = rescore_cli(&path, &[], Some("after_batch@1"));
    assert!(
        !crashed.status.success(),
        "the crash point fired: {}\n{}",
        String::from_utf8_lossy(&crashed.stdout),
        String::from_utf8_lossy(&crashed.stderr)
    );
    let first = d
        .sandbox
        .counters()
        .by_method
        .get("crm.lead.update")
        .copied()
        .unwrap_or(0);
    assert!(
        (1..leads).contains(&first),
        "{first} written before the crash"
    );
    let out = rescore_cli(&path, &[], None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("resuming"), "{stderr}");
    let c = d.sandbox.counters();
    assert_eq!(
        c.by_method.get("crm.lead.update"),
        Some(&leads),
        "each lead written once: {c:?}"
    );
    assert_eq!(d.crm_score(plain[0]), Some(70));
    assert_eq!(d.crm_score(more[0]), Some(70));
    assert_eq!(d.crm_score(asked[0]), Some(90));
    assert_eq!(d.sandbox.tasks().len(), tasks_before);
}

/// Bitrix24 names only the activity in `ONCRMACTIVITYADD`: its lead is found and read
/// in the same worker turn (one activity list to resolve it, one read of the lead with
/// its activities), and an activity bound to no lead costs nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_activity_event_scores_its_lead_in_the_same_turn() {
    let d = Daemon::start(Options {
        bind_events: false,
        ..Options::default()
    })
    .await;
    let lead = d.add_strong_lead(1);
    let act = d.add_demo_request(lead);
    let elsewhere = d
        .sandbox
        .add_activity(json!({"OWNER_TYPE_ID": 3, "OWNER_ID": 1, "TYPE_ID": 2,
            "SUBJECT": "звонок контакту", "COMPLETED": "Y"}))
        .unwrap();
    let activity_event = |id: u64| {
        d.lead_event(id)
            .replace("ONCRMLEADUPDATE", "ONCRMACTIVITYADD")
    };
    d.sandbox.reset_counters();
    assert_eq!(d.post(&activity_event(act)).await.0, 200);
    d.settle().await;
    assert_eq!(d.crm_score(lead), Some(80), "60 for fit + 20 for the demo");
    let c = d.sandbox.counters();
    assert_eq!(
        c.by_method.get("crm.lead.list").copied(),
        Some(2),
        "the lead is read once, and its modification stamp rides in the write batch: {c:?}"
    );
    assert_eq!(
        c.by_method.get("crm.activity.list").copied(),
        Some(2),
        "one list resolves the activity, one reads the lead's history: {c:?}"
    );
    assert_eq!(
        c.by_method.get("batch").copied(),
        Some(4),
        "resolve, read, write and the call-now task (a batch of one): {c:?}"
    );
    assert_eq!(c.requests, 4, "nothing but batches: {c:?}");

    d.sandbox.reset_counters();
    assert_eq!(d.post(&activity_event(elsewhere)).await.0, 200);
    d.settle().await;
    let c = d.sandbox.counters();
    assert_eq!(c.requests, 1, "one list, then nothing: {c:?}");
    assert_eq!(c.by_method.get("crm.activity.list").copied(), Some(1));
}

/// A portal's own activity shapes, mapped in `[[portal.activity_map]]`: an incoming
/// e-mail whose subject is "Запрос демо" is a demo request (+20), a REST_APP activity
/// "Скачан прайс-лист" a price-list download (+10).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_portal_activity_map_classifies_its_own_activity_shapes() {
    fn with_map(c: &mut leadscore::config::Config) {
        let text = r#"
            [[activity_map]]
            kind = "demo_request"
            type_id = 4
            direction = "incoming"
            subject = '(?i)запрос\s+демо'
            [[activity_map]]
            kind = "download"
            provider_id = "REST_APP"
            subject = '(?i)^скачан\s+(?P<subject>.+)$'
            "#;
        let attrs = leadscore::crm::registry::find("bitrix24")
            .unwrap()
            .activity_attrs;
        c.portals[0].fields.activity_map =
            leadscore::crm::activity_map::ActivityMap::from_toml(text, attrs).unwrap();
    }
    let d = Daemon::start(Options {
        configure: Some(with_map),
        ..Options::default()
    })
    .await;
    let lead = d.add_strong_lead(1);
    d.sandbox
        .add_activity(
            json!({"OWNER_TYPE_ID": 1, "OWNER_ID": lead, "TYPE_ID": 4, "DIRECTION": 1,
            "SUBJECT": "Запрос демо", "COMPLETED": "Y"}),
        )
        .unwrap();
    d.sandbox
        .add_activity(json!({"OWNER_TYPE_ID": 1, "OWNER_ID": lead, "TYPE_ID": 6,
            "PROVIDER_ID": "REST_APP", "SUBJECT": "Скачан прайс-лист", "COMPLETED": "Y"}))
        .unwrap();
    d.settle().await;
    assert_eq!(
        d.crm_score(lead),
        Some(90),
        "60 fit + 20 demo request + 10 price list"
    );
}

/// Issue 19: a lead that keeps receiving webhooks is read at most once per coalescing
/// window (completing a turn leaves the newer events due a window later, not at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lead_under_a_stream_of_webhooks_is_read_once_per_window() {
    let d = Daemon::start(Options {
        bind_events: false,
        coalesce_ms: 500,
        ..Options::default()
    })
    .await;
    let lead = d.add_strong_lead(1);
    d.sandbox.reset_counters();
    let started = std::time::Instant::now();
    let body = d.lead_event(lead);
    // Four senders back to back: events keep arriving while the lead is being read.
    let senders: Vec<_> = (0..4)
        .map(|_| {
            let (hook, body) = (d.hook.clone(), body.clone());
            tokio::spawn(async move {
                let mut sent = 0;
                while started.elapsed() < std::time::Duration::from_secs(3) {
                    assert_eq!(common::post(&hook, &body).await.0, 200);
                    sent += 1;
                }
                sent
            })
        })
        .collect();
    let mut sent = 0;
    for s in senders {
        sent += s.await.unwrap();
    }
    d.settle().await;
    let window = started.elapsed().as_millis() as usize / 500;
    let c = d.sandbox.counters();
    // One read per window, plus the first write and the window in flight at the end.
    assert!(
        c.requests <= window + 3,
        "{sent} webhooks over {window} windows cost {} requests: {c:?}",
        c.requests
    );
    assert!(sent > 100, "only {sent} webhooks sent");
    assert_eq!(d.crm_score(lead), Some(60));
}

/// `leadscore setup` itself (the binary) rides out a lost answer: the portal makes the
/// field and its nginx answers 504; setup says it tries again, lists the fields, finds
/// the one made and ends with it exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_setup_command_retries_a_lost_answer_without_making_a_field_twice() {
    let mut d = Daemon::start(Options {
        bind_events: false,
        ..Options::default()
    })
    .await;
    d.stop().await;
    let text = std::fs::read_to_string(d.config_path()).unwrap();
    let mut doc: toml::Table = toml::from_str(&text).unwrap();
    doc["portal"].as_array_mut().unwrap()[0]["fields"]
        .as_table_mut()
        .unwrap()
        .insert("expected_value".into(), "UF_CRM_LS_EV".into());
    let path = d.dir.path().join("setup.toml");
    std::fs::write(&path, toml::to_string(&doc).unwrap()).unwrap();
    d.sandbox.lose_answers("crm.lead.userfield.add", 1);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_leadscore"))
        .args(["setup", "--portal", demo::PORTAL, "--config"])
        .arg(&path)
        .output()
        .expect("the binary runs");
    let (stdout, stderr) = succeeded(&out);
    assert!(stderr.contains("trying again"), "{stderr}");
    // The first attempt made the field; the second found it.
    assert!(stdout.contains("nothing was created"), "{stdout}");
    let made = d
        .sandbox
        .userfields()
        .iter()
        .filter(|f| f["FIELD_NAME"] == "UF_CRM_LS_EV")
        .count();
    assert_eq!(made, 1, "the field exists once");
}

//! Config reload (what SIGHUP runs): a valid file changes the scores of new events; an
//! invalid one is refused with its errors and the running model stays in use.

use crate::common;

use std::sync::Arc;

use common::{Daemon, Options};
use leadscore::pipeline::ReloadError;

/// The demo config caps the "fit" group at 60; the strong test lead fills it.
const FIT_CAP: &str = "id = \"fit\"\nlabel = \"соответствие\"\nmax = 60";

fn edit_config(d: &Daemon, from: &str, to: &str) {
    let path = d.config_path();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "the demo config has {from:?}");
    std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_reload_applies_to_new_events_and_keeps_restart_only_settings() {
    let d = Daemon::start(Options::default()).await;
    let lead = d.add_strong_lead(1);
    d.settle().await;
    assert_eq!(d.crm_score(lead), Some(60), "seed model: a full fit group");

    edit_config(&d, FIT_CAP, &FIT_CAP.replace("max = 60", "max = 30"));
    let report = d
        .pipeline()
        .reload_file(&d.config_path(), &d.config.server)
        .expect("a valid config reloads");
    assert!(
        report
            .applied
            .iter()
            .any(|a| a.starts_with("scoring model")),
        "{report:?}"
    );
    // The file says `comment = true` where the test daemon runs with false: the field
    // settings apply (a new CRM client is built for them).
    assert!(
        report
            .applied
            .iter()
            .any(|a| a.contains("portal demo: fields")),
        "{report:?}"
    );
    // The harness tuned [server] in memory only: those differences need a restart and
    // the running values stay.
    assert!(
        report
            .needs_restart
            .iter()
            .any(|n| n == "server.coalesce_ms"),
        "{report:?}"
    );
    assert_eq!(
        d.pipeline().settings().coalesce,
        std::time::Duration::from_millis(150)
    );

    // A new event for the lead is scored with the new model.
    let (status, body) = d.post(&d.lead_event(lead)).await;
    assert_eq!(status, 200, "{body}");
    d.settle().await;
    assert_eq!(d.crm_score(lead), Some(30), "the reloaded cap applies");
    // And so does a brand-new lead.
    let fresh = d.add_strong_lead(2);
    d.settle().await;
    assert_eq!(d.crm_score(fresh), Some(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_reload_is_refused_and_the_old_model_stays() {
    let d = Daemon::start(Options::default()).await;
    let before = d.pipeline().model();

    edit_config(&d, FIT_CAP, &FIT_CAP.replace("max = 60", "max = \"sixty\""));
    let err = d
        .pipeline()
        .reload_file(&d.config_path(), &d.config.server)
        .expect_err("a broken file is refused");
    // The only way a reload fails: the file does not load (clients are never rebuilt).
    let ReloadError::Invalid(errors) = &err;
    assert!(!errors.0.is_empty());
    let text = err.to_string();
    assert!(text.contains("demo.toml"), "errors name the file: {text}");
    assert!(
        Arc::ptr_eq(&before, &d.pipeline().model()),
        "the running model is untouched"
    );

    // New events are still scored with the old model.
    let lead = d.add_strong_lead(3);
    d.settle().await;
    assert_eq!(d.crm_score(lead), Some(60), "old cap still in force");
}

/// Wait until `log` contains `needle` (the daemon logs JSON lines to it).
async fn wait_for_log(log: &std::path::Path, needle: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(needle) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {needle:?} in the daemon log:\n{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

fn hup(child: &std::process::Child) {
    let ok = std::process::Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -HUP");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_real_daemon_and_survives_a_broken_file() {
    use leadscore_bitrix24_sandbox::{Sandbox, SandboxOptions};
    const TOKEN: &str = "sighup-test-token-0123456789abcdef";
    let sandbox = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let prepared = leadscore::demo::prepare(&sandbox, dir.path(), TOKEN)
        .await
        .unwrap();
    drop(prepared.store);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let path = prepared.config_path.clone();
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"))
        .replace("coalesce_ms = 800", "coalesce_ms = 50")
        .replace("sweep_interval_secs = 5", "sweep_interval_secs = 3600");
    std::fs::write(&path, &text).unwrap();
    let log = dir.path().join("daemon.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_leadscore"))
        .args(["--log-format", "json", "serve", "--config"])
        .arg(&path)
        .env("RUST_LOG", "leadscore=info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    wait_for_log(&log, "leadscore is listening").await;
    // The SIGHUP handler is installed right after the listener; give it a moment.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    // A broken file: refused, logged, and the daemon keeps serving.
    std::fs::write(&path, text.replacen("max = 60", "max = \"sixty\"", 1)).unwrap();
    hup(&child);
    wait_for_log(&log, "config reload refused").await;
    assert!(child.try_wait().unwrap().is_none(), "still running");
    let health = reqwest::get(format!("{base}/healthz")).await.unwrap();
    assert_eq!(health.status().as_u16(), 200);

    // A valid change: applied to the next event.
    std::fs::write(
        &path,
        text.replacen(FIT_CAP, &FIT_CAP.replace("max = 60", "max = 30"), 1),
    )
    .unwrap();
    hup(&child);
    wait_for_log(&log, "config reloaded").await;
    let lead = sandbox
        .add_lead(serde_json::json!({
            "TITLE": "Reload", "POST": "Генеральный директор",
            "EMAIL": [{"VALUE": "ceo@plant.ru", "VALUE_TYPE": "WORK"}],
            "UF_CRM_INDUSTRY": "Производство", "UF_CRM_REVENUE": "800000000",
            "UF_CRM_EMPLOYEES": "240", "UF_CRM_REGION": "Москва",
        }))
        .unwrap();
    let body = leadscore::demo::event_body(&sandbox, "ONCRMLEADADD", lead, TOKEN);
    let (status, _) = common::post(
        &format!("{base}/webhooks/bitrix24/{}", leadscore::demo::PORTAL),
        &body,
    )
    .await;
    assert_eq!(status, 200);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let score = loop {
        let v = sandbox
            .get_lead(lead)
            .map(|l| l["UF_CRM_LEADSCORE"].clone())
            .unwrap_or_default();
        let s = v
            .as_i64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()));
        if s.is_some() || std::time::Instant::now() > deadline {
            break s;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let _ = std::process::Command::new("kill")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
    assert_eq!(score, Some(30), "the reloaded model scored the new lead");
}

//! `leadscore backtest --portal` against the Bitrix24 and amoCRM sandboxes over real
//! HTTP: a seeded history read back through the CRM gives the same AUC as the same
//! history read from a file, the pull stays near the request floor, and the second run
//! is served from the store's cache with no request at all.

use std::path::Path;
use std::process::Command;

use leadscore::backtest::generate::{generate, to_jsonl, Plan};
use leadscore::crm::bitrix24::{example_config_for, seed_history};
use leadscore_bitrix24_sandbox::{Sandbox, SandboxHandle, SandboxOptions};

/// The example config pointed at the sandbox, its store in `dir`.
fn config_for(sb: &SandboxHandle, dir: &Path) -> std::path::PathBuf {
    let text = example_config_for(sb, &dir.join("data"));
    let path = dir.join("leadscore.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs the binary's backtest (JSON report) and returns its AUC and stderr.
async fn backtest(args: Vec<String>) -> (f64, String) {
    let (report, stderr) = backtest_json(args).await;
    (report["auc"]["auc"].as_f64().expect("an AUC"), stderr)
}

/// Runs the binary's backtest and returns its JSON report and stderr.
pub(crate) async fn backtest_json(args: Vec<String>) -> (serde_json::Value, String) {
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_leadscore"))
            .arg("backtest")
            .args(&args)
            .args(["--format", "json"])
            .output()
            .expect("the binary runs")
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "backtest failed:\n{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (report, stderr)
}

/// The AUC of `history` backtested from a JSON Lines file, then (the first pull) from
/// `portal`, with the pull's stderr.
async fn file_then_portal(
    config: &Path,
    history: &[leadscore::backtest::ClosedLead],
    portal: &str,
) -> (f64, f64, String) {
    let file = config.with_file_name("history.jsonl");
    std::fs::write(&file, to_jsonl(history)).unwrap();
    let c = config.display().to_string();
    let (file_auc, _) = backtest(vec![
        "--config".into(),
        c.clone(),
        "--input".into(),
        file.display().to_string(),
    ])
    .await;
    let (portal_auc, stderr) =
        backtest(vec!["--config".into(), c, "--portal".into(), portal.into()]).await;
    (file_auc, portal_auc, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_portal_backtest_matches_the_file_and_the_second_run_makes_no_request() {
    let sb = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = config_for(&sb, dir.path());
    let history = generate(&Plan {
        leads: 700,
        seed: 7,
        ..Plan::default()
    });
    let loaded = leadscore::config::load_with(&config, leadscore::config::Secrets::Require)
        .unwrap_or_else(|e| panic!("{e}"));
    seed_history(&sb, &loaded.portals[0].fields, &history).unwrap();
    let c = config.display().to_string();
    let before = sb.counters().requests;
    let (file_auc, portal_auc, stderr) = file_then_portal(&config, &history, "main").await;
    let pulled = sb.counters().requests - before;
    assert!(
        (portal_auc - file_auc).abs() < 1e-12,
        "portal {portal_auc} vs file {file_auc}"
    );
    assert!(stderr.contains("700 closed leads read in"), "{stderr}");
    // 700 leads (more than the 10 pages whose keys sort as numbers too): 1 request for
    // the leads, the deals and ~4,000 activities in a few more (floor 3).
    assert!(pulled <= 8, "{pulled} requests:\n{stderr}");

    let before = sb.counters().requests;
    let (cached_auc, stderr) = backtest(vec![
        "--config".into(),
        c.clone(),
        "--portal".into(),
        "main".into(),
    ])
    .await;
    assert_eq!(sb.counters().requests - before, 0, "{stderr}");
    assert_eq!(cached_auc, portal_auc);
    assert!(stderr.contains("from the cache"), "{stderr}");

    let before = sb.counters().requests;
    let (refreshed, _) = backtest(vec![
        "--config".into(),
        c,
        "--portal".into(),
        "main".into(),
        "--refresh".into(),
    ])
    .await;
    assert!(sb.counters().requests - before > 0);
    assert_eq!(refreshed, portal_auc);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_amocrm_portal_backtest_matches_the_file_and_the_second_run_makes_no_request() {
    use leadscore_amocrm_sandbox::{Sandbox as AmoSandbox, SandboxOptions as AmoOptions};
    let sb = AmoSandbox::start(AmoOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = leadscore::crm::amocrm::backtest_config_for(&sb, &dir.path().join("data")).unwrap();
    let config = dir.path().join("leadscore.toml");
    std::fs::write(&config, text).unwrap();
    let history = generate(&Plan {
        leads: 300,
        seed: 11,
        ..Plan::default()
    });
    let loaded = leadscore::config::load_with(&config, leadscore::config::Secrets::Require)
        .unwrap_or_else(|e| panic!("{e}"));
    leadscore::crm::amocrm::seed_history(&sb, &loaded.portals[0].fields, &history).unwrap();
    // An open lead and its events stay out of the pull.
    let open = sb
        .add_lead(leadscore_amocrm_sandbox::NewLead::named("open"))
        .unwrap();
    sb.add_note(open, "common", serde_json::json!({"text": "[demo] open"}))
        .unwrap();
    sb.reset_calls();
    let (file_auc, portal_auc, stderr) = file_then_portal(&config, &history, "demo").await;
    assert!(
        (portal_auc - file_auc).abs() < 1e-12,
        "portal {portal_auc} vs file {file_auc}\n{stderr}"
    );
    assert!(stderr.contains("300 closed leads read in"), "{stderr}");
    let calls = sb.calls();
    // Pipelines, won and lost leads (2), contacts and companies (2 each), the event
    // feed and its notes (24 in the run that set this bound), then the lead field
    // definitions and the change log of the mapped fields and the price: one request
    // probing the account-wide feed's page 61 (by id it would take 30 + 30), then the
    // feed (one page, empty here): never a request per lead.
    assert!(calls.len() <= 36, "{} requests:\n{stderr}", calls.len());
    assert!(calls.iter().all(|r| r.status < 300), "{calls:?}");
    // Outcome, close time, size and loss reason of every lead came through the pull.
    let keys = |leads: &[leadscore::backtest::ClosedLead]| {
        let mut k: Vec<String> = leads
            .iter()
            .map(|c| {
                let (o, at) = (c.outcome, c.closed_at.timestamp());
                format!("{o:?} {at} {:?} {:?}", c.amount, c.loss_reason)
            })
            .collect();
        k.sort();
        k
    };
    let store = leadscore::store::Store::open(&dir.path().join("data")).unwrap();
    let (_, pulled) = store.outcomes("demo").unwrap().expect("a cached pull");
    // The backtest kept its calibration for the daemon's probability field.
    let calibration = store.calibration("demo").unwrap().expect("a calibration");
    assert!(calibration.probability(50).is_some());
    drop(store);
    let (got, want) = (keys(&pulled), keys(&history));
    assert_eq!(got, want);

    sb.reset_calls();
    let (cached_auc, stderr) = backtest(vec![
        "--config".into(),
        config.display().to_string(),
        "--portal".into(),
        "demo".into(),
    ])
    .await;
    assert_eq!(sb.calls().len(), 0, "{stderr}");
    assert_eq!(cached_auc, portal_auc);
    assert!(stderr.contains("from the cache"), "{stderr}");
}

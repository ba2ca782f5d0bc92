//! `cargo bench --bench backtest -- pull`: 10,000 generated closed leads seeded into the
//! Bitrix24 sandbox at the standard plan's limits (2 requests/s, burst 50), pulled by
//! the backtest's CRM source (requests against the floor, wall time), pulled again from
//! the store's cache (0 requests), and the AUC compared with the same history from a file.
//! `-- pull-amocrm`: the same against the amoCRM sandbox at 7 requests/s.

use std::time::Instant;

use leadscore::backtest::generate::{generate, Plan};
use leadscore::backtest::{analyze, CrmSource, Options};
use leadscore::config::{load_with, Secrets};
use leadscore_bitrix24_sandbox::{Sandbox, SandboxOptions};

pub fn run(n: usize) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    let sb = rt
        .block_on(Sandbox::start(SandboxOptions::default()))
        .expect("the sandbox starts");
    let dir = tempfile::tempdir().expect("a temp dir");
    let text = leadscore::crm::bitrix24::example_config_for(&sb, &dir.path().join("data"));
    let path = dir.path().join("leadscore.toml");
    std::fs::write(&path, text).expect("config written");
    let config = load_with(&path, Secrets::Require).unwrap_or_else(|e| panic!("{e}"));
    let history = generate(&Plan {
        leads: n,
        seed: 2026,
        ..Plan::default()
    });
    let acts: usize = history.iter().map(|c| c.activities.len()).sum();
    let t = Instant::now();
    leadscore::crm::bitrix24::seed_history(&sb, &config.portals[0].fields, &history)
        .expect("seeded");
    println!(
        "seeded {n} closed leads, {} deals, {acts} activities in {:.1} s",
        sb.deals().len(),
        t.elapsed().as_secs_f64()
    );
    measure(
        &config,
        "main",
        &history,
        &|| sb.counters().requests as u64,
        &|| sb.count_status(503) + sb.count_status(429),
    );
}

/// `cargo bench --bench backtest -- pull-amocrm`: the same against the amoCRM sandbox
/// at its limit (7 requests/s, enforced by the sandbox), through
/// `crm::amocrm::seed_history` and the portal `demo`.
pub fn run_amocrm(n: usize) {
    use leadscore_amocrm_sandbox::{Sandbox, SandboxOptions};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    let sb = rt
        .block_on(Sandbox::start(SandboxOptions::default()))
        .expect("the sandbox starts");
    let dir = tempfile::tempdir().expect("a temp dir");
    let text = leadscore::crm::amocrm::backtest_config_for(&sb, &dir.path().join("data"))
        .expect("a config");
    let path = dir.path().join("leadscore.toml");
    std::fs::write(&path, text).expect("config written");
    let config = load_with(&path, Secrets::Require).unwrap_or_else(|e| panic!("{e}"));
    let history = generate(&Plan {
        leads: n,
        seed: 2026,
        ..Plan::default()
    });
    let acts: usize = history.iter().map(|c| c.activities.len()).sum();
    let t = Instant::now();
    leadscore::crm::amocrm::seed_history(&sb, &config.portals[0].fields, &history).expect("seeded");
    println!(
        "seeded {n} closed leads with contacts and companies, {acts} activities in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    measure(
        &config,
        "demo",
        &history,
        &|| sb.calls().len() as u64,
        &|| sb.count_status(429) + sb.count_status(403),
    );
}

/// Pull `portal` twice (fresh, then from the cache) and print requests, floor, wall
/// time and the AUC beside the history's own.
fn measure(
    config: &leadscore::config::Config,
    portal: &str,
    history: &[leadscore::backtest::ClosedLead],
    requests: &dyn Fn() -> u64,
    limit_answers: &dyn Fn() -> usize,
) {
    let file_auc = analyze(&config.model, "file", history, &Options::default(), None)
        .auc
        .map(|a| a.auc);
    for (label, refresh) in [("first pull", true), ("second run (cache)", false)] {
        let before = requests();
        let src = CrmSource {
            config,
            portal: portal.into(),
            refresh,
        };
        let (leads, report) = src.pull().expect("pulled");
        let sent = requests() - before;
        let auc = analyze(&config.model, "portal", &leads, &Options::default(), None)
            .auc
            .map(|a| a.auc);
        println!(
            "{label}: {} closed leads, {sent} requests at the sandbox (client counted {}; floor {}), {:.2} s wall; AUC {:?} (file {:?}), rate-limit answers: {}",
            leads.len(),
            report.requests,
            report.floor_requests.map_or("-".into(), |f| f.to_string()),
            report.secs,
            auc,
            file_auc,
            limit_answers(),
        );
    }
}

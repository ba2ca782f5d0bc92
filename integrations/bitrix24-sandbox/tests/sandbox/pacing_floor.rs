//! The speed target against the sandbox at the real standard-plan limit
//! (2 requests/s, bucket 50): 10,000 lead writes = 200 batches of 50. The floor is
//! (200 − free at start) / 2 s: 75 s when the pacer may use the whole (empty) bucket.
//!
//! Both tests are `#[ignore]`d because they measure wall time over real HTTP: 75–80 s
//! each. Paused tokio time cannot stand in here: the client and the sandbox talk over
//! real sockets, and with the clock paused tokio jumps it forward whenever every task
//! waits on I/O, so timeouts and the sandbox's bucket would see time that never passed.
//! The same pacing is checked fast with paused time in the limiter's unit tests
//! (`integrations/bitrix24/src/limiter.rs`). Run these with
//! `cargo test -p leadscore-bitrix24-sandbox --release --test sandbox pacing_floor -- --ignored --nocapture --test-threads 1`.

use std::time::{Duration, Instant};

use leadscore_bitrix24::batch::BatchCommand;
use leadscore_bitrix24::client::{lead_update_params, Auth, Client, ClientConfig};
use leadscore_bitrix24::limiter::PacingConfig;
use leadscore_bitrix24_sandbox::{Sandbox, SandboxOptions};
use serde_json::json;

async fn write_10k(initial_available: f64) -> (f64, usize, u64, Duration) {
    let portal = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let ids: Vec<u64> = (0..10_000)
        .map(|i| {
            portal
                .add_lead(json!({"TITLE": format!("Lead {i}")}))
                .unwrap()
        })
        .collect();
    let client = Client::new(
        Auth::WebhookUrl(portal.webhook_url()),
        ClientConfig {
            pacing: PacingConfig {
                initial_available,
                ..PacingConfig::standard()
            },
            ..ClientConfig::default()
        },
    )
    .unwrap();
    portal.reset_bucket();
    portal.reset_counters();
    let cmds: Vec<BatchCommand> = ids
        .iter()
        .map(|id| {
            BatchCommand::new(
                format!("u{id}"),
                "crm.lead.update",
                lead_update_params(&id.to_string(), json!({"UF_CRM_LEADSCORE": 71})),
            )
        })
        .collect();
    let started = Instant::now();
    let out = client.batch_all(cmds).await.unwrap();
    let took = started.elapsed().as_secs_f64();
    let applied = out.values().filter(|r| r.result.is_ok()).count();
    assert_eq!(
        applied, 10_000,
        "every write's outcome is known and applied"
    );
    let rejected = portal.count_status(503);
    let stats = client.stats();
    portal.shutdown().await;
    (took, rejected, stats.requests_sent, stats.total_wait)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "takes ~76 s of real time"]
async fn ten_thousand_writes_reach_the_floor_without_503() {
    let (took, rejected, sent, wait) = write_10k(1.0).await;
    println!("initial_available=1.0: {took:.1} s, {sent} requests, {rejected} x 503, waited {wait:?} in total");
    assert_eq!(rejected, 0);
    assert_eq!(sent, 200);
    assert!(took <= 75.0 * 1.05, "took {took:.1} s, floor 75 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "takes ~78 s of real time"]
async fn default_start_assumption_costs_a_tenth_of_the_burst() {
    let standard = PacingConfig::standard();
    assert_eq!(
        standard.initial_available, 0.9,
        "the floor below is worked out for the default of 0.9"
    );
    let (took, rejected, sent, _) = write_10k(standard.initial_available).await;
    println!("initial_available=0.9 (default): {took:.1} s, {sent} requests, {rejected} x 503");
    assert_eq!(rejected, 0);
    assert_eq!(sent, 200);
    // The pacer keeps one request of margin (49 of 50) and assumes a tenth of that taken
    // (5), so 44 go at once: (200 − 44) / 2 = 78 s, the price of not trusting the bucket
    // to be empty after a restart.
    assert!(took <= 78.0 * 1.05, "took {took:.1} s, floor 78 s");
}

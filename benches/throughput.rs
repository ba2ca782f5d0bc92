//! CRM throughput against the real limits, in real time (not criterion: the point is
//! wall-clock seconds at 2 or 7 requests/s).
//!
//! ```sh
//! cargo bench --bench throughput            # all scenarios (~5 min)
//! cargo bench --bench throughput -- daemon  # only the Bitrix24 daemon scenarios (~1 min)
//! cargo bench --bench throughput -- amocrm  # only the amoCRM daemon scenarios (~1 min)
//! ```
//!
//! 1. `writes`: 10,000 `crm.lead.update` in 200 batches against a sandbox portal at
//!    2 req/s, burst 50 (floor: 50 at once, then 150 at 2/s = 75 s): our paced client vs
//!    a naive sender that fires and backs off after each 503 (what SDKs without a
//!    limiter do).
//! 2. `daemon`: the whole daemon on the same portal: API requests per scored lead for a
//!    single webhook and for a burst of 500 new leads, and the burst's drain time.
//! 3. `amocrm`: the same on a sandbox amoCRM account at 7 requests/s.

use std::time::{Duration, Instant};

use leadscore::demo;
use leadscore_bitrix24::batch::BatchCommand;
use leadscore_bitrix24::client::{lead_update_params, Auth, Client, ClientConfig};
use leadscore_bitrix24_sandbox::{Sandbox, SandboxHandle, SandboxOptions};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

fn seed_leads(sandbox: &SandboxHandle, n: usize) -> Vec<u64> {
    (0..n)
        .map(|i| {
            sandbox
                .add_lead(json!({"TITLE": format!("Lead {i}"), "POST": "Директор"}))
                .expect("seed lead")
        })
        .collect()
}

fn update_commands(ids: &[u64], round: u32) -> Vec<BatchCommand> {
    ids.iter()
        .map(|id| {
            BatchCommand::new(
                format!("u{id}"),
                "crm.lead.update",
                lead_update_params(&id.to_string(), json!({"UF_CRM_BENCH": round})),
            )
        })
        .collect()
}

/// Our client: paced against a model of the bucket, batches in flight.
async fn paced(n: usize) -> (Duration, usize, usize, usize) {
    let sandbox = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let ids = seed_leads(&sandbox, n);
    sandbox.reset_counters();
    sandbox.reset_bucket();
    let client = Client::new(
        Auth::WebhookUrl(sandbox.webhook_url()),
        ClientConfig::default(),
    )
    .unwrap();
    let started = Instant::now();
    let results = client.batch_all(update_commands(&ids, 1)).await.unwrap();
    let took = started.elapsed();
    let ok = results.values().filter(|r| r.result.is_ok()).count();
    let c = sandbox.counters();
    let limited = c.by_status.get(&503).copied().unwrap_or(0);
    sandbox.shutdown().await;
    (took, c.requests, limited, ok)
}

/// A sender with no model of the bucket: sends batches back to back and sleeps 500 ms
/// after each 503 before trying the same batch again.
async fn naive(n: usize) -> (Duration, usize, usize, usize) {
    let sandbox = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let ids = seed_leads(&sandbox, n);
    sandbox.reset_counters();
    sandbox.reset_bucket();
    let url = format!(
        "{}batch.json",
        secrecy::ExposeSecret::expose_secret(&sandbox.webhook_url())
    );
    let http = reqwest::Client::new();
    let started = Instant::now();
    let mut ok = 0;
    for chunk in update_commands(&ids, 1).chunks(50) {
        let cmd: serde_json::Map<String, Value> = chunk
            .iter()
            .map(|c| {
                (
                    c.key.clone(),
                    Value::String(format!(
                        "{}?{}",
                        c.method,
                        leadscore_bitrix24::batch::encode_params(&c.params)
                    )),
                )
            })
            .collect();
        loop {
            let resp = http
                .post(&url)
                .json(&json!({"halt": 0, "cmd": cmd}))
                .send()
                .await
                .unwrap();
            if resp.status().as_u16() == 503 {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            let body: Value = resp.json().await.unwrap();
            ok += body["result"]["result"].as_object().map_or(0, |m| m.len());
            break;
        }
    }
    let took = started.elapsed();
    let c = sandbox.counters();
    let limited = c.by_status.get(&503).copied().unwrap_or(0);
    sandbox.shutdown().await;
    (took, c.requests, limited, ok)
}

/// The daemon against a 2/s, burst 50 portal: requests per lead and drain time.
async fn daemon(leads: usize, sweep_secs: u64) -> (Duration, usize, usize, f64) {
    let sandbox = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let token = "bench-token-0123456789abcdefghij";
    let prepared = demo::prepare(&sandbox, dir.path(), token).await.unwrap();
    let mut config = prepared.config;
    drop(prepared.store);
    config.server.coalesce_ms = 1000;
    // 300 s is the production default; the demo's 5 s shows what each sweep costs.
    config.server.sweep_interval_secs = sweep_secs;
    config.portals[0].fields.comment = false;
    let shutdown = CancellationToken::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running = leadscore::app::start(config, listener, shutdown.clone())
        .await
        .unwrap();
    let hook = format!("http://{}/webhooks/bitrix24/{}", running.addr, demo::PORTAL);
    demo::bind_events(&sandbox, &hook, token);
    sandbox.reset_bucket();
    sandbox.reset_counters();
    let started = Instant::now();
    for i in 0..leads {
        sandbox
            .add_lead(json!({
                "TITLE": format!("Burst {i}"),
                "POST": if i % 2 == 0 { "Генеральный директор" } else { "Менеджер" },
                "EMAIL": [{"VALUE": format!("x{i}@corp{i}.ru"), "VALUE_TYPE": "WORK"}],
                "UF_CRM_EMPLOYEES": (50 + i).to_string(),
            }))
            .unwrap();
    }
    demo::settle(&sandbox, &running.pipeline, Duration::from_secs(900))
        .await
        .unwrap();
    // Settling waits a few quiet polls (3 × 150 ms) after the last piece of work.
    let took = started.elapsed().saturating_sub(Duration::from_millis(450));
    let c = sandbox.counters();
    let limited = c.by_status.get(&503).copied().unwrap_or(0);
    shutdown.cancel();
    running.handle.await.unwrap().unwrap();
    sandbox.shutdown().await;
    (took, c.requests, limited, c.requests as f64 / leads as f64)
}

/// The daemon against a 7 req/s amoCRM account: requests per lead, drain time, 429s.
async fn amocrm(leads: usize, sweep_secs: u64) -> (Duration, usize, usize, f64) {
    use leadscore_amocrm_sandbox::{FieldValue, NewContact, NewLead};
    let sandbox = leadscore_amocrm_sandbox::Sandbox::start(Default::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let secret = "bench-secret-0123456789abcdefghij";
    let prepared = leadscore::demo_amocrm::prepare(&sandbox, dir.path(), secret)
        .await
        .unwrap();
    let fit = prepared.fit;
    let mut config = prepared.config;
    drop(prepared.store);
    config.server.coalesce_ms = 1000;
    // 300 s is the production default; the demo's 5 s shows what each sweep costs
    // (before the sweep skipped our own writes, it re-fetched every lead we wrote).
    config.server.sweep_interval_secs = sweep_secs;
    config.portals[0].fields.comment = false;
    let shutdown = CancellationToken::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running = leadscore::app::start(config, listener, shutdown.clone())
        .await
        .unwrap();
    let hook = format!("http://{}/webhooks/amocrm/demo", running.addr);
    leadscore::demo_amocrm::add_webhook(&sandbox, &hook, secret);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    sandbox.reset_calls();
    let started = Instant::now();
    for i in 0..leads {
        let contact = sandbox
            .add_contact(NewContact {
                name: format!("Контакт {i}"),
                position: Some(
                    if i % 2 == 0 {
                        "Генеральный директор"
                    } else {
                        "Менеджер"
                    }
                    .into(),
                ),
                emails: vec![format!("x{i}@corp{i}.ru")],
                phones: Vec::new(),
                responsible_user_id: None,
                company_id: None,
            })
            .unwrap();
        let mut lead = NewLead::named(&format!("Burst {i}"));
        lead.fields = vec![(fit.employees, FieldValue::Number((50 + i) as f64))];
        let id = sandbox.add_lead(lead).unwrap();
        sandbox.link_contact(id, contact, true).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(900);
    let mut quiet = 0;
    while quiet < 3 {
        assert!(Instant::now() < deadline);
        sandbox.settle().await;
        if running.pipeline.is_idle().await && sandbox.pending_deliveries() == 0 {
            quiet += 1;
        } else {
            quiet = 0;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let took = started.elapsed().saturating_sub(Duration::from_millis(450));
    let requests = sandbox
        .calls()
        .iter()
        .filter(|c| c.path.starts_with("/api/"))
        .count();
    let limited = sandbox.count_status(429);
    shutdown.cancel();
    running.handle.await.unwrap().unwrap();
    sandbox.shutdown().await;
    (took, requests, limited, requests as f64 / leads as f64)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wants = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
    let n: usize = std::env::var("LEADSCORE_BENCH_WRITES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    if wants("writes") {
        println!(
            "## {n} lead writes, sandbox at 2 req/s, burst 50 ({} batch requests)\n",
            n.div_ceil(50)
        );
        println!("| sender | wall time | requests | 503s | writes confirmed |");
        println!("|---|---|---|---|---|");
        let (t, r, l, ok) = paced(n).await;
        println!(
            "| leadscore paced client | {:.1} s | {r} | {l} | {ok} |",
            t.as_secs_f64()
        );
        let (t, r, l, ok) = naive(n).await;
        println!(
            "| naive: send, sleep 0.5 s on 503 | {:.1} s | {r} | {l} | {ok} |",
            t.as_secs_f64()
        );
        let floor = (n.div_ceil(50).saturating_sub(50)) as f64 / 2.0;
        println!("\nfloor: {floor:.1} s (first 50 requests at once, the rest at 2/s)\n");
    }
    if wants("daemon") {
        println!("## the daemon, sandbox at 2 req/s, burst 50\n");
        println!("| scenario | drain time | API requests | per scored lead | 503s |");
        println!("|---|---|---|---|---|");
        let (t, r, l, per) = daemon(1, 300).await;
        println!(
            "| single new lead (webhook, fetch, write, echo) | {:.2} s | {r} | {per:.2} | {l} |",
            t.as_secs_f64()
        );
        let (t, r, l, per) = daemon(500, 300).await;
        println!(
            "| burst of 500 new leads | {:.1} s | {r} | {per:.3} | {l} |",
            t.as_secs_f64()
        );
        let (t, r, l, per) = daemon(500, 5).await;
        println!(
            "| burst of 500 new leads, sweep every 5 s | {:.1} s | {r} | {per:.3} | {l} |",
            t.as_secs_f64()
        );
    }
    if wants("amocrm") {
        println!("\n## the daemon, sandbox amoCRM account at 7 req/s\n");
        println!("| scenario | drain time | API requests | per scored lead | 429s |");
        println!("|---|---|---|---|---|");
        let (t, r, l, per) = amocrm(1, 300).await;
        println!(
            "| single new lead (webhook, fetch, write, echo) | {:.2} s | {r} | {per:.2} | {l} |",
            t.as_secs_f64()
        );
        let (t, r, l, per) = amocrm(500, 300).await;
        println!(
            "| burst of 500 new leads | {:.1} s | {r} | {per:.3} | {l} |",
            t.as_secs_f64()
        );
        let (t, r, l, per) = amocrm(500, 5).await;
        println!(
            "| burst of 500 new leads, sweep every 5 s | {:.1} s | {r} | {per:.3} | {l} |",
            t.as_secs_f64()
        );
    }
}

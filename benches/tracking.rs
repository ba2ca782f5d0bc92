//! Tracking intake (issue 17): how many website events per second `POST /track/<portal>`
//! takes with a durable acknowledgement (events in sled, flushed, before the 204), on
//! the daemon's own 2-thread runtime, with 32 clients on another runtime in the same
//! process (so both share the machine's cores, as a load generator on the same host
//! would).
//!
//! ```sh
//! cargo bench --bench tracking            # batches of 10 events (what the snippet sends)
//! cargo bench --bench tracking -- single  # one event per request (the worst case)
//! ```
//!
//! The per-address limit is raised for the run (every client is 127.0.0.1); everything
//! else is the production path: origin check, bot check, per-visitor limit, parse,
//! sled insert and flush. Half of the visitors are identified, so their requests also
//! queue the lead (a second durable write).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use leadscore::config::tracking::Tracking;
use leadscore::demo;
use leadscore_bitrix24_sandbox::{Sandbox, SandboxOptions};
use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "bench-token-0123456789abcdefghij";
const ORIGIN: &str = "https://shop.example.ru";
const SITE_KEY: &str = "site-key-bench";
const CLIENTS: usize = 32;
const SECS: u64 = 10;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let single = std::env::args().skip(1).any(|a| a == "single");
    let per_request: usize = if single { 1 } else { 10 };
    let daemon_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("daemon")
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let running = daemon_rt.block_on(async {
        let sandbox = Sandbox::start(SandboxOptions::default()).await.unwrap();
        let prepared = demo::prepare(&sandbox, dir.path(), TOKEN).await.unwrap();
        let mut config = prepared.config;
        config.server.coalesce_ms = 3_600_000;
        config.server.sweep_interval_secs = 3600;
        config.portals[0].tracking = Some(Arc::new(Tracking {
            site_key: SITE_KEY.into(),
            allowed_origins: vec![ORIGIN.into()],
            identify_secret: SecretString::from("bench-secret-bench-secret-bench-secret"),
            anonymous_days: 30,
            max_skew_secs: 300,
            per_ip_per_minute: 100_000_000,
            per_visitor_per_minute: 100_000_000,
            resolution_days: 30,
            visitor_field: None,
        }));
        let store = prepared.store.clone();
        for v in (0..1000).step_by(2) {
            store
                .identify_visitor(
                    demo::PORTAL,
                    &format!("v-bench-{v:08}"),
                    &format!("{}", 1 + v),
                    chrono::Utc::now(),
                )
                .unwrap();
        }
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let running = leadscore::app::start_with_store(config, store, listener, shutdown.clone())
            .await
            .unwrap();
        std::mem::forget(sandbox);
        running
    });
    let url = format!("http://{}/track/{}", running.addr, demo::PORTAL);
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let events = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut lat: Vec<Duration> = client_rt.block_on(async {
        let until = Instant::now() + Duration::from_secs(SECS);
        let mut tasks = Vec::new();
        for c in 0..CLIENTS {
            let url = url.clone();
            let events = events.clone();
            tasks.push(tokio::spawn(async move {
                let http = reqwest::Client::new();
                let mut lat = Vec::new();
                let mut n = 0usize;
                while Instant::now() < until {
                    let visitor = format!("v-bench-{:08}", (c * 7919 + n) % 1000);
                    let evs: Vec<_> = (0..per_request)
                        .map(|i| serde_json::json!({"t": "page_view", "u": format!("https://shop.example.ru/p/{n}/{i}")}))
                        .collect();
                    let body = serde_json::json!({"k": SITE_KEY, "v": visitor, "e": evs}).to_string();
                    let t = Instant::now();
                    let resp = http
                        .post(&url)
                        .header("origin", ORIGIN)
                        .header("user-agent", "Mozilla/5.0 bench")
                        .body(body)
                        .send()
                        .await
                        .expect("daemon answers");
                    assert_eq!(resp.status().as_u16(), 204);
                    lat.push(t.elapsed());
                    events.fetch_add(per_request as u64, Ordering::Relaxed);
                    n += 1;
                }
                lat
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all
    });
    let secs = started.elapsed().as_secs_f64();
    lat.sort_unstable();
    let total = events.load(Ordering::Relaxed);
    println!(
        "| {} event(s)/request | {CLIENTS} clients | {} requests | {:.0} requests/s | **{:.0} events/s** | p50 {:.2} ms | p99 {:.2} ms |",
        per_request,
        lat.len(),
        lat.len() as f64 / secs,
        total as f64 / secs,
        percentile(&lat, 0.5).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3,
    );
    shutdown.cancel();
    daemon_rt.block_on(async {
        let _ = running.handle.await;
    });
}

//! What hostile, unauthenticated requests cost the daemon (issue 14), in real time (not
//! criterion: the point is the latency a valid webhook sees while attackers send the
//! worst bodies they can without a token).
//!
//! ```sh
//! cargo bench --bench hostile            # both parts (~1 min)
//! cargo bench --bench hostile -- parse   # CPU time of the worst bodies only
//! cargo bench --bench hostile -- attack  # webhook latency under 8 attackers only
//! cargo bench --bench hostile -- intake  # wrk: durable-ack throughput (issue 19; only
//!                                        # when named, needs `wrk` on the PATH)
//! ```
//!
//! 1. `parse`: CPU time (this thread's, from `/proc/thread-self/schedstat`) that the
//!    Bitrix24 intake (`crm::bitrix24::webhook::decode`) spends on one body: the issue's
//!    reproduction (`a[]` × 10,000, 40 kB, no token), the same with the right token
//!    appended (so it is decoded in full), and 64 KiB of 16-level keys.
//! 2. `attack`: one client sends valid webhooks (one every 5 ms, each waiting for its
//!    answer) to a daemon on 127.0.0.1, first alone, then while 8 clients send the
//!    reproduction body back to back, then each at 100 requests/s; p50 / p99 / max of the
//!    valid webhooks' latency, and the daemon's CPU per attack request.
//!    The daemon runs on its own 2-thread runtime (as `serve` would), the clients on
//!    another thread.

use std::time::{Duration, Instant};

use leadscore::config::Config;
use leadscore::demo;
use leadscore_bitrix24_sandbox::{Sandbox, SandboxOptions};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "bench-token-0123456789abcdefghij";

/// The issue's reproduction: `python3 -c "print('&'.join(['a[]']*10000),end='')"`.
fn reproduction() -> String {
    vec!["a[]"; 10_000].join("&")
}

/// `n` pairs of keys 16 levels deep, each a fresh chain (the most maps per byte).
fn deep_keys(limit: usize) -> String {
    let mut out = String::new();
    let mut i = 0;
    while out.len() < limit - 64 {
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(&format!("k{i}"));
        for _ in 0..16 {
            out.push_str("[a]");
        }
        out.push_str("=1");
        i += 1;
    }
    out
}

fn auth_suffix() -> String {
    format!(
        "&auth%5Bdomain%5D=sandbox.bitrix24.test&auth%5Bmember_id%5D=m&auth%5Bapplication_token%5D={TOKEN}"
    )
}

/// CPU nanoseconds this thread has run (Linux).
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .expect("/proc/thread-self/schedstat (Linux only)")
}

/// Mean CPU time of `f` over enough calls to run ≥ 1 s of CPU or 2,000 calls; the
/// median of 5 such rounds.
fn cpu_per_call(mut f: impl FnMut()) -> Duration {
    let mut rounds = Vec::new();
    for _ in 0..5 {
        let start = thread_cpu_ns();
        let mut calls = 0u64;
        while calls < 2_000 && thread_cpu_ns() - start < 200_000_000 {
            f();
            calls += 1;
        }
        rounds.push((thread_cpu_ns() - start) / calls);
    }
    rounds.sort_unstable();
    Duration::from_nanos(rounds[2])
}

fn parse_part(config: &Config) {
    let portal = &config.portals[0];
    let repro = reproduction();
    let repro_token = format!("{repro}{}", auth_suffix());
    let deep = deep_keys(64 * 1024);
    println!("## CPU time per body in the Bitrix24 intake (`crm::bitrix24::webhook::decode`)\n");
    println!("| body | bytes | outcome | CPU per request |");
    println!("|---|---|---|---|");
    for (what, body) in [
        ("reproduction: `a[]` × 10,000, no token", &repro),
        ("reproduction + the right token", &repro_token),
        ("16-level keys, no token", &deep),
    ] {
        let outcome = match leadscore::crm::bitrix24::webhook::decode(portal, None, body.as_bytes())
        {
            Ok(_) => "accepted".to_string(),
            Err(e) => e.to_string().chars().take(60).collect(),
        };
        let t = cpu_per_call(|| {
            let _ = std::hint::black_box(leadscore::crm::bitrix24::webhook::decode(
                portal,
                None,
                std::hint::black_box(body.as_bytes()),
            ));
        });
        println!(
            "| {what} | {} | {outcome} | {:.3} ms |",
            body.len(),
            t.as_secs_f64() * 1e3
        );
    }
    println!();
}

/// CPU nanoseconds the daemon's threads have run: its runtime and blocking pool (named
/// `daemon`) and the store's group-commit flusher (`leadscore-flush`). sled's own I/O
/// threads are not counted.
fn daemon_cpu_ns() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|c| c.starts_with("daemon") || c.starts_with("leadscore-flush"))
        })
        .filter_map(|t| {
            std::fs::read_to_string(t.path().join("schedstat"))
                .ok()?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// Valid webhooks every 5 ms for `secs`, each awaited; latencies sorted.
async fn valid_client(hook: &str, secs: u64) -> Vec<Duration> {
    let client = reqwest::Client::new();
    let until = Instant::now() + Duration::from_secs(secs);
    let mut lat = Vec::new();
    let mut n = 0u64;
    while Instant::now() < until {
        let body = format!(
            "event=ONCRMLEADUPDATE&data%5BFIELDS%5D%5BID%5D={}&ts=1763000000{}",
            1 + n % 100,
            auth_suffix()
        );
        n += 1;
        let t = Instant::now();
        let resp = client
            .post(hook)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .expect("daemon answers");
        assert_eq!(resp.status().as_u16(), 200, "a valid webhook is accepted");
        let _ = resp.bytes().await;
        lat.push(t.elapsed());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    lat.sort_unstable();
    lat
}

fn report(what: &str, lat: &[Duration], attacks: u64) {
    println!(
        "| {what} | {} | {:.2} ms | {:.2} ms | {:.2} ms | {attacks} |",
        lat.len(),
        percentile(lat, 0.5).as_secs_f64() * 1e3,
        percentile(lat, 0.99).as_secs_f64() * 1e3,
        lat.last().unwrap().as_secs_f64() * 1e3,
    );
}

/// 8 attackers sending the reproduction (back to back, or one every `pace` each) while
/// one client sends valid webhooks for 15 s; the valid webhooks' latency and the daemon's
/// CPU per attack request.
async fn attack_round(hook: &str, pace: Option<Duration>) {
    let stop = CancellationToken::new();
    let repro = reproduction();
    let mut attackers = Vec::new();
    for _ in 0..8 {
        let (hook, body, stop) = (hook.to_string(), repro.clone(), stop.clone());
        attackers.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut answered = 0u64;
            while !stop.is_cancelled() {
                let sent = client
                    .post(&hook)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(body.clone())
                    .send();
                let resp = tokio::select! {
                    r = sent => r,
                    _ = stop.cancelled() => break,
                };
                if let Ok(r) = resp {
                    assert!(r.status().is_client_error(), "{}", r.status());
                    answered += 1;
                }
                if let Some(pace) = pace {
                    tokio::time::sleep(pace).await;
                }
            }
            answered
        }));
    }
    // Let the attack reach its steady state first.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cpu_before = daemon_cpu_ns();
    let lat = valid_client(hook, 15).await;
    stop.cancel();
    let cpu = daemon_cpu_ns() - cpu_before;
    let mut answered = 0;
    for a in attackers {
        answered += a.await.unwrap();
    }
    let what = match pace {
        None => "8 clients sending the reproduction back to back".to_string(),
        Some(p) => format!(
            "8 clients each sending the reproduction every {} ms",
            p.as_millis()
        ),
    };
    report(&what, &lat, answered);
    println!(
        "\ndaemon CPU while attacked: {:.2} s; per attack request (all of it, valid \
             webhooks included): {:.3} ms\n",
        cpu as f64 / 1e9,
        cpu as f64 / 1e6 / answered.max(1) as f64
    );
}

fn attack_part(hook: String) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        println!("## valid-webhook latency (one client, one webhook every 5 ms)\n");
        println!("| condition | webhooks | p50 | p99 | max | attack requests answered |");
        println!("|---|---|---|---|---|---|");
        let lat = valid_client(&hook, 5).await;
        report("alone", &lat, 0);

        // Back to back (the most one client can send), then 100 requests/s each (32 MB/s
        // of attack in all, more than most uplinks carry).
        for pace in [None, Some(Duration::from_millis(10))] {
            attack_round(&hook, pace).await;
        }
    });
}

/// Every request a new lead (`ONCRMLEADADD` with a fresh id), acknowledged only once
/// durable: `wrk -t2 -c32 -d10s --latency`, on the same 2 cores as the daemon.
fn intake_part(hook: &str) {
    let script = format!(
        r#"local threads = {{}}
function setup(thread) thread:set("tid", #threads + 1); table.insert(threads, thread) end
local n = 0
request = function()
  n = n + 1
  local body = "event=ONCRMLEADADD&data%5BFIELDS%5D%5BID%5D=" .. (tid * 100000000 + n) .. "&ts=1763000000{}"
  return wrk.format("POST", nil, {{["Content-Type"] = "application/x-www-form-urlencoded"}}, body)
end
"#,
        auth_suffix()
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new_lead.lua");
    std::fs::write(&path, script).unwrap();
    let cpu_before = daemon_cpu_ns();
    let out = std::process::Command::new("wrk")
        .args(["-t2", "-c32", "-d10s", "--latency", "-s"])
        .arg(&path)
        .arg(hook)
        .output()
        .expect("wrk on the PATH (apt-get install -y wrk)");
    let cpu = daemon_cpu_ns() - cpu_before;
    println!("## intake with durable ack: wrk -t2 -c32 -d10s --latency, a new lead per request\n");
    println!("{}", String::from_utf8_lossy(&out.stdout));
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    println!("daemon CPU during the run: {:.2} s", cpu as f64 / 1e9);
}

fn main() {
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wants = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
    // Logging as `serve` does (info), into a sink: each refusal pays what a log line
    // costs in production, the terminal stays readable.
    leadscore::telemetry::init(
        leadscore::telemetry::LogFormat::Human,
        "info",
        std::io::sink,
    );
    let intake = filter.iter().any(|f| f == "intake");
    let daemon_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("daemon")
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let (sandbox, running, config) = daemon_rt.block_on(async {
        let sandbox = Sandbox::start(SandboxOptions::default()).await.unwrap();
        let prepared = demo::prepare(&sandbox, dir.path(), TOKEN).await.unwrap();
        let mut config = prepared.config;
        // Nothing becomes due while measuring: the workers stay out of the picture and
        // each webhook costs exactly its parse, enqueue and flush.
        config.server.coalesce_ms = 3_600_000;
        config.server.sweep_interval_secs = 3600;
        // The intake part queues a new lead per request, far past the default bound.
        config.server.queue_limit = 10_000_000;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let running = leadscore::app::start_with_store(
            config.clone(),
            prepared.store,
            listener,
            shutdown.clone(),
        )
        .await
        .unwrap();
        (sandbox, running, config)
    });
    if intake {
        let hook = format!("http://{}/webhooks/bitrix24/{}", running.addr, demo::PORTAL);
        let before = running.pipeline.store.flushes();
        intake_part(&hook);
        let fsyncs = running.pipeline.store.flushes() - before;
        println!("sled fsyncs during the run: {fsyncs}");
    } else if wants("parse") {
        parse_part(&config);
    }
    if !intake && wants("attack") {
        let hook = format!("http://{}/webhooks/bitrix24/{}", running.addr, demo::PORTAL);
        std::thread::spawn(move || attack_part(hook))
            .join()
            .unwrap();
    }
    shutdown.cancel();
    daemon_rt.block_on(async {
        running.handle.await.unwrap().unwrap();
        sandbox.shutdown().await;
    });
}

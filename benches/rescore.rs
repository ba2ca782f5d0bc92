//! Issue 15 figures: what time-driven re-scoring and a full rescore cost.
//!
//! ```text
//! cargo bench --bench rescore -- decay     # CPU of a decay pass over 10,000 snapshots
//! cargo bench --bench rescore -- rss       # daemon RSS with 100,000 stored snapshots
//! cargo bench --bench rescore -- bitrix24  # full rescore of 10,000 leads vs the write floor
//! cargo bench --bench rescore -- amocrm    # the same on amoCRM at 7 requests/s
//! cargo bench --bench rescore -- pipeline-value  # status's weighted sums over 100,000 leads
//! ```
//!
//! 1. `decay`: 10,000 input snapshots (a CEO-like lead and 12 activities over five
//!    weeks each) with due timers; one pass does what the decay path does per lead
//!    without the CRM: read the due timers, read and decode the snapshot, score it,
//!    compare with what was last written, render the dated card text, compute and store
//!    the next timers (one batch). This thread's CPU time (`/proc/thread-self/schedstat`).
//! 2. `rss`: the daemon (`app::start`, a Bitrix24 sandbox portal) in a child process on
//!    a store holding 100,000 such snapshots; VmRSS when idle and VmHWM after a
//!    `rescore --dry-run` over all of them.
//!    `LEADSCORE_BENCH_WRAP="heaptrack"` (any command and its arguments) runs that child
//!    under a tool, to see where its memory goes.
//! 3. `bitrix24` / `amocrm`: real time against the sandbox at its real limits. The
//!    floor first (10,000 score writes, 50 per request, through a fresh paced client),
//!    then the daemon's own rescore job over the same 10,000 leads, whose inputs are
//!    stored (no webhooks bound, so echoes are not counted).
//! 4. `pipeline-value`: the sums `status` and the dashboard show (plain and weighted,
//!    per rep and pipeline) over 100,000 stored deals: from the per-lead value index,
//!    and the way it was done before the index (decode every snapshot), in one run.

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use leadscore::config::Config;
use leadscore::lead::{Activity, ActivityKind, Direction, Lead};
use leadscore::pipeline::rescore::{RescoreRequest, Target, TaskPolicy};
use leadscore::pipeline::Pipeline;
use leadscore::scoring::Model;
use leadscore::store::{InputSnapshot, Store};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const PORTAL: &str = "demo";

fn now() -> DateTime<Utc> {
    Utc::now()
}

/// A lead of the shape the demo portals hold (strong fit for every third).
fn lead(i: usize) -> Lead {
    Lead {
        id: i.to_string(),
        name: Some(format!("Имя {i}")),
        position: Some(
            if i % 3 == 0 {
                "Генеральный директор"
            } else {
                "Менеджер"
            }
            .into(),
        ),
        emails: vec![format!("x{i}@corp{i}.ru")],
        company: Some(format!("ООО «Компания {i}»")),
        industry: Some("Производство".into()),
        revenue: Some(8e8),
        employees: Some((50 + i % 400) as f64),
        region: Some("Москва".into()),
        responsible_id: Some("3".into()),
        ..Lead::default()
    }
}

/// 12 activities over five weeks, oldest first (as snapshots keep them).
fn activities(i: usize, at: DateTime<Utc>) -> Vec<Activity> {
    let kinds = [
        ("page_view", None, Some("https://corp.example.ru/pricing")),
        ("email_open", Some("Ваше КП"), None),
        ("demo_request", Some("[demo] Заявка на демо"), None),
        ("download", Some("Прайс-лист.pdf"), None),
        ("page_view", None, Some("https://corp.example.ru/blog/kpi")),
        ("call", Some("Вопрос"), None),
    ];
    let mut out: Vec<Activity> = (0..12)
        .map(|k| {
            let (kind, subject, url) = kinds[(i + k) % kinds.len()];
            Activity {
                id: format!("{i}-{k}"),
                kind: ActivityKind::from_name(kind),
                direction: (kind == "call").then_some(Direction::Incoming),
                subject: subject.map(str::to_string),
                url: url.map(str::to_string),
                at: at - TimeDelta::hours((k as i64 * 70 + i as i64 % 24) + 1),
                contact_id: None,
                mapped_by: None,
            }
        })
        .collect();
    out.sort_by_key(|a| a.at);
    out
}

fn snapshot(i: usize, id: &str, at: DateTime<Utc>) -> InputSnapshot {
    InputSnapshot {
        lead: Lead {
            id: id.to_string(),
            ..lead(i)
        },
        activities: activities(i, at),
        activity_cursor: None,
        activities_read_at: at,
        full_read_at: at,
    }
}

/// Store `n` snapshots (lead ids from `ids`, or 1..=n) with timers at `timer`.
fn seed_store(store: &Store, ids: &[String], timer: Option<DateTime<Utc>>) {
    let at = now();
    for (i, id) in ids.iter().enumerate() {
        store
            .put_snapshot(PORTAL, id, &snapshot(i, id, at))
            .unwrap();
        store.set_timer(PORTAL, id, timer).unwrap();
    }
    store.flush_blocking().unwrap();
}

/// The example model (the one the demo portals use).
fn example_model() -> Model {
    let text = include_str!("../config/leadscore.example.toml");
    let cfg: leadscore::config::schema::FileConfig = toml::from_str(text).unwrap();
    Model::compile(&cfg.scoring).unwrap()
}

/// CPU nanoseconds this thread has run (Linux).
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .expect("/proc/thread-self/schedstat (Linux only)")
}

fn decay() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let n = 10_000;
    let ids: Vec<String> = (1..=n).map(|i| i.to_string()).collect();
    seed_store(&store, &ids, Some(now() - TimeDelta::minutes(1)));
    let model = example_model();
    for round in 0..3 {
        let t = now();
        let cpu = thread_cpu_ns();
        let wall = Instant::now();
        let due = store.due_timers(t, n).unwrap();
        let mut changed = 0usize;
        let mut timers = Vec::with_capacity(due.len());
        for (portal, id, _) in &due {
            let snap = store.snapshot(portal, id).unwrap().unwrap();
            let score = model.score(&snap.lead, &snap.activities, t);
            let text = score.explain_dated(model.language(), model.utc_offset(), t);
            let last = store.written(portal, id).unwrap();
            if last.is_none_or(|w| w.score != score.total || w.breakdown != text) {
                changed += 1;
            }
            let next = model.next_change(&snap.lead, &snap.activities, t);
            // Round 0 keeps the timers due for the next rounds.
            timers.push((id.as_str(), next.map(|_| t - TimeDelta::seconds(1))));
        }
        // As the score stage does: one batch of timer changes per pass (one portal).
        store.set_timers(PORTAL, timers).unwrap();
        let cpu = Duration::from_nanos(thread_cpu_ns() - cpu);
        println!(
            "| decay pass {round} | {} due | {changed} changed | {:.3} s CPU | {:.3} s wall |",
            due.len(),
            cpu.as_secs_f64(),
            wall.elapsed().as_secs_f64()
        );
    }
}

fn status_kb(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// The child of `rss`: the daemon on `config`, measured.
async fn rss_child(config: &str) {
    let config = leadscore::config::load(std::path::Path::new(config)).unwrap();
    let before = status_kb("VmRSS:");
    let shutdown = CancellationToken::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running = leadscore::app::start(config, listener, shutdown.clone())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle = status_kb("VmRSS:");
    let started = Instant::now();
    let p = running
        .pipeline
        .start_rescore(RescoreRequest {
            portal: None,
            target: Target::Stored,
            dry_run: true,
            tasks: TaskPolicy::None,
        })
        .await
        .unwrap();
    let dry = started.elapsed();
    let report = p.job.and_then(|j| j.report).map(|r| r.summary());
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!(
        "| daemon, stored snapshots | RSS before start {} MB | idle {} MB | after a dry run over all ({:.1} s: {}) {} MB | peak (VmHWM) {} MB |",
        before / 1024,
        idle / 1024,
        dry.as_secs_f64(),
        report.unwrap_or_default(),
        status_kb("VmRSS:") / 1024,
        status_kb("VmHWM:") / 1024
    );
    shutdown.cancel();
    running.handle.await.unwrap().unwrap();
}

async fn rss(n: usize) {
    use leadscore_bitrix24_sandbox::{Sandbox, SandboxOptions};
    let sandbox = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let prepared =
        leadscore::demo::prepare(&sandbox, dir.path(), "bench-token-0123456789abcdefghij")
            .await
            .unwrap();
    let ids: Vec<String> = (1..=n).map(|i| i.to_string()).collect();
    let seeded = Instant::now();
    // Timers an hour ahead: the daemon idles instead of re-scoring every lead.
    seed_store(&prepared.store, &ids, Some(now() + TimeDelta::hours(1)));
    let on_disk: u64 = walk_size(dir.path());
    eprintln!(
        "seeded {n} snapshots in {:.1} s; data dir {} MB",
        seeded.elapsed().as_secs_f64(),
        on_disk / 1_000_000
    );
    drop(prepared.store);
    // LEADSCORE_BENCH_WRAP="heaptrack" (or valgrind ...) runs the child under a tool.
    let wrap = std::env::var("LEADSCORE_BENCH_WRAP").unwrap_or_default();
    let mut argv: Vec<String> = wrap.split_whitespace().map(str::to_string).collect();
    argv.push(std::env::current_exe().unwrap().display().to_string());
    let out = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .arg("--rss-child")
        .arg(&prepared.config_path)
        .output()
        .await
        .unwrap();
    print!("{}", String::from_utf8_lossy(&out.stdout));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    sandbox.shutdown().await;
}

fn walk_size(p: &std::path::Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    };
    rd.filter_map(Result::ok)
        .map(|e| walk_size(&e.path()))
        .sum()
}

/// Wait until the rescore job is finished and the queue empty.
async fn wait_rescored(pipeline: &Pipeline) {
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        assert!(Instant::now() < deadline, "rescore did not finish");
        let p = pipeline.rescore_progress().await;
        if !p.running && pipeline.is_idle().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The daemon on `config` rescoring every stored lead; (wall time, progress line).
async fn rescore_through_daemon(config: Config) -> Duration {
    let shutdown = CancellationToken::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running = leadscore::app::start(config, listener, shutdown.clone())
        .await
        .unwrap();
    let started = Instant::now();
    running
        .pipeline
        .start_rescore(RescoreRequest {
            portal: None,
            target: Target::Stored,
            dry_run: false,
            tasks: TaskPolicy::None,
        })
        .await
        .unwrap();
    wait_rescored(&running.pipeline).await;
    let took = started.elapsed().saturating_sub(Duration::from_millis(100));
    shutdown.cancel();
    running.handle.await.unwrap().unwrap();
    took
}

fn writes(ids: &[String]) -> Vec<leadscore::crm::ScoreWrite> {
    ids.iter()
        .map(|id| leadscore::crm::ScoreWrite {
            lead_id: id.clone(),
            score: 1,
            tier: "cold".into(),
            breakdown: "floor".into(),
            comment: false,
            extras: Default::default(),
        })
        .collect()
}

/// The daemon's settings for a rescore bench: no sweep, no comments.
fn tune(config: &mut Config) {
    config.server.sweep_interval_secs = 3600;
    config.portals[0].fields.comment = false;
}

async fn bitrix24(n: usize) {
    use leadscore_bitrix24::batch::BatchCommand;
    use leadscore_bitrix24::client::{lead_update_params, Auth, Client, ClientConfig};
    use leadscore_bitrix24_sandbox::{Sandbox, SandboxOptions};
    use serde_json::json;
    let sandbox = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let prepared =
        leadscore::demo::prepare(&sandbox, dir.path(), "bench-token-0123456789abcdefghij")
            .await
            .unwrap();
    let ids: Vec<String> = (0..n)
        .map(|i| {
            sandbox
                .add_lead(json!({"TITLE": format!("Lead {i}"), "POST": "Директор"}))
                .unwrap()
                .to_string()
        })
        .collect();
    seed_store(&prepared.store, &ids, None);
    drop(prepared.store);
    let mut config = prepared.config;
    tune(&mut config);

    // The floor: n updates, 50 per batch, through a fresh paced client.
    sandbox.reset_bucket();
    sandbox.reset_counters();
    let client = Client::new(
        Auth::WebhookUrl(sandbox.webhook_url()),
        ClientConfig::default(),
    )
    .unwrap();
    let cmds: Vec<BatchCommand> = ids
        .iter()
        .map(|id| {
            BatchCommand::new(
                format!("u{id}"),
                "crm.lead.update",
                lead_update_params(id, json!({"UF_CRM_LEADSCORE": 1})),
            )
        })
        .collect();
    let started = Instant::now();
    client.batch_all(cmds).await.unwrap();
    let floor = started.elapsed();
    let fc = sandbox.counters();

    sandbox.reset_bucket();
    sandbox.reset_counters();
    let took = rescore_through_daemon(config).await;
    let c = sandbox.counters();
    let get = |m: &str| c.by_method.get(m).copied().unwrap_or(0);
    println!("| Bitrix24, {n} leads | wall time | requests | 503s | crm.lead.update | crm.lead.list | crm.activity.list |");
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| write floor (batches of 50 updates) | {:.1} s | {} | {} | {} | 0 | 0 |",
        floor.as_secs_f64(),
        fc.requests,
        fc.by_status.get(&503).copied().unwrap_or(0),
        fc.by_method.get("crm.lead.update").copied().unwrap_or(0)
    );
    println!(
        "| daemon rescore (stored inputs) | {:.1} s ({:.3} × floor) | {} ({:.3} ×) | {} | {} | {} | {} |",
        took.as_secs_f64(),
        took.as_secs_f64() / floor.as_secs_f64(),
        c.requests,
        c.requests as f64 / fc.requests as f64,
        c.by_status.get(&503).copied().unwrap_or(0),
        get("crm.lead.update"),
        get("crm.lead.list"),
        get("crm.activity.list")
    );
    sandbox.shutdown().await;
}

async fn amocrm(n: usize) {
    use leadscore_amocrm_sandbox::{NewLead, Sandbox};
    let sandbox = Sandbox::start(Default::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let prepared =
        leadscore::demo_amocrm::prepare(&sandbox, dir.path(), "bench-secret-0123456789abcdefghij")
            .await
            .unwrap();
    let ids: Vec<String> = (0..n)
        .map(|i| {
            sandbox
                .add_lead(NewLead::named(&format!("Lead {i}")))
                .unwrap()
                .to_string()
        })
        .collect();
    seed_store(&prepared.store, &ids, None);
    let mut config = prepared.config;
    tune(&mut config);

    // The floor: n score writes in PATCHes of 50 through a fresh adapter (its own
    // paced client), i.e. exactly the write requests a rescore needs.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    sandbox.reset_calls();
    let crm = leadscore::app::build_crm(&config.portals[0], &prepared.store).unwrap();
    let started = Instant::now();
    let out = crm
        .write_scores(&config.portals[0].fields, &writes(&ids))
        .await
        .unwrap();
    let floor = started.elapsed();
    assert!(out.values().all(Result::is_ok));
    let floor_requests = api_calls(&sandbox);
    drop(crm);
    drop(prepared.store);

    tokio::time::sleep(Duration::from_millis(1100)).await;
    sandbox.reset_calls();
    let took = rescore_through_daemon(config).await;
    let calls = sandbox.calls();
    let patches = calls.iter().filter(|c| c.method == "PATCH").count();
    let gets = calls
        .iter()
        .filter(|c| c.method == "GET" && c.path.starts_with("/api/"))
        .count();
    println!("| amoCRM, {n} leads | wall time | requests | 429s | 403s | PATCH | GET |");
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| write floor (PATCHes of 50) | {:.1} s | {floor_requests} | 0 | 0 | {floor_requests} | 0 |",
        floor.as_secs_f64()
    );
    let requests = api_calls(&sandbox);
    println!(
        "| daemon rescore (stored inputs) | {:.1} s ({:.3} × floor) | {requests} ({:.3} ×) | {} | {} | {patches} | {gets} |",
        took.as_secs_f64(),
        took.as_secs_f64() / floor.as_secs_f64(),
        requests as f64 / floor_requests as f64,
        sandbox.count_status(429),
        sandbox.count_status(403),
    );
    sandbox.shutdown().await;
}

fn api_calls(sandbox: &leadscore_amocrm_sandbox::SandboxHandle) -> usize {
    sandbox
        .calls()
        .iter()
        .filter(|c| c.path.starts_with("/api/"))
        .count()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--rss-child") {
        rss_child(&args[1]).await;
        return;
    }
    let filter: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let wants = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
    let n: usize = std::env::var("LEADSCORE_BENCH_LEADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    if wants("decay") {
        tokio::task::spawn_blocking(decay).await.unwrap();
    }
    if wants("rss") {
        let n = std::env::var("LEADSCORE_BENCH_SNAPSHOTS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(100_000);
        rss(n).await;
    }
    if wants("bitrix24") {
        bitrix24(n).await;
    }
    if wants("amocrm") {
        amocrm(n).await;
    }
    if wants("pipeline-value") {
        let n = std::env::var("LEADSCORE_BENCH_SNAPSHOTS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(100_000);
        tokio::task::spawn_blocking(move || pipeline_value(n))
            .await
            .unwrap();
    }
}

/// Status's pipeline sums over `n` stored deals: the index, then every snapshot
/// decoded (the way before the index), each the best of three passes.
fn pipeline_value(n: usize) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let stages: leadscore::weighted::StagesSection = toml::from_str(&format!(
        "[pipelines.\"0\"]\n{}",
        leadscore::weighted::BITRIX24_FUNNEL
    ))
    .unwrap();
    let stages = leadscore::weighted::StageCoefficients::check(&stages).unwrap();
    let stage_ids = [
        "NEW",
        "PREPARATION",
        "PREPAYMENT_INVOICE",
        "EXECUTING",
        "FINAL_INVOICE",
    ];
    let at = now();
    for i in 0..n {
        let id = format!("D_{i}");
        let mut snap = snapshot(i, &id, at);
        snap.lead.amount = Some(10_000.0 + (i % 97) as f64 * 1_000.0);
        snap.lead.pipeline = Some("0".into());
        snap.lead.stage = Some(stage_ids[i % stage_ids.len()].into());
        store.put_snapshot(PORTAL, &id, &snap).unwrap();
    }
    store.flush_blocking().unwrap();
    // Both ways must agree before they are timed.
    let decode_all = || {
        let mut deals = Vec::new();
        for id in store.snapshot_ids(PORTAL).unwrap() {
            deals.push(store.snapshot(PORTAL, &id).unwrap().unwrap().lead);
        }
        stages.sums(deals.iter())
    };
    let from_index = || stages.sums(store.deal_values(PORTAL).unwrap().iter());
    assert_eq!(decode_all(), from_index());
    let best = |f: &dyn Fn() -> leadscore::weighted::PipelineSums| {
        (0..3)
            .map(|_| {
                let cpu = thread_cpu_ns();
                std::hint::black_box(f());
                thread_cpu_ns() - cpu
            })
            .min()
            .unwrap() as f64
            / 1e6
    };
    let index_ms = best(&from_index);
    let decode_ms = best(&decode_all);
    println!(
        "pipeline value over {n} deals (CPU, best of 3): index {index_ms:.0} ms, decoding every snapshot {decode_ms:.0} ms ({:.1}x)",
        decode_ms / index_ms
    );
}

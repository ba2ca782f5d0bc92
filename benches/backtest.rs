//! CPU time of a backtest's scoring: 10,000 generated closed leads scored as of just
//! before their outcome under two models (the example config and a variant with other
//! points), the work `leadscore backtest --model` does before its tables. Also the whole
//! report (tables, rule lift, capacity peaks, paired comparison) for the same leads.
//!
//! Run: `cargo bench --bench backtest` (prints figures; the target is ≤ 0.5 s of CPU).
//! `cargo bench --bench backtest -- pull`: the pull of 10,000 closed leads from the
//! Bitrix24 sandbox at 2 requests/s ([`pull`]); `-- pull-amocrm` the same from the
//! amoCRM sandbox at 7 requests/s.

#[path = "backtest/pull.rs"]
mod pull;

use std::time::Duration;

use leadscore::backtest::analyze::score_all;
use leadscore::backtest::generate::{generate, Plan};
use leadscore::backtest::{analyze, tune, AsOf, Options};
use leadscore::config::schema::FileConfig;
use leadscore::scoring::Model;

const EXAMPLE: &str = include_str!("../config/leadscore.example.toml");

/// CPU nanoseconds this thread has run (Linux).
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .expect("/proc/thread-self/schedstat (Linux only)")
}

/// The lowest CPU time of `rounds` runs of `f`.
fn best_cpu(rounds: usize, mut f: impl FnMut()) -> Duration {
    (0..rounds)
        .map(|_| {
            let start = thread_cpu_ns();
            f();
            Duration::from_nanos(thread_cpu_ns() - start)
        })
        .min()
        .expect("at least one round")
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing: run small.
    let full = std::env::args().any(|a| a == "--bench");
    let n = if full { 10_000 } else { 200 };
    if std::env::args().any(|a| a == "pull-amocrm") {
        return pull::run_amocrm(n);
    }
    if std::env::args().any(|a| a == "pull") {
        return pull::run(n);
    }
    let cfg: FileConfig = toml::from_str(EXAMPLE).expect("example parses");
    let a = Model::compile(&cfg.scoring).expect("example compiles");
    let points: Vec<i32> = cfg.scoring.rules.iter().map(|r| r.points * 3 / 2).collect();
    let b = Model::compile(&tune::with_points(&cfg.scoring, &points)).expect("variant compiles");
    let leads = generate(&Plan {
        leads: n,
        seed: 2026,
        ..Plan::default()
    });
    let acts: usize = leads.iter().map(|c| c.activities.len()).sum();
    let mut sink = 0i64;
    let two = best_cpu(5, || {
        for m in [&a, &b] {
            sink += score_all(m, &leads, AsOf::default())
                .iter()
                .map(|s| i64::from(s.total))
                .sum::<i64>();
        }
    });
    let report = best_cpu(3, || {
        let r = analyze(
            &a,
            "bench",
            &leads,
            &Options::default(),
            Some(("variant", &b)),
        );
        sink += r.leads as i64;
    });
    println!(
        "backtest scoring: {n} closed leads ({acts} activities) under two models: {:.3} s CPU (best of 5; target ≤ 0.5 s: {})",
        two.as_secs_f64(),
        if two.as_secs_f64() <= 0.5 { "met" } else { "NOT met" }
    );
    println!(
        "whole report with --model (tables, rule lift, capacity peaks, paired DeLong): {:.3} s CPU (best of 3)",
        report.as_secs_f64()
    );
    std::hint::black_box(sink);
}

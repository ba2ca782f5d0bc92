//! What durability costs: enqueueing a webhook's event in sled, with and without the
//! flush the intake waits for before answering 200.
//!
//! ```sh
//! cargo bench --bench store -- --warm-up-time 1 --measurement-time 5
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::Utc;
use criterion::{criterion_group, criterion_main, Criterion};
use leadscore::crm::Subject;
use leadscore::store::{Cause, CauseSource, Queueing, Store};

fn cause() -> Cause {
    Cause {
        source: CauseSource::Webhook,
        detail: "ONCRMLEADUPDATE 1".into(),
        at: Utc::now(),
    }
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(Store::open(dir.path()).unwrap());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let n = AtomicU64::new(0);
    let window = Duration::from_secs(2);
    let mut g = c.benchmark_group("store");
    let enqueue = |lead: String| {
        store
            .enqueue(
                "p",
                &Subject::Lead(lead),
                cause(),
                Utc::now(),
                Queueing {
                    coalesce: window,
                    limit: usize::MAX,
                },
                false,
            )
            .unwrap()
    };
    let next_id = || n.fetch_add(1, Ordering::Relaxed).to_string();
    g.bench_function("enqueue_new_lead", |b| b.iter(|| enqueue(next_id())));
    g.bench_function("enqueue_merge_same_lead", |b| {
        b.iter(|| enqueue("42".into()))
    });
    g.bench_function("enqueue_then_flush", |b| {
        b.iter(|| {
            enqueue(next_id());
            rt.block_on(store.flush()).unwrap();
        })
    });
    g.bench_function("flush_8_concurrent_webhooks", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut set = tokio::task::JoinSet::new();
                for _ in 0..8 {
                    enqueue(next_id());
                }
                for _ in 0..8 {
                    let s = store.clone();
                    // Each request flushes on its own, as the intake does.
                    set.spawn(async move { s.flush().await });
                }
                while let Some(r) = set.join_next().await {
                    r.unwrap().unwrap();
                }
            })
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! The limiter's tests: the bucket model, smoothing, restore, logging.
use super::*;

/// A model of the portal's bucket counted at arrival: fails if a request arrives
/// while the bucket holds `capacity` already.
struct Bucket {
    level: f64,
    last: Instant,
    drain: f64,
    capacity: f64,
    rejected: u32,
}

impl Bucket {
    fn new(drain: f64, capacity: u32, level: f64) -> Self {
        Bucket {
            level,
            last: Instant::now(),
            drain,
            capacity: f64::from(capacity),
            rejected: 0,
        }
    }
    fn hit(&mut self) {
        let now = Instant::now();
        self.level =
            (self.level - now.duration_since(self.last).as_secs_f64() * self.drain).max(0.0);
        self.last = now;
        if self.level + 1.0 > self.capacity + 1e-9 {
            self.rejected += 1;
        } else {
            self.level += 1.0;
        }
    }
}

#[tokio::test(start_paused = true)]
async fn reaches_the_floor_without_tripping_the_bucket() {
    // 200 batch requests (10,000 lead writes) against 2/s burst 50, bucket empty,
    // pacer told the bucket is empty: floor is (200 - 50) / 2 = 75 s.
    let pacer = Pacer::new(PacingConfig {
        initial_available: 1.0,
        ..PacingConfig::standard()
    })
    .unwrap();
    let mut bucket = Bucket::new(2.0, 50, 0.0);
    let start = Instant::now();
    for _ in 0..200 {
        pacer.acquire().await;
        bucket.hit();
    }
    let took = start.elapsed().as_secs_f64();
    assert_eq!(bucket.rejected, 0);
    assert!((75.0..=75.0 * 1.05).contains(&took), "took {took}");
    let stats = pacer.stats();
    assert_eq!(stats.requests_sent, 200);
    assert!(stats.total_wait.as_secs_f64() > 70.0);
}

#[tokio::test(start_paused = true)]
async fn default_assumption_is_safe_and_within_five_percent_of_the_floor() {
    // The default assumes a tenth of the bucket is taken; it really is.
    let pacer = Pacer::new(PacingConfig::standard()).unwrap();
    let mut bucket = Bucket::new(2.0, 50, 5.0);
    let start = Instant::now();
    for _ in 0..200 {
        pacer.acquire().await;
        bucket.hit();
    }
    assert_eq!(bucket.rejected, 0);
    // (200 - 44) / 2 = 78 s against the 75 s floor of an empty bucket.
    let took = start.elapsed().as_secs_f64();
    assert!((77.0..=75.0 * 1.05).contains(&took), "took {took}");
}

#[tokio::test(start_paused = true)]
async fn half_full_assumption_is_safe_when_the_bucket_really_is_half_full() {
    let pacer = Pacer::new(PacingConfig {
        initial_available: 0.5,
        ..PacingConfig::standard()
    })
    .unwrap();
    let mut bucket = Bucket::new(2.0, 50, 25.0);
    let start = Instant::now();
    for _ in 0..200 {
        pacer.acquire().await;
        bucket.hit();
    }
    assert_eq!(bucket.rejected, 0);
    // (200 - 24) / 2 = 88 s: the price of not knowing the bucket's level.
    let took = start.elapsed().as_secs_f64();
    assert!((87.0..=89.0).contains(&took), "took {took}");
}

#[tokio::test(start_paused = true)]
async fn concurrent_callers_share_one_bucket() {
    let pacer = std::sync::Arc::new(Pacer::new(PacingConfig::enterprise()).unwrap());
    let bucket = std::sync::Arc::new(Mutex::new(Bucket::new(5.0, 250, 25.0)));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (p, b) = (pacer.clone(), bucket.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..100 {
                p.acquire().await;
                b.lock().unwrap().hit();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(bucket.lock().unwrap().rejected, 0);
    assert_eq!(pacer.stats().requests_sent, 800);
}

#[tokio::test(start_paused = true)]
async fn a_limit_error_empties_the_model() {
    let pacer = Pacer::new(PacingConfig {
        initial_available: 1.0,
        ..PacingConfig::standard()
    })
    .unwrap();
    pacer.acquire().await;
    pacer.on_limit_exceeded();
    let start = Instant::now();
    pacer.acquire().await;
    assert!(
        start.elapsed() >= Duration::from_millis(490),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(pacer.stats().limit_errors, 1);
}

#[test]
fn rejects_bad_settings() {
    let bad = |c: PacingConfig| Pacer::new(c).unwrap_err();
    assert_eq!(
        bad(PacingConfig {
            per_second: 0.0,
            ..Default::default()
        }),
        PacingError::Rate(0.0)
    );
    assert_eq!(
        bad(PacingConfig {
            burst: 0,
            ..Default::default()
        }),
        PacingError::Burst
    );
    assert_eq!(
        bad(PacingConfig {
            initial_available: 1.5,
            ..Default::default()
        }),
        PacingError::Initial(1.5)
    );
}

#[tokio::test(start_paused = true)]
async fn operating_budget_pauses_a_method_until_old_baskets_drop() {
    let t = OperatingTracker::new(OperatingConfig {
        burst_fraction: 1.0,
        ..OperatingConfig::default()
    });
    // 5 minutes of heavy use: 100 s per minute -> 500 s > 432 s (90% of 480).
    for _ in 0..5 {
        t.record("crm.lead.list", Some(100.0), None);
        assert_eq!(t.ready_at("crm.item.update"), None);
        tokio::time::advance(Duration::from_secs(60)).await;
    }
    let start = Instant::now();
    let at = t.ready_at("CRM.LEAD.LIST").expect("paused");
    // After the first basket drops, 400 s remain, under 432: resume then.
    let wait = at.duration_since(start);
    assert!(
        wait > Duration::from_secs(290) && wait <= Duration::from_secs(300),
        "{wait:?}"
    );
    let usage = t.usage();
    assert_eq!(usage.len(), 1);
    assert_eq!(usage[0].method, "crm.lead.list");
    assert_eq!(usage[0].used_secs, 500.0);
    assert_eq!(usage[0].paused_for, Some(wait));
    let waited = t.wait("crm.lead.list").await;
    assert_eq!(waited, wait);
    assert_eq!(t.ready_at("crm.lead.list"), None);
}

#[tokio::test(start_paused = true)]
async fn a_reported_total_is_trusted_over_processing() {
    let t = OperatingTracker::new(OperatingConfig::default());
    // The portal says 440 s are used: over the 432 s stop, whatever we counted.
    t.record("crm.activity.list", Some(0.03), Some(440.0));
    assert!(t.ready_at("crm.activity.list").is_some());
    assert_eq!(t.usage()[0].used_secs, 440.0);
    // A later report of less lowers our figure (older use rolled out at the portal).
    t.record("crm.activity.list", Some(0.03), Some(100.0));
    assert!((t.usage()[0].used_secs - 100.0).abs() < 1e-9);
    // Without a report, processing (not the larger duration) is what counts.
    t.record("crm.lead.list", Some(0.25), None);
    let lead = t.usage().into_iter().find(|u| u.method == "crm.lead.list");
    assert_eq!(lead.map(|u| u.used_secs), Some(0.25));
}

#[tokio::test(start_paused = true)]
async fn heavy_use_is_smoothed_below_the_stop_instead_of_a_cliff() {
    // A method costing 2 s per call, called as fast as the tracker allows for 30
    // minutes: usage must level off under the 432 s stop, with no wait longer than
    // a few seconds, and spending must go on at a steady pace.
    let t = OperatingTracker::new(OperatingConfig::default());
    let start = Instant::now();
    let mut longest = Duration::ZERO;
    let mut calls = 0u32;
    let mut peak: f64 = 0.0;
    while start.elapsed() < Duration::from_secs(1800) {
        let waited = t.wait("crm.activity.list").await;
        longest = longest.max(waited);
        t.record("crm.activity.list", Some(2.0), None);
        calls += 1;
        peak = peak.max(t.usage()[0].used_secs);
        // The caller's own pace: one call per second at most.
        tokio::time::advance(Duration::from_secs(1)).await;
    }
    assert!(peak < 432.0, "peak {peak}");
    assert!(
        longest < Duration::from_secs(10),
        "longest wait {longest:?}"
    );
    // Steady state spends about what rolls out: well over 300 calls in 30 minutes.
    assert!(calls > 300, "{calls} calls");
}

#[tokio::test(start_paused = true)]
async fn reported_operating_and_429_reset_pause_too() {
    let t = OperatingTracker::new(OperatingConfig::default());
    let until = Instant::now() + Duration::from_secs(42);
    t.pause_until("tasks.task.add", until);
    assert_eq!(t.ready_at("tasks.task.add"), Some(until));
    assert_eq!(t.wait("tasks.task.add").await, Duration::from_secs(42));
}

#[tokio::test(start_paused = true)]
async fn the_accounting_survives_a_restart() {
    let t = OperatingTracker::new(OperatingConfig::default());
    t.record("crm.activity.list", Some(1.0), Some(450.0));
    t.pause_until("tasks.task.add", Instant::now() + Duration::from_secs(120));
    let snap = t.snapshot();
    let json = serde_json::to_string(&snap).unwrap();
    let back: OperatingSnapshot = serde_json::from_str(&json).unwrap();
    let fresh = OperatingTracker::new(OperatingConfig::default());
    fresh.restore(&back);
    assert!(
        fresh.ready_at("crm.activity.list").is_some(),
        "still over the stop"
    );
    assert!(fresh.ready_at("tasks.task.add").is_some(), "still paused");
    let used = fresh.usage();
    assert!((used[0].used_secs - 450.0).abs() < 1e-6, "{used:?}");
}

#[tokio::test(start_paused = true)]
async fn a_restored_bucket_level_is_not_spent_twice() {
    let pacer = Pacer::new(PacingConfig {
        initial_available: 1.0,
        ..PacingConfig::standard()
    })
    .unwrap();
    for _ in 0..40 {
        pacer.acquire().await;
    }
    let level = pacer.level();
    assert!((level - 40.0).abs() < 1.0, "{level}");
    // A restart one second later: 38 requests still in the portal's bucket.
    let fresh = Pacer::new(PacingConfig {
        initial_available: 1.0,
        ..PacingConfig::standard()
    })
    .unwrap();
    fresh.restore_level(level, Duration::from_secs(1));
    let mut bucket = Bucket::new(2.0, 50, level - 2.0);
    for _ in 0..60 {
        fresh.acquire().await;
        bucket.hit();
    }
    assert_eq!(bucket.rejected, 0);
}

/// Collects what a subscriber writes, for asserting on log lines.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_pause_is_logged_once_with_the_budget_and_its_end() {
    let out = Captured::default();
    let writer = out.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    tracing::subscriber::with_default(subscriber, || {
        rt.block_on(async {
            let t = OperatingTracker::new(OperatingConfig::default()).with_label("main");
            t.record("crm.activity.list", Some(0.1), Some(450.0));
            let waited = t.wait("crm.activity.list").await;
            assert!(waited > Duration::from_secs(5), "{waited:?}");
            // A short wait (pacing between calls) is not a pause: no second line.
            t.record("crm.activity.list", Some(0.1), Some(100.0));
            t.wait("crm.activity.list").await;
        })
    });
    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    let warns: Vec<&str> = text.lines().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warns.len(), 1, "{text}");
    let w = warns[0];
    for part in [
        "paused by the operating-time limit",
        "portal=main",
        "method=crm.activity.list",
        "used_secs=450",
        "limit_secs=480",
        "until=",
    ] {
        assert!(w.contains(part), "{part} missing in {w}");
    }
    assert!(
        text.contains("resumed after the operating-time pause"),
        "{text}"
    );
}

//! Request pacing shaped like the portal's limits, so the client never causes them.
//!
//! **Rate.** Bitrix24 keeps a leaky bucket per portal: each request adds 1, the bucket
//! drains `Y` per second, and a request arriving while it holds more than `X` gets
//! `503 QUERY_LIMIT_EXCEEDED` (standard plans 2/s and 50, Enterprise 5/s and 250).
//! GCRA (governor) with period `1/Y` and burst `X` admits exactly the request sequences
//! that bucket admits, counted at the moment we *send*. Three adjustments make "never a
//! 503" hold in practice:
//! - the burst is reduced by `safety_margin` requests (default 1), which absorbs
//!   `margin / Y` seconds of network jitter between our send time and the portal's
//!   arrival time;
//! - at start the bucket may be partly full (other apps on the same IP share it, or our
//!   previous process just stopped), so only `initial_available × burst` requests are
//!   free at first (default 0.9: a restart takes seconds, during which the bucket drains
//!   2–5 per second, so assuming a tenth of it is taken covers a quick restart and a
//!   neighbour's few calls, while a cold start still reaches the throughput floor within
//!   5%: 10,000 writes = 200 batches take (200 − 44) / 2 = 78 s against a 75 s floor);
//!   the rest become free at the drain rate;
//! - a 503 that arrives anyway (another client filled the bucket) marks our model full.
//!
//! **Operating time.** Each method may use `limit` seconds of server time in a sliding
//! window of ten one-minute baskets (480 s by default in the cloud); past it the method
//! gets `429 OPERATION_TIME_LIMIT`. [`OperatingTracker`] records each call's execution
//! time per method (from `time` or a batch's `result_time`) plus the portal's own
//! `time.operating` figure, and pauses a method at `pause_fraction` of the limit until
//! the oldest basket drops out, or until `operating_reset_at` after a 429.
//!
//! Both use tokio's clock, so tests run them with paused time.

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::time::Instant;

/// governor clock reading tokio's time (so `tokio::time::pause` controls it).
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

impl Clock for TokioClock {
    type Instant = std::time::Instant;

    fn now(&self) -> Self::Instant {
        Instant::now().into_std()
    }
}

/// How to pace requests to one portal.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PacingConfig {
    /// The bucket's drain rate `Y` (requests per second).
    pub per_second: f64,
    /// The bucket's size `X`.
    pub burst: u32,
    /// Fraction of the burst assumed free at start (0.0 ..= 1.0).
    pub initial_available: f64,
    /// Requests of headroom kept below `burst` against send/arrival jitter.
    pub safety_margin: u32,
}

impl PacingConfig {
    /// Standard (non-Enterprise) plans: 2 requests/s, bucket of 50.
    pub fn standard() -> Self {
        PacingConfig {
            per_second: 2.0,
            burst: 50,
            initial_available: 0.9,
            safety_margin: 1,
        }
    }

    /// Enterprise plans: 5 requests/s, bucket of 250.
    pub fn enterprise() -> Self {
        PacingConfig {
            per_second: 5.0,
            burst: 250,
            ..PacingConfig::standard()
        }
    }

    /// The burst the limiter actually allows (at least 1).
    pub fn effective_burst(&self) -> u32 {
        self.burst.saturating_sub(self.safety_margin).max(1)
    }
}

impl Default for PacingConfig {
    fn default() -> Self {
        PacingConfig::standard()
    }
}

/// Counters that make pacing measurable (benchmarks, metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PacingStats {
    /// Requests let through (each retry counts again).
    pub requests_sent: u64,
    /// `QUERY_LIMIT_EXCEEDED` answers seen (should stay 0 unless another client shares
    /// the portal's bucket).
    pub limit_errors: u64,
    /// Total time callers spent waiting for the rate limiter.
    pub total_wait: Duration,
    /// Total time callers spent waiting because a method was paused for operating time.
    pub operating_wait: Duration,
}

type Gcra = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<std::time::Instant>>;

/// The per-portal request pacer (one per portal, shared by all of its callers).
#[derive(Debug)]
pub struct Pacer {
    limiter: Gcra,
    config: PacingConfig,
    sent: AtomicU64,
    limit_errors: AtomicU64,
    wait_nanos: AtomicU64,
    operating_wait_nanos: AtomicU64,
}

/// Invalid pacing settings.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PacingError {
    #[error("per_second must be a positive finite number, got {0}")]
    Rate(f64),
    #[error("burst must be at least 1")]
    Burst,
    #[error("initial_available must be within 0..=1, got {0}")]
    Initial(f64),
}

impl Pacer {
    /// Build a pacer; the assumed initial fill is taken from the bucket right away.
    pub fn new(config: PacingConfig) -> Result<Pacer, PacingError> {
        if !(config.per_second.is_finite() && config.per_second > 0.0) {
            return Err(PacingError::Rate(config.per_second));
        }
        if config.burst == 0 {
            return Err(PacingError::Burst);
        }
        if !(0.0..=1.0).contains(&config.initial_available) {
            return Err(PacingError::Initial(config.initial_available));
        }
        let burst = config.effective_burst();
        let period = Duration::from_secs_f64(1.0 / config.per_second);
        let quota = Quota::with_period(period)
            .ok_or(PacingError::Rate(config.per_second))?
            .allow_burst(NonZeroU32::new(burst).ok_or(PacingError::Burst)?);
        let limiter = RateLimiter::direct_with_clock(quota, TokioClock);
        let used = ((1.0 - config.initial_available) * f64::from(burst)).round() as u32;
        if let Some(n) = NonZeroU32::new(used.min(burst)) {
            // Cannot fail: a fresh limiter has `burst` cells free and n <= burst.
            let _ = limiter.check_n(n);
        }
        Ok(Pacer {
            limiter,
            config,
            sent: AtomicU64::new(0),
            limit_errors: AtomicU64::new(0),
            wait_nanos: AtomicU64::new(0),
            operating_wait_nanos: AtomicU64::new(0),
        })
    }

    /// The settings this pacer runs with.
    pub fn config(&self) -> PacingConfig {
        self.config
    }

    /// Wait until one more request fits the bucket model, and count it as sent.
    pub async fn acquire(&self) {
        let started = Instant::now();
        loop {
            match self.limiter.check() {
                Ok(()) => break,
                Err(not_until) => {
                    let wait = not_until.wait_time_from(TokioClock.now());
                    tokio::time::sleep(wait.max(Duration::from_micros(100))).await;
                }
            }
        }
        let waited = started.elapsed();
        self.wait_nanos
            .fetch_add(waited.as_nanos() as u64, Ordering::Relaxed);
        self.sent.fetch_add(1, Ordering::Relaxed);
    }

    /// A `QUERY_LIMIT_EXCEEDED` came back: someone else filled the bucket, so assume it
    /// is full now (takes every free cell; they come back at the drain rate).
    pub fn on_limit_exceeded(&self) {
        self.limit_errors.fetch_add(1, Ordering::Relaxed);
        for _ in 0..self.config.effective_burst() {
            if self.limiter.check().is_err() {
                break;
            }
        }
    }

    pub(crate) fn add_operating_wait(&self, d: Duration) {
        self.operating_wait_nanos
            .fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }

    /// Counters so far.
    pub fn stats(&self) -> PacingStats {
        PacingStats {
            requests_sent: self.sent.load(Ordering::Relaxed),
            limit_errors: self.limit_errors.load(Ordering::Relaxed),
            total_wait: Duration::from_nanos(self.wait_nanos.load(Ordering::Relaxed)),
            operating_wait: Duration::from_nanos(self.operating_wait_nanos.load(Ordering::Relaxed)),
        }
    }
}

/// Settings of the per-method operating-time budget.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OperatingConfig {
    /// Seconds of execution per method allowed in the window (cloud default 480).
    pub limit_secs: f64,
    /// Pause a method once it has used this fraction of the limit.
    pub pause_fraction: f64,
    /// Number of baskets in the window (10 in Bitrix24).
    pub baskets: u32,
    /// Length of one basket (one minute in Bitrix24).
    pub basket_len: Duration,
}

impl Default for OperatingConfig {
    fn default() -> Self {
        OperatingConfig {
            limit_secs: 480.0,
            pause_fraction: 0.9,
            baskets: 10,
            basket_len: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Default)]
struct MethodUse {
    /// (basket start, seconds used in it), oldest first.
    baskets: VecDeque<(Instant, f64)>,
    /// The portal's last `time.operating` for this method, and when we saw it.
    reported: Option<(Instant, f64)>,
    /// Explicit pause (after a 429, until `operating_reset_at`).
    paused_until: Option<Instant>,
}

/// Per-method execution-time accounting (see the module docs).
#[derive(Debug)]
pub struct OperatingTracker {
    config: OperatingConfig,
    origin: Instant,
    methods: Mutex<HashMap<String, MethodUse>>,
}

impl OperatingTracker {
    /// A tracker with no history.
    pub fn new(config: OperatingConfig) -> Self {
        OperatingTracker {
            config,
            origin: Instant::now(),
            methods: Mutex::new(HashMap::new()),
        }
    }

    fn window(&self) -> Duration {
        self.config.basket_len * self.config.baskets
    }

    fn basket_start(&self, now: Instant) -> Instant {
        let len = self.config.basket_len.as_nanos().max(1);
        let since = now.duration_since(self.origin).as_nanos();
        self.origin + Duration::from_nanos(((since / len) * len) as u64)
    }

    /// Record one call: `secs` of execution (from `time.duration`/`processing`) and
    /// the portal's reported `operating` total when present.
    pub fn record(&self, method: &str, secs: f64, reported_operating: Option<f64>) {
        let now = Instant::now();
        let start = self.basket_start(now);
        let window = self.window();
        let mut map = self.methods.lock().unwrap_or_else(|e| e.into_inner());
        let m = map.entry(method.to_ascii_lowercase()).or_default();
        while m
            .baskets
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) >= window)
        {
            m.baskets.pop_front();
        }
        if secs.is_finite() && secs > 0.0 {
            match m.baskets.back_mut() {
                Some((t, used)) if *t == start => *used += secs,
                _ => m.baskets.push_back((start, secs)),
            }
        }
        if let Some(r) = reported_operating.filter(|r| r.is_finite()) {
            m.reported = Some((now, r));
        }
    }

    /// The portal refused the method until `until` (a 429 with `operating_reset_at`).
    pub fn pause_until(&self, method: &str, until: Instant) {
        let mut map = self.methods.lock().unwrap_or_else(|e| e.into_inner());
        let m = map.entry(method.to_ascii_lowercase()).or_default();
        m.paused_until = Some(m.paused_until.map_or(until, |p| p.max(until)));
    }

    /// When `method` may run next; `None` means now.
    pub fn ready_at(&self, method: &str) -> Option<Instant> {
        let now = Instant::now();
        let window = self.window();
        let threshold = self.config.limit_secs * self.config.pause_fraction;
        let map = self.methods.lock().unwrap_or_else(|e| e.into_inner());
        let m = map.get(&method.to_ascii_lowercase())?;
        let mut ready: Option<Instant> = m.paused_until.filter(|p| *p > now);
        let live: Vec<&(Instant, f64)> = m
            .baskets
            .iter()
            .filter(|(t, _)| now.duration_since(*t) < window)
            .collect();
        let used: f64 = live.iter().map(|(_, s)| s).sum();
        if used >= threshold {
            // Wait until enough old baskets drop out to get back under the threshold.
            let mut remaining = used;
            for (t, s) in &live {
                remaining -= s;
                if remaining < threshold {
                    let at = *t + window;
                    ready = Some(ready.map_or(at, |r| r.max(at)));
                    break;
                }
            }
        }
        if let Some((seen, r)) = m.reported {
            if r >= threshold {
                // The portal's figure only drops as baskets roll: look again a basket later.
                let at = seen + self.config.basket_len;
                if at > now {
                    ready = Some(ready.map_or(at, |x| x.max(at)));
                }
            }
        }
        ready
    }

    /// Wait until `method` may run; returns how long it waited.
    pub async fn wait(&self, method: &str) -> Duration {
        let started = Instant::now();
        while let Some(at) = self.ready_at(method) {
            tokio::time::sleep_until(at).await;
        }
        started.elapsed()
    }
}

#[cfg(test)]
mod tests {
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
        let t = OperatingTracker::new(OperatingConfig::default());
        // 5 minutes of heavy use: 100 s per minute -> 500 s > 432 s (90% of 480).
        for _ in 0..5 {
            t.record("crm.lead.list", 100.0, None);
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
        let waited = t.wait("crm.lead.list").await;
        assert_eq!(waited, wait);
        assert_eq!(t.ready_at("crm.lead.list"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn reported_operating_and_429_reset_pause_too() {
        let t = OperatingTracker::new(OperatingConfig::default());
        t.record("batch", 0.2, Some(470.0));
        assert!(t.ready_at("batch").is_some());
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(t.ready_at("batch"), None);
        let until = Instant::now() + Duration::from_secs(42);
        t.pause_until("tasks.task.add", until);
        assert_eq!(t.ready_at("tasks.task.add"), Some(until));
        assert_eq!(t.wait("tasks.task.add").await, Duration::from_secs(42));
    }
}

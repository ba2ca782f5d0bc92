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

use std::collections::{BTreeMap, HashMap, VecDeque};
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
    /// Our estimate of the portal bucket's level (requests in it) and when it was
    /// taken, kept beside governor's state so it can be saved and restored across a
    /// restart.
    level: Mutex<(f64, Instant)>,
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
            level: Mutex::new((f64::from(used.min(burst)), Instant::now())),
        })
    }

    fn drained_level(&self, guard: &(f64, Instant), now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(guard.1).as_secs_f64();
        (guard.0 - elapsed * self.config.per_second).max(0.0)
    }

    fn bump_level(&self, to: Option<f64>) {
        let now = Instant::now();
        let mut g = self.level.lock().unwrap_or_else(|e| e.into_inner());
        let level = match to {
            Some(l) => l,
            None => self.drained_level(&g, now) + 1.0,
        };
        *g = (level.min(f64::from(self.config.burst)), now);
    }

    /// The estimated bucket level now (requests the portal still counts against us).
    pub fn level(&self) -> f64 {
        let g = self.level.lock().unwrap_or_else(|e| e.into_inner());
        self.drained_level(&g, Instant::now())
    }

    /// An earlier run left the bucket at `level` requests, `ago` before now: whatever of
    /// it has not drained yet is taken from the free cells, so a restart in the middle
    /// of a burst does not send a fresh burst into a full bucket.
    pub fn restore_level(&self, level: f64, ago: Duration) {
        let left = (level - ago.as_secs_f64() * self.config.per_second).max(0.0);
        let assumed = self.level();
        let extra = (left - assumed).ceil();
        if extra >= 1.0 {
            let n = (extra as u32).min(self.config.effective_burst());
            for _ in 0..n {
                if self.limiter.check().is_err() {
                    break;
                }
            }
            self.bump_level(Some(assumed + f64::from(n)));
        }
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
        self.bump_level(None);
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
        self.bump_level(Some(f64::from(self.config.burst)));
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
    /// Hard stop: pause a method once it has used this fraction of the limit, until old
    /// baskets roll out (the portal would refuse it for the rest of the window past 1.0).
    pub pause_fraction: f64,
    /// Smooth pacing: a method may spend this fraction of its paced budget (90% of the
    /// hard stop) at once; the rest comes at an even rate over the window. Any window
    /// then holds at most the paced budget, so steady heavy use levels off below the
    /// stop and waits are one call's cost at a time, instead of running flat out into
    /// a pause of minutes. 1.0 turns pacing off (only the hard stop remains).
    pub burst_fraction: f64,
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
            burst_fraction: 0.3,
            baskets: 10,
            basket_len: Duration::from_secs(60),
        }
    }
}

impl OperatingConfig {
    fn window(&self) -> Duration {
        self.basket_len * self.baskets
    }
    fn hard_stop(&self) -> f64 {
        self.limit_secs * self.pause_fraction
    }
    fn paced_budget(&self) -> f64 {
        self.hard_stop() * 0.9
    }
    /// Operating seconds per second the method may spend once its burst is used
    /// (`None`: pacing is off).
    fn sustained_rate(&self) -> Option<f64> {
        let rate = self.paced_budget() * (1.0 - self.burst_fraction)
            / self.window().as_secs_f64().max(1e-9);
        (rate > 0.0 && rate.is_finite()).then_some(rate)
    }
    /// How far ahead of now the pacing clock may run (the burst, in seconds of time).
    fn tolerance(&self, rate: f64) -> Duration {
        Duration::from_secs_f64(self.paced_budget() * self.burst_fraction.clamp(0.0, 1.0) / rate)
    }
}

#[derive(Debug, Default)]
struct MethodUse {
    /// (basket start, seconds used in it), oldest first.
    baskets: VecDeque<(Instant, f64)>,
    /// Explicit pause (after a 429, until `operating_reset_at`).
    paused_until: Option<Instant>,
    /// Smooth pacing (GCRA over operating seconds): the theoretical time at which all
    /// spending so far would have been paid off at the sustained rate.
    tat: Option<Instant>,
    /// A pause of this method has been logged and not yet ended.
    warned: bool,
}

impl MethodUse {
    fn roll(&mut self, now: Instant, window: Duration) {
        while self
            .baskets
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) >= window)
        {
            self.baskets.pop_front();
        }
    }
    fn used(&self) -> f64 {
        self.baskets.iter().map(|(_, s)| s).sum()
    }
}

/// A wait at least this long is a pause: logged at WARN and shown in status pages.
pub const PAUSE_FROM: Duration = Duration::from_secs(5);

/// One method's standing, for status pages, metrics and logs.
#[derive(Debug, Clone, PartialEq)]
pub struct MethodUsage {
    /// Method name, lower-case.
    pub method: String,
    /// Operating seconds used in the current window (the portal's own figure when it
    /// reports one).
    pub used_secs: f64,
    /// The portal's limit for the window.
    pub limit_secs: f64,
    /// How long the method is held back from now, when that is a pause (at least
    /// [`PAUSE_FROM`]); the short waits of smooth pacing are not reported.
    pub paused_for: Option<Duration>,
}

/// The operating-time accounting in wall-clock terms, so it survives a restart (the
/// portal keeps counting while the daemon is down).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OperatingSnapshot {
    /// Per method: (basket start as unix milliseconds, seconds used in it).
    pub methods: BTreeMap<String, Vec<(i64, f64)>>,
    /// Per method: paused until (unix milliseconds) after a 429.
    #[serde(default)]
    pub paused_until: BTreeMap<String, i64>,
}

/// Per-method execution-time accounting (see the module docs).
#[derive(Debug)]
pub struct OperatingTracker {
    config: OperatingConfig,
    origin: Instant,
    methods: Mutex<HashMap<String, MethodUse>>,
    /// Who the log lines are about (the portal's config id).
    label: String,
}

/// Wall-clock unix milliseconds of a tokio instant.
fn unix_ms_of(t: Instant) -> i64 {
    let now = Instant::now();
    let wall = chrono::Utc::now().timestamp_millis();
    if t >= now {
        wall + t.duration_since(now).as_millis() as i64
    } else {
        wall - now.duration_since(t).as_millis() as i64
    }
}

/// The tokio instant of wall-clock unix milliseconds (saturating at "now - 1 day").
fn instant_of_unix_ms(ms: i64) -> Instant {
    let now = Instant::now();
    let wall = chrono::Utc::now().timestamp_millis();
    let delta = ms - wall;
    if delta >= 0 {
        now + Duration::from_millis(delta as u64)
    } else {
        let back = Duration::from_millis(delta.unsigned_abs()).min(Duration::from_secs(86_400));
        now.checked_sub(back).unwrap_or(now)
    }
}

impl OperatingTracker {
    /// A tracker with no history.
    pub fn new(config: OperatingConfig) -> Self {
        OperatingTracker {
            config,
            origin: Instant::now(),
            methods: Mutex::new(HashMap::new()),
            label: String::new(),
        }
    }

    /// Name the portal in log lines.
    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }

    fn basket_start(&self, now: Instant) -> Instant {
        let len = self.config.basket_len.as_nanos().max(1);
        let since = now.saturating_duration_since(self.origin).as_nanos();
        self.origin + Duration::from_nanos(((since / len) * len) as u64)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, MethodUse>> {
        self.methods.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Record one executed call of `method` (a nested method, never the outer `batch`):
    /// `processing` is its execution time and `reported` the portal's own `operating`
    /// total for the method. A reported total is the truth: the window is raised or
    /// lowered to match it; without one, `processing` is counted.
    pub fn record(&self, method: &str, processing: Option<f64>, reported: Option<f64>) {
        let now = Instant::now();
        let start = self.basket_start(now);
        let window = self.config.window();
        let mut map = self.lock();
        let m = map.entry(method.to_ascii_lowercase()).or_default();
        m.roll(now, window);
        let before = m.used();
        let add = |m: &mut MethodUse, secs: f64| match m.baskets.back_mut() {
            Some((t, used)) if *t == start => *used += secs,
            _ => m.baskets.push_back((start, secs)),
        };
        match reported.filter(|r| r.is_finite() && *r >= 0.0) {
            Some(r) if r >= before => add(m, r - before),
            Some(r) => {
                // The portal counts less than we do: the excess rolled out already.
                let mut excess = before - r;
                while excess > 0.0 {
                    let Some(front) = m.baskets.front_mut() else {
                        break;
                    };
                    if front.1 <= excess {
                        excess -= front.1;
                        m.baskets.pop_front();
                    } else {
                        front.1 -= excess;
                        excess = 0.0;
                    }
                }
            }
            None => {
                if let Some(p) = processing.filter(|p| p.is_finite() && *p > 0.0) {
                    add(m, p);
                }
            }
        }
        let spent = (m.used() - before).max(0.0);
        self.charge(m, spent, now);
    }

    /// Advance the pacing clock by `spent` operating seconds.
    fn charge(&self, m: &mut MethodUse, spent: f64, now: Instant) {
        let Some(rate) = self.config.sustained_rate() else {
            return;
        };
        if spent > 0.0 {
            let base = m.tat.filter(|t| *t > now).unwrap_or(now);
            let cap = self.config.window().as_secs_f64();
            m.tat = Some(base + Duration::from_secs_f64((spent / rate).min(cap)));
        }
    }

    /// The portal refused the method until `until` (a 429 with `operating_reset_at`).
    pub fn pause_until(&self, method: &str, until: Instant) {
        let mut map = self.lock();
        let m = map.entry(method.to_ascii_lowercase()).or_default();
        m.paused_until = Some(m.paused_until.map_or(until, |p| p.max(until)));
    }

    fn ready_at_locked(&self, m: &MethodUse, now: Instant) -> Option<Instant> {
        let window = self.config.window();
        let hard = self.config.hard_stop();
        let mut ready: Option<Instant> = m.paused_until.filter(|p| *p > now);
        let later = |r: Option<Instant>, at: Instant| Some(r.map_or(at, |x: Instant| x.max(at)));
        if let (Some(tat), Some(rate)) = (m.tat, self.config.sustained_rate()) {
            let at = tat.checked_sub(self.config.tolerance(rate)).unwrap_or(now);
            if at > now {
                ready = later(ready, at);
            }
        }
        let live: Vec<&(Instant, f64)> = m
            .baskets
            .iter()
            .filter(|(t, _)| now.saturating_duration_since(*t) < window)
            .collect();
        let used: f64 = live.iter().map(|(_, s)| s).sum();
        if used >= hard {
            // Wait until enough old baskets drop out to get back under the stop.
            let mut remaining = used;
            for (t, s) in &live {
                remaining -= s;
                if remaining < hard {
                    ready = later(ready, *t + window);
                    break;
                }
            }
        }
        ready
    }

    /// When `method` may run next; `None` means now.
    pub fn ready_at(&self, method: &str) -> Option<Instant> {
        let map = self.lock();
        let m = map.get(&method.to_ascii_lowercase())?;
        self.ready_at_locked(m, Instant::now())
    }

    /// Every method's standing (methods with no use in the window are left out).
    pub fn usage(&self) -> Vec<MethodUsage> {
        let now = Instant::now();
        let window = self.config.window();
        let mut map = self.lock();
        let mut out: Vec<MethodUsage> = map
            .iter_mut()
            .filter_map(|(name, m)| {
                m.roll(now, window);
                let paused_for = self
                    .ready_at_locked(m, now)
                    .map(|at| at.duration_since(now))
                    .filter(|d| *d >= PAUSE_FROM);
                (m.used() > 0.0 || paused_for.is_some()).then(|| MethodUsage {
                    method: name.clone(),
                    used_secs: m.used(),
                    limit_secs: self.config.limit_secs,
                    paused_for,
                })
            })
            .collect();
        out.sort_by(|a, b| a.method.cmp(&b.method));
        out
    }

    /// How long `method` is held back from now, if at all; a hold of [`PAUSE_FROM`] or
    /// more is logged at WARN once per pause (with the budget used and until when), so
    /// a caller that hands the wait back to its scheduler is not silent either.
    pub fn held_back(&self, method: &str) -> Option<Duration> {
        let key = method.to_ascii_lowercase();
        let now = Instant::now();
        let (at, used) = {
            let mut map = self.lock();
            let m = map.get_mut(&key)?;
            let Some(at) = self.ready_at_locked(m, now) else {
                if m.warned {
                    m.warned = false;
                    tracing::info!(portal = %self.label, method = %key, "bitrix24 method resumed after the operating-time pause");
                }
                return None;
            };
            let log = at.duration_since(now) >= PAUSE_FROM && !m.warned;
            if log {
                m.warned = true;
            }
            (at, log.then(|| m.used()))
        };
        if let Some(used) = used {
            self.log_pause(&key, used, at);
        }
        Some(at.duration_since(now))
    }

    fn log_pause(&self, method: &str, used: f64, at: Instant) {
        let until = chrono::DateTime::from_timestamp_millis(unix_ms_of(at))
            .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_default();
        tracing::warn!(
            portal = %self.label,
            method = %method,
            used_secs = (used * 10.0).round() / 10.0,
            limit_secs = self.config.limit_secs,
            until = %until,
            "bitrix24 method paused by the operating-time limit"
        );
    }

    /// Wait until `method` may run; returns how long it waited. A wait longer than a
    /// few seconds is a pause: it is logged at WARN once, with the budget used and
    /// until when, and its end at INFO, so a stalled portal is never silent.
    pub async fn wait(&self, method: &str) -> Duration {
        let started = Instant::now();
        while let Some(hold) = self.held_back(method) {
            tokio::time::sleep(hold).await;
        }
        started.elapsed()
    }

    /// The accounting in wall-clock terms, for the store.
    pub fn snapshot(&self) -> OperatingSnapshot {
        let now = Instant::now();
        let window = self.config.window();
        let mut map = self.lock();
        let mut out = OperatingSnapshot::default();
        for (name, m) in map.iter_mut() {
            m.roll(now, window);
            if !m.baskets.is_empty() {
                out.methods.insert(
                    name.clone(),
                    m.baskets
                        .iter()
                        .map(|(t, s)| (unix_ms_of(*t), *s))
                        .collect(),
                );
            }
            if let Some(p) = m.paused_until.filter(|p| *p > now) {
                out.paused_until.insert(name.clone(), unix_ms_of(p));
            }
        }
        out
    }

    /// Take over the accounting of an earlier run (what it spent still counts at the
    /// portal until its baskets roll out).
    pub fn restore(&self, snap: &OperatingSnapshot) {
        let now = Instant::now();
        let window = self.config.window();
        let mut map = self.lock();
        for (name, baskets) in &snap.methods {
            let m = map.entry(name.to_ascii_lowercase()).or_default();
            let mut restored: Vec<(Instant, f64)> = baskets
                .iter()
                .filter(|(_, s)| s.is_finite() && *s > 0.0)
                .map(|(ms, s)| (instant_of_unix_ms(*ms), *s))
                .collect();
            restored.extend(m.baskets.drain(..));
            restored.sort_by_key(|(t, _)| *t);
            m.baskets = restored.into();
            m.roll(now, window);
            // Pace as if the restored use had just been spent: conservative, and it
            // keeps a restart from bursting into a window that is already well used.
            let used = m.used();
            self.charge(m, used, now);
        }
        for (name, ms) in &snap.paused_until {
            let until = instant_of_unix_ms(*ms);
            if until > now {
                let m = map.entry(name.to_ascii_lowercase()).or_default();
                m.paused_until = Some(m.paused_until.map_or(until, |p| p.max(until)));
            }
        }
    }
}

#[cfg(test)]
#[path = "limiter_tests.rs"]
mod tests;

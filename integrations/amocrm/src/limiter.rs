//! Per-account request pacing, so the client never causes amoCRM's limits.
//!
//! amoCRM allows 7 requests per second per integration (paid packages raise it),
//! answers 429 beyond that and, after repeated violations, blocks the whole account:
//! every request then gets 403 until support lifts the block. Exceeding is therefore a
//! bug, not a condition to recover from. Two rules apply to every request, counted at
//! the moment it is *sent*:
//!
//! - a governor GCRA limiter with the configured rate and burst shapes the flow;
//! - a sliding window admits at most `floor(per_second)` sends in any span of
//!   `1 s + window_margin`. GCRA alone admits `burst + rate` requests in the second
//!   after an idle spell; the window makes "never more than 7 in any second" hold
//!   exactly, and the margin absorbs network jitter between our send and amoCRM's
//!   arrival time. A request reaches amoCRM somewhere between taking its slot and its
//!   answer: when the answer comes ([`Limiter::arrived`]), the slot's time moves to it,
//!   so a request held up on a starved CPU or a slow network between the two still
//!   counts where amoCRM counted it.
//!
//! A 429 that still arrives (another integration on the account, a clock hiccup)
//! pauses the whole account for an exponentially growing, jittered time shared by all
//! callers; a 403 marks the account blocked and every later request fails at once
//! without touching the network.
//!
//! Everything uses tokio's clock, so tests run it with paused time.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use rand::Rng;
use tokio::time::Instant;

use crate::error::Error;

/// governor clock reading tokio's time (so `tokio::time::pause` controls it).
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

impl Clock for TokioClock {
    type Instant = std::time::Instant;

    fn now(&self) -> Self::Instant {
        Instant::now().into_std()
    }
}

/// How to pace one account.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LimiterConfig {
    /// Requests per second (amoCRM: 7 per integration; more with paid packages).
    pub per_second: f64,
    /// Requests allowed back to back after an idle spell (never more than
    /// `floor(per_second)`, which the sliding window enforces anyway).
    pub burst: u32,
    /// Extra length of the counting window beyond one second, against jitter between
    /// our send time and amoCRM's arrival time.
    pub window_margin: Duration,
    /// First pause after a 429; doubles with each consecutive 429.
    pub backoff_base: Duration,
    /// Longest pause after 429s.
    pub backoff_max: Duration,
}

impl Default for LimiterConfig {
    fn default() -> Self {
        LimiterConfig {
            per_second: 7.0,
            burst: 7,
            window_margin: Duration::from_millis(100),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
        }
    }
}

impl LimiterConfig {
    /// Sends admitted in one counting window.
    pub fn per_window(&self) -> usize {
        (self.per_second.floor() as usize).max(1)
    }
}

/// Invalid limiter settings.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LimiterConfigError {
    #[error("per_second must be a finite number of at least 1, got {0}")]
    Rate(f64),
    #[error("burst must be at least 1")]
    Burst,
}

/// Counters for logs and /metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimiterStats {
    /// Requests let through (sent or about to be sent).
    pub requests: u64,
    /// 429 answers seen.
    pub rate_limited: u64,
    /// Total time callers spent waiting for a slot or for a pause to end.
    pub total_wait: Duration,
    /// The account answered 403: traffic is stopped.
    pub blocked: bool,
}

/// A taken slot, reported back with [`Limiter::arrived`] when its request is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "report the answer with Limiter::arrived"]
pub struct Slot(u64);

type Gcra = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<std::time::Instant>>;

struct Slots {
    /// The last `per_window` requests: their number and the latest instant amoCRM may
    /// have counted them at (the slot's time, moved to the answer's once it came).
    sent: VecDeque<(u64, Instant)>,
    /// Number of the next slot.
    next_seq: u64,
    /// No request before this (after a 429).
    paused_until: Option<Instant>,
}

/// The pacing state of one account, shared by every request to it.
pub struct Limiter {
    config: LimiterConfig,
    gcra: Gcra,
    window: Duration,
    slots: Mutex<Slots>,
    consecutive_429: AtomicU32,
    blocked: AtomicBool,
    blocked_detail: Mutex<Option<String>>,
    /// Wakes waiters when the account gets blocked, so they fail at once.
    block_notify: tokio::sync::Notify,
    requests: AtomicU64,
    rate_limited: AtomicU64,
    wait_nanos: AtomicU64,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("config", &self.config)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Limiter {
    /// A limiter with nothing sent yet.
    pub fn new(config: LimiterConfig) -> Result<Limiter, LimiterConfigError> {
        if !(config.per_second.is_finite() && config.per_second >= 1.0) {
            return Err(LimiterConfigError::Rate(config.per_second));
        }
        if config.burst == 0 {
            return Err(LimiterConfigError::Burst);
        }
        let per_window = config.per_window();
        let burst = config.burst.min(per_window as u32);
        let period = Duration::from_secs_f64(1.0 / config.per_second);
        let quota = Quota::with_period(period)
            .ok_or(LimiterConfigError::Rate(config.per_second))?
            .allow_burst(NonZeroU32::new(burst).ok_or(LimiterConfigError::Burst)?);
        Ok(Limiter {
            config,
            gcra: RateLimiter::direct_with_clock(quota, TokioClock),
            window: Duration::from_secs(1) + config.window_margin,
            slots: Mutex::new(Slots {
                sent: VecDeque::with_capacity(per_window),
                next_seq: 0,
                paused_until: None,
            }),
            consecutive_429: AtomicU32::new(0),
            blocked: AtomicBool::new(false),
            blocked_detail: Mutex::new(None),
            block_notify: tokio::sync::Notify::new(),
            requests: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
            wait_nanos: AtomicU64::new(0),
        })
    }

    /// The settings in force.
    pub fn config(&self) -> LimiterConfig {
        self.config
    }

    /// Wait for a slot and take it. Fails at once (no waiting) when the account is
    /// blocked, and also when it becomes blocked while waiting.
    pub async fn acquire(&self) -> Result<(), Error> {
        self.acquire_slot().await.map(|_| ())
    }

    /// [`Limiter::acquire`], returning the slot to report with [`Limiter::arrived`]
    /// once the answer (or the failure) is in.
    pub async fn acquire_slot(&self) -> Result<Slot, Error> {
        let started = Instant::now();
        let slot = loop {
            let woken = self.block_notify.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if let Some(e) = self.blocked_error() {
                self.add_wait(started.elapsed());
                return Err(e);
            }
            let wake = {
                let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
                let now = Instant::now();
                match self.next_free(&slots, now) {
                    Some(at) => at,
                    None => match self.gcra.check() {
                        Ok(()) => {
                            if slots.sent.len() >= self.config.per_window() {
                                // The one counted earliest leaves the window.
                                if let Some(i) =
                                    (0..slots.sent.len()).min_by_key(|&i| slots.sent[i].1)
                                {
                                    slots.sent.remove(i);
                                }
                            }
                            let seq = slots.next_seq;
                            slots.next_seq += 1;
                            slots.sent.push_back((seq, now));
                            break Slot(seq);
                        }
                        Err(not_until) => {
                            now + not_until
                                .wait_time_from(TokioClock.now())
                                .max(Duration::from_micros(100))
                        }
                    },
                }
            };
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                _ = &mut woken => {}
            }
        };
        self.add_wait(started.elapsed());
        self.requests.fetch_add(1, Ordering::Relaxed);
        Ok(slot)
    }

    /// The request of `slot` got its answer (or failed) now: amoCRM counted it at the
    /// latest now, so the window counts it from now on.
    pub fn arrived(&self, slot: Slot) {
        let now = Instant::now();
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = slots.sent.iter_mut().find(|(seq, _)| *seq == slot.0) {
            entry.1 = entry.1.max(now);
        }
    }

    /// When the next send may happen given pauses and the window (`None`: now).
    fn next_free(&self, slots: &Slots, now: Instant) -> Option<Instant> {
        let mut at: Option<Instant> = slots.paused_until.filter(|p| *p > now);
        if slots.sent.len() >= self.config.per_window() {
            if let Some(oldest) = slots.sent.iter().map(|(_, at)| *at).min() {
                let free = oldest + self.window;
                if free > now {
                    at = Some(at.map_or(free, |a| a.max(free)));
                }
            }
        }
        at
    }

    /// A request succeeded: the 429 backoff starts from the base again.
    pub fn on_success(&self) {
        self.consecutive_429.store(0, Ordering::Relaxed);
    }

    /// A 429 arrived: pause the whole account for an exponentially growing, jittered
    /// time (1 s, 2 s, 4 s… up to `backoff_max`, each stretched by up to 50 %).
    /// 429s that arrive while a pause is already running belong to the same wave (they
    /// were sent before it began) and do not escalate it. Returns the pause in force.
    pub fn on_rate_limited(&self) -> Duration {
        self.rate_limited.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let active = slots.paused_until.is_some_and(|p| p > now);
        let n = if active {
            self.consecutive_429
                .load(Ordering::Relaxed)
                .saturating_sub(1)
        } else {
            self.consecutive_429.fetch_add(1, Ordering::Relaxed)
        }
        .min(16);
        let base = self
            .config
            .backoff_base
            .saturating_mul(1u32 << n)
            .min(self.config.backoff_max);
        let jitter: f64 = rand::rng().random_range(1.0..1.5);
        let pause = base.mul_f64(jitter).min(self.config.backoff_max);
        let until = slots
            .paused_until
            .filter(|p| *p > now)
            .map_or(now + pause, |p| p.max(now + pause));
        slots.paused_until = Some(until);
        until - now
    }

    /// A 403 arrived: stop all traffic to this account.
    pub fn block(&self, detail: &str) {
        let mut d = self
            .blocked_detail
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if d.is_none() {
            *d = Some(detail.to_string());
        }
        self.blocked.store(true, Ordering::SeqCst);
        self.block_notify.notify_waiters();
    }

    /// Is the account blocked (a 403 was seen)?
    pub fn is_blocked(&self) -> bool {
        self.blocked.load(Ordering::SeqCst)
    }

    /// The error every request gets once the account is blocked.
    pub fn blocked_error(&self) -> Option<Error> {
        if !self.is_blocked() {
            return None;
        }
        let d = self
            .blocked_detail
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        Some(Error::Blocked {
            detail: d.clone().unwrap_or_else(|| "blocked".to_string()),
        })
    }

    /// The current 429 pause, if any (for logs and tests).
    pub fn paused_until(&self) -> Option<Instant> {
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.paused_until.filter(|p| *p > Instant::now())
    }

    fn add_wait(&self, d: Duration) {
        self.wait_nanos
            .fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }

    /// Counters so far.
    pub fn stats(&self) -> LimiterStats {
        LimiterStats {
            requests: self.requests.load(Ordering::Relaxed),
            rate_limited: self.rate_limited.load(Ordering::Relaxed),
            total_wait: Duration::from_nanos(self.wait_nanos.load(Ordering::Relaxed)),
            blocked: self.is_blocked(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// Largest number of sends inside any closed interval of `span`.
    fn max_in_window(sends: &[Instant], span: Duration) -> usize {
        let mut best = 0;
        for (i, a) in sends.iter().enumerate() {
            let n = sends[i..]
                .iter()
                .take_while(|b| b.duration_since(*a) <= span)
                .count();
            best = best.max(n);
        }
        best
    }

    #[tokio::test(start_paused = true)]
    async fn never_more_than_seven_in_any_second() {
        let limiter = Arc::new(Limiter::new(LimiterConfig::default()).unwrap());
        let sends = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for _ in 0..6 {
            let (l, s) = (limiter.clone(), sends.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0..50 {
                    l.acquire().await.unwrap();
                    s.lock().unwrap().push(Instant::now());
                    // Uneven gaps, as real requests have.
                    if i % 7 == 3 {
                        tokio::time::sleep(Duration::from_millis(400)).await;
                    }
                }
            }));
        }
        let start = Instant::now();
        for t in tasks {
            t.await.unwrap();
        }
        let mut sends = sends.lock().unwrap().clone();
        sends.sort();
        assert_eq!(sends.len(), 300);
        assert!(max_in_window(&sends, Duration::from_secs(1)) <= 7);
        assert!(max_in_window(&sends, Duration::from_millis(1099)) <= 7);
        // 300 requests at 7 per 1.1 s: about 47 s, not much more.
        let took = start.elapsed().as_secs_f64();
        assert!((45.0..=50.0).contains(&took), "took {took}");
        let stats = limiter.stats();
        assert_eq!(stats.requests, 300);
        assert!(stats.total_wait > Duration::from_secs(100));
    }

    /// Seven requests whose answers take 0.9 s (a starved CPU, a slow network): amoCRM
    /// may have counted them as late as then, so the eighth waits until 0.9 s + the
    /// window (2.0 s), not the window after their slots (1.1 s).
    #[tokio::test(start_paused = true)]
    async fn a_slow_answer_moves_its_request_in_the_window() {
        let limiter = Limiter::new(LimiterConfig::default()).unwrap();
        let start = Instant::now();
        let mut slots = Vec::new();
        for _ in 0..7 {
            slots.push(limiter.acquire_slot().await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(900)).await;
        for slot in slots {
            limiter.arrived(slot);
        }
        let eighth = limiter.acquire_slot().await.unwrap();
        limiter.arrived(eighth);
        let at = start.elapsed();
        assert!(
            at >= Duration::from_millis(2000),
            "the eighth went at {at:?}"
        );
        assert!(
            at < Duration::from_millis(2050),
            "the eighth went at {at:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_seven_goes_at_once_then_the_window_holds() {
        let limiter = Limiter::new(LimiterConfig::default()).unwrap();
        let start = Instant::now();
        for _ in 0..7 {
            limiter.acquire().await.unwrap();
        }
        assert!(start.elapsed() < Duration::from_millis(1));
        limiter.acquire().await.unwrap();
        assert!(
            start.elapsed() >= Duration::from_millis(1100),
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limited_pauses_everyone_with_growing_jittered_backoff() {
        let limiter = Arc::new(Limiter::new(LimiterConfig::default()).unwrap());
        let first = limiter.on_rate_limited();
        assert!(
            first >= Duration::from_secs(1) && first < Duration::from_millis(1500),
            "{first:?}"
        );
        // A 429 of the same wave (pause still running) does not escalate it.
        let same_wave = limiter.on_rate_limited();
        assert!(
            same_wave >= first && same_wave < Duration::from_millis(1500),
            "{same_wave:?}"
        );
        let start = Instant::now();
        let l2 = limiter.clone();
        let other = tokio::spawn(async move {
            l2.acquire().await.unwrap();
            Instant::now()
        });
        limiter.acquire().await.unwrap();
        let other_at = other.await.unwrap();
        assert!(start.elapsed() >= first);
        assert!(other_at.duration_since(start) >= first);
        let second = limiter.on_rate_limited();
        assert!(
            second >= Duration::from_secs(2) && second < Duration::from_secs(3),
            "{second:?}"
        );
        tokio::time::sleep(second).await;
        limiter.on_success();
        let third = limiter.on_rate_limited();
        assert!(third < Duration::from_millis(1500), "{third:?}");
        assert_eq!(limiter.stats().rate_limited, 4);
    }

    #[tokio::test(start_paused = true)]
    async fn blocked_fails_fast_even_for_waiters() {
        let limiter = Arc::new(Limiter::new(LimiterConfig::default()).unwrap());
        limiter.on_rate_limited();
        let l2 = limiter.clone();
        let waiter = tokio::spawn(async move { l2.acquire().await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        limiter.block("account blocked");
        let err = waiter.await.unwrap().unwrap_err();
        assert!(matches!(err, Error::Blocked { ref detail } if detail == "account blocked"));
        assert!(limiter.acquire().await.is_err());
        assert!(limiter.stats().blocked);
        assert_eq!(limiter.stats().requests, 0);
    }

    #[test]
    fn rejects_bad_settings() {
        let bad = |c: LimiterConfig| Limiter::new(c).unwrap_err();
        assert_eq!(
            bad(LimiterConfig {
                per_second: 0.5,
                ..Default::default()
            }),
            LimiterConfigError::Rate(0.5)
        );
        assert_eq!(
            bad(LimiterConfig {
                burst: 0,
                ..Default::default()
            }),
            LimiterConfigError::Burst
        );
    }
}

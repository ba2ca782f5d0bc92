//! The portal's two limits, modelled as documented in `limits.md`, and the seeded fault
//! dice. The leaky bucket is per portal: each request adds 1, the level drains by
//! `drain_per_sec` continuously, and a request that would take the level over `burst` is
//! refused with 503 (refused requests do not fill the bucket). The operating limit sums
//! simulated execution seconds per method over a sliding window and answers 429 once
//! the sum reaches the limit. The fault dice are the kit's, read through
//! [`FaultMix`].

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use super::{FaultConfig, FaultKind, OperatingLimit, RateLimit};

leadscore_sandbox_kit::fault_mix!(FaultConfig => FaultKind);

/// Leaky-bucket state.
#[derive(Debug)]
pub(crate) struct Bucket {
    pub limit: Option<RateLimit>,
    level: f64,
    at: Instant,
}

impl Bucket {
    pub(crate) fn new(limit: Option<RateLimit>) -> Self {
        Self {
            limit,
            level: 0.0,
            at: Instant::now(),
        }
    }

    fn drain(&mut self, now: Instant) {
        if let Some(limit) = self.limit {
            let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
            self.level = (self.level - elapsed * limit.drain_per_sec).max(0.0);
        }
        self.at = now;
    }

    /// Counts one request; `false` when it must be refused with QUERY_LIMIT_EXCEEDED.
    pub(crate) fn admit(&mut self) -> bool {
        let now = Instant::now();
        self.drain(now);
        let Some(limit) = self.limit else {
            return true;
        };
        if self.level + 1.0 > limit.burst + 1e-9 {
            return false;
        }
        self.level += 1.0;
        true
    }

    /// The current level after draining, for tests and the demo.
    pub(crate) fn level(&mut self) -> f64 {
        self.drain(Instant::now());
        self.level
    }

    /// Sets the level directly.
    pub(crate) fn set_level(&mut self, level: f64) {
        self.level = level.max(0.0);
        self.at = Instant::now();
    }

    /// Empties the bucket.
    pub(crate) fn reset(&mut self) {
        self.level = 0.0;
        self.at = Instant::now();
    }
}

/// Per-method operating-time accounting.
#[derive(Debug)]
pub(crate) struct Operating {
    pub limit: Option<OperatingLimit>,
    spent: HashMap<String, VecDeque<(Instant, f64)>>,
    /// Everything ever booked per method (never rolls), for tests and benchmarks.
    total: HashMap<String, f64>,
}

/// What the operating check says about a call.
#[derive(Clone, Copy, Debug)]
pub(crate) struct OperatingStatus {
    /// Seconds spent by this method inside the window.
    pub operating: f64,
    /// Seconds until the oldest spending leaves the window.
    pub reset_in: Duration,
    /// Whether the method is blocked.
    pub blocked: bool,
    /// Simulated execution seconds this call booked (`None`: no operating limit is
    /// configured, so the real wall time stands in for it).
    pub booked: Option<f64>,
}

impl Operating {
    pub(crate) fn new(limit: Option<OperatingLimit>) -> Self {
        Self {
            limit,
            spent: HashMap::new(),
            total: HashMap::new(),
        }
    }

    fn window(&self) -> Duration {
        self.limit.map_or(Duration::from_secs(600), |l| l.window)
    }

    /// The method's standing before it runs.
    pub(crate) fn status(&mut self, method: &str) -> OperatingStatus {
        let now = Instant::now();
        let window = self.window();
        let entries = self.spent.entry(method.to_owned()).or_default();
        while entries
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) >= window)
        {
            entries.pop_front();
        }
        let operating: f64 = entries.iter().map(|(_, s)| s).sum();
        let reset_in = entries.front().map_or(window, |(t, _)| {
            (*t + window).saturating_duration_since(now)
        });
        let blocked = self
            .limit
            .is_some_and(|l| operating >= l.limit.as_secs_f64());
        OperatingStatus {
            operating,
            reset_in,
            blocked,
            booked: None,
        }
    }

    /// Books the simulated cost of one executed call that returned `rows` list rows,
    /// and returns the method's standing afterwards (what the portal reports in `time`).
    pub(crate) fn spend(&mut self, method: &str, rows: usize) -> OperatingStatus {
        let Some(limit) = self.limit else {
            return self.status(method);
        };
        let cost =
            limit.cost_per_call.as_secs_f64() + limit.cost_per_row.as_secs_f64() * rows as f64;
        if cost > 0.0 {
            self.spent
                .entry(method.to_owned())
                .or_default()
                .push_back((Instant::now(), cost));
            *self.total.entry(method.to_owned()).or_default() += cost;
        }
        OperatingStatus {
            booked: Some(cost),
            ..self.status(method)
        }
    }

    /// Forgets all spending.
    pub(crate) fn reset(&mut self) {
        self.spent.clear();
    }

    /// Seconds booked per method since start.
    pub(crate) fn totals(&self) -> std::collections::BTreeMap<String, f64> {
        self.total.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bucket_bursts_then_drains() {
        let mut b = Bucket::new(Some(RateLimit {
            burst: 5.0,
            drain_per_sec: 2.0,
        }));
        for _ in 0..5 {
            assert!(b.admit());
        }
        assert!(!b.admit(), "sixth request over a burst of five");
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(b.admit(), "half a second drains one at 2/s");
        assert!(!b.admit());
    }

    #[tokio::test(start_paused = true)]
    async fn operating_blocks_and_resets() {
        let mut o = Operating::new(Some(OperatingLimit {
            limit: Duration::from_secs(2),
            cost_per_call: Duration::from_secs(1),
            cost_per_row: Duration::ZERO,
            window: Duration::from_secs(60),
        }));
        assert!(!o.status("m").blocked);
        assert_eq!(o.spend("m", 0).booked, Some(1.0));
        let after = o.spend("m", 0);
        assert_eq!(after.operating, 2.0, "the answer counts the call itself");
        let s = o.status("m");
        assert!(s.blocked);
        assert!(!o.status("other").blocked);
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(!o.status("m").blocked);
    }

    #[test]
    fn dice_are_deterministic() {
        let cfg = FaultConfig::uniform(0.3, 7);
        let mut a = leadscore_sandbox_kit::Dice::new(cfg.clone());
        let mut b = leadscore_sandbox_kit::Dice::new(cfg);
        let ra: Vec<_> = (0..200).map(|_| a.roll()).collect();
        let rb: Vec<_> = (0..200).map(|_| b.roll()).collect();
        assert_eq!(ra, rb);
        let hits = ra.iter().filter(|r| r.is_some()).count();
        assert!((35..=85).contains(&hits), "{hits} hits of 200 at 30%");
    }
}

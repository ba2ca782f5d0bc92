//! amoCRM's request limit, its escalation to a blocked account, and how the kit's
//! seeded fault dice apply to amoCRM.
//!
//! The limit is a sliding-window log per integration: a request is admitted when fewer
//! than `requests` requests were admitted in the last `per`, counted at arrival; a
//! refused request answers 429 and is not admitted (so it does not push the window
//! further). Each refusal is a violation; `violations` of them within `within` block the
//! account, after which every API request answers 403 until the test unblocks it (on
//! the real service that takes a support ticket).

use std::collections::{HashMap, VecDeque};

use leadscore_sandbox_kit::Dice;
use tokio::time::Instant;

use super::{BlockPolicy, FaultConfig, FaultKind, RateLimit};

/// Admitted-request log per integration.
#[derive(Debug)]
pub(crate) struct Windows {
    pub limit: Option<RateLimit>,
    admitted: HashMap<String, VecDeque<Instant>>,
}

impl Windows {
    pub(crate) fn new(limit: Option<RateLimit>) -> Self {
        Self {
            limit,
            admitted: HashMap::new(),
        }
    }

    /// Counts one arrival for `integration`; `false` when it must be refused with 429.
    pub(crate) fn admit(&mut self, integration: &str, now: Instant) -> bool {
        let Some(limit) = self.limit else {
            return true;
        };
        let log = self.admitted.entry(integration.to_owned()).or_default();
        while log
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= limit.per)
        {
            log.pop_front();
        }
        if log.len() >= limit.requests as usize {
            return false;
        }
        log.push_back(now);
        true
    }

    /// Forgets every admitted request.
    pub(crate) fn reset(&mut self) {
        self.admitted.clear();
    }
}

/// Violations and the block they lead to.
#[derive(Debug)]
pub(crate) struct Blocker {
    pub policy: Option<BlockPolicy>,
    recent: VecDeque<Instant>,
    pub blocked: bool,
    pub total: u64,
}

impl Blocker {
    pub(crate) fn new(policy: Option<BlockPolicy>) -> Self {
        Self {
            policy,
            recent: VecDeque::new(),
            blocked: false,
            total: 0,
        }
    }

    /// Books one 429; returns `true` when this violation blocked the account.
    pub(crate) fn violation(&mut self, now: Instant) -> bool {
        self.total += 1;
        let Some(policy) = self.policy else {
            return false;
        };
        self.recent.push_back(now);
        while self
            .recent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= policy.within)
        {
            self.recent.pop_front();
        }
        if !self.blocked && self.recent.len() >= policy.violations as usize {
            self.blocked = true;
            return true;
        }
        false
    }

    /// Lifts the block and forgets recent violations.
    pub(crate) fn unblock(&mut self) {
        self.blocked = false;
        self.recent.clear();
    }
}

leadscore_sandbox_kit::fault_mix!(FaultConfig => FaultKind);

/// Rolls the kit's dice for one request. A `GatewayTimeout` drawn for a read is no
/// fault: amoCRM's 504 comes from writes that carry too many entities.
pub(crate) fn roll(dice: &mut Dice<FaultConfig>, is_write: bool) -> Option<FaultKind> {
    dice.roll()
        .filter(|k| is_write || *k != FaultKind::GatewayTimeout)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn sliding_window_admits_seven_per_second() {
        let mut w = Windows::new(Some(RateLimit::default()));
        let t0 = Instant::now();
        for _ in 0..7 {
            assert!(w.admit("a", t0));
        }
        assert!(!w.admit("a", t0), "eighth in the same second");
        assert!(w.admit("b", t0), "another integration has its own window");
        tokio::time::advance(Duration::from_millis(999)).await;
        assert!(!w.admit("a", Instant::now()));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(w.admit("a", Instant::now()), "a full second later");
    }

    #[tokio::test(start_paused = true)]
    async fn violations_block_within_the_window_only() {
        let mut b = Blocker::new(Some(BlockPolicy {
            violations: 3,
            within: Duration::from_secs(10),
        }));
        assert!(!b.violation(Instant::now()));
        assert!(!b.violation(Instant::now()));
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(!b.violation(Instant::now()), "old violations expired");
        assert!(!b.violation(Instant::now()));
        assert!(b.violation(Instant::now()));
        assert!(b.blocked);
        b.unblock();
        assert!(!b.blocked);
        assert_eq!(b.total, 5);
    }

    #[test]
    fn dice_are_deterministic_and_respect_the_rate() {
        let cfg = FaultConfig::uniform(0.25, 42);
        let mut a = Dice::new(cfg.clone());
        let mut b = Dice::new(cfg);
        let ra: Vec<_> = (0..400).map(|i| roll(&mut a, i % 2 == 0)).collect();
        let rb: Vec<_> = (0..400).map(|i| roll(&mut b, i % 2 == 0)).collect();
        assert_eq!(ra, rb);
        let hits = ra.iter().filter(|r| r.is_some()).count();
        assert!((60..=140).contains(&hits), "{hits} hits of 400 at 25%");
        assert!(ra
            .iter()
            .enumerate()
            .all(|(i, r)| i % 2 == 0 || *r != Some(FaultKind::GatewayTimeout)));
    }
}

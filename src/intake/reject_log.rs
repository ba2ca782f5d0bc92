//! Rejected webhooks are logged, a flood of them is not: a stranger posting thousands
//! of bad bodies a second must neither fill the journal nor make each refusal pay for a
//! log line. The metric `leadscore_webhooks_total` still counts every one.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// At most `per_window` lines per window; the rest are counted and reported in one
/// line when the next window opens. Lock-free; counts are exact up to a few in a race
/// at a window's edge.
#[derive(Debug)]
pub struct RejectLog {
    per_window: u64,
    window_secs: u64,
    window_start: AtomicU64,
    in_window: AtomicU64,
    suppressed: AtomicU64,
}

/// What to do with one rejection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Log it; `suppressed_before` lines were left out in the window that just ended.
    Log { suppressed_before: u64 },
    /// Leave it out (counted).
    Quiet,
}

impl RejectLog {
    /// A budget of `per_window` lines every `window_secs` seconds.
    pub const fn new(per_window: u64, window_secs: u64) -> Self {
        RejectLog {
            per_window,
            window_secs,
            window_start: AtomicU64::new(0),
            in_window: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Decide for a rejection seen at `now_secs` (Unix seconds).
    pub fn admit(&self, now_secs: u64) -> Admit {
        let start = self.window_start.load(Relaxed);
        let mut suppressed_before = 0;
        if now_secs >= start.saturating_add(self.window_secs)
            && self
                .window_start
                .compare_exchange(start, now_secs, Relaxed, Relaxed)
                .is_ok()
        {
            // This caller opened the window: it reports the last one's silence.
            self.in_window.store(0, Relaxed);
            suppressed_before = self.suppressed.swap(0, Relaxed);
        }
        if self.in_window.fetch_add(1, Relaxed) < self.per_window {
            Admit::Log { suppressed_before }
        } else {
            self.suppressed.fetch_add(1 + suppressed_before, Relaxed);
            Admit::Quiet
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_logs_the_budget_then_reports_the_rest_once() {
        let log = RejectLog::new(3, 10);
        let admitted: Vec<Admit> = (0..10).map(|_| log.admit(1_000)).collect();
        assert_eq!(
            admitted
                .iter()
                .filter(|a| matches!(a, Admit::Log { .. }))
                .count(),
            3
        );
        assert!(admitted[3..].iter().all(|a| *a == Admit::Quiet));
        // Still inside the window: quiet.
        assert_eq!(log.admit(1_009), Admit::Quiet);
        // The next window opens with the count of what was left out (7 + 1).
        assert_eq!(
            log.admit(1_010),
            Admit::Log {
                suppressed_before: 8
            }
        );
        assert_eq!(
            log.admit(1_010),
            Admit::Log {
                suppressed_before: 0
            }
        );
    }

    #[test]
    fn a_trickle_is_logged_in_full() {
        let log = RejectLog::new(2, 10);
        for t in 0..20 {
            assert_eq!(
                log.admit(t * 10),
                Admit::Log {
                    suppressed_before: 0
                }
            );
        }
    }
}

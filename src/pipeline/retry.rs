//! One owner of failure: every error a pass can end in is classified here, in one
//! table, into what happens to the entry. The CRM clients retry only briefly (seconds,
//! within one call); anything longer comes back here and the entry's key goes back to
//! the scheduler, so no worker sleeps on a portal.
//!
//! | error                                   | disposition                               |
//! |-----------------------------------------|-------------------------------------------|
//! | CRM transient (5xx, timeout, 429/503)   | retry on the schedule (≥ the CRM's hint), |
//! |                                         | dead letter when the schedule is spent    |
//! | CRM paused (operating-time budget)      | retry when the pause ends, not counted    |
//! | CRM auth (credentials need an admin)    | retry on the schedule, then dead letter   |
//! | CRM blocked the integration (403)       | pause the whole portal, retry, not counted|
//! | CRM rejected (4xx validation)           | dead letter at once                       |
//! | store error                             | retry on the schedule                     |

use std::time::Duration;

use crate::crm::CrmError;

use super::PipelineError;

/// How long a portal that blocked the integration is left alone before trying again.
pub const BLOCKED_PAUSE: Duration = Duration::from_secs(1800);

/// What happens to an entry after a failed pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Try again after `after` (jitter is added by the caller); `counts`: the failure
    /// advances the entry along the retry schedule.
    Retry { after: Duration, counts: bool },
    /// Give up: the dead-letter queue, for an admin to replay.
    DeadLetter,
    /// Stop all traffic to the portal for `pause`, then retry (not counted).
    PausePortal { pause: Duration },
}

/// The disposition of `err` for an entry that failed `attempts` times before, with
/// the configured `schedule` of delays.
pub fn decide(err: &PipelineError, attempts: u32, schedule: &[Duration]) -> Disposition {
    let on_schedule = |hint: Option<Duration>| match schedule.get(attempts as usize) {
        Some(d) => Disposition::Retry {
            after: (*d).max(hint.unwrap_or(Duration::ZERO)),
            counts: true,
        },
        None => Disposition::DeadLetter,
    };
    match err {
        PipelineError::Crm(CrmError::Transient { retry_after, .. }) => on_schedule(*retry_after),
        PipelineError::Crm(CrmError::Paused { retry_after, .. }) => Disposition::Retry {
            after: (*retry_after).max(Duration::from_secs(1)),
            counts: false,
        },
        PipelineError::Crm(CrmError::Auth(_)) => on_schedule(None),
        PipelineError::Crm(CrmError::Blocked(_)) => Disposition::PausePortal {
            pause: BLOCKED_PAUSE,
        },
        PipelineError::Crm(CrmError::Rejected(_)) => Disposition::DeadLetter,
        PipelineError::Store(_) => on_schedule(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn err(kind: u8, hint: u64) -> PipelineError {
        let m = "x".to_string();
        PipelineError::Crm(match kind % 5 {
            0 => CrmError::Transient {
                message: m,
                retry_after: (hint > 0).then(|| Duration::from_secs(hint)),
            },
            1 => CrmError::Paused {
                message: m,
                retry_after: Duration::from_secs(hint),
            },
            2 => CrmError::Auth(m),
            3 => CrmError::Blocked(m),
            _ => CrmError::Rejected(m),
        })
    }

    proptest! {
        #[test]
        fn the_table_holds(kind in 0u8..5, hint in 0u64..10_000, attempts in 0u32..20,
                           schedule in proptest::collection::vec(1u64..5_000, 0..8)) {
            let schedule: Vec<Duration> = schedule.into_iter().map(Duration::from_secs).collect();
            let e = err(kind, hint);
            let d = decide(&e, attempts, &schedule);
            match kind % 5 {
                // Transient: the schedule's delay, never less than the CRM's hint; a dead
                // letter exactly when the schedule is spent.
                0 => match d {
                    Disposition::Retry { after, counts } => {
                        prop_assert!(counts);
                        prop_assert!((attempts as usize) < schedule.len());
                        prop_assert!(after >= schedule[attempts as usize]);
                        prop_assert!(after >= Duration::from_secs(hint));
                    }
                    Disposition::DeadLetter => prop_assert!(attempts as usize >= schedule.len()),
                    other => prop_assert!(false, "{other:?}"),
                },
                // A pause is never a failure of the entry: retried at its end, uncounted.
                1 => prop_assert_eq!(d, Disposition::Retry {
                    after: Duration::from_secs(hint).max(Duration::from_secs(1)),
                    counts: false,
                }),
                2 => {
                    let counted = matches!(d, Disposition::Retry { counts: true, .. });
                    let spent = d == Disposition::DeadLetter && attempts as usize >= schedule.len();
                    prop_assert!(counted || spent, "{:?}", d);
                }
                3 => prop_assert_eq!(d, Disposition::PausePortal { pause: BLOCKED_PAUSE }),
                _ => prop_assert_eq!(d, Disposition::DeadLetter),
            }
        }
    }

    #[test]
    fn a_store_error_follows_the_schedule() {
        let store = PipelineError::Store(crate::store::StoreError::Full { limit: 1 });
        let schedule = [Duration::from_secs(1), Duration::from_secs(5)];
        assert_eq!(
            decide(&store, 1, &schedule),
            Disposition::Retry {
                after: Duration::from_secs(5),
                counts: true
            }
        );
        assert_eq!(decide(&store, 2, &schedule), Disposition::DeadLetter);
    }
}

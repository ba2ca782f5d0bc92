//! Admin commands meet the same CRM as the daemon: a 504 from the portal's proxy, a
//! reset connection, a limit answer. They retry what the daemon retries, by the same
//! table ([`crate::pipeline::retry::decide`]) and the same delays, but only as long as an
//! admin waits at a terminal, and they log (warn, on stderr for the admin commands)
//! what failed and when they try again. Only idempotent work belongs here: `setup` lists the fields before it creates
//! any, so a field whose answer was lost is found, not made twice.

use std::future::Future;
use std::time::Duration;

use tracing::warn;

use crate::crm::CrmError;
use crate::pipeline::retry::{decide, Disposition};
use crate::pipeline::PipelineError;

/// The longest an admin command waits in all before it gives up and reports the error.
pub const ADMIN_PATIENCE: Duration = Duration::from_secs(180);

/// Run `call` until it succeeds, fails for good, or the next wait would pass
/// [`ADMIN_PATIENCE`]; `schedule` is the daemon's `server.retry_delays_secs`.
pub async fn with_retries<T, F, Fut>(
    what: &str,
    schedule: &[Duration],
    mut call: F,
) -> Result<T, CrmError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, CrmError>>,
{
    let mut waited = Duration::ZERO;
    let mut attempts = 0u32;
    loop {
        let err = match call().await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        let after = match decide(&PipelineError::Crm(err.clone()), attempts, schedule) {
            Disposition::Retry { after, counts } => {
                if counts {
                    attempts += 1;
                }
                after
            }
            Disposition::DeadLetter | Disposition::PausePortal { .. } => return Err(err),
        };
        if waited + after > ADMIN_PATIENCE {
            return Err(err);
        }
        warn!(
            what,
            error = %err,
            retry_in_secs = after.as_secs_f64(),
            "the CRM failed; trying again"
        );
        tokio::time::sleep(after).await;
        waited += after;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn transient() -> CrmError {
        CrmError::Transient {
            message: "504 Gateway Time-out".into(),
            retry_after: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_on_the_schedule() {
        let calls = AtomicU32::new(0);
        let schedule = [Duration::from_secs(1), Duration::from_secs(5)];
        let started = tokio::time::Instant::now();
        let out = with_retries("setup", &schedule, || async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                0 | 1 => Err(transient()),
                _ => Ok(7),
            }
        })
        .await;
        assert_eq!(out.unwrap(), 7);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(started.elapsed(), Duration::from_secs(6), "1 s, then 5 s");
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_is_not_retried_and_a_spent_schedule_gives_up() {
        let calls = AtomicU32::new(0);
        let out: Result<(), _> = with_retries("setup", &[Duration::from_secs(1)], || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(CrmError::Rejected(
                "field name must start with UF_CRM_".into(),
            ))
        })
        .await;
        assert!(matches!(out, Err(CrmError::Rejected(_))));
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        let calls = AtomicU32::new(0);
        let out: Result<(), _> = with_retries("setup", &[Duration::from_secs(1)], || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(transient())
        })
        .await;
        assert!(matches!(out, Err(CrmError::Transient { .. })));
        assert_eq!(calls.load(Ordering::SeqCst), 2, "one retry, then the error");
    }

    #[tokio::test(start_paused = true)]
    async fn an_admin_waits_minutes_not_the_daemons_half_hour() {
        let calls = AtomicU32::new(0);
        let schedule: Vec<Duration> = [1, 5, 30, 120, 600, 1800]
            .into_iter()
            .map(Duration::from_secs)
            .collect();
        let started = tokio::time::Instant::now();
        let out: Result<(), _> = with_retries("setup", &schedule, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(transient())
        })
        .await;
        assert!(out.is_err());
        // 1 + 5 + 30 + 120 = 156 s; the next 600 s would pass the patience.
        assert_eq!(started.elapsed(), Duration::from_secs(156));
        assert_eq!(calls.load(Ordering::SeqCst), 5);
    }
}

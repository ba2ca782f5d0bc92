//! Decay timers at run time: due leads go into the queue, scored from their stored
//! inputs (see `stages`), and the timers are cleared once that is durable.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::{Cause, CauseSource, LeadId, Pipeline, Subject};

impl Pipeline {
    /// Re-score leads whose score changes with time alone, when it does: due decay
    /// timers become queue entries (scored from the stored inputs, no CRM read; a write
    /// only if the result changed). Overdue timers after a restart run at once. The
    /// queue is filled at most half way, so webhooks always find room.
    pub(super) async fn decay_loop(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            // Registered before the clock and the timers are read, so a wake-up that
            // lands while this turn looks (a clock advance, a new timer) is not lost.
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let now = self.now();
            let room = (self.settings.queue_limit / 2).saturating_sub(self.store.pending_len());
            let due = if room == 0 {
                Vec::new()
            } else {
                self.store
                    .due_timers(now, room.min(1000))
                    .unwrap_or_else(|e| {
                        warn!(error = %e, "cannot read decay timers");
                        Vec::new()
                    })
            };
            if !due.is_empty() && self.enqueue_decay(&due, now).await {
                continue;
            }
            let wait = match self.store.next_timer() {
                Ok(Some(at)) => (at - now).to_std().unwrap_or_default(),
                _ => Duration::from_secs(60),
            }
            .clamp(Duration::from_secs(1), Duration::from_secs(60));
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
                _ = notified => {}
            }
        }
    }

    /// Queue the leads of fired timers (durable when `enqueue` returns), then clear the
    /// timers (a crash in between re-fires them, which merges into the same entries). `false` when
    /// nothing could be queued.
    pub(super) async fn enqueue_decay(
        &self,
        due: &[(String, LeadId, DateTime<Utc>)],
        now: DateTime<Utc>,
    ) -> bool {
        let cause = Cause {
            source: CauseSource::Decay,
            detail: "score changes with time".into(),
            at: now,
        };
        let mut by_portal: BTreeMap<&str, Vec<Subject>> = BTreeMap::new();
        for (portal, lead, _) in due {
            by_portal
                .entry(portal.as_str())
                .or_default()
                .push(Subject::Lead(lead.clone()));
        }
        let mut queued = false;
        for (portal, subjects) in by_portal {
            if !self.live().portals.contains_key(portal) {
                // A portal no longer configured: its timers return with its leads.
                for (p, lead, at) in due.iter().filter(|(p, _, _)| p == portal) {
                    if let Err(e) = self.store.clear_timer(p, lead, *at) {
                        warn!(error = %e, "cannot clear a decay timer");
                    }
                }
                queued = true;
                continue;
            }
            match self.enqueue(portal, &subjects, cause.clone(), now).await {
                Ok(()) => queued = true,
                Err(e) => warn!(portal, error = %e, "cannot queue decayed leads"),
            }
        }
        if !queued {
            return false;
        }
        let fired = due
            .iter()
            .map(|(p, lead, at)| (p.as_str(), lead.as_str(), *at));
        if let Err(e) = self.store.clear_timers(fired) {
            warn!(error = %e, "cannot clear the fired decay timers");
        }
        debug!(leads = due.len(), "decay timers fired");
        true
    }
}

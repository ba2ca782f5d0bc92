//! Hot leads never wait silently: a lead near the call-now threshold that waits
//! longer than `server.hot_wait_warn_secs` is logged with what holds its portal back.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::{Metrics, Pipeline, Subject};
use crate::config::Portal;
use crate::store::Store;

impl Pipeline {
    /// Log at WARN, once per lead and wait, every hot lead that has waited longer than
    /// `hot_wait_warn` for its fetch, with what holds its portal back, so a slow or
    /// paused CRM never delays a call-now task silently.
    pub(super) async fn hot_wait_watchdog(self: Arc<Self>, shutdown: CancellationToken) {
        let bound = self.settings.hot_wait_warn;
        let period = (bound / 4).clamp(Duration::from_millis(200), Duration::from_secs(10));
        let mut warned: HashMap<Vec<u8>, DateTime<Utc>> = HashMap::new();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(period) => {}
            }
            let keys = self.scheduler.lock().await.hot_keys();
            let now = self.now();
            warned.retain(|k, _| keys.contains(k));
            for k in keys {
                let Ok(Some(e)) = self.store.pending_get(&k) else {
                    continue;
                };
                let waited = (now - e.first_at).to_std().unwrap_or_default();
                if waited < bound || warned.get(&k) == Some(&e.first_at) {
                    continue;
                }
                warned.insert(k, e.first_at);
                let held_by = self
                    .portal(&e.portal)
                    .and_then(|rt| rt.crm.pacing())
                    .map(|p| {
                        p.methods
                            .iter()
                            .filter(|m| m.paused_until.is_some())
                            .map(|m| m.method.clone())
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .unwrap_or_default();
                let lead = match &e.subject {
                    Subject::Lead(id) | Subject::Activity(id) => id.clone(),
                };
                warn!(
                    portal = %e.portal,
                    lead = %lead,
                    waited_secs = waited.as_secs(),
                    paused_methods = %held_by,
                    attempts = e.attempts,
                    "hot lead waiting for its fetch longer than server.hot_wait_warn_secs"
                );
                Metrics::inc(&self.metrics.failures, &e.portal, "hot_wait");
            }
        }
    }
}

/// Scores this close under the threshold count as "near" it (fetched first).
const NEAR_THRESHOLD: i32 = 15;

/// Was the lead's last written score near or above the portal's call-now threshold?
pub(super) fn near_threshold(store: &Store, portal: &Portal, lead: &str) -> bool {
    store
        .written(&portal.id, lead)
        .ok()
        .flatten()
        .is_some_and(|w| w.score >= portal.threshold - NEAR_THRESHOLD)
}

//! A new calibration reaches the CRM: `backtest --portal` keeps a portal's score → win
//! rate mapping in the store (with the daemon stopped), and at the next start a portal
//! whose mapping differs from the one last applied gets a rescore of its stored leads
//! (from their inputs, no tasks), which writes only the leads whose "72 ≈ 18%" changed.

use tracing::{info, warn};

use super::rescore::{RescoreRequest, Target, TaskPolicy};
use super::{Pipeline, RescoreError};

/// Store key of the calibration last pushed to a portal's probability field.
fn applied_key(portal: &str) -> String {
    format!("calibration_applied:{portal}")
}

impl Pipeline {
    /// Start the rescore that refreshes the probability fields of portals whose
    /// calibration changed since it was last applied (one job for all of them).
    pub(super) async fn refresh_probabilities(&self) {
        let mut changed = Vec::new();
        for rt in self.live().portals.values() {
            if rt.portal.fields.probability.is_none() {
                continue;
            }
            let Ok(Some(c)) = self.store.calibration(&rt.portal.id) else {
                continue;
            };
            let text = serde_json::to_string(&c).unwrap_or_default();
            let applied = self.store.meta_get(&applied_key(&rt.portal.id));
            if applied.ok().flatten().as_deref() != Some(text.as_str()) {
                changed.push((rt.portal.id.clone(), text));
            }
        }
        if changed.is_empty() {
            return;
        }
        let request = RescoreRequest {
            portal: (changed.len() == 1).then(|| changed[0].0.clone()),
            target: Target::Stored,
            dry_run: false,
            tasks: TaskPolicy::None,
        };
        match self.start_rescore(request).await {
            Ok(progress) => {
                for (portal, text) in &changed {
                    if let Err(e) = self.store.meta_set(&applied_key(portal), text) {
                        warn!(portal, error = %e, "cannot note the applied calibration");
                    }
                }
                if let Err(e) = self.store.flush().await {
                    warn!(error = %e, "cannot flush the applied calibration");
                }
                let portals: Vec<&str> = changed.iter().map(|(p, _)| p.as_str()).collect();
                let leads = progress.job.as_ref().map_or(0, |j| j.total());
                info!(
                    ?portals,
                    leads, "new calibration: refreshing the probability fields of the stored leads"
                );
            }
            // A job resumed from before the restart runs first; the next start retries.
            Err(RescoreError::Busy { .. }) => {
                info!("new calibration: the probability fields refresh after the running rescore, at the next start")
            }
            Err(e) => warn!(error = %e, "new calibration: cannot start the refresh"),
        }
    }
}

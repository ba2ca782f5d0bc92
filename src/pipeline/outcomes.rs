//! Outcome webhooks: a lead read while closed (its status changed to a won or lost
//! stage: Bitrix24's `ONCRMLEADUPDATE` with `STATUS_SEMANTIC_ID` S or F, amoCRM's
//! status change to 142 / 143 or the portal's own) is recorded in the store's
//! `live_outcomes` with the score and tier it had at that moment, so the dashboard and
//! later analyses need no full pull.

use chrono::{DateTime, Utc};
use tracing::info;

use super::{Pipeline, Written};
use crate::crm::Closed;
use crate::lead::Lead;
use crate::scoring::Score;
use crate::store::{LiveOutcome, ShadowScore, StoreError};

/// What the lead looked like when it closed.
pub(super) struct AtClose<'a> {
    pub lead: &'a Lead,
    pub closed: Closed,
    /// What was last written before this turn (what the rep saw).
    pub last: Option<&'a Written>,
    /// This turn's score and shadow verdict (used when nothing was written before).
    pub score: &'a Score,
    pub shadow: Option<&'a ShadowScore>,
}

impl Pipeline {
    /// "72 ≈ 18%" for a portal with a probability field and a stored calibration.
    pub(super) fn probability_text(
        &self,
        fields: &crate::config::FieldsSection,
        portal: &str,
        score: i32,
    ) -> Result<Option<String>, StoreError> {
        if fields.probability.is_none() {
            return Ok(None);
        }
        Ok(self
            .store
            .calibration(portal)?
            .filter(|c| c.probability(score).is_some())
            .map(|c| c.describe(score)))
    }

    /// Record `c`'s close once (again only when the lead closed again at another time).
    pub(super) fn note_outcome(
        &self,
        portal: &str,
        c: AtClose<'_>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let id = &c.lead.id;
        if self
            .store
            .live_outcome(portal, id)?
            .is_some_and(|o| o.closed_at == c.closed.at)
        {
            return Ok(());
        }
        let (score, tier, shadow) = match c.last {
            Some(w) => {
                let shadow = self
                    .store
                    .ledger(portal, id)?
                    .into_iter()
                    .rev()
                    .find(|e| e.at <= w.at)
                    .and_then(|e| e.shadow);
                (w.score, w.tier.clone(), shadow)
            }
            None => (c.score.total, c.score.tier.clone(), c.shadow.cloned()),
        };
        info!(portal, lead = %id, outcome = ?c.closed.outcome, score, tier = %tier, "outcome recorded");
        self.store.put_live_outcome(
            portal,
            id,
            &LiveOutcome {
                outcome: c.closed.outcome,
                closed_at: c.closed.at,
                created_at: c.lead.created_at,
                score,
                tier,
                shadow,
                recorded_at: now,
            },
        )
    }
}

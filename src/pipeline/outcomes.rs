//! Outcome webhooks: a lead read while closed (its status changed to a won or lost
//! stage: Bitrix24's `ONCRMLEADUPDATE` with `STATUS_SEMANTIC_ID` S or F, amoCRM's
//! status change to 142 / 143 or the portal's own) is recorded in the store's
//! `live_outcomes` with the score and tier it had at that moment, so the dashboard and
//! later analyses need no full pull.

use chrono::{DateTime, Utc};
use tracing::{debug, info};

use super::{Pipeline, Written};
use crate::crm::Closed;
use crate::lead::Lead;
use crate::store::{LiveOutcome, StoreError};

/// What the lead looked like when it closed.
pub(super) struct AtClose<'a> {
    pub lead: &'a Lead,
    pub closed: Closed,
    /// What was last written before this turn (what the rep saw).
    pub last: Option<&'a Written>,
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
    /// The caller hands over only a close whose status change this read saw; a lead
    /// with no score written before it (closed before leadscore knew it) had no score
    /// then and is not recorded: scoring it now would use what happened after.
    pub(super) fn note_outcome(
        &self,
        portal: &str,
        c: AtClose<'_>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let id = &c.lead.id;
        let Some(w) = c.last else {
            debug!(portal, lead = %id, "closed lead never scored before its close; no outcome recorded");
            return Ok(());
        };
        if self
            .store
            .live_outcome(portal, id)?
            .is_some_and(|o| o.closed_at == c.closed.at)
        {
            return Ok(());
        }
        let shadow = self
            .store
            .ledger(portal, id)?
            .into_iter()
            .rev()
            .find(|e| e.at <= w.at)
            .and_then(|e| e.shadow);
        let (score, tier) = (w.score, w.tier.clone());
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

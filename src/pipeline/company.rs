//! Buying groups at run time: each scored lead updates its company's aggregate in the
//! store, scores with that aggregate, and when the update changed what the company's
//! other leads read, those are re-scored from their stored inputs (no CRM read), so
//! every lead of the company shows the group.

use chrono::{DateTime, Utc};
use tracing::warn;

use super::{Cause, CauseSource, LeadId, Model, Pipeline, Subject};
use crate::lead::{Activity, Lead};
use crate::scoring::{Company, Member};
use crate::store::StoreError;

impl Pipeline {
    /// The lead's company aggregate with this lead's people in it, and the company's
    /// other leads whose buying-group outcome the update moved (a person started or
    /// stopped counting; a later time of someone already counted moves nothing now:
    /// the peers' own timers re-score them when the window ends). Models without a
    /// buying-group rule skip the store entirely (a hot path).
    pub(super) fn company_view(
        &self,
        portal: &str,
        model: &Model,
        lead: &Lead,
        activities: &[Activity],
        now: DateTime<Utc>,
    ) -> Result<(Option<Company>, Vec<LeadId>), StoreError> {
        if !model.has_buying_group() {
            return Ok((None, Vec::new()));
        }
        let key = model.company_key(lead);
        let people = match key {
            Some(_) => Member::from_activities(&lead.id, activities),
            None => Vec::new(),
        };
        let u = self
            .store
            .company_put(portal, &lead.id, key.as_ref(), people)?;
        let mut requeue = u.left;
        if !model.same_group_view(u.before.as_ref(), u.company.as_ref(), now) {
            requeue.extend(u.affected);
        }
        Ok((u.company, requeue))
    }

    /// A deleted lead leaves its company: its people no longer count, and the
    /// company's other leads are re-scored without them.
    pub(super) async fn leave_company(&self, portal: &str, lead: &str, now: DateTime<Utc>) {
        match self.store.company_put(portal, lead, None, Vec::new()) {
            Ok(u) => {
                let why = "a lead of the company was deleted";
                self.requeue_from_inputs(portal, u.left, why, now).await
            }
            Err(e) => {
                warn!(portal, lead, error = %e, "cannot take a deleted lead out of its company")
            }
        }
    }

    /// Queue leads to be scored from their stored inputs like a decay (a lead never
    /// scored yet is read in full): those whose company aggregate changed, or whose
    /// rule task must be tried again.
    pub(super) async fn requeue_from_inputs(
        &self,
        portal: &str,
        mut leads: Vec<LeadId>,
        why: &str,
        now: DateTime<Utc>,
    ) {
        if leads.is_empty() {
            return;
        }
        leads.sort();
        leads.dedup();
        let subjects: Vec<Subject> = leads.into_iter().map(Subject::Lead).collect();
        let cause = Cause {
            source: CauseSource::Decay,
            detail: why.into(),
            at: now,
        };
        if let Err(e) = self.enqueue(portal, &subjects, cause, now).await {
            // Their timers still re-score them when the group's window moves.
            warn!(portal, error = %e, why, "cannot queue leads again");
        }
    }
}

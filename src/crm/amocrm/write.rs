//! Writing scores back: score, tier and breakdown custom fields in PATCHes of 50
//! leads, splitting a refused batch to find the lead at fault; optional notes.

use std::collections::BTreeMap;

use leadscore_amocrm::error::Error;
use leadscore_amocrm::types::{FieldWrite, LeadUpdate, NewNote};

use super::fetch::unix;
use super::{clone_err, parse_id, to_crm, AmocrmCrm, OWN_NOTE_PREFIX};
use crate::config::FieldsSection;
use crate::crm::extras::Extra;
use crate::crm::{CrmError, CrmStamp, LeadId, ScoreWrite, WriteResult};

/// A configured field as an amoCRM custom field id.
fn field_id(name: &str, value: Option<&str>) -> Result<Option<u64>, CrmError> {
    match value {
        None => Ok(None),
        Some(v) => v.trim().parse::<u64>().map(Some).map_err(|_| {
            CrmError::Rejected(format!(
                "fields.{name} = {v:?} is not an amoCRM custom field id (run `leadscore setup`)"
            ))
        }),
    }
}


impl AmocrmCrm {
    /// PATCH one batch; on a validation error split it to find the lead(s) at fault so
    /// one bad lead does not fail 49 good ones.
    async fn patch_isolating(
        &self,
        updates: &[LeadUpdate],
        out: &mut BTreeMap<LeadId, WriteResult>,
    ) {
        let mut pending: Vec<Vec<LeadUpdate>> = vec![updates.to_vec()];
        while let Some(batch) = pending.pop() {
            for (ids, result) in self.client.update_leads(&batch).await {
                match result {
                    Ok(updated) => {
                        // The modification time our PATCH produced (no user: the
                        // answer does not carry `updated_by`).
                        let stamps: BTreeMap<u64, CrmStamp> = updated
                            .iter()
                            .filter_map(|u| {
                                let at = unix(u.updated_at?)?;
                                Some((u.id, CrmStamp { at, by: None }))
                            })
                            .collect();
                        for id in ids {
                            out.insert(id.to_string(), Ok(stamps.get(&id).cloned()));
                        }
                    }
                    Err(e @ Error::Validation { .. }) if ids.len() > 1 => {
                        tracing::warn!(error = %e, size = ids.len(), "amoCRM refused a score batch; splitting it to find the lead at fault");
                        let sub: Vec<LeadUpdate> = batch
                            .iter()
                            .filter(|u| ids.contains(&u.id))
                            .cloned()
                            .collect();
                        let (x, y) = sub.split_at(sub.len() / 2);
                        pending.push(y.to_vec());
                        pending.push(x.to_vec());
                    }
                    Err(e) => {
                        let ce = to_crm(e);
                        for id in ids {
                            out.insert(id.to_string(), Err(clone_err(&ce)));
                        }
                    }
                }
            }
        }
    }

    /// Write scores back (PATCHes of 50, a bad lead isolated), then the optional notes.
    pub(super) async fn write(
        &self,
        fields: &FieldsSection,
        writes: &[ScoreWrite],
    ) -> Result<BTreeMap<LeadId, WriteResult>, CrmError> {
        let score_field = field_id("score", fields.score.as_deref())?.ok_or_else(|| {
            CrmError::Rejected(
                "fields.score is not set for this portal (run `leadscore setup`)".into(),
            )
        })?;
        let tier_field = field_id("tier", fields.tier.as_deref())?;
        let breakdown_field = field_id("breakdown", fields.breakdown.as_deref())?;
        let mut extra_fields = Vec::new();
        for kind in Extra::ALL {
            let id = field_id(kind.key(), fields.extra(kind))?;
            extra_fields.extend(id.map(|id| (kind, id)));
        }
        let mut out = BTreeMap::new();
        let mut updates = Vec::new();
        for w in writes {
            let Some(id) = parse_id(&w.lead_id) else {
                out.insert(
                    w.lead_id.clone(),
                    Err(CrmError::Rejected(format!(
                        "{:?} is not a lead id",
                        w.lead_id
                    ))),
                );
                continue;
            };
            let mut values = vec![(score_field, FieldWrite::Number(f64::from(w.score)))];
            if let Some(tf) = tier_field {
                match fields
                    .tier_values
                    .get(&w.tier)
                    .and_then(|v| parse_id(v))
                {
                    Some(enum_id) => values.push((tf, FieldWrite::Enum(enum_id))),
                    None => {
                        out.insert(
                            w.lead_id.clone(),
                            Err(CrmError::Rejected(format!(
                                "tier {:?} has no enum id in fields.tier_values (run `leadscore setup`)",
                                w.tier
                            ))),
                        );
                        continue;
                    }
                }
            }
            if let Some(bf) = breakdown_field {
                values.push((bf, FieldWrite::Text(w.breakdown.clone())));
            }
            for &(kind, field) in &extra_fields {
                let Some(value) = w.extras.get(kind) else {
                    continue;
                };
                if !kind.is_number() {
                    values.push((field, FieldWrite::Text(value.to_string())));
                } else if let Ok(n) = value.parse::<f64>() {
                    values.push((field, FieldWrite::Number(n)));
                }
            }
            updates.push(LeadUpdate { id, fields: values });
        }
        if updates.is_empty() {
            return Ok(out);
        }
        let before = out.len();
        self.patch_isolating(&updates, &mut out).await;
        let written: Vec<&ScoreWrite> = writes
            .iter()
            .filter(|w| matches!(out.get(&w.lead_id), Some(Ok(_))))
            .collect();
        if written.is_empty() && before == 0 {
            // Nothing was written: report the common failure (a block or revoked token
            // must reach the pipeline as such, not as 50 per-lead errors).
            if let Some(Err(e)) = out.values().find(|r| {
                matches!(
                    r,
                    Err(CrmError::Blocked(_) | CrmError::Auth(_) | CrmError::Transient { .. })
                )
            }) {
                return Err(clone_err(e));
            }
        }
        let notes: Vec<NewNote> = written
            .iter()
            .filter(|w| w.comment)
            .filter_map(|w| {
                Some(NewNote::common(
                    parse_id(&w.lead_id)?,
                    &format!("{OWN_NOTE_PREFIX} {}", w.breakdown),
                ))
            })
            .collect();
        if !notes.is_empty() {
            // The score is written; the note is an extra, so its failure is only logged.
            if let Err(e) = self.client.add_lead_notes(&notes).await {
                tracing::warn!(portal = %self.portal_id, error = %e, "could not post the score explanation notes");
            }
        }
        Ok(out)
    }
}

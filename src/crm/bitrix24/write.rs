//! Writing scores back: one `crm.lead.update` (and optionally one timeline comment)
//! per lead, packed into batches; per-lead outcomes.

use std::collections::BTreeMap;

use leadscore_bitrix24::batch::{BatchCommand, CommandResult};
use leadscore_bitrix24::client::{comment_params, lead_update_params};
use serde_json::{json, Map, Value};

use super::{is_numeric_id, score_field, to_crm, Bitrix24Crm};
use crate::config::FieldsSection;
use crate::crm::{CrmError, LeadId, ScoreWrite};

impl Bitrix24Crm {
    /// Write scores back in batches; per-lead results say which writes were applied.
    pub(super) async fn write(
        &self,
        fields: &FieldsSection,
        writes: &[ScoreWrite],
    ) -> Result<BTreeMap<LeadId, Result<(), CrmError>>, CrmError> {
        let mut out = BTreeMap::new();
        let mut cmds = Vec::new();
        for w in writes {
            if !is_numeric_id(&w.lead_id) {
                out.insert(
                    w.lead_id.clone(),
                    Err(CrmError::Rejected(format!(
                        "{:?} is not a lead id",
                        w.lead_id
                    ))),
                );
                continue;
            }
            let mut values = Map::new();
            values.insert(score_field(fields).to_string(), json!(w.score));
            if let Some(tier_field) = &fields.tier {
                match fields.tier_values.get(&w.tier) {
                    Some(item) => {
                        values.insert(tier_field.clone(), json!(item));
                    }
                    None => {
                        out.insert(
                            w.lead_id.clone(),
                            Err(CrmError::Rejected(format!(
                                "tier {:?} has no enumeration id in fields.tier_values (run `leadscore setup`)",
                                w.tier
                            ))),
                        );
                        continue;
                    }
                }
            }
            if let Some(b) = &fields.breakdown {
                values.insert(b.clone(), json!(w.breakdown));
            }
            cmds.push(BatchCommand::new(
                format!("u{}", w.lead_id),
                "crm.lead.update",
                lead_update_params(&w.lead_id, Value::Object(values)),
            ));
            if w.comment {
                cmds.push(BatchCommand::new(
                    format!("m{}", w.lead_id),
                    "crm.timeline.comment.add",
                    comment_params("lead", &w.lead_id, &w.breakdown),
                ));
            }
        }
        if cmds.is_empty() {
            return Ok(out);
        }
        let results = self.client.batch_all(cmds).await.map_err(to_crm)?;
        for w in writes {
            if out.contains_key(&w.lead_id) {
                continue;
            }
            let update = results.get(&format!("u{}", w.lead_id));
            let outcome = match update.map(|r| &r.result) {
                Some(Ok(v)) => {
                    leadscore_bitrix24::client::expect_true("crm.lead.update", v).map_err(to_crm)
                }
                Some(Err(e)) => Err(to_crm(e.clone())),
                None => Err(CrmError::Transient {
                    message: "no result for the update".into(),
                    retry_after: None,
                }),
            };
            let outcome = match (outcome, results.get(&format!("m{}", w.lead_id))) {
                (Ok(()), Some(CommandResult { result: Err(e), .. })) => Err(to_crm(e.clone())),
                (o, _) => o,
            };
            out.insert(w.lead_id.clone(), outcome);
        }
        Ok(out)
    }
}

//! Writing scores back: one `crm.lead.update` (and optionally one timeline comment)
//! per lead, packed into batches; per-lead outcomes.
//!
//! `crm.lead.update` answers only `true`, so each batch ends with one `crm.lead.list`
//! of the leads it updated (`ID`, `DATE_MODIFY`, `MODIFY_BY_ID`): the modification
//! stamp our write produced, read in the same request. Commands run in key order
//! (the client sends `cmd` sorted), and the list's key sorts after every update's.

use std::collections::BTreeMap;

use leadscore_bitrix24::batch::{BatchCommand, CommandResult, MAX_COMMANDS};
use leadscore_bitrix24::client::{comment_params, lead_update_params};
use leadscore_bitrix24::methods::decode_list;
use leadscore_bitrix24::types::LeadRecord;
use serde_json::{json, Map, Value};

use super::{is_numeric_id, score_field, to_crm, Bitrix24Crm};
use crate::config::FieldsSection;
use crate::crm::{CrmError, CrmStamp, LeadId, ScoreWrite, WriteResult};

/// Key of the stamp read of batch `n`; `z` sorts after `u…` (updates) and `m…`.
fn stamp_key(n: usize) -> String {
    format!("z_stamp{n}")
}

/// Most leads per write batch: with their commands plus the stamp read, one `batch`.
pub(super) const WRITE_BATCH: usize = MAX_COMMANDS - 1;

impl Bitrix24Crm {
    /// Write scores back in batches; per-lead results say which writes were applied.
    pub(super) async fn write(
        &self,
        fields: &FieldsSection,
        writes: &[ScoreWrite],
    ) -> Result<BTreeMap<LeadId, WriteResult>, CrmError> {
        let mut out = BTreeMap::new();
        // Groups of commands, each sent as one batch with its stamp read at the end.
        let mut groups: Vec<(Vec<BatchCommand>, Vec<&str>)> = Vec::new();
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
            if let (Some(f), Some(p)) = (&fields.probability, &w.probability) {
                values.insert(f.clone(), json!(p));
            }
            let mut lead_cmds = vec![BatchCommand::new(
                format!("u{}", w.lead_id),
                "crm.lead.update",
                lead_update_params(&w.lead_id, Value::Object(values)),
            )];
            if w.comment {
                lead_cmds.push(BatchCommand::new(
                    format!("m{}", w.lead_id),
                    "crm.timeline.comment.add",
                    comment_params("lead", &w.lead_id, &w.breakdown),
                ));
            }
            match groups.last_mut() {
                Some((cmds, ids)) if cmds.len() + lead_cmds.len() < MAX_COMMANDS => {
                    cmds.extend(lead_cmds);
                    ids.push(&w.lead_id);
                }
                _ => groups.push((lead_cmds, vec![&w.lead_id])),
            }
        }
        if groups.is_empty() {
            return Ok(out);
        }
        let mut results = BTreeMap::new();
        let mut stamps: BTreeMap<String, CrmStamp> = BTreeMap::new();
        for (n, (mut cmds, ids)) in groups.into_iter().enumerate() {
            cmds.push(BatchCommand::new(
                stamp_key(n),
                "crm.lead.list",
                json!({"filter": {"@ID": ids}, "select": ["ID", "DATE_MODIFY", "MODIFY_BY_ID"],
                       "order": {"ID": "ASC"}, "start": -1}),
            ));
            let mut got = self.client.batch_all(cmds).await.map_err(to_crm)?;
            if let Some(CommandResult { result: Ok(v), .. }) = got.remove(&stamp_key(n)) {
                // A failed read costs only the skip: the sweep fetches those leads again.
                for row in decode_list::<LeadRecord>("crm.lead.list", &v).unwrap_or_default() {
                    if let Some(at) = row.date_modify {
                        let by = row.field_text("MODIFY_BY_ID");
                        stamps.insert(row.id.clone(), CrmStamp { at, by });
                    }
                }
            }
            results.extend(got);
        }
        for w in writes {
            if out.contains_key(&w.lead_id) {
                continue;
            }
            let update = results.get(&format!("u{}", w.lead_id));
            let outcome = match update.map(|r| &r.result) {
                Some(Ok(v)) => leadscore_bitrix24::client::expect_true("crm.lead.update", v)
                    .map(|()| stamps.get(&w.lead_id).cloned())
                    .map_err(to_crm),
                Some(Err(e)) => Err(to_crm(e.clone())),
                None => Err(CrmError::Transient {
                    message: "no result for the update".into(),
                    retry_after: None,
                }),
            };
            let outcome = match (outcome, results.get(&format!("m{}", w.lead_id))) {
                (Ok(_), Some(CommandResult { result: Err(e), .. })) => Err(to_crm(e.clone())),
                (o, _) => o,
            };
            out.insert(w.lead_id.clone(), outcome);
        }
        Ok(out)
    }
}

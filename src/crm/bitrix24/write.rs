//! Writing scores back: one `crm.lead.update` / `crm.deal.update` (and optionally one
//! timeline comment) per lead or deal, packed into batches; per-record outcomes.
//!
//! The updates answer only `true`, so each batch ends with one `crm.lead.list` of the
//! leads and one `crm.deal.list` of the deals it updated (`ID`, `DATE_MODIFY`,
//! `MODIFY_BY_ID`): the modification stamps our write produced, read in the same
//! request. Commands run in key order (the client sends `cmd` sorted), and the lists'
//! keys sort after every update's.

use std::collections::BTreeMap;

use leadscore_bitrix24::batch::{BatchCommand, CommandResult, MAX_COMMANDS};
use leadscore_bitrix24::client::{comment_params, lead_update_params};
use leadscore_bitrix24::methods::decode_list;
use leadscore_bitrix24::types::LeadRecord;
use serde_json::{json, Map, Value};

use super::entity::{Entity, WriteFields};
use super::{to_crm, Bitrix24Crm};
use crate::config::FieldsSection;
use crate::crm::{CrmError, CrmStamp, LeadId, ScoreWrite, WriteResult};

/// Key of the stamp read of batch `n` for `entity`; `z` sorts after `u…` (updates) and
/// `m…`.
fn stamp_key(n: usize, entity: Entity) -> String {
    match entity {
        Entity::Lead => format!("z_stamp{n}"),
        Entity::Deal => format!("z_stampd{n}"),
    }
}

/// One write batch: its commands and the (entity, portal id) of every record in it.
type WriteGroup<'a> = (Vec<BatchCommand>, Vec<(Entity, &'a str)>);

impl Bitrix24Crm {
    /// Commands of a write batch besides its stamp reads (one per scored entity): the
    /// most records per write batch (49 for leads only, as before deals).
    pub(super) fn write_room(&self) -> usize {
        MAX_COMMANDS - usize::from(self.entities.lead) - usize::from(self.entities.deal)
    }
}

impl Bitrix24Crm {
    /// Write scores back in batches; per-lead results say which writes were applied.
    pub(super) async fn write(
        &self,
        fields: &FieldsSection,
        writes: &[ScoreWrite],
    ) -> Result<BTreeMap<LeadId, WriteResult>, CrmError> {
        let mut out = BTreeMap::new();
        // Groups of commands, each sent as one batch with its stamp read at the end.
        // Per batch: its commands and the (entity, portal id) of every record in it.
        let mut groups: Vec<WriteGroup<'_>> = Vec::new();
        for w in writes {
            let Some((entity, raw_id)) = Entity::of(&w.lead_id).filter(|(e, _)| self.scores(*e))
            else {
                out.insert(
                    w.lead_id.clone(),
                    Err(CrmError::Rejected(format!(
                        "{:?} is not the id of a lead or deal this portal scores",
                        w.lead_id
                    ))),
                );
                continue;
            };
            let f = WriteFields::of(fields, entity);
            let section = match entity {
                Entity::Lead => "fields",
                Entity::Deal => "fields.deal",
            };
            let mut values = Map::new();
            values.insert(f.score.to_string(), json!(w.score));
            if let Some(tier_field) = f.tier {
                match f.tier_values.get(&w.tier) {
                    Some(item) => {
                        values.insert(tier_field.to_string(), json!(item));
                    }
                    None => {
                        out.insert(
                            w.lead_id.clone(),
                            Err(CrmError::Rejected(format!(
                                "tier {:?} has no enumeration id in {section}.tier_values (run `leadscore setup`)",
                                w.tier
                            ))),
                        );
                        continue;
                    }
                }
            }
            if let Some(b) = f.breakdown {
                values.insert(b.to_string(), json!(w.breakdown));
            }
            for (kind, value) in w.extras.iter() {
                if let Some(field) = f.extra(kind) {
                    values.insert(field.to_string(), json!(value));
                }
            }
            let mut lead_cmds = vec![BatchCommand::new(
                format!("u{}", w.lead_id),
                format!("{}.update", entity.methods()),
                lead_update_params(raw_id, Value::Object(values)),
            )];
            if w.comment {
                lead_cmds.push(BatchCommand::new(
                    format!("m{}", w.lead_id),
                    "crm.timeline.comment.add",
                    comment_params(entity.comment_type(), raw_id, &w.breakdown),
                ));
            }
            match groups.last_mut() {
                Some((cmds, ids)) if cmds.len() + lead_cmds.len() <= self.write_room() => {
                    cmds.extend(lead_cmds);
                    ids.push((entity, raw_id));
                }
                _ => groups.push((lead_cmds, vec![(entity, raw_id)])),
            }
        }
        if groups.is_empty() {
            return Ok(out);
        }
        let mut results = BTreeMap::new();
        let mut stamps: BTreeMap<String, CrmStamp> = BTreeMap::new();
        for (n, (mut cmds, ids)) in groups.into_iter().enumerate() {
            let mut reads = Vec::new();
            for entity in [Entity::Lead, Entity::Deal] {
                let of: Vec<&str> = ids
                    .iter()
                    .filter(|(e, _)| *e == entity)
                    .map(|(_, id)| *id)
                    .collect();
                if of.is_empty() {
                    continue;
                }
                cmds.push(BatchCommand::new(
                    stamp_key(n, entity),
                    format!("{}.list", entity.methods()),
                    json!({"filter": {"@ID": of}, "select": ["ID", "DATE_MODIFY", "MODIFY_BY_ID"],
                           "order": {"ID": "ASC"}, "start": -1}),
                ));
                reads.push(entity);
            }
            let mut got = self.client.batch_all(cmds).await.map_err(to_crm)?;
            for entity in reads {
                let Some(CommandResult { result: Ok(v), .. }) = got.remove(&stamp_key(n, entity))
                else {
                    // A failed read costs only the skip: the sweep fetches them again.
                    continue;
                };
                let method = format!("{}.list", entity.methods());
                for row in decode_list::<LeadRecord>(&method, &v).unwrap_or_default() {
                    if let Some(at) = row.date_modify {
                        let by = row.field_text("MODIFY_BY_ID");
                        stamps.insert(entity.id(&row.id), CrmStamp { at, by });
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
                Some(Ok(v)) => leadscore_bitrix24::client::expect_true("update", v)
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

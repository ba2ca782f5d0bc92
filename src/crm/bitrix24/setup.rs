//! `leadscore setup` for Bitrix24: the score (integer), tier (enumeration, items keyed
//! by `XML_ID` = tier id so lookups survive renames) and breakdown (string) user fields,
//! on leads and/or deals as `entities` says. It first asks the portal's CRM mode
//! (`crm.settings.mode.get`: 1 classic with leads, 2 simple without): a simple-mode
//! portal has no leads, so setup says so and configures the deal fields instead.

use std::collections::BTreeMap;

use leadscore_bitrix24::types::UserField;
use serde_json::{json, Value};

use super::entity::{Entity, WriteFields};
use super::{to_crm, Bitrix24Crm, DEFAULT_BREAKDOWN_FIELD, DEFAULT_TIER_FIELD};
use crate::config::FieldsSection;
use crate::crm::extras::Extra;
use crate::crm::{CrmError, FieldSetup};

impl Bitrix24Crm {
    /// Ask the portal's CRM mode, then set up the fields of every entity it scores
    /// (deals only on a simple-mode portal); the lead fields are the top level of the
    /// answer (empty when leads are not set up), the deal ones its `deal`.
    pub(super) async fn setup(
        &self,
        fields: &FieldsSection,
        tiers: &[(String, String)],
    ) -> Result<FieldSetup, CrmError> {
        let simple = self.simple_mode().await?;
        let mut notes = Vec::new();
        let (mut leads, mut deals) = (self.entities.lead, self.entities.deal);
        if simple == Some(true) {
            if leads {
                notes.push(
                    "This portal is in Bitrix24's simple CRM mode (crm.settings.mode.get = 2): it has no leads, only deals. Set `entities = [\"deal\"]` for it; the deal fields were set up."
                        .to_string(),
                );
            } else {
                notes.push("This portal is in Bitrix24's simple CRM mode (no leads): its deals are scored.".to_string());
            }
            leads = false;
            deals = true;
        }
        let mut out = if leads {
            self.setup_entity(Entity::Lead, fields, tiers).await?
        } else {
            FieldSetup::default()
        };
        if deals {
            let deal = self.setup_entity(Entity::Deal, fields, tiers).await?;
            out.created.extend(deal.created.iter().map(|c| format!("{c} (deal)")));
            out.deal = Some(Box::new(deal));
        }
        out.notes = notes;
        Ok(out)
    }

    /// `crm.settings.mode.get`: `Some(true)` in the simple mode (2), `Some(false)` in
    /// the classic one (1); `None` when the portal does not know the method (an old
    /// self-hosted one: classic).
    async fn simple_mode(&self) -> Result<Option<bool>, CrmError> {
        match self.client.call("crm.settings.mode.get", json!({})).await {
            Ok(r) => Ok(leadscore_bitrix24::types::value_i64(&r.result).map(|m| m == 2)),
            Err(e) if e.to_string().contains("ERROR_METHOD_NOT_FOUND") => Ok(None),
            Err(e) => Err(to_crm(e)),
        }
    }

    /// Create the score, tier and breakdown user fields of one entity if missing, reuse
    /// them if present, and read the tier enumeration ids back.
    async fn setup_entity(
        &self,
        entity: Entity,
        fields: &FieldsSection,
        tiers: &[(String, String)],
    ) -> Result<FieldSetup, CrmError> {
        let names = WriteFields::of(fields, entity);
        let family = entity.methods();
        let score = names.score.to_string();
        let tier = names.tier.unwrap_or(DEFAULT_TIER_FIELD).to_string();
        let breakdown = names
            .breakdown
            .unwrap_or(DEFAULT_BREAKDOWN_FIELD)
            .to_string();
        let existing = self
            .client
            .userfield_list(family, json!({}))
            .await
            .map_err(to_crm)?;
        let find = |name: &str| {
            existing
                .iter()
                .find(|f| f.field_name.eq_ignore_ascii_case(name))
                .cloned()
        };
        let mut created = Vec::new();
        let labels = match entity {
            Entity::Lead => ["Lead score", "Lead tier", "Lead score: why"],
            Entity::Deal => ["Deal score", "Deal tier", "Deal score: why"],
        };
        let mut wanted: Vec<(&str, &str, &str)> = vec![
            (&score, "integer", labels[0]),
            (&tier, "enumeration", labels[1]),
            (&breakdown, "string", labels[2]),
        ];
        // The optional fields the config names (probability, weighted value,
        // qualification state) are created like the others.
        for kind in Extra::ALL {
            if let Some(name) = names.extra(kind) {
                let user_type = if kind.is_number() { "double" } else { "string" };
                wanted.push((name, user_type, extra_label(kind)));
            }
        }
        for (name, kind, label) in wanted {
            if let Some(f) = find(name) {
                let actual = f.user_type_id.as_deref().unwrap_or("");
                if !actual.eq_ignore_ascii_case(kind) {
                    return Err(CrmError::Rejected(format!(
                        "{} field {name} exists with type {actual:?}, expected {kind}",
                        entity.name()
                    )));
                }
                continue;
            }
            let code = name.strip_prefix("UF_CRM_").ok_or_else(|| {
                CrmError::Rejected(format!("field name {name:?} must start with UF_CRM_"))
            })?;
            let mut created_field = json!({
                "FIELD_NAME": code,
                "USER_TYPE_ID": kind,
                "LABEL": label,
                "EDIT_FORM_LABEL": label,
                "LIST_COLUMN_LABEL": label,
                "MULTIPLE": "N",
                "MANDATORY": "N",
                "SHOW_FILTER": "Y",
                "XML_ID": name,
            });
            if kind == "enumeration" {
                created_field["LIST"] = enum_items(tiers, &[]);
                created_field["SETTINGS"] = json!({"DISPLAY": "LIST"});
            }
            self.client
                .userfield_add(family, created_field)
                .await
                .map_err(to_crm)?;
            created.push(name.to_string());
        }
        // Enumeration ids exist only after creation: read the tier field back.
        let mut tier_field = self.read_userfield(family, &tier).await?;
        let missing: Vec<&(String, String)> = tiers
            .iter()
            .filter(|(id, _)| {
                !tier_field
                    .list
                    .iter()
                    .any(|i| i.xml_id.as_deref() == Some(id))
            })
            .collect();
        if !missing.is_empty() {
            self.client
                .userfield_update(
                    family,
                    &tier_field.id,
                    json!({ "LIST": enum_items(tiers, &tier_field.list) }),
                )
                .await
                .map_err(to_crm)?;
            tier_field = self.read_userfield(family, &tier).await?;
        }
        let mut tier_values = BTreeMap::new();
        for (id, _) in tiers {
            let item = tier_field
                .list
                .iter()
                .find(|i| i.xml_id.as_deref() == Some(id.as_str()))
                .ok_or_else(|| {
                    CrmError::Rejected(format!("tier {id:?} is missing from {tier} after setup"))
                })?;
            tier_values.insert(id.clone(), item.id.clone());
        }
        Ok(FieldSetup {
            score_field: score,
            tier_field: tier,
            breakdown_field: breakdown,
            tier_values,
            created,
            ..FieldSetup::default()
        })
    }

    /// One lead or deal user field by name, as the portal has it now.
    async fn read_userfield(&self, family: &str, name: &str) -> Result<UserField, CrmError> {
        self.client
            .userfield_list(family, json!({ "FIELD_NAME": name }))
            .await
            .map_err(to_crm)?
            .into_iter()
            .find(|f| f.field_name.eq_ignore_ascii_case(name))
            .ok_or_else(|| CrmError::Rejected(format!("field {name} not found after creating it")))
    }
}

/// `LIST` for the tier enumeration: existing items kept (with their ids), missing tiers
/// added with `XML_ID` = tier id so lookups survive renames.
/// The label a created optional field gets in the portal's UI.
fn extra_label(kind: Extra) -> &'static str {
    match kind {
        Extra::Probability => "Lead score: win probability",
        Extra::ExpectedValue => "Weighted value (amount × stage)",
        Extra::Qualification => "Qualification (BANT)",
    }
}

pub(super) fn enum_items(
    tiers: &[(String, String)],
    existing: &[leadscore_bitrix24::types::EnumItem],
) -> Value {
    let mut items: Vec<Value> = existing
        .iter()
        .map(|i| json!({"ID": i.id, "VALUE": i.value, "XML_ID": i.xml_id, "SORT": i.sort}))
        .collect();
    for (n, (id, label)) in tiers.iter().enumerate() {
        if existing
            .iter()
            .any(|i| i.xml_id.as_deref() == Some(id.as_str()))
        {
            continue;
        }
        items.push(json!({"VALUE": label, "XML_ID": id, "SORT": (n + 1) * 10, "DEF": "N"}));
    }
    Value::Array(items)
}

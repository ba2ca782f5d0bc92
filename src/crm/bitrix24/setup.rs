//! `leadscore setup` for Bitrix24: the score (integer), tier (enumeration, items keyed
//! by `XML_ID` = tier id so lookups survive renames) and breakdown (string) user fields.

use std::collections::BTreeMap;

use leadscore_bitrix24::types::UserField;
use serde_json::{json, Value};

use super::{
    score_field, to_crm, Bitrix24Crm, DEFAULT_BREAKDOWN_FIELD, DEFAULT_TIER_FIELD,
};
use crate::config::FieldsSection;
use crate::crm::{CrmError, FieldSetup};

impl Bitrix24Crm {
    /// Create the score, tier and breakdown user fields if missing, reuse them if
    /// present, and read the tier enumeration ids back.
    pub(super) async fn setup(
        &self,
        fields: &FieldsSection,
        tiers: &[(String, String)],
    ) -> Result<FieldSetup, CrmError> {
        let score = score_field(fields).to_string();
        let tier = fields
            .tier
            .clone()
            .unwrap_or_else(|| DEFAULT_TIER_FIELD.into());
        let breakdown = fields
            .breakdown
            .clone()
            .unwrap_or_else(|| DEFAULT_BREAKDOWN_FIELD.into());
        let existing = self
            .client
            .lead_userfield_list(json!({}))
            .await
            .map_err(to_crm)?;
        let find = |name: &str| {
            existing
                .iter()
                .find(|f| f.field_name.eq_ignore_ascii_case(name))
                .cloned()
        };
        let mut created = Vec::new();
        let wanted: [(&str, &str, &str); 3] = [
            (&score, "integer", "Lead score"),
            (&tier, "enumeration", "Lead tier"),
            (&breakdown, "string", "Lead score: why"),
        ];
        for (name, kind, label) in wanted {
            if let Some(f) = find(name) {
                let actual = f.user_type_id.as_deref().unwrap_or("");
                if !actual.eq_ignore_ascii_case(kind) {
                    return Err(CrmError::Rejected(format!(
                        "field {name} exists with type {actual:?}, expected {kind}"
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
                .lead_userfield_add(created_field)
                .await
                .map_err(to_crm)?;
            created.push(name.to_string());
        }
        // Enumeration ids exist only after creation: read the tier field back.
        let mut tier_field = self.read_userfield(&tier).await?;
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
                .lead_userfield_update(
                    &tier_field.id,
                    json!({ "LIST": enum_items(tiers, &tier_field.list) }),
                )
                .await
                .map_err(to_crm)?;
            tier_field = self.read_userfield(&tier).await?;
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
        })
    }

    /// One lead user field by name, as the portal has it now.
    async fn read_userfield(&self, name: &str) -> Result<UserField, CrmError> {
        self.client
            .lead_userfield_list(json!({ "FIELD_NAME": name }))
            .await
            .map_err(to_crm)?
            .into_iter()
            .find(|f| f.field_name.eq_ignore_ascii_case(name))
            .ok_or_else(|| CrmError::Rejected(format!("field {name} not found after creating it")))
    }
}

/// `LIST` for the tier enumeration: existing items kept (with their ids), missing tiers
/// added with `XML_ID` = tier id so lookups survive renames.
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

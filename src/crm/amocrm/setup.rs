//! `leadscore setup` for amoCRM: the score, tier and breakdown lead fields.

use std::collections::BTreeMap;

use leadscore_amocrm::types::{CustomField, FieldEnum};

use super::{parse_id, to_crm, AmocrmCrm};
use crate::config::FieldsSection;
use crate::crm::{CrmError, FieldSetup};

/// Names and codes of the fields `setup` creates.
const SCORE_NAME: &str = "Lead score";
const TIER_NAME: &str = "Lead tier";
const BREAKDOWN_NAME: &str = "Lead score breakdown";
const SCORE_CODE: &str = "LEADSCORE_SCORE";
const TIER_CODE: &str = "LEADSCORE_TIER";
const BREAKDOWN_CODE: &str = "LEADSCORE_BREAKDOWN";

impl AmocrmCrm {
    /// Find the score (numeric), tier (select) and breakdown (textarea) fields by the
    /// configured id, else by code or name; create the missing ones (API-only).
    pub(super) async fn setup(
        &self,
        fields: &FieldsSection,
        tiers: &[(String, String)],
    ) -> Result<FieldSetup, CrmError> {
        let existing = self.client.lead_custom_fields().await.map_err(to_crm)?;
        let find = |configured: &Option<String>,
                    code: &str,
                    name: &str,
                    kind: &str|
         -> Option<CustomField> {
            let by_id = configured
                .as_deref()
                .and_then(parse_id)
                .and_then(|id| existing.iter().find(|f| f.id == Some(id)));
            by_id
                .or_else(|| {
                    existing.iter().find(|f| {
                        f.field_type == kind
                            && (f
                                .code
                                .as_deref()
                                .is_some_and(|c| c.eq_ignore_ascii_case(code))
                                || f.name == name)
                    })
                })
                .cloned()
        };
        let score = find(&fields.score, SCORE_CODE, SCORE_NAME, "numeric");
        let tier = find(&fields.tier, TIER_CODE, TIER_NAME, "select");
        let breakdown = find(
            &fields.breakdown,
            BREAKDOWN_CODE,
            BREAKDOWN_NAME,
            "textarea",
        );
        let mut to_create = Vec::new();
        let def = |name: &str, code: &str, kind: &str, enums: Vec<FieldEnum>| CustomField {
            id: None,
            name: name.into(),
            field_type: kind.into(),
            code: Some(code.into()),
            sort: Some(510),
            is_api_only: true,
            enums,
        };
        if score.is_none() {
            to_create.push(def(SCORE_NAME, SCORE_CODE, "numeric", Vec::new()));
        }
        if tier.is_none() {
            let enums = tiers
                .iter()
                .enumerate()
                .map(|(i, (_, label))| FieldEnum {
                    id: None,
                    value: label.clone(),
                    sort: Some((i as i64 + 1) * 10),
                })
                .collect();
            to_create.push(def(TIER_NAME, TIER_CODE, "select", enums));
        }
        if breakdown.is_none() {
            to_create.push(def(BREAKDOWN_NAME, BREAKDOWN_CODE, "textarea", Vec::new()));
        }
        let created = if to_create.is_empty() {
            Vec::new()
        } else {
            self.client
                .create_lead_custom_fields(&to_create)
                .await
                .map_err(to_crm)?
        };
        let pick = |found: Option<CustomField>, name: &str| -> Result<CustomField, CrmError> {
            found
                .or_else(|| created.iter().find(|f| f.name == name).cloned())
                .filter(|f| f.id.is_some())
                .ok_or_else(|| {
                    CrmError::Rejected(format!("amoCRM did not return the created field {name:?}"))
                })
        };
        let score = pick(score, SCORE_NAME)?;
        let tier = pick(tier, TIER_NAME)?;
        let breakdown = pick(breakdown, BREAKDOWN_NAME)?;
        let mut tier_values = BTreeMap::new();
        let mut missing = Vec::new();
        for (id, label) in tiers {
            let e = tier.enums.iter().find(|e| {
                e.value.trim().eq_ignore_ascii_case(label.trim())
                    || e.value.trim().eq_ignore_ascii_case(id.trim())
            });
            match e.and_then(|e| e.id) {
                Some(enum_id) => {
                    tier_values.insert(id.clone(), enum_id.to_string());
                }
                None => missing.push(label.clone()),
            }
        }
        if !missing.is_empty() {
            return Err(CrmError::Rejected(format!(
                "the amoCRM field {:?} (id {}) has no values for tiers {}: add them in amoCRM (Settings → Leads → fields) and run setup again",
                tier.name,
                tier.id.unwrap_or_default(),
                missing.join(", ")
            )));
        }
        Ok(FieldSetup {
            score_field: score.id.unwrap_or_default().to_string(),
            tier_field: tier.id.unwrap_or_default().to_string(),
            breakdown_field: breakdown.id.unwrap_or_default().to_string(),
            tier_values,
            created: created.iter().map(|f| f.name.clone()).collect(),
            ..FieldSetup::default()
        })
    }
}

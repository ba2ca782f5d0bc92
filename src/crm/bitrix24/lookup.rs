//! Which lead an e-mail or phone belongs to: `crm.duplicate.findbycomm` (entity_type
//! LEAD) gives the ids of the leads holding it, then one `crm.lead.list` keeps the open
//! ones (`STATUS_SEMANTIC_ID` P) and picks the most recently created.
//!
//! The portal matches phones on their digits as stored, so a Russian number is asked
//! for in the forms reps write it (`+7…`, `7…`, `8…`, the ten national digits); the
//! method takes up to 20 values.

use leadscore_bitrix24::types::value_text;
use serde_json::{json, Value};

use super::entity::Entity;
use super::{to_crm, Bitrix24Crm};
use crate::crm::{CrmError, LeadId};
use crate::tracking::contact::ContactPoint;

impl Bitrix24Crm {
    /// The most recent open lead holding `who`.
    pub(super) async fn lead_by_contact(
        &self,
        who: &ContactPoint,
    ) -> Result<Option<LeadId>, CrmError> {
        if !self.scores(Entity::Lead) {
            return Err(CrmError::Rejected(
                "this portal scores deals only, and an e-mail or phone is looked up among leads"
                    .into(),
            ));
        }
        let (kind, values) = match who {
            ContactPoint::Email(e) => ("EMAIL", vec![e.clone()]),
            ContactPoint::Phone(p) => ("PHONE", phone_forms(who, p)),
        };
        let found = self
            .client
            .call(
                "crm.duplicate.findbycomm",
                json!({"entity_type": "LEAD", "type": kind, "values": values}),
            )
            .await
            .map_err(to_crm)?;
        let ids = lead_ids(&found.result);
        if ids.is_empty() {
            return Ok(None);
        }
        let (rows, _) = self
            .client
            .lead_list(
                json!({"@ID": ids, "STATUS_SEMANTIC_ID": "P"}),
                &["ID"],
                json!({"DATE_CREATE": "DESC", "ID": "DESC"}),
                None,
            )
            .await
            .map_err(to_crm)?;
        Ok(rows.into_iter().next().map(|r| r.id))
    }
}

/// The forms of a phone to ask for: the digits, and for a Russian number also `+7…`
/// and the trunk form `8…`.
fn phone_forms(who: &ContactPoint, digits: &str) -> Vec<String> {
    match who.russian_national() {
        Some(n) => vec![
            format!("+7{n}"),
            format!("7{n}"),
            format!("8{n}"),
            n.to_string(),
        ],
        None => vec![digits.to_string()],
    }
}

/// The lead ids of a `crm.duplicate.findbycomm` answer: `{"LEAD": [1, 2]}`, or `[]`
/// (PHP's empty array) when nothing matched.
fn lead_ids(result: &Value) -> Vec<String> {
    result
        .get("LEAD")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(value_text).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_gives_lead_ids_or_nothing() {
        assert_eq!(
            lead_ids(&json!({"LEAD": [12, "15"], "CONTACT": [3]})),
            ["12", "15"]
        );
        assert!(lead_ids(&json!([])).is_empty());
        assert!(lead_ids(&json!({"CONTACT": [3]})).is_empty());
    }

    #[test]
    fn a_russian_phone_is_asked_for_in_its_written_forms() {
        let p = ContactPoint::phone("8 912 345-67-89").unwrap();
        assert_eq!(
            phone_forms(&p, p.value()),
            ["+79123456789", "79123456789", "89123456789", "9123456789"]
        );
        let uk = ContactPoint::phone("+44 20 7946 0958").unwrap();
        assert_eq!(phone_forms(&uk, uk.value()), ["442079460958"]);
    }
}

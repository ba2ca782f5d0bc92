//! Which lead an e-mail or phone belongs to: `GET /api/v4/contacts?query=…&with=leads`
//! finds the contacts holding it (amoCRM's search is a fuzzy full-text one, so each
//! contact found must really hold the value in its `EMAIL` / `PHONE` field), then one
//! lead list reads their leads and the most recently created open one wins (open: not
//! in amoCRM's closing stages 142 "won" and 143 "lost", not deleted).
//!
//! A Russian number is searched by its ten national digits, which every written form
//! of it contains (`+7 912…`, `8 (912)…`).

use std::collections::BTreeSet;

use leadscore_amocrm::types::{Contact, Lead};

use super::{to_crm, AmocrmCrm};
use crate::crm::{CrmError, LeadId};
use crate::tracking::contact::ContactPoint;

/// amoCRM's closing stages (the same in every pipeline).
const WON: u64 = 142;
const LOST: u64 = 143;

impl AmocrmCrm {
    /// The most recent open lead of the contacts holding `who`.
    pub(super) async fn lead_by_contact(
        &self,
        who: &ContactPoint,
    ) -> Result<Option<LeadId>, CrmError> {
        let query = who.russian_national().unwrap_or(who.value());
        let contacts = self
            .client
            .contacts_by_query(query)
            .await
            .map_err(to_crm)?;
        let ids: BTreeSet<u64> = contacts
            .iter()
            .filter(|c| holds(c, who))
            .flat_map(|c| c.embedded.leads.iter().map(|l| l.id))
            .collect();
        if ids.is_empty() {
            return Ok(None);
        }
        let ids: Vec<u64> = ids.into_iter().collect();
        let leads = self.client.leads_by_ids(&ids).await.map_err(to_crm)?;
        Ok(most_recent_open(&leads).map(|id| id.to_string()))
    }
}

/// Does the contact really hold the e-mail or phone (not just something like it)?
fn holds(c: &Contact, who: &ContactPoint) -> bool {
    let values = match who {
        ContactPoint::Email(_) => c.emails(),
        ContactPoint::Phone(_) => c.phones(),
    };
    values.iter().any(|v| who.matches(v))
}

/// The most recently created open lead (ties: the higher id).
fn most_recent_open(leads: &[Lead]) -> Option<u64> {
    leads
        .iter()
        .filter(|l| l.is_deleted != Some(true))
        .filter(|l| !matches!(l.status_id, Some(WON | LOST)))
        .max_by_key(|l| (l.created_at.unwrap_or(0), l.id))
        .map(|l| l.id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lead(id: u64, status: u64, created: i64) -> Lead {
        serde_json::from_value(json!({"id": id, "status_id": status, "created_at": created}))
            .unwrap()
    }

    #[test]
    fn the_most_recent_open_lead_wins() {
        let leads = [lead(1, 100, 10), lead(2, 142, 30), lead(3, 100, 20), lead(4, 143, 40)];
        assert_eq!(most_recent_open(&leads), Some(3));
        assert_eq!(most_recent_open(&leads[1..2]), None, "only a won lead");
    }

    #[test]
    fn a_contact_found_by_the_fuzzy_search_must_hold_the_value() {
        let c: Contact = serde_json::from_value(json!({
            "id": 5,
            "custom_fields_values": [
                {"field_id": 1, "field_code": "PHONE", "values": [{"value": "+7 (912) 345-67-89"}]},
                {"field_id": 2, "field_code": "EMAIL", "values": [{"value": "Anna@Corp.ru"}]}
            ]
        }))
        .unwrap();
        assert!(holds(&c, &ContactPoint::phone("89123456789").unwrap()));
        assert!(holds(&c, &ContactPoint::email("anna@corp.ru").unwrap()));
        assert!(holds(&c, &ContactPoint::phone("912 345 67 89").unwrap()));
        assert!(!holds(&c, &ContactPoint::phone("79123456780").unwrap()));
        assert!(!holds(&c, &ContactPoint::email("anna@corp.ru.evil").unwrap()));
    }
}

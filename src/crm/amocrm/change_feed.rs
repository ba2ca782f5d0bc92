//! Reading the change events the fit-field replay needs, in as few requests as the
//! API allows. Only the types that matter are asked for (the caller names them:
//! `custom_field_{ID}_value_changed` of each mapped lead field and of each contact
//! field the mapping reads, and `sale_field_changed`), so leadscore's own score, tier
//! and breakdown writes, the most frequent field changes, never come back; and only
//! events from the earliest creation of the pulled leads on (an as-of instant is never
//! before its lead's creation, and a rewind undoes only changes at or after it).
//!
//! There are two ways to read them, and each pull takes the cheaper:
//! - **per id**: `filter[entity_id]` takes at most 10 ids, so at least
//!   `P = ceil(leads/10) + ceil(contacts/10)` requests however few changes there are;
//! - **account-wide**: the feed of those types of leads and contacts from the earliest
//!   creation to now, one request per page of changes anywhere in the account (of any
//!   lead or contact, pulled or not), at least one.
//!
//! The account's change count is not known beforehand, so when `P` is above 1 one
//! request asks the feed for its page `P + 1`: none (204) means the feed takes at most
//! `P` requests and is read; a page means it takes more, and the ids are read, 10 per
//! request. The choice costs one request and never more than the per-id reads plus one.

use std::collections::HashSet;

use chrono::Utc;
use leadscore_amocrm::client::MAX_EVENT_IDS;
use leadscore_amocrm::types::Event;

use super::{to_crm, AmocrmCrm};
use crate::crm::CrmError;

/// What to read: the event types and ids of each entity, and the earliest instant.
pub(super) struct Wanted<'a> {
    pub lead_types: &'a [String],
    pub lead_ids: &'a [u64],
    pub contact_types: &'a [String],
    pub contact_ids: &'a [u64],
    /// Unix seconds: no event before it matters.
    pub from: i64,
}

impl Wanted<'_> {
    /// Lower bound of the per-id reads: one request per 10 ids of each entity asked.
    fn per_id_requests(&self) -> u64 {
        let n = |types: &[String], ids: &[u64]| {
            if types.is_empty() {
                0
            } else {
                ids.len().div_ceil(MAX_EVENT_IDS) as u64
            }
        };
        n(self.lead_types, self.lead_ids) + n(self.contact_types, self.contact_ids)
    }
}

impl AmocrmCrm {
    /// The lead events and the contact events of `w`, each newest first within an
    /// entity (the order `fit_history` expects), read the cheaper way.
    pub(super) async fn change_events(
        &self,
        w: &Wanted<'_>,
    ) -> Result<(Vec<Event>, Vec<Event>), CrmError> {
        fn strs(v: &[String]) -> Vec<&str> {
            v.iter().map(String::as_str).collect()
        }
        let (lead_types, contact_types) = (strs(w.lead_types), strs(w.contact_types));
        let now = Utc::now().timestamp();
        let mut entities = Vec::new();
        let mut types = Vec::new();
        for (entity, t) in [("lead", &lead_types), ("contact", &contact_types)] {
            if !t.is_empty() {
                entities.push(entity);
                types.extend(t.iter().copied());
            }
        }
        let per_id = w.per_id_requests();
        let per_id_cheaper = per_id <= 1
            || self
                .client
                .event_feed_longer_than((&entities, &types), (w.from, now), per_id as usize)
                .await
                .map_err(to_crm)?;
        if per_id_cheaper {
            let mut out = (Vec::new(), Vec::new());
            for (entity, types, ids, into) in [
                ("lead", &lead_types, w.lead_ids, &mut out.0),
                ("contact", &contact_types, w.contact_ids, &mut out.1),
            ] {
                if !types.is_empty() && !ids.is_empty() {
                    *into = self
                        .client
                        .entity_events(entity, ids, types, Some(w.from))
                        .await
                        .map_err(to_crm)?;
                }
            }
            return Ok(out);
        }
        let all = self
            .client
            .event_feed((&entities, &types), w.from, now)
            .await
            .map_err(to_crm)?;
        let leads: HashSet<u64> = w.lead_ids.iter().copied().collect();
        let contacts: HashSet<u64> = w.contact_ids.iter().copied().collect();
        let (mut on_leads, mut on_contacts) = (Vec::new(), Vec::new());
        for e in all {
            let (Some(id), Some(kind)) = (e.entity_id, e.entity_type.as_deref()) else {
                continue;
            };
            let listed = |types: &[&str]| types.contains(&e.kind.as_str());
            if kind == "lead" && leads.contains(&id) && listed(&lead_types) {
                on_leads.push(e);
            } else if kind == "contact" && contacts.contains(&id) && listed(&contact_types) {
                on_contacts.push(e);
            }
        }
        Ok((on_leads, on_contacts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_id_reads_cost_a_request_per_ten_ids_of_each_entity_asked() {
        let types = vec!["custom_field_7_value_changed".to_string()];
        let none: Vec<String> = Vec::new();
        let ids: Vec<u64> = (1..=1_000).collect();
        let w = |n: usize, contacts: &[String]| Wanted {
            lead_types: &types,
            lead_ids: &ids[..n],
            contact_types: contacts,
            contact_ids: &ids[..n],
            from: 0,
        }
        .per_id_requests();
        assert_eq!(w(0, &types), 0);
        assert_eq!(w(1, &types), 2);
        assert_eq!(w(60, &types), 12);
        assert_eq!(w(61, &types), 14);
        assert_eq!(w(130, &none), 13, "no contact type asked: contacts cost nothing");
        assert_eq!(w(1_000, &types), 200);
    }
}

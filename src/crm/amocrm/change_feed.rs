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
//!   `ceil(leads/10) + ceil(contacts/10)` requests however few changes there are;
//! - **account-wide**: the feed of those types of leads and contacts from the earliest
//!   creation to now, 100 events per page in 30-day windows: at least one request per
//!   window, plus one per 100 changes of those fields anywhere in the account.
//!
//! The account's change count is not known before reading it, so the rule compares
//! the known lower bounds: per id when it takes no more requests than the feed has
//! windows, else the feed. A backtest pulls every closed lead of the account, so those
//! leads and their contacts are most of what the feed carries.

use std::collections::HashSet;

use chrono::Utc;
use leadscore_amocrm::client::MAX_EVENT_IDS;
use leadscore_amocrm::types::Event;

use super::{to_crm, AmocrmCrm};
use crate::crm::CrmError;

/// The span of one window of the client's account-wide feed.
const WINDOW: i64 = 30 * 86_400;

/// What to read: the event types and ids of each entity, and the earliest instant.
pub(super) struct Wanted<'a> {
    pub lead_types: &'a [String],
    pub lead_ids: &'a [u64],
    pub contact_types: &'a [String],
    pub contact_ids: &'a [u64],
    /// Unix seconds: no event before it matters.
    pub from: i64,
}

/// How a pull reads its change events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Way {
    PerId,
    Feed,
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

    /// Lower bound of the feed: one request per 30-day window up to `now`.
    fn feed_requests(&self, now: i64) -> u64 {
        ((now - self.from).max(0) / WINDOW + 1) as u64
    }

    /// The cheaper way by the lower bounds (see the module doc); ties go per id,
    /// whose cost does not grow with the rest of the account.
    pub(super) fn way(&self, now: i64) -> Way {
        if self.per_id_requests() <= self.feed_requests(now) {
            Way::PerId
        } else {
            Way::Feed
        }
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
        if w.way(now) == Way::PerId {
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
        let mut entities = Vec::new();
        let mut types = Vec::new();
        for (entity, t) in [("lead", &lead_types), ("contact", &contact_types)] {
            if !t.is_empty() {
                entities.push(entity);
                types.extend(t.iter().copied());
            }
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
    fn few_leads_are_read_per_id_and_many_account_wide() {
        let types = vec!["custom_field_7_value_changed".to_string()];
        let ids: Vec<u64> = (1..=1_000).collect();
        let year_ago = 1_700_000_000;
        let now = year_ago + 365 * 86_400;
        let none: Vec<String> = Vec::new();
        let w = |n: usize, with_contacts: bool| Wanted {
            lead_types: &types,
            lead_ids: &ids[..n],
            contact_types: if with_contacts { &types } else { &none },
            contact_ids: &ids[..n],
            from: year_ago,
        };
        // A year is 13 windows of 30 days.
        assert_eq!(w(1, true).feed_requests(now), 13);
        // 60 leads and their 60 contacts: 12 requests per id, fewer than 13 windows.
        assert_eq!(w(60, true).per_id_requests(), 12);
        assert_eq!(w(60, true).way(now), Way::PerId);
        assert_eq!(w(70, true).way(now), Way::Feed);
        // No contact type asked: the contacts cost nothing per id.
        assert_eq!(w(130, false).per_id_requests(), 13);
        assert_eq!(w(130, false).way(now), Way::PerId);
        assert_eq!(w(1_000, true).way(now), Way::Feed);
    }
}

//! The events of a turn's leads in as few requests as the API allows.
//!
//! `GET /api/v4/events` filters by at most 10 entity ids per request (the documented
//! limit, which the sandbox enforces too), so reading the events of 250 leads per id
//! costs 25 requests even when they have none. A lead's events cannot be older than the
//! lead, so the events of leads created in the last minutes are all in the account's
//! event feed since the oldest of them: for a burst of new leads that feed is nearly
//! empty, one request for the whole turn. The feed is read only while it is cheaper
//! than the per-id lists ([`leadscore_amocrm::client::Client::event_feed_within`] finds
//! out with at most two requests); older leads, and new ones in a busy account, are read
//! per id as before.

use std::collections::HashSet;

use chrono::Utc;
use leadscore_amocrm::client::MAX_EVENT_IDS;
use leadscore_amocrm::types::{Event, Lead as AmoLead};

use super::{to_crm, AmocrmCrm};
use crate::crm::CrmError;

/// A lead created this recently (seconds) has its events read from the feed: the first
/// read of a new lead and the read of our write's echo come within seconds of its
/// creation, while an older lead's stretch holds more of the account's traffic.
const NEW_LEAD_SECS: i64 = 15 * 60;

/// The feed is read from this long (seconds) before the oldest new lead's creation: an
/// event stamped in the same second, or by another of the account's servers a little
/// behind, is still inside.
const SLACK_SECS: i64 = 60;

/// A creation time this far (seconds) ahead of our clock is clock skew and still new; a
/// lead dated further ahead (an import setting `created_at`) is read per id, since its
/// events may be older than its date.
const SKEW_SECS: i64 = 300;

/// The leads whose events the feed can hold (created in `[now - NEW_LEAD_SECS, now +
/// SKEW_SECS]`) with the instant to read it from (never before `since`), and the others.
pub(super) fn split_new<'a>(
    leads: impl IntoIterator<Item = &'a AmoLead>,
    now: i64,
    since: i64,
) -> (Vec<u64>, i64, Vec<u64>) {
    let (mut new, mut old) = (Vec::new(), Vec::new());
    let mut from = i64::MAX;
    for l in leads {
        match l.created_at {
            Some(at) if at > 0 && at >= now - NEW_LEAD_SECS && at <= now + SKEW_SECS => {
                new.push(l.id);
                from = from.min(at - SLACK_SECS);
            }
            _ => old.push(l.id),
        }
    }
    (new, from.max(since), old)
}

impl AmocrmCrm {
    /// The events of `types` of `leads` since `since` (Unix seconds): new leads from the
    /// account's feed when that is cheaper than 10 ids per request, the rest per id.
    pub(super) async fn lead_events_of(
        &self,
        leads: &[&AmoLead],
        types: &[&str],
        since: i64,
    ) -> Result<Vec<Event>, CrmError> {
        let (new, from, mut per_id) =
            split_new(leads.iter().copied(), Utc::now().timestamp(), since);
        let mut events = Vec::new();
        let per_id_cost = new.len().div_ceil(MAX_EVENT_IDS);
        let feed = if per_id_cost >= 2 {
            self.client
                .event_feed_within((&["lead"], types), from, per_id_cost)
                .await
                .map_err(to_crm)?
        } else {
            None
        };
        match feed {
            Some(feed) => events.extend(of_leads(feed, &new, types)),
            None => per_id.extend(new),
        }
        if !per_id.is_empty() {
            events.extend(
                self.client
                    .lead_events(&per_id, types, Some(since))
                    .await
                    .map_err(to_crm)?,
            );
        }
        Ok(events)
    }
}

/// The events of the feed that belong to `leads` and are of `types` (the feed holds the
/// whole account's).
fn of_leads(feed: Vec<Event>, leads: &[u64], types: &[&str]) -> Vec<Event> {
    let wanted: HashSet<u64> = leads.iter().copied().collect();
    feed.into_iter()
        .filter(|e| e.entity_type.as_deref() == Some("lead"))
        .filter(|e| e.entity_id.is_some_and(|id| wanted.contains(&id)))
        .filter(|e| types.is_empty() || types.contains(&e.kind.as_str()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lead(id: u64, created_at: Option<i64>) -> AmoLead {
        serde_json::from_value(serde_json::json!({"id": id, "created_at": created_at})).unwrap()
    }

    #[test]
    fn only_leads_created_in_the_last_minutes_are_read_from_the_feed() {
        let now = 1_800_000_000;
        let leads = [
            lead(1, Some(now - 5)),
            lead(2, Some(now - NEW_LEAD_SECS)),
            lead(3, Some(now - NEW_LEAD_SECS - 1)),
            lead(4, None),
            lead(5, Some(now + 60)),
            lead(6, Some(now + SKEW_SECS + 1)),
        ];
        let (new, from, old) = split_new(&leads, now, 0);
        assert_eq!(new, vec![1, 2, 5]);
        assert_eq!(old, vec![3, 4, 6]);
        assert_eq!(from, now - NEW_LEAD_SECS - SLACK_SECS);
        // Never before the event window's start.
        let (_, from, _) = split_new(&leads, now, now - 10);
        assert_eq!(from, now - 10);
    }

    #[test]
    fn the_feed_keeps_only_the_events_of_the_leads_asked_for() {
        let ev = |id: &str, kind: &str, entity: &str, of: u64| -> Event {
            serde_json::from_value(serde_json::json!({
                "id": id, "type": kind, "entity_type": entity, "entity_id": of
            }))
            .unwrap()
        };
        let feed = vec![
            ev("a", "incoming_call", "lead", 1),
            ev("b", "incoming_call", "lead", 9),
            ev("c", "incoming_call", "contact", 1),
            ev("d", "lead_added", "lead", 1),
        ];
        let kept: Vec<String> = of_leads(feed, &[1, 2], &["incoming_call"])
            .into_iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(kept, vec!["a"]);
    }
}

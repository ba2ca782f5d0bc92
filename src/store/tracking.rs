//! Website tracking in the store: events by visitor, the identity a trusted channel
//! gave a visitor, the reverse index lead → visitors, and the signatures already used
//! (so a captured identify call cannot be replayed). No IP address is ever stored.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::{dec, enc, lead_key, Store, StoreError};
use crate::crm::LeadId;

/// One tracked event, as kept (kind names are the engine's: `page_view`, `download`,
/// `form`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackedEvent {
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    pub at: DateTime<Utc>,
}

/// Who a visitor turned out to be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Identity {
    pub(super) lead: LeadId,
    at: DateTime<Utc>,
    /// The keyed hash (hex) of the e-mail or phone that identified the visitor, so an
    /// erasure of the visitor also drops its entry in the contact index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) via: Option<String>,
}

/// The trees, opened with the store.
pub(super) struct TrackingTrees {
    /// `portal \0 visitor \0 at(ms, be) id(be)` → event.
    events: sled::Tree,
    /// `portal \0 visitor` → identity.
    identity: sled::Tree,
    /// `portal \0 lead \0 visitor` → ().
    by_lead: sled::Tree,
    /// signature → when it was used (Unix seconds, be).
    nonces: sled::Tree,
    /// `portal \0 hash(32)` → the lead an e-mail or phone resolved to (a cache).
    pub(super) contacts: sled::Tree,
    /// `portal \0 hash(32) visitor` → (): the visitors an e-mail or phone identified.
    pub(super) by_contact: sled::Tree,
    /// This data dir's key for the contact hashes (random, made once).
    pub(super) salt: [u8; 32],
}

impl TrackingTrees {
    pub(super) fn open(db: &sled::Db) -> Result<Self, StoreError> {
        Ok(TrackingTrees {
            events: db.open_tree("track_events")?,
            identity: db.open_tree("track_identity")?,
            by_lead: db.open_tree("track_by_lead")?,
            nonces: db.open_tree("track_nonces")?,
            contacts: db.open_tree("track_contacts")?,
            by_contact: db.open_tree("track_by_contact")?,
            salt: super::tracking_contacts::salt(db)?,
        })
    }
}

fn visitor_prefix(portal: &str, visitor: &str) -> Vec<u8> {
    let mut k = lead_key(portal, visitor);
    k.push(0);
    k
}

/// What a forget erased.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Forgotten {
    pub events: usize,
    pub identified_as: Option<LeadId>,
}

impl Store {
    /// Keep a visitor's events (durable after [`Store::flush`]); the lead they count
    /// for when the visitor is identified, else `None`.
    pub fn track(
        &self,
        portal: &str,
        visitor: &str,
        events: &[TrackedEvent],
    ) -> Result<Option<LeadId>, StoreError> {
        let prefix = visitor_prefix(portal, visitor);
        let mut batch = sled::Batch::default();
        for e in events {
            let mut k = prefix.clone();
            k.extend_from_slice(&(e.at.timestamp_millis().max(0) as u64).to_be_bytes());
            k.extend_from_slice(&self.db.generate_id()?.to_be_bytes());
            batch.insert(k, enc(e));
        }
        self.tracking.events.apply_batch(batch)?;
        self.visitor_lead(portal, visitor)
    }

    /// The lead a visitor was identified as.
    pub fn visitor_lead(&self, portal: &str, visitor: &str) -> Result<Option<LeadId>, StoreError> {
        Ok(self.identity(portal, visitor)?.map(|i| i.lead))
    }

    fn identity(&self, portal: &str, visitor: &str) -> Result<Option<Identity>, StoreError> {
        match self.tracking.identity.get(lead_key(portal, visitor))? {
            Some(v) => Ok(Some(dec::<Identity>("track_identity", &v)?)),
            None => Ok(None),
        }
    }

    /// Drop the index entries of a visitor's identity (lead → visitor, contact →
    /// visitor), leaving the identity itself.
    fn unlink_identity(
        &self,
        portal: &str,
        visitor: &str,
        identity: &Identity,
    ) -> Result<(), StoreError> {
        let mut k = visitor_prefix(portal, &identity.lead);
        k.extend_from_slice(visitor.as_bytes());
        self.tracking.by_lead.remove(k)?;
        if let Some(via) = &identity.via {
            self.unindex_contact(portal, via, visitor)?;
        }
        Ok(())
    }

    /// Attach a visitor to a lead (a later identification moves it); returns how many
    /// of its events now count for the lead.
    pub fn identify_visitor(
        &self,
        portal: &str,
        visitor: &str,
        lead: &str,
        now: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        self.identify_visitor_via(portal, visitor, lead, None, now)
    }

    /// [`Store::identify_visitor`], recording the contact hash (hex) that identified
    /// the visitor, if any; the visitor's earlier index entries are dropped.
    pub(super) fn identify_visitor_via(
        &self,
        portal: &str,
        visitor: &str,
        lead: &str,
        via: Option<String>,
        now: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        if let Some(old) = self.identity(portal, visitor)? {
            self.unlink_identity(portal, visitor, &old)?;
        }
        let identity = Identity {
            lead: lead.to_string(),
            at: now,
            via,
        };
        self.tracking
            .identity
            .insert(lead_key(portal, visitor), enc(&identity))?;
        let mut k = visitor_prefix(portal, lead);
        k.extend_from_slice(visitor.as_bytes());
        self.tracking.by_lead.insert(k, &[])?;
        Ok(self
            .tracking
            .events
            .scan_prefix(visitor_prefix(portal, visitor))
            .keys()
            .count())
    }

    /// Every tracked event of the lead's identified visitors, oldest first.
    pub fn tracked_for_lead(
        &self,
        portal: &str,
        lead: &str,
    ) -> Result<Vec<TrackedEvent>, StoreError> {
        let prefix = visitor_prefix(portal, lead);
        let mut out = Vec::new();
        for k in self.tracking.by_lead.scan_prefix(&prefix).keys() {
            let k = k?;
            let visitor = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            for v in self
                .tracking
                .events
                .scan_prefix(visitor_prefix(portal, &visitor))
                .values()
            {
                out.push(dec::<TrackedEvent>("track_events", &v?)?);
            }
        }
        out.sort_by_key(|e| e.at);
        Ok(out)
    }

    /// Record a signature as used at `now`; `false` if it was used before (a replay).
    /// Signatures older than `keep` are dropped on the way (a replay that old fails
    /// the timestamp check anyway).
    pub fn use_signature(
        &self,
        signature: &[u8],
        now: DateTime<Utc>,
        keep: Duration,
    ) -> Result<bool, StoreError> {
        let at = now.timestamp().max(0) as u64;
        let fresh = self
            .tracking
            .nonces
            .compare_and_swap(
                signature,
                None as Option<&[u8]>,
                Some(&at.to_be_bytes()[..]),
            )?
            .is_ok();
        let cutoff = (now - keep).timestamp().max(0) as u64;
        for item in self.tracking.nonces.iter().take(64) {
            let (k, v) = item?;
            let used = v.as_ref().try_into().map(u64::from_be_bytes).unwrap_or(0);
            if used < cutoff {
                self.tracking.nonces.remove(k)?;
            }
        }
        Ok(fresh)
    }

    /// Forget that a signature was used: its call was answered "retry later" and did
    /// nothing, so the same signed call may come again.
    pub fn release_signature(&self, signature: &[u8]) -> Result<(), StoreError> {
        self.tracking.nonces.remove(signature)?;
        Ok(())
    }

    /// Drop the events of visitors never identified that are older than `cutoff`;
    /// how many were dropped.
    pub fn expire_anonymous(
        &self,
        portal: &str,
        cutoff: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        let mut prefix = portal.as_bytes().to_vec();
        prefix.push(0);
        let mut dropped = 0;
        for item in self.tracking.events.scan_prefix(&prefix) {
            let (k, v) = item?;
            let rest = &k[prefix.len()..];
            let Some(end) = rest.iter().position(|b| *b == 0) else {
                continue;
            };
            let visitor = String::from_utf8_lossy(&rest[..end]);
            if self.visitor_lead(portal, &visitor)?.is_some() {
                continue;
            }
            if dec::<TrackedEvent>("track_events", &v)?.at < cutoff {
                self.tracking.events.remove(k)?;
                dropped += 1;
            }
        }
        Ok(dropped)
    }

    /// Erase everything tracked about a visitor (events, identity, index entry).
    pub fn forget_visitor(&self, portal: &str, visitor: &str) -> Result<Forgotten, StoreError> {
        let mut gone = Forgotten::default();
        for k in self
            .tracking
            .events
            .scan_prefix(visitor_prefix(portal, visitor))
            .keys()
        {
            self.tracking.events.remove(k?)?;
            gone.events += 1;
        }
        if let Some(identity) = self.identity(portal, visitor)? {
            self.unlink_identity(portal, visitor, &identity)?;
            self.tracking.identity.remove(lead_key(portal, visitor))?;
            gone.identified_as = Some(identity.lead);
        }
        Ok(gone)
    }

    /// The visitors identified as a lead (for `forget --lead`-style erasure).
    pub fn visitors_of_lead(&self, portal: &str, lead: &str) -> Result<Vec<String>, StoreError> {
        let prefix = visitor_prefix(portal, lead);
        self.tracking
            .by_lead
            .scan_prefix(&prefix)
            .keys()
            .map(|k| Ok(String::from_utf8_lossy(&k?[prefix.len()..]).into_owned()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: &str, url: &str, mins_ago: i64, now: DateTime<Utc>) -> TrackedEvent {
        TrackedEvent {
            kind: kind.into(),
            url: Some(url.into()),
            title: None,
            at: now - Duration::minutes(mins_ago),
        }
    }

    #[test]
    fn events_count_for_a_lead_only_once_its_visitor_is_identified() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let now = Utc::now();
        let anon = store
            .track(
                "p",
                "visitor-1",
                &[ev("page_view", "https://x.ru/pricing", 5, now)],
            )
            .unwrap();
        assert_eq!(anon, None);
        assert!(store.tracked_for_lead("p", "42").unwrap().is_empty());
        assert_eq!(
            store.identify_visitor("p", "visitor-1", "42", now).unwrap(),
            1
        );
        let later = store
            .track(
                "p",
                "visitor-1",
                &[ev("download", "https://x.ru/price.pdf", 1, now)],
            )
            .unwrap();
        assert_eq!(later.as_deref(), Some("42"));
        let got = store.tracked_for_lead("p", "42").unwrap();
        assert_eq!(
            got.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
            ["page_view", "download"]
        );
        // Another portal's lead 42 sees nothing.
        assert!(store.tracked_for_lead("q", "42").unwrap().is_empty());
        // Re-identified as another lead: the events move.
        store.identify_visitor("p", "visitor-1", "43", now).unwrap();
        assert!(store.tracked_for_lead("p", "42").unwrap().is_empty());
        assert_eq!(store.tracked_for_lead("p", "43").unwrap().len(), 2);
    }

    #[test]
    fn a_signature_is_accepted_once_and_old_ones_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let now = Utc::now();
        let keep = Duration::minutes(10);
        assert!(store.use_signature(b"sig-a", now, keep).unwrap());
        assert!(!store.use_signature(b"sig-a", now, keep).unwrap());
        // An hour later, sig-a is pruned while checking another one.
        let later = now + Duration::hours(1);
        assert!(store.use_signature(b"sig-b", later, keep).unwrap());
        assert!(store.use_signature(b"sig-a", later, keep).unwrap());
    }

    #[test]
    fn anonymous_events_expire_and_forget_erases_a_visitor() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let now = Utc::now();
        let old = now - Duration::days(40);
        store
            .track(
                "p",
                "anon-visitor",
                &[ev("page_view", "https://x.ru/a", 0, old)],
            )
            .unwrap();
        store
            .track(
                "p",
                "known-visitor",
                &[ev("page_view", "https://x.ru/b", 0, old)],
            )
            .unwrap();
        store
            .identify_visitor("p", "known-visitor", "7", now)
            .unwrap();
        let dropped = store
            .expire_anonymous("p", now - Duration::days(30))
            .unwrap();
        assert_eq!(dropped, 1, "only the anonymous visitor's old event");
        assert_eq!(store.tracked_for_lead("p", "7").unwrap().len(), 1);
        let gone = store.forget_visitor("p", "known-visitor").unwrap();
        assert_eq!(gone.events, 1);
        assert_eq!(gone.identified_as.as_deref(), Some("7"));
        assert!(store.tracked_for_lead("p", "7").unwrap().is_empty());
        assert_eq!(store.visitor_lead("p", "known-visitor").unwrap(), None);
    }
}

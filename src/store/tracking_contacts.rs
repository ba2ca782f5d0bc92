//! The e-mail / phone side of website tracking: which lead an e-mail or phone resolved
//! to in the CRM (a cache that expires), and which visitors it identified (for an
//! erasure by e-mail or phone).
//!
//! The e-mail or phone itself is never stored: every key holds HMAC-SHA256 of
//! `"<kind>:<normalised value>"` under a random key made once per data dir, so the
//! files name no person (152-FZ, GDPR) while the same person still finds the same
//! entry. The key lives in the data dir's meta tree: whoever holds a copy of the whole
//! data dir can test guesses, so a backup is still pseudonymous personal data.

use chrono::{DateTime, Duration, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::{dec, enc, Store, StoreError};
use crate::crm::LeadId;
use crate::tracking::contact::ContactPoint;

/// Meta key of the data dir's contact-hash key (hex).
const SALT_KEY: &[u8] = b"tracking_contact_salt";

/// The data dir's contact-hash key, made (randomly) the first time the store opens.
pub(super) fn salt(db: &sled::Db) -> Result<[u8; 32], StoreError> {
    let meta = db.open_tree("meta")?;
    let fresh = hex(&rand::random::<[u8; 32]>());
    // Two openers racing both keep whichever key was stored first.
    let _ = meta.compare_and_swap(SALT_KEY, None as Option<&[u8]>, Some(fresh.as_bytes()))?;
    let stored = meta.get(SALT_KEY)?.unwrap_or_default();
    let mut out = [0u8; 32];
    let text = std::str::from_utf8(&stored).unwrap_or("");
    for (i, b) in out.iter_mut().enumerate() {
        *b = text
            .get(2 * i..2 * i + 2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .ok_or_else(|| StoreError::Corrupt {
                tree: "meta",
                source: <serde_json::Error as serde::de::Error>::custom("contact salt"),
            })?;
    }
    Ok(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A cached resolution.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Resolution {
    lead: LeadId,
    at: DateTime<Utc>,
}

/// What an erasure by e-mail or phone found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContactTraces {
    /// The visitors it identified (their data is erased by the caller).
    pub visitors: Vec<String>,
    /// Cached resolutions dropped (0 or 1).
    pub resolutions: usize,
}

impl Store {
    /// The keyed hash of a contact point (32 bytes).
    fn contact_hash(&self, point: &ContactPoint) -> [u8; 32] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.tracking.salt)
            .expect("HMAC takes keys of any length");
        mac.update(point.kind().as_bytes());
        mac.update(b":");
        mac.update(point.value().as_bytes());
        mac.finalize().into_bytes().into()
    }

    fn contact_key(&self, portal: &str, point: &ContactPoint) -> Vec<u8> {
        contact_key_of(portal, &self.contact_hash(point))
    }

    /// The lead `point` resolved to within `ttl`; an older entry is dropped.
    pub fn cached_contact(
        &self,
        portal: &str,
        point: &ContactPoint,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<Option<LeadId>, StoreError> {
        let key = self.contact_key(portal, point);
        let Some(v) = self.tracking.contacts.get(&key)? else {
            return Ok(None);
        };
        let r: Resolution = dec("track_contacts", &v)?;
        if r.at + ttl <= now {
            self.tracking.contacts.remove(key)?;
            return Ok(None);
        }
        Ok(Some(r.lead))
    }

    /// Remember that `point` resolved to `lead` at `now`.
    pub fn cache_contact(
        &self,
        portal: &str,
        point: &ContactPoint,
        lead: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let r = Resolution {
            lead: lead.to_string(),
            at: now,
        };
        self.tracking
            .contacts
            .insert(self.contact_key(portal, point), enc(&r))?;
        Ok(())
    }

    /// Attach a visitor to the lead `point` resolved to, remembering `point` (hashed) so
    /// an erasure by it finds the visitor; how many of its events now count.
    pub fn identify_visitor_by_contact(
        &self,
        portal: &str,
        visitor: &str,
        lead: &str,
        point: &ContactPoint,
        now: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        let hash = self.contact_hash(point);
        // After the identity: replacing an earlier one drops its index entries, which
        // may be this very entry (the same person identified again).
        let attached = self.identify_visitor_via(portal, visitor, lead, Some(hex(&hash)), now)?;
        let mut k = contact_key_of(portal, &hash);
        k.extend_from_slice(visitor.as_bytes());
        self.tracking.by_contact.insert(k, &[])?;
        Ok(attached)
    }

    /// Drop one visitor's entry under a contact hash (hex, as kept in its identity).
    pub(super) fn unindex_contact(
        &self,
        portal: &str,
        via: &str,
        visitor: &str,
    ) -> Result<(), StoreError> {
        let Some(hash) = unhex32(via) else {
            return Ok(());
        };
        let mut k = contact_key_of(portal, &hash);
        k.extend_from_slice(visitor.as_bytes());
        self.tracking.by_contact.remove(k)?;
        Ok(())
    }

    /// Drop the cached resolution of `point` and list the visitors it identified (the
    /// caller erases them, which drops their index entries).
    pub fn forget_contact(
        &self,
        portal: &str,
        point: &ContactPoint,
    ) -> Result<ContactTraces, StoreError> {
        let key = self.contact_key(portal, point);
        let mut out = ContactTraces {
            resolutions: usize::from(self.tracking.contacts.remove(&key)?.is_some()),
            ..ContactTraces::default()
        };
        for k in self.tracking.by_contact.scan_prefix(&key).keys() {
            let k = k?;
            out.visitors
                .push(String::from_utf8_lossy(&k[key.len()..]).into_owned());
        }
        Ok(out)
    }

    /// Drop every cached resolution to `lead` (an erasure of the lead's tracking data);
    /// how many.
    pub fn forget_lead_contacts(&self, portal: &str, lead: &str) -> Result<usize, StoreError> {
        self.drop_contacts(portal, |r| r.lead == lead)
    }

    /// Drop cached resolutions made before `cutoff`; how many.
    pub fn expire_contacts(
        &self,
        portal: &str,
        cutoff: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        self.drop_contacts(portal, |r| r.at < cutoff)
    }

    fn drop_contacts(
        &self,
        portal: &str,
        drop: impl Fn(&Resolution) -> bool,
    ) -> Result<usize, StoreError> {
        let mut prefix = portal.as_bytes().to_vec();
        prefix.push(0);
        let mut n = 0;
        for item in self.tracking.contacts.scan_prefix(&prefix) {
            let (k, v) = item?;
            if drop(&dec::<Resolution>("track_contacts", &v)?) {
                self.tracking.contacts.remove(k)?;
                n += 1;
            }
        }
        Ok(n)
    }
}

fn contact_key_of(portal: &str, hash: &[u8; 32]) -> Vec<u8> {
    let mut k = Vec::with_capacity(portal.len() + 33);
    k.extend_from_slice(portal.as_bytes());
    k.push(0);
    k.extend_from_slice(hash);
    k
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if s.len() != 64 {
        return None;
    }
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn email(s: &str) -> ContactPoint {
        ContactPoint::email(s).unwrap()
    }

    #[test]
    fn a_resolution_is_cached_until_it_expires_and_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let now = Utc::now();
        let ttl = Duration::days(30);
        {
            let store = Store::open(dir.path()).unwrap();
            store
                .cache_contact("p", &email("Ivan@X.ru"), "42", now)
                .unwrap();
            assert_eq!(
                store
                    .cached_contact("p", &email(" ivan@x.ru"), ttl, now)
                    .unwrap()
                    .as_deref(),
                Some("42")
            );
            assert_eq!(
                store
                    .cached_contact("q", &email("ivan@x.ru"), ttl, now)
                    .unwrap(),
                None,
                "another portal"
            );
            store.flush_blocking().unwrap();
        }
        // Reopened: the same key, so the same entry.
        let store = Store::open(dir.path()).unwrap();
        let later = now + Duration::days(31);
        assert_eq!(
            store
                .cached_contact("p", &email("ivan@x.ru"), ttl, now)
                .unwrap()
                .as_deref(),
            Some("42")
        );
        assert_eq!(
            store
                .cached_contact("p", &email("ivan@x.ru"), ttl, later)
                .unwrap(),
            None
        );
        assert_eq!(
            store.expire_contacts("p", later).unwrap(),
            0,
            "already gone"
        );
    }

    #[test]
    fn forgetting_a_contact_finds_its_visitors_and_their_index_goes_with_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let now = Utc::now();
        let who = email("anna@corp.ru");
        store.cache_contact("p", &who, "7", now).unwrap();
        store
            .identify_visitor_by_contact("p", "visitor-a1", "7", &who, now)
            .unwrap();
        store
            .identify_visitor_by_contact("p", "visitor-b2", "7", &who, now)
            .unwrap();
        // The same person identified again by the same e-mail stays findable by it.
        store
            .identify_visitor_by_contact("p", "visitor-a1", "7", &who, now)
            .unwrap();
        // One of them is erased on its own first: it leaves the index.
        store.forget_visitor("p", "visitor-b2").unwrap();
        let traces = store.forget_contact("p", &who).unwrap();
        assert_eq!(traces.visitors, ["visitor-a1"]);
        assert_eq!(traces.resolutions, 1);
        store.forget_visitor("p", "visitor-a1").unwrap();
        assert_eq!(
            store.forget_contact("p", &who).unwrap(),
            ContactTraces::default()
        );
        // A resolution to a lead goes with an erasure of the lead.
        store.cache_contact("p", &who, "7", now).unwrap();
        assert_eq!(store.forget_lead_contacts("p", "8").unwrap(), 0);
        assert_eq!(store.forget_lead_contacts("p", "7").unwrap(), 1);
    }
}

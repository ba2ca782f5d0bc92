//! The stored inputs of each lead (what the engine last scored) and the decay timers
//! that say when its score next changes with time alone.

use chrono::{DateTime, Utc};

use super::snapshot_codec;
use super::{lead_key, InputSnapshot, Store, StoreError};
use crate::crm::LeadId;

impl Store {
    /// Leads of a portal we wrote a score to (keys only: a rescore over 100,000 leads
    /// need not decode every record).
    pub fn written_ids(&self, portal: &str) -> Result<Vec<LeadId>, StoreError> {
        let mut prefix = portal.as_bytes().to_vec();
        prefix.push(0);
        self.written
            .scan_prefix(&prefix)
            .keys()
            .map(|k| Ok(String::from_utf8_lossy(&k?[prefix.len()..]).into_owned()))
            .collect()
    }

    /// Leads of a portal with stored inputs.
    pub fn snapshot_ids(&self, portal: &str) -> Result<Vec<LeadId>, StoreError> {
        let mut prefix = portal.as_bytes().to_vec();
        prefix.push(0);
        self.snapshot
            .scan_prefix(&prefix)
            .keys()
            .map(|k| Ok(String::from_utf8_lossy(&k?[prefix.len()..]).into_owned()))
            .collect()
    }

    /// The inputs last scored for a lead.
    pub fn snapshot(&self, portal: &str, lead: &str) -> Result<Option<InputSnapshot>, StoreError> {
        match self.snapshot.get(lead_key(portal, lead))? {
            Some(v) => snapshot_codec::decode(&v).map(Some),
            None => Ok(None),
        }
    }

    /// Keep the inputs just scored (made durable by the batch's flush).
    pub fn put_snapshot(
        &self,
        portal: &str,
        lead: &str,
        snap: &InputSnapshot,
    ) -> Result<(), StoreError> {
        self.snapshot
            .insert(lead_key(portal, lead), snapshot_codec::encode(snap))?;
        self.index_deal_value(portal, &snap.lead)
    }

    /// Forget a deleted lead's inputs (and its decay timer).
    pub fn remove_snapshot(&self, portal: &str, lead: &str) -> Result<(), StoreError> {
        self.snapshot.remove(lead_key(portal, lead))?;
        self.unindex_deal_value(portal, lead)?;
        self.set_timer(portal, lead, None)
    }

    /// When the lead's score next changes with time alone (`None`: never): replaces
    /// its previous timer.
    pub fn set_timer(
        &self,
        portal: &str,
        lead: &str,
        at: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        self.set_timers(portal, [(lead, at)])
    }

    /// [`Store::set_timer`] for many leads of a portal at once (the last entry of a lead
    /// wins): one sled batch per tree instead of up to three writes per lead, which was
    /// a quarter of a decay pass.
    pub fn set_timers<'a>(
        &self,
        portal: &str,
        timers: impl IntoIterator<Item = (&'a str, Option<DateTime<Utc>>)>,
    ) -> Result<(), StoreError> {
        let wanted: std::collections::BTreeMap<Vec<u8>, Option<DateTime<Utc>>> = timers
            .into_iter()
            .map(|(lead, at)| (lead_key(portal, lead), at))
            .collect();
        let mut by_time = sled::Batch::default();
        let mut by_lead = sled::Batch::default();
        for (lkey, at) in wanted {
            let new = at.map(|t| timer_key(t, &lkey));
            if let Some(old) = self.timer_of.get(&lkey)? {
                if new.as_deref() == Some(&old[..]) {
                    continue;
                }
                by_time.remove(old);
            }
            match new {
                Some(k) => {
                    by_time.insert(k.as_slice(), &[]);
                    by_lead.insert(lkey, k);
                }
                None => by_lead.remove(lkey),
            }
        }
        self.timers.apply_batch(by_time)?;
        self.timer_of.apply_batch(by_lead)?;
        Ok(())
    }

    /// When the lead's timer is due, if it has one.
    pub fn timer_at(&self, portal: &str, lead: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(self
            .timer_of
            .get(lead_key(portal, lead))?
            .and_then(|k| parse_timer_key(&k))
            .map(|(_, _, at)| at))
    }

    /// Remove a timer that fired, unless the lead has been given a new one meanwhile.
    pub fn clear_timer(
        &self,
        portal: &str,
        lead: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.clear_timers([(portal, lead, at)])
    }

    /// [`Store::clear_timer`] for every timer a decay pass fired: one sled batch per
    /// tree.
    pub fn clear_timers<'a>(
        &self,
        fired: impl IntoIterator<Item = (&'a str, &'a str, DateTime<Utc>)>,
    ) -> Result<(), StoreError> {
        let mut by_time = sled::Batch::default();
        let mut by_lead = sled::Batch::default();
        for (portal, lead, at) in fired {
            let lkey = lead_key(portal, lead);
            let key = timer_key(at, &lkey);
            if self.timer_of.get(&lkey)?.as_deref() == Some(&key[..]) {
                by_lead.remove(lkey);
            }
            by_time.remove(key);
        }
        self.timer_of.apply_batch(by_lead)?;
        self.timers.apply_batch(by_time)?;
        Ok(())
    }

    /// Timers due at `now` or before, earliest first, at most `limit`:
    /// (portal, lead, due).
    pub fn due_timers(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<(String, LeadId, DateTime<Utc>)>, StoreError> {
        let end = timer_prefix(now + chrono::Duration::milliseconds(1));
        let mut out = Vec::new();
        for kv in self.timers.range(..end).take(limit) {
            let (k, _) = kv?;
            if let Some(t) = parse_timer_key(&k) {
                out.push(t);
            }
        }
        Ok(out)
    }

    /// When the earliest timer is due.
    pub fn next_timer(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(self
            .timers
            .first()?
            .and_then(|(k, _)| parse_timer_key(&k))
            .map(|(_, _, at)| at))
    }

    /// Timers set, for status and tests.
    pub fn timers_len(&self) -> usize {
        self.timers.len()
    }
}

/// The order-preserving prefix of a timer key: milliseconds since the epoch, shifted
/// so that big-endian bytes sort like the times.
fn timer_prefix(at: DateTime<Utc>) -> [u8; 8] {
    ((at.timestamp_millis() as i128 - i64::MIN as i128) as u64).to_be_bytes()
}

/// `time \0? portal \0 lead`: timers in due order.
fn timer_key(at: DateTime<Utc>, lead_key: &[u8]) -> Vec<u8> {
    let mut k = timer_prefix(at).to_vec();
    k.extend_from_slice(lead_key);
    k
}

fn parse_timer_key(k: &[u8]) -> Option<(String, LeadId, DateTime<Utc>)> {
    let (t, rest) = k.split_at_checked(8)?;
    let ms = (u64::from_be_bytes(t.try_into().ok()?) as i128 + i64::MIN as i128) as i64;
    let at = DateTime::from_timestamp_millis(ms)?;
    let sep = rest.iter().position(|b| *b == 0)?;
    let portal = String::from_utf8(rest[..sep].to_vec()).ok()?;
    let lead = String::from_utf8(rest[sep + 1..].to_vec()).ok()?;
    Some((portal, lead, at))
}

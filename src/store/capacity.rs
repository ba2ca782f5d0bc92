//! Per-rep daily capacity for call-now tasks: how many each rep got on a calendar day,
//! and which hot leads wait for a free slot.
//!
//! Trees (JSON values like the rest of the store):
//! - `capacity_used`: `portal \0 day \0 rep` → tasks given that day (day `YYYY-MM-DD`
//!   in the portal's time zone). Written before the intents' flush, so a counted slot is
//!   durable with the task's intent.
//! - `capacity_wait`: `portal \0 lead` → [`Waiting`]: a lead whose crossing found its
//!   rep's day full. Its crossing stays armed, so the call-now task is still created
//!   once, when a slot frees up.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::{dec, enc, lead_key, Store, StoreError};
use crate::crm::LeadId;

/// A hot lead waiting for its rep's next free slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiting {
    /// The rep whose day was full (`""`: the lead has no responsible user).
    pub rep: String,
    /// The score it waits with: higher scores go first.
    pub score: i32,
    /// The portal's calendar day it started waiting.
    pub since: NaiveDate,
    pub at: DateTime<Utc>,
}

/// The capacity trees.
pub(super) struct CapacityTrees {
    used: sled::Tree,
    wait: sled::Tree,
}

impl CapacityTrees {
    pub(super) fn open(db: &sled::Db) -> Result<CapacityTrees, StoreError> {
        Ok(CapacityTrees {
            used: db.open_tree("capacity_used")?,
            wait: db.open_tree("capacity_wait")?,
        })
    }
}

fn day_prefix(portal: &str, day: NaiveDate) -> Vec<u8> {
    let mut k = lead_key(portal, &day.format("%Y-%m-%d").to_string());
    k.push(0);
    k
}

impl Store {
    /// Call-now tasks `rep` got on `day`.
    pub fn capacity_used(
        &self,
        portal: &str,
        day: NaiveDate,
        rep: &str,
    ) -> Result<u32, StoreError> {
        let mut k = day_prefix(portal, day);
        k.extend_from_slice(rep.as_bytes());
        match self.capacity.used.get(k)? {
            Some(v) => dec("capacity_used", &v),
            None => Ok(0),
        }
    }

    /// Count one more task for `rep` on `day` (the caller flushes, with the intent).
    pub fn capacity_take(&self, portal: &str, day: NaiveDate, rep: &str) -> Result<(), StoreError> {
        let n = self.capacity_used(portal, day, rep)? + 1;
        let mut k = day_prefix(portal, day);
        k.extend_from_slice(rep.as_bytes());
        self.capacity.used.insert(k, enc(&n))?;
        Ok(())
    }

    /// Every rep's count on `day`, by rep.
    pub fn capacity_day(
        &self,
        portal: &str,
        day: NaiveDate,
    ) -> Result<Vec<(String, u32)>, StoreError> {
        let prefix = day_prefix(portal, day);
        let mut out = Vec::new();
        for kv in self.capacity.used.scan_prefix(&prefix) {
            let (k, v) = kv?;
            let rep = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            out.push((rep, dec("capacity_used", &v)?));
        }
        Ok(out)
    }

    /// Record (or refresh) a lead waiting for a slot.
    pub fn set_waiting(&self, portal: &str, lead: &str, w: &Waiting) -> Result<(), StoreError> {
        self.capacity.wait.insert(lead_key(portal, lead), enc(w))?;
        Ok(())
    }

    /// The lead waits no more (its task was created, or it is no longer hot).
    pub fn remove_waiting(&self, portal: &str, lead: &str) -> Result<(), StoreError> {
        self.capacity.wait.remove(lead_key(portal, lead))?;
        Ok(())
    }

    /// A lead's waiting record, if it waits.
    pub fn waiting(&self, portal: &str, lead: &str) -> Result<Option<Waiting>, StoreError> {
        self.capacity
            .wait
            .get(lead_key(portal, lead))?
            .map(|v| dec("capacity_wait", &v))
            .transpose()
    }

    /// Every waiting lead of a portal.
    pub fn waiting_all(&self, portal: &str) -> Result<Vec<(LeadId, Waiting)>, StoreError> {
        let mut prefix = portal.as_bytes().to_vec();
        prefix.push(0);
        let mut out = Vec::new();
        for kv in self.capacity.wait.scan_prefix(&prefix) {
            let (k, v) = kv?;
            let lead = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            out.push((lead, dec("capacity_wait", &v)?));
        }
        Ok(out)
    }
}

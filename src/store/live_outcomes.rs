//! Outcomes recorded live: when the daemon reads a lead that has just been won or lost
//! (a status-change webhook, the sweep), it keeps the close with the score and tier
//! the lead had at that moment (what the rep saw) and the shadow's verdict, so the
//! dashboard and later analyses need no full pull. One record per lead; a lead that
//! reopens and closes again replaces its record.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{dec, enc, LeadId, ShadowScore, Store, StoreError};
use crate::backtest::Outcome;

/// The sled tree (`<portal>\0<lead>` → [`LiveOutcome`]).
const TREE: &str = "live_outcomes";

/// One lead's close as the daemon saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveOutcome {
    pub outcome: Outcome,
    pub closed_at: DateTime<Utc>,
    /// When the lead was created (time to close), if the CRM said.
    pub created_at: Option<DateTime<Utc>>,
    /// The score and tier the lead had just before its close (the last one written;
    /// the one computed then when nothing was written before).
    pub score: i32,
    pub tier: String,
    /// The shadow model's verdict at that moment, when one was configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowScore>,
    /// When the daemon recorded it.
    pub recorded_at: DateTime<Utc>,
}

fn key(portal: &str, lead: &str) -> Vec<u8> {
    let mut k = portal.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(lead.as_bytes());
    k
}

impl Store {
    fn live_outcomes_tree(&self) -> Result<sled::Tree, StoreError> {
        Ok(self.db.open_tree(TREE)?)
    }

    /// The recorded close of a lead, if any.
    pub fn live_outcome(
        &self,
        portal: &str,
        lead: &str,
    ) -> Result<Option<LiveOutcome>, StoreError> {
        match self.live_outcomes_tree()?.get(key(portal, lead))? {
            Some(v) => Ok(Some(dec(TREE, &v)?)),
            None => Ok(None),
        }
    }

    /// Keep a lead's close (replacing an earlier close of the same lead).
    pub fn put_live_outcome(
        &self,
        portal: &str,
        lead: &str,
        o: &LiveOutcome,
    ) -> Result<(), StoreError> {
        self.live_outcomes_tree()?
            .insert(key(portal, lead), enc(o))?;
        Ok(())
    }

    /// Every recorded close of a portal, by lead id.
    pub fn live_outcomes(&self, portal: &str) -> Result<Vec<(LeadId, LiveOutcome)>, StoreError> {
        let mut prefix = portal.as_bytes().to_vec();
        prefix.push(0);
        self.live_outcomes_tree()?
            .scan_prefix(&prefix)
            .map(|kv| {
                let (k, v) = kv?;
                let lead = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
                Ok((lead, dec(TREE, &v)?))
            })
            .collect()
    }
}

//! Rule-trigger episodes: one task per episode of a rule that carries `task`.
//!
//! Tree `episode` (JSON values): `portal \0 key` → [`Episode`], where the key names the
//! rule and what the episode is of (one lead, or one company for a buying group). An
//! absent key is an idle rule. The intent, with its marker, is *claimed* by
//! compare-and-swap (two leads of one company scored at once cannot both start the
//! episode) and flushed before the CRM call, like a call-now crossing.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{dec, enc, lead_key, Store, StoreError};
use crate::crm::{LeadId, TaskRef};

/// The state of one episode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Episode {
    /// A task with this marker is about to be (or was) created on `lead`; recovery
    /// looks for the marker before creating another.
    Intent {
        marker: String,
        lead: LeadId,
        at: DateTime<Utc>,
    },
    /// The episode's task exists; the rule still holds.
    Fired {
        task: TaskRef,
        marker: String,
        lead: LeadId,
        at: DateTime<Utc>,
    },
}

impl Store {
    /// The episode under `key` (`None`: the rule does not hold, or holds unnoticed).
    pub fn episode(&self, portal: &str, key: &str) -> Result<Option<Episode>, StoreError> {
        match self.episodes.get(lead_key(portal, key))? {
            Some(v) => dec("episode", &v).map(Some),
            None => Ok(None),
        }
    }

    /// Start an episode with its intent, unless one exists: `false` when another
    /// worker got there first. The caller flushes before calling the CRM.
    pub fn episode_claim(
        &self,
        portal: &str,
        key: &str,
        intent: &Episode,
    ) -> Result<bool, StoreError> {
        let claimed = self.episodes.compare_and_swap(
            lead_key(portal, key),
            None as Option<&[u8]>,
            Some(enc(intent)),
        )?;
        Ok(claimed.is_ok())
    }

    /// Record an episode's state (the caller flushes).
    pub fn set_episode(&self, portal: &str, key: &str, e: &Episode) -> Result<(), StoreError> {
        self.episodes.insert(lead_key(portal, key), enc(e))?;
        Ok(())
    }

    /// End an episode: the rule stopped holding, the next time it holds is a new one.
    pub fn end_episode(&self, portal: &str, key: &str) -> Result<(), StoreError> {
        self.episodes.remove(lead_key(portal, key))?;
        Ok(())
    }
}

//! Purchase reminders' exactly-once state: per lead, the purchase cycle last reminded
//! of and how far its task got. The intent (with its marker) is flushed before the CRM
//! hears of the task, as for call-now crossings, so a crash never makes a second one.

use serde::{Deserialize, Serialize};

use super::{dec, enc, lead_key, per_lead, Store, StoreError};
use crate::crm::TaskRef;

/// Where one lead's reminder for one purchase cycle stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReminderState {
    /// The purchase the reminder is for, as a date (`2027-06-01`): one task per cycle.
    pub cycle: String,
    /// Unique text in the task, to find it after a crash.
    pub marker: String,
    /// `None`: intended, maybe created (look it up by the marker); `Some`: recorded.
    pub task: Option<TaskRef>,
}

impl Store {
    /// The lead's reminder state (`None`: never reminded).
    pub fn reminder(&self, portal: &str, lead: &str) -> Result<Option<ReminderState>, StoreError> {
        match self.reminders.get(lead_key(portal, lead))? {
            Some(v) => dec("reminders", &v).map(Some),
            None => Ok(None),
        }
    }

    /// Record the lead's reminder state (the caller flushes before acting on it).
    pub fn set_reminder(
        &self,
        portal: &str,
        lead: &str,
        state: &ReminderState,
    ) -> Result<(), StoreError> {
        self.reminders.insert(lead_key(portal, lead), enc(state))?;
        Ok(())
    }

    /// Every reminder state of a portal (status output, tests).
    pub fn reminders_all(&self, portal: &str) -> Result<Vec<(String, ReminderState)>, StoreError> {
        per_lead(&self.reminders, "reminders", portal)
    }
}

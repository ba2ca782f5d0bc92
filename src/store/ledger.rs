//! The ledger's entries: every score written to a CRM, with what the shadow model
//! said about the same inputs at the same instant.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::Cause;
use crate::scoring::Score;

/// One change of a lead's score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub at: DateTime<Utc>,
    pub score: i32,
    pub tier: String,
    /// The readable explanation as written to the CRM.
    pub explanation: String,
    /// The full rule-by-rule result, for backtests and audits.
    pub detail: Score,
    pub causes: Vec<Cause>,
    /// The shadow model's verdict on the same inputs (`server.shadow_model`); absent
    /// when none was configured, and in entries written before shadows existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowScore>,
}

/// What the shadow model would have shown. Kept only here: it is never written to a
/// CRM and never creates a task, so live and shadow can be compared on the same leads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShadowScore {
    pub score: i32,
    pub tier: String,
    /// Above the shadow model's own call-now threshold (`triggers.call_now_above`):
    /// a lead that gets here from below is a task the shadow would have sent.
    pub call_now: bool,
}

/// Call-now tasks a lead's ledger (oldest first) stands for: (live, shadow). Live: a
/// score going from `threshold` or less to above it; shadow: its `call_now` going from
/// false to true, over the entries that carry one. The dashboard and `backtest
/// --shadow` count with this one rule.
pub fn crossings<'a>(
    entries: impl IntoIterator<Item = &'a LedgerEntry>,
    threshold: i32,
) -> (usize, usize) {
    let (mut live, mut shadow) = (0, 0);
    let (mut live_above, mut shadow_above) = (false, false);
    for e in entries {
        let above = e.score > threshold;
        live += usize::from(above && !live_above);
        live_above = above;
        if let Some(s) = &e.shadow {
            shadow += usize::from(s.call_now && !shadow_above);
            shadow_above = s.call_now;
        }
    }
    (live, shadow)
}

//! Backtesting the scoring model on closed leads: would it have put our wins first?
//!
//! Pure over data: closed leads come in through an [`OutcomeSource`] (a CSV / JSON
//! Lines export today; CRM pulls later feed the same type), each is scored *as of* an
//! instant before its outcome with only the activities strictly before that instant
//! ([`asof`]), and [`analyze`] turns the scores and outcomes into a [`Report`]: AUC with
//! a DeLong interval, tiers, deciles, calibration, per-rule lift, mistakes, capacity,
//! and a paired comparison with a second model. [`tune`] suggests new points.

pub mod analyze;
pub mod asof;
pub mod auc;
pub mod calibration;
pub mod capacity;
pub mod crm_source;
pub mod generate;
pub mod history;
mod logistic;
pub mod report_html;
pub mod report_text;
pub mod shadow;
pub mod tables;
pub mod tune;

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::lead::{Activity, Lead};

pub use analyze::{analyze, Options, Report};
pub use asof::AsOf;
pub use calibration::Calibration;
pub use crm_source::{CrmSource, PullReport};

/// How a lead ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Won,
    Lost,
}

impl Outcome {
    /// `won` / `lost`, as the input files and reports write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Won => "won",
            Outcome::Lost => "lost",
        }
    }

    /// Reads `won`/`lost` (any case; `win`, `loss`, `1`, `0` too), as exports spell it.
    pub fn parse(s: &str) -> Option<Outcome> {
        match s.trim().to_ascii_lowercase().as_str() {
            "won" | "win" | "1" | "true" => Some(Outcome::Won),
            "lost" | "loss" | "0" | "false" => Some(Outcome::Lost),
            _ => None,
        }
    }
}

/// A lead whose outcome is known: the neutral [`Lead`] as it is *today*, its dated
/// activities, and how and when it closed. The one input of every analysis here, so a
/// file export and a CRM pull are analysed by the same code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClosedLead {
    /// Fit fields, today's values (exports and most CRMs keep no history of them; see
    /// `fit_history` for the ones that do).
    pub lead: Lead,
    /// Every known activity, any order (analyses sort them), including ones after the
    /// outcome: the as-of cut, not the source, keeps them out.
    #[serde(default)]
    pub activities: Vec<Activity>,
    pub created_at: DateTime<Utc>,
    pub closed_at: DateTime<Utc>,
    pub outcome: Outcome,
    /// Deal size (the won deal's amount; for a lost lead, the amount it was quoted).
    #[serde(default)]
    pub amount: Option<f64>,
    /// The rep responsible when it closed (defaults to the lead's `responsible_id`).
    #[serde(default)]
    pub rep_id: Option<String>,
    #[serde(default)]
    pub loss_reason: Option<String>,
    /// The pipeline stage it closed from, when the CRM says.
    #[serde(default)]
    pub stage: Option<String>,
    /// What the fit fields were before they last changed, when the source keeps their
    /// history (amoCRM's change events); `None`: only today's values are known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fit_history: Option<FitHistory>,
}

/// The fit fields' past, as a CRM's change log tells it: a score as of an instant
/// must not see a job title or a head count entered after it (leakage, like a late
/// activity).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FitHistory {
    /// Fit fields rebuilt from the change log (one that never changed keeps today's
    /// value, which was its value all along as far as the log knows).
    pub replayed: Vec<String>,
    /// Fit fields whose history the source does not give: today's values.
    pub today: Vec<String>,
    /// The lead as it was before each instant its replayed fields changed at, oldest
    /// first (one entry per instant, however many fields changed then).
    #[serde(default)]
    pub earlier: Vec<EarlierFit>,
}

/// The lead's fit fields as they stood just before `until`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EarlierFit {
    pub until: DateTime<Utc>,
    pub lead: Lead,
}

impl ClosedLead {
    /// The rep to count tasks against: `rep_id`, else the lead's responsible user.
    pub fn rep(&self) -> Option<&str> {
        self.rep_id
            .as_deref()
            .or(self.lead.responsible_id.as_deref())
    }

    /// The lead as known strictly before `at`: the fields as they were before the
    /// first change at or after `at` (a change at `at` itself is not known yet, as an
    /// activity at `at` is not), else today's.
    pub fn lead_at(&self, at: DateTime<Utc>) -> &Lead {
        self.fit_history
            .as_ref()
            .and_then(|h| h.earlier.iter().find(|e| e.until >= at))
            .map_or(&self.lead, |e| &e.lead)
    }

    /// Days from creation to close.
    pub fn days_to_close(&self) -> f64 {
        (self.closed_at - self.created_at).num_seconds() as f64 / 86_400.0
    }
}

/// Where closed leads come from. A file export implements it now ([`FileSource`]); a
/// CRM pull (Bitrix24 lead/deal semantics, amoCRM statuses 142/143) is meant to be
/// another implementation, so the analyses never learn where the data came from.
pub trait OutcomeSource {
    /// A short description for the report header (`examples/history/x.jsonl`).
    fn describe(&self) -> String;
    /// Every closed lead the source has.
    fn closed_leads(&self) -> anyhow::Result<Vec<ClosedLead>>;
}

/// A CSV or JSON Lines export (see `docs/backtest.md` for the columns); the format is
/// chosen by the extension (`.csv`, else JSON Lines).
#[derive(Debug, Clone)]
pub struct FileSource {
    pub path: PathBuf,
    /// For CSV: the activities export (one row per activity, keyed by `lead_id`).
    pub activities: Option<PathBuf>,
}

impl OutcomeSource for FileSource {
    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn closed_leads(&self) -> anyhow::Result<Vec<ClosedLead>> {
        history::read(&self.path, self.activities.as_deref())
    }
}

//! The CRM-neutral lead and activity model.
//!
//! The scoring engine sees only these types, so rules are written once and work the
//! same on Bitrix24 and amoCRM. Each CRM integration translates its own records into
//! them through the portal's field mapping.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A lead as the engine sees it. Every fit field is optional: a missing value is a
/// data gap to ask about, never evidence of a poor fit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Lead {
    /// The CRM's own id of the lead, as text (Bitrix24 and amoCRM both use integers).
    pub id: String,
    pub name: Option<String>,
    /// Job title, e.g. "Генеральный директор".
    pub position: Option<String>,
    pub emails: Vec<String>,
    pub phones: Vec<String>,
    pub company: Option<String>,
    pub industry: Option<String>,
    /// Annual revenue in the portal's currency; rules score *ranges*, not "bigger is better".
    pub revenue: Option<f64>,
    /// Headcount.
    pub employees: Option<f64>,
    pub region: Option<String>,
    pub source: Option<String>,
    pub status: Option<String>,
    /// The CRM user responsible for the lead: the rep who gets the "call now" task.
    pub responsible_id: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    /// Portal-specific fields by the neutral name the mapping gives them
    /// (rules refer to them as `custom.<name>`).
    pub custom: BTreeMap<String, String>,
    /// The deal's amount (Bitrix24 deal `OPPORTUNITY`, amoCRM lead `price`): what the
    /// weighted pipeline value multiplies; `None` for Bitrix24 leads.
    pub amount: Option<f64>,
    /// The deal's pipeline (Bitrix24 `CATEGORY_ID`, amoCRM `pipeline_id`), so rules and
    /// stage coefficients can tell funnels apart.
    pub pipeline: Option<String>,
    /// The deal's stage (Bitrix24 `STAGE_ID`, amoCRM `status_id`).
    pub stage: Option<String>,
}

/// The field names rules may use, besides `custom.<name>`. Config validation rejects
/// any other name so a typo cannot silently turn a rule into a permanent data gap.
pub const FIELD_NAMES: &[&str] = &[
    "name",
    "position",
    "email",
    "phone",
    "company",
    "industry",
    "revenue",
    "employees",
    "region",
    "source",
    "status",
    "responsible_id",
    "amount",
    "pipeline",
    "stage",
];

/// One value of a lead field, as a rule condition sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FieldValue<'a> {
    Text(&'a str),
    Number(f64),
}

impl fmt::Display for FieldValue<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldValue::Text(s) => f.write_str(s),
            FieldValue::Number(n) if n.fract() == 0.0 && n.abs() < 1e15 => {
                write!(f, "{}", *n as i64)
            }
            FieldValue::Number(n) => write!(f, "{n}"),
        }
    }
}

impl Lead {
    /// All values of a neutral field (`email` and `phone` may have several; empty strings
    /// count as absent). Unknown names yield nothing.
    pub fn values(&self, field: &str) -> Vec<FieldValue<'_>> {
        fn text(v: &Option<String>) -> Vec<FieldValue<'_>> {
            v.as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(FieldValue::Text)
                .into_iter()
                .collect()
        }
        fn num(v: Option<f64>) -> Vec<FieldValue<'static>> {
            v.filter(|n| n.is_finite())
                .map(FieldValue::Number)
                .into_iter()
                .collect()
        }
        match field {
            "name" => text(&self.name),
            "position" => text(&self.position),
            "email" => self
                .emails
                .iter()
                .map(|s| s.trim())
                .filter(|s| !s.is_empty())
                .map(FieldValue::Text)
                .collect(),
            "phone" => self
                .phones
                .iter()
                .map(|s| s.trim())
                .filter(|s| !s.is_empty())
                .map(FieldValue::Text)
                .collect(),
            "company" => text(&self.company),
            "industry" => text(&self.industry),
            "revenue" => num(self.revenue),
            "employees" => num(self.employees),
            "region" => text(&self.region),
            "source" => text(&self.source),
            "status" => text(&self.status),
            "responsible_id" => text(&self.responsible_id),
            "amount" => num(self.amount),
            "pipeline" => text(&self.pipeline),
            "stage" => text(&self.stage),
            other => match other.strip_prefix("custom.") {
                Some(name) => self
                    .custom
                    .get(name)
                    .map(|s| s.trim())
                    .filter(|s| !s.is_empty())
                    .map(FieldValue::Text)
                    .into_iter()
                    .collect(),
                None => Vec::new(),
            },
        }
    }
}

/// What kind of touch an activity was. Both CRMs' activity types map onto these.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActivityKind {
    Call,
    Email,
    EmailOpen,
    Meeting,
    Form,
    PageView,
    Download,
    DemoRequest,
    Task,
    Comment,
    /// Anything else, by a name the portal mapping gives it.
    #[serde(untagged)]
    Custom(String),
}

impl ActivityKind {
    /// The snake_case name used in config files and explanations.
    pub fn as_str(&self) -> &str {
        match self {
            ActivityKind::Call => "call",
            ActivityKind::Email => "email",
            ActivityKind::EmailOpen => "email_open",
            ActivityKind::Meeting => "meeting",
            ActivityKind::Form => "form",
            ActivityKind::PageView => "page_view",
            ActivityKind::Download => "download",
            ActivityKind::DemoRequest => "demo_request",
            ActivityKind::Task => "task",
            ActivityKind::Comment => "comment",
            ActivityKind::Custom(s) => s,
        }
    }

    /// Parse a config name; anything not built in is a custom kind.
    pub fn from_name(name: &str) -> ActivityKind {
        match name {
            "call" => ActivityKind::Call,
            "email" => ActivityKind::Email,
            "email_open" => ActivityKind::EmailOpen,
            "meeting" => ActivityKind::Meeting,
            "form" => ActivityKind::Form,
            "page_view" => ActivityKind::PageView,
            "download" => ActivityKind::Download,
            "demo_request" => ActivityKind::DemoRequest,
            "task" => ActivityKind::Task,
            "comment" => ActivityKind::Comment,
            other => ActivityKind::Custom(other.to_string()),
        }
    }
}

/// Who started the touch: an incoming call says more about intent than an outgoing one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Incoming,
    Outgoing,
}

/// One behavioural signal on a lead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Activity {
    /// The CRM's id of the activity (or event), kept for evidence and de-duplication.
    #[serde(default)]
    pub id: String,
    pub kind: ActivityKind,
    #[serde(default)]
    pub direction: Option<Direction>,
    /// Subject line, page title or file name.
    #[serde(default)]
    pub subject: Option<String>,
    /// Page or link URL for page views and downloads.
    #[serde(default)]
    pub url: Option<String>,
    pub at: DateTime<Utc>,
    /// The contact who did it, for "several people of one company" triggers.
    #[serde(default)]
    pub contact_id: Option<String>,
    /// The `[[portal.activity_map]]` entry (from 1) that gave the kind, so `explain`
    /// can say why an activity counts as what it counts as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mapped_by: Option<usize>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_skip_blank_and_unknown_fields() {
        let lead = Lead {
            position: Some("  ".into()),
            emails: vec!["a@b.ru".into(), "".into()],
            employees: Some(120.0),
            custom: [("budget".to_string(), "yes".to_string())].into(),
            ..Lead::default()
        };
        assert!(lead.values("position").is_empty());
        assert_eq!(lead.values("email"), vec![FieldValue::Text("a@b.ru")]);
        assert_eq!(lead.values("employees"), vec![FieldValue::Number(120.0)]);
        assert_eq!(lead.values("custom.budget"), vec![FieldValue::Text("yes")]);
        assert!(lead.values("custom.none").is_empty());
        assert!(lead.values("nonsense").is_empty());
    }

    #[test]
    fn activity_kinds_round_trip_through_names() {
        for name in ["call", "email_open", "demo_request", "webinar"] {
            assert_eq!(ActivityKind::from_name(name).as_str(), name);
        }
        let a: Activity =
            serde_json::from_str(r#"{"kind":"webinar","at":"2026-11-20T10:00:00Z"}"#).unwrap();
        assert_eq!(a.kind, ActivityKind::Custom("webinar".into()));
    }
}

//! Bitrix24 activities → neutral kinds.
//!
//! `TYPE_ID` 1 meeting, 2 call, 3 task, 4 e-mail (with `DIRECTION` 1 incoming / 2
//! outgoing), 5 (calendar import) meeting. `TYPE_ID` 6 is provider-managed and
//! classified by `PROVIDER_ID`: `CRM_WEBFORM` → form (a demo request when its subject
//! mentions "demo"/"демо"), `CRM_TODO` → task, `VOXIMPLANT_CALL`/`CALL` → call,
//! `CRM_EMAIL` → e-mail, `CRM_MEETING` → meeting, anything else → a custom kind named
//! after the provider (lower-case). Website behaviour that Bitrix24 has no activity
//! type for is recognised by a **subject tag** from the shared table
//! ([`crate::crm::tags`]): whatever puts it into the CRM (a site tracker calling
//! `crm.activity.add`, a form handler, a robot) starts the `SUBJECT` with e.g.
//! `[download] Price list 2026`, and may put the URL first in `DESCRIPTION`. Tags are
//! matched case-insensitively before the type rules and can be replaced with
//! [`super::Bitrix24Crm::with_classifier`]. `START_TIME` (else `CREATED`) is the time.

use leadscore_bitrix24::types::ActivityRecord;

use crate::crm::tags::{default_tags, first_url, split_tag};
use crate::lead::{Activity, ActivityKind, Direction};

/// Recognises website behaviour by a tag at the start of an activity's subject.
#[derive(Debug, Clone, PartialEq)]
pub struct ActivityClassifier {
    /// (tag, kind), matched case-insensitively as a prefix of `SUBJECT`.
    pub subject_tags: Vec<(String, ActivityKind)>,
}

impl Default for ActivityClassifier {
    /// The shared tag table of every CRM ([`crate::crm::tags::TAGS`]).
    fn default() -> Self {
        ActivityClassifier {
            subject_tags: default_tags(),
        }
    }
}

impl ActivityClassifier {
    /// Translate one Bitrix24 activity; `None` when it has no usable time.
    pub fn classify(&self, a: &ActivityRecord) -> Option<Activity> {
        let at = a.start_time.or(a.created)?;
        let subject = a.subject.clone().unwrap_or_default();
        let url = a.description.as_deref().and_then(first_url);
        let direction = match a.direction.as_deref() {
            Some("1") => Some(Direction::Incoming),
            Some("2") => Some(Direction::Outgoing),
            _ => None,
        };
        let (kind, subject) = match split_tag(&self.subject_tags, &subject) {
            Some((kind, rest)) => (kind, rest.to_string()),
            None => (type_kind(a, &subject.to_lowercase()), subject),
        };
        Some(Activity {
            id: a.id.clone(),
            kind,
            direction,
            subject: (!subject.is_empty()).then_some(subject),
            url,
            at,
            contact_id: None,
        })
    }
}

fn type_kind(a: &ActivityRecord, lower_subject: &str) -> ActivityKind {
    match a.type_id.as_deref() {
        Some("1") | Some("5") => ActivityKind::Meeting,
        Some("2") => ActivityKind::Call,
        Some("3") => ActivityKind::Task,
        Some("4") => ActivityKind::Email,
        _ => {
            let provider = a.provider_id.as_deref().unwrap_or("").to_ascii_uppercase();
            match provider.as_str() {
                "CRM_WEBFORM"
                    if lower_subject.contains("demo") || lower_subject.contains("демо") =>
                {
                    ActivityKind::DemoRequest
                }
                "CRM_WEBFORM" => ActivityKind::Form,
                "CRM_TODO" | "TASKS" | "TASKS_TASK" => ActivityKind::Task,
                "VOXIMPLANT_CALL" | "CALL" | "CRM_CALL_LIST" => ActivityKind::Call,
                "CRM_EMAIL" | "EMAIL" => ActivityKind::Email,
                "CRM_MEETING" | "MEETING" => ActivityKind::Meeting,
                "" => ActivityKind::Custom("activity".into()),
                other => ActivityKind::Custom(other.to_ascii_lowercase()),
            }
        }
    }
}

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
//! [`super::Bitrix24Crm::with_classifier`]. Before both, the portal's own
//! `[[portal.activity_map]]` entries ([`crate::crm::activity_map`]) may test
//! [`ACTIVITY_ATTRS`]. `START_TIME` (else `CREATED`) is the time.

use leadscore_bitrix24::types::ActivityRecord;

use crate::crm::activity_map::{ActivityAttr, ActivityMap};
use crate::crm::tags::{default_tags, first_url, split_tag};
use crate::lead::{Activity, ActivityKind, Direction};

/// What `[[portal.activity_map]]` entries of a Bitrix24 portal may test.
pub const ACTIVITY_ATTRS: &[ActivityAttr] = &[
    ActivityAttr {
        name: "type_id",
        pattern: false,
        about: "TYPE_ID: 1 meeting, 2 call, 3 task, 4 e-mail, 6 provider-managed",
    },
    ActivityAttr {
        name: "provider_id",
        pattern: false,
        about: "PROVIDER_ID, e.g. CRM_EMAIL, CRM_WEBFORM, REST_APP, VOXIMPLANT_CALL",
    },
    ActivityAttr {
        name: "provider_type_id",
        pattern: false,
        about: "PROVIDER_TYPE_ID, e.g. EMAIL, CALL, or a REST app's own type",
    },
    ActivityAttr {
        name: "direction",
        pattern: false,
        about: "DIRECTION: incoming or outgoing",
    },
    ActivityAttr {
        name: "subject",
        pattern: true,
        about: "SUBJECT (regular expression)",
    },
    ActivityAttr {
        name: "description",
        pattern: true,
        about: "DESCRIPTION (regular expression)",
    },
];

/// One `crm.activity.list` row as a fetch would classify it (for `explain`).
pub fn classify_row(
    fields: &crate::config::FieldsSection,
    row: &serde_json::Value,
) -> Result<Option<Activity>, String> {
    let rec: ActivityRecord = serde_json::from_value(row.clone())
        .map_err(|e| format!("not a crm.activity.list row: {e}"))?;
    Ok(ActivityClassifier::default().classify(&fields.activity_map, &rec))
}

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
    /// Translate one Bitrix24 activity: the portal's `map` first, then the tags, then
    /// the type rules; `None` when it has no usable time.
    pub fn classify(&self, map: &ActivityMap, a: &ActivityRecord) -> Option<Activity> {
        let at = a.start_time.or(a.created)?;
        let subject = a.subject.clone().unwrap_or_default();
        let mut url = a.description.as_deref().and_then(first_url);
        let direction = match a.direction.as_deref() {
            Some("1") => Some(Direction::Incoming),
            Some("2") => Some(Direction::Outgoing),
            _ => None,
        };
        let mapped = map.classify(|attr| match attr {
            "type_id" => a.type_id.as_deref(),
            "provider_id" => a.provider_id.as_deref(),
            "provider_type_id" => a.provider_type_id.as_deref(),
            "direction" => match direction {
                Some(Direction::Incoming) => Some("incoming"),
                Some(Direction::Outgoing) => Some("outgoing"),
                None => None,
            },
            "subject" => a.subject.as_deref(),
            "description" => a.description.as_deref(),
            _ => None,
        });
        let mut mapped_by = None;
        let (kind, subject) = if let Some(m) = mapped {
            mapped_by = Some(m.entry);
            url = m.url.or(url);
            (m.kind, m.subject.unwrap_or(subject))
        } else {
            match split_tag(&self.subject_tags, &subject) {
                Some((kind, rest)) => (kind, rest.to_string()),
                None => (type_kind(a, &subject.to_lowercase()), subject),
            }
        };
        Some(Activity {
            id: a.id.clone(),
            kind,
            direction,
            subject: (!subject.is_empty()).then_some(subject),
            url,
            at,
            contact_id: None,
            mapped_by,
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

//! Reading leads: the lead lists with their main contact and company, their events
//! (see `events`: the feed for new leads, else at most 10 leads per request) and the
//! common notes the events name.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, TimeZone, Utc};
use leadscore_amocrm::types::{
    field_by_code, field_by_id, texts, Company, Contact, CustomFieldValues, Event,
    Lead as AmoLead, Note,
};

use super::{parse_id, to_crm, AmocrmCrm, EVENT_TYPES, OWN_NOTE_PREFIX};
use crate::config::FieldsSection;
use crate::crm::mapping::apply_map;
use crate::crm::activity_map::{ActivityAttr, ActivityMap};
use crate::crm::tags::{default_tags, split_tag};
use crate::crm::{ActivityRead, Changed, CrmError, CrmStamp, FetchRequest, Fetched, LeadId};
use crate::lead::{Activity, ActivityKind, Direction, Lead};

impl AmocrmCrm {
    pub(super) fn lead_from(
        &self,
        fields: &FieldsSection,
        raw: &AmoLead,
        contact: Option<&Contact>,
        company: Option<&Company>,
    ) -> (Lead, Option<i32>) {
        let mut lead = Lead {
            id: raw.id.to_string(),
            name: raw.name.clone().filter(|s| !s.trim().is_empty()),
            status: raw.status_id.map(|s| s.to_string()),
            responsible_id: raw
                .responsible_user_id
                .filter(|u| *u != 0)
                .map(|u| u.to_string()),
            created_at: raw.created_at.and_then(unix),
            updated_at: raw.updated_at.and_then(unix),
            amount: raw.price.filter(|p| p.is_finite()),
            pipeline: raw.pipeline_id.map(|p| p.to_string()),
            stage: raw.status_id.map(|s| s.to_string()),
            ..Lead::default()
        };
        if let Some(c) = contact {
            lead.position = c.position();
            lead.emails = c.emails();
            lead.phones = c.phones();
        }
        lead.company = company
            .and_then(|c| c.name.clone())
            .filter(|s| !s.trim().is_empty());
        if let Some(price) = raw.price.filter(|p| *p > 0.0) {
            lead.custom.insert("price".into(), fmt_num(price));
        }
        let tags: Vec<&str> = raw.embedded.tags.iter().map(|t| t.name.as_str()).collect();
        if !tags.is_empty() {
            lead.custom.insert("tags".into(), tags.join(", "));
        }
        let sources: [&[CustomFieldValues]; 3] = [
            &raw.custom_fields_values,
            company
                .map(|c| c.custom_fields_values.as_slice())
                .unwrap_or(&[]),
            contact
                .map(|c| c.custom_fields_values.as_slice())
                .unwrap_or(&[]),
        ];
        apply_map(&mut lead, &fields.map, |field| {
            sources
                .iter()
                .find_map(|fs| {
                    let t = texts(Some(lookup_field(fs, field)?));
                    (!t.is_empty()).then_some(t)
                })
                .unwrap_or_default()
        });
        let current = fields
            .score
            .as_deref()
            .and_then(|f| f.trim().parse::<u64>().ok())
            .and_then(|id| {
                texts(field_by_id(&raw.custom_fields_values, id))
                    .into_iter()
                    .next()
            })
            .and_then(|t| t.replace(',', ".").parse::<f64>().ok())
            .map(|n| n.round() as i32);
        (lead, current)
    }

    /// Leads with their contact, company and recent activity (events and tagged notes).
    pub(super) async fn fetch_full(
        &self,
        fields: &FieldsSection,
        lead_ids: &[LeadId],
    ) -> Result<BTreeMap<LeadId, Fetched>, CrmError> {
        self.fetch_reads(fields, &FetchRequest::full(lead_ids)).await
    }

    /// Leads with their contact and company, and their activity unless the request
    /// says the snapshot's is current (`Skip`: an edit or our own write's echo, with
    /// activities read minutes ago; the pipeline completes them from the snapshot). A
    /// lead's events are otherwise read over the whole window: amoCRM has no cursor
    /// here, and a note's webhook marks its lead for a read.
    pub(super) async fn fetch_reads(
        &self,
        fields: &FieldsSection,
        requests: &[FetchRequest],
    ) -> Result<BTreeMap<LeadId, Fetched>, CrmError> {
        let ids: Vec<u64> = requests.iter().filter_map(|r| parse_id(&r.id)).collect();
        if ids.is_empty() {
            return Ok(BTreeMap::new());
        }
        let skip: BTreeSet<u64> = requests
            .iter()
            .filter(|r| r.activities == ActivityRead::Skip)
            .filter_map(|r| parse_id(&r.id))
            .collect();
        let leads = self.client.leads_by_ids(&ids).await.map_err(to_crm)?;
        let leads: Vec<AmoLead> = leads
            .into_iter()
            .filter(|l| l.is_deleted != Some(true))
            .collect();
        if leads.is_empty() {
            return Ok(BTreeMap::new());
        }
        let related = self.related(&leads).await?;
        let since = Utc::now().timestamp() - self.event_window.as_secs() as i64;
        let types = event_types(&fields.activity_map);
        let types: Vec<&str> = types.iter().map(String::as_str).collect();
        let read: Vec<&AmoLead> = leads.iter().filter(|l| !skip.contains(&l.id)).collect();
        let events = if read.is_empty() {
            Vec::new()
        } else {
            self.lead_events_of(&read, &types, since).await?
        };
        let mut by_lead = self.activities(&leads, &events, fields).await?;
        let mut out = BTreeMap::new();
        for raw in &leads {
            let (contact, company) = related.of(raw);
            let (lead, current_score) = self.lead_from(fields, raw, contact, company);
            let activities = by_lead.remove(&raw.id).unwrap_or_default();
            let mut f = Fetched::complete(lead, activities, current_score);
            f.activities_complete = !skip.contains(&raw.id);
            f.closed = super::outcomes::decide(&self.outcomes, raw)
                .map(|(outcome, at)| crate::crm::Closed { outcome, at });
            out.insert(f.lead.id.clone(), f);
        }
        Ok(out)
    }

    /// The main contacts of `leads` and their companies (the lead's, else its
    /// contact's): 250 per request each.
    pub(super) async fn related(&self, leads: &[AmoLead]) -> Result<Related, CrmError> {
        let contact_ids: Vec<u64> = leads.iter().filter_map(AmoLead::main_contact_id).collect();
        let mut r = Related::default();
        if !contact_ids.is_empty() {
            r.contacts = self
                .client
                .contacts_by_ids(&contact_ids)
                .await
                .map_err(to_crm)?
                .into_iter()
                .map(|c| (c.id, c))
                .collect();
        }
        let company_ids: Vec<u64> = leads.iter().filter_map(|l| r.company_id(l)).collect();
        if !company_ids.is_empty() {
            r.companies = self
                .client
                .companies_by_ids(&company_ids)
                .await
                .map_err(to_crm)?
                .into_iter()
                .map(|c| (c.id, c))
                .collect();
        }
        Ok(r)
    }

    /// The activities of `leads` from their `events`, with the common notes those
    /// events name (notes cannot be listed by lead: their ids come from
    /// `common_note_added` events; 250 per request).
    pub(super) async fn activities(
        &self,
        leads: &[AmoLead],
        events: &[Event],
        fields: &FieldsSection,
    ) -> Result<HashMap<u64, Vec<Activity>>, CrmError> {
        let note_ids: Vec<u64> = events
            .iter()
            .filter(|e| e.kind == "common_note_added")
            .filter_map(Event::note_id)
            .collect();
        let notes = if note_ids.is_empty() {
            Vec::new()
        } else {
            self.client
                .lead_notes_by_ids(&note_ids, Some("common"))
                .await
                .map_err(to_crm)?
        };
        let mut by_lead: HashMap<u64, Vec<Activity>> = HashMap::new();
        let main_contact: HashMap<u64, String> = leads
            .iter()
            .filter_map(|l| Some((l.id, l.main_contact_id()?.to_string())))
            .collect();
        for e in events {
            let Some(lead_id) = e.entity_id else { continue };
            let contact = main_contact.get(&lead_id).map(String::as_str);
            if let Some(a) = event_activity(e, contact, &fields.activity_map) {
                by_lead.entry(lead_id).or_default().push(a);
            }
        }
        for n in &notes {
            let Some(lead_id) = n.entity_id else { continue };
            let contact = main_contact.get(&lead_id).map(String::as_str);
            if let Some(a) = note_activity(n, contact, &fields.activity_map) {
                by_lead.entry(lead_id).or_default().push(a);
            }
        }
        for acts in by_lead.values_mut() {
            acts.sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.id.cmp(&b.id)));
        }
        Ok(by_lead)
    }

    /// Leads modified at or after `since` (the reconciliation sweep).
    pub(super) async fn changed(&self, since: DateTime<Utc>) -> Result<Vec<Changed>, CrmError> {
        let leads = self
            .client
            .leads_updated_since(since.timestamp())
            .await
            .map_err(to_crm)?;
        let mut seen = BTreeSet::new();
        Ok(leads
            .into_iter()
            .filter(|l| seen.insert(l.id))
            .map(|l| Changed {
                id: l.id.to_string(),
                stamp: l.updated_at.and_then(unix).map(|at| CrmStamp {
                    at,
                    by: l.updated_by.filter(|u| *u > 0).map(|u| u.to_string()),
                }),
            })
            .collect())
    }
}

/// Leads' main contacts and companies, by id.
#[derive(Default)]
pub(super) struct Related {
    contacts: HashMap<u64, Contact>,
    companies: HashMap<u64, Company>,
}

impl Related {
    fn company_id(&self, l: &AmoLead) -> Option<u64> {
        l.company_id().or_else(|| {
            l.main_contact_id()
                .and_then(|c| self.contacts.get(&c))
                .and_then(|c| c.embedded.companies.first())
                .map(|c| c.id)
        })
    }

    /// The lead's main contact and company, when read.
    pub(super) fn of(&self, l: &AmoLead) -> (Option<&Contact>, Option<&Company>) {
        (
            l.main_contact_id().and_then(|c| self.contacts.get(&c)),
            self.company_id(l).and_then(|c| self.companies.get(&c)),
        )
    }

    /// Contacts and companies read (for the request floor).
    pub(super) fn counts(&self) -> (usize, usize) {
        (self.contacts.len(), self.companies.len())
    }
}

/// The event types to read: the built-in ones and any the portal's map names.
pub(super) fn event_types(map: &ActivityMap) -> Vec<String> {
    let mut types: Vec<String> = EVENT_TYPES.iter().map(|t| t.to_string()).collect();
    for t in map.exact_values("event") {
        if !types.iter().any(|k| k.eq_ignore_ascii_case(&t)) {
            types.push(t);
        }
    }
    types
}

/// Unix seconds as a time (`None` for 0 or out of range).
pub(super) fn unix(ts: i64) -> Option<DateTime<Utc>> {
    (ts > 0)
        .then(|| Utc.timestamp_opt(ts, 0).single())
        .flatten()
}

fn fmt_num(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        n.to_string()
    }
}

/// A field by id, or (for a non-numeric mapping) by code or name.
fn lookup_field<'a>(fields: &'a [CustomFieldValues], key: &str) -> Option<&'a CustomFieldValues> {
    let key = key.trim();
    match key.parse::<u64>() {
        Ok(id) => field_by_id(fields, id),
        Err(_) => field_by_code(fields, key).or_else(|| {
            fields.iter().find(|f| {
                f.field_name
                    .as_deref()
                    .is_some_and(|n| n.eq_ignore_ascii_case(key))
            })
        }),
    }
}

/// What `[[portal.activity_map]]` entries of an amoCRM portal may test.
pub const ACTIVITY_ATTRS: &[ActivityAttr] = &[
    ActivityAttr {
        name: "event",
        pattern: false,
        about: "the event type, e.g. incoming_mail, link_followed, common_note_added",
    },
    ActivityAttr {
        name: "note_type",
        pattern: false,
        about: "the note type (common)",
    },
    ActivityAttr {
        name: "text",
        pattern: true,
        about: "the note's text (regular expression)",
    },
    ActivityAttr {
        name: "url",
        pattern: true,
        about: "the event's link (regular expression)",
    },
];

/// One note (it has `note_type`) or event (it has `type`) as a fetch would classify
/// it (for `explain`).
pub fn classify_row(
    fields: &FieldsSection,
    row: &serde_json::Value,
) -> Result<Option<Activity>, String> {
    if row.get("note_type").is_some() {
        let n: Note =
            serde_json::from_value(row.clone()).map_err(|e| format!("not a note: {e}"))?;
        Ok(note_activity(&n, None, &fields.activity_map))
    } else {
        let e: Event =
            serde_json::from_value(row.clone()).map_err(|e| format!("not an event: {e}"))?;
        Ok(event_activity(&e, None, &fields.activity_map))
    }
}

/// One event of the feed as a neutral activity (`None`: not a scored kind). The
/// portal's `map` is tried first.
pub fn event_activity(e: &Event, contact_id: Option<&str>, map: &ActivityMap) -> Option<Activity> {
    let url = e.url();
    let mapped = map.classify(|attr| match attr {
        "event" => Some(e.kind.as_str()),
        "url" => url.as_deref(),
        _ => None,
    });
    if let Some(m) = mapped {
        return Some(Activity {
            id: e.id.clone(),
            kind: m.kind,
            direction: builtin_event(e).and_then(|(_, d, _)| d),
            subject: m.subject,
            url: m.url.or(url),
            at: e.created_at.and_then(unix)?,
            contact_id: contact_id.map(str::to_string),
            mapped_by: Some(m.entry),
        });
    }
    let (kind, direction, subject) = builtin_event(e)?;
    Some(Activity {
        id: e.id.clone(),
        kind,
        direction,
        subject,
        url,
        at: e.created_at.and_then(unix)?,
        contact_id: contact_id.map(str::to_string),
        mapped_by: None,
    })
}

/// The kinds amoCRM's own event types stand for.
fn builtin_event(e: &Event) -> Option<(ActivityKind, Option<Direction>, Option<String>)> {
    Some(match e.kind.as_str() {
        "incoming_call" => (ActivityKind::Call, Some(Direction::Incoming), None),
        "outgoing_call" => (ActivityKind::Call, Some(Direction::Outgoing), None),
        "incoming_mail" => (ActivityKind::Email, Some(Direction::Incoming), None),
        "outgoing_mail" => (ActivityKind::Email, Some(Direction::Outgoing), None),
        "incoming_chat_message" => (
            ActivityKind::Email,
            Some(Direction::Incoming),
            Some("chat".to_string()),
        ),
        "incoming_sms" => (
            ActivityKind::Custom("sms".into()),
            Some(Direction::Incoming),
            None,
        ),
        "link_followed" => (ActivityKind::PageView, None, None),
        "task_completed" => (ActivityKind::Task, None, None),
        "lead_status_changed" => (
            ActivityKind::Custom("status_change".into()),
            None,
            status_change(e),
        ),
        _ => return None,
    })
}

fn status_change(e: &Event) -> Option<String> {
    let id = |v: &serde_json::Value| {
        v.pointer("/0/lead_status/id")
            .and_then(serde_json::Value::as_u64)
            .map(|n| n.to_string())
    };
    match (id(&e.value_before), id(&e.value_after)) {
        (Some(b), Some(a)) => Some(format!("{b}->{a}")),
        (None, Some(a)) => Some(format!("->{a}")),
        _ => None,
    }
}

/// A common note as a neutral activity: what the portal's `map` says it is, tagged
/// website behaviour, or a comment.
pub fn note_activity(n: &Note, contact_id: Option<&str>, map: &ActivityMap) -> Option<Activity> {
    if n.note_type != "common" {
        return None;
    }
    let text = n.text().unwrap_or("").trim();
    if text.starts_with(OWN_NOTE_PREFIX) {
        return None;
    }
    let mapped = map.classify(|attr| match attr {
        "event" => Some("common_note_added"),
        "note_type" => Some(n.note_type.as_str()),
        "text" => Some(text),
        _ => None,
    });
    let (kind, rest, mapped_url, mapped_by) = match mapped {
        Some(m) => (m.kind, m.subject.unwrap_or_else(|| text.to_string()), m.url, Some(m.entry)),
        None => {
            let (kind, rest) =
                split_tag(&default_tags(), text).unwrap_or((ActivityKind::Comment, text));
            (kind, rest.to_string(), None, None)
        }
    };
    let url = mapped_url.or_else(|| {
        rest.split_whitespace()
            .find(|w| w.starts_with("http://") || w.starts_with("https://") || w.starts_with('/'))
            .map(str::to_string)
    });
    Some(Activity {
        id: format!("note:{}", n.id),
        kind,
        direction: Some(Direction::Incoming),
        subject: (!rest.is_empty()).then(|| rest.chars().take(200).collect()),
        url,
        at: n.created_at.and_then(unix)?,
        contact_id: contact_id.map(str::to_string),
        mapped_by,
    })
}

//! amoCRM (and Kommo) implementation of the `Crm` trait.
//!
//! Everything goes through one [`Client`] per portal, paced at the portal's rate (7
//! requests/s by default) and batched as the API allows. Fetching `n` leads costs
//! `ceil(n/250)` lead lists (with contacts), as many contact and company lists,
//! `ceil(n/10)` event lists (amoCRM filters events by at most 10 entities per request)
//! and one notes list per 250 notes the events mention; writing `n` scores costs `ceil(n/50)` PATCHes.
//!
//! **Lead data.** Name, price, status, responsible user and times come from the lead;
//! job title (`POSITION`), e-mails and phones from the main contact's system fields;
//! the company name from the lead's company (else the contact's). `[portal.fields.map]`
//! maps neutral names (`industry`, `revenue`, `employees`, `region`, `source`,
//! `custom.<x>`…) to custom field ids, looked up on the lead, then the company, then
//! the contact (a non-numeric value is matched as a field code or name instead).
//!
//! **Activities.** Events of the lead: `incoming_call`/`outgoing_call` → call,
//! `incoming_mail`/`outgoing_mail` → e-mail, `incoming_chat_message` → an *incoming
//! e-mail* with subject "chat" (a written message from the client, scored like an
//! incoming e-mail), `incoming_sms` → custom kind `sms`, `link_followed` → page view
//! with its URL, `task_completed` → task, `lead_status_changed` → custom kind
//! `status_change`. Common notes on the lead (found through their `common_note_added`
//! events, since the notes list cannot be filtered by lead) are comments, except that a note whose
//! text starts with a **tag** is website behaviour that amoCRM has no event for: whatever
//! records it (a site tracker, a form handler, a Salesbot step, a rep) adds a common
//! note like `[demo] Demo request from /pricing`, `[download] Price list 2026`,
//! `[page] https://site.ru/pricing`, `[form] Contact form`, `[meeting] …` or
//! `[email_open] …`; the text after the tag is the subject, and a URL in it is the
//! activity's URL. These are the same tags the Bitrix24 integration reads from activity
//! subjects. Notes leadscore posts itself start with `[leadscore]` and are ignored.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use leadscore_amocrm::auth::{Auth, OAuthSettings, TokenPair, TokenStore};
use leadscore_amocrm::client::{Client, ClientConfig};
use leadscore_amocrm::error::Error;
use leadscore_amocrm::limiter::LimiterConfig;
use leadscore_amocrm::types::{
    field_by_code, field_by_id, texts, Company, Contact, CustomField, CustomFieldValues, Event,
    FieldEnum, FieldWrite, Lead as AmoLead, LeadUpdate, NewNote, NewTask, Note,
};
use secrecy::{ExposeSecret, SecretString};

use super::{Crm, CrmError, Fetched, FieldSetup, LeadId, ScoreWrite, TaskRef, TaskRequest};
use crate::config::{FieldsSection, Portal, PortalAuth, TaskSection};
use crate::lead::{Activity, ActivityKind, Direction, Lead};
use crate::store::Store;

/// Event types read for scoring (others are never fetched).
pub const EVENT_TYPES: &[&str] = &[
    "incoming_call",
    "outgoing_call",
    "incoming_mail",
    "outgoing_mail",
    "incoming_chat_message",
    "incoming_sms",
    "link_followed",
    "task_completed",
    "lead_status_changed",
    "common_note_added",
];

/// Prefix of the notes leadscore posts (ignored when reading activity back).
pub const OWN_NOTE_PREFIX: &str = "[leadscore]";

/// Note tags for behaviour amoCRM has no event type for.
const NOTE_TAGS: &[(&str, &str)] = &[
    ("[demo]", "demo_request"),
    ("[download]", "download"),
    ("[page]", "page_view"),
    ("[form]", "form"),
    ("[meeting]", "meeting"),
    ("[email_open]", "email_open"),
];

/// Names and codes of the fields `setup` creates.
const SCORE_NAME: &str = "Lead score";
const TIER_NAME: &str = "Lead tier";
const BREAKDOWN_NAME: &str = "Lead score breakdown";
const SCORE_CODE: &str = "LEADSCORE_SCORE";
const TIER_CODE: &str = "LEADSCORE_TIER";
const BREAKDOWN_CODE: &str = "LEADSCORE_BREAKDOWN";

/// Why an amoCRM portal could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The portal's credentials are not amoCRM ones.
    #[error("portal {0}: no amoCRM long-lived token or OAuth credentials")]
    NotAmocrm(String),
    #[error("portal {portal}: {source}")]
    Client {
        portal: String,
        #[source]
        source: Error,
    },
}

/// The sled key of a portal's rotated OAuth pair.
pub fn token_key(portal_id: &str) -> String {
    format!("amocrm_tokens:{portal_id}")
}

/// FNV-1a: a stable fingerprint of the config's refresh token, so that a stored pair
/// is only used while it descends from the token the config names (an admin who
/// re-authorizes and puts a new token into the config is obeyed, not overruled).
fn fingerprint(secret: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in secret.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Rotated tokens in sled's `meta` tree, flushed before `save` returns.
pub struct SledTokenStore {
    store: Arc<Store>,
    key: String,
    seed: String,
}

impl SledTokenStore {
    /// The store for `portal_id`, whose chain starts at `config_refresh_token`.
    pub fn new(store: Arc<Store>, portal_id: &str, config_refresh_token: &SecretString) -> Self {
        SledTokenStore {
            store,
            key: token_key(portal_id),
            seed: fingerprint(config_refresh_token.expose_secret()),
        }
    }
}

#[async_trait]
impl TokenStore for SledTokenStore {
    async fn load(&self) -> Result<Option<TokenPair>, String> {
        let Some(raw) = self.store.meta_get(&self.key).map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        let v: serde_json::Value = serde_json::from_str(&raw)
            .map_err(|_| "stored amoCRM tokens are not JSON".to_string())?;
        if v.get("seed").and_then(|s| s.as_str()) != Some(self.seed.as_str()) {
            tracing::warn!(key = %self.key, "the config names a different refresh token than the stored pair descends from; using the config's");
            return Ok(None);
        }
        let pair = v.get("pair").map(|p| p.to_string()).unwrap_or_default();
        TokenPair::from_json(&pair).map(Some)
    }

    async fn save(&self, pair: &TokenPair) -> Result<(), String> {
        let pair_json: serde_json::Value =
            serde_json::from_str(&pair.to_json()).map_err(|e| e.to_string())?;
        let doc = serde_json::json!({ "seed": self.seed, "pair": pair_json });
        self.store
            .meta_set(&self.key, &doc.to_string())
            .map_err(|e| e.to_string())?;
        self.store.flush().await.map_err(|e| e.to_string())
    }
}

/// The `Crm` of one amoCRM account.
#[derive(Clone)]
pub struct AmocrmCrm {
    portal_id: String,
    client: Arc<Client>,
    fields: FieldsSection,
    task: TaskSection,
    /// Only events this recent are read (rules look back weeks, not years).
    event_window: Duration,
}

impl std::fmt::Debug for AmocrmCrm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmocrmCrm")
            .field("portal_id", &self.portal_id)
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

impl AmocrmCrm {
    /// Build from the resolved config. With OAuth, the pair rotated into the store by an
    /// earlier run wins over the config's refresh token (spent once rotated), and
    /// every new pair is written to the store and flushed before it is used.
    pub fn new(portal: &Portal, store: Arc<Store>) -> Result<AmocrmCrm, BuildError> {
        let (base_url, auth) = match &portal.auth {
            PortalAuth::AmoLongLived { base_url, token } => {
                (base_url, Auth::LongLived(token.clone()))
            }
            PortalAuth::AmoOAuth {
                base_url,
                client_id,
                client_secret,
                redirect_uri,
                refresh_token,
            } => (
                base_url,
                Auth::OAuth {
                    settings: OAuthSettings {
                        client_id: client_id.clone(),
                        client_secret: client_secret.clone(),
                        redirect_uri: redirect_uri.clone(),
                        initial_refresh_token: refresh_token.clone(),
                        refresh_ahead: Duration::from_secs(300),
                    },
                    store: Arc::new(SledTokenStore::new(store, &portal.id, refresh_token)),
                },
            ),
            _ => return Err(BuildError::NotAmocrm(portal.id.clone())),
        };
        let client =
            Client::new(Self::client_config(portal, base_url), auth).map_err(|source| {
                BuildError::Client {
                    portal: portal.id.clone(),
                    source,
                }
            })?;
        Ok(Self::with_client(portal, Arc::new(client)))
    }

    /// Build around a ready client (tests, the demo).
    pub fn with_client(portal: &Portal, client: Arc<Client>) -> AmocrmCrm {
        AmocrmCrm {
            portal_id: portal.id.clone(),
            client,
            fields: portal.fields.clone(),
            task: portal.task.clone(),
            event_window: Duration::from_secs(180 * 86_400),
        }
    }

    /// The client settings a portal's config implies (its rate limit).
    pub fn client_config(portal: &Portal, base_url: &str) -> ClientConfig {
        let mut c = ClientConfig::new(base_url);
        c.limiter = LimiterConfig {
            per_second: portal.rate_limit.per_second,
            burst: portal.rate_limit.burst,
            ..LimiterConfig::default()
        };
        c
    }

    /// Read events this far back (default 180 days).
    pub fn with_event_window(mut self, window: Duration) -> Self {
        self.event_window = window;
        self
    }

    /// The underlying client (counters, blocked flag for metrics and benchmarks).
    pub fn client(&self) -> &Arc<Client> {
        &self.client
    }

    /// The portal this CRM talks to (config id).
    pub fn portal_id(&self) -> &str {
        &self.portal_id
    }

    fn field_id(&self, name: &str, value: &Option<String>) -> Result<Option<u64>, CrmError> {
        match value {
            None => Ok(None),
            Some(v) => v.trim().parse::<u64>().map(Some).map_err(|_| {
                CrmError::Rejected(format!(
                    "fields.{name} = {v:?} is not an amoCRM custom field id (run `leadscore setup`)"
                ))
            }),
        }
    }

    /// Translate one amoCRM lead (with its contact and company) to the neutral lead.
    fn lead_from(
        &self,
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
        for (neutral, field) in &self.fields.map {
            let sources: [&[CustomFieldValues]; 3] = [
                &raw.custom_fields_values,
                company
                    .map(|c| c.custom_fields_values.as_slice())
                    .unwrap_or(&[]),
                contact
                    .map(|c| c.custom_fields_values.as_slice())
                    .unwrap_or(&[]),
            ];
            let values = sources.iter().find_map(|fs| {
                let f = lookup_field(fs, field)?;
                let t = texts(Some(f));
                (!t.is_empty()).then_some(t)
            });
            if let Some(values) = values {
                set_field(&mut lead, neutral, values);
            }
        }
        let current = self
            .fields
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
}

fn unix(ts: i64) -> Option<DateTime<Utc>> {
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

fn parse_number(s: &str) -> Option<f64> {
    let cleaned: String = s
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '\u{a0}')
        .collect::<String>()
        .replace(',', ".");
    cleaned.parse::<f64>().ok().filter(|n| n.is_finite())
}

/// Put mapped values into the neutral field `name`.
fn set_field(lead: &mut Lead, name: &str, values: Vec<String>) {
    let first = values.first().cloned();
    let joined = values.join(", ");
    match name {
        "name" => lead.name = first,
        "position" => lead.position = first,
        "email" => lead.emails = values,
        "phone" => lead.phones = values,
        "company" => lead.company = first,
        "industry" => lead.industry = Some(joined),
        "revenue" => lead.revenue = first.as_deref().and_then(parse_number),
        "employees" => lead.employees = first.as_deref().and_then(parse_number),
        "region" => lead.region = Some(joined),
        "source" => lead.source = Some(joined),
        "status" => lead.status = first,
        "responsible_id" => lead.responsible_id = first,
        other => {
            let key = other.strip_prefix("custom.").unwrap_or(other);
            lead.custom.insert(key.to_string(), joined);
        }
    }
}

/// One event of the feed as a neutral activity (`None`: not a scored kind).
pub fn event_activity(e: &Event, contact_id: Option<&str>) -> Option<Activity> {
    let (kind, direction, subject) = match e.kind.as_str() {
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
    };
    Some(Activity {
        id: e.id.clone(),
        kind,
        direction,
        subject,
        url: e.url(),
        at: e.created_at.and_then(unix)?,
        contact_id: contact_id.map(str::to_string),
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

/// A common note as a neutral activity: tagged website behaviour, or a comment.
pub fn note_activity(n: &Note, contact_id: Option<&str>) -> Option<Activity> {
    if n.note_type != "common" {
        return None;
    }
    let text = n.text().unwrap_or("").trim();
    if text.starts_with(OWN_NOTE_PREFIX) {
        return None;
    }
    let lower = text.to_lowercase();
    let (kind, rest) = NOTE_TAGS
        .iter()
        .find(|(tag, _)| lower.starts_with(tag))
        .map(|(tag, kind)| (ActivityKind::from_name(kind), text[tag.len()..].trim()))
        .unwrap_or((ActivityKind::Comment, text));
    let url = rest
        .split_whitespace()
        .find(|w| w.starts_with("http://") || w.starts_with("https://") || w.starts_with('/'))
        .map(str::to_string);
    Some(Activity {
        id: format!("note:{}", n.id),
        kind,
        direction: Some(Direction::Incoming),
        subject: (!rest.is_empty()).then(|| rest.chars().take(200).collect()),
        url,
        at: n.created_at.and_then(unix)?,
        contact_id: contact_id.map(str::to_string),
    })
}

/// Map a client error to the pipeline's terms.
pub fn to_crm(e: Error) -> CrmError {
    match &e {
        Error::Blocked { .. } => CrmError::Blocked(e.to_string()),
        Error::Unauthorized { .. } | Error::TokenRevoked { .. } => CrmError::Auth(e.to_string()),
        _ if e.is_retryable() => CrmError::Transient {
            message: e.to_string(),
            retry_after: e.retry_after(),
        },
        _ => CrmError::Rejected(e.to_string()),
    }
}

fn parse_id(s: &str) -> Option<u64> {
    let s = s.trim();
    (!s.is_empty() && s.len() <= 18 && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

fn clone_err(e: &CrmError) -> CrmError {
    match e {
        CrmError::Transient {
            message,
            retry_after,
        } => CrmError::Transient {
            message: message.clone(),
            retry_after: *retry_after,
        },
        CrmError::Rejected(m) => CrmError::Rejected(m.clone()),
        CrmError::Auth(m) => CrmError::Auth(m.clone()),
        CrmError::Blocked(m) => CrmError::Blocked(m.clone()),
    }
}

impl AmocrmCrm {
    /// PATCH one batch; on a validation error split it to find the lead(s) at fault so
    /// one bad lead does not fail 49 good ones.
    async fn patch_isolating(
        &self,
        updates: &[LeadUpdate],
        out: &mut BTreeMap<LeadId, Result<(), CrmError>>,
    ) {
        let mut pending: Vec<Vec<LeadUpdate>> = vec![updates.to_vec()];
        while let Some(batch) = pending.pop() {
            for (ids, result) in self.client.update_leads(&batch).await {
                match result {
                    Ok(()) => {
                        for id in ids {
                            out.insert(id.to_string(), Ok(()));
                        }
                    }
                    Err(e @ Error::Validation { .. }) if ids.len() > 1 => {
                        tracing::warn!(error = %e, size = ids.len(), "amoCRM refused a score batch; splitting it to find the lead at fault");
                        let sub: Vec<LeadUpdate> = batch
                            .iter()
                            .filter(|u| ids.contains(&u.id))
                            .cloned()
                            .collect();
                        let (x, y) = sub.split_at(sub.len() / 2);
                        pending.push(y.to_vec());
                        pending.push(x.to_vec());
                    }
                    Err(e) => {
                        let ce = to_crm(e);
                        for id in ids {
                            out.insert(id.to_string(), Err(clone_err(&ce)));
                        }
                    }
                }
            }
        }
    }
}

#[async_trait]
impl Crm for AmocrmCrm {
    fn pacing(&self) -> Option<crate::crm::PacingState> {
        let s = self.client.stats();
        Some(crate::crm::PacingState {
            methods: Vec::new(),
            requests: s.requests,
            limit_errors: s.rate_limited,
            wait_secs: s.total_wait.as_secs_f64(),
            blocked: s.blocked,
        })
    }

    /// amoCRM webhooks always name the lead, so there are no activity subjects.
    async fn resolve_activities(
        &self,
        activity_ids: &[String],
    ) -> Result<BTreeMap<String, Option<LeadId>>, CrmError> {
        Ok(activity_ids.iter().map(|a| (a.clone(), None)).collect())
    }

    async fn fetch(&self, lead_ids: &[LeadId]) -> Result<BTreeMap<LeadId, Fetched>, CrmError> {
        let ids: Vec<u64> = lead_ids.iter().filter_map(|s| parse_id(s)).collect();
        if ids.is_empty() {
            return Ok(BTreeMap::new());
        }
        let leads = self.client.leads_by_ids(&ids).await.map_err(to_crm)?;
        let leads: Vec<AmoLead> = leads
            .into_iter()
            .filter(|l| l.is_deleted != Some(true))
            .collect();
        if leads.is_empty() {
            return Ok(BTreeMap::new());
        }
        let contact_ids: Vec<u64> = leads.iter().filter_map(AmoLead::main_contact_id).collect();
        let contacts: HashMap<u64, Contact> = if contact_ids.is_empty() {
            HashMap::new()
        } else {
            self.client
                .contacts_by_ids(&contact_ids)
                .await
                .map_err(to_crm)?
                .into_iter()
                .map(|c| (c.id, c))
                .collect()
        };
        let company_of = |l: &AmoLead| {
            l.company_id().or_else(|| {
                l.main_contact_id()
                    .and_then(|c| contacts.get(&c))
                    .and_then(|c| c.embedded.companies.first())
                    .map(|c| c.id)
            })
        };
        let company_ids: Vec<u64> = leads.iter().filter_map(company_of).collect();
        let companies: HashMap<u64, Company> = if company_ids.is_empty() {
            HashMap::new()
        } else {
            self.client
                .companies_by_ids(&company_ids)
                .await
                .map_err(to_crm)?
                .into_iter()
                .map(|c| (c.id, c))
                .collect()
        };
        let found: Vec<u64> = leads.iter().map(|l| l.id).collect();
        let since = Utc::now().timestamp() - self.event_window.as_secs() as i64;
        let events = self
            .client
            .lead_events(&found, EVENT_TYPES, Some(since))
            .await
            .map_err(to_crm)?;
        // Notes cannot be listed by lead: their ids come from `common_note_added` events.
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
        for e in &events {
            let Some(lead_id) = e.entity_id else { continue };
            if let Some(a) = event_activity(e, main_contact.get(&lead_id).map(String::as_str)) {
                by_lead.entry(lead_id).or_default().push(a);
            }
        }
        for n in &notes {
            let Some(lead_id) = n.entity_id else { continue };
            if let Some(a) = note_activity(n, main_contact.get(&lead_id).map(String::as_str)) {
                by_lead.entry(lead_id).or_default().push(a);
            }
        }
        let mut out = BTreeMap::new();
        for raw in &leads {
            let contact = raw.main_contact_id().and_then(|c| contacts.get(&c));
            let company = company_of(raw).and_then(|c| companies.get(&c));
            let (lead, current_score) = self.lead_from(raw, contact, company);
            let mut activities = by_lead.remove(&raw.id).unwrap_or_default();
            activities.sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.id.cmp(&b.id)));
            out.insert(
                lead.id.clone(),
                Fetched::complete(lead, activities, current_score),
            );
        }
        Ok(out)
    }

    async fn write_scores(
        &self,
        writes: &[ScoreWrite],
    ) -> Result<BTreeMap<LeadId, Result<(), CrmError>>, CrmError> {
        let score_field = self.field_id("score", &self.fields.score)?.ok_or_else(|| {
            CrmError::Rejected(
                "fields.score is not set for this portal (run `leadscore setup`)".into(),
            )
        })?;
        let tier_field = self.field_id("tier", &self.fields.tier)?;
        let breakdown_field = self.field_id("breakdown", &self.fields.breakdown)?;
        let mut out = BTreeMap::new();
        let mut updates = Vec::new();
        for w in writes {
            let Some(id) = parse_id(&w.lead_id) else {
                out.insert(
                    w.lead_id.clone(),
                    Err(CrmError::Rejected(format!(
                        "{:?} is not a lead id",
                        w.lead_id
                    ))),
                );
                continue;
            };
            let mut fields = vec![(score_field, FieldWrite::Number(f64::from(w.score)))];
            if let Some(tf) = tier_field {
                match self
                    .fields
                    .tier_values
                    .get(&w.tier)
                    .and_then(|v| parse_id(v))
                {
                    Some(enum_id) => fields.push((tf, FieldWrite::Enum(enum_id))),
                    None => {
                        out.insert(
                            w.lead_id.clone(),
                            Err(CrmError::Rejected(format!(
                                "tier {:?} has no enum id in fields.tier_values (run `leadscore setup`)",
                                w.tier
                            ))),
                        );
                        continue;
                    }
                }
            }
            if let Some(bf) = breakdown_field {
                fields.push((bf, FieldWrite::Text(w.breakdown.clone())));
            }
            updates.push(LeadUpdate { id, fields });
        }
        if updates.is_empty() {
            return Ok(out);
        }
        let before = out.len();
        self.patch_isolating(&updates, &mut out).await;
        let written: Vec<&ScoreWrite> = writes
            .iter()
            .filter(|w| matches!(out.get(&w.lead_id), Some(Ok(()))))
            .collect();
        if written.is_empty() && before == 0 {
            // Nothing was written: report the common failure (a block or revoked token
            // must reach the pipeline as such, not as 50 per-lead errors).
            if let Some(Err(e)) = out.values().find(|r| {
                matches!(
                    r,
                    Err(CrmError::Blocked(_) | CrmError::Auth(_) | CrmError::Transient { .. })
                )
            }) {
                return Err(clone_err(e));
            }
        }
        let notes: Vec<NewNote> = written
            .iter()
            .filter(|w| w.comment)
            .filter_map(|w| {
                Some(NewNote::common(
                    parse_id(&w.lead_id)?,
                    &format!("{OWN_NOTE_PREFIX} {}", w.breakdown),
                ))
            })
            .collect();
        if !notes.is_empty() {
            // The score is written; the note is an extra, so its failure is only logged.
            if let Err(e) = self.client.add_lead_notes(&notes).await {
                tracing::warn!(portal = %self.portal_id, error = %e, "could not post the score explanation notes");
            }
        }
        Ok(out)
    }

    async fn find_task(&self, lead_id: &str, marker: &str) -> Result<Option<TaskRef>, CrmError> {
        let Some(id) = parse_id(lead_id) else {
            return Ok(None);
        };
        let tasks = self.client.lead_tasks(&[id]).await.map_err(to_crm)?;
        Ok(tasks
            .into_iter()
            .find(|t| t.entity_id == Some(id) && t.text.contains(marker))
            .map(|t| TaskRef {
                id: t.id.to_string(),
                open: !t.is_completed,
            }))
    }

    async fn create_task(&self, task: &TaskRequest) -> Result<TaskRef, CrmError> {
        let id = parse_id(&task.lead_id)
            .ok_or_else(|| CrmError::Rejected(format!("{:?} is not a lead id", task.lead_id)))?;
        let responsible = task
            .responsible_id
            .as_deref()
            .or(self.task.fallback_responsible_id.as_deref())
            .and_then(parse_id);
        // amoCRM tasks have no title: title, body and the recovery marker share the text.
        let text = format!("{}\n{}\n{}", task.title, task.text, task.marker);
        let new = NewTask {
            text,
            complete_till: task.deadline.timestamp(),
            entity_id: id,
            entity_type: "leads".into(),
            task_type_id: 1,
            responsible_user_id: responsible,
            request_id: Some(task.marker.clone()),
        };
        let created = self.client.create_tasks(&[new]).await.map_err(to_crm)?;
        let c = created.first().ok_or_else(|| CrmError::Transient {
            message: "amoCRM answered the task creation without an id".into(),
            retry_after: None,
        })?;
        Ok(TaskRef {
            id: c.id.to_string(),
            open: true,
        })
    }

    async fn task_open(&self, _lead_id: &str, task_id: &str) -> Result<bool, CrmError> {
        let Some(id) = parse_id(task_id) else {
            return Ok(false);
        };
        Ok(self
            .client
            .task(id)
            .await
            .map_err(to_crm)?
            .is_some_and(|t| !t.is_completed))
    }

    async fn changed_since(&self, since: DateTime<Utc>) -> Result<Vec<LeadId>, CrmError> {
        let leads = self
            .client
            .leads_updated_since(since.timestamp())
            .await
            .map_err(to_crm)?;
        let mut seen = BTreeSet::new();
        Ok(leads
            .into_iter()
            .filter(|l| seen.insert(l.id))
            .map(|l| l.id.to_string())
            .collect())
    }

    async fn setup_fields(&self, tiers: &[(String, String)]) -> Result<FieldSetup, CrmError> {
        let existing = self.client.lead_custom_fields().await.map_err(to_crm)?;
        let find = |configured: &Option<String>,
                    code: &str,
                    name: &str,
                    kind: &str|
         -> Option<CustomField> {
            let by_id = configured
                .as_deref()
                .and_then(parse_id)
                .and_then(|id| existing.iter().find(|f| f.id == Some(id)));
            by_id
                .or_else(|| {
                    existing.iter().find(|f| {
                        f.field_type == kind
                            && (f
                                .code
                                .as_deref()
                                .is_some_and(|c| c.eq_ignore_ascii_case(code))
                                || f.name == name)
                    })
                })
                .cloned()
        };
        let score = find(&self.fields.score, SCORE_CODE, SCORE_NAME, "numeric");
        let tier = find(&self.fields.tier, TIER_CODE, TIER_NAME, "select");
        let breakdown = find(
            &self.fields.breakdown,
            BREAKDOWN_CODE,
            BREAKDOWN_NAME,
            "textarea",
        );
        let mut to_create = Vec::new();
        let def = |name: &str, code: &str, kind: &str, enums: Vec<FieldEnum>| CustomField {
            id: None,
            name: name.into(),
            field_type: kind.into(),
            code: Some(code.into()),
            sort: Some(510),
            is_api_only: true,
            enums,
        };
        if score.is_none() {
            to_create.push(def(SCORE_NAME, SCORE_CODE, "numeric", Vec::new()));
        }
        if tier.is_none() {
            let enums = tiers
                .iter()
                .enumerate()
                .map(|(i, (_, label))| FieldEnum {
                    id: None,
                    value: label.clone(),
                    sort: Some((i as i64 + 1) * 10),
                })
                .collect();
            to_create.push(def(TIER_NAME, TIER_CODE, "select", enums));
        }
        if breakdown.is_none() {
            to_create.push(def(BREAKDOWN_NAME, BREAKDOWN_CODE, "textarea", Vec::new()));
        }
        let created = if to_create.is_empty() {
            Vec::new()
        } else {
            self.client
                .create_lead_custom_fields(&to_create)
                .await
                .map_err(to_crm)?
        };
        let pick = |found: Option<CustomField>, name: &str| -> Result<CustomField, CrmError> {
            found
                .or_else(|| created.iter().find(|f| f.name == name).cloned())
                .filter(|f| f.id.is_some())
                .ok_or_else(|| {
                    CrmError::Rejected(format!("amoCRM did not return the created field {name:?}"))
                })
        };
        let score = pick(score, SCORE_NAME)?;
        let tier = pick(tier, TIER_NAME)?;
        let breakdown = pick(breakdown, BREAKDOWN_NAME)?;
        let mut tier_values = BTreeMap::new();
        let mut missing = Vec::new();
        for (id, label) in tiers {
            let e = tier.enums.iter().find(|e| {
                e.value.trim().eq_ignore_ascii_case(label.trim())
                    || e.value.trim().eq_ignore_ascii_case(id.trim())
            });
            match e.and_then(|e| e.id) {
                Some(enum_id) => {
                    tier_values.insert(id.clone(), enum_id.to_string());
                }
                None => missing.push(label.clone()),
            }
        }
        if !missing.is_empty() {
            return Err(CrmError::Rejected(format!(
                "the amoCRM field {:?} (id {}) has no values for tiers {}: add them in amoCRM (Settings → Leads → fields) and run setup again",
                tier.name,
                tier.id.unwrap_or_default(),
                missing.join(", ")
            )));
        }
        Ok(FieldSetup {
            score_field: score.id.unwrap_or_default().to_string(),
            tier_field: tier.id.unwrap_or_default().to_string(),
            breakdown_field: breakdown.id.unwrap_or_default().to_string(),
            tier_values,
            created: created.iter().map(|f| f.name.clone()).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CrmKind, RateLimitSection, WebhookCheck};
    use serde_json::json;

    pub(crate) fn portal(base_url: &str) -> Portal {
        let mut fields = FieldsSection {
            score: Some("9001".into()),
            tier: Some("9002".into()),
            breakdown: Some("9003".into()),
            ..FieldsSection::default()
        };
        fields.tier_values.insert("cold".into(), "1".into());
        fields.tier_values.insert("warm".into(), "2".into());
        fields.tier_values.insert("hot".into(), "3".into());
        fields.map.insert("industry".into(), "501".into());
        fields.map.insert("employees".into(), "502".into());
        fields.map.insert("revenue".into(), "503".into());
        fields.map.insert("custom.budget".into(), "Budget".into());
        Portal {
            id: "amo".into(),
            crm: CrmKind::Amocrm,
            auth: PortalAuth::AmoLongLived {
                base_url: base_url.into(),
                token: SecretString::from("tok"),
            },
            webhook: WebhookCheck::default(),
            rate_limit: RateLimitSection {
                per_second: 7.0,
                burst: 7,
                operating_limit_secs: None,
                operating_window_secs: None,
            },
            fields,
            task: TaskSection::default(),
            threshold: 70,
            rearm_below: 60,
        }
    }

    fn crm() -> AmocrmCrm {
        let p = portal("http://127.0.0.1:9");
        let client = Client::new(
            AmocrmCrm::client_config(&p, "http://127.0.0.1:9"),
            Auth::LongLived(SecretString::from("t")),
        )
        .unwrap();
        AmocrmCrm::with_client(&p, Arc::new(client))
    }

    #[test]
    fn maps_lead_contact_company_and_mapping() {
        let lead: AmoLead = serde_json::from_value(json!({
            "id": 42, "name": "Поставка", "price": 150000, "responsible_user_id": 7, "status_id": 100,
            "created_at": 1_700_000_000, "updated_at": 1_700_000_500,
            "custom_fields_values": [
                {"field_id": 9001, "values": [{"value": "64"}]},
                {"field_id": 501, "field_type": "select", "values": [{"value": "Производство", "enum_id": 5}]}
            ],
            "_embedded": {"tags": [{"id": 1, "name": "выставка"}], "contacts": [{"id": 5, "is_main": true}], "companies": [{"id": 8}]}
        }))
        .unwrap();
        let contact: Contact = serde_json::from_value(json!({"id": 5, "name": "Иван", "custom_fields_values": [
            {"field_id": 1, "field_code": "POSITION", "values": [{"value": "Генеральный директор"}]},
            {"field_id": 2, "field_code": "EMAIL", "values": [{"value": "ivan@corp.ru", "enum_code": "WORK"}]},
            {"field_id": 3, "field_code": "PHONE", "values": [{"value": "+7 900 1"}]},
            {"field_id": 504, "field_name": "Budget", "values": [{"value": "yes"}]}
        ]}))
        .unwrap();
        let company: Company = serde_json::from_value(
            json!({"id": 8, "name": "ООО Ромашка", "custom_fields_values": [
                {"field_id": 502, "values": [{"value": "1 200"}]},
                {"field_id": 503, "values": [{"value": 5000000.5}]}
            ]}),
        )
        .unwrap();
        let (l, current) = crm().lead_from(&lead, Some(&contact), Some(&company));
        assert_eq!(current, Some(64));
        assert_eq!(l.id, "42");
        assert_eq!(l.position.as_deref(), Some("Генеральный директор"));
        assert_eq!(l.emails, vec!["ivan@corp.ru"]);
        assert_eq!(l.phones, vec!["+7 900 1"]);
        assert_eq!(l.company.as_deref(), Some("ООО Ромашка"));
        assert_eq!(l.industry.as_deref(), Some("Производство"));
        assert_eq!(l.employees, Some(1200.0));
        assert_eq!(l.revenue, Some(5_000_000.5));
        assert_eq!(l.custom.get("budget").map(String::as_str), Some("yes"));
        assert_eq!(l.custom.get("tags").map(String::as_str), Some("выставка"));
        assert_eq!(l.custom.get("price").map(String::as_str), Some("150000"));
        assert_eq!(l.responsible_id.as_deref(), Some("7"));
        assert_eq!(l.status.as_deref(), Some("100"));
        assert_eq!(l.updated_at.unwrap().timestamp(), 1_700_000_500);
        // A thin lead stays thin: no contact, no company, no mapping hits.
        let bare: AmoLead = serde_json::from_value(json!({"id": 1})).unwrap();
        let (l, current) = crm().lead_from(&bare, None, None);
        assert_eq!((l.position, l.industry, current), (None, None, None));
    }

    #[test]
    fn events_become_activities() {
        let ev = |kind: &str, after: serde_json::Value| -> Event {
            serde_json::from_value(json!({"id": "e1", "type": kind, "entity_id": 42, "entity_type": "lead", "created_at": 1_700_000_000, "value_after": after, "value_before": [{"lead_status": {"id": 1, "pipeline_id": 9}}]})).unwrap()
        };
        let a = event_activity(&ev("incoming_call", json!([])), Some("5")).unwrap();
        assert_eq!(
            (a.kind, a.direction),
            (ActivityKind::Call, Some(Direction::Incoming))
        );
        assert_eq!(a.contact_id.as_deref(), Some("5"));
        let a = event_activity(&ev("outgoing_mail", json!([])), None).unwrap();
        assert_eq!(
            (a.kind, a.direction),
            (ActivityKind::Email, Some(Direction::Outgoing))
        );
        let a = event_activity(&ev("incoming_chat_message", json!([])), None).unwrap();
        assert_eq!(
            (a.kind, a.subject.as_deref()),
            (ActivityKind::Email, Some("chat"))
        );
        let a = event_activity(
            &ev(
                "link_followed",
                json!([{"link": {"url": "https://x.ru/pricing"}}]),
            ),
            None,
        )
        .unwrap();
        assert_eq!(
            (a.kind, a.url.as_deref()),
            (ActivityKind::PageView, Some("https://x.ru/pricing"))
        );
        let a = event_activity(
            &ev(
                "lead_status_changed",
                json!([{"lead_status": {"id": 2, "pipeline_id": 9}}]),
            ),
            None,
        )
        .unwrap();
        assert_eq!(a.subject.as_deref(), Some("1->2"));
        assert!(event_activity(&ev("entity_tag_added", json!([])), None).is_none());
    }

    #[test]
    fn tagged_notes_are_behaviour_and_own_notes_are_ignored() {
        let note = |text: &str, kind: &str| -> Note {
            serde_json::from_value(json!({"id": 3, "entity_id": 42, "note_type": kind, "params": {"text": text}, "created_at": 1_700_000_000})).unwrap()
        };
        let a = note_activity(&note("[Demo] Demo request from /pricing", "common"), None).unwrap();
        assert_eq!(a.kind, ActivityKind::DemoRequest);
        assert_eq!(a.subject.as_deref(), Some("Demo request from /pricing"));
        assert_eq!(a.url.as_deref(), Some("/pricing"));
        let a = note_activity(&note("[download] Прайс-лист 2026", "common"), None).unwrap();
        assert_eq!(
            (a.kind, a.subject.as_deref()),
            (ActivityKind::Download, Some("Прайс-лист 2026"))
        );
        let a = note_activity(&note("[page] https://site.ru/careers", "common"), None).unwrap();
        assert_eq!(
            (a.kind, a.url.as_deref()),
            (ActivityKind::PageView, Some("https://site.ru/careers"))
        );
        let a = note_activity(&note("Клиент просил перезвонить", "common"), None).unwrap();
        assert_eq!(a.kind, ActivityKind::Comment);
        assert!(note_activity(&note("[leadscore] 75 — горячий", "common"), None).is_none());
        assert!(note_activity(&note("{}", "call_in"), None).is_none());
    }

    #[test]
    fn errors_map_to_pipeline_terms() {
        assert!(matches!(
            to_crm(Error::Blocked { detail: "x".into() }),
            CrmError::Blocked(_)
        ));
        assert!(matches!(
            to_crm(Error::TokenRevoked { detail: "x".into() }),
            CrmError::Auth(_)
        ));
        assert!(matches!(
            to_crm(Error::Unauthorized { detail: "x".into() }),
            CrmError::Auth(_)
        ));
        assert!(to_crm(Error::RateLimited).is_retryable());
        assert!(to_crm(Error::GatewayTimeout).is_retryable());
        assert!(matches!(
            to_crm(Error::Validation { errors: vec![] }),
            CrmError::Rejected(_)
        ));
    }

    #[test]
    fn fingerprint_is_stable_and_distinguishes_tokens() {
        assert_eq!(fingerprint("abc"), "e71fa2190541574b");
        assert_ne!(fingerprint("abc"), fingerprint("abd"));
    }

    #[tokio::test]
    async fn sled_token_store_persists_and_obeys_a_new_config_token() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let seed = SecretString::from("r0");
        let ts = SledTokenStore::new(store.clone(), "amo", &seed);
        assert!(ts.load().await.unwrap().is_none());
        let pair = TokenPair {
            access_token: SecretString::from("a1"),
            refresh_token: SecretString::from("r1"),
            expires_at: 99,
        };
        ts.save(&pair).await.unwrap();
        let raw = store.meta_get(&token_key("amo")).unwrap().unwrap();
        assert!(raw.contains("\"seed\""));
        let again = SledTokenStore::new(store.clone(), "amo", &seed);
        let back = again.load().await.unwrap().unwrap();
        assert_eq!(back.refresh_token.expose_secret(), "r1");
        // The admin re-authorized and put a new token into the config: it wins.
        let reauth = SledTokenStore::new(store, "amo", &SecretString::from("r0-new"));
        assert!(reauth.load().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn write_scores_needs_configured_fields() {
        let mut p = portal("http://127.0.0.1:9");
        p.fields.score = None;
        let client = Client::new(
            AmocrmCrm::client_config(&p, "http://127.0.0.1:9"),
            Auth::LongLived(SecretString::from("t")),
        )
        .unwrap();
        let crm = AmocrmCrm::with_client(&p, Arc::new(client));
        let w = ScoreWrite {
            lead_id: "1".into(),
            score: 5,
            tier: "cold".into(),
            breakdown: "x".into(),
            comment: false,
        };
        assert!(matches!(
            crm.write_scores(std::slice::from_ref(&w)).await,
            Err(CrmError::Rejected(_))
        ));
        // A tier without an enum id and a non-numeric lead id are per-lead rejections,
        // decided before any request.
        let crm = self::crm();
        let mut bad_tier = w.clone();
        bad_tier.tier = "lukewarm".into();
        let mut bad_id = w;
        bad_id.lead_id = "L-1".into();
        let out = crm.write_scores(&[bad_tier, bad_id]).await.unwrap();
        assert!(matches!(out.get("1"), Some(Err(CrmError::Rejected(_)))));
        assert!(matches!(out.get("L-1"), Some(Err(CrmError::Rejected(_)))));
        assert_eq!(crm.client().stats().requests, 0);
    }
}

/// The impl against the sandbox account over real HTTP on 127.0.0.1.
#[cfg(test)]
mod sandbox_tests {
    use std::time::Instant;

    use leadscore_amocrm_sandbox::{
        FieldSpec, FieldValue, NewCompany, NewContact, NewEvent, NewLead, Sandbox, SandboxHandle,
        SandboxOptions,
    };
    use serde_json::json;

    use super::tests::portal;
    use super::*;

    fn tiers() -> Vec<(String, String)> {
        vec![
            ("cold".into(), "Холодный".into()),
            ("warm".into(), "Тёплый".into()),
            ("hot".into(), "Горячий".into()),
        ]
    }

    /// One client per account, as in the daemon: two limiters for one account could
    /// together exceed its limit.
    fn client_for(sb: &SandboxHandle) -> Arc<Client> {
        let p = portal(sb.base_url());
        Arc::new(
            Client::new(
                AmocrmCrm::client_config(&p, sb.base_url()),
                Auth::LongLived(sb.long_lived_token().unwrap()),
            )
            .unwrap(),
        )
    }

    fn crm_with(sb: &SandboxHandle, client: &Arc<Client>, fields: FieldsSection) -> AmocrmCrm {
        let mut p = portal(sb.base_url());
        p.fields = fields;
        AmocrmCrm::with_client(&p, client.clone())
    }

    /// Run setup and return the fields section it implies.
    async fn configured(sb: &SandboxHandle, client: &Arc<Client>) -> (AmocrmCrm, FieldsSection) {
        let setup = crm_with(sb, client, FieldsSection::default())
            .setup_fields(&tiers())
            .await
            .unwrap();
        let fields = FieldsSection {
            score: Some(setup.score_field.clone()),
            tier: Some(setup.tier_field.clone()),
            breakdown: Some(setup.breakdown_field.clone()),
            tier_values: setup.tier_values.clone(),
            ..FieldsSection::default()
        };
        (crm_with(sb, client, fields.clone()), fields)
    }

    #[tokio::test]
    async fn setup_creates_api_only_fields_once() {
        let sb = Sandbox::start(SandboxOptions::default()).await.unwrap();
        let crm = crm_with(&sb, &client_for(&sb), FieldsSection::default());
        let first = crm.setup_fields(&tiers()).await.unwrap();
        assert_eq!(first.created.len(), 3);
        assert_eq!(first.tier_values.len(), 3);
        let fields = sb.lead_fields();
        for id in [
            &first.score_field,
            &first.tier_field,
            &first.breakdown_field,
        ] {
            let f = fields.iter().find(|f| f.id.to_string() == *id).unwrap();
            assert!(f.is_api_only, "{}", f.name);
        }
        let again = crm.setup_fields(&tiers()).await.unwrap();
        assert!(again.created.is_empty());
        assert_eq!(
            (again.score_field, again.tier_field, again.tier_values),
            (first.score_field, first.tier_field, first.tier_values)
        );
        sb.shutdown().await;
    }

    #[tokio::test]
    async fn fetch_write_and_task_round_trip() {
        let sb = Sandbox::start(SandboxOptions::default()).await.unwrap();
        let industry =
            sb.create_lead_field(FieldSpec::select("Отрасль", &["Производство", "Ритейл"]));
        let client = client_for(&sb);
        let (_, mut fields) = configured(&sb, &client).await;
        fields
            .map
            .insert("industry".into(), industry.id.to_string());
        let crm = crm_with(&sb, &client, fields.clone());
        let company = sb.add_company(NewCompany::named("ООО Ромашка"));
        let contact = sb
            .add_contact(
                NewContact::named("Иван Петров")
                    .position("Генеральный директор")
                    .email("ivan@romashka.ru")
                    .phone("+7 900 000-00-00")
                    .company(company),
            )
            .unwrap();
        let lead = sb
            .add_lead(
                NewLead::named("Поставка станков")
                    .price(150_000)
                    .field(industry.id, FieldValue::Enum(industry.enums[0].id)),
            )
            .unwrap();
        sb.link_contact(lead, contact, true).unwrap();
        sb.link_company(lead, company).unwrap();
        sb.add_event(NewEvent::lead(lead, "incoming_call")).unwrap();
        sb.add_event(
            NewEvent::lead(lead, "link_followed")
                .after(json!([{"link": {"url": "https://site.ru/pricing"}}])),
        )
        .unwrap();
        sb.add_note(lead, "common", json!({"text": "[demo] Заявка на демо"}))
            .unwrap();
        sb.add_note(lead, "common", json!({"text": "Перезвонить в пятницу"}))
            .unwrap();

        let id = lead.to_string();
        let fetched = crm
            .fetch(&[id.clone(), "424242".into(), "x".into()])
            .await
            .unwrap();
        assert_eq!(
            fetched.len(),
            1,
            "a missing and a non-numeric id are absent"
        );
        let f = &fetched[&id];
        assert_eq!(f.lead.position.as_deref(), Some("Генеральный директор"));
        assert_eq!(f.lead.emails, vec!["ivan@romashka.ru"]);
        assert_eq!(f.lead.company.as_deref(), Some("ООО Ромашка"));
        assert_eq!(f.lead.industry.as_deref(), Some("Производство"));
        assert_eq!(f.current_score, None);
        let kinds: Vec<&str> = f.activities.iter().map(|a| a.kind.as_str()).collect();
        for k in ["call", "page_view", "demo_request", "comment"] {
            assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
        }
        let pv = f
            .activities
            .iter()
            .find(|a| a.kind == ActivityKind::PageView)
            .unwrap();
        assert_eq!(pv.url.as_deref(), Some("https://site.ru/pricing"));

        let write = ScoreWrite {
            lead_id: id.clone(),
            score: 82,
            tier: "hot".into(),
            breakdown: "82 — горячий: +15 должность".into(),
            comment: true,
        };
        let out = crm
            .write_scores(std::slice::from_ref(&write))
            .await
            .unwrap();
        assert!(matches!(out.get(&id), Some(Ok(()))), "{out:?}");
        let stored = sb.lead(lead).unwrap();
        let score_id: u64 = fields.score.as_deref().unwrap().parse().unwrap();
        let tier_id: u64 = fields.tier.as_deref().unwrap().parse().unwrap();
        assert_eq!(stored.text(score_id).as_deref(), Some("82"));
        assert_eq!(
            stored.enum_id(tier_id).map(|e| e.to_string()),
            fields.tier_values.get("hot").cloned()
        );
        assert!(sb.notes(lead).iter().any(|n| n.params["text"]
            .as_str()
            .is_some_and(|t| t.starts_with(OWN_NOTE_PREFIX))));
        // The score is read back, and our own note is not mistaken for activity.
        let again = crm.fetch(std::slice::from_ref(&id)).await.unwrap();
        assert_eq!(again[&id].current_score, Some(82));
        assert_eq!(again[&id].activities.len(), f.activities.len());

        let marker = "leadscore:amo:1".to_string();
        assert_eq!(crm.find_task(&id, &marker).await.unwrap(), None);
        let task = crm
            .create_task(&TaskRequest {
                lead_id: id.clone(),
                responsible_id: Some("3493061".into()),
                title: "Позвонить сейчас".into(),
                text: "Лид набрал 82".into(),
                deadline: Utc::now() + chrono::Duration::minutes(60),
                marker: marker.clone(),
            })
            .await
            .unwrap();
        let tasks = sb.tasks_of(lead);
        assert_eq!(tasks.len(), 1);
        assert_eq!(tasks[0].task_type_id, 1);
        assert_eq!(tasks[0].responsible_user_id, 3_493_061);
        assert_eq!(
            crm.find_task(&id, &marker).await.unwrap(),
            Some(task.clone())
        );
        assert!(crm.task_open(&id, &task.id).await.unwrap());
        sb.complete_task(task.id.parse().unwrap()).unwrap();
        assert!(!crm.task_open(&id, &task.id).await.unwrap());
        assert!(!crm.task_open(&id, "987654").await.unwrap());

        let since = Utc::now() - chrono::Duration::minutes(5);
        assert!(crm.changed_since(since).await.unwrap().contains(&id));
        assert_eq!(sb.count_status(429), 0);
        sb.shutdown().await;
    }

    #[tokio::test]
    async fn oauth_pair_rotates_into_sled_and_survives_a_restart() {
        let sb = Sandbox::start(SandboxOptions::default()).await.unwrap();
        let lead = sb.add_lead(NewLead::named("ACME")).unwrap().to_string();
        let initial = sb.issue_tokens().unwrap().refresh_token;
        let dir = tempfile::tempdir().unwrap();
        let mut p = portal(sb.base_url());
        p.auth = PortalAuth::AmoOAuth {
            base_url: sb.base_url().into(),
            client_id: "sandbox-client-id".into(),
            client_secret: SecretString::from("sandbox-client-secret"),
            redirect_uri: "https://leadscore.test/oauth/amocrm".into(),
            refresh_token: initial.clone(),
        };
        {
            let store = Arc::new(Store::open(dir.path()).unwrap());
            let crm = AmocrmCrm::new(&p, store.clone()).unwrap();
            assert_eq!(
                crm.fetch(std::slice::from_ref(&lead)).await.unwrap().len(),
                1
            );
            let raw = store.meta_get(&token_key("amo")).unwrap().unwrap();
            assert!(
                !raw.contains(initial.expose_secret()),
                "the spent token is not kept"
            );
            assert!(!format!("{crm:?}").contains(initial.expose_secret()));
        }
        // Restart with the same config (its refresh token is spent by now) and an
        // expired access token: the pair from sled is used and rotated again.
        sb.expire_access_tokens();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let crm = AmocrmCrm::new(&p, store).unwrap();
        assert_eq!(
            crm.fetch(std::slice::from_ref(&lead)).await.unwrap().len(),
            1
        );
        assert_eq!(sb.refresh_uses().len(), 2);
        assert_eq!(sb.refresh_reuses(), 0);
        sb.shutdown().await;
    }

    /// The 500-lead burst of issue 4: fetch and write 500 leads at 7 req/s with no 429.
    /// Prints requests per lead and the drain time (BENCHMARKS.md quotes them).
    #[tokio::test]
    async fn a_500_lead_burst_draws_no_429() {
        let sb = Sandbox::start(SandboxOptions::default()).await.unwrap();
        let (crm, _) = configured(&sb, &client_for(&sb)).await;
        let mut ids = Vec::new();
        for i in 0..500u64 {
            let contact = sb
                .add_contact(NewContact::named(&format!("C{i}")).email(&format!("c{i}@corp.ru")))
                .unwrap();
            let lead = sb.add_lead(NewLead::named(&format!("L{i}"))).unwrap();
            sb.link_contact(lead, contact, true).unwrap();
            if i % 5 == 0 {
                sb.add_event(NewEvent::lead(lead, "incoming_call")).unwrap();
            }
            ids.push(lead.to_string());
        }
        let before = crm.client().stats().requests;
        let started = Instant::now();
        let fetched = crm.fetch(&ids).await.unwrap();
        let fetch_requests = crm.client().stats().requests - before;
        assert_eq!(fetched.len(), 500);
        let writes: Vec<ScoreWrite> = ids
            .iter()
            .map(|id| ScoreWrite {
                lead_id: id.clone(),
                score: 40,
                tier: "warm".into(),
                breakdown: "40 — тёплый".into(),
                comment: false,
            })
            .collect();
        let out = crm.write_scores(&writes).await.unwrap();
        assert!(out.values().all(Result::is_ok));
        let took = started.elapsed();
        let total = crm.client().stats().requests - before;
        assert_eq!(sb.count_status(429), 0);
        assert!(!sb.blocked());
        // 2 lead lists + 2 contact lists + 50 event lists; 10 PATCHes of 50.
        assert_eq!(fetch_requests, 54);
        assert_eq!(total, 64);
        eprintln!(
            "amoCRM 500-lead burst: {total} requests ({:.3} per lead: fetch {fetch_requests}, write {}), drained in {:.1} s, 0 x 429",
            total as f64 / 500.0,
            total - fetch_requests,
            took.as_secs_f64()
        );
        sb.shutdown().await;
    }
}

//! Bitrix24 implementation of the `Crm` trait.
//!
//! Everything goes through one paced [`Client`] per portal and is packed into `batch`
//! requests: fetching 50 leads with their activities costs 2 requests (one batch with
//! one `crm.lead.list` filtered by the 50 ids plus 49 `crm.activity.list`, then one
//! more batch for the last activity list), a score write-back for 50 leads costs 1.
//! Lead data is read with `crm.lead.list` and written with `crm.lead.update` (see the
//! client module for why these and not `crm.item.*`).
//!
//! **Activities → neutral kinds.** `TYPE_ID` 1 meeting, 2 call, 3 task, 4 e-mail (with
//! `DIRECTION` 1 incoming / 2 outgoing), 5 (calendar import) meeting. `TYPE_ID` 6 is
//! provider-managed and classified by `PROVIDER_ID`: `CRM_WEBFORM` → form (a demo
//! request when its subject mentions "demo"/"демо"), `CRM_TODO` → task,
//! `VOXIMPLANT_CALL`/`CALL` → call, `CRM_EMAIL` → e-mail, `CRM_MEETING` → meeting,
//! anything else → a custom kind named after the provider (lower-case).
//! Website behaviour that Bitrix24 has no activity type for (demo requests, downloads,
//! page views) is recognised by a **subject tag**: whatever puts it into the CRM (a site
//! tracker calling `crm.activity.add`, a form handler, a robot) starts the `SUBJECT`
//! with `[demo]`, `[download]`, `[page]`, `[email_open]` or `[form]`, e.g.
//! `[download] Price list 2026`, and may put the URL first in `DESCRIPTION`. Tags are
//! matched case-insensitively before the type rules and can be replaced with
//! [`Bitrix24Crm::with_classifier`]. `START_TIME` (else `CREATED`) is the time.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use leadscore_bitrix24::batch::{BatchCommand, CommandResult};
use leadscore_bitrix24::client::{
    comment_params, decode, decode_list, lead_update_params, task_fields, Auth, Client,
    ClientConfig, LimitsSnapshot, OAuth, OAuthTokens, TokenCallback, UsageCallback,
    DEFAULT_OAUTH_SERVER,
};
use leadscore_bitrix24::error::Error;
use leadscore_bitrix24::limiter::{OperatingConfig, PacingConfig};
use leadscore_bitrix24::types::{
    value_f64, value_i64, value_text, ActivityRecord, LeadRecord, TaskRecord, UserField,
};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Map, Value};

use super::{
    ActivityRead, Crm, CrmError, FetchRequest, Fetched, FieldSetup, LeadId, MethodBudget,
    ScoreWrite, TaskRef, TaskRequest,
};
use crate::config::{FieldsSection, Portal, PortalAuth, TaskKind, TaskSection};
use crate::lead::{Activity, ActivityKind, Direction, Lead};
use crate::store::Store;

/// Bitrix24's owner type id of leads.
const LEAD_OWNER_TYPE: u32 = 1;

/// Field names `setup` creates when the config names none (Bitrix24 prefixes `UF_CRM_`).
const DEFAULT_SCORE_FIELD: &str = "UF_CRM_LEADSCORE";
const DEFAULT_TIER_FIELD: &str = "UF_CRM_LEADSCORE_TIER";
const DEFAULT_BREAKDOWN_FIELD: &str = "UF_CRM_LEADSCORE_WHY";

/// Lead fields read for scoring (`*` = all standard fields, `UF_*` = all user fields;
/// multi-fields must be named).
const LEAD_SELECT: [&str; 4] = ["*", "UF_*", "EMAIL", "PHONE"];

const ACTIVITY_SELECT: [&str; 14] = [
    "ID",
    "OWNER_ID",
    "OWNER_TYPE_ID",
    "TYPE_ID",
    "PROVIDER_ID",
    "PROVIDER_TYPE_ID",
    "SUBJECT",
    "DESCRIPTION",
    "DIRECTION",
    "COMPLETED",
    "START_TIME",
    "CREATED",
    "RESPONSIBLE_ID",
    "END_TIME",
];

/// Recognises website behaviour by a tag at the start of an activity's subject.
#[derive(Debug, Clone, PartialEq)]
pub struct ActivityClassifier {
    /// (tag, kind), matched case-insensitively as a prefix of `SUBJECT`.
    pub subject_tags: Vec<(String, ActivityKind)>,
}

impl Default for ActivityClassifier {
    fn default() -> Self {
        ActivityClassifier {
            subject_tags: vec![
                ("[demo]".into(), ActivityKind::DemoRequest),
                ("[download]".into(), ActivityKind::Download),
                ("[page]".into(), ActivityKind::PageView),
                ("[email_open]".into(), ActivityKind::EmailOpen),
                ("[form]".into(), ActivityKind::Form),
            ],
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
        let lower = subject.to_lowercase();
        let tagged = self
            .subject_tags
            .iter()
            .find(|(tag, _)| lower.starts_with(&tag.to_lowercase()));
        let (kind, subject) = match tagged {
            Some((tag, kind)) => {
                let rest: String = subject.chars().skip(tag.chars().count()).collect();
                (kind.clone(), rest.trim().to_string())
            }
            None => (type_kind(a, &lower), subject),
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

fn first_url(text: &str) -> Option<String> {
    text.split_whitespace()
        .find(|w| w.starts_with("http://") || w.starts_with("https://"))
        .map(|w| {
            w.trim_end_matches(['.', ',', ';', ')', '"', '\''])
                .to_string()
        })
}

/// Why a `Bitrix24Crm` could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The portal's credentials are not Bitrix24 ones.
    #[error("portal {0}: no Bitrix24 webhook_url or OAuth credentials")]
    NotBitrix24(String),
    #[error(transparent)]
    Client(#[from] Error),
    #[error("portal {portal}: cannot read the rotated OAuth tokens from the store: {detail}")]
    Store { portal: String, detail: String },
}

/// The `Crm` of one Bitrix24 portal.
#[derive(Debug, Clone)]
pub struct Bitrix24Crm {
    portal_id: String,
    client: Client,
    fields: FieldsSection,
    task: TaskSection,
    classifier: ActivityClassifier,
    max_activity_pages: u32,
}

fn store_key(portal: &str) -> String {
    format!("oauth:bitrix24:{portal}")
}

/// Store key of the portal's limits (bucket level and operating time) between runs.
fn limits_key(portal: &str) -> String {
    format!("limits:bitrix24:{portal}")
}

impl Bitrix24Crm {
    /// Build from the resolved config. For OAuth portals, a refresh token rotated into
    /// the store by an earlier run wins over the one in the config (which is single-use
    /// once rotated), and every new pair is written back to the store and flushed.
    pub fn new(portal: &Portal, store: Arc<Store>) -> Result<Bitrix24Crm, BuildError> {
        Self::with_oauth_server(portal, store, DEFAULT_OAUTH_SERVER)
    }

    /// [`Bitrix24Crm::new`] with another OAuth token endpoint (tests point it at a
    /// sandbox on 127.0.0.1; webhook portals ignore it).
    pub fn with_oauth_server(
        portal: &Portal,
        store: Arc<Store>,
        oauth_server: &str,
    ) -> Result<Bitrix24Crm, BuildError> {
        let auth = match &portal.auth {
            PortalAuth::Bitrix24Webhook { url } => Auth::WebhookUrl(url.clone()),
            PortalAuth::Bitrix24OAuth {
                base_url,
                client_id,
                client_secret,
                refresh_token,
            } => {
                let key = store_key(&portal.id);
                let store = store.clone();
                let stored = store.meta_get(&key).map_err(|e| BuildError::Store {
                    portal: portal.id.clone(),
                    detail: e.to_string(),
                })?;
                let tokens = stored
                    .as_deref()
                    .and_then(tokens_from_json)
                    .unwrap_or_else(|| OAuthTokens {
                        access_token: None,
                        refresh_token: refresh_token.clone(),
                        expires_at: None,
                    });
                let persist: TokenCallback = Arc::new(move |t: &OAuthTokens| {
                    if let Err(e) = store.meta_set(&key, &tokens_to_json(t)) {
                        tracing::error!(error = %e, "cannot store rotated Bitrix24 OAuth tokens");
                        return;
                    }
                    // Durable before the new access token is used: this runs once an
                    // hour, and a blocking fsync (well under a millisecond) is cheaper
                    // than losing the only valid refresh token in a crash.
                    if let Err(e) = store.flush_blocking() {
                        tracing::error!(error = %e, "cannot flush rotated Bitrix24 OAuth tokens");
                    }
                });
                Auth::OAuth(OAuth {
                    base_url: base_url.clone(),
                    client_id: client_id.clone(),
                    client_secret: client_secret.clone(),
                    tokens,
                    on_refresh: persist,
                    oauth_server: oauth_server.to_string(),
                })
            }
            _ => return Err(BuildError::NotBitrix24(portal.id.clone())),
        };
        let mut config = Self::client_config(portal);
        let limits_key = limits_key(&portal.id);
        config.restore = store
            .meta_get(&limits_key)
            .ok()
            .flatten()
            .and_then(|s| serde_json::from_str::<LimitsSnapshot>(&s).ok());
        if let Some(r) = &config.restore {
            let spent: f64 = r
                .operating
                .methods
                .values()
                .flat_map(|b| b.iter().map(|(_, s)| s))
                .sum();
            tracing::info!(portal = %portal.id, bucket_level = r.bucket_level, operating_secs = spent, "restored the Bitrix24 limits left by the previous run");
        }
        // Kept with every answer; the pipeline's flush after each batch makes it durable.
        let on_usage: UsageCallback = Arc::new(move |snap: &LimitsSnapshot| {
            if let Ok(json) = serde_json::to_string(snap) {
                if let Err(e) = store.meta_set(&limits_key, &json) {
                    tracing::warn!(error = %e, "cannot keep the Bitrix24 limits in the store");
                }
            }
        });
        config.on_usage = Some(on_usage);
        let client = Client::new(auth, config)?;
        Ok(Self::with_client(portal, client))
    }

    /// Build around a ready client (tests, the demo, a custom OAuth server).
    pub fn with_client(portal: &Portal, client: Client) -> Bitrix24Crm {
        Bitrix24Crm {
            portal_id: portal.id.clone(),
            client,
            fields: portal.fields.clone(),
            task: portal.task.clone(),
            classifier: ActivityClassifier::default(),
            max_activity_pages: 4,
        }
    }

    /// The client settings a portal's config implies (its rate limit as the bucket).
    pub fn client_config(portal: &Portal) -> ClientConfig {
        ClientConfig {
            pacing: PacingConfig {
                per_second: portal.rate_limit.per_second,
                burst: portal.rate_limit.burst,
                ..PacingConfig::standard()
            },
            operating: OperatingConfig {
                limit_secs: portal.rate_limit.operating_limit_secs.unwrap_or(480.0),
                basket_len: Duration::from_secs(
                    portal
                        .rate_limit
                        .operating_window_secs
                        .unwrap_or(600)
                        .max(10),
                ) / 10,
                ..OperatingConfig::default()
            },
            label: portal.id.clone(),
            ..ClientConfig::default()
        }
    }

    /// Replace the subject-tag rules for website behaviour.
    pub fn with_classifier(mut self, classifier: ActivityClassifier) -> Self {
        self.classifier = classifier;
        self
    }

    /// Read at most this many pages (50 each, newest first) of activities per lead.
    pub fn with_max_activity_pages(mut self, pages: u32) -> Self {
        self.max_activity_pages = pages.max(1);
        self
    }

    /// The portal this CRM talks to (config id).
    pub fn portal_id(&self) -> &str {
        &self.portal_id
    }

    /// The underlying client (pacing counters for metrics and benchmarks).
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn score_field(&self) -> &str {
        self.fields.score.as_deref().unwrap_or(DEFAULT_SCORE_FIELD)
    }

    fn lead_from(&self, raw: &Map<String, Value>) -> Result<(Lead, Option<i32>), CrmError> {
        let rec: LeadRecord =
            decode("crm.lead.list", &Value::Object(raw.clone())).map_err(to_crm)?;
        let name = [rec.name.as_deref(), rec.last_name.as_deref()]
            .into_iter()
            .flatten()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        let multi = |v: &[leadscore_bitrix24::types::MultiField]| -> Vec<String> {
            v.iter()
                .filter_map(|m| m.value.clone())
                .filter(|s| !s.trim().is_empty())
                .collect()
        };
        let mut lead = Lead {
            id: rec.id.clone(),
            name: if name.is_empty() {
                rec.title.clone()
            } else {
                Some(name)
            },
            position: rec.post.clone(),
            emails: multi(&rec.email),
            phones: multi(&rec.phone),
            company: rec.company_title.clone(),
            source: rec.source_id.clone(),
            status: rec.status_id.clone(),
            responsible_id: rec.assigned_by_id.clone(),
            created_at: rec.date_create,
            updated_at: rec.date_modify,
            ..Lead::default()
        };
        for (neutral, field) in &self.fields.map {
            let Some(v) = raw.get(field) else { continue };
            let text = match v {
                Value::Array(items) => {
                    let parts: Vec<String> = items.iter().filter_map(value_text).collect();
                    (!parts.is_empty()).then(|| parts.join(", "))
                }
                other => value_text(other),
            };
            match neutral.as_str() {
                "revenue" => lead.revenue = value_f64(v),
                "employees" => lead.employees = value_f64(v),
                "name" => lead.name = text.or(lead.name.take()),
                "position" => lead.position = text.or(lead.position.take()),
                "company" => lead.company = text.or(lead.company.take()),
                "industry" => lead.industry = text,
                "region" => lead.region = text,
                "source" => lead.source = text.or(lead.source.take()),
                "status" => lead.status = text.or(lead.status.take()),
                "responsible_id" => lead.responsible_id = text.or(lead.responsible_id.take()),
                "email" => lead.emails.extend(text),
                "phone" => lead.phones.extend(text),
                other => {
                    let key = other.strip_prefix("custom.").unwrap_or(other);
                    if let Some(t) = text {
                        lead.custom.insert(key.to_string(), t);
                    }
                }
            }
        }
        let score = raw
            .get(self.score_field())
            .and_then(value_i64)
            .and_then(|n| i32::try_from(n).ok());
        Ok((lead, score))
    }

    async fn find_todo(&self, lead_id: &str, marker: &str) -> Result<Option<TaskRef>, CrmError> {
        let (items, _) = self
            .client
            .activity_list(
                json!({"OWNER_TYPE_ID": LEAD_OWNER_TYPE, "OWNER_ID": lead_id, "PROVIDER_ID": "CRM_TODO"}),
                &ACTIVITY_SELECT,
                json!({"ID": "DESC"}),
                Some(0),
            )
            .await
            .map_err(to_crm)?;
        Ok(items
            .into_iter()
            .find(|a| a.description.as_deref().is_some_and(|d| d.contains(marker)))
            .map(|a| TaskRef {
                open: a.completed.as_deref() != Some("Y"),
                id: a.id,
            }))
    }
}

fn tokens_to_json(t: &OAuthTokens) -> String {
    json!({
        "access_token": t.access_token.as_ref().map(|s| s.expose_secret().to_string()),
        "refresh_token": t.refresh_token.expose_secret(),
        "expires_at": t.expires_at.map(|d| d.to_rfc3339()),
    })
    .to_string()
}

fn tokens_from_json(s: &str) -> Option<OAuthTokens> {
    let v: Value = serde_json::from_str(s).ok()?;
    Some(OAuthTokens {
        access_token: v
            .get("access_token")
            .and_then(Value::as_str)
            .map(|s| SecretString::from(s.to_string())),
        refresh_token: SecretString::from(v.get("refresh_token")?.as_str()?.to_string()),
        expires_at: v
            .get("expires_at")
            .and_then(Value::as_str)
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|d| d.with_timezone(&Utc)),
    })
}

/// Map a client error to the pipeline's terms.
pub fn to_crm(e: Error) -> CrmError {
    match &e {
        Error::Overload => CrmError::Blocked(e.to_string()),
        Error::Auth { .. } => CrmError::Auth(e.to_string()),
        _ if e.is_retryable() => CrmError::Transient {
            message: e.to_string(),
            retry_after: e.retry_after(),
        },
        _ => CrmError::Rejected(e.to_string()),
    }
}

/// The lead an activity belongs to: its owner when that is a lead, else the first lead
/// among its bindings.
fn lead_of_activity(raw: &Value) -> Option<LeadId> {
    let lead_pair = |v: &Value| -> Option<String> {
        (v.get("OWNER_TYPE_ID").and_then(value_i64) == Some(i64::from(LEAD_OWNER_TYPE)))
            .then(|| v.get("OWNER_ID").and_then(value_text))
            .flatten()
    };
    lead_pair(raw).or_else(|| {
        raw.get("BINDINGS")
            .and_then(Value::as_array)
            .and_then(|b| b.iter().find_map(lead_pair))
    })
}

fn is_numeric_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 18 && s.bytes().all(|b| b.is_ascii_digit())
}

/// Rows per list page (fixed by Bitrix24).
const PAGE: usize = 50;

/// Leads whose whole history is read share one `crm.activity.list` per this many: most
/// leads seen for the first time are new and have a handful of activities at most, so
/// 25 usually fit one page of 50; a busy group pages on (newest first).
const FULL_GROUP: usize = 25;

/// How far back from the portal's own clock an incremental read's cursor is set, so an
/// activity saved while the read ran (or with a slightly older LAST_UPDATED) is never
/// missed; re-reading a few is harmless (they merge by id).
const CURSOR_MARGIN_SECS: i64 = 120;

/// One `crm.activity.list` over several leads: all their activities (a full read) or
/// those changed since the oldest of their cursors.
#[derive(Debug)]
struct ActivityGroup<'a> {
    owners: Vec<&'a str>,
    since: Option<String>,
}

impl ActivityGroup<'_> {
    /// The list command; `page` = (page number, lowest ID seen so far) for a follow-up.
    fn command(&self, g: usize, page: Option<(u32, u64)>) -> BatchCommand {
        let mut filter = json!({"OWNER_TYPE_ID": LEAD_OWNER_TYPE, "@OWNER_ID": self.owners});
        if let Some(since) = &self.since {
            filter[">=LAST_UPDATED"] = json!(since);
        }
        let key = match page {
            Some((n, below)) => {
                filter["<ID"] = json!(below);
                format!("a{g}_{n}")
            }
            None => format!("a{g}_1"),
        };
        BatchCommand::new(
            key,
            "crm.activity.list",
            json!({"filter": filter, "select": ACTIVITY_SELECT, "order": {"ID": "DESC"}, "start": -1}),
        )
    }

    /// Pages this group may read: the per-lead budget times its leads.
    fn max_pages(&self, per_lead: u32) -> u32 {
        per_lead.saturating_mul(self.owners.len() as u32).max(1)
    }
}

/// The group index of an activity command key (`a{g}_{page}`).
fn group_of_key(key: &str) -> Option<usize> {
    key.strip_prefix('a')?.split('_').next()?.parse().ok()
}

/// Group the leads that need activities: full reads by [`FULL_GROUP`], incremental
/// ones by 50 with neighbouring cursors together (a group reads from its oldest).
fn activity_groups<'a>(modes: &BTreeMap<&'a str, &ActivityRead>) -> Vec<ActivityGroup<'a>> {
    let mut full = Vec::new();
    let mut since: Vec<(&str, &str)> = Vec::new();
    for (id, mode) in modes {
        match mode {
            ActivityRead::Full => full.push(*id),
            ActivityRead::Since(c) if DateTime::parse_from_rfc3339(c).is_ok() => {
                since.push((*id, c.as_str()))
            }
            ActivityRead::Since(_) => full.push(*id),
            ActivityRead::Skip => {}
        }
    }
    since.sort_by(|a, b| a.1.cmp(b.1));
    let mut groups: Vec<ActivityGroup<'a>> = full
        .chunks(FULL_GROUP)
        .map(|c| ActivityGroup {
            owners: c.to_vec(),
            since: None,
        })
        .collect();
    groups.extend(since.chunks(PAGE).map(|c| ActivityGroup {
        owners: c.iter().map(|(id, _)| *id).collect(),
        since: c.first().map(|(_, cur)| (*cur).to_string()),
    }));
    groups
}

/// The cursor for the next incremental read: when the portal started this read (its
/// own clock, from `result_time`), less a margin; our clock if it gave no time.
fn read_cursor(time: Option<&leadscore_bitrix24::types::Time>) -> String {
    let started = time
        .and_then(|t| t.start)
        .filter(|s| s.is_finite() && *s > 0.0)
        .and_then(|s| DateTime::from_timestamp(s as i64, 0))
        .unwrap_or_else(|| Utc::now() - chrono::Duration::seconds(CURSOR_MARGIN_SECS));
    (started - chrono::Duration::seconds(CURSOR_MARGIN_SECS))
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The first error of a set of command results, preferring the most actionable kind.
fn first_error<'a>(results: impl Iterator<Item = &'a CommandResult>) -> Option<Error> {
    let mut errors: Vec<&Error> = results.filter_map(|r| r.result.as_ref().err()).collect();
    errors.sort_by_key(|e| match e {
        Error::Auth { .. } => 0,
        Error::Overload => 1,
        e if e.is_retryable() => 2,
        _ => 3,
    });
    errors.first().map(|e| (*e).clone())
}

#[async_trait]
impl Crm for Bitrix24Crm {
    fn pacing(&self) -> Option<crate::crm::PacingState> {
        let s = self.client.stats();
        let now = Utc::now();
        let methods = self
            .client
            .operating_usage()
            .into_iter()
            .map(|u| MethodBudget {
                method: u.method,
                used_secs: u.used_secs,
                limit_secs: u.limit_secs,
                paused_until: u
                    .paused_for
                    .and_then(|d| chrono::Duration::from_std(d).ok())
                    .map(|d| now + d),
            })
            .collect();
        Some(crate::crm::PacingState {
            requests: s.requests_sent,
            limit_errors: s.limit_errors,
            wait_secs: (s.total_wait + s.operating_wait).as_secs_f64(),
            blocked: false,
            methods,
        })
    }

    async fn resolve_activities(
        &self,
        activity_ids: &[String],
    ) -> Result<BTreeMap<String, Option<LeadId>>, CrmError> {
        // `crm.activity.list` filtered by a list of IDs (not one `.get` each): one
        // command answers up to 50 activity events, and it can select `BINDINGS`, so an
        // activity owned by a deal but also bound to a lead still finds its lead; a
        // deleted activity is simply absent rather than an error text to interpret.
        let mut out = BTreeMap::new();
        let mut wanted = Vec::new();
        for id in activity_ids.iter().collect::<BTreeSet<_>>() {
            out.insert(id.clone(), None);
            if is_numeric_id(id) {
                wanted.push(id.as_str());
            }
        }
        let cmds: Vec<BatchCommand> = wanted
            .chunks(PAGE)
            .enumerate()
            .map(|(i, ids)| {
                BatchCommand::new(
                    format!("g{i}"),
                    "crm.activity.list",
                    json!({"filter": {"@ID": ids}, "select": ["ID", "OWNER_ID", "OWNER_TYPE_ID", "BINDINGS"], "order": {"ID": "ASC"}, "start": -1}),
                )
            })
            .collect();
        if cmds.is_empty() {
            return Ok(out);
        }
        let results = self.client.batch_all(cmds).await.map_err(to_crm)?;
        if let Some(e) = first_error(results.values()) {
            return Err(to_crm(e));
        }
        for r in results.values() {
            let rows: Vec<Value> =
                decode_list("crm.activity.list", r.result.as_ref().expect("checked"))
                    .map_err(to_crm)?;
            for row in rows {
                if let Some(id) = row.get("ID").and_then(value_text) {
                    out.insert(id, lead_of_activity(&row));
                }
            }
        }
        Ok(out)
    }

    async fn fetch(&self, lead_ids: &[LeadId]) -> Result<BTreeMap<LeadId, Fetched>, CrmError> {
        let requests: Vec<FetchRequest> = lead_ids
            .iter()
            .map(|id| FetchRequest {
                id: id.clone(),
                activities: ActivityRead::Full,
            })
            .collect();
        self.fetch_incremental(&requests).await
    }

    async fn fetch_incremental(
        &self,
        requests: &[FetchRequest],
    ) -> Result<BTreeMap<LeadId, Fetched>, CrmError> {
        let mut modes: BTreeMap<&str, &ActivityRead> = BTreeMap::new();
        for r in requests.iter().filter(|r| is_numeric_id(&r.id)) {
            modes.insert(r.id.as_str(), &r.activities);
        }
        if modes.is_empty() {
            return Ok(BTreeMap::new());
        }
        let ids: Vec<&str> = modes.keys().copied().collect();
        let mut cmds = Vec::new();
        for (i, chunk) in ids.chunks(PAGE).enumerate() {
            cmds.push(BatchCommand::new(
                format!("l{i}"),
                "crm.lead.list",
                json!({"filter": {"@ID": chunk}, "select": LEAD_SELECT, "order": {"ID": "ASC"}, "start": -1}),
            ));
        }
        let groups = activity_groups(&modes);
        for (g, group) in groups.iter().enumerate() {
            cmds.push(group.command(g, None));
        }
        let results = self.client.batch_all(cmds).await.map_err(to_crm)?;
        if let Some(e) = first_error(results.values()) {
            return Err(to_crm(e));
        }
        let mut out = BTreeMap::new();
        for (key, r) in results.iter().filter(|(k, _)| k.starts_with('l')) {
            let rows: Vec<Map<String, Value>> =
                decode_list("crm.lead.list", r.result.as_ref().expect("checked"))
                    .map_err(to_crm)?;
            for raw in rows {
                let (lead, current_score) = self.lead_from(&raw)?;
                tracing::trace!(batch = %key, lead = %lead.id, "lead fetched");
                let mode = modes.get(lead.id.as_str()).copied();
                let mut f = Fetched::complete(lead, Vec::new(), current_score);
                f.activities_complete = mode == Some(&ActivityRead::Full);
                out.insert(f.lead.id.clone(), f);
            }
        }
        // Activities: the first page of every group is in `results`; a full page means
        // there may be more (older ones, newest first), read in follow-up batches up to
        // the group's page budget.
        let mut pending: Vec<(usize, u32, CommandResult)> = results
            .into_iter()
            .filter_map(|(k, r)| group_of_key(&k).map(|g| (g, 1, r)))
            .collect();
        while !pending.is_empty() {
            let mut more = Vec::new();
            for (g, page, r) in pending {
                let group = &groups[g];
                let rows: Vec<ActivityRecord> =
                    decode_list("crm.activity.list", r.result.as_ref().expect("checked"))
                        .map_err(to_crm)?;
                let cursor = read_cursor(r.time.as_ref());
                for id in &group.owners {
                    if let Some(f) = out.get_mut(*id) {
                        if f.activity_cursor.as_ref().is_none_or(|c| *c > cursor) {
                            f.activity_cursor = Some(cursor.clone());
                        }
                    }
                }
                let oldest = rows.iter().filter_map(|a| a.id.parse::<u64>().ok()).min();
                for a in &rows {
                    let owner = a.owner_id.as_deref().unwrap_or("");
                    if let Some(f) = out.get_mut(owner) {
                        f.activities.extend(self.classifier.classify(a));
                    }
                }
                if rows.len() >= PAGE && page < group.max_pages(self.max_activity_pages) {
                    if let Some(oldest) = oldest {
                        more.push((g, page + 1, group.command(g, Some((page + 1, oldest)))));
                    }
                }
            }
            if more.is_empty() {
                break;
            }
            let pages: BTreeMap<String, (usize, u32)> = more
                .iter()
                .map(|(g, p, c)| (c.key.clone(), (*g, *p)))
                .collect();
            let results = self
                .client
                .batch_all(more.into_iter().map(|(_, _, c)| c).collect())
                .await
                .map_err(to_crm)?;
            if let Some(e) = first_error(results.values()) {
                return Err(to_crm(e));
            }
            pending = results
                .into_iter()
                .filter_map(|(k, r)| pages.get(&k).map(|(g, p)| (*g, *p, r)))
                .collect();
        }
        for f in out.values_mut() {
            f.activities
                .sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.id.cmp(&b.id)));
            f.activities.dedup_by(|a, b| a.id == b.id);
        }
        Ok(out)
    }

    async fn write_scores(
        &self,
        writes: &[ScoreWrite],
    ) -> Result<BTreeMap<LeadId, Result<(), CrmError>>, CrmError> {
        let mut out = BTreeMap::new();
        let mut cmds = Vec::new();
        for w in writes {
            if !is_numeric_id(&w.lead_id) {
                out.insert(
                    w.lead_id.clone(),
                    Err(CrmError::Rejected(format!(
                        "{:?} is not a lead id",
                        w.lead_id
                    ))),
                );
                continue;
            }
            let mut fields = Map::new();
            fields.insert(self.score_field().to_string(), json!(w.score));
            if let Some(tier_field) = &self.fields.tier {
                match self.fields.tier_values.get(&w.tier) {
                    Some(item) => {
                        fields.insert(tier_field.clone(), json!(item));
                    }
                    None => {
                        out.insert(
                            w.lead_id.clone(),
                            Err(CrmError::Rejected(format!(
                                "tier {:?} has no enumeration id in fields.tier_values (run `leadscore setup`)",
                                w.tier
                            ))),
                        );
                        continue;
                    }
                }
            }
            if let Some(b) = &self.fields.breakdown {
                fields.insert(b.clone(), json!(w.breakdown));
            }
            cmds.push(BatchCommand::new(
                format!("u{}", w.lead_id),
                "crm.lead.update",
                lead_update_params(&w.lead_id, Value::Object(fields)),
            ));
            if w.comment {
                cmds.push(BatchCommand::new(
                    format!("m{}", w.lead_id),
                    "crm.timeline.comment.add",
                    comment_params("lead", &w.lead_id, &w.breakdown),
                ));
            }
        }
        if cmds.is_empty() {
            return Ok(out);
        }
        let results = self.client.batch_all(cmds).await.map_err(to_crm)?;
        for w in writes {
            if out.contains_key(&w.lead_id) {
                continue;
            }
            let update = results.get(&format!("u{}", w.lead_id));
            let outcome = match update.map(|r| &r.result) {
                Some(Ok(v)) => {
                    leadscore_bitrix24::client::expect_true("crm.lead.update", v).map_err(to_crm)
                }
                Some(Err(e)) => Err(to_crm(e.clone())),
                None => Err(CrmError::Transient {
                    message: "no result for the update".into(),
                    retry_after: None,
                }),
            };
            let outcome = match (outcome, results.get(&format!("m{}", w.lead_id))) {
                (Ok(()), Some(CommandResult { result: Err(e), .. })) => Err(to_crm(e.clone())),
                (o, _) => o,
            };
            out.insert(w.lead_id.clone(), outcome);
        }
        Ok(out)
    }

    async fn find_task(&self, lead_id: &str, marker: &str) -> Result<Option<TaskRef>, CrmError> {
        if !is_numeric_id(lead_id) {
            return Ok(None);
        }
        if self.task.kind == TaskKind::Todo {
            return self.find_todo(lead_id, marker).await;
        }
        let tasks = self
            .client
            .task_list(
                json!({"UF_CRM_TASK": format!("L_{lead_id}")}),
                &["ID", "TITLE", "DESCRIPTION", "STATUS", "RESPONSIBLE_ID"],
            )
            .await
            .map_err(to_crm)?;
        Ok(tasks
            .into_iter()
            .find(|t| t.description.as_deref().is_some_and(|d| d.contains(marker)))
            .map(|t| TaskRef {
                open: t.is_open(),
                id: t.id,
            }))
    }

    async fn create_task(&self, task: &TaskRequest) -> Result<TaskRef, CrmError> {
        if !is_numeric_id(&task.lead_id) {
            return Err(CrmError::Rejected(format!(
                "{:?} is not a lead id",
                task.lead_id
            )));
        }
        let responsible = task
            .responsible_id
            .clone()
            .or_else(|| self.task.fallback_responsible_id.clone());
        let description = format!("{}\n\n{}", task.text, task.marker);
        match self.task.kind {
            TaskKind::Task => {
                let fields = task_fields(
                    &task.lead_id,
                    &task.title,
                    &description,
                    responsible.as_deref(),
                    task.deadline,
                );
                let t: TaskRecord = self.client.task_add(fields).await.map_err(to_crm)?;
                Ok(TaskRef {
                    id: t.id,
                    open: true,
                })
            }
            TaskKind::Todo => {
                let mut params = json!({
                    "ownerTypeId": LEAD_OWNER_TYPE,
                    "ownerId": task.lead_id,
                    "deadline": task.deadline.to_rfc3339_opts(SecondsFormat::Secs, true),
                    "title": task.title,
                    "description": description,
                });
                if let Some(r) = responsible {
                    params["responsibleId"] = json!(r);
                }
                let id = self.client.todo_add(params).await.map_err(to_crm)?;
                Ok(TaskRef { id, open: true })
            }
        }
    }

    async fn task_open(&self, _lead_id: &str, task_id: &str) -> Result<bool, CrmError> {
        if !is_numeric_id(task_id) {
            return Ok(false);
        }
        match self.task.kind {
            TaskKind::Task => {
                let tasks = self
                    .client
                    .task_list(json!({ "ID": task_id }), &["ID", "STATUS"])
                    .await
                    .map_err(to_crm)?;
                Ok(tasks.iter().any(|t| t.id == task_id && t.is_open()))
            }
            TaskKind::Todo => match self.client.activity_get(task_id).await {
                Ok(a) => Ok(a.completed.as_deref() != Some("Y")),
                Err(e) if e.is_not_found() => Ok(false),
                Err(e) => Err(to_crm(e)),
            },
        }
    }

    async fn changed_since(&self, since: DateTime<Utc>) -> Result<Vec<LeadId>, CrmError> {
        let mut out = Vec::new();
        let mut last: u64 = 0;
        let since = since.to_rfc3339_opts(SecondsFormat::Secs, false);
        // Bounded: 2,000 pages = 100,000 leads per sweep; the next sweep continues.
        for _ in 0..2000 {
            let (rows, _) = self
                .client
                .lead_list(
                    json!({">=DATE_MODIFY": since, ">ID": last}),
                    &["ID", "DATE_MODIFY"],
                    json!({"ID": "ASC"}),
                    None,
                )
                .await
                .map_err(to_crm)?;
            let n = rows.len();
            for r in rows {
                if let Ok(id) = r.id.parse::<u64>() {
                    last = last.max(id);
                }
                out.push(r.id);
            }
            if n < 50 {
                break;
            }
        }
        Ok(out)
    }

    async fn setup_fields(&self, tiers: &[(String, String)]) -> Result<FieldSetup, CrmError> {
        let score = self.score_field().to_string();
        let tier = self
            .fields
            .tier
            .clone()
            .unwrap_or_else(|| DEFAULT_TIER_FIELD.into());
        let breakdown = self
            .fields
            .breakdown
            .clone()
            .unwrap_or_else(|| DEFAULT_BREAKDOWN_FIELD.into());
        let existing = self
            .client
            .lead_userfield_list(json!({}))
            .await
            .map_err(to_crm)?;
        let find = |name: &str| {
            existing
                .iter()
                .find(|f| f.field_name.eq_ignore_ascii_case(name))
                .cloned()
        };
        let mut created = Vec::new();
        let wanted: [(&str, &str, &str); 3] = [
            (&score, "integer", "Lead score"),
            (&tier, "enumeration", "Lead tier"),
            (&breakdown, "string", "Lead score: why"),
        ];
        for (name, kind, label) in wanted {
            if let Some(f) = find(name) {
                let actual = f.user_type_id.as_deref().unwrap_or("");
                if !actual.eq_ignore_ascii_case(kind) {
                    return Err(CrmError::Rejected(format!(
                        "field {name} exists with type {actual:?}, expected {kind}"
                    )));
                }
                continue;
            }
            let code = name.strip_prefix("UF_CRM_").ok_or_else(|| {
                CrmError::Rejected(format!("field name {name:?} must start with UF_CRM_"))
            })?;
            let mut fields = json!({
                "FIELD_NAME": code,
                "USER_TYPE_ID": kind,
                "LABEL": label,
                "EDIT_FORM_LABEL": label,
                "LIST_COLUMN_LABEL": label,
                "MULTIPLE": "N",
                "MANDATORY": "N",
                "SHOW_FILTER": "Y",
                "XML_ID": name,
            });
            if kind == "enumeration" {
                fields["LIST"] = enum_items(tiers, &[]);
                fields["SETTINGS"] = json!({"DISPLAY": "LIST"});
            }
            self.client
                .lead_userfield_add(fields)
                .await
                .map_err(to_crm)?;
            created.push(name.to_string());
        }
        // Enumeration ids exist only after creation: read the tier field back.
        let mut tier_field = self.read_userfield(&tier).await?;
        let missing: Vec<&(String, String)> = tiers
            .iter()
            .filter(|(id, _)| {
                !tier_field
                    .list
                    .iter()
                    .any(|i| i.xml_id.as_deref() == Some(id))
            })
            .collect();
        if !missing.is_empty() {
            self.client
                .lead_userfield_update(
                    &tier_field.id,
                    json!({ "LIST": enum_items(tiers, &tier_field.list) }),
                )
                .await
                .map_err(to_crm)?;
            tier_field = self.read_userfield(&tier).await?;
        }
        let mut tier_values = BTreeMap::new();
        for (id, _) in tiers {
            let item = tier_field
                .list
                .iter()
                .find(|i| i.xml_id.as_deref() == Some(id.as_str()))
                .ok_or_else(|| {
                    CrmError::Rejected(format!("tier {id:?} is missing from {tier} after setup"))
                })?;
            tier_values.insert(id.clone(), item.id.clone());
        }
        Ok(FieldSetup {
            score_field: score,
            tier_field: tier,
            breakdown_field: breakdown,
            tier_values,
            created,
        })
    }
}

impl Bitrix24Crm {
    async fn read_userfield(&self, name: &str) -> Result<UserField, CrmError> {
        self.client
            .lead_userfield_list(json!({ "FIELD_NAME": name }))
            .await
            .map_err(to_crm)?
            .into_iter()
            .find(|f| f.field_name.eq_ignore_ascii_case(name))
            .ok_or_else(|| CrmError::Rejected(format!("field {name} not found after creating it")))
    }
}

/// `LIST` for the tier enumeration: existing items kept (with their ids), missing tiers
/// added with `XML_ID` = tier id so lookups survive renames.
fn enum_items(
    tiers: &[(String, String)],
    existing: &[leadscore_bitrix24::types::EnumItem],
) -> Value {
    let mut items: Vec<Value> = existing
        .iter()
        .map(|i| json!({"ID": i.id, "VALUE": i.value, "XML_ID": i.xml_id, "SORT": i.sort}))
        .collect();
    for (n, (id, label)) in tiers.iter().enumerate() {
        if existing
            .iter()
            .any(|i| i.xml_id.as_deref() == Some(id.as_str()))
        {
            continue;
        }
        items.push(json!({"VALUE": label, "XML_ID": id, "SORT": (n + 1) * 10, "DEF": "N"}));
    }
    Value::Array(items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CrmKind, RateLimitSection, WebhookCheck};

    fn portal() -> Portal {
        let mut fields = FieldsSection {
            score: Some("UF_CRM_LEADSCORE".into()),
            tier: Some("UF_CRM_LEADSCORE_TIER".into()),
            breakdown: Some("UF_CRM_LEADSCORE_WHY".into()),
            ..FieldsSection::default()
        };
        fields.map.insert("revenue".into(), "UF_CRM_REVENUE".into());
        fields.map.insert("employees".into(), "UF_CRM_STAFF".into());
        fields
            .map
            .insert("industry".into(), "UF_CRM_INDUSTRY".into());
        fields
            .map
            .insert("custom.budget".into(), "UF_CRM_BUDGET".into());
        Portal {
            id: "p".into(),
            crm: CrmKind::Bitrix24,
            auth: PortalAuth::Bitrix24Webhook {
                url: SecretString::from("http://127.0.0.1:9/rest/1/code/".to_string()),
            },
            webhook: WebhookCheck::default(),
            rate_limit: RateLimitSection {
                per_second: 2.0,
                burst: 50,
                operating_limit_secs: None,
                operating_window_secs: None,
            },
            fields,
            task: TaskSection::default(),
            threshold: 70,
            rearm_below: 60,
        }
    }

    fn crm() -> Bitrix24Crm {
        let p = portal();
        let client = Client::new(
            Auth::WebhookUrl(SecretString::from(
                "http://127.0.0.1:9/rest/1/code/".to_string(),
            )),
            Bitrix24Crm::client_config(&p),
        )
        .unwrap();
        Bitrix24Crm::with_client(&p, client)
    }

    #[test]
    fn maps_a_lead_with_mapping_and_score() {
        let raw = json!({"ID": "42", "TITLE": "Лид с сайта", "NAME": "Иван", "LAST_NAME": "Петров",
            "POST": "Генеральный директор", "COMPANY_TITLE": "ООО Ромашка", "ASSIGNED_BY_ID": "7",
            "SOURCE_ID": "WEB", "STATUS_ID": "NEW", "DATE_CREATE": "2026-11-20T10:00:00+03:00",
            "EMAIL": [{"VALUE": "ivan@romashka.ru", "VALUE_TYPE": "WORK"}, {"VALUE": ""}],
            "PHONE": [{"VALUE": "+7 900 000-00-00"}],
            "UF_CRM_REVENUE": "12 000 000", "UF_CRM_STAFF": 150, "UF_CRM_INDUSTRY": "Retail",
            "UF_CRM_BUDGET": ["yes"], "UF_CRM_LEADSCORE": "64"});
        let (lead, score) = crm().lead_from(raw.as_object().unwrap()).unwrap();
        assert_eq!(lead.name.as_deref(), Some("Иван Петров"));
        assert_eq!(lead.position.as_deref(), Some("Генеральный директор"));
        assert_eq!(lead.emails, vec!["ivan@romashka.ru"]);
        assert_eq!(lead.phones.len(), 1);
        assert_eq!(lead.company.as_deref(), Some("ООО Ромашка"));
        assert_eq!(lead.responsible_id.as_deref(), Some("7"));
        assert_eq!(lead.revenue, Some(12_000_000.0));
        assert_eq!(lead.employees, Some(150.0));
        assert_eq!(lead.industry.as_deref(), Some("Retail"));
        assert_eq!(lead.custom["budget"], "yes");
        assert_eq!(
            lead.created_at.unwrap().to_rfc3339(),
            "2026-11-20T07:00:00+00:00"
        );
        assert_eq!(score, Some(64));
        let (lead, score) = crm()
            .lead_from(json!({"ID": "1", "TITLE": "T"}).as_object().unwrap())
            .unwrap();
        assert_eq!((lead.name.as_deref(), score), (Some("T"), None));
    }

    fn act(v: Value) -> ActivityRecord {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn classifies_activities() {
        let c = ActivityClassifier::default();
        let t = "2026-11-20T10:00:00+03:00";
        let k = |v: Value| c.classify(&act(v)).unwrap();
        assert_eq!(
            k(json!({"ID": "1", "TYPE_ID": "2", "DIRECTION": "1", "START_TIME": t})).kind,
            ActivityKind::Call
        );
        assert_eq!(
            k(json!({"ID": "1", "TYPE_ID": "2", "DIRECTION": "1", "START_TIME": t})).direction,
            Some(Direction::Incoming)
        );
        assert_eq!(
            k(json!({"ID": "1", "TYPE_ID": "4", "DIRECTION": "2", "CREATED": t})).direction,
            Some(Direction::Outgoing)
        );
        assert_eq!(
            k(json!({"ID": "1", "TYPE_ID": "1", "START_TIME": t})).kind,
            ActivityKind::Meeting
        );
        assert_eq!(k(json!({"ID": "1", "TYPE_ID": "6", "PROVIDER_ID": "CRM_WEBFORM", "SUBJECT": "Заявка", "START_TIME": t})).kind, ActivityKind::Form);
        assert_eq!(k(json!({"ID": "1", "TYPE_ID": "6", "PROVIDER_ID": "CRM_WEBFORM", "SUBJECT": "Запрос демо", "START_TIME": t})).kind, ActivityKind::DemoRequest);
        assert_eq!(k(json!({"ID": "1", "TYPE_ID": "6", "PROVIDER_ID": "IMOPENLINES_SESSION", "START_TIME": t})).kind, ActivityKind::Custom("imopenlines_session".into()));
        let d = k(
            json!({"ID": "9", "TYPE_ID": "6", "PROVIDER_ID": "REST_APP", "SUBJECT": "[Download] Price list 2026",
            "DESCRIPTION": "https://example.ru/price.pdf, from the site", "START_TIME": t}),
        );
        assert_eq!(d.kind, ActivityKind::Download);
        assert_eq!(d.subject.as_deref(), Some("Price list 2026"));
        assert_eq!(d.url.as_deref(), Some("https://example.ru/price.pdf"));
        assert_eq!(
            k(json!({"ID": "1", "SUBJECT": "[page] /pricing", "CREATED": t})).kind,
            ActivityKind::PageView
        );
        assert!(
            c.classify(&act(json!({"ID": "1", "TYPE_ID": "2"})))
                .is_none(),
            "no time, no activity"
        );
    }

    #[test]
    fn activity_owner_or_binding_gives_the_lead() {
        assert_eq!(
            lead_of_activity(&json!({"OWNER_TYPE_ID": "1", "OWNER_ID": "5"})),
            Some("5".into())
        );
        let deal_bound_to_lead = json!({"OWNER_TYPE_ID": "2", "OWNER_ID": "9",
            "BINDINGS": [{"OWNER_TYPE_ID": "2", "OWNER_ID": "9"}, {"OWNER_TYPE_ID": "1", "OWNER_ID": "7"}]});
        assert_eq!(lead_of_activity(&deal_bound_to_lead), Some("7".into()));
        assert_eq!(
            lead_of_activity(&json!({"OWNER_TYPE_ID": 3, "OWNER_ID": 1})),
            None
        );
    }

    #[test]
    fn errors_map_to_pipeline_terms() {
        assert!(to_crm(Error::QueryLimitExceeded).is_retryable());
        assert!(matches!(to_crm(Error::Overload), CrmError::Blocked(_)));
        assert!(matches!(
            to_crm(Error::Auth {
                code: "NO_AUTH_FOUND".into(),
                description: String::new()
            }),
            CrmError::Auth(_)
        ));
        assert!(matches!(
            to_crm(Error::classify(Some(400), "", "Not found", "m")),
            CrmError::Rejected(_)
        ));
    }

    #[test]
    fn tokens_round_trip_through_the_store_format() {
        let t = OAuthTokens {
            access_token: Some(SecretString::from("a".to_string())),
            refresh_token: SecretString::from("r".to_string()),
            expires_at: Some(DateTime::from_timestamp(1_800_000_000, 0).unwrap()),
        };
        let back = tokens_from_json(&tokens_to_json(&t)).unwrap();
        assert_eq!(back.refresh_token.expose_secret(), "r");
        assert_eq!(back.expires_at, t.expires_at);
        assert!(tokens_from_json("{}").is_none());
    }

    #[test]
    fn enum_items_keep_existing_and_add_missing() {
        let existing: Vec<leadscore_bitrix24::types::EnumItem> =
            serde_json::from_value(json!([{"ID": "5", "VALUE": "Cold", "XML_ID": "cold"}]))
                .unwrap();
        let tiers = vec![
            ("cold".to_string(), "Cold".to_string()),
            ("hot".to_string(), "Hot".to_string()),
        ];
        let items = enum_items(&tiers, &existing);
        assert_eq!(items[0]["ID"], json!("5"));
        assert_eq!(items[1]["XML_ID"], json!("hot"));
        assert_eq!(items.as_array().unwrap().len(), 2);
    }
}

/// The impl against the sandbox portal over real HTTP on 127.0.0.1.
#[cfg(test)]
mod sandbox_tests {
    use super::*;
    use crate::config::{CrmKind, RateLimitSection, WebhookCheck};
    use leadscore_bitrix24_sandbox::{RateLimit, Sandbox, SandboxHandle, SandboxOptions};

    fn portal_for(sb: &SandboxHandle, kind: TaskKind) -> Portal {
        let mut fields = FieldsSection::default();
        fields.map.insert("revenue".into(), "UF_CRM_REVENUE".into());
        Portal {
            id: "sbx".into(),
            crm: CrmKind::Bitrix24,
            auth: PortalAuth::Bitrix24Webhook {
                url: sb.webhook_url(),
            },
            webhook: WebhookCheck::default(),
            rate_limit: RateLimitSection {
                per_second: 20.0,
                burst: 20,
                operating_limit_secs: None,
                operating_window_secs: None,
            },
            fields,
            task: TaskSection {
                kind,
                ..TaskSection::default()
            },
            threshold: 70,
            rearm_below: 60,
        }
    }

    async fn start() -> SandboxHandle {
        Sandbox::start(SandboxOptions {
            rate_limit: Some(RateLimit {
                burst: 20.0,
                drain_per_sec: 20.0,
            }),
            ..SandboxOptions::default()
        })
        .await
        .unwrap()
    }

    fn tiers() -> Vec<(String, String)> {
        [("cold", "Холодный"), ("warm", "Тёплый"), ("hot", "Горячий")]
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    /// A CRM whose config holds what `setup` printed.
    async fn configured(sb: &SandboxHandle, kind: TaskKind) -> Bitrix24Crm {
        let mut portal = portal_for(sb, kind);
        let (_dir, store) = test_store();
        let bare = Bitrix24Crm::new(&portal, store).unwrap();
        let setup = bare.setup_fields(&tiers()).await.unwrap();
        portal.fields.score = Some(setup.score_field);
        portal.fields.tier = Some(setup.tier_field);
        portal.fields.breakdown = Some(setup.breakdown_field);
        portal.fields.tier_values = setup.tier_values;
        Bitrix24Crm::with_client(&portal, bare.client().clone())
    }

    /// A store in a temp dir; keep the `TempDir` alive as long as the store.
    fn test_store() -> (tempfile::TempDir, Arc<Store>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        (dir, Arc::new(store))
    }

    #[tokio::test]
    async fn setup_is_idempotent_and_returns_enum_ids() {
        let sb = start().await;
        let (_dir, store) = test_store();
        let crm = Bitrix24Crm::new(&portal_for(&sb, TaskKind::Task), store).unwrap();
        let first = crm.setup_fields(&tiers()).await.unwrap();
        assert_eq!(first.created.len(), 3);
        assert_eq!(first.score_field, DEFAULT_SCORE_FIELD);
        assert_eq!(first.tier_values.len(), 3);
        let second = crm.setup_fields(&tiers()).await.unwrap();
        assert!(second.created.is_empty());
        assert_eq!(second.tier_values, first.tier_values);
        assert_eq!(sb.userfields().len(), 3);
        sb.shutdown().await;
    }

    #[tokio::test]
    async fn fetch_write_and_tasks_in_few_requests() {
        let sb = start().await;
        let crm = configured(&sb, TaskKind::Task).await;
        let mut ids = Vec::new();
        for i in 0..60 {
            let id = sb
                .add_lead(
                    json!({"TITLE": format!("Lead {i}"), "NAME": "Olga", "POST": "Director",
                    "EMAIL": [{"VALUE": format!("o{i}@corp.test"), "VALUE_TYPE": "WORK"}],
                    "ASSIGNED_BY_ID": 1, "UF_CRM_REVENUE": "5000000"}),
                )
                .unwrap();
            sb.add_activity(
                json!({"OWNER_TYPE_ID": 1, "OWNER_ID": id, "TYPE_ID": 6, "PROVIDER_ID": "REST_APP",
                "SUBJECT": "[demo] Demo request", "START_TIME": "2026-11-20T10:00:00+03:00"}),
            )
            .unwrap();
            ids.push(id.to_string());
        }
        // One busy lead: 120 activities = 3 pages.
        for n in 0..119 {
            sb.add_activity(
                json!({"OWNER_TYPE_ID": 1, "OWNER_ID": ids[0], "TYPE_ID": 2, "DIRECTION": 1,
                "SUBJECT": format!("call {n}"), "START_TIME": "2026-11-21T10:00:00+03:00"}),
            )
            .unwrap();
        }
        sb.reset_counters();
        let mut wanted = ids.clone();
        wanted.push("99999".into()); // deleted / unknown: absent from the answer
        let fetched = crm.fetch(&wanted).await.unwrap();
        assert_eq!(fetched.len(), 60);
        // 2 lead lists + 3 activity lists (25 leads each) = 5 commands = 1 batch; then
        // pages 2 and 3 of the busy lead's group: 2 more (before: one list per lead,
        // 62 commands in 2 batches, then the same 2 pages).
        assert_eq!(sb.counters().requests, 3, "{:?}", sb.counters());
        assert_eq!(sb.counters().by_method["crm.activity.list"], 5);
        let busy = &fetched[&ids[0]];
        assert_eq!(busy.activities.len(), 120);
        let f = &fetched[&ids[5]];
        assert_eq!(f.lead.position.as_deref(), Some("Director"));
        assert_eq!(f.lead.emails, vec!["o5@corp.test"]);
        assert_eq!(f.lead.revenue, Some(5_000_000.0));
        assert_eq!(f.activities.len(), 1);
        assert_eq!(f.activities[0].kind, ActivityKind::DemoRequest);
        assert_eq!(f.current_score, None);

        // Write back 60 scores with comments: 120 commands = 3 batches.
        sb.reset_counters();
        let writes: Vec<ScoreWrite> = ids
            .iter()
            .map(|id| ScoreWrite {
                lead_id: id.clone(),
                score: 75,
                tier: "hot".into(),
                breakdown: "Demo request +20".into(),
                comment: true,
            })
            .collect();
        let res = crm.write_scores(&writes).await.unwrap();
        assert!(res.values().all(Result::is_ok), "{res:?}");
        assert_eq!(sb.counters().requests, 3);
        assert_eq!(sb.comments().len(), 60);
        let again = crm.fetch(&ids[..1]).await.unwrap();
        assert_eq!(again[&ids[0]].current_score, Some(75));
        let lead = sb.get_lead(ids[0].parse().unwrap()).unwrap();
        let hot = &crm.fields.tier_values["hot"];
        assert_eq!(
            value_text(&lead[crm.fields.tier.as_ref().unwrap()]).as_deref(),
            Some(hot.as_str())
        );
        // A lead that does not exist fails alone.
        let res = crm
            .write_scores(&[
                ScoreWrite {
                    lead_id: "99999".into(),
                    ..writes[0].clone()
                },
                writes[1].clone(),
            ])
            .await
            .unwrap();
        assert!(
            matches!(res["99999"], Err(CrmError::Rejected(_))),
            "{res:?}"
        );
        assert!(res[&ids[1]].is_ok());

        // Task: created once, found by marker, closed when the rep completes it.
        let req = TaskRequest {
            lead_id: ids[2].clone(),
            responsible_id: Some("1".into()),
            title: "Позвонить сейчас".into(),
            text: "75 баллов".into(),
            deadline: Utc::now() + chrono::Duration::hours(1),
            marker: "leadscore:sbx:2:1".into(),
        };
        assert_eq!(crm.find_task(&ids[2], &req.marker).await.unwrap(), None);
        let t = crm.create_task(&req).await.unwrap();
        let found = crm.find_task(&ids[2], &req.marker).await.unwrap().unwrap();
        assert_eq!(
            found,
            TaskRef {
                id: t.id.clone(),
                open: true
            }
        );
        assert!(crm.task_open(&ids[2], &t.id).await.unwrap());
        sb.complete_task(t.id.parse().unwrap()).unwrap();
        assert!(!crm.task_open(&ids[2], &t.id).await.unwrap());
        assert_eq!(sb.tasks().len(), 1);

        // Activities resolve to their lead.
        let act_id = sb
            .activities()
            .iter()
            .find(|a| a["OWNER_ID"] == json!(ids[3]))
            .unwrap()["ID"]
            .clone();
        let act_id = value_text(&act_id).unwrap();
        let bound = sb
            .add_activity(json!({"OWNER_TYPE_ID": 2, "OWNER_ID": 1, "TYPE_ID": 2,
                "BINDINGS": [{"OWNER_TYPE_ID": 2, "OWNER_ID": 1}, {"OWNER_TYPE_ID": 1, "OWNER_ID": ids[4]}],
                "START_TIME": "2026-11-21T10:00:00+03:00"}))
            .unwrap()
            .to_string();
        let map = crm
            .resolve_activities(&[act_id.clone(), bound.clone(), "424242".into()])
            .await
            .unwrap();
        assert_eq!(map[&act_id].as_deref(), Some(ids[3].as_str()));
        assert_eq!(map[&bound].as_deref(), Some(ids[4].as_str()));
        assert_eq!(map["424242"], None);

        // The sweep sees every lead modified since a time in the past.
        let changed = crm
            .changed_since(Utc::now() - chrono::Duration::hours(1))
            .await
            .unwrap();
        assert_eq!(changed.len(), 60);
        assert_eq!(sb.count_status(503), 0);
        sb.shutdown().await;
    }

    #[tokio::test]
    async fn todo_kind_uses_crm_todos() {
        let sb = start().await;
        let crm = configured(&sb, TaskKind::Todo).await;
        let id = sb
            .add_lead(json!({"TITLE": "x", "ASSIGNED_BY_ID": 1}))
            .unwrap()
            .to_string();
        let req = TaskRequest {
            lead_id: id.clone(),
            responsible_id: None,
            title: "Call".into(),
            text: "now".into(),
            deadline: Utc::now() + chrono::Duration::hours(1),
            marker: "leadscore:sbx:todo:1".into(),
        };
        let t = crm.create_task(&req).await.unwrap();
        assert_eq!(sb.todos().len(), 1);
        let found = crm.find_task(&id, &req.marker).await.unwrap().unwrap();
        assert_eq!(found.id, t.id);
        assert!(crm.task_open(&id, &t.id).await.unwrap());
        sb.update_activity(t.id.parse().unwrap(), json!({"COMPLETED": "Y"}))
            .unwrap();
        assert!(!crm.task_open(&id, &t.id).await.unwrap());
        sb.shutdown().await;
    }

    #[tokio::test]
    async fn oauth_tokens_rotate_into_the_store_and_survive_a_restart() {
        use leadscore_bitrix24_sandbox::OAuthOptions;
        let sb = Sandbox::start(SandboxOptions {
            rate_limit: None,
            oauth: Some(OAuthOptions {
                client_id: "app.lead".into(),
                client_secret: SecretString::from("cs"),
                access_token: SecretString::from("at0"),
                refresh_token: SecretString::from("rt0"),
                access_ttl: std::time::Duration::from_secs(3600),
            }),
            ..SandboxOptions::default()
        })
        .await
        .unwrap();
        let mut portal = portal_for(&sb, TaskKind::Task);
        portal.auth = PortalAuth::Bitrix24OAuth {
            base_url: sb.client_endpoint(),
            client_id: "app.lead".into(),
            client_secret: SecretString::from("cs"),
            refresh_token: SecretString::from("rt0"),
        };
        let id = sb.add_lead(json!({"TITLE": "x"})).unwrap().to_string();
        let (_dir, store) = test_store();
        // No access token at start: the first call refreshes and stores the new pair.
        let crm =
            Bitrix24Crm::with_oauth_server(&portal, store.clone(), &sb.oauth_token_url()).unwrap();
        assert_eq!(crm.fetch(std::slice::from_ref(&id)).await.unwrap().len(), 1);
        let saved = tokens_from_json(&store.meta_get(&store_key("sbx")).unwrap().unwrap()).unwrap();
        let (_, portal_rt) = sb.oauth_tokens().unwrap();
        assert_eq!(
            saved.refresh_token.expose_secret(),
            portal_rt.expose_secret()
        );
        assert_ne!(portal_rt.expose_secret(), "rt0");
        // A restart reads the rotated token (the config's rt0 is spent) and keeps working
        // after the access token expires.
        drop(crm);
        sb.expire_access_tokens();
        let crm =
            Bitrix24Crm::with_oauth_server(&portal, store.clone(), &sb.oauth_token_url()).unwrap();
        assert_eq!(crm.fetch(std::slice::from_ref(&id)).await.unwrap().len(), 1);
        let again = tokens_from_json(&store.meta_get(&store_key("sbx")).unwrap().unwrap()).unwrap();
        assert_ne!(
            again.refresh_token.expose_secret(),
            saved.refresh_token.expose_secret()
        );
        sb.shutdown().await;
    }
}

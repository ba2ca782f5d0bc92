//! The API v4 client: one per amoCRM account.
//!
//! Every request goes through the account's [`Limiter`] and the retry policy:
//! - 429: the whole account pauses (jittered exponential backoff) and the request is
//!   retried, a bounded number of times;
//! - 403: the account is marked blocked and nothing more is sent;
//! - 401 with OAuth: one refresh (or reuse of a refresh another request just made) and
//!   one retry; with a long-lived token: [`Error::Unauthorized`];
//! - 5xx, timeouts and resets: retried with jittered backoff when the request is
//!   idempotent (reads, PATCH of field values); a create (task, note, field) is retried
//!   only when amoCRM surely did not execute it, so a lost answer cannot double it;
//! - 504 on a batch write: returned at once so the caller halves the batch;
//! - 204 No Content: an empty result.
//!
//! Batch sizes follow the docs: lists of at most 250 ids, events for at most 10
//! entities per request, writes of at most 50 entities.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::auth::{Auth, Bearer, Endpoint, OAuthSource};
use crate::error::Error;
use crate::limiter::{Limiter, LimiterConfig, LimiterStats};
use crate::types::{
    Company, Contact, CustomField, Event, Lead, LeadUpdate, NewNote, NewTask, Note, Page, Pipeline,
    Task, Updated,
};

/// Most ids in one `filter[id][]` list request (the page limit).
pub const MAX_LIST_IDS: usize = 250;
/// Most entity ids in one `/api/v4/events` request.
pub const MAX_EVENT_IDS: usize = 10;
/// Most entities in one write (amoCRM allows 250 but recommends at most 50).
pub const MAX_WRITE: usize = 50;
/// Page size used for every list.
pub const PAGE_LIMIT: usize = 250;
/// Largest answer read (a page of 250 leads with custom fields is about 1 MB).
pub const MAX_ANSWER_BYTES: usize = 32 * 1024 * 1024;

/// Read an answer's body, refusing to buffer more than `max` bytes.
pub(crate) async fn read_limited(
    mut resp: reqwest::Response,
    max: usize,
) -> Result<Vec<u8>, Error> {
    if resp.content_length().is_some_and(|n| n > max as u64) {
        return Err(Error::Decode {
            what: "answer".into(),
            detail: format!("larger than {max} bytes"),
        });
    }
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        if out.len() + chunk.len() > max {
            return Err(Error::Decode {
                what: "answer".into(),
                detail: format!("larger than {max} bytes"),
            });
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Settings of one client.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `https://{subdomain}.amocrm.ru` or `https://{subdomain}.kommo.com`.
    pub base_url: String,
    pub limiter: LimiterConfig,
    pub connect_timeout: Duration,
    /// Whole-request timeout.
    pub timeout: Duration,
    /// Attempts per request, the first included.
    pub max_attempts: u32,
    /// First backoff after a 5xx or network failure; doubles per attempt.
    pub retry_base: Duration,
    /// Upper bound on pages read by one list call (guards against endless paging).
    pub max_pages: usize,
}

impl ClientConfig {
    /// Defaults for an account at `base_url`.
    pub fn new(base_url: &str) -> ClientConfig {
        ClientConfig {
            base_url: base_url.trim_end_matches('/').to_string(),
            limiter: LimiterConfig::default(),
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(30),
            max_attempts: 4,
            retry_base: Duration::from_millis(500),
            max_pages: 400,
        }
    }
}

enum AuthState {
    LongLived(SecretString),
    OAuth(Box<OAuthSource>),
}

/// A typed amoCRM API v4 client.
pub struct Client {
    http: reqwest::Client,
    config: ClientConfig,
    token_url: String,
    auth: AuthState,
    limiter: Arc<Limiter>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.config.base_url)
            .field(
                "auth",
                &match self.auth {
                    AuthState::LongLived(_) => "long-lived token",
                    AuthState::OAuth(_) => "OAuth2",
                },
            )
            .field("limiter", &self.limiter)
            .finish()
    }
}

/// A request of the retry loop.
struct Req<'a> {
    method: Method,
    /// Path and query, e.g. `/api/v4/leads?filter[id][]=1`.
    path: &'a str,
    body: Option<&'a Value>,
    /// Safe to send twice (reads, PATCH of the same values).
    idempotent: bool,
    /// A batch write: a 504 is returned at once so the caller can halve it.
    halvable: bool,
}

/// A created entity's id and its `request_id`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Created {
    pub id: u64,
    #[serde(default)]
    pub request_id: Option<String>,
}

impl Client {
    /// Build a client. The limiter is created here: one client per account, shared by
    /// every task that talks to it.
    pub fn new(config: ClientConfig, auth: Auth) -> Result<Client, Error> {
        let url = reqwest::Url::parse(&config.base_url).map_err(|e| {
            Error::Config(format!("base_url {:?} is not a URL: {e}", config.base_url))
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(Error::Config(format!(
                "base_url {:?} must be an http(s) URL with a host",
                config.base_url
            )));
        }
        let limiter =
            Arc::new(Limiter::new(config.limiter).map_err(|e| Error::Config(e.to_string()))?);
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.timeout)
            .user_agent(concat!("leadscore-amocrm/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Config(e.to_string()))?;
        let auth = match auth {
            Auth::LongLived(token) => AuthState::LongLived(token),
            Auth::OAuth { settings, store } => {
                AuthState::OAuth(Box::new(OAuthSource::new(settings, store)))
            }
        };
        let mut config = config;
        config.base_url = config.base_url.trim_end_matches('/').to_string();
        Ok(Client {
            token_url: format!("{}/oauth2/access_token", config.base_url),
            http,
            config,
            auth,
            limiter,
        })
    }

    /// The account's address.
    pub fn base_url(&self) -> &str {
        &self.config.base_url
    }

    /// The account's limiter (counters, blocked flag).
    pub fn limiter(&self) -> &Arc<Limiter> {
        &self.limiter
    }

    /// Counters of the limiter.
    pub fn stats(&self) -> LimiterStats {
        self.limiter.stats()
    }

    /// Has amoCRM blocked this account (403)? Traffic is stopped when it has.
    pub fn is_blocked(&self) -> bool {
        self.limiter.is_blocked()
    }

    /// OAuth refreshes made so far (0 with a long-lived token).
    pub fn refreshes(&self) -> u64 {
        match &self.auth {
            AuthState::OAuth(o) => o.refreshes(),
            AuthState::LongLived(_) => 0,
        }
    }

    fn endpoint(&self) -> Endpoint<'_> {
        Endpoint {
            http: &self.http,
            token_url: &self.token_url,
            limiter: &self.limiter,
        }
    }

    async fn bearer(&self) -> Result<Bearer, Error> {
        match &self.auth {
            AuthState::LongLived(t) => Ok(Bearer {
                token: t.clone(),
                generation: 0,
            }),
            AuthState::OAuth(o) => o.bearer(&self.endpoint()).await,
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let base = self
            .config
            .retry_base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(8))
            .min(Duration::from_secs(10));
        base.mul_f64(rand::rng().random_range(1.0..1.5))
    }

    /// Make or validate the token now (e.g. at start-up, to fail fast on a revoked one).
    pub async fn ensure_token(&self) -> Result<(), Error> {
        self.bearer().await.map(|_| ())
    }

    /// One request with the retry policy; `None` for 204 No Content or an empty body.
    async fn call(&self, req: Req<'_>) -> Result<Option<Value>, Error> {
        let url = format!("{}{}", self.config.base_url, req.path);
        let mut attempt = 0u32;
        let mut refreshed = false;
        loop {
            attempt += 1;
            let last = attempt >= self.config.max_attempts;
            if let Some(e) = self.limiter.blocked_error() {
                return Err(e);
            }
            let bearer = self.bearer().await?;
            let slot = self.limiter.acquire_slot().await?;
            let mut rb = self
                .http
                .request(req.method.clone(), &url)
                .header(reqwest::header::ACCEPT, "application/json")
                .bearer_auth(bearer.token.expose_secret());
            if let Some(body) = req.body {
                rb = rb.json(body);
            }
            let sent = rb.send().await;
            self.limiter.arrived(slot);
            let err = match sent {
                Err(e) => Error::from(e),
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let ct = resp
                        .headers()
                        .get(reqwest::header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    let bytes = match read_limited(resp, MAX_ANSWER_BYTES).await {
                        Ok(b) => b,
                        Err(e) => {
                            if !last && e.is_retryable() && req.idempotent {
                                tokio::time::sleep(self.backoff(attempt)).await;
                                continue;
                            }
                            return Err(e);
                        }
                    };
                    if (200..300).contains(&status) {
                        self.limiter.on_success();
                        if status == 204 || bytes.iter().all(u8::is_ascii_whitespace) {
                            return Ok(None);
                        }
                        return serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                            Error::Decode {
                                what: req.path.split('?').next().unwrap_or("").to_string(),
                                detail: e.to_string(),
                            }
                        });
                    }
                    let e = Error::from_response(status, &ct, &bytes);
                    match &e {
                        Error::Unauthorized { .. } => {
                            if let (AuthState::OAuth(o), false) = (&self.auth, refreshed) {
                                refreshed = true;
                                o.refresh_after_401(bearer.generation, &self.endpoint())
                                    .await?;
                                attempt -= 1;
                                continue;
                            }
                            return Err(e);
                        }
                        Error::RateLimited => {
                            let pause = self.limiter.on_rate_limited();
                            tracing::warn!(
                                pause_ms = pause.as_millis() as u64,
                                path = req.path.split('?').next().unwrap_or(""),
                                "amoCRM answered 429; pausing the account"
                            );
                            if last {
                                return Err(e);
                            }
                            continue;
                        }
                        Error::Blocked { detail } => {
                            tracing::error!(error = %e, "amoCRM blocked the account; stopping all its traffic");
                            self.limiter.block(detail);
                            return Err(e);
                        }
                        Error::GatewayTimeout if req.halvable => return Err(e),
                        _ => {}
                    }
                    e
                }
            };
            let may_retry = err.is_retryable() && (req.idempotent || err.surely_not_executed());
            if last || !may_retry {
                return Err(err);
            }
            tracing::debug!(error = %err, attempt, "amoCRM request failed; retrying");
            tokio::time::sleep(self.backoff(attempt)).await;
        }
    }

    pub(crate) async fn get(&self, path: &str) -> Result<Option<Value>, Error> {
        self.call(Req {
            method: Method::GET,
            path,
            body: None,
            idempotent: true,
            halvable: false,
        })
        .await
    }

    /// Read every page of a list (`page`, `limit`), until a page has no `_links.next`,
    /// comes back empty or as 204. Pages are requested by number, never by following
    /// the absolute `next` URL, so the token never goes to another host.
    async fn get_all<T: DeserializeOwned>(&self, path: &str, key: &str) -> Result<Vec<T>, Error> {
        Ok(self.get_pages(path, key).await?.0)
    }

    /// [`Client::get_all`], also saying whether `max_pages` cut the list short.
    pub(crate) async fn get_pages<T: DeserializeOwned>(
        &self,
        path: &str,
        key: &str,
    ) -> Result<(Vec<T>, bool), Error> {
        self.get_pages_from(path, key, 1).await
    }

    /// [`Client::get_pages`] from page `first` on (`max_pages` pages at most).
    pub(crate) async fn get_pages_from<T: DeserializeOwned>(
        &self,
        path: &str,
        key: &str,
        first: usize,
    ) -> Result<(Vec<T>, bool), Error> {
        let mut out = Vec::new();
        for page in first..first + self.config.max_pages {
            let Some((items, more)) = self.get_page(path, key, page).await? else {
                return Ok((out, false));
            };
            let n = items.len();
            out.extend(items);
            if !more || n == 0 {
                return Ok((out, false));
            }
        }
        Ok((out, true))
    }

    /// Page `page` of a list and whether a next page is linked; `None`: no such page
    /// (204).
    pub(crate) async fn get_page<T: DeserializeOwned>(
        &self,
        path: &str,
        key: &str,
        page: usize,
    ) -> Result<Option<(Vec<T>, bool)>, Error> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let url = format!("{path}{sep}page={page}&limit={PAGE_LIMIT}");
        let Some(v) = self.get(&url).await? else {
            return Ok(None);
        };
        let page_body: Page = serde_json::from_value(v).map_err(|e| Error::Decode {
            what: path.split('?').next().unwrap_or("").to_string(),
            detail: e.to_string(),
        })?;
        let items = match page_body.embedded.get(key) {
            Some(Value::Array(items)) => items.clone(),
            _ => Vec::new(),
        };
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            out.push(
                serde_json::from_value::<T>(item).map_err(|e| Error::Decode {
                    what: format!("{key} item"),
                    detail: e.to_string(),
                })?,
            );
        }
        Ok(Some((out, page_body.links.next.is_some())))
    }

    /// `GET /api/v4/leads/{id}?with=contacts`; `None` when the lead does not exist.
    pub async fn lead(&self, id: u64) -> Result<Option<Lead>, Error> {
        match self.get(&format!("/api/v4/leads/{id}?with=contacts")).await {
            Ok(Some(v)) => serde_json::from_value(v)
                .map(Some)
                .map_err(|e| Error::Decode {
                    what: "lead".into(),
                    detail: e.to_string(),
                }),
            Ok(None) => Ok(None),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Leads by id with their contacts, 250 ids per request. Missing ids are deleted
    /// leads (or never existed).
    pub async fn leads_by_ids(&self, ids: &[u64]) -> Result<Vec<Lead>, Error> {
        let mut out = Vec::new();
        for chunk in dedup(ids).chunks(MAX_LIST_IDS) {
            let q = id_filter("filter[id][]", chunk);
            out.extend(
                self.get_all::<Lead>(&format!("/api/v4/leads?with=contacts&{q}"), "leads")
                    .await?,
            );
        }
        Ok(out)
    }

    /// Contacts by id, 250 per request (their `_embedded.companies` come by default).
    pub async fn contacts_by_ids(&self, ids: &[u64]) -> Result<Vec<Contact>, Error> {
        let mut out = Vec::new();
        for chunk in dedup(ids).chunks(MAX_LIST_IDS) {
            let q = id_filter("filter[id][]", chunk);
            out.extend(
                self.get_all::<Contact>(&format!("/api/v4/contacts?{q}"), "contacts")
                    .await?,
            );
        }
        Ok(out)
    }

    /// Companies by id, 250 per request.
    pub async fn companies_by_ids(&self, ids: &[u64]) -> Result<Vec<Company>, Error> {
        let mut out = Vec::new();
        for chunk in dedup(ids).chunks(MAX_LIST_IDS) {
            let q = id_filter("filter[id][]", chunk);
            out.extend(
                self.get_all::<Company>(&format!("/api/v4/companies?{q}"), "companies")
                    .await?,
            );
        }
        Ok(out)
    }

    /// Events of leads (at most 10 lead ids per request, as the docs require), only of
    /// `types` when given, created at or after `since` (Unix seconds) when given.
    pub async fn lead_events(
        &self,
        lead_ids: &[u64],
        types: &[&str],
        since: Option<i64>,
    ) -> Result<Vec<Event>, Error> {
        self.entity_events("lead", lead_ids, types, since).await
    }

    /// Events of `entity` (`lead`, `contact`, `company`) by id, as
    /// [`Client::lead_events`]: a contact's field changes, say.
    pub async fn entity_events(
        &self,
        entity: &str,
        ids: &[u64],
        types: &[&str],
        since: Option<i64>,
    ) -> Result<Vec<Event>, Error> {
        let mut out = Vec::new();
        for chunk in dedup(ids).chunks(MAX_EVENT_IDS) {
            let mut q = format!(
                "/api/v4/events?filter[entity]={entity}&{}",
                id_filter("filter[entity_id][]", chunk)
            );
            if !types.is_empty() {
                q.push_str("&filter[type]=");
                q.push_str(&enc(&types.join(",")));
            }
            if let Some(ts) = since {
                q.push_str(&format!("&filter[created_at][from]={ts}"));
            }
            out.extend(self.get_all::<Event>(&q, "events").await?);
        }
        Ok(out)
    }

    /// Lead notes by note id (250 per request), optionally only of `note_type`. The
    /// notes list cannot be filtered by lead, so the ids come from the leads'
    /// `*_note_added` events (`value_after[0].note.id`).
    pub async fn lead_notes_by_ids(
        &self,
        note_ids: &[u64],
        note_type: Option<&str>,
    ) -> Result<Vec<Note>, Error> {
        let mut out = Vec::new();
        for chunk in dedup(note_ids).chunks(MAX_LIST_IDS) {
            let mut q = format!("/api/v4/leads/notes?{}", id_filter("filter[id][]", chunk));
            if let Some(t) = note_type {
                q.push_str("&filter[note_type]=");
                q.push_str(&enc(t));
            }
            out.extend(self.get_all::<Note>(&q, "notes").await?);
        }
        Ok(out)
    }

    /// `PATCH /api/v4/leads` one batch as given (no splitting). Returns each lead's
    /// `updated_at` after the write, as the answer lists it: the modification time
    /// our own write produced, which a later sweep compares against.
    pub async fn patch_leads_once(&self, updates: &[LeadUpdate]) -> Result<Vec<Updated>, Error> {
        let body = Value::Array(updates.iter().map(LeadUpdate::to_json).collect());
        let v = self
            .call(Req {
                method: Method::PATCH,
                path: "/api/v4/leads",
                body: Some(&body),
                idempotent: true,
                halvable: true,
            })
            .await?;
        // The write is applied; an answer we cannot read costs only the stamps.
        Ok(embedded_list(v, "leads").unwrap_or_default())
    }

    /// Write custom field values on many leads: batches of 50, a batch that gets 504 is
    /// halved and retried (down to single leads). Returns the result per batch that was
    /// finally sent, in order, so the caller knows exactly which leads were written.
    pub async fn update_leads(
        &self,
        updates: &[LeadUpdate],
    ) -> Vec<(Vec<u64>, Result<Vec<Updated>, Error>)> {
        let mut out = Vec::new();
        let mut stack: Vec<&[LeadUpdate]> = updates.chunks(MAX_WRITE).rev().collect();
        while let Some(batch) = stack.pop() {
            match self.patch_leads_once(batch).await {
                Err(Error::GatewayTimeout) if batch.len() > 1 => {
                    let (a, b) = batch.split_at(batch.len() / 2);
                    tracing::warn!(
                        size = batch.len(),
                        "amoCRM 504 on PATCH /leads; halving the batch"
                    );
                    stack.push(b);
                    stack.push(a);
                }
                result => out.push((batch.iter().map(|u| u.id).collect(), result)),
            }
        }
        out
    }

    /// `POST /api/v4/tasks` (at most 50 per request); returns the created ids in order.
    pub async fn create_tasks(&self, tasks: &[NewTask]) -> Result<Vec<Created>, Error> {
        let mut out = Vec::new();
        for chunk in tasks.chunks(MAX_WRITE) {
            let body = serde_json::to_value(chunk).map_err(|e| Error::Config(e.to_string()))?;
            out.extend(self.post_created("/api/v4/tasks", &body, "tasks").await?);
        }
        Ok(out)
    }

    /// Tasks on leads (250 lead ids per request).
    pub async fn lead_tasks(&self, lead_ids: &[u64]) -> Result<Vec<Task>, Error> {
        let mut out = Vec::new();
        for chunk in dedup(lead_ids).chunks(MAX_LIST_IDS) {
            let q = format!(
                "/api/v4/tasks?filter[entity_type]=leads&{}",
                id_filter("filter[entity_id][]", chunk)
            );
            out.extend(self.get_all::<Task>(&q, "tasks").await?);
        }
        Ok(out)
    }

    /// `GET /api/v4/tasks/{id}`; `None` when it does not exist.
    pub async fn task(&self, id: u64) -> Result<Option<Task>, Error> {
        match self.get(&format!("/api/v4/tasks/{id}")).await {
            Ok(Some(v)) => serde_json::from_value(v)
                .map(Some)
                .map_err(|e| Error::Decode {
                    what: "task".into(),
                    detail: e.to_string(),
                }),
            Ok(None) => Ok(None),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `POST /api/v4/leads/notes` (at most 50 per request).
    pub async fn add_lead_notes(&self, notes: &[NewNote]) -> Result<Vec<Created>, Error> {
        let mut out = Vec::new();
        for chunk in notes.chunks(MAX_WRITE) {
            let body = serde_json::to_value(chunk).map_err(|e| Error::Config(e.to_string()))?;
            out.extend(
                self.post_created("/api/v4/leads/notes", &body, "notes")
                    .await?,
            );
        }
        Ok(out)
    }

    /// Custom field definitions of leads.
    pub async fn lead_custom_fields(&self) -> Result<Vec<CustomField>, Error> {
        self.get_all("/api/v4/leads/custom_fields", "custom_fields")
            .await
    }

    /// `POST /api/v4/leads/custom_fields` (admin only); returns the created fields.
    pub async fn create_lead_custom_fields(
        &self,
        fields: &[CustomField],
    ) -> Result<Vec<CustomField>, Error> {
        let body = serde_json::to_value(fields).map_err(|e| Error::Config(e.to_string()))?;
        let v = self
            .call(Req {
                method: Method::POST,
                path: "/api/v4/leads/custom_fields",
                body: Some(&body),
                idempotent: false,
                halvable: false,
            })
            .await?;
        embedded_list(v, "custom_fields")
    }

    /// The account's pipelines with their stages (`GET /api/v4/leads/pipelines`: one
    /// request, no paging).
    pub async fn pipelines(&self) -> Result<Vec<Pipeline>, Error> {
        embedded_list(self.get("/api/v4/leads/pipelines").await?, "pipelines")
    }

    /// Every lead in one stage of one pipeline, with contacts and loss reason (the docs
    /// allow one stage of one pipeline per `filter[statuses]`), 250 per request.
    pub async fn leads_in_status(
        &self,
        pipeline_id: u64,
        status_id: u64,
    ) -> Result<Vec<Lead>, Error> {
        self.get_all(
            &format!(
                "/api/v4/leads?with=contacts,loss_reason&filter[statuses][0][pipeline_id]={pipeline_id}\
                 &filter[statuses][0][status_id]={status_id}&order[id]=asc"
            ),
            "leads",
        )
        .await
    }

    /// Leads updated at or after `since` (Unix seconds), oldest first, for the sweep.
    pub async fn leads_updated_since(&self, since: i64) -> Result<Vec<Lead>, Error> {
        self.get_all(
            &format!("/api/v4/leads?filter[updated_at][from]={since}&order[updated_at]=asc"),
            "leads",
        )
        .await
    }

    async fn post_created(
        &self,
        path: &str,
        body: &Value,
        key: &str,
    ) -> Result<Vec<Created>, Error> {
        let v = self
            .call(Req {
                method: Method::POST,
                path,
                body: Some(body),
                idempotent: false,
                halvable: false,
            })
            .await?;
        embedded_list(v, key)
    }
}

fn embedded_list<T: DeserializeOwned>(v: Option<Value>, key: &str) -> Result<Vec<T>, Error> {
    let Some(v) = v else {
        return Ok(Vec::new());
    };
    let items = v
        .get("_embedded")
        .and_then(|e| e.get(key))
        .cloned()
        .unwrap_or(Value::Array(Vec::new()));
    serde_json::from_value(items).map_err(|e| Error::Decode {
        what: key.to_string(),
        detail: e.to_string(),
    })
}

fn dedup(ids: &[u64]) -> Vec<u64> {
    let mut v = ids.to_vec();
    v.sort_unstable();
    v.dedup();
    v
}

fn id_filter(key: &str, ids: &[u64]) -> String {
    ids.iter()
        .map(|id| format!("{key}={id}"))
        .collect::<Vec<_>>()
        .join("&")
}

pub(crate) fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_filters_and_dedup() {
        assert_eq!(
            id_filter("filter[id][]", &[1, 2]),
            "filter[id][]=1&filter[id][]=2"
        );
        assert_eq!(dedup(&[3, 1, 3, 2]), vec![1, 2, 3]);
        assert_eq!(enc("a,b_c"), "a%2Cb%5Fc");
    }

    #[test]
    fn rejects_bad_base_urls() {
        for bad in ["not a url", "ftp://x.amocrm.ru", "file:///etc"] {
            let e = Client::new(
                ClientConfig::new(bad),
                Auth::LongLived(SecretString::from("t")),
            )
            .unwrap_err();
            assert!(matches!(e, Error::Config(_)), "{bad}: {e:?}");
        }
        let c = Client::new(
            ClientConfig::new("https://x.amocrm.ru/"),
            Auth::LongLived(SecretString::from("t-SECRET")),
        )
        .unwrap();
        assert_eq!(c.base_url(), "https://x.amocrm.ru");
        assert!(!format!("{c:?}").contains("SECRET"));
    }
}

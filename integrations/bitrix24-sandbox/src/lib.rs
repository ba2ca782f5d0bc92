//! A faithful fake Bitrix24 portal for tests and `leadscore demo`; its own crate, so the
//! product never links it.
//!
//! It speaks the real wire protocol from the official docs, written independently of
//! the client crate so that it actually tests the client: inbound-webhook URLs
//! (`/rest/1/{code}/{method}[.json]`) and OAuth (`/rest/{method}` + `auth`, with a
//! rotating refresh token at `/oauth/token/`); crm.lead.* (UPPER_CASE strings,
//! multi-fields) and crm.item.* (camelCase, typed, `ufCrm_*`); activities, to-dos,
//! timeline comments, tasks, lead user fields with enumeration ids; list filters, 50-item
//! pages, `start=-1`; `batch` with `$result[...]` references and PHP's JSON quirks; the
//! leaky bucket and the per-method operating limit; seeded fault injection; and outgoing
//! webhooks POSTed form-encoded, once, for every lead/activity change, including changes
//! made through the REST API by the daemon under test (which is how loops happen).
//!
//! Choices where the docs are silent, or where the sandbox is deliberately simpler:
//!
//! - The bucket counts requests that reach the REST layer (a `batch` is one; 401s are
//!   not counted). A refused request does not fill the bucket further.
//! - `time.operating` only grows when an [`OperatingLimit`] is configured: each call
//!   books a simulated execution time (`cost_per_call`, plus `cost_per_row` for every
//!   row a list returns), reported as `time.processing`; `time.duration` adds the real
//!   wall time on top (transfer and queueing, which the portal does not count), and
//!   `time.operating` is the method's total in the window *including* this call, as the
//!   portal reports it.
//! - Unknown fields in `filter`/`order` are a 400 error rather than silently ignored, so
//!   a misspelt filter cannot quietly match everything; unknown fields in writes are
//!   ignored, as on the portal, and so is a user-field value that is not valid for its
//!   type (e.g. an enumeration value that is not an item id).
//! - crm.item.* serves leads only (`entityTypeId` 1); one user (the webhook's) exists.
//! - Deals: crm.deal.add/get/list/update, crm.deal.userfield.add/get/list, activities
//!   owned by deals (`OWNER_TYPE_ID` 2), tasks bound `D_<id>`, ONCRMDEALADD /
//!   ONCRMDEALUPDATE. [`SandboxHandle::set_simple_mode`] switches to the simple CRM mode
//!   (`crm.settings.mode.get` = 2); the docs do not say how crm.lead.* answers then: the
//!   sandbox lists no leads and refuses single-lead methods with ACCESS_DENIED.
//! - A task with `UF_CRM_TASK: ["L_<id>"]` also adds a task activity (`TYPE_ID` 3) to the
//!   lead, which fires ONCRMACTIVITYADD, as portals do; turn it off with
//!   [`SandboxOptions::task_activities`].
//! - Deliveries run up to 8 at a time, so two events for one lead may arrive out of
//!   order (the portal promises no order either).
//! - Unset user fields read as `null`; dates are printed in the portal zone (+03:00).
//!
//! ```no_run
//! # async fn demo() -> Result<(), leadscore_bitrix24_sandbox::SandboxError> {
//! use leadscore_bitrix24_sandbox::{Sandbox, SandboxOptions};
//! use serde_json::json;
//! let portal = Sandbox::start(SandboxOptions::default()).await?;
//! let id = portal.add_lead(json!({"TITLE": "ACME", "EMAIL": [{"VALUE": "a@acme.test"}]}))?;
//! portal.bind_event("ONCRMLEADUPDATE", "http://127.0.0.1:8080/webhooks/bitrix24/p", "app-token".into());
//! // … point the client at portal.webhook_url() …
//! portal.settle().await;
//! assert_eq!(portal.count_status(503), 0);
//! # let _ = id; portal.shutdown().await; Ok(()) }
//! ```

mod api;
mod batch;
mod deals;
mod duplicates;
mod events;
mod http;
mod limits;
mod php;
mod query;
mod store;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use events::{EventBus, PortalIdentity};
use http::{OAuthState, Shared};
use leadscore_sandbox_kit::{lock, CallLog, Dice, Tally};
use limits::{Bucket, Operating};
use store::{Actor, State};

/// The leaky bucket's parameters: burst `X` and drain `Y` per second (`limits.md`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    /// Requests the bucket holds before refusing (X).
    pub burst: f64,
    /// Requests drained per second (Y).
    pub drain_per_sec: f64,
}

impl Default for RateLimit {
    /// Every plan below Enterprise: 50 and 2/s.
    fn default() -> Self {
        Self {
            burst: 50.0,
            drain_per_sec: 2.0,
        }
    }
}

impl RateLimit {
    /// Enterprise plan: 250 and 5/s.
    pub fn enterprise() -> Self {
        Self {
            burst: 250.0,
            drain_per_sec: 5.0,
        }
    }
}

/// The per-method resource limit: simulated execution seconds summed over a window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OperatingLimit {
    /// Blocking threshold (480 s on cloud portals).
    pub limit: Duration,
    /// Simulated execution time booked per call of a method.
    pub cost_per_call: Duration,
    /// Extra execution time per row a list method returns (a page of 50 costs more
    /// than an empty one, so packing many owners into one list is not free).
    pub cost_per_row: Duration,
    /// Sliding window (10 minutes on real portals).
    pub window: Duration,
}

impl Default for OperatingLimit {
    fn default() -> Self {
        Self {
            limit: Duration::from_secs(480),
            cost_per_call: Duration::from_millis(100),
            cost_per_row: Duration::ZERO,
            window: Duration::from_secs(600),
        }
    }
}

/// A fault the portal can inject instead of (or before) answering.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    /// 503 `QUERY_LIMIT_EXCEEDED`, as if the bucket were full.
    QueryLimitExceeded,
    /// 429 `OPERATION_TIME_LIMIT` with `time.operating_reset_at`.
    OperationTimeLimit,
    /// 500 `INTERNAL_SERVER_ERROR`.
    InternalServerError,
    /// 502 with an nginx HTML page instead of JSON.
    BadGatewayHtml,
    /// The real answer, after `FaultConfig::slow_delay`.
    SlowResponse,
    /// The TCP connection is reset without any response.
    ConnectionReset,
}

impl FaultKind {
    /// Every fault kind.
    pub const ALL: [FaultKind; 6] = [
        FaultKind::QueryLimitExceeded,
        FaultKind::OperationTimeLimit,
        FaultKind::InternalServerError,
        FaultKind::BadGatewayHtml,
        FaultKind::SlowResponse,
        FaultKind::ConnectionReset,
    ];
}

/// Fault injection: each REST request (a batch counts once) fails with probability
/// `rate`, the kind drawn from `mix` by weight; deterministic for a given `seed` and
/// request order.
/// `FaultConfig::uniform` and `FaultConfig::only` come with the kit's dice
/// (`leadscore_sandbox_kit::fault_mix!`, in `limits.rs`).
#[derive(Clone, Debug, PartialEq)]
pub struct FaultConfig {
    /// Probability per request, 0.0–1.0.
    pub rate: f64,
    /// Kinds with their relative weights.
    pub mix: Vec<(FaultKind, u32)>,
    /// Seed of the dice.
    pub seed: u64,
    /// How long a `SlowResponse` waits before answering.
    pub slow_delay: Duration,
    /// `operating_reset_at` distance reported by an injected 429.
    pub operating_reset_after: Duration,
}

impl Default for FaultConfig {
    /// No faults.
    fn default() -> Self {
        Self {
            rate: 0.0,
            mix: Vec::new(),
            seed: 0,
            slow_delay: Duration::from_secs(5),
            operating_reset_after: Duration::from_secs(1),
        }
    }
}

/// OAuth-app mode: the initial tokens and the client credentials the token endpoint
/// checks.
#[derive(Clone)]
pub struct OAuthOptions {
    /// `client_id` of the app.
    pub client_id: String,
    /// `client_secret` of the app.
    pub client_secret: SecretString,
    /// The access token valid at start.
    pub access_token: SecretString,
    /// The refresh token valid at start (usable once).
    pub refresh_token: SecretString,
    /// Access-token lifetime (1 hour on real portals).
    pub access_ttl: Duration,
}

impl fmt::Debug for OAuthOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthOptions")
            .field("client_id", &self.client_id)
            .field("client_secret", &"[REDACTED]")
            .field("access_token", &"[REDACTED]")
            .field("refresh_token", &"[REDACTED]")
            .field("access_ttl", &self.access_ttl)
            .finish()
    }
}

/// How to start a portal.
#[derive(Clone)]
pub struct SandboxOptions {
    /// User id in the inbound-webhook path (`/rest/{user_id}/{code}/`).
    pub user_id: u64,
    /// The inbound webhook's secret code.
    pub webhook_code: SecretString,
    /// Portal domain reported in `auth[domain]`.
    pub domain: String,
    /// Portal `member_id` reported in `auth[member_id]`.
    pub member_id: String,
    /// Leaky bucket; `None` disables it.
    pub rate_limit: Option<RateLimit>,
    /// Operating limit; `None` disables blocking (`time.operating` stays 0).
    pub operating_limit: Option<OperatingLimit>,
    /// Fault injection.
    pub faults: FaultConfig,
    /// OAuth-app mode; `None` refuses `/rest/{method}` calls.
    pub oauth: Option<OAuthOptions>,
    /// Timeout of one outgoing-webhook POST.
    pub delivery_timeout: Duration,
    /// Delay before each outgoing-webhook POST ("the request may arrive with a slight
    /// delay"); zero by default so tests stay fast.
    pub delivery_delay: Duration,
    /// Whether a task bound to a lead also adds a task activity (as real portals do).
    pub task_activities: bool,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        Self {
            user_id: 1,
            webhook_code: SecretString::from("sbx4k2m9q7w1e5r8"),
            domain: "sandbox.bitrix24.test".to_owned(),
            member_id: "5a3d0c1e9b7f4a2c8d6e0f1a2b3c4d5e".to_owned(),
            rate_limit: Some(RateLimit::default()),
            operating_limit: None,
            faults: FaultConfig::default(),
            oauth: None,
            delivery_timeout: Duration::from_secs(10),
            delivery_delay: Duration::ZERO,
            task_activities: true,
        }
    }
}

impl fmt::Debug for SandboxOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SandboxOptions")
            .field("user_id", &self.user_id)
            .field("webhook_code", &"[REDACTED]")
            .field("domain", &self.domain)
            .field("member_id", &self.member_id)
            .field("rate_limit", &self.rate_limit)
            .field("operating_limit", &self.operating_limit)
            .field("faults", &self.faults)
            .field("oauth", &self.oauth)
            .field("delivery_timeout", &self.delivery_timeout)
            .field("delivery_delay", &self.delivery_delay)
            .field("task_activities", &self.task_activities)
            .finish()
    }
}

/// One REST call as the portal saw it.
#[derive(Clone, Debug, PartialEq)]
pub struct CallRecord {
    /// Method name, lower-case, without `.json`.
    pub method: String,
    /// HTTP status answered (0 when the connection was reset).
    pub status: u16,
    /// When it was answered.
    pub at: SystemTime,
    /// Whether it ran as a command inside `batch`.
    pub in_batch: bool,
    /// The injected fault, if any.
    pub fault: Option<FaultKind>,
}

impl Tally for CallRecord {
    /// Method, whether inside a batch, and status: all the counters need.
    type Key = (String, bool, u16);

    fn key(&self) -> Self::Key {
        (self.method.clone(), self.in_batch, self.status)
    }
}

/// One outgoing-webhook POST attempt (never retried).
#[derive(Clone, Debug, PartialEq)]
pub struct Delivery {
    /// `event_handler_id`.
    pub handler_id: u32,
    /// Event name, e.g. `ONCRMLEADUPDATE`.
    pub event: String,
    /// `data[FIELDS][ID]`.
    pub entity_id: u64,
    /// Where it was POSTed.
    pub handler_url: String,
    /// The handler's HTTP status, if it answered.
    pub status: Option<u16>,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// When the attempt finished.
    pub at: SystemTime,
}

/// Call counts, for assertions such as "zero 503s" or "one crm.item.update".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Calls per method (batch commands counted under their own method).
    pub by_method: BTreeMap<String, usize>,
    /// Calls per HTTP status.
    pub by_status: BTreeMap<u16, usize>,
    /// HTTP requests that reached the REST layer (a batch is one).
    pub requests: usize,
}

/// A task as the portal holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct SandboxTask {
    /// Task id.
    pub id: u64,
    /// `TITLE`.
    pub title: String,
    /// `DESCRIPTION`.
    pub description: String,
    /// `RESPONSIBLE_ID`.
    pub responsible_id: u64,
    /// `DEADLINE` in portal format.
    pub deadline: Option<String>,
    /// `PRIORITY` (2 high).
    pub priority: i64,
    /// `STATUS` (2 pending, 5 completed).
    pub status: i64,
    /// `UF_CRM_TASK` bindings such as `L_5`.
    pub crm_bindings: Vec<String>,
}

/// A timeline comment as the portal holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct SandboxComment {
    /// Comment id.
    pub id: u64,
    /// `ENTITY_ID`.
    pub entity_id: u64,
    /// `ENTITY_TYPE` (lower-case).
    pub entity_type: String,
    /// `COMMENT`.
    pub comment: String,
}

/// Errors of the sandbox's Rust API.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The listener could not be bound.
    #[error("cannot bind the sandbox listener: {0}")]
    Bind(#[from] std::io::Error),
    /// Seed data was not a JSON object of fields.
    #[error("seed fields must be a JSON object")]
    NotAnObject,
    /// The portal refused the change (same rules as over REST).
    #[error("portal refused: {code} {description}")]
    Refused {
        /// `error` code.
        code: String,
        /// `error_description`.
        description: String,
    },
}

impl From<store::ApiError> for SandboxError {
    fn from(e: store::ApiError) -> Self {
        Self::Refused {
            code: e.code,
            description: e.description,
        }
    }
}

/// Entry point.
pub struct Sandbox;

impl Sandbox {
    /// Binds 127.0.0.1 on a free port and serves until the handle is shut down or
    /// dropped.
    pub async fn start(opts: SandboxOptions) -> Result<SandboxHandle, SandboxError> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let base = format!("http://{addr}");
        let identity = PortalIdentity {
            domain: opts.domain.clone(),
            client_endpoint: format!("{base}/rest/"),
            server_endpoint: format!("{base}/rest/"),
            member_id: opts.member_id.clone(),
        };
        let (bus, queue) = EventBus::new(identity.clone());
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new(opts.task_activities)),
            bucket: Mutex::new(Bucket::new(opts.rate_limit)),
            operating: Mutex::new(Operating::new(opts.operating_limit)),
            fault_reset_after: Mutex::new(opts.faults.operating_reset_after),
            faults: Mutex::new(Dice::new(opts.faults.clone())),
            command_faults: Mutex::new(BTreeMap::new()),
            lost_answers: Mutex::new(BTreeMap::new()),
            calls: Mutex::new(CallLog::default()),
            bus: bus.clone(),
            user_id: opts.user_id,
            code: opts.webhook_code.clone(),
            oauth: Mutex::new(opts.oauth.as_ref().map(OAuthState::new)),
            identity: identity.clone(),
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        let app = axum::Router::new()
            .fallback(http::handle)
            .with_state(shared.clone());
        let server = leadscore_sandbox_kit::serve(listener, app, stop_rx.clone());
        let worker = tokio::spawn(events::run(
            bus,
            queue,
            opts.delivery_timeout,
            opts.delivery_delay,
            stop_rx,
        ));
        Ok(SandboxHandle {
            shared,
            base,
            stop: stop_tx,
            tasks: Mutex::new(Some((server, worker))),
        })
    }
}

/// A running portal: its URLs, its seed/test API and its shutdown.
pub struct SandboxHandle {
    shared: Arc<Shared>,
    base: String,
    stop: watch::Sender<bool>,
    tasks: Mutex<Option<(JoinHandle<()>, JoinHandle<()>)>>,
}

impl fmt::Debug for SandboxHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SandboxHandle")
            .field("base_url", &self.base)
            .finish_non_exhaustive()
    }
}

impl SandboxHandle {
    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The inbound webhook, `{base}/rest/{user}/{code}/`, a secret like a real one.
    pub fn webhook_url(&self) -> SecretString {
        SecretString::from(format!(
            "{}/rest/{}/{}/",
            self.base,
            self.shared.user_id,
            self.shared.code.expose_secret()
        ))
    }

    /// The OAuth client endpoint, `{base}/rest/` (call `{base}/rest/{method}` + `auth`).
    pub fn client_endpoint(&self) -> String {
        format!("{}/rest/", self.base)
    }

    /// The token endpoint, `{base}/oauth/token/` (stands in for oauth.bitrix.info).
    pub fn oauth_token_url(&self) -> String {
        format!("{}/oauth/token/", self.base)
    }

    /// The portal domain sent in `auth[domain]`.
    pub fn domain(&self) -> &str {
        &self.shared.identity.domain
    }

    /// The `member_id` sent in `auth[member_id]`.
    pub fn member_id(&self) -> &str {
        &self.shared.identity.member_id
    }

    // ------------------------------------------------------------------ seed API

    fn with_state<T>(
        &self,
        f: impl FnOnce(&mut State, &mut Vec<store::Fired>) -> Result<T, store::ApiError>,
    ) -> Result<T, SandboxError> {
        let mut fired = Vec::new();
        let out = {
            let mut st = lock(&self.shared.state);
            f(&mut st, &mut fired)
        };
        self.shared.emit(fired);
        Ok(out?)
    }

    fn object(fields: Value) -> Result<Map<String, Value>, SandboxError> {
        match fields {
            Value::Object(m) => Ok(m),
            _ => Err(SandboxError::NotAnObject),
        }
    }

    /// Adds a lead from crm.lead-shaped fields (`TITLE`, `EMAIL: [{VALUE, VALUE_TYPE}]`,
    /// `UF_CRM_*`, and `DATE_CREATE`/`DATE_MODIFY` to age it). Fires ONCRMLEADADD.
    pub fn add_lead(&self, fields: Value) -> Result<u64, SandboxError> {
        let fields = Self::object(fields)?;
        self.with_state(|st, fired| st.add_lead(&fields, Actor::Seed, fired))
    }

    /// Changes a lead as a user in the UI would; fires ONCRMLEADUPDATE only if something
    /// changed. Returns whether it did.
    pub fn update_lead(&self, id: u64, fields: Value) -> Result<bool, SandboxError> {
        let fields = Self::object(fields)?;
        self.with_state(|st, fired| st.update_lead(id, &fields, Actor::Seed, fired))
    }

    /// Deletes a lead; fires ONCRMLEADDELETE.
    pub fn delete_lead(&self, id: u64) -> Result<(), SandboxError> {
        self.with_state(|st, fired| st.delete_lead(id, fired))
    }

    /// The lead as crm.lead.get would return it.
    pub fn get_lead(&self, id: u64) -> Option<Value> {
        let st = lock(&self.shared.state);
        st.leads
            .get(&id)
            .map(|l| Value::Object(st.lead_upper(l, None)))
    }

    /// Adds a deal from crm.deal.add-shaped fields (`LEAD_ID`, `STAGE_ID` such as `WON`,
    /// `LOSE` or `C1:WON`, `CATEGORY_ID`, `OPPORTUNITY`, `CLOSEDATE`, `DATE_CREATE`,
    /// `UF_CRM_*`); the stage semantics follow from the stage. Fires ONCRMDEALADD.
    pub fn add_deal(&self, fields: Value) -> Result<u64, SandboxError> {
        let fields = Self::object(fields)?;
        self.with_state(|st, fired| st.deals.add(&fields, Actor::Seed, &st.userfields, fired))
    }

    /// Changes a deal as a user in the UI would; fires ONCRMDEALUPDATE only if something
    /// changed. Returns whether it did.
    pub fn update_deal(&self, id: u64, fields: Value) -> Result<bool, SandboxError> {
        let fields = Self::object(fields)?;
        self.with_state(|st, fired| {
            st.deals
                .update(id, &fields, Actor::Seed, &st.userfields, fired)
        })
    }

    /// The deal as crm.deal.get would return it (user fields included).
    pub fn get_deal(&self, id: u64) -> Option<Value> {
        lock(&self.shared.state).deals.get(id).ok()
    }

    /// Every deal, crm.deal.get-shaped, by id.
    pub fn deals(&self) -> Vec<Value> {
        let st = lock(&self.shared.state);
        st.deals
            .rows
            .keys()
            .filter_map(|id| st.deals.get(*id).ok())
            .collect()
    }

    /// Switch the portal's CRM mode: `true` is the simple mode (`crm.settings.mode.get`
    /// answers 2; lead lists are empty and single-lead methods are refused), `false`
    /// the classic one with leads (1).
    pub fn set_simple_mode(&self, simple: bool) {
        lock(&self.shared.state).simple_mode = simple;
    }

    /// Creates a deal user field as an admin would (crm.deal.userfield.add fields).
    pub fn add_deal_userfield(&self, fields: Value) -> Result<u64, SandboxError> {
        let fields = Self::object(fields)?;
        self.with_state(|st, fired| st.add_entity_userfield(store::ENTITY_DEAL, &fields, fired))
    }

    /// Deal user fields, crm.deal.userfield.list-shaped.
    pub fn deal_userfields(&self) -> Vec<Value> {
        lock(&self.shared.state)
            .userfields
            .iter()
            .filter(|u| u.entity == store::ENTITY_DEAL)
            .map(|u| Value::Object(State::userfield_json(u)))
            .collect()
    }

    /// Every lead, crm.lead.get-shaped, by id.
    pub fn leads(&self) -> Vec<Value> {
        let st = lock(&self.shared.state);
        st.leads
            .values()
            .map(|l| Value::Object(st.lead_upper(l, None)))
            .collect()
    }

    /// Adds an activity from crm.activity.add-shaped fields (`OWNER_TYPE_ID`, `OWNER_ID`,
    /// `TYPE_ID`, `DIRECTION`, `SUBJECT`, …); fires ONCRMACTIVITYADD.
    pub fn add_activity(&self, fields: Value) -> Result<u64, SandboxError> {
        let fields = Self::object(fields)?;
        self.with_state(|st, fired| st.add_activity(&fields, Actor::Seed, fired))
    }

    /// Changes an activity; fires ONCRMACTIVITYUPDATE only on a real change.
    pub fn update_activity(&self, id: u64, fields: Value) -> Result<bool, SandboxError> {
        let fields = Self::object(fields)?;
        self.with_state(|st, fired| st.update_activity(id, &fields, Actor::Seed, fired))
    }

    /// Deletes an activity; fires ONCRMACTIVITYDELETE.
    pub fn delete_activity(&self, id: u64) -> Result<(), SandboxError> {
        self.with_state(|st, fired| st.delete_activity(id, fired))
    }

    /// Every activity, crm.activity.get-shaped plus `BINDINGS`.
    pub fn activities(&self) -> Vec<Value> {
        let st = lock(&self.shared.state);
        let select = ["*".to_owned(), "BINDINGS".to_owned()];
        st.activities
            .values()
            .map(|a| Value::Object(State::activity_json(a, &select)))
            .collect()
    }

    /// The to-dos (activities with `PROVIDER_ID` `CRM_TODO`).
    pub fn todos(&self) -> Vec<Value> {
        self.activities()
            .into_iter()
            .filter(|a| a.get("PROVIDER_ID").and_then(Value::as_str) == Some("CRM_TODO"))
            .collect()
    }

    /// Every task.
    pub fn tasks(&self) -> Vec<SandboxTask> {
        lock(&self.shared.state)
            .tasks
            .values()
            .map(|t| SandboxTask {
                id: t.id,
                title: t.title.clone(),
                description: t.description.clone(),
                responsible_id: t.responsible_id,
                deadline: t.deadline.clone(),
                priority: t.priority,
                status: t.status,
                crm_bindings: t.uf_crm_task.clone(),
            })
            .collect()
    }

    /// Completes a task as its responsible user would.
    pub fn complete_task(&self, id: u64) -> Result<(), SandboxError> {
        let mut done = Map::new();
        done.insert("STATUS".into(), Value::from(store::TASK_COMPLETED));
        self.with_state(|st, fired| st.update_task(id, &done, Actor::Seed, fired))
    }

    /// Every timeline comment.
    pub fn comments(&self) -> Vec<SandboxComment> {
        lock(&self.shared.state)
            .comments
            .iter()
            .map(|c| SandboxComment {
                id: c.id,
                entity_id: c.entity_id,
                entity_type: c.entity_type.clone(),
                comment: c.comment.clone(),
            })
            .collect()
    }

    /// Creates a lead user field as an admin would (crm.lead.userfield.add fields).
    pub fn add_userfield(&self, fields: Value) -> Result<u64, SandboxError> {
        let fields = Self::object(fields)?;
        self.with_state(|st, fired| st.add_userfield(&fields, fired))
    }

    /// Lead user fields, crm.lead.userfield.list-shaped (enumeration `LIST` with ids).
    pub fn userfields(&self) -> Vec<Value> {
        lock(&self.shared.state)
            .userfields
            .iter()
            .filter(|u| u.entity == store::ENTITY_LEAD)
            .map(|u| Value::Object(State::userfield_json(u)))
            .collect()
    }

    // ------------------------------------------------------------------ events

    /// Subscribes `handler_url` to `event` like the UI's outgoing webhook; returns the
    /// `event_handler_id`.
    pub fn bind_event(
        &self,
        event: &str,
        handler_url: &str,
        application_token: SecretString,
    ) -> u32 {
        self.shared.bus.bind(event, handler_url, application_token)
    }

    /// Removes a subscription.
    pub fn unbind_event(&self, handler_id: u32) -> bool {
        self.shared.bus.unbind(handler_id)
    }

    /// Every delivery attempted so far.
    pub fn delivered(&self) -> Vec<Delivery> {
        self.shared.bus.deliveries()
    }

    /// Deliveries queued or in flight.
    pub fn pending_deliveries(&self) -> usize {
        self.shared.bus.pending()
    }

    /// Waits until the outgoing queue is empty.
    pub async fn settle(&self) {
        self.shared.bus.settle().await;
    }

    // ------------------------------------------------------------------ calls

    /// The latest REST calls (batch commands included, flagged `in_batch`; the last
    /// 50,000 are kept, the counts below stay exact past that).
    pub fn calls(&self) -> Vec<CallRecord> {
        lock(&self.shared.calls).records().cloned().collect()
    }

    /// Calls of one method (top-level and inside batches).
    pub fn count_method(&self, method: &str) -> usize {
        let m = method.to_ascii_lowercase();
        lock(&self.shared.calls).count(|(method, _, _)| *method == m)
    }

    /// HTTP requests (not batch commands) answered with `status`.
    pub fn count_status(&self, status: u16) -> usize {
        lock(&self.shared.calls).count(|(_, in_batch, s)| !in_batch && *s == status)
    }

    /// Counts by method and by status.
    pub fn counters(&self) -> Counters {
        let calls = lock(&self.shared.calls);
        let mut c = Counters::default();
        for ((method, in_batch, status), n) in calls.counters() {
            *c.by_method.entry(method.clone()).or_default() += n;
            if !in_batch {
                *c.by_status.entry(*status).or_default() += n;
                c.requests += n;
            }
        }
        c
    }

    /// Forgets recorded calls and deliveries' counts start again from zero.
    pub fn reset_counters(&self) {
        lock(&self.shared.calls).clear();
    }

    // ------------------------------------------------------------------ limits and faults

    /// Replaces the leaky bucket (`None` disables it); the level is kept.
    pub fn set_rate_limit(&self, limit: Option<RateLimit>) {
        lock(&self.shared.bucket).limit = limit;
    }

    /// Empties the leaky bucket.
    pub fn reset_bucket(&self) {
        lock(&self.shared.bucket).reset();
    }

    /// Sets the bucket's level, e.g. to start a benchmark with a partly full bucket as
    /// left behind by another client of the same portal.
    pub fn set_bucket_level(&self, level: f64) {
        lock(&self.shared.bucket).set_level(level);
    }

    /// The bucket's current level (requests counted and not yet drained).
    pub fn bucket_level(&self) -> f64 {
        lock(&self.shared.bucket).level()
    }

    /// Replaces the operating limit (`None` disables blocking).
    pub fn set_operating_limit(&self, limit: Option<OperatingLimit>) {
        lock(&self.shared.operating).limit = limit;
    }

    /// Operating seconds booked per method since start (`reset_operating` does not
    /// clear these), to measure what a workload costs the portal.
    pub fn operating_spent(&self) -> BTreeMap<String, f64> {
        lock(&self.shared.operating).totals()
    }

    /// Forgets all booked operating time.
    pub fn reset_operating(&self) {
        lock(&self.shared.operating).reset();
    }

    /// Replaces fault injection and reseeds its dice.
    pub fn set_faults(&self, faults: FaultConfig) {
        *lock(&self.shared.fault_reset_after) = faults.operating_reset_after;
        *lock(&self.shared.faults) = Dice::new(faults);
    }

    /// Fails the next `count` commands of `method` that run inside a `batch` with
    /// `INTERNAL_SERVER_ERROR` in `result_error` (the batch itself answers 200 and its
    /// other commands run), as a real portal does when one command breaks.
    pub fn fail_batch_commands(&self, method: &str, count: usize) {
        lock(&self.shared.command_faults).insert(method.to_ascii_lowercase(), count);
    }

    /// Runs the next `count` calls of `method` (a `batch` whole) and then answers 504
    /// Gateway Time-out, as a portal's nginx does when a method outlives its timeout:
    /// the change is made and the caller cannot know it, so only a caller that looks
    /// before it acts again avoids doing it twice.
    pub fn lose_answers(&self, method: &str, count: usize) {
        lock(&self.shared.lost_answers).insert(method.to_ascii_lowercase(), count);
    }

    // ------------------------------------------------------------------ OAuth

    /// The latest access and refresh tokens (OAuth mode only).
    pub fn oauth_tokens(&self) -> Option<(SecretString, SecretString)> {
        let guard = lock(&self.shared.oauth);
        let o = guard.as_ref()?;
        Some((
            SecretString::from(o.current_access.clone()),
            SecretString::from(o.refresh.clone().unwrap_or_default()),
        ))
    }

    /// Expires every access token now, so the next call gets 401 `expired_token`.
    pub fn expire_access_tokens(&self) {
        if let Some(o) = lock(&self.shared.oauth).as_mut() {
            let now = tokio::time::Instant::now();
            for exp in o.access.values_mut() {
                *exp = now;
            }
        }
    }

    // ------------------------------------------------------------------ shutdown

    /// Stops accepting, lets in-flight requests finish, stops the delivery worker.
    pub async fn shutdown(self) {
        self.close().await;
    }

    /// Like [`shutdown`](Self::shutdown) for a handle that is shared (e.g. in an `Arc`);
    /// later calls return at once.
    pub async fn close(&self) {
        let _ = self.stop.send(true);
        let tasks = lock(&self.tasks).take();
        if let Some((server, worker)) = tasks {
            let _ = server.await;
            let _ = worker.await;
        }
    }
}

impl Drop for SandboxHandle {
    fn drop(&mut self) {
        // Graceful: the server drains in-flight requests on its own task.
        let _ = self.stop.send(true);
    }
}

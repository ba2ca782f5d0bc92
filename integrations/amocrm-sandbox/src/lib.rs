//! A faithful fake amoCRM (Kommo) account speaking API v4, for tests and
//! `leadscore demo`; its own crate, so the product never links it.
//!
//! It is written from the public docs and captured payloads, independently of the
//! client crate, so that it actually tests the client:
//!
//! - auth: a long-lived bearer token, and OAuth2 at `POST /oauth2/access_token` (JSON or
//!   form) with single-use authorization codes and single-use, rotating refresh tokens
//!   (a spent one answers 401 "Token has been revoked"; every use is logged); access
//!   tokens expire after a configurable lifetime;
//! - leads, contacts (POSITION, EMAIL, PHONE), companies, events, notes, tasks, lead
//!   custom fields, users, pipelines and the account, in HAL shapes with `_links`,
//!   `_embedded` and `_page`; `204 No Content` for empty lists; 250-entity write batches;
//!   `validation-errors` 400s and problem+json 401/404s;
//! - the 7 requests/s limit per integration (429) and, after repeated violations, the
//!   account block where every API request answers 403 until the test unblocks it;
//! - seeded fault injection: 429, 500, 502 HTML, 504 on writes, slow answers, resets;
//! - webhooks POSTed form-encoded in the v2 shape amoCRM really sends, for changes made
//!   through the REST API (the daemon's own writes included, which is how loops happen)
//!   and through the seed API; a write that changes nothing fires nothing; delivered
//!   once, failures recorded, a hook that keeps failing switched off; subscriptions
//!   made by the handle or through `/api/v4/webhooks`;
//! - an event feed the API's own changes write to (`lead_added`, `lead_status_changed`,
//!   `custom_field_{ID}_value_changed`, …), and a contact's field changes made through
//!   the seed API, besides the events a test seeds;
//! - a call record (the latest 50 000 requests, exact counters by method, route and
//!   status).
//!
//! Deliberately not modelled: the 50 requests/s account-wide limit (only the
//! per-integration one), deletions, unsorted, customers, catalogs, `If-Modified-Since`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), leadscore_amocrm_sandbox::SandboxError> {
//! use leadscore_amocrm_sandbox::{FieldSpec, FieldType, NewLead, Sandbox, SandboxOptions};
//! let amo = Sandbox::start(SandboxOptions::default()).await?;
//! let score = amo.create_lead_field(FieldSpec::new("Lead score", FieldType::Numeric).api_only());
//! let lead = amo.add_lead(NewLead::named("ACME").price(5000))?;
//! amo.add_webhook("http://127.0.0.1:8080/webhooks/amocrm/main?secret=s", &["add_lead", "update_lead"]);
//! // … point the client at amo.base_url() with amo.long_lived_token() …
//! amo.settle().await;
//! assert_eq!(amo.count_status(429), 0);
//! # let _ = (score, lead); amo.shutdown().await; Ok(()) }
//! ```

mod api;
mod http;
mod limits;
mod model;
mod oauth;
mod query;
mod render;
mod store;
mod webhooks;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use secrecy::SecretString;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use model::{
    Company, Contact, CustomField, EntityType, EnumOption, Event, FieldSpec, FieldType, FieldValue,
    FieldValues, Lead, LeadChange, LinkedContact, LossReason, NewCompany, NewContact, NewEvent,
    NewLead, NewTask, Note, Pipeline, Stage, StoredValue, Tag, Task, User,
};

use http::{Runtime, Shared};
use leadscore_sandbox_kit::{lock, CallLog, Dice, Tally};
use limits::{Blocker, Windows};
use oauth::Auth;
use store::{now_unix, seed_value_json, AccountSeed, State};
use webhooks::{AccountKeys, Hooks};

/// The request limit: at most `requests` per sliding `per`, per integration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests admitted per window.
    pub requests: u32,
    /// Window length.
    pub per: Duration,
}

impl Default for RateLimit {
    /// amoCRM's default: 7 requests per second per integration.
    fn default() -> Self {
        Self {
            requests: 7,
            per: Duration::from_secs(1),
        }
    }
}

/// When repeated 429s block the account (every API request then answers 403).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockPolicy {
    /// This many violations …
    pub violations: u32,
    /// … within this window block the account.
    pub within: Duration,
}

impl Default for BlockPolicy {
    /// 20 violations within a minute.
    fn default() -> Self {
        Self {
            violations: 20,
            within: Duration::from_secs(60),
        }
    }
}

/// The body of 429 and 403 answers: the problem+json shape, or an nginx HTML page as
/// reported during real blocks (amocrm-api-php issue #318).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ErrorBody {
    /// `application/problem+json`.
    #[default]
    Json,
    /// `text/html`.
    Html,
}

/// What `GET /api/v4/{entity}/{id}` answers for an id that does not exist.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MissingEntity {
    /// 204 No Content, which is what the official SDK's `getOne` is written against.
    #[default]
    NoContent,
    /// 404 problem+json.
    NotFound,
}

/// A fault the account can inject instead of a normal answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    /// 429 as if the limit were hit (not counted as a violation).
    TooManyRequests,
    /// 500 problem+json; nothing is changed.
    InternalServerError,
    /// 502 with an nginx HTML page; nothing is changed.
    BadGatewayHtml,
    /// 504 HTML page on POST/PATCH (reads roll no fault); nothing is changed.
    GatewayTimeout,
    /// The change is made, the answer comes after `FaultConfig::slow_delay`.
    SlowResponse,
    /// The TCP connection is reset before any answer; nothing is changed.
    ConnectionReset,
}

impl FaultKind {
    /// Every kind.
    pub const ALL: [FaultKind; 6] = [
        FaultKind::TooManyRequests,
        FaultKind::InternalServerError,
        FaultKind::BadGatewayHtml,
        FaultKind::GatewayTimeout,
        FaultKind::SlowResponse,
        FaultKind::ConnectionReset,
    ];
}

/// Fault injection: each admitted API request fails with probability `rate`, the kind
/// drawn from `mix` by weight; the same seed and request order give the same faults.
/// `FaultConfig::uniform` and `FaultConfig::only` come with the kit's dice
/// (`leadscore_sandbox_kit::fault_mix!`, in `limits.rs`).
#[derive(Clone, Debug, PartialEq)]
pub struct FaultConfig {
    /// Probability per request, 0.0–1.0.
    pub rate: f64,
    /// Kinds with relative weights.
    pub mix: Vec<(FaultKind, u32)>,
    /// Seed of the dice.
    pub seed: u64,
    /// How late a `SlowResponse` answers.
    pub slow_delay: Duration,
}

impl Default for FaultConfig {
    /// No faults.
    fn default() -> Self {
        Self {
            rate: 0.0,
            mix: Vec::new(),
            seed: 0,
            slow_delay: Duration::from_secs(3),
        }
    }
}

impl FaultConfig {
    /// Sets the slow-answer delay.
    pub fn slow_delay(mut self, delay: Duration) -> Self {
        self.slow_delay = delay;
        self
    }
}

/// The OAuth integration the account knows.
#[derive(Clone, Debug)]
pub struct OAuthOptions {
    /// Integration id.
    pub client_id: String,
    /// Integration secret.
    pub client_secret: SecretString,
    /// Redirect URI registered for the integration; token requests must repeat it.
    pub redirect_uri: String,
    /// Access-token lifetime, reported as `expires_in` (24 h on amoCRM).
    pub access_ttl: Duration,
    /// Authorization-code lifetime (20 minutes on amoCRM).
    pub code_ttl: Duration,
}

impl OAuthOptions {
    /// An integration with amoCRM's lifetimes.
    pub fn new(client_id: &str, client_secret: SecretString, redirect_uri: &str) -> Self {
        Self {
            client_id: client_id.to_owned(),
            client_secret,
            redirect_uri: redirect_uri.to_owned(),
            access_ttl: Duration::from_secs(86_400),
            code_ttl: Duration::from_secs(20 * 60),
        }
    }
}

/// A token pair issued by [`SandboxHandle::issue_tokens`].
#[derive(Clone, Debug)]
pub struct IssuedTokens {
    /// Bearer token.
    pub access_token: SecretString,
    /// Single-use refresh token.
    pub refresh_token: SecretString,
    /// Seconds the access token lives.
    pub expires_in: u64,
}

/// How one presentation of a refresh token ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// Accepted; a new pair was issued and this token is now spent.
    Rotated,
    /// The token had already been spent: 401 "Token has been revoked".
    Revoked,
    /// Not a token this account issued.
    Unknown,
    /// Wrong client id or secret.
    BadClient,
    /// Another parameter was wrong (redirect URI).
    BadRequest,
}

/// One presentation of a refresh token at the token endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefreshUse {
    /// Issue number of the token presented (1 for the first issued), if it was ours.
    pub serial: Option<u64>,
    /// What happened.
    pub outcome: RefreshOutcome,
    /// When.
    pub at: SystemTime,
}

/// When a failing webhook is switched off (amoCRM: more than 100 failures within two
/// hours, the last one failed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WebhookPolicy {
    /// More failures than this …
    pub failures: u32,
    /// … within this window disable the webhook.
    pub within: Duration,
}

impl Default for WebhookPolicy {
    fn default() -> Self {
        Self {
            failures: 100,
            within: Duration::from_secs(2 * 3600),
        }
    }
}

/// A webhook subscription, without its destination (the URL carries a secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookInfo {
    /// Id returned by [`SandboxHandle::add_webhook`].
    pub id: u64,
    /// Event codes (`add_lead`, `update_lead`, …).
    pub settings: Vec<String>,
    /// Switched off after too many failures.
    pub disabled: bool,
    /// Failed deliveries so far.
    pub failures: usize,
}

/// One webhook POST attempt.
#[derive(Clone, Debug, PartialEq)]
pub struct Delivery {
    /// Subscription id.
    pub webhook_id: u64,
    /// Event codes included in the body.
    pub settings: Vec<String>,
    /// The form body sent.
    pub body: String,
    /// Status answered, if any.
    pub status: Option<u16>,
    /// Why it counts as failed (non-2xx, timeout, refused connection).
    pub error: Option<String>,
    /// When it finished.
    pub at: SystemTime,
    /// How long it took.
    pub elapsed: Duration,
}

impl Delivery {
    /// Whether amoCRM would count it as delivered (a 1xx/2xx answer in time).
    pub fn ok(&self) -> bool {
        self.error.is_none()
    }
}

/// One request the account received.
#[derive(Clone, Debug, PartialEq)]
pub struct CallRecord {
    /// HTTP method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Path with ids replaced by `{id}`.
    pub route: String,
    /// Raw query string.
    pub query: String,
    /// Status answered (0 for a reset connection).
    pub status: u16,
    /// When it finished.
    pub at: SystemTime,
    /// How long it took.
    pub elapsed: Duration,
    /// The fault injected, if any.
    pub fault: Option<FaultKind>,
}

impl Tally for CallRecord {
    /// Method, route and status: the counters' key.
    type Key = (String, String, u16);

    fn key(&self) -> Self::Key {
        (self.method.clone(), self.route.clone(), self.status)
    }
}

/// Everything about the account a test can choose before it starts.
#[derive(Clone, Debug)]
pub struct SandboxOptions {
    /// `account[subdomain]`.
    pub subdomain: String,
    /// `account[id]`.
    pub account_id: u64,
    /// Account name.
    pub account_name: String,
    /// Users; the first is the admin the tokens belong to.
    pub users: Vec<User>,
    /// Pipelines; one is the main one.
    pub pipelines: Vec<Pipeline>,
    /// Long-lived token of a private integration (`None`: OAuth only).
    pub long_lived_token: Option<SecretString>,
    /// Lifetime of the long-lived token (`None`: does not expire in a test's time).
    pub long_lived_ttl: Option<Duration>,
    /// OAuth integration (`None`: long-lived token only).
    pub oauth: Option<OAuthOptions>,
    /// Request limit (`None`: unlimited).
    pub rate_limit: Option<RateLimit>,
    /// Block policy (`None`: violations never block).
    pub block: Option<BlockPolicy>,
    /// Body of 429s.
    pub throttle_body: ErrorBody,
    /// Body of 403s while blocked.
    pub blocked_body: ErrorBody,
    /// Fault injection.
    pub faults: FaultConfig,
    /// Writes carrying more entities than this answer 504 (amoCRM: "send fewer").
    pub timeout_batch_above: Option<usize>,
    /// Answer for a missing record by id.
    pub missing_entity: MissingEntity,
    /// How long a webhook receiver may take (amoCRM waits 2 s).
    pub webhook_timeout: Duration,
    /// When a failing webhook is switched off.
    pub webhook_policy: WebhookPolicy,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        Self {
            subdomain: "leadscore".into(),
            account_id: 29_715_442,
            account_name: "Leadscore Sandbox".into(),
            users: vec![
                User {
                    id: 3_493_057,
                    name: "Анна Смирнова".into(),
                    email: "anna@sandbox.test".into(),
                    is_admin: true,
                },
                User {
                    id: 3_493_061,
                    name: "Борис Петров".into(),
                    email: "boris@sandbox.test".into(),
                    is_admin: false,
                },
            ],
            pipelines: store::default_pipelines(),
            long_lived_token: Some(SecretString::from("sandbox-long-lived-token")),
            long_lived_ttl: None,
            oauth: Some(OAuthOptions::new(
                "sandbox-client-id",
                SecretString::from("sandbox-client-secret"),
                "https://leadscore.test/oauth/amocrm",
            )),
            rate_limit: Some(RateLimit::default()),
            block: Some(BlockPolicy::default()),
            throttle_body: ErrorBody::Json,
            blocked_body: ErrorBody::Json,
            faults: FaultConfig::default(),
            timeout_batch_above: None,
            missing_entity: MissingEntity::NoContent,
            webhook_timeout: Duration::from_secs(2),
            webhook_policy: WebhookPolicy::default(),
        }
    }
}

impl SandboxOptions {
    /// Defaults without the request limit and block, for tests about something else.
    pub fn unlimited() -> Self {
        Self {
            rate_limit: None,
            block: None,
            ..Self::default()
        }
    }
}

/// Why a sandbox operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The listener could not bind 127.0.0.1:0.
    #[error("cannot bind the sandbox listener: {0}")]
    Bind(#[from] std::io::Error),
    /// The account has no OAuth integration.
    #[error("OAuth is not enabled on this sandbox")]
    OAuthDisabled,
    /// No lead with this id.
    #[error("no lead {0}")]
    UnknownLead(u64),
    /// No contact with this id.
    #[error("no contact {0}")]
    UnknownContact(u64),
    /// No company with this id.
    #[error("no company {0}")]
    UnknownCompany(u64),
    /// No user with this id.
    #[error("no user {0}")]
    UnknownUser(u64),
    /// Users cannot edit an `is_api_only` field.
    #[error("field {0} is API-only and cannot be changed by a user")]
    ApiOnlyField(u64),
    /// The data would fail amoCRM's validation.
    #[error("invalid: {0}")]
    Invalid(String),
}

/// Starts sandboxes.
pub struct Sandbox;

impl Sandbox {
    /// Binds 127.0.0.1:0 and serves the account until the handle shuts it down or drops.
    pub async fn start(options: SandboxOptions) -> Result<SandboxHandle, SandboxError> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let base_url = format!("http://{addr}");
        let seed = AccountSeed {
            id: options.account_id,
            subdomain: options.subdomain.clone(),
            name: options.account_name.clone(),
            users: options.users.clone(),
            pipelines: options.pipelines.clone(),
        };
        let account = AccountKeys {
            subdomain: options.subdomain.clone(),
            id: options.account_id,
            self_link: base_url.clone(),
        };
        let (hooks, queue) = Hooks::new(account, options.webhook_policy);
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new(seed, base_url.clone())),
            auth: Mutex::new(Auth::new(
                options.long_lived_token.clone(),
                options.long_lived_ttl,
                options.oauth.clone(),
            )),
            windows: Mutex::new(Windows::new(options.rate_limit)),
            blocker: Mutex::new(Blocker::new(options.block)),
            dice: Mutex::new(Dice::new(options.faults.clone())),
            calls: Mutex::new(CallLog::default()),
            hooks: hooks.clone(),
            runtime: Mutex::new(Runtime {
                throttle_body: options.throttle_body,
                blocked_body: options.blocked_body,
                missing: options.missing_entity,
                timeout_batch_above: options.timeout_batch_above,
            }),
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        let app = axum::Router::new()
            .fallback(http::entry)
            .with_state(shared.clone());
        let server = leadscore_sandbox_kit::serve(listener, app, stop_rx.clone());
        let worker = tokio::spawn(webhooks::run(
            hooks,
            queue,
            options.webhook_timeout,
            stop_rx,
        ));
        Ok(SandboxHandle {
            shared,
            base_url,
            stop: stop_tx,
            tasks: Mutex::new(Some((server, worker))),
        })
    }
}

/// A running sandbox account: its URL, the seed API, webhooks, the call record, limits
/// and faults. Dropping it stops the server (without waiting).
pub struct SandboxHandle {
    shared: Arc<Shared>,
    base_url: String,
    stop: watch::Sender<bool>,
    tasks: Mutex<Option<(JoinHandle<()>, JoinHandle<()>)>>,
}

impl std::fmt::Debug for SandboxHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxHandle")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl Drop for SandboxHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

impl SandboxHandle {
    // ------------------------------------------------------------------ identity, auth

    /// `http://127.0.0.1:{port}`: what the client uses instead of `https://{sub}.amocrm.ru`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// `account[id]`.
    pub fn account_id(&self) -> u64 {
        lock(&self.shared.state).account_id
    }

    /// `account[subdomain]`.
    pub fn subdomain(&self) -> String {
        lock(&self.shared.state).subdomain.clone()
    }

    /// The long-lived token, if configured.
    pub fn long_lived_token(&self) -> Option<SecretString> {
        lock(&self.shared.auth).long_lived()
    }

    /// A new single-use authorization code, as if an admin had just installed the
    /// integration (exchange it at `/oauth2/access_token`).
    pub fn new_authorization_code(&self) -> Result<SecretString, SandboxError> {
        lock(&self.shared.auth)
            .new_code()
            .ok_or(SandboxError::OAuthDisabled)
    }

    /// A fresh OAuth pair without the HTTP round trip.
    pub fn issue_tokens(&self) -> Result<IssuedTokens, SandboxError> {
        lock(&self.shared.auth)
            .issue()
            .ok_or(SandboxError::OAuthDisabled)
    }

    /// Makes every access token issued so far expire now (the next call gets 401).
    pub fn expire_access_tokens(&self) {
        lock(&self.shared.auth).expire_access();
    }

    /// Lifetime of access tokens issued from now on.
    pub fn set_access_ttl(&self, ttl: Duration) {
        lock(&self.shared.auth).set_access_ttl(ttl);
    }

    /// Every refresh-token presentation, in order.
    pub fn refresh_uses(&self) -> Vec<RefreshUse> {
        lock(&self.shared.auth).refresh_uses()
    }

    /// How many times a spent refresh token was presented again (should stay 0).
    pub fn refresh_reuses(&self) -> usize {
        self.refresh_uses()
            .iter()
            .filter(|u| u.outcome == RefreshOutcome::Revoked)
            .count()
    }

    // ------------------------------------------------------------------ seed: schema

    /// Creates a lead custom field, as an admin does in settings.
    pub fn create_lead_field(&self, spec: FieldSpec) -> CustomField {
        lock(&self.shared.state).add_field(EntityType::Lead, &spec, None)
    }

    /// Lead custom fields (including those created through the API).
    pub fn lead_fields(&self) -> Vec<CustomField> {
        lock(&self.shared.state)
            .fields_of(EntityType::Lead)
            .into_iter()
            .cloned()
            .collect()
    }

    /// Users of the account.
    pub fn users(&self) -> Vec<User> {
        lock(&self.shared.state).users.clone()
    }

    /// The user tokens belong to (and API changes are attributed to).
    pub fn current_user_id(&self) -> u64 {
        lock(&self.shared.state).current_user_id()
    }

    /// Pipelines with their stages.
    pub fn pipelines(&self) -> Vec<Pipeline> {
        lock(&self.shared.state).pipelines.clone()
    }

    // ------------------------------------------------------------------ seed: records

    /// Adds a lead as a user would (fires `add_lead`).
    pub fn add_lead(&self, lead: NewLead) -> Result<u64, SandboxError> {
        let mut body = json!({"name": lead.name, "price": lead.price});
        let obj = body
            .as_object_mut()
            .ok_or_else(|| SandboxError::Invalid("lead".into()))?;
        for (k, v) in [
            ("status_id", lead.status_id),
            ("pipeline_id", lead.pipeline_id),
            ("responsible_user_id", lead.responsible_user_id),
        ] {
            if let Some(v) = v {
                obj.insert(k.into(), json!(v));
            }
        }
        if let Some(t) = lead.created_at {
            obj.insert("created_at".into(), json!(t));
        }
        if let Some(t) = lead.updated_at {
            obj.insert("updated_at".into(), json!(t));
        }
        if let Some(t) = lead.closed_at {
            obj.insert("closed_at".into(), json!(t));
        }
        if let Some(r) = lead.loss_reason_id {
            obj.insert("loss_reason_id".into(), json!(r));
        }
        if !lead.fields.is_empty() {
            let cfv: Vec<Value> = lead
                .fields
                .iter()
                .map(|(id, v)| seed_value_json(*id, Some(v)))
                .collect();
            obj.insert("custom_fields_values".into(), Value::Array(cfv));
        }
        if !lead.tags.is_empty() {
            let tags: Vec<Value> = lead.tags.iter().map(|t| json!({"name": t})).collect();
            obj.insert("_embedded".into(), json!({"tags": tags}));
        }
        let mut items = Vec::new();
        let id = {
            let mut st = lock(&self.shared.state);
            let input = st.parse_lead(&body, true).map_err(invalid)?;
            let user = st.current_user_id();
            st.create_lead(input, user, now_unix(), &mut items)
        };
        self.shared.hooks.emit(&items);
        Ok(id)
    }

    /// Changes a lead as user `user_id` would in the UI: fires `update_lead` (and
    /// `status_lead` / `responsible_lead`) when something really changed; returns
    /// whether it did. API-only fields are refused, as the UI refuses them.
    pub fn update_lead(
        &self,
        lead_id: u64,
        change: LeadChange,
        user_id: u64,
    ) -> Result<bool, SandboxError> {
        let mut items = Vec::new();
        let changed = {
            let mut st = lock(&self.shared.state);
            if !st.leads.contains_key(&lead_id) {
                return Err(SandboxError::UnknownLead(lead_id));
            }
            if !st.user_exists(user_id) {
                return Err(SandboxError::UnknownUser(user_id));
            }
            if let Some((fid, _)) = change
                .fields
                .iter()
                .find(|(fid, _)| st.fields.get(fid).is_some_and(|f| f.is_api_only))
            {
                return Err(SandboxError::ApiOnlyField(*fid));
            }
            let mut body = json!({"id": lead_id});
            let obj = body
                .as_object_mut()
                .ok_or_else(|| SandboxError::Invalid("lead".into()))?;
            if let Some(n) = &change.name {
                obj.insert("name".into(), json!(n));
            }
            for (k, v) in [
                ("price", change.price.map(|p| json!(p))),
                ("status_id", change.status_id.map(|p| json!(p))),
                ("pipeline_id", change.pipeline_id.map(|p| json!(p))),
                (
                    "responsible_user_id",
                    change.responsible_user_id.map(|p| json!(p)),
                ),
            ] {
                if let Some(v) = v {
                    obj.insert(k.into(), v);
                }
            }
            if !change.fields.is_empty() {
                let cfv: Vec<Value> = change
                    .fields
                    .iter()
                    .map(|(id, v)| seed_value_json(*id, v.as_ref()))
                    .collect();
                obj.insert("custom_fields_values".into(), Value::Array(cfv));
            }
            let input = st.parse_lead(&body, false).map_err(invalid)?;
            st.patch_lead(input, user_id, now_unix(), &mut items)
        };
        self.shared.hooks.emit(&items);
        Ok(changed)
    }

    /// A snapshot of a lead.
    pub fn lead(&self, lead_id: u64) -> Option<Lead> {
        lock(&self.shared.state).leads.get(&lead_id).cloned()
    }

    /// Snapshots of every lead, by id.
    pub fn leads(&self) -> Vec<Lead> {
        lock(&self.shared.state).leads.values().cloned().collect()
    }

    /// Adds a contact with POSITION / EMAIL / PHONE.
    pub fn add_contact(&self, contact: NewContact) -> Result<u64, SandboxError> {
        let mut st = lock(&self.shared.state);
        let user = contact
            .responsible_user_id
            .unwrap_or_else(|| st.current_user_id());
        if !st.user_exists(user) {
            return Err(SandboxError::UnknownUser(user));
        }
        if let Some(c) = contact.company_id.filter(|c| !st.companies.contains_key(c)) {
            return Err(SandboxError::UnknownCompany(c));
        }
        Ok(st.add_contact(
            &contact.name,
            contact.position.as_deref(),
            &contact.emails,
            &contact.phones,
            user,
            contact.company_id,
            now_unix(),
        ))
    }

    /// Changes a contact's `POSITION`, `EMAIL` or `PHONE` as user `user_id` would in
    /// the card (`values` empty clears it); the event log records it as amoCRM does
    /// (`custom_field_{ID}_value_changed` of the contact). Returns whether it changed.
    pub fn set_contact_field(
        &self,
        contact_id: u64,
        code: &str,
        values: &[&str],
        user_id: u64,
    ) -> Result<bool, SandboxError> {
        let mut st = lock(&self.shared.state);
        if !st.contacts.contains_key(&contact_id) {
            return Err(SandboxError::UnknownContact(contact_id));
        }
        if !st.user_exists(user_id) {
            return Err(SandboxError::UnknownUser(user_id));
        }
        let values: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        Ok(st.set_contact_field(contact_id, code, &values, user_id, now_unix()))
    }

    /// A snapshot of a contact.
    pub fn contact(&self, contact_id: u64) -> Option<Contact> {
        lock(&self.shared.state).contacts.get(&contact_id).cloned()
    }

    /// Adds a company.
    pub fn add_company(&self, company: NewCompany) -> u64 {
        lock(&self.shared.state).add_company(
            &company.name,
            &company.phones,
            &company.emails,
            company.web.as_deref(),
            company.address.as_deref(),
            now_unix(),
        )
    }

    /// A snapshot of a company.
    pub fn company(&self, company_id: u64) -> Option<Company> {
        lock(&self.shared.state).companies.get(&company_id).cloned()
    }

    /// Links a contact to a lead (`is_main` makes it the main contact).
    pub fn link_contact(
        &self,
        lead_id: u64,
        contact_id: u64,
        is_main: bool,
    ) -> Result<(), SandboxError> {
        let mut st = lock(&self.shared.state);
        if !st.contacts.contains_key(&contact_id) {
            return Err(SandboxError::UnknownContact(contact_id));
        }
        let lead = st
            .leads
            .get_mut(&lead_id)
            .ok_or(SandboxError::UnknownLead(lead_id))?;
        if is_main {
            for c in &mut lead.contacts {
                c.is_main = false;
            }
        }
        match lead.contacts.iter_mut().find(|c| c.id == contact_id) {
            Some(c) => c.is_main = is_main,
            None => lead.contacts.push(LinkedContact {
                id: contact_id,
                is_main,
            }),
        }
        Ok(())
    }

    /// Links a company to a lead.
    pub fn link_company(&self, lead_id: u64, company_id: u64) -> Result<(), SandboxError> {
        let mut st = lock(&self.shared.state);
        if !st.companies.contains_key(&company_id) {
            return Err(SandboxError::UnknownCompany(company_id));
        }
        let lead = st
            .leads
            .get_mut(&lead_id)
            .ok_or(SandboxError::UnknownLead(lead_id))?;
        if !lead.companies.contains(&company_id) {
            lead.companies.push(company_id);
        }
        Ok(())
    }

    /// Adds a user to the account (a seeded history's reps); an existing id is kept.
    pub fn add_user(&self, user: User) {
        let mut st = lock(&self.shared.state);
        if !st.users.iter().any(|u| u.id == user.id) {
            st.users.push(user);
        }
    }

    /// Adds a loss reason (as an admin does in the pipeline settings); returns its id,
    /// the existing one when a reason has this name.
    pub fn add_loss_reason(&self, name: &str) -> u64 {
        let mut st = lock(&self.shared.state);
        if let Some(r) = st.loss_reasons.iter().find(|r| r.name == name) {
            return r.id;
        }
        let id = 7_000 + st.loss_reasons.len() as u64 + 1;
        let sort = 10 * (st.loss_reasons.len() as i64 + 1);
        st.loss_reasons.push(LossReason {
            id,
            name: name.to_owned(),
            sort,
        });
        id
    }

    /// The account's loss reasons.
    pub fn loss_reasons(&self) -> Vec<LossReason> {
        lock(&self.shared.state).loss_reasons.clone()
    }

    /// Adds an event to the feed (a call, a mail, a chat message, …); returns its id.
    pub fn add_event(&self, event: NewEvent) -> Result<String, SandboxError> {
        let mut st = lock(&self.shared.state);
        let exists = match event.entity_type {
            EntityType::Lead => st.leads.contains_key(&event.entity_id),
            EntityType::Contact => st.contacts.contains_key(&event.entity_id),
            EntityType::Company => st.companies.contains_key(&event.entity_id),
        };
        if !exists {
            return Err(SandboxError::Invalid(format!(
                "no {} {}",
                event.entity_type.event_name(),
                event.entity_id
            )));
        }
        let id = st.next_event_id();
        st.events.push(Event {
            id: id.clone(),
            event_type: event.event_type,
            entity_type: event.entity_type,
            entity_id: event.entity_id,
            created_by: event.created_by,
            created_at: event.created_at.unwrap_or_else(now_unix),
            value_after: event.value_after,
            value_before: event.value_before,
        });
        Ok(id)
    }

    /// Events of a lead, oldest first.
    pub fn events_of(&self, lead_id: u64) -> Vec<Event> {
        lock(&self.shared.state)
            .events
            .iter()
            .filter(|e| e.entity_type == EntityType::Lead && e.entity_id == lead_id)
            .cloned()
            .collect()
    }

    /// Adds a note to a lead as the current user (fires `note_lead`).
    pub fn add_note(
        &self,
        lead_id: u64,
        note_type: &str,
        params: Value,
    ) -> Result<u64, SandboxError> {
        self.add_note_at(lead_id, note_type, params, now_unix())
    }

    /// Adds a note to a lead as the current user at `created_at` (Unix seconds; a
    /// seeded history's past notes), with the event amoCRM adds beside it.
    pub fn add_note_at(
        &self,
        lead_id: u64,
        note_type: &str,
        params: Value,
        created_at: i64,
    ) -> Result<u64, SandboxError> {
        let mut items = Vec::new();
        let id = {
            let mut st = lock(&self.shared.state);
            if !st.leads.contains_key(&lead_id) {
                return Err(SandboxError::UnknownLead(lead_id));
            }
            let user = st.current_user_id();
            st.add_note(
                EntityType::Lead,
                lead_id,
                note_type,
                params,
                user,
                created_at,
                &mut items,
            )
        };
        self.shared.hooks.emit(&items);
        Ok(id)
    }

    /// Notes of a lead, by id.
    pub fn notes(&self, lead_id: u64) -> Vec<Note> {
        lock(&self.shared.state)
            .notes
            .values()
            .filter(|n| n.entity_type == EntityType::Lead && n.entity_id == lead_id)
            .cloned()
            .collect()
    }

    /// Adds a task as the current user.
    pub fn add_task(&self, task: NewTask) -> Result<u64, SandboxError> {
        let mut body = json!({
            "text": task.text,
            "complete_till": task.complete_till,
            "task_type_id": task.task_type_id,
            "is_completed": task.is_completed,
        });
        if let (Some(lead), Value::Object(m)) = (task.lead_id, &mut body) {
            m.insert("entity_type".into(), json!("leads"));
            m.insert("entity_id".into(), json!(lead));
        }
        if let (Some(u), Value::Object(m)) = (task.responsible_user_id, &mut body) {
            m.insert("responsible_user_id".into(), json!(u));
        }
        let mut st = lock(&self.shared.state);
        let input = st.parse_task(&body, true).map_err(invalid)?;
        let user = st.current_user_id();
        Ok(st.create_task(input, user, now_unix()))
    }

    /// Refuses new tasks on this lead from now on: `POST /api/v4/tasks` answers 400
    /// with a `validation-errors` entry for each such task (as for a lead deleted
    /// meanwhile) and creates none of the request's tasks, as amoCRM does.
    pub fn refuse_tasks_on(&self, lead_id: u64) {
        lock(&self.shared.state).refuse_tasks_on.insert(lead_id);
    }

    /// Marks a task done, as a user would.
    pub fn complete_task(&self, task_id: u64) -> Result<bool, SandboxError> {
        let mut st = lock(&self.shared.state);
        let input = st
            .parse_task(&json!({"id": task_id, "is_completed": true}), false)
            .map_err(invalid)?;
        let user = st.current_user_id();
        Ok(st.patch_task(input, user, now_unix()))
    }

    /// Every task, by id.
    pub fn tasks(&self) -> Vec<Task> {
        lock(&self.shared.state).tasks.values().cloned().collect()
    }

    /// Tasks attached to a lead.
    pub fn tasks_of(&self, lead_id: u64) -> Vec<Task> {
        lock(&self.shared.state)
            .tasks
            .values()
            .filter(|t| t.entity_type == Some(EntityType::Lead) && t.entity_id == Some(lead_id))
            .cloned()
            .collect()
    }

    // ------------------------------------------------------------------ webhooks

    /// Subscribes `destination` (it may carry `?secret=`; it is kept secret) to event
    /// codes such as `add_lead`, `update_lead`, `status_lead`, `responsible_lead`,
    /// `note_lead`; returns the subscription id.
    pub fn add_webhook(&self, destination: &str, settings: &[&str]) -> u64 {
        self.shared
            .hooks
            .add(SecretString::from(destination.to_owned()), settings)
    }

    /// Removes a subscription.
    pub fn remove_webhook(&self, id: u64) -> bool {
        self.shared.hooks.remove(id)
    }

    /// Re-enables a subscription switched off after failures.
    pub fn enable_webhook(&self, id: u64) -> bool {
        self.shared.hooks.enable(id)
    }

    /// Subscriptions.
    pub fn webhooks(&self) -> Vec<WebhookInfo> {
        self.shared.hooks.list()
    }

    /// Changes when failing subscriptions are switched off.
    pub fn set_webhook_policy(&self, policy: WebhookPolicy) {
        self.shared.hooks.set_policy(policy);
    }

    /// Every delivery attempted so far.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.shared.hooks.deliveries()
    }

    /// Deliveries that failed (amoCRM does not retry them).
    pub fn delivery_failures(&self) -> Vec<Delivery> {
        self.deliveries().into_iter().filter(|d| !d.ok()).collect()
    }

    /// Forgets the delivery record.
    pub fn clear_deliveries(&self) {
        self.shared.hooks.clear_deliveries();
    }

    /// Deliveries queued or in flight.
    pub fn pending_deliveries(&self) -> usize {
        self.shared.hooks.pending()
    }

    /// Waits until every queued webhook has been attempted.
    pub async fn settle(&self) {
        self.shared.hooks.settle().await;
    }

    // ------------------------------------------------------------------ call record

    /// The latest requests received (up to 50 000), in order of completion.
    pub fn calls(&self) -> Vec<CallRecord> {
        lock(&self.shared.calls).records().cloned().collect()
    }

    /// Requests answered with `status` (exact, not limited to the kept records).
    pub fn count_status(&self, status: u16) -> usize {
        lock(&self.shared.calls).count(|(_, _, s)| *s == status)
    }

    /// Requests to `route` (ids as `{id}`, e.g. `/api/v4/leads/{id}`) with `method`.
    pub fn count_route(&self, method: &str, route: &str) -> usize {
        lock(&self.shared.calls).count(|(m, r, _)| m.eq_ignore_ascii_case(method) && r == route)
    }

    /// Request counts by (method, route, status).
    pub fn counters(&self) -> BTreeMap<(String, String, u16), usize> {
        lock(&self.shared.calls).counters().clone()
    }

    /// Forgets the call record and the counters.
    pub fn reset_calls(&self) {
        lock(&self.shared.calls).clear();
    }

    // ------------------------------------------------------------------ limits and faults

    /// Changes (or removes) the request limit.
    pub fn set_rate_limit(&self, limit: Option<RateLimit>) {
        let mut w = lock(&self.shared.windows);
        w.limit = limit;
        w.reset();
    }

    /// Forgets the requests admitted in the current window.
    pub fn reset_rate_window(&self) {
        lock(&self.shared.windows).reset();
    }

    /// Changes (or removes) the block policy.
    pub fn set_block_policy(&self, policy: Option<BlockPolicy>) {
        lock(&self.shared.blocker).policy = policy;
    }

    /// Whether the account is blocked (every API request answers 403).
    pub fn blocked(&self) -> bool {
        lock(&self.shared.blocker).blocked
    }

    /// Lifts the block (on amoCRM: a support ticket).
    pub fn unblock(&self) {
        lock(&self.shared.blocker).unblock();
    }

    /// 429s caused by the request limit so far (injected 429s excluded).
    pub fn violations(&self) -> u64 {
        lock(&self.shared.blocker).total
    }

    /// Replaces the fault configuration and reseeds the dice.
    pub fn set_faults(&self, faults: FaultConfig) {
        *lock(&self.shared.dice) = Dice::new(faults);
    }

    /// Bodies of 429s and 403s.
    pub fn set_error_bodies(&self, throttle: ErrorBody, blocked: ErrorBody) {
        let mut r = lock(&self.shared.runtime);
        r.throttle_body = throttle;
        r.blocked_body = blocked;
    }

    /// Writes carrying more entities than `max` answer 504.
    pub fn set_timeout_batch_above(&self, max: Option<usize>) {
        lock(&self.shared.runtime).timeout_batch_above = max;
    }

    // ------------------------------------------------------------------ lifecycle

    /// Stops accepting, lets in-flight requests finish (at most 2 s), stops the
    /// webhook worker.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let tasks = lock(&self.tasks).take();
        if let Some((server, worker)) = tasks {
            let server_abort = server.abort_handle();
            if tokio::time::timeout(Duration::from_secs(2), server)
                .await
                .is_err()
            {
                server_abort.abort();
            }
            let _ = worker.await;
        }
    }
}

fn invalid(errors: Vec<store::Invalid>) -> SandboxError {
    SandboxError::Invalid(
        errors
            .iter()
            .map(|e| format!("{} at {}: {}", e.code, e.path, e.detail))
            .collect::<Vec<_>>()
            .join("; "),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shareable<T: Send + Sync + 'static>() {}

    #[test]
    fn the_handle_can_be_shared_across_tasks() {
        shareable::<SandboxHandle>();
        shareable::<SandboxOptions>();
    }

    #[test]
    fn options_debug_hides_secrets() {
        let shown = format!("{:?}", SandboxOptions::default());
        assert!(!shown.contains("sandbox-long-lived-token"), "{shown}");
        assert!(!shown.contains("sandbox-client-secret"), "{shown}");
    }
}

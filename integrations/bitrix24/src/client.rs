//! The Bitrix24 REST client: authentication, pacing, retries, typed helpers.
//!
//! One [`Client`] per portal, cheap to clone and shared by all workers, so every request
//! to the portal goes through one [`Pacer`] and one [`OperatingTracker`].
//!
//! **Lead methods: `crm.lead.list` / `crm.lead.update`, not `crm.item.*`.** The
//! `crm.lead.*` family is marked deprecated in favour of `crm.item.*` (entityTypeId 1),
//! but for what the daemon does the old methods fit better, and they still work:
//! - `crm.lead.list` with `select: ["*", "UF_*", "EMAIL", "PHONE"]` returns a lead's
//!   e-mails and phones (multi-fields) in the same answer; `crm.item.list` documents
//!   `fm` only as a write field, so reading contacts would cost extra requests.
//! - Keys come back under the names admins configure and `crm.lead.userfield.list`
//!   reports (`UF_CRM_LEADSCORE`), while `crm.item.*` camel-cases them
//!   (`ufCrmLeadscore`) unless `useOriginalUfNames` is passed on every call.
//! - `filter: {"@ID": [..50 ids..]}` plus `start: -1` fetches 50 leads in one request
//!   without the slow `total` count.
//!
//! `crm.item.get` / `list` / `update` are provided too ([`Client::item_get`] …) for
//! portals where the lead methods are switched off; the daemon does not need them.
//!
//! **Retries** follow [`RetryPolicy`]: limit errors, 5xx, timeouts and resets are
//! retried with exponential backoff and jitter (429 waits for `operating_reset_at`);
//! other 4xx are not. Methods that create things (`*.add`, or a batch containing one)
//! are only repeated when the portal surely did not execute them (limit answers, no
//! connection), so a timeout can never double a task; the caller recovers through
//! the task marker instead.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use rand::Rng;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{Mutex, Semaphore};
use tokio::task::JoinSet;

use crate::batch::{self, BatchCommand, CommandResult, MAX_COMMANDS};
use crate::error::{classify_at, Error};
use crate::limiter::{
    MethodUsage, OperatingConfig, OperatingSnapshot, OperatingTracker, Pacer, PacingConfig,
    PacingStats,
};
use crate::types::{value_i64, value_text, PageInfo, Time};

/// Largest answer read (a batch of 50 full lead pages is a few MB; this bounds memory
/// if a proxy or a broken portal streams without end).
pub const MAX_RESPONSE_BYTES: usize = 32 * 1024 * 1024;

/// Bitrix24's OAuth server (token refresh).
pub const DEFAULT_OAUTH_SERVER: &str = "https://oauth.bitrix.info/oauth/token/";

pub use crate::credentials::{Auth, OAuth, OAuthTokens, TokenCallback};

/// When and how often to retry, as data.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in total, the first included.
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    pub factor: f64,
    /// ± fraction of each delay drawn at random (0.2 = ±20%).
    pub jitter: f64,
    /// Longest wait for an operating-time pause or reset inside one call; a longer one
    /// is handed back to the caller as `OperationTimeLimit` with the time it ends, so
    /// a daemon reschedules the work instead of a worker sleeping for minutes.
    pub max_operating_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            factor: 2.0,
            jitter: 0.2,
            max_operating_wait: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// Retry this error (for an idempotent call or not) on attempt `attempt` (1-based)?
    pub fn should_retry(&self, e: &Error, attempt: u32, idempotent: bool) -> bool {
        attempt < self.max_attempts
            && e.is_retryable()
            && (idempotent || e.surely_not_executed())
            && e.retry_after().is_none_or(|w| w <= self.max_operating_wait)
    }

    /// Delay before the next attempt after `attempt` failed with `e`.
    pub fn delay(&self, attempt: u32, e: &Error) -> Duration {
        let exp =
            self.base_delay.as_secs_f64() * self.factor.powi(attempt.saturating_sub(1) as i32);
        let mut secs = exp.min(self.max_delay.as_secs_f64());
        if let Some(hint) = e.retry_after() {
            secs = secs.max(hint.as_secs_f64());
        } else if matches!(e, Error::OperationTimeLimit { .. }) {
            secs = secs.max(10.0);
        }
        let j = if self.jitter > 0.0 {
            rand::rng().random_range(-self.jitter..=self.jitter)
        } else {
            0.0
        };
        Duration::from_secs_f64((secs * (1.0 + j)).max(0.0))
    }
}

/// Client settings beyond authentication.
#[derive(Clone)]
pub struct ClientConfig {
    pub connect_timeout: Duration,
    /// Whole-request timeout; Bitrix24 cuts requests off at 60 s itself.
    pub timeout: Duration,
    pub retry: RetryPolicy,
    pub pacing: PacingConfig,
    pub operating: OperatingConfig,
    /// Batches [`Client::batch_all`] keeps in flight at once (pacing still applies).
    pub max_in_flight: usize,
    /// Names the portal in log lines (the config id); empty when there is none.
    pub label: String,
    /// What an earlier run of the daemon left in the portal's limits (bucket level and
    /// operating time): restored at start so a restart neither forgets spent budget
    /// nor sends a fresh burst into a full bucket.
    pub restore: Option<LimitsSnapshot>,
    /// Called after every answered request with the limits as they stand now, so the
    /// daemon can keep them in its store.
    pub on_usage: Option<UsageCallback>,
}

/// Receives the limiter state after each request (see [`ClientConfig::on_usage`]).
pub type UsageCallback = Arc<dyn Fn(&LimitsSnapshot) + Send + Sync>;

/// The portal's two limits as this client last knew them, in wall-clock terms.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LimitsSnapshot {
    /// When the snapshot was taken (unix milliseconds).
    pub at_ms: i64,
    /// Estimated requests in the leaky bucket at that moment.
    pub bucket_level: f64,
    /// Operating time per method.
    pub operating: OperatingSnapshot,
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("connect_timeout", &self.connect_timeout)
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .field("pacing", &self.pacing)
            .field("operating", &self.operating)
            .field("max_in_flight", &self.max_in_flight)
            .field("label", &self.label)
            .field("restore", &self.restore.is_some())
            .finish_non_exhaustive()
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(65),
            retry: RetryPolicy::default(),
            pacing: PacingConfig::standard(),
            operating: OperatingConfig::default(),
            max_in_flight: 4,
            label: String::new(),
            restore: None,
            on_usage: None,
        }
    }
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub result: Value,
    pub page: PageInfo,
    pub time: Time,
}

enum AuthState {
    Webhook {
        base: SecretString,
    },
    OAuth {
        rest_base: String,
        client_id: String,
        client_secret: SecretString,
        oauth_server: String,
        tokens: Mutex<OAuthTokens>,
        /// Bumped by every refresh, so callers that saw the same expired token refresh
        /// once between them instead of each rotating the tokens again.
        generation: std::sync::atomic::AtomicU64,
        on_refresh: TokenCallback,
    },
}

struct Inner {
    http: reqwest::Client,
    /// Where the portal moved to (scheme, host and port of a 3xx `Location`), applied to
    /// every later request, as the official PHP SDK does on a domain change.
    moved_to: std::sync::RwLock<Option<reqwest::Url>>,
    auth: AuthState,
    config: ClientConfig,
    pacer: Pacer,
    operating: OperatingTracker,
}

/// A paced, retrying Bitrix24 client for one portal. Clones share everything.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.inner.auth {
            AuthState::Webhook { .. } => "webhook [REDACTED]",
            AuthState::OAuth { .. } => "oauth [REDACTED]",
        };
        f.debug_struct("Client")
            .field("auth", &kind)
            .field("pacing", &self.inner.config.pacing)
            .finish_non_exhaustive()
    }
}

/// A method that creates something; repeating it after an unclear failure could double it.
fn is_idempotent(method: &str) -> bool {
    !method.to_ascii_lowercase().ends_with(".add")
}

fn redact(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_string();
    for s in secrets.iter().filter(|s| s.len() >= 4) {
        out = out.replace(s, "[REDACTED]");
    }
    out
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: Option<String>,
    refresh_token: Option<String>,
    expires_in: Option<Value>,
    error: Option<String>,
    error_description: Option<String>,
}

impl Client {
    /// Build a client. Fails on an unusable webhook URL or pacing settings.
    pub fn new(auth: Auth, config: ClientConfig) -> Result<Client, Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.timeout)
            .user_agent(concat!("leadscore-bitrix24/", env!("CARGO_PKG_VERSION")))
            // A moved portal answers 302; following it would turn our POST into a GET
            // without a body, so redirects are handled in `send_once` instead.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| Error::Config(e.without_url().to_string()))?;
        let auth = match auth {
            Auth::WebhookUrl(url) => {
                let u = url.expose_secret().trim();
                let parsed = reqwest::Url::parse(u)
                    .map_err(|_| Error::Config("the webhook URL is not a valid URL".into()))?;
                if !matches!(parsed.scheme(), "http" | "https") || !parsed.path().contains("/rest/")
                {
                    return Err(Error::Config(
                        "the webhook URL must look like https://PORTAL/rest/USER/CODE/".into(),
                    ));
                }
                let base = if u.ends_with('/') {
                    u.to_string()
                } else {
                    format!("{u}/")
                };
                AuthState::Webhook {
                    base: SecretString::from(base),
                }
            }
            Auth::OAuth(o) => {
                let trimmed = o.base_url.trim().trim_end_matches('/');
                reqwest::Url::parse(trimmed)
                    .map_err(|_| Error::Config("the portal base_url is not a valid URL".into()))?;
                let rest_base = if trimmed.ends_with("/rest") {
                    format!("{trimmed}/")
                } else {
                    format!("{trimmed}/rest/")
                };
                AuthState::OAuth {
                    rest_base,
                    client_id: o.client_id,
                    client_secret: o.client_secret,
                    oauth_server: o.oauth_server,
                    tokens: Mutex::new(o.tokens),
                    generation: std::sync::atomic::AtomicU64::new(0),
                    on_refresh: o.on_refresh,
                }
            }
        };
        let pacer = Pacer::new(config.pacing).map_err(|e| Error::Config(e.to_string()))?;
        let operating = OperatingTracker::new(config.operating).with_label(config.label.clone());
        if let Some(r) = &config.restore {
            let ago = (Utc::now().timestamp_millis() - r.at_ms).max(0) as u64;
            pacer.restore_level(r.bucket_level, Duration::from_millis(ago));
            operating.restore(&r.operating);
        }
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                moved_to: std::sync::RwLock::new(None),
                auth,
                config,
                pacer,
                operating,
            }),
        })
    }

    /// Pacing counters (requests sent, 503s seen, time waited).
    pub fn stats(&self) -> PacingStats {
        self.inner.pacer.stats()
    }

    /// Each method's operating-time standing (used of the limit, paused for how long).
    pub fn operating_usage(&self) -> Vec<MethodUsage> {
        self.inner.operating.usage()
    }

    /// The limits as they stand now, in wall-clock terms (what [`ClientConfig::restore`]
    /// takes back after a restart).
    pub fn limits_snapshot(&self) -> LimitsSnapshot {
        LimitsSnapshot {
            at_ms: Utc::now().timestamp_millis(),
            bucket_level: self.inner.pacer.level(),
            operating: self.inner.operating.snapshot(),
        }
    }

    fn report_usage(&self) {
        if let Some(cb) = &self.inner.config.on_usage {
            cb(&self.limits_snapshot());
        }
    }

    /// The settings in use.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// Call a method with JSON parameters (POST), paced and retried per the policy.
    pub async fn call(&self, method: &str, params: Value) -> Result<Response, Error> {
        self.call_inner(method, &params, &[method], is_idempotent(method))
            .await
    }

    async fn call_inner(
        &self,
        method: &str,
        params: &Value,
        gated_methods: &[&str],
        idempotent: bool,
    ) -> Result<Response, Error> {
        let inner = &self.inner;
        let policy = inner.config.retry;
        let mut attempt = 0u32;
        let mut refreshed = false;
        loop {
            attempt += 1;
            for m in gated_methods {
                if let Some(hold) = inner
                    .operating
                    .held_back(m)
                    .filter(|d| *d > policy.max_operating_wait)
                {
                    // Nothing was sent: the caller may reschedule without doubt.
                    return Err(Error::OperationTimeLimit {
                        method: (*m).to_string(),
                        reset_at: Some(
                            Utc::now() + chrono::Duration::from_std(hold).unwrap_or_default(),
                        ),
                    });
                }
                let waited = inner.operating.wait(m).await;
                if !waited.is_zero() {
                    inner.pacer.add_operating_wait(waited);
                }
            }
            inner.pacer.acquire().await;
            let generation = self.token_generation();
            let err = match self.send_once(method, params).await {
                Ok(resp) => {
                    // The outer `batch` is not counted by the portal; its commands are,
                    // each against its own method (recorded in `batch`).
                    if method != "batch" {
                        inner
                            .operating
                            .record(method, resp.time.processing, resp.time.operating);
                    }
                    self.report_usage();
                    return Ok(resp);
                }
                Err(e) => e,
            };
            match &err {
                Error::QueryLimitExceeded => inner.pacer.on_limit_exceeded(),
                Error::OperationTimeLimit { .. } => {
                    let wait = err.retry_after().unwrap_or(Duration::from_secs(10));
                    inner
                        .operating
                        .pause_until(method, tokio::time::Instant::now() + wait);
                }
                _ => {}
            }
            if err.is_expired_token() && !refreshed && matches!(inner.auth, AuthState::OAuth { .. })
            {
                refreshed = true;
                self.refresh(Some(generation)).await?;
                attempt -= 1;
                continue;
            }
            if !policy.should_retry(&err, attempt, idempotent) {
                tracing::debug!(method, attempt, error = %err, "bitrix24 call failed");
                return Err(err);
            }
            let delay = policy.delay(attempt, &err);
            tracing::debug!(method, attempt, ?delay, error = %err, "bitrix24 call will be retried");
            tokio::time::sleep(delay).await;
        }
    }

    async fn access_token(&self) -> Result<Option<SecretString>, Error> {
        match &self.inner.auth {
            AuthState::Webhook { .. } => Ok(None),
            AuthState::OAuth { tokens, .. } => {
                let current = tokens.lock().await.clone();
                let fresh = current.access_token.clone().filter(|_| {
                    current
                        .expires_at
                        .is_none_or(|at| at > Utc::now() + chrono::Duration::seconds(30))
                });
                match fresh {
                    Some(t) => Ok(Some(t)),
                    None => self.refresh(None).await.map(Some),
                }
            }
        }
    }

    fn token_generation(&self) -> u64 {
        match &self.inner.auth {
            AuthState::OAuth { generation, .. } => {
                generation.load(std::sync::atomic::Ordering::SeqCst)
            }
            AuthState::Webhook { .. } => 0,
        }
    }

    /// Exchange the refresh token for new tokens and hand them to the callback. With
    /// `seen` = the generation a failed call used: if another caller has refreshed since,
    /// its fresh token is used instead of rotating again.
    async fn refresh(&self, seen: Option<u64>) -> Result<SecretString, Error> {
        let AuthState::OAuth {
            client_id,
            client_secret,
            oauth_server,
            tokens,
            generation,
            on_refresh,
            ..
        } = &self.inner.auth
        else {
            return Err(Error::Config("refresh needs an OAuth client".into()));
        };
        let mut guard = tokens.lock().await;
        let now_gen = generation.load(std::sync::atomic::Ordering::SeqCst);
        let fresh = guard.access_token.clone().filter(|_| {
            guard
                .expires_at
                .is_none_or(|at| at > Utc::now() + chrono::Duration::seconds(30))
        });
        if let Some(t) = fresh {
            // Someone refreshed after the failed call (or after the caller found no
            // token): use theirs.
            if seen.is_none_or(|g| g != now_gen) {
                return Ok(t);
            }
        }
        let resp = self
            .inner
            .http
            .get(oauth_server)
            .query(&[
                ("grant_type", "refresh_token"),
                ("client_id", client_id.as_str()),
                ("client_secret", client_secret.expose_secret()),
                ("refresh_token", guard.refresh_token.expose_secret()),
            ])
            .send()
            .await?;
        let status = resp.status().as_u16();
        let body: TokenAnswer = resp.json().await.map_err(|_| Error::Auth {
            code: "invalid_oauth_answer".into(),
            description: format!("the OAuth server answered HTTP {status} without valid JSON"),
        })?;
        let (Some(access), Some(refresh)) = (body.access_token, body.refresh_token) else {
            return Err(Error::Auth {
                code: body.error.unwrap_or_else(|| "refresh_failed".into()),
                description: body
                    .error_description
                    .unwrap_or_else(|| format!("token refresh failed with HTTP {status}")),
            });
        };
        let expires_in = body.expires_in.as_ref().and_then(value_i64).unwrap_or(3600);
        *guard = OAuthTokens {
            access_token: Some(SecretString::from(access)),
            refresh_token: SecretString::from(refresh),
            expires_at: Some(Utc::now() + chrono::Duration::seconds(expires_in)),
        };
        generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        on_refresh(&guard);
        tracing::info!("bitrix24 OAuth tokens refreshed");
        Ok(guard.access_token.clone().expect("just set"))
    }

    async fn send_once(&self, method: &str, params: &Value) -> Result<Response, Error> {
        let token = self.access_token().await?;
        let (url, secret_parts): (String, Vec<String>) = match &self.inner.auth {
            AuthState::Webhook { base } => {
                let b = base.expose_secret();
                let code = b
                    .trim_end_matches('/')
                    .rsplit('/')
                    .next()
                    .unwrap_or("")
                    .to_string();
                (format!("{b}{method}"), vec![code])
            }
            AuthState::OAuth { rest_base, .. } => (format!("{rest_base}{method}"), Vec::new()),
        };
        let mut body = params.clone();
        if let (Some(t), Value::Object(map)) = (&token, &mut body) {
            map.insert("auth".into(), Value::String(t.expose_secret().to_string()));
        }
        let mut url = self.apply_move(&url);
        let mut resp = self.inner.http.post(&url).json(&body).send().await?;
        if resp.status().is_redirection() {
            let target = resp
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|l| reqwest::Url::parse(&url).ok()?.join(l).ok());
            let Some(target) = target.filter(|t| t.host_str().is_some()) else {
                return Err(Error::Api {
                    status: resp.status().as_u16(),
                    code: "REDIRECT".into(),
                    description: "the portal redirected without a usable Location".into(),
                });
            };
            tracing::warn!(
                host = target.host_str().unwrap_or(""),
                "bitrix24 portal moved; following"
            );
            *self
                .inner
                .moved_to
                .write()
                .unwrap_or_else(|e| e.into_inner()) = Some(target);
            url = self.apply_move(&url);
            self.inner.pacer.acquire().await;
            resp = self.inner.http.post(&url).json(&body).send().await?;
        }
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.trim().parse::<i64>().ok())
            .map(|s| Utc::now() + chrono::Duration::seconds(s));
        let mut resp = resp;
        let mut bytes = Vec::new();
        while let Some(chunk) = resp.chunk().await? {
            if bytes.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(Error::Decode {
                    method: method.into(),
                    detail: format!("answer larger than {MAX_RESPONSE_BYTES} bytes"),
                });
            }
            bytes.extend_from_slice(&chunk);
        }
        let json: Value = match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(_) => {
                let text = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).to_string();
                let mut secrets: Vec<&str> = secret_parts.iter().map(String::as_str).collect();
                let tok;
                if let Some(t) = &token {
                    tok = t.expose_secret().to_string();
                    secrets.push(&tok);
                }
                return Err(Error::NotJson {
                    status,
                    content_type,
                    snippet: redact(&text, &secrets),
                });
            }
        };
        let time = json.get("time").map(Time::from_value).unwrap_or_default();
        if let Some(code) = json.get("error") {
            let code = value_text(code).unwrap_or_default();
            let description = json
                .get("error_description")
                .and_then(value_text)
                .unwrap_or_default();
            let reset_at = time.operating_reset_at.or_else(|| {
                json.get("operating_reset_at").and_then(|v| {
                    Time::from_value(&json!({ "operating_reset_at": v })).operating_reset_at
                })
            });
            let status = if status == 200 { 400 } else { status };
            return Err(classify_at(
                Some(status),
                &code,
                &description,
                method,
                reset_at.or(retry_after),
            ));
        }
        if !(200..300).contains(&status) {
            return Err(classify_at(Some(status), "", "", method, retry_after));
        }
        let Some(result) = json.get("result").cloned() else {
            return Err(Error::Decode {
                method: method.into(),
                detail: "no result in the answer".into(),
            });
        };
        Ok(Response {
            result,
            page: PageInfo {
                next: json.get("next").and_then(value_i64).map(|n| n as u64),
                total: json.get("total").and_then(value_i64).map(|n| n as u64),
            },
            time,
        })
    }

    /// `url` with the scheme, host and port of the portal's new address, if it moved.
    fn apply_move(&self, url: &str) -> String {
        let moved = self
            .inner
            .moved_to
            .read()
            .unwrap_or_else(|e| e.into_inner());
        let (Some(to), Ok(mut u)) = (moved.as_ref(), reqwest::Url::parse(url)) else {
            return url.to_string();
        };
        let ok = u.set_scheme(to.scheme()).is_ok()
            && u.set_host(to.host_str()).is_ok()
            && u.set_port(to.port()).is_ok();
        if ok {
            u.to_string()
        } else {
            url.to_string()
        }
    }

    /// One `batch` request (≤ 50 commands, `halt=0`): per-command results.
    pub async fn batch(
        &self,
        commands: &[BatchCommand],
    ) -> Result<BTreeMap<String, CommandResult>, Error> {
        let body = batch::build(commands)?;
        let methods: Vec<&str> = commands.iter().map(|c| c.method.as_str()).collect();
        let idempotent = commands.iter().all(|c| is_idempotent(&c.method));
        let resp = self
            .call_inner("batch", &body, &methods, idempotent)
            .await?;
        let out = batch::split(commands, &resp.result)?;
        for c in commands {
            let r = &out[&c.key];
            if let Some(t) = &r.time {
                self.inner
                    .operating
                    .record(&c.method, t.processing, t.operating);
            }
            if let Err(e @ Error::OperationTimeLimit { .. }) = &r.result {
                let wait = e.retry_after().unwrap_or(Duration::from_secs(10));
                self.inner
                    .operating
                    .pause_until(&c.method, tokio::time::Instant::now() + wait);
            }
        }
        self.report_usage();
        Ok(out)
    }

    /// Any number of commands, split into batches of 50 and sent with up to
    /// `max_in_flight` in flight (each paced). A batch that fails as a whole gives
    /// every one of its commands that error, so each command's outcome is known.
    pub async fn batch_all(
        &self,
        commands: Vec<BatchCommand>,
    ) -> Result<BTreeMap<String, CommandResult>, Error> {
        let mut seen = std::collections::BTreeSet::new();
        if let Some(dup) = commands.iter().find(|c| !seen.insert(c.key.clone())) {
            return Err(Error::Config(format!("duplicate batch key {:?}", dup.key)));
        }
        let chunks: Vec<Vec<BatchCommand>> =
            commands.chunks(MAX_COMMANDS).map(<[_]>::to_vec).collect();
        for chunk in &chunks {
            batch::build(chunk)?;
        }
        let sem = Arc::new(Semaphore::new(self.inner.config.max_in_flight.max(1)));
        let mut set = JoinSet::new();
        for chunk in chunks {
            let client = self.clone();
            let sem = sem.clone();
            set.spawn(async move {
                let _permit = sem.acquire_owned().await;
                let res = client.batch(&chunk).await;
                (chunk, res)
            });
        }
        let mut out = BTreeMap::new();
        while let Some(joined) = set.join_next().await {
            let (chunk, res) =
                joined.map_err(|e| Error::Transport(format!("batch task failed: {e}")))?;
            match res {
                Ok(map) => out.extend(map),
                Err(e) => {
                    for c in chunk {
                        out.insert(
                            c.key,
                            CommandResult {
                                result: Err(e.clone()),
                                page: PageInfo::default(),
                                time: None,
                            },
                        );
                    }
                }
            }
        }
        Ok(out)
    }
}

/// Typed method helpers and answer decoding live in `methods`; re-exported here so
/// callers keep one path.
pub use crate::methods::{
    comment_params, decode, decode_list, expect_true, id_of, lead_update_params, task_fields,
};

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;

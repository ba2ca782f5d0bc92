//! Credentials: a long-lived token, or OAuth2 with single-use refresh tokens.
//!
//! amoCRM access tokens live 24 hours; each refresh returns a *new* refresh token and
//! spends the old one, and presenting a spent one gets `401 "Token has been revoked"`,
//! after which only a manual re-authorization helps. Hence, per account:
//!
//! - one refresh at a time (an async mutex), and a caller whose 401 came from a token
//!   that another caller already replaced reuses the replacement instead of refreshing
//!   again (a generation counter), so two concurrent refreshes never spend one token;
//! - the new pair is handed to a [`TokenStore`] and must be saved *before* the new
//!   access token is used; if saving fails, the pair stays in memory (the old refresh
//!   token is already spent) and is saved again before the next request;
//! - tokens are refreshed ahead of expiry (5 minutes by default) and once on a 401;
//! - a refused refresh is [`Error::TokenRevoked`], remembered so that later calls fail
//!   at once instead of hammering the token endpoint.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::sync::Mutex;

use crate::error::Error;
use crate::limiter::Limiter;

/// An access token with the refresh token that replaces it.
#[derive(Clone)]
pub struct TokenPair {
    pub access_token: SecretString,
    pub refresh_token: SecretString,
    /// Unix seconds when the access token expires.
    pub expires_at: i64,
}

impl fmt::Debug for TokenPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenPair")
            .field("access_token", &"[REDACTED]")
            .field("refresh_token", &"[REDACTED]")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

#[derive(serde::Serialize, Deserialize)]
struct StoredPair {
    access_token: String,
    refresh_token: String,
    expires_at: i64,
}

impl TokenPair {
    /// The JSON a [`TokenStore`] may persist (it contains the secrets: store it like one).
    pub fn to_json(&self) -> String {
        serde_json::to_string(&StoredPair {
            access_token: self.access_token.expose_secret().to_string(),
            refresh_token: self.refresh_token.expose_secret().to_string(),
            expires_at: self.expires_at,
        })
        .unwrap_or_default()
    }

    /// Read back what [`TokenPair::to_json`] wrote. The error never echoes the input.
    pub fn from_json(s: &str) -> Result<TokenPair, String> {
        let p: StoredPair = serde_json::from_str(s).map_err(|e| {
            format!(
                "stored token pair is not valid: line {} column {}",
                e.line(),
                e.column()
            )
        })?;
        Ok(TokenPair {
            access_token: SecretString::from(p.access_token),
            refresh_token: SecretString::from(p.refresh_token),
            expires_at: p.expires_at,
        })
    }
}

/// Durable storage for the rotating pair. `save` must not return before the pair is
/// durable: a lost save after a refresh locks the integration out.
#[async_trait]
pub trait TokenStore: Send + Sync {
    /// The last saved pair, if any.
    async fn load(&self) -> Result<Option<TokenPair>, String>;
    /// Persist a freshly rotated pair.
    async fn save(&self, pair: &TokenPair) -> Result<(), String>;
}

/// A [`TokenStore`] in memory: for tests and the demo (shared between "restarts" by
/// cloning the `Arc`).
#[derive(Default)]
pub struct MemoryTokenStore {
    pair: std::sync::Mutex<Option<TokenPair>>,
    saves: AtomicU64,
}

impl MemoryTokenStore {
    /// An empty store.
    pub fn new() -> MemoryTokenStore {
        MemoryTokenStore::default()
    }

    /// How many pairs were saved.
    pub fn saves(&self) -> u64 {
        self.saves.load(Ordering::SeqCst)
    }

    /// The saved pair.
    pub fn current(&self) -> Option<TokenPair> {
        self.pair.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[async_trait]
impl TokenStore for MemoryTokenStore {
    async fn load(&self) -> Result<Option<TokenPair>, String> {
        Ok(self.current())
    }

    async fn save(&self, pair: &TokenPair) -> Result<(), String> {
        *self.pair.lock().unwrap_or_else(|e| e.into_inner()) = Some(pair.clone());
        self.saves.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// An OAuth2 integration's settings.
#[derive(Clone)]
pub struct OAuthSettings {
    pub client_id: String,
    pub client_secret: SecretString,
    pub redirect_uri: String,
    /// Used only when the store holds no pair yet (the first start after authorizing).
    pub initial_refresh_token: SecretString,
    /// Refresh this long before the access token expires.
    pub refresh_ahead: Duration,
}

impl fmt::Debug for OAuthSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthSettings")
            .field("client_id", &self.client_id)
            .field("client_secret", &"[REDACTED]")
            .field("redirect_uri", &self.redirect_uri)
            .field("initial_refresh_token", &"[REDACTED]")
            .field("refresh_ahead", &self.refresh_ahead)
            .finish()
    }
}

/// How the client signs its requests.
#[derive(Clone)]
pub enum Auth {
    /// A private integration's long-lived token (no refresh; a 401 is final).
    LongLived(SecretString),
    /// OAuth2 with rotating refresh tokens persisted through `store`.
    OAuth {
        settings: OAuthSettings,
        store: Arc<dyn TokenStore>,
    },
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::LongLived(_) => f.write_str("Auth::LongLived([REDACTED])"),
            Auth::OAuth { settings, .. } => f.debug_tuple("Auth::OAuth").field(settings).finish(),
        }
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    refresh_token: String,
    #[serde(default)]
    expires_in: Option<i64>,
}

struct State {
    pair: Option<TokenPair>,
    /// Bumped on every refresh; lets a 401 tell a stale token from a rejected one.
    generation: u64,
    loaded: bool,
    /// The pair in memory is newer than the stored one (a save failed).
    unsaved: bool,
    /// Set once the token endpoint refused the refresh token.
    revoked: Option<String>,
}

/// The OAuth state of one account: current pair, the refresh lock, counters.
pub(crate) struct OAuthSource {
    settings: OAuthSettings,
    store: Arc<dyn TokenStore>,
    state: Mutex<State>,
    refreshes: AtomicU64,
}

/// A bearer token and the generation it belongs to.
pub(crate) struct Bearer {
    pub token: SecretString,
    pub generation: u64,
}

/// What the token endpoint call needs from the client.
pub(crate) struct Endpoint<'a> {
    pub http: &'a reqwest::Client,
    pub token_url: &'a str,
    pub limiter: &'a Limiter,
}

fn now_unix() -> i64 {
    chrono::Utc::now().timestamp()
}

impl OAuthSource {
    pub(crate) fn new(settings: OAuthSettings, store: Arc<dyn TokenStore>) -> OAuthSource {
        OAuthSource {
            settings,
            store,
            state: Mutex::new(State {
                pair: None,
                generation: 0,
                loaded: false,
                unsaved: false,
                revoked: None,
            }),
            refreshes: AtomicU64::new(0),
        }
    }

    /// Successful refreshes so far.
    pub(crate) fn refreshes(&self) -> u64 {
        self.refreshes.load(Ordering::Relaxed)
    }

    /// A usable access token: loaded from the store, saved if a save is pending, and
    /// refreshed when missing or about to expire.
    pub(crate) async fn bearer(&self, ep: &Endpoint<'_>) -> Result<Bearer, Error> {
        let mut st = self.state.lock().await;
        if let Some(detail) = &st.revoked {
            return Err(Error::TokenRevoked {
                detail: detail.clone(),
            });
        }
        if !st.loaded {
            st.pair = self.store.load().await.map_err(Error::TokenStore)?;
            st.loaded = true;
        }
        if st.unsaved {
            if let Some(pair) = &st.pair {
                self.store.save(pair).await.map_err(Error::TokenStore)?;
            }
            st.unsaved = false;
        }
        let ahead = self.settings.refresh_ahead.as_secs() as i64;
        let fresh = st
            .pair
            .as_ref()
            .is_some_and(|p| p.expires_at - ahead > now_unix());
        if !fresh {
            self.refresh_locked(&mut st, ep).await?;
        }
        let pair = st
            .pair
            .as_ref()
            .ok_or_else(|| Error::Config("no token".into()))?;
        Ok(Bearer {
            token: pair.access_token.clone(),
            generation: st.generation,
        })
    }

    /// The access token of generation `stale` was rejected with 401: refresh, unless
    /// another caller already did (then its newer token is used).
    pub(crate) async fn refresh_after_401(
        &self,
        stale: u64,
        ep: &Endpoint<'_>,
    ) -> Result<(), Error> {
        let mut st = self.state.lock().await;
        if st.generation != stale {
            return Ok(());
        }
        if let Some(detail) = &st.revoked {
            return Err(Error::TokenRevoked {
                detail: detail.clone(),
            });
        }
        self.refresh_locked(&mut st, ep).await
    }

    async fn refresh_locked(&self, st: &mut State, ep: &Endpoint<'_>) -> Result<(), Error> {
        let refresh_token = match &st.pair {
            Some(p) => p.refresh_token.clone(),
            None => self.settings.initial_refresh_token.clone(),
        };
        let pair = match self.exchange(&refresh_token, ep).await {
            Ok(p) => p,
            Err(e @ Error::TokenRevoked { .. }) => {
                if let Error::TokenRevoked { detail } = &e {
                    tracing::error!(error = %e, "amoCRM refresh token refused; the integration must be re-authorized");
                    st.revoked = Some(detail.clone());
                }
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        self.refreshes.fetch_add(1, Ordering::Relaxed);
        st.generation += 1;
        st.pair = Some(pair);
        st.unsaved = true;
        // Persist before anyone uses the new access token; on failure the pair stays in
        // memory (the old refresh token is spent) and the save is retried next time.
        let pair = st
            .pair
            .as_ref()
            .ok_or_else(|| Error::Config("no token".into()))?;
        self.store.save(pair).await.map_err(Error::TokenStore)?;
        st.unsaved = false;
        tracing::info!(
            expires_at = pair.expires_at,
            "amoCRM OAuth tokens rotated and persisted"
        );
        Ok(())
    }

    /// One call to `/oauth2/access_token` (bounded retries for limits and network).
    async fn exchange(
        &self,
        refresh_token: &SecretString,
        ep: &Endpoint<'_>,
    ) -> Result<TokenPair, Error> {
        let body = serde_json::json!({
            "client_id": self.settings.client_id,
            "client_secret": self.settings.client_secret.expose_secret(),
            "grant_type": "refresh_token",
            "refresh_token": refresh_token.expose_secret(),
            "redirect_uri": self.settings.redirect_uri,
        });
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let slot = ep.limiter.acquire_slot().await?;
            let result = ep.http.post(ep.token_url).json(&body).send().await;
            ep.limiter.arrived(slot);
            let err = match result {
                Err(e) => Error::from(e),
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let ct = resp
                        .headers()
                        .get(reqwest::header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    let bytes = crate::client::read_limited(resp, 1024 * 1024).await?;
                    if (200..300).contains(&status) {
                        ep.limiter.on_success();
                        let t: TokenResponse =
                            serde_json::from_slice(&bytes).map_err(|e| Error::Decode {
                                what: "oauth2/access_token".into(),
                                detail: format!(
                                    "line {} column {}: {}",
                                    e.line(),
                                    e.column(),
                                    e.classify_name()
                                ),
                            })?;
                        let expires_in = t.expires_in.unwrap_or(86_400).max(0);
                        return Ok(TokenPair {
                            access_token: SecretString::from(t.access_token),
                            refresh_token: SecretString::from(t.refresh_token),
                            expires_at: now_unix() + expires_in,
                        });
                    }
                    let e = Error::from_token_response(status, &ct, &bytes);
                    match &e {
                        Error::RateLimited => {
                            ep.limiter.on_rate_limited();
                        }
                        Error::Blocked { detail } => ep.limiter.block(detail),
                        _ => {}
                    }
                    e
                }
            };
            if !err.is_retryable() || attempt >= 3 {
                return Err(err);
            }
            tracing::warn!(error = %err, attempt, "amoCRM token refresh failed; retrying");
            if !matches!(err, Error::RateLimited) {
                tokio::time::sleep(Duration::from_millis(500) * attempt).await;
            }
        }
    }
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "i/o",
            serde_json::error::Category::Syntax => "syntax",
            serde_json::error::Category::Data => "missing or mistyped field",
            serde_json::error::Category::Eof => "truncated",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show_in_debug() {
        let pair = TokenPair {
            access_token: SecretString::from("acc-SECRET"),
            refresh_token: SecretString::from("ref-SECRET"),
            expires_at: 5,
        };
        let settings = OAuthSettings {
            client_id: "cid".into(),
            client_secret: SecretString::from("cs-SECRET"),
            redirect_uri: "https://x".into(),
            initial_refresh_token: SecretString::from("init-SECRET"),
            refresh_ahead: Duration::from_secs(300),
        };
        let auth = Auth::OAuth {
            settings: settings.clone(),
            store: Arc::new(MemoryTokenStore::new()),
        };
        for text in [
            format!("{pair:?}"),
            format!("{settings:?}"),
            format!("{auth:?}"),
            format!("{:?}", Auth::LongLived(SecretString::from("ll-SECRET"))),
        ] {
            assert!(!text.contains("SECRET"), "{text}");
        }
    }

    #[test]
    fn pair_round_trips_through_json_and_bad_json_does_not_echo() {
        let pair = TokenPair {
            access_token: SecretString::from("a1"),
            refresh_token: SecretString::from("r1"),
            expires_at: 1_700_000_000,
        };
        let back = TokenPair::from_json(&pair.to_json()).unwrap();
        assert_eq!(back.access_token.expose_secret(), "a1");
        assert_eq!(back.refresh_token.expose_secret(), "r1");
        assert_eq!(back.expires_at, 1_700_000_000);
        let err = TokenPair::from_json(r#"{"access_token":"leaky-secret"#).unwrap_err();
        assert!(!err.contains("leaky"), "{err}");
    }
}

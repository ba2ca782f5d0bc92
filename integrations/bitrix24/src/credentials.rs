//! How a client signs in to a portal: an inbound-webhook URL (itself the secret) or an
//! OAuth app whose refresh token rotates on every refresh. Debug output never shows a
//! secret.

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use secrecy::SecretString;

/// OAuth tokens of an app installation. The refresh token rotates on every refresh.
#[derive(Clone)]
pub struct OAuthTokens {
    /// `None` forces a refresh before the first call.
    pub access_token: Option<SecretString>,
    pub refresh_token: SecretString,
    pub expires_at: Option<DateTime<Utc>>,
}

impl fmt::Debug for OAuthTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthTokens")
            .field(
                "access_token",
                &self.access_token.as_ref().map(|_| "[REDACTED]"),
            )
            .field("refresh_token", &"[REDACTED]")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Called with the new tokens after every refresh, so the daemon can persist the
/// rotated refresh token (the old one stops working).
pub type TokenCallback = Arc<dyn Fn(&OAuthTokens) + Send + Sync>;

/// OAuth app credentials.
#[derive(Clone)]
pub struct OAuth {
    /// The portal, e.g. `https://example.bitrix24.ru` (with or without `/rest/`).
    pub base_url: String,
    pub client_id: String,
    pub client_secret: SecretString,
    pub tokens: OAuthTokens,
    pub on_refresh: TokenCallback,
    /// The token endpoint; [`DEFAULT_OAUTH_SERVER`] in production, 127.0.0.1 in tests.
    pub oauth_server: String,
}

/// How the client authenticates.
#[derive(Clone)]
pub enum Auth {
    /// Inbound webhook `https://PORTAL/rest/USER/CODE/`; the whole URL is a secret.
    WebhookUrl(SecretString),
    OAuth(OAuth),
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::WebhookUrl(_) => f.write_str("WebhookUrl([REDACTED])"),
            Auth::OAuth(o) => f
                .debug_struct("OAuth")
                .field("base_url", &o.base_url)
                .field("client_id", &o.client_id)
                .field("tokens", &o.tokens)
                .finish_non_exhaustive(),
        }
    }
}

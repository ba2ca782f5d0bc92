//! The `[[portal]]` keys of an amoCRM (Kommo) portal and their validation.
//!
//! `base_url` (`https://SUBDOMAIN.amocrm.ru` or `.kommo.com`), either `access_token`
//! (the long-lived token of a private integration) or an OAuth2 app (`client_id`,
//! `client_secret`, `redirect_uri`, `refresh_token`), and `webhook_secret`, expected as
//! `?secret=` on `/webhooks/amocrm/<id>` (optionally also `account_id` / `subdomain`).
//! Default pacing: 7 requests/s, burst 7.

use std::any::Any;
use std::path::PathBuf;
use std::sync::Arc;

use secrecy::SecretString;
use serde::Deserialize;

use crate::config::{same_secret, CrmSettings, PortalCheck, PortalCrm, RateLimitSection, TaskKind};

/// The amoCRM keys of a `[[portal]]` table, as serde reads them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Keys {
    /// `https://SUBDOMAIN.amocrm.ru` or `https://SUBDOMAIN.kommo.com`.
    pub base_url: Option<String>,
    /// Long-lived token of a private integration.
    pub access_token: Option<SecretString>,
    pub access_token_env: Option<String>,
    pub access_token_file: Option<PathBuf>,
    /// OAuth2 app credentials.
    pub client_id: Option<String>,
    pub client_secret: Option<SecretString>,
    pub client_secret_env: Option<String>,
    pub client_secret_file: Option<PathBuf>,
    pub redirect_uri: Option<String>,
    /// First refresh token (or authorization code); later ones are rotated into the vault.
    pub refresh_token: Option<SecretString>,
    pub refresh_token_env: Option<String>,
    pub refresh_token_file: Option<PathBuf>,
    /// Secret expected in `?secret=` of webhooks.
    pub webhook_secret: Option<SecretString>,
    pub webhook_secret_env: Option<String>,
    pub webhook_secret_file: Option<PathBuf>,
    /// Expected `account[id]` of webhooks.
    pub account_id: Option<String>,
    /// Expected `account[subdomain]` of webhooks.
    pub subdomain: Option<String>,
    /// Stage (`status_id`) ids that count as won in backtests and outcome webhooks.
    pub won_statuses: Option<Vec<u64>>,
    /// Stage ids that count as lost.
    pub lost_statuses: Option<Vec<u64>>,
}

/// Keys whose values are secrets: never shown in a message.
pub const SECRETS: &[&str] = &[
    "access_token",
    "client_secret",
    "refresh_token",
    "webhook_secret",
];

/// How the daemon signs in to the account.
#[derive(Debug, Clone)]
pub enum Auth {
    /// Private integration with a long-lived token.
    LongLived {
        base_url: String,
        token: SecretString,
    },
    /// OAuth2 with single-use refresh tokens.
    OAuth {
        base_url: String,
        client_id: String,
        client_secret: SecretString,
        redirect_uri: String,
        refresh_token: SecretString,
    },
}

impl Auth {
    /// The account's address.
    pub fn base_url(&self) -> &str {
        match self {
            Auth::LongLived { base_url, .. } | Auth::OAuth { base_url, .. } => base_url,
        }
    }
}

/// What an incoming webhook must carry to be trusted.
#[derive(Debug, Clone, Default)]
pub struct WebhookCheck {
    /// The `?secret=` of the hook URL.
    pub secret: Option<SecretString>,
    /// `account[id]`.
    pub account_id: Option<String>,
    /// `account[subdomain]`.
    pub subdomain: Option<String>,
}

/// Which stages count as won or lost (backtests and outcome webhooks read outcomes
/// with it): amoCRM's closing stages 142 and 143 by default, which every pipeline has;
/// a portal may add its own (e.g. a "refused" stage before 143).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutcomeMap {
    pub won_statuses: Vec<u64>,
    pub lost_statuses: Vec<u64>,
}

/// amoCRM's closing stage "Успешно реализовано".
pub const STATUS_WON: u64 = 142;
/// amoCRM's closing stage "Закрыто и не реализовано".
pub const STATUS_LOST: u64 = 143;

impl Default for OutcomeMap {
    fn default() -> Self {
        OutcomeMap {
            won_statuses: vec![STATUS_WON],
            lost_statuses: vec![STATUS_LOST],
        }
    }
}

/// An amoCRM portal's own settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub auth: Auth,
    pub webhook: WebhookCheck,
    pub outcomes: OutcomeMap,
}

impl Settings {
    /// Settings with these credentials and no webhook checks (tests, the benches).
    pub fn with_auth(auth: Auth) -> Arc<dyn CrmSettings> {
        Arc::new(Settings {
            auth,
            webhook: WebhookCheck::default(),
            outcomes: OutcomeMap::default(),
        })
    }
}

impl CrmSettings for Settings {
    fn auth_label(&self) -> &'static str {
        match self.auth {
            Auth::LongLived { .. } => "long-lived token",
            Auth::OAuth { .. } => "OAuth2 app",
        }
    }

    fn base_url(&self) -> Option<&str> {
        Some(self.auth.base_url())
    }

    fn same_webhook_checks(&self, other: &dyn CrmSettings) -> bool {
        let Some(o) = other.as_any().downcast_ref::<Settings>() else {
            return false;
        };
        let (a, b) = (&self.webhook, &o.webhook);
        same_secret(&a.secret, &b.secret)
            && a.account_id == b.account_id
            && a.subdomain == b.subdomain
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// amoCRM's documented limit: 7 requests/s per integration.
const DEFAULT_RATE: RateLimitSection = RateLimitSection {
    per_second: 7.0,
    burst: 7,
    operating_limit_secs: None,
    operating_window_secs: None,
};

/// Read and check the amoCRM keys of a portal.
pub fn parse(cx: &mut PortalCheck<'_, '_>) -> PortalCrm {
    let mut out = PortalCrm {
        settings: None,
        default_rate: DEFAULT_RATE,
        over_limit_note: " and may block the integration",
    };
    if cx.task().kind == TaskKind::Todo {
        cx.error(
            "task.kind",
            "\"todo\" is Bitrix24's to-do; amoCRM portals use \"task\"",
        );
    }
    if cx
        .rate_limit()
        .is_some_and(|rl| rl.operating_limit_secs.is_some() || rl.operating_window_secs.is_some())
    {
        cx.warn(
            "rate_limit",
            "operating_limit_secs / operating_window_secs apply to Bitrix24 only; ignored",
        );
    }
    let Some(s) = cx.keys::<Keys>() else {
        return out;
    };
    if let Some(url) = &s.base_url {
        cx.check_url("base_url", url);
    }
        if s.base_url.is_none() {
            cx.error(
                "base_url",
                "missing: the account address, e.g. https://SUBDOMAIN.amocrm.ru or https://SUBDOMAIN.kommo.com",
            );
        }
        let access_token = cx.credential(
            "access_token",
            s.access_token.as_ref(),
            s.access_token_env.as_deref(),
            s.access_token_file.as_deref(),
        );
        let client_secret = cx.credential(
            "client_secret",
            s.client_secret.as_ref(),
            s.client_secret_env.as_deref(),
            s.client_secret_file.as_deref(),
        );
        let refresh_token = cx.credential(
            "refresh_token",
            s.refresh_token.as_ref(),
            s.refresh_token_env.as_deref(),
            s.refresh_token_file.as_deref(),
        );
        let webhook_secret = cx.credential(
            "webhook_secret",
            s.webhook_secret.as_ref(),
            s.webhook_secret_env.as_deref(),
            s.webhook_secret_file.as_deref(),
        );
        if let Some(uri) = &s.redirect_uri {
            cx.check_url("redirect_uri", uri);
        }
        let oauth = [
            ("client_id", s.client_id.is_some()),
            ("client_secret", client_secret.given()),
            ("redirect_uri", s.redirect_uri.is_some()),
            ("refresh_token", refresh_token.given()),
        ];
        let auth = if access_token.given() {
            for (key, _) in oauth.iter().filter(|(_, g)| *g) {
                let key = cx.written_form(key);
                cx.error(
                    &key,
                    "belongs to an OAuth2 app, but this portal signs in with `access_token` (a long-lived token): keep one of the two",
                );
            }
            match (s.base_url.clone(), access_token.value()) {
                (Some(base_url), Some(token)) => Some(Auth::LongLived { base_url, token }),
                _ => None,
            }
        } else if oauth.iter().any(|(_, g)| *g) {
            for (key, _) in oauth.iter().filter(|(_, g)| !*g) {
                cx.error(
                    key,
                    "missing: an amoCRM OAuth2 app needs `client_id`, `client_secret`, `redirect_uri` and `refresh_token`",
                );
            }
            match (
                s.base_url.clone(),
                s.client_id.clone(),
                client_secret.value(),
                s.redirect_uri.clone(),
                refresh_token.value(),
            ) {
                (
                    Some(base_url),
                    Some(client_id),
                    Some(client_secret),
                    Some(redirect_uri),
                    Some(refresh_token),
                ) => Some(Auth::OAuth {
                    base_url,
                    client_id,
                    client_secret,
                    redirect_uri,
                    refresh_token,
                }),
                _ => None,
            }
        } else {
            cx.error(
                "",
                "no credentials: give `access_token` (a long-lived token; or `access_token_env` / `access_token_file`) or an OAuth2 app (`client_id`, `client_secret`, `redirect_uri`, `refresh_token`)",
            );
            None
        };
        if !webhook_secret.given() {
            cx.error(
                "webhook_secret",
                "missing: the secret expected in `?secret=` of the webhook URL authenticates the events amoCRM sends (also as `webhook_secret_env` / `webhook_secret_file`)",
            );
        }
        let webhook = WebhookCheck {
            secret: webhook_secret.value(),
            account_id: s.account_id.clone(),
            subdomain: s.subdomain.clone(),
        };
    let outcomes = outcome_map(cx, &s);
    out.settings = auth.map(|auth| {
        Arc::new(Settings {
            auth,
            webhook,
            outcomes,
        }) as Arc<dyn CrmSettings>
    });
    out
}

/// The outcome keys with their defaults; a list may not be empty nor a stage be both.
fn outcome_map(cx: &mut PortalCheck<'_, '_>, s: &Keys) -> OutcomeMap {
    let d = OutcomeMap::default();
    let mut pick = |key: &str, given: &Option<Vec<u64>>, default: Vec<u64>| match given {
        None => default,
        Some(v) if v.is_empty() => {
            cx.error(key, "must list at least one stage (status_id)");
            default
        }
        Some(v) => v.clone(),
    };
    let map = OutcomeMap {
        won_statuses: pick("won_statuses", &s.won_statuses, d.won_statuses),
        lost_statuses: pick("lost_statuses", &s.lost_statuses, d.lost_statuses),
    };
    if let Some(both) = map.won_statuses.iter().find(|w| map.lost_statuses.contains(w)) {
        cx.error(
            "lost_statuses",
            format!("{both} is also in `won_statuses`: a stage is either won or lost"),
        );
    }
    map
}

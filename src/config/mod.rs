//! Configuration: one TOML file, checked as a whole before anything runs.
//!
//! `load` reads the file, resolves every credential into a `SecretString`, compiles the
//! scoring model and returns *all* mistakes at once, each with file, line, column and
//! key path, so an admin fixes the file in one pass.

mod error;
mod load;
mod locate;
pub mod schema;
mod summary;

use std::path::PathBuf;
use std::sync::Arc;

use secrecy::SecretString;

pub use error::{ConfigError, ConfigErrors, ConfigWarning};
pub use load::{
    load, load_str, load_str_with, load_with, Secrets, ENV_DATA_DIR, ENV_LISTEN, ENV_WORKERS,
};
pub use schema::{CrmKind, FieldsSection, RateLimitSection, ServerSection, TaskKind, TaskSection};
pub use summary::summary;

use crate::scoring::{spec::ScoringSpec, Model};

/// A loaded, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from (for messages and SIGHUP reloads).
    pub path: PathBuf,
    pub server: Server,
    pub portals: Vec<Portal>,
    pub scoring: ScoringSpec,
    /// The compiled scoring model shared by all workers.
    pub model: Arc<Model>,
    /// Risky but valid settings, for `leadscore check` and the start-up log.
    pub warnings: Vec<ConfigWarning>,
    /// `LEADSCORE_*` variables that overrode `[server]` settings, so the summary can
    /// say where a value came from.
    pub env_overrides: Vec<String>,
}

/// `[server]` with the dashboard token resolved.
#[derive(Debug, Clone)]
pub struct Server {
    pub listen: String,
    pub data_dir: PathBuf,
    pub workers: usize,
    pub coalesce_ms: u64,
    pub sweep_interval_secs: u64,
    pub max_body_bytes: usize,
    pub queue_limit: usize,
    pub retry_delays_secs: Vec<u64>,
    pub dashboard_token: Option<SecretString>,
    pub max_connections: usize,
    pub header_read_timeout_secs: u64,
    pub body_read_timeout_secs: u64,
    pub keep_alive_timeout_secs: u64,
}

/// One CRM account, with credentials resolved and defaults filled in.
#[derive(Debug, Clone)]
pub struct Portal {
    pub id: String,
    pub crm: CrmKind,
    pub auth: PortalAuth,
    pub webhook: WebhookCheck,
    /// Pacing actually used: the override, or the CRM's (and plan's) default.
    pub rate_limit: RateLimitSection,
    pub fields: FieldsSection,
    pub task: TaskSection,
    /// Effective "call now" threshold (portal override or the model's).
    pub threshold: i32,
    /// Effective re-arm mark.
    pub rearm_below: i32,
}

/// How the daemon authenticates to the CRM.
#[derive(Debug, Clone)]
pub enum PortalAuth {
    /// Bitrix24 inbound webhook `https://PORTAL/rest/USER/CODE/`.
    Bitrix24Webhook { url: SecretString },
    /// Bitrix24 OAuth application.
    Bitrix24OAuth {
        base_url: String,
        client_id: String,
        client_secret: SecretString,
        refresh_token: SecretString,
    },
    /// amoCRM private integration with a long-lived token.
    AmoLongLived {
        base_url: String,
        token: SecretString,
    },
    /// amoCRM OAuth2 with single-use refresh tokens.
    AmoOAuth {
        base_url: String,
        client_id: String,
        client_secret: SecretString,
        redirect_uri: String,
        refresh_token: SecretString,
    },
}

/// What an incoming webhook must carry to be trusted.
#[derive(Debug, Clone, Default)]
pub struct WebhookCheck {
    /// Bitrix24 application token, or the amoCRM `?secret=`.
    pub secret: Option<SecretString>,
    /// Bitrix24 `auth[member_id]`.
    pub member_id: Option<String>,
    /// Bitrix24 `auth[domain]`.
    pub domain: Option<String>,
    /// amoCRM `account[id]`.
    pub account_id: Option<String>,
    /// amoCRM `account[subdomain]`.
    pub subdomain: Option<String>,
    /// Bitrix24: refuse events whose `ts` is further than this from now (replays).
    pub max_event_age_secs: Option<u64>,
}

impl PortalAuth {
    /// How the portal signs in, in words for the summary and logs (never the secret).
    pub fn kind_label(&self) -> &'static str {
        match self {
            PortalAuth::Bitrix24Webhook { .. } => "inbound webhook",
            PortalAuth::Bitrix24OAuth { .. } => "OAuth app",
            PortalAuth::AmoLongLived { .. } => "long-lived token",
            PortalAuth::AmoOAuth { .. } => "OAuth2 app",
        }
    }

    /// The CRM account's address when the config names it (the webhook URL's host
    /// is not shown: the URL is a secret).
    pub fn base_url(&self) -> Option<&str> {
        match self {
            PortalAuth::Bitrix24Webhook { .. } => None,
            PortalAuth::Bitrix24OAuth { base_url, .. }
            | PortalAuth::AmoLongLived { base_url, .. }
            | PortalAuth::AmoOAuth { base_url, .. } => Some(base_url),
        }
    }
}

//! Configuration: one TOML file, checked as a whole before anything runs.
//!
//! `load` reads the file, resolves every credential into a `SecretString`, compiles the
//! scoring model and returns *all* mistakes at once, each with file, line, column and
//! key path, so an admin fixes the file in one pass.

mod credentials;
mod error;
mod load;
mod locate;
mod model_file;
mod portal;
pub mod reminder;
pub mod schema;
mod server;
mod suggest;
mod summary;
pub mod tracking;

use std::path::PathBuf;
use std::sync::Arc;

use secrecy::SecretString;

pub use credentials::{same_secret, Credential};
pub use error::{ConfigError, ConfigErrors, ConfigWarning};
pub use load::{
    load, load_str, load_str_with, load_with, Secrets, ENV_DATA_DIR, ENV_LISTEN, ENV_WORKERS,
};
pub use portal::{keys_of, CrmSettings, PortalCheck, PortalCrm};
pub use schema::{
    weekday_of, CapacitySection, DealFieldsSection, FieldsSection, RateLimitSection, ServerSection,
    TaskKind, TaskSection,
};
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
    /// `server.shadow_model`, compiled: scored beside the live model on every lead and
    /// kept in the ledger, never written to a CRM nor creating tasks, so a new model
    /// can be judged on real traffic before it goes live.
    pub shadow: Option<Arc<Model>>,
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
    pub hot_wait_warn_secs: u64,
    pub rescore_on_reload: bool,
    pub dashboard_token: Option<SecretString>,
    pub max_connections: usize,
    pub header_read_timeout_secs: u64,
    pub body_read_timeout_secs: u64,
    pub keep_alive_timeout_secs: u64,
    /// The shadow model's file, as written (for the summary).
    pub shadow_model: Option<PathBuf>,
}

/// One CRM account, with credentials resolved and defaults filled in.
#[derive(Debug, Clone)]
pub struct Portal {
    pub id: String,
    /// The CRM's name in the registry (`crm = "…"`, `/webhooks/<crm>/<id>`).
    pub crm: &'static str,
    /// The CRM's own settings (credentials, webhook checks), checked by its folder.
    pub settings: Arc<dyn CrmSettings>,
    /// Pacing actually used: the override, or the CRM's (and plan's) default.
    pub rate_limit: RateLimitSection,
    pub fields: FieldsSection,
    pub task: TaskSection,
    /// Effective "call now" threshold (portal override or the model's).
    pub threshold: i32,
    /// Effective re-arm mark.
    pub rearm_below: i32,
    /// The portal's own live model (`model = "file.toml"`), for a company whose
    /// products need other rules; `None`: the config's `[scoring]`.
    pub model: Option<Arc<Model>>,
    /// `[portal.tracking]`: website events accepted at `/track/<id>`.
    pub tracking: Option<Arc<tracking::Tracking>>,
    /// `[portal.reminder]`: a task before the customer's usual purchase month.
    pub reminder: Option<Arc<reminder::Reminder>>,
    /// `[portal.stages]`: stage coefficients of the weighted pipeline value (empty:
    /// none configured).
    pub stages: crate::weighted::StageCoefficients,
}

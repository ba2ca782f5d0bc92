//! Reading, resolving and checking the config file.
//!
//! Order of precedence: built-in defaults (`schema`), then the file, then the
//! environment (`LEADSCORE_LISTEN`, `LEADSCORE_DATA_DIR`, `LEADSCORE_WORKERS`), so a
//! systemd unit or a container can move the daemon without editing the file.
//!
//! Every section is deserialized on its own from one span-preserving parse, so a type
//! mistake in `[server]` does not hide another in the third `[[portal]]`; then the
//! semantic checks run on whatever parsed. All findings come back together.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

use super::error::{ConfigError, ConfigErrors, ConfigWarning};
use super::locate::{format_path, parse_path, Locator, Seg};
use super::schema::{
    CrmKind, FieldsSection, PortalSection, RateLimitSection, ServerSection, TaskKind,
};
use super::{Config, Portal, PortalAuth, Server, WebhookCheck};
use crate::scoring::spec::{GroupSpec, RuleSpec, ScoringSpec, TierSpec, TriggerSpec};
use crate::scoring::Model;

/// Environment variable that overrides `server.listen`.
pub const ENV_LISTEN: &str = "LEADSCORE_LISTEN";
/// Environment variable that overrides `server.data_dir`.
pub const ENV_DATA_DIR: &str = "LEADSCORE_DATA_DIR";
/// Environment variable that overrides `server.workers`.
pub const ENV_WORKERS: &str = "LEADSCORE_WORKERS";

/// Keys whose values are secrets: their values never appear in a message.
const SECRET_KEYS: &[&str] = &[
    "webhook_url",
    "application_token",
    "access_token",
    "client_secret",
    "refresh_token",
    "webhook_secret",
    "dashboard_token",
];

/// Keys that only mean something for Bitrix24 portals.
const BITRIX24_ONLY: &[&str] = &[
    "webhook_url",
    "webhook_url_env",
    "webhook_url_file",
    "application_token",
    "application_token_env",
    "application_token_file",
    "member_id",
    "domain",
    "plan",
    "max_event_age_secs",
];

/// Keys that only mean something for amoCRM portals.
const AMOCRM_ONLY: &[&str] = &[
    "access_token",
    "access_token_env",
    "access_token_file",
    "webhook_secret",
    "webhook_secret_env",
    "webhook_secret_file",
    "redirect_uri",
    "account_id",
    "subdomain",
];

/// How loading treats a credential whose variable is unset or whose file is unreadable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Secrets {
    /// It is an error. For `serve`, and for `check` where the daemon runs.
    #[default]
    Require,
    /// It is a warning and the credential is left empty: for commands that never talk
    /// to a CRM (`explain`, `backtest`, `check` on a workstation without the
    /// daemon's environment). Such a `Config` must not be used to serve.
    Optional,
}

/// Reads and checks the config file; every credential must resolve. Relative
/// `*_file` paths and a relative `data_dir` resolve against the file's directory.
/// Environment overrides come from the process environment.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    load_with(path, Secrets::Require)
}

/// [`load`] with a choice of how unresolvable credentials count.
pub fn load_with(path: &Path, secrets: Secrets) -> Result<Config, ConfigErrors> {
    let label = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: label.clone(),
            line: 1,
            column: 1,
            key_path: "(file)".into(),
            message: format!("cannot read the config file: {e}"),
        }])
    })?;
    let base = base_dir(path);
    load_inner(
        &text,
        &label,
        &base,
        &|name| std::env::var(name).ok(),
        secrets,
    )
}

/// Checks config text. `file_label` names the file in messages and is also the path
/// whose directory relative `*_file` paths resolve against; `env` looks up
/// environment variables (injectable so tests need not touch the process environment).
pub fn load_str(
    text: &str,
    file_label: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    load_str_with(text, file_label, env, Secrets::Require)
}

/// [`load_str`] with a choice of how unresolvable credentials count.
pub fn load_str_with(
    text: &str,
    file_label: &str,
    env: &dyn Fn(&str) -> Option<String>,
    secrets: Secrets,
) -> Result<Config, ConfigErrors> {
    load_inner(
        text,
        file_label,
        &base_dir(Path::new(file_label)),
        env,
        secrets,
    )
}

fn base_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn load_inner(
    text: &str,
    file_label: &str,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    secrets: Secrets,
) -> Result<Config, ConfigErrors> {
    let (root, syntax) = DeTable::parse_recoverable(text);
    let mut cx = Ctx {
        file: file_label,
        loc: Locator::new(text, root),
        base_dir,
        env,
        secrets,
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    if !syntax.is_empty() {
        for e in syntax {
            let offset = e.span().map(|s| s.start).unwrap_or(0);
            cx.error_at_offset("syntax".into(), offset, e.message().to_string());
        }
        return Err(cx.into_errors());
    }

    cx.check_top_level();
    let spec = cx.scoring();
    let model = spec.as_ref().and_then(|s| cx.compile(s));
    if let Some(spec) = &spec {
        cx.check_triggers(spec);
    }
    let (server, env_overrides) = cx.server();
    let portals = cx.portals(spec.as_ref());

    if !cx.errors.is_empty() {
        return Err(cx.into_errors());
    }
    // With no error recorded every part is present. Were one missing, that would be a
    // bug in the checks above: report it as an error rather than panic.
    match (spec, model, server, portals) {
        (Some(scoring), Some(model), Some(server), Some(portals)) => {
            let mut warnings = cx.warnings;
            warnings.sort_by_key(|w| (w.line, w.column));
            Ok(Config {
                path: PathBuf::from(file_label),
                server,
                portals,
                scoring,
                model: Arc::new(model),
                warnings,
                env_overrides,
            })
        }
        _ => Err(ConfigErrors(vec![ConfigError {
            file: file_label.into(),
            line: 1,
            column: 1,
            key_path: "(document)".into(),
            message: "the configuration could not be assembled".into(),
        }])),
    }
}

/// A credential after resolution.
enum Cred {
    /// None of its three forms was given.
    Absent,
    /// Given, but unusable; the error is already recorded.
    Failed,
    /// Given, but its variable or file is not available and `Secrets::Optional`
    /// allows that; the warning is recorded.
    Unresolved,
    Value(SecretString),
}

impl Cred {
    fn given(&self) -> bool {
        !matches!(self, Cred::Absent)
    }
    /// The secret; an empty placeholder when unresolved.
    fn value(self) -> Option<SecretString> {
        match self {
            Cred::Value(v) => Some(v),
            Cred::Unresolved => Some(SecretString::from(String::new())),
            Cred::Absent | Cred::Failed => None,
        }
    }
    fn is_resolved(&self) -> bool {
        matches!(self, Cred::Value(_))
    }
}

struct Ctx<'a> {
    file: &'a str,
    loc: Locator<'a>,
    base_dir: &'a Path,
    env: &'a dyn Fn(&str) -> Option<String>,
    secrets: Secrets,
    errors: Vec<ConfigError>,
    warnings: Vec<ConfigWarning>,
}

impl<'a> Ctx<'a> {
    fn into_errors(self) -> ConfigErrors {
        let mut errors = self.errors;
        errors.sort_by_key(|e| (e.line, e.column));
        errors.dedup();
        ConfigErrors(errors)
    }

    fn error(&mut self, path: &str, message: impl Into<String>) {
        let (line, column) = self.loc.locate(&parse_path(path));
        self.errors.push(ConfigError {
            file: self.file.into(),
            line,
            column,
            key_path: path.into(),
            message: message.into(),
        });
    }

    fn error_at_offset(&mut self, key_path: String, offset: usize, message: String) {
        let (line, column) = self.loc.position(offset);
        self.errors.push(ConfigError {
            file: self.file.into(),
            line,
            column,
            key_path,
            message,
        });
    }

    fn warn(&mut self, path: &str, message: impl Into<String>) {
        let (line, column) = self.loc.locate(&parse_path(path));
        self.warnings.push(ConfigWarning {
            file: self.file.into(),
            line,
            column,
            key_path: path.into(),
            message: message.into(),
        });
    }

    fn has_error(&self, path: &str) -> bool {
        self.errors.iter().any(|e| e.key_path == path)
    }

    fn node(&self, path: &str) -> Option<&Spanned<DeValue<'a>>> {
        self.loc.node(&parse_path(path))
    }

    /// Deserializes the node at `path`, recording a serde error with its own key path.
    fn de<T: DeserializeOwned>(&mut self, path: &str) -> Option<T> {
        let node = self.node(path)?.clone();
        match T::deserialize(ValueDeserializer::from(node.clone())) {
            Ok(v) => Some(v),
            Err(e) => {
                self.serde_error(path, &node, &e);
                None
            }
        }
    }

    fn serde_error(&mut self, path: &str, node: &Spanned<DeValue<'a>>, e: &toml::de::Error) {
        let offset = e.span().map(|s| s.start).unwrap_or(node.span().start);
        let mut segs = parse_path(path);
        segs.extend(Locator::path_at(node, offset));
        let mut message = e.message().to_string();
        if let Some(missing) = backticked(&message).first().cloned() {
            if message.starts_with("missing field") {
                segs.push(Seg::Key(missing.clone()));
                message = format!("missing required key `{missing}`");
            }
        }
        if message.starts_with("unknown field") {
            message = unknown_key_message(&message);
        }
        let is_secret =
            matches!(segs.last(), Some(Seg::Key(k)) if SECRET_KEYS.contains(&k.as_str()));
        if is_secret && message.starts_with("invalid type") {
            message = "invalid type: expected a string (the value is not shown)".into();
        }
        self.error_at_offset(format_path(&segs), offset, message);
    }

    fn check_top_level(&mut self) {
        let keys: Vec<String> = match self.loc.root().get_ref() {
            DeValue::Table(t) => t.iter().map(|(k, _)| k.get_ref().to_string()).collect(),
            _ => Vec::new(),
        };
        for k in keys {
            if !["server", "portal", "scoring"].contains(&k.as_str()) {
                let path = format_path(&[Seg::Key(k.clone())]);
                self.error(
                    &path,
                    format!("unknown key `{k}` (the file has [server], [[portal]] and [scoring])"),
                );
            }
        }
    }

    // ----- [scoring] -----

    fn scoring(&mut self) -> Option<ScoringSpec> {
        if self.node("scoring").is_none() {
            self.error(
                "scoring",
                "missing the [scoring] section (groups, rules and tiers)",
            );
            return None;
        }
        if let Some(spec) = self.de::<ScoringSpec>("scoring") {
            return Some(spec);
        }
        // serde stops at the first mistake; look at each part on its own for the rest.
        self.de_each::<GroupSpec>("scoring.groups");
        self.de_each::<RuleSpec>("scoring.rules");
        self.de_each::<TierSpec>("scoring.tiers");
        if self.node("scoring.triggers").is_some() {
            self.de::<TriggerSpec>("scoring.triggers");
        }
        None
    }

    fn de_each<T: DeserializeOwned>(&mut self, path: &str) {
        let len = match self.node(path).map(|n| n.get_ref()) {
            Some(DeValue::Array(a)) => a.len(),
            _ => return,
        };
        for i in 0..len {
            self.de::<T>(&format!("{path}[{i}]"));
        }
    }

    fn compile(&mut self, spec: &ScoringSpec) -> Option<Model> {
        match Model::compile(spec) {
            Ok(model) => Some(model),
            Err(errors) => {
                for e in errors {
                    let path = if e.path == "scoring" || e.path.starts_with("scoring.") {
                        e.path
                    } else {
                        format!("scoring.{}", e.path)
                    };
                    self.error(&path, e.message);
                }
                None
            }
        }
    }

    fn check_triggers(&mut self, spec: &ScoringSpec) {
        let t_path = "scoring.triggers.call_now_above";
        let r_path = "scoring.triggers.rearm_below";
        if self.has_error(t_path) || self.has_error(r_path) {
            return;
        }
        let t = spec.triggers.call_now_above;
        self.check_threshold(spec, t, t_path);
        self.check_rearm(spec, t, spec.triggers.rearm_below, r_path);
    }

    /// The call-now task fires when a score goes above `threshold`, so some tier must
    /// hold a score above it.
    fn check_threshold(&mut self, spec: &ScoringSpec, threshold: i32, path: &str) {
        let top = spec
            .tiers
            .iter()
            .map(|t| t.max)
            .max()
            .map_or(spec.max, |m| m.min(spec.max));
        let range = i64::from(spec.max) - i64::from(spec.min);
        if threshold >= top {
            self.error(
                path,
                format!(
                    "no tier reaches it: the call-now task fires when a score goes above {threshold}, but the highest possible score is {top}"
                ),
            );
        } else if threshold < spec.min {
            self.error(
                path,
                format!(
                    "below the lowest possible score {}: every lead would count as above it",
                    spec.min
                ),
            );
        } else {
            let remaining = i64::from(top) - i64::from(threshold);
            if remaining * 20 < range {
                self.warn(
                    path,
                    format!(
                        "only {remaining} point(s) ({}..={top}) remain above it: few leads will ever cross",
                        threshold + 1
                    ),
                );
            }
        }
    }

    fn check_rearm(&mut self, spec: &ScoringSpec, threshold: i32, rearm: i32, path: &str) {
        if rearm > threshold {
            self.error(
                path,
                format!(
                    "the re-arm mark {rearm} is above the threshold {threshold}: a lead would re-arm while still above it"
                ),
            );
        } else if rearm <= spec.min {
            self.warn(
                path,
                format!(
                    "no score is below {rearm}, so a lead never re-arms and gets at most one call-now task"
                ),
            );
        }
    }

    // ----- [server] -----

    fn server(&mut self) -> (Option<Server>, Vec<String>) {
        let section = if self.node("server").is_some() {
            self.de::<ServerSection>("server")
        } else {
            Some(ServerSection::default())
        };
        let mut overrides = Vec::new();
        let mut listen_from_env = false;
        let mut workers_bad_env = false;
        let Some(mut s) = section else {
            return (None, overrides);
        };
        if s.data_dir.is_relative() && !s.data_dir.as_os_str().is_empty() {
            s.data_dir = self.base_dir.join(&s.data_dir);
        }

        if let Some(v) = self.env_override(ENV_LISTEN) {
            s.listen = v;
            listen_from_env = true;
            overrides.push(ENV_LISTEN.to_string());
        }
        if let Some(v) = self.env_override(ENV_DATA_DIR) {
            s.data_dir = PathBuf::from(v);
            overrides.push(ENV_DATA_DIR.to_string());
        }
        if let Some(v) = self.env_override(ENV_WORKERS) {
            match v.trim().parse::<usize>() {
                Ok(n) => {
                    s.workers = n;
                    overrides.push(ENV_WORKERS.to_string());
                }
                Err(_) => {
                    workers_bad_env = true;
                    self.error(
                        "server.workers",
                        format!("{ENV_WORKERS}=`{v}` is not a whole number"),
                    );
                }
            }
        }

        let listen = match s.listen.parse::<SocketAddr>() {
            Ok(_) => true,
            Err(_) => {
                let from = if listen_from_env {
                    format!(" (from {ENV_LISTEN})")
                } else {
                    String::new()
                };
                self.error(
                    "server.listen",
                    format!(
                        "`{}`{from} is not a socket address: write IP:PORT, e.g. 127.0.0.1:8088 or [::]:8088",
                        s.listen
                    ),
                );
                false
            }
        };
        if s.workers == 0 && !workers_bad_env {
            self.error("server.workers", "must be at least 1");
        }
        if s.data_dir.as_os_str().is_empty() {
            self.error("server.data_dir", "must not be empty");
        }
        if s.sweep_interval_secs == 0 {
            self.error("server.sweep_interval_secs", "must be at least 1");
        }
        if s.max_body_bytes == 0 {
            self.error("server.max_body_bytes", "must be at least 1");
        }
        if s.queue_limit == 0 {
            self.error("server.queue_limit", "must be at least 1");
        }
        for (key, value) in [
            ("max_connections", s.max_connections as u64),
            ("header_read_timeout_secs", s.header_read_timeout_secs),
            ("body_read_timeout_secs", s.body_read_timeout_secs),
        ] {
            if value == 0 {
                self.error(&format!("server.{key}"), "must be at least 1");
            }
        }
        if s.keep_alive_timeout_secs > s.header_read_timeout_secs {
            self.warn(
                "server.keep_alive_timeout_secs",
                format!(
                    "longer than header_read_timeout_secs ({} s), which also runs while a kept-alive connection waits: idle connections close after {} s",
                    s.header_read_timeout_secs, s.header_read_timeout_secs
                ),
            );
        }
        if s.retry_delays_secs.is_empty() {
            self.warn(
                "server.retry_delays_secs",
                "empty: a lead that fails once goes straight to the dead-letter list",
            );
        }
        if s.coalesce_ms > s.sweep_interval_secs.saturating_mul(1000) && s.sweep_interval_secs > 0 {
            self.warn(
                "server.coalesce_ms",
                format!(
                    "the coalesce window ({} ms) is longer than the sweep interval ({} s): the sweep will find leads still waiting to be coalesced",
                    s.coalesce_ms, s.sweep_interval_secs
                ),
            );
        }
        let token = self.credential(
            "server",
            "dashboard_token",
            s.dashboard_token.as_ref(),
            s.dashboard_token_env.as_deref(),
            s.dashboard_token_file.as_deref(),
        );
        let dashboard_token = match token {
            Cred::Failed => return (None, overrides),
            Cred::Unresolved => None,
            other => other.value(),
        };
        if !listen {
            return (None, overrides);
        }
        (
            Some(Server {
                listen: s.listen,
                data_dir: s.data_dir,
                workers: s.workers,
                coalesce_ms: s.coalesce_ms,
                sweep_interval_secs: s.sweep_interval_secs,
                max_body_bytes: s.max_body_bytes,
                queue_limit: s.queue_limit,
                retry_delays_secs: s.retry_delays_secs,
                dashboard_token,
                max_connections: s.max_connections,
                header_read_timeout_secs: s.header_read_timeout_secs,
                body_read_timeout_secs: s.body_read_timeout_secs,
                keep_alive_timeout_secs: s.keep_alive_timeout_secs,
            }),
            overrides,
        )
    }

    /// An override variable's value; empty counts as unset so `VAR=` in a unit file
    /// does not wipe a setting.
    fn env_override(&self, name: &str) -> Option<String> {
        (self.env)(name).filter(|v| !v.is_empty())
    }

    // ----- credentials -----

    /// Resolves one credential given inline, as `NAME_env` or as `NAME_file`;
    /// exactly one form may be used.
    fn credential(
        &mut self,
        base: &str,
        name: &str,
        inline: Option<&SecretString>,
        env: Option<&str>,
        file: Option<&Path>,
    ) -> Cred {
        let env_key = format!("{name}_env");
        let file_key = format!("{name}_file");
        let given: Vec<&str> = [
            (name, inline.is_some()),
            (env_key.as_str(), env.is_some()),
            (file_key.as_str(), file.is_some()),
        ]
        .iter()
        .filter(|(_, g)| *g)
        .map(|(k, _)| *k)
        .collect();
        if given.len() > 1 {
            let list = given
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(" and ");
            self.error(
                &format!("{base}.{}", given[1]),
                format!("{list} both given: use exactly one form of `{name}`"),
            );
            return Cred::Failed;
        }
        if let Some(secret) = inline {
            let path = format!("{base}.{name}");
            if secret.expose_secret().is_empty() {
                self.error(&path, "is empty");
                return Cred::Failed;
            }
            self.warn(
                &path,
                format!(
                    "secret written in the file: prefer `{env_key}` or `{file_key}` (e.g. a systemd credential) so the file can be shared and committed"
                ),
            );
            return Cred::Value(secret.clone());
        }
        if let Some(var) = env {
            let path = format!("{base}.{env_key}");
            if !plausible_env_name(var) {
                // Often the secret itself pasted in place of the variable's name:
                // never echo it.
                self.error(
                    &path,
                    "is not an environment variable name: write the NAME of the variable that holds the secret (the value is not shown)",
                );
                return Cred::Failed;
            }
            return match (self.env)(var) {
                None => {
                    let message = format!("environment variable `{var}` is not set");
                    self.unavailable(&path, message)
                }
                Some(v) if v.is_empty() => {
                    self.error(&path, format!("environment variable `{var}` is empty"));
                    Cred::Failed
                }
                Some(v) => Cred::Value(SecretString::from(v)),
            };
        }
        if let Some(file) = file {
            let path = format!("{base}.{file_key}");
            if !plausible_file_name(file) {
                self.error(
                    &path,
                    "is not a file path: write the path of the file that holds the secret (the value is not shown)",
                );
                return Cred::Failed;
            }
            let full = if file.is_relative() {
                self.base_dir.join(file)
            } else {
                file.to_path_buf()
            };
            return match std::fs::read_to_string(&full) {
                Err(e) => {
                    let message = format!("cannot read `{}`: {e}", full.display());
                    self.unavailable(&path, message)
                }
                Ok(mut text) => {
                    if text.ends_with('\n') {
                        text.pop();
                        if text.ends_with('\r') {
                            text.pop();
                        }
                    }
                    if text.is_empty() {
                        self.error(&path, format!("`{}` is empty", full.display()));
                        return Cred::Failed;
                    }
                    self.warn_if_shared(&path, &full);
                    Cred::Value(SecretString::from(text))
                }
            };
        }
        Cred::Absent
    }

    /// A credential's variable or file is missing: an error, or with
    /// `Secrets::Optional` a warning and an unresolved credential.
    fn unavailable(&mut self, path: &str, message: String) -> Cred {
        match self.secrets {
            Secrets::Require => {
                self.error(path, message);
                Cred::Failed
            }
            Secrets::Optional => {
                self.warn(
                    path,
                    format!("{message} (left empty: fine for explain, an error for serve)"),
                );
                Cred::Unresolved
            }
        }
    }

    #[cfg(unix)]
    fn warn_if_shared(&mut self, path: &str, file: &Path) {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(file) {
            if meta.permissions().mode() & 0o007 != 0 {
                self.warn(
                    path,
                    format!(
                        "`{}` is readable by every user: chmod o-rwx (or use a systemd credential)",
                        file.display()
                    ),
                );
            }
        }
    }

    #[cfg(not(unix))]
    fn warn_if_shared(&mut self, _path: &str, _file: &Path) {}

    // ----- [[portal]] -----

    fn portals(&mut self, spec: Option<&ScoringSpec>) -> Option<Vec<Portal>> {
        let len = match self.node("portal").map(|n| n.get_ref()) {
            None => 0,
            Some(DeValue::Array(a)) => a.len(),
            Some(_) => {
                self.error(
                    "portal",
                    "must be written as [[portal]] (one table per CRM account)",
                );
                return None;
            }
        };
        if len == 0 {
            self.warn(
                "portal",
                "no [[portal]]: nothing will be scored until a CRM account is added",
            );
        }
        let mut portals = Vec::new();
        let mut ok = true;
        let mut seen: Vec<(String, usize)> = Vec::new();
        for i in 0..len {
            let base = format!("portal[{i}]");
            if !matches!(
                self.node(&base).map(|n| n.get_ref()),
                Some(DeValue::Table(_))
            ) {
                self.error(&base, "must be a table ([[portal]])");
                ok = false;
                continue;
            }
            let Some(section) = self.de::<PortalSection>(&base) else {
                ok = false;
                continue;
            };
            let id_path = format!("{base}.id");
            if let Some((_, first)) = seen.iter().find(|(id, _)| *id == section.id) {
                let (line, _) = self.loc.locate(&parse_path(&format!("portal[{first}].id")));
                self.error(
                    &id_path,
                    format!(
                        "duplicate portal id `{}` (also portal[{first}], line {line})",
                        section.id
                    ),
                );
            }
            seen.push((section.id.clone(), i));
            match self.portal(&base, section, spec) {
                Some(p) => portals.push(p),
                None => ok = false,
            }
        }
        ok.then_some(portals)
    }

    fn portal(
        &mut self,
        base: &str,
        s: PortalSection,
        spec: Option<&ScoringSpec>,
    ) -> Option<Portal> {
        let errors_before = self.errors.len();
        let id_path = format!("{base}.id");
        if s.id.is_empty() {
            self.error(&id_path, "must not be empty");
        } else if !s
            .id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
        {
            self.error(
                &id_path,
                format!(
                    "`{}` may use only a-z, 0-9, `_` and `-` (it appears in webhook URLs)",
                    s.id
                ),
            );
        }

        let foreign = match s.crm {
            CrmKind::Bitrix24 => AMOCRM_ONLY,
            CrmKind::Amocrm => BITRIX24_ONLY,
        };
        let present: Vec<String> = match self.node(base).map(|n| n.get_ref()) {
            Some(DeValue::Table(t)) => t.iter().map(|(k, _)| k.get_ref().to_string()).collect(),
            _ => Vec::new(),
        };
        let other = match s.crm {
            CrmKind::Bitrix24 => "amocrm",
            CrmKind::Amocrm => "bitrix24",
        };
        for key in present.iter().filter(|k| foreign.contains(&k.as_str())) {
            self.error(
                &format!("{base}.{key}"),
                format!(
                    "`{key}` applies only to {other} portals; this portal has crm = \"{}\"",
                    s.crm.as_str()
                ),
            );
        }

        if let Some(url) = &s.base_url {
            self.check_url(&format!("{base}.base_url"), url);
        }

        let (auth, webhook, default_rate) = match s.crm {
            CrmKind::Bitrix24 => self.bitrix24_auth(base, &s),
            CrmKind::Amocrm => self.amocrm_auth(base, &s),
        };

        let rate_limit = self.rate_limit(base, &s, default_rate);
        self.fields(base, &s.fields, spec);
        let (threshold, rearm_below) = self.task(base, &s, spec);

        if self.errors.len() > errors_before {
            return None;
        }
        Some(Portal {
            id: s.id,
            crm: s.crm,
            auth: auth?,
            webhook,
            rate_limit: rate_limit?,
            fields: s.fields,
            task: s.task,
            threshold,
            rearm_below,
        })
    }

    fn check_url(&mut self, path: &str, url: &str) -> bool {
        match reqwest::Url::parse(url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => true,
            _ => {
                self.error(
                    path,
                    format!("`{url}` is not an http(s) URL, e.g. https://example.amocrm.ru"),
                );
                false
            }
        }
    }

    /// Bitrix24: an inbound webhook URL, or an OAuth app; plus the outgoing webhook's
    /// application token that authenticates incoming events.
    fn bitrix24_auth(
        &mut self,
        base: &str,
        s: &PortalSection,
    ) -> (Option<PortalAuth>, WebhookCheck, RateLimitSection) {
        let webhook_url = self.credential(
            base,
            "webhook_url",
            s.webhook_url.as_ref(),
            s.webhook_url_env.as_deref(),
            s.webhook_url_file.as_deref(),
        );
        let client_secret = self.client_secret(base, s);
        let refresh_token = self.refresh_token(base, s);
        let app_token = self.credential(
            base,
            "application_token",
            s.application_token.as_ref(),
            s.application_token_env.as_deref(),
            s.application_token_file.as_deref(),
        );
        let oauth = [
            ("client_id", s.client_id.is_some()),
            ("client_secret", client_secret.given()),
            ("refresh_token", refresh_token.given()),
        ];
        let auth = if webhook_url.given() {
            for (key, _) in oauth.iter().filter(|(_, g)| *g) {
                let key = self.written_form(base, key);
                self.error(
                    &format!("{base}.{key}"),
                    "belongs to an OAuth app, but this portal signs in with `webhook_url`: keep one of the two",
                );
            }
            if s.base_url.is_some() {
                self.warn(
                    &format!("{base}.base_url"),
                    "ignored: with `webhook_url` the portal address comes from the webhook URL",
                );
            }
            let resolved = webhook_url.is_resolved();
            webhook_url.value().and_then(|url| {
                (!resolved || self.check_bitrix_webhook_url(&format!("{base}.webhook_url"), &url))
                    .then_some(PortalAuth::Bitrix24Webhook { url })
            })
        } else if s.base_url.is_some() || oauth.iter().any(|(_, g)| *g) {
            let need = [
                ("base_url", s.base_url.is_some()),
                ("client_id", s.client_id.is_some()),
                ("client_secret", client_secret.given()),
                ("refresh_token", refresh_token.given()),
            ];
            for (key, _) in need.iter().filter(|(_, g)| !*g) {
                self.error(
                    &format!("{base}.{key}"),
                    "missing: a Bitrix24 OAuth app needs `base_url`, `client_id`, `client_secret` and `refresh_token`",
                );
            }
            match (
                s.base_url.clone(),
                s.client_id.clone(),
                client_secret.value(),
                refresh_token.value(),
            ) {
                (Some(base_url), Some(client_id), Some(client_secret), Some(refresh_token)) => {
                    Some(PortalAuth::Bitrix24OAuth {
                        base_url,
                        client_id,
                        client_secret,
                        refresh_token,
                    })
                }
                _ => None,
            }
        } else {
            self.error(
                base,
                "no credentials: give `webhook_url` (an inbound webhook; or `webhook_url_env` / `webhook_url_file`) or an OAuth app (`base_url`, `client_id`, `client_secret`, `refresh_token`)",
            );
            None
        };
        if !app_token.given() {
            self.error(
                &format!("{base}.application_token"),
                "missing: the outgoing webhook's application token authenticates the events Bitrix24 sends (also as `application_token_env` / `application_token_file`)",
            );
        }
        let webhook = WebhookCheck {
            secret: app_token.value(),
            member_id: s.member_id.clone(),
            domain: s.domain.clone(),
            account_id: None,
            subdomain: None,
            max_event_age_secs: s.max_event_age_secs,
        };
        if s.max_event_age_secs == Some(0) {
            self.error(
                &format!("{base}.max_event_age_secs"),
                "must be at least 1 (leave it out to accept events of any age)",
            );
        }
        let rate = match s.plan.as_deref() {
            None | Some("standard") => RateLimitSection {
                per_second: 2.0,
                burst: 50,
            },
            Some("enterprise") => RateLimitSection {
                per_second: 5.0,
                burst: 250,
            },
            Some(other) => {
                self.error(
                    &format!("{base}.plan"),
                    format!(
                        "unknown plan `{other}`: use \"standard\" (2 requests/s, burst 50) or \"enterprise\" (5/s, burst 250)"
                    ),
                );
                RateLimitSection {
                    per_second: 2.0,
                    burst: 50,
                }
            }
        };
        (auth, webhook, rate)
    }

    /// The URL is a secret (its last part is a password), so the message never shows it.
    fn check_bitrix_webhook_url(&mut self, path: &str, url: &SecretString) -> bool {
        let ok = match reqwest::Url::parse(url.expose_secret()) {
            Ok(u) => {
                matches!(u.scheme(), "http" | "https")
                    && u.host_str().is_some()
                    && u.path().starts_with("/rest/")
                    && u.path().trim_end_matches('/').split('/').count() >= 4
            }
            Err(_) => false,
        };
        if !ok {
            self.error(
                path,
                "not an inbound webhook URL of the form https://PORTAL/rest/USER_ID/CODE/ (the value is not shown)",
            );
        }
        ok
    }

    /// Which form of a credential the table at `base` actually has (`name`,
    /// `name_env` or `name_file`), so a message points at the key the admin wrote.
    fn written_form(&self, base: &str, name: &str) -> String {
        [
            name.to_string(),
            format!("{name}_env"),
            format!("{name}_file"),
        ]
        .into_iter()
        .find(|k| self.node(&format!("{base}.{k}")).is_some())
        .unwrap_or_else(|| name.to_string())
    }

    fn client_secret(&mut self, base: &str, s: &PortalSection) -> Cred {
        self.credential(
            base,
            "client_secret",
            s.client_secret.as_ref(),
            s.client_secret_env.as_deref(),
            s.client_secret_file.as_deref(),
        )
    }

    fn refresh_token(&mut self, base: &str, s: &PortalSection) -> Cred {
        self.credential(
            base,
            "refresh_token",
            s.refresh_token.as_ref(),
            s.refresh_token_env.as_deref(),
            s.refresh_token_file.as_deref(),
        )
    }

    /// amoCRM: the account URL, a long-lived token or an OAuth2 app, and the secret
    /// expected in `?secret=` of its webhooks.
    fn amocrm_auth(
        &mut self,
        base: &str,
        s: &PortalSection,
    ) -> (Option<PortalAuth>, WebhookCheck, RateLimitSection) {
        if s.base_url.is_none() {
            self.error(
                &format!("{base}.base_url"),
                "missing: the account address, e.g. https://SUBDOMAIN.amocrm.ru or https://SUBDOMAIN.kommo.com",
            );
        }
        let access_token = self.credential(
            base,
            "access_token",
            s.access_token.as_ref(),
            s.access_token_env.as_deref(),
            s.access_token_file.as_deref(),
        );
        let client_secret = self.client_secret(base, s);
        let refresh_token = self.refresh_token(base, s);
        let webhook_secret = self.credential(
            base,
            "webhook_secret",
            s.webhook_secret.as_ref(),
            s.webhook_secret_env.as_deref(),
            s.webhook_secret_file.as_deref(),
        );
        if let Some(uri) = &s.redirect_uri {
            self.check_url(&format!("{base}.redirect_uri"), uri);
        }
        let oauth = [
            ("client_id", s.client_id.is_some()),
            ("client_secret", client_secret.given()),
            ("redirect_uri", s.redirect_uri.is_some()),
            ("refresh_token", refresh_token.given()),
        ];
        let auth = if access_token.given() {
            for (key, _) in oauth.iter().filter(|(_, g)| *g) {
                let key = self.written_form(base, key);
                self.error(
                    &format!("{base}.{key}"),
                    "belongs to an OAuth2 app, but this portal signs in with `access_token` (a long-lived token): keep one of the two",
                );
            }
            match (s.base_url.clone(), access_token.value()) {
                (Some(base_url), Some(token)) => Some(PortalAuth::AmoLongLived { base_url, token }),
                _ => None,
            }
        } else if oauth.iter().any(|(_, g)| *g) {
            for (key, _) in oauth.iter().filter(|(_, g)| !*g) {
                self.error(
                    &format!("{base}.{key}"),
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
                ) => Some(PortalAuth::AmoOAuth {
                    base_url,
                    client_id,
                    client_secret,
                    redirect_uri,
                    refresh_token,
                }),
                _ => None,
            }
        } else {
            self.error(
                base,
                "no credentials: give `access_token` (a long-lived token; or `access_token_env` / `access_token_file`) or an OAuth2 app (`client_id`, `client_secret`, `redirect_uri`, `refresh_token`)",
            );
            None
        };
        if !webhook_secret.given() {
            self.error(
                &format!("{base}.webhook_secret"),
                "missing: the secret expected in `?secret=` of the webhook URL authenticates the events amoCRM sends (also as `webhook_secret_env` / `webhook_secret_file`)",
            );
        }
        let webhook = WebhookCheck {
            secret: webhook_secret.value(),
            member_id: None,
            domain: None,
            account_id: s.account_id.clone(),
            subdomain: s.subdomain.clone(),
            max_event_age_secs: None,
        };
        let rate = RateLimitSection {
            per_second: 7.0,
            burst: 7,
        };
        (auth, webhook, rate)
    }

    fn rate_limit(
        &mut self,
        base: &str,
        s: &PortalSection,
        default: RateLimitSection,
    ) -> Option<RateLimitSection> {
        let Some(rl) = s.rate_limit else {
            return Some(default);
        };
        let mut ok = true;
        if !(rl.per_second.is_finite() && rl.per_second > 0.0) {
            self.error(
                &format!("{base}.rate_limit.per_second"),
                "must be greater than 0",
            );
            ok = false;
        } else if rl.per_second > default.per_second {
            self.warn(
                &format!("{base}.rate_limit.per_second"),
                format!(
                    "{} requests/s is above the {} limit of {}/s: the CRM will refuse requests{}",
                    rl.per_second,
                    s.crm.as_str(),
                    default.per_second,
                    if s.crm == CrmKind::Amocrm {
                        " and may block the integration"
                    } else {
                        ""
                    }
                ),
            );
        }
        if rl.burst < 1 {
            self.error(&format!("{base}.rate_limit.burst"), "must be at least 1");
            ok = false;
        }
        ok.then_some(rl)
    }

    fn fields(&mut self, base: &str, f: &FieldsSection, spec: Option<&ScoringSpec>) {
        let tiers: Option<BTreeSet<&str>> =
            spec.map(|s| s.tiers.iter().map(|t| t.id.as_str()).collect());
        if let Some(tiers) = &tiers {
            for key in f.tier_values.keys() {
                if !tiers.contains(key.as_str()) {
                    let path = format!(
                        "{base}.fields.tier_values.{}",
                        format_path(&[Seg::Key(key.clone())])
                    );
                    self.error(
                        &path,
                        format!(
                            "`{key}` is not a tier of the scoring model (tiers: {})",
                            tiers.iter().copied().collect::<Vec<_>>().join(", ")
                        ),
                    );
                }
            }
            if f.tier.is_some() && !f.tier_values.is_empty() {
                for t in tiers {
                    if !f.tier_values.contains_key(*t) {
                        self.error(
                            &format!("{base}.fields.tier_values"),
                            format!("no value for tier `{t}`: every tier needs its CRM list item id (`leadscore setup` prints them)"),
                        );
                    }
                }
            }
        }
        let writes_back =
            f.score.is_some() || f.tier.is_some() || f.breakdown.is_some() || f.comment;
        if writes_back {
            for (key, v) in [("score", &f.score), ("tier", &f.tier)] {
                match v {
                    None => self.error(
                        &format!("{base}.fields.{key}"),
                        format!("missing: this portal writes results back, so it needs the CRM field for the {key}"),
                    ),
                    Some(name) if name.trim().is_empty() => {
                        self.error(&format!("{base}.fields.{key}"), "must not be empty")
                    }
                    Some(_) => {}
                }
            }
        } else {
            self.warn(
                base,
                "writes nothing back: set `fields.score` and `fields.tier` so reps see the score in the CRM",
            );
        }
        for (neutral, crm_field) in &f.map {
            let known = crate::lead::FIELD_NAMES.contains(&neutral.as_str())
                || neutral
                    .strip_prefix("custom.")
                    .is_some_and(|rest| !rest.is_empty());
            let path = format!(
                "{base}.fields.map.{}",
                format_path(&[Seg::Key(neutral.clone())])
            );
            if !known {
                self.error(
                    &path,
                    format!(
                        "`{neutral}` is not a lead field: use one of {} or custom.<name>",
                        crate::lead::FIELD_NAMES.join(", ")
                    ),
                );
            } else if crm_field.trim().is_empty() {
                self.error(&path, "the CRM field name must not be empty");
            }
        }
    }

    /// Checks the task settings and returns the effective threshold and re-arm mark.
    fn task(&mut self, base: &str, s: &PortalSection, spec: Option<&ScoringSpec>) -> (i32, i32) {
        let t = &s.task;
        let triggers = spec.map(|s| s.triggers.clone()).unwrap_or_default();
        let threshold = t.threshold.unwrap_or(triggers.call_now_above);
        let rearm = t.rearm_below.unwrap_or(triggers.rearm_below);
        if t.enabled {
            if t.title.trim().is_empty() {
                self.error(&format!("{base}.task.title"), "must not be empty");
            }
            if t.deadline_minutes == 0 {
                self.error(
                    &format!("{base}.task.deadline_minutes"),
                    "must be at least 1",
                );
            }
        }
        if t.kind == TaskKind::Todo && s.crm == CrmKind::Amocrm {
            self.error(
                &format!("{base}.task.kind"),
                "\"todo\" is Bitrix24's to-do; amoCRM portals use \"task\"",
            );
        }
        if let Some(spec) = spec {
            let t_path = format!("{base}.task.threshold");
            let r_path = format!("{base}.task.rearm_below");
            if t.threshold.is_some() {
                self.check_threshold(spec, threshold, &t_path);
            }
            if t.threshold.is_some() || t.rearm_below.is_some() {
                let path = if t.rearm_below.is_some() {
                    r_path
                } else {
                    t_path
                };
                if rearm > threshold {
                    self.error(
                        &path,
                        format!(
                            "the re-arm mark {rearm} is above the threshold {threshold}: a lead would re-arm while still above it"
                        ),
                    );
                } else if t.rearm_below.is_some() && rearm <= spec.min {
                    self.warn(
                        &path,
                        format!(
                            "no score is below {rearm}, so a lead never re-arms and gets at most one call-now task"
                        ),
                    );
                }
            }
        }
        (threshold, rearm)
    }
}

/// A portable variable name (`[A-Za-z_][A-Za-z0-9_]*`) that does not look like a
/// token: real names have capitals or underscores, or are short.
fn plausible_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    let rest_ok = name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    let name_like = name.chars().any(|c| c.is_ascii_uppercase() || c == '_') || name.len() < 20;
    first_ok && rest_ok && name_like
}

/// Rejects a URL or a long bare token given where a path belongs.
fn plausible_file_name(path: &Path) -> bool {
    let Some(s) = path.to_str() else {
        return true;
    };
    let url = s.contains("://");
    let bare_token = !s.contains('/')
        && !s.contains('.')
        && s.len() >= 20
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    !s.is_empty() && !url && !bare_token
}

/// The names quoted in backticks in a serde message, in order.
fn backticked(message: &str) -> Vec<String> {
    message
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// serde's "unknown field `x`, expected one of ..." lists every key; shorten it to the
/// unknown key and the closest known one.
fn unknown_key_message(message: &str) -> String {
    let names = backticked(message);
    let Some((unknown, expected)) = names.split_first() else {
        return message.to_string();
    };
    let best = expected
        .iter()
        .map(|c| (edit_distance(unknown, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4))
        .min_by_key(|(d, _)| *d);
    match best {
        Some((_, c)) => format!("unknown key `{unknown}` (did you mean `{c}`?)"),
        None => format!("unknown key `{unknown}`"),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_suggests_the_closest() {
        let m = "unknown field `webhok_url`, expected one of `id`, `crm`, `webhook_url`";
        assert_eq!(
            unknown_key_message(m),
            "unknown key `webhok_url` (did you mean `webhook_url`?)"
        );
        let m = "unknown field `zzz`, expected `id` or `crm`";
        assert_eq!(unknown_key_message(m), "unknown key `zzz`");
    }

    #[test]
    fn env_names_and_file_paths_are_told_from_pasted_secrets() {
        for name in [
            "LEADSCORE_B24_TOKEN",
            "token",
            "_x",
            "amo_webhook_secret_for_main",
        ] {
            assert!(plausible_env_name(name), "{name}");
        }
        for name in [
            "",
            "1ABC",
            "https://x/rest/1/y/",
            "jvh9y1ulvt2m6k5or90v9mg8nn32ozas",
            "a.b.c",
        ] {
            assert!(!plausible_env_name(name), "{name}");
        }
        for path in [
            "/run/credentials/leadscore.service/b24",
            "token",
            "secrets/amo",
        ] {
            assert!(plausible_file_name(Path::new(path)), "{path}");
        }
        for path in [
            "",
            "https://x/rest/1/y/",
            "jvh9y1ulvt2m6k5or90v9mg8nn32ozas",
        ] {
            assert!(!plausible_file_name(Path::new(path)), "{path}");
        }
    }

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "ab"), 2);
        assert_eq!(edit_distance("same", "same"), 0);
    }
}

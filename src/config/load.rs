//! Reading, resolving and checking the config file.
//!
//! Order of precedence: built-in defaults (`schema`), then the file, then the
//! environment (`LEADSCORE_LISTEN`, `LEADSCORE_DATA_DIR`, `LEADSCORE_WORKERS`), so a
//! systemd unit or a container can move the daemon without editing the file.
//!
//! Every section is deserialized on its own from one span-preserving parse, so a type
//! mistake in `[server]` does not hide another in the third `[[portal]]`; then the
//! semantic checks run on whatever parsed. All findings come back together.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

use super::error::{ConfigError, ConfigErrors, ConfigWarning};
use super::locate::{format_path, parse_path, Locator, Seg};
use super::suggest::{backticked, unknown_key_message};
use super::Config;
use crate::scoring::spec::{GroupSpec, RuleSpec, ScoringSpec, TierSpec, TriggerSpec};
use crate::scoring::Model;

/// Environment variable that overrides `server.listen`.
pub const ENV_LISTEN: &str = "LEADSCORE_LISTEN";
/// Environment variable that overrides `server.data_dir`.
pub const ENV_DATA_DIR: &str = "LEADSCORE_DATA_DIR";
/// Environment variable that overrides `server.workers`.
pub const ENV_WORKERS: &str = "LEADSCORE_WORKERS";

/// Keys outside `[[portal]]` whose values are secrets: their values never appear in a
/// message (each CRM names its own secret keys in the registry).
const SECRET_KEYS: &[&str] = &["dashboard_token"];

/// Is `key` a secret anywhere in the file?
fn is_secret_key(key: &str) -> bool {
    SECRET_KEYS.contains(&key)
        || crate::crm::registry::CRMS
            .iter()
            .any(|c| c.secrets.contains(&key))
}

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
    let shadow_path = server.as_ref().and_then(|s| s.shadow_model.clone());
    let shadow = shadow_path.and_then(|p| cx.model_file("server.shadow_model", &p));
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
                shadow: shadow.map(|(_, m)| Arc::new(m)),
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

/// The state of one load: where messages point, and every finding so far.
pub(super) struct Ctx<'a> {
    pub(super) file: &'a str,
    pub(super) loc: Locator<'a>,
    pub(super) base_dir: &'a Path,
    pub(super) env: &'a dyn Fn(&str) -> Option<String>,
    pub(super) secrets: Secrets,
    pub(super) errors: Vec<ConfigError>,
    pub(super) warnings: Vec<ConfigWarning>,
}

impl<'a> Ctx<'a> {
    pub(super) fn into_errors(self) -> ConfigErrors {
        let mut errors = self.errors;
        errors.sort_by_key(|e| (e.line, e.column));
        errors.dedup();
        ConfigErrors(errors)
    }

    pub(super) fn error(&mut self, path: &str, message: impl Into<String>) {
        let (line, column) = self.loc.locate(&parse_path(path));
        self.errors.push(ConfigError {
            file: self.file.into(),
            line,
            column,
            key_path: path.into(),
            message: message.into(),
        });
    }

    pub(super) fn error_at_offset(&mut self, key_path: String, offset: usize, message: String) {
        let (line, column) = self.loc.position(offset);
        self.errors.push(ConfigError {
            file: self.file.into(),
            line,
            column,
            key_path,
            message,
        });
    }

    pub(super) fn warn(&mut self, path: &str, message: impl Into<String>) {
        let (line, column) = self.loc.locate(&parse_path(path));
        self.warnings.push(ConfigWarning {
            file: self.file.into(),
            line,
            column,
            key_path: path.into(),
            message: message.into(),
        });
    }

    pub(super) fn has_error(&self, path: &str) -> bool {
        self.errors.iter().any(|e| e.key_path == path)
    }

    pub(super) fn node(&self, path: &str) -> Option<&Spanned<DeValue<'a>>> {
        self.loc.node(&parse_path(path))
    }

    /// Deserializes the node at `path`, recording a serde error with its own key path.
    pub(super) fn de<T: DeserializeOwned>(&mut self, path: &str) -> Option<T> {
        let node = self.node(path)?.clone();
        self.de_node(path, node)
    }

    /// Deserializes `node` (the value at `path`, possibly with some keys left out),
    /// recording a serde error with its own key path.
    pub(super) fn de_node<T: DeserializeOwned>(
        &mut self,
        path: &str,
        node: Spanned<DeValue<'a>>,
    ) -> Option<T> {
        match T::deserialize(ValueDeserializer::from(node.clone())) {
            Ok(v) => Some(v),
            Err(e) => {
                self.serde_error(path, &node, &e);
                None
            }
        }
    }

    pub(super) fn serde_error(
        &mut self,
        path: &str,
        node: &Spanned<DeValue<'a>>,
        e: &toml::de::Error,
    ) {
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
        let is_secret = matches!(segs.last(), Some(Seg::Key(k)) if is_secret_key(k));
        if is_secret && message.starts_with("invalid type") {
            message = "invalid type: expected a string (the value is not shown)".into();
        }
        self.error_at_offset(format_path(&segs), offset, message);
    }

    pub(super) fn check_top_level(&mut self) {
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

    pub(super) fn scoring(&mut self) -> Option<ScoringSpec> {
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

    pub(super) fn de_each<T: DeserializeOwned>(&mut self, path: &str) {
        let len = match self.node(path).map(|n| n.get_ref()) {
            Some(DeValue::Array(a)) => a.len(),
            _ => return,
        };
        for i in 0..len {
            self.de::<T>(&format!("{path}[{i}]"));
        }
    }

    pub(super) fn compile(&mut self, spec: &ScoringSpec) -> Option<Model> {
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

    pub(super) fn check_triggers(&mut self, spec: &ScoringSpec) {
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
    pub(super) fn check_threshold(&mut self, spec: &ScoringSpec, threshold: i32, path: &str) {
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

    pub(super) fn check_rearm(
        &mut self,
        spec: &ScoringSpec,
        threshold: i32,
        rearm: i32,
        path: &str,
    ) {
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
}

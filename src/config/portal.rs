//! `[[portal]]`: the keys every portal has (`id`, `crm`, `rate_limit`, `fields`,
//! `task`) are checked here; the rest of the table belongs to the portal's CRM and is
//! handed to its settings parser through the registry ([`PortalCheck`]). This module
//! names no CRM.

use std::any::Any;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use secrecy::SecretString;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::credentials::Credential;
use super::load::Ctx;
use super::locate::{format_path, parse_path, Seg};
use super::schema::{FieldsSection, RateLimitSection, TaskSection};
use super::suggest::{backticked, unknown_key_message};
use super::Portal;
use crate::crm::activity_map::{ActivityMap, ActivityMapEntry};
use crate::crm::registry::{self, CrmEntry};
use crate::scoring::spec::ScoringSpec;

/// The keys of a `[[portal]]` table that mean the same for every CRM.
const COMMON_KEYS: &[&str] = &[
    "id",
    "crm",
    "rate_limit",
    "fields",
    "task",
    "activity_map",
    "model",
    "tracking",
    "reminder",
    "stages",
];

/// The part of `[[portal]]` every CRM shares.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PortalCommon {
    /// Short id used in webhook paths (`/webhooks/<crm>/<id>`) and the store.
    pub(super) id: String,
    /// The CRM's name in the registry.
    pub(super) crm: String,
    #[serde(default)]
    pub(super) rate_limit: Option<RateLimitSection>,
    #[serde(default)]
    pub(super) fields: FieldsSection,
    #[serde(default)]
    pub(super) task: TaskSection,
    /// `[[portal.activity_map]]`: the portal's own activity shapes → neutral kinds.
    #[serde(default)]
    pub(super) activity_map: Vec<ActivityMapEntry>,
    /// The portal's own model file (only `[scoring]`), relative to the config.
    #[serde(default)]
    pub(super) model: Option<std::path::PathBuf>,
    /// `[portal.tracking]`: the site's events (`/track/<id>`), identified by its backend.
    #[serde(default)]
    pub(super) tracking: Option<super::tracking::TrackingSection>,
    /// `[portal.reminder]`: a task before the customer's usual purchase.
    #[serde(default)]
    pub(super) reminder: Option<super::reminder::ReminderSection>,
    /// `[portal.stages]`: coefficients of the weighted pipeline value.
    #[serde(default)]
    pub(super) stages: Option<crate::weighted::StagesSection>,
}

/// A CRM's own settings of one portal (credentials, webhook checks), as its folder's
/// parser made them. The generic parts of the daemon see them only through this trait;
/// the CRM's adapter and webhook decoder downcast to their own type.
pub trait CrmSettings: std::fmt::Debug + Send + Sync + 'static {
    /// How the portal signs in, in words for the summary and logs (never the secret).
    fn auth_label(&self) -> &'static str;
    /// The CRM account's address when the config names it (for the summary).
    fn base_url(&self) -> Option<&str>;
    /// Do incoming webhooks get the same checks (token, account) under `other`? A
    /// reload reports a difference as needing a restart.
    fn same_webhook_checks(&self, other: &dyn CrmSettings) -> bool;
    /// What the portal scores, in words (Bitrix24 `entities`; empty for a CRM with one
    /// kind of record). The adapter is built with it, so a reload reports a change as
    /// needing a restart.
    fn scope_label(&self) -> String {
        String::new()
    }
    /// For the downcast to the CRM's own type.
    fn as_any(&self) -> &dyn Any;
}

impl Portal {
    /// The portal's CRM settings as that CRM's own type (`None`: another CRM's portal).
    pub fn settings_of<T: CrmSettings>(&self) -> Option<&T> {
        self.settings.as_any().downcast_ref::<T>()
    }
}

/// What a CRM's settings parser made of a `[[portal]]` table.
pub struct PortalCrm {
    /// `None` when the credentials were unusable (the errors are recorded).
    pub settings: Option<Arc<dyn CrmSettings>>,
    /// The pacing the CRM allows when the portal does not override it.
    pub default_rate: RateLimitSection,
    /// Appended to the warning for an override above that default (what else happens).
    pub over_limit_note: &'static str,
}

/// The names a settings struct accepts, read from serde's own "expected one of" list, so
/// no hand-kept key list can drift from the struct.
pub fn keys_of<T: DeserializeOwned>() -> Vec<String> {
    let probe = toml::Table::from_iter([("\u{0}".to_string(), toml::Value::Integer(0))]);
    match T::deserialize(toml::Value::Table(probe)) {
        Ok(_) => Vec::new(),
        Err(e) => backticked(e.message()).into_iter().skip(1).collect(),
    }
}

/// Leave only the keys `keep` accepts in a table node (spans stay as parsed, so errors
/// still point into the file).
fn keep_keys(node: &mut Spanned<DeValue<'_>>, keep: impl Fn(&str) -> bool) {
    if let DeValue::Table(t) = node.get_mut() {
        let kept: DeTable<'_> = t
            .iter()
            .filter(|(k, _)| keep(k.get_ref()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        *t = kept;
    }
}

/// A CRM's view of one `[[portal]]` table while the config loads: its own keys,
/// the shared task and rate-limit sections, and error reporting with
/// `file:line:col: key: message` (keys are relative to the portal, `""` is the table).
pub struct PortalCheck<'c, 'a> {
    cx: &'c mut Ctx<'a>,
    base: String,
    own_keys: Vec<String>,
    task: TaskSection,
    rate_limit: Option<RateLimitSection>,
}

impl PortalCheck<'_, '_> {
    fn path(&self, key: &str) -> String {
        if key.is_empty() {
            self.base.clone()
        } else {
            format!("{}.{key}", self.base)
        }
    }

    /// The CRM's own keys of the table as `T` (serde errors are recorded).
    pub fn keys<T: DeserializeOwned>(&mut self) -> Option<T> {
        let mut node = self.cx.node(&self.base)?.clone();
        keep_keys(&mut node, |k| self.own_keys.iter().any(|own| own == k));
        let base = self.base.clone();
        self.cx.de_node(&base, node)
    }

    /// Record an error at `key`.
    pub fn error(&mut self, key: &str, message: impl Into<String>) {
        let path = self.path(key);
        self.cx.error(&path, message);
    }

    /// Record a warning at `key`.
    pub fn warn(&mut self, key: &str, message: impl Into<String>) {
        let path = self.path(key);
        self.cx.warn(&path, message);
    }

    /// Resolve the credential `name` given inline, as `name_env` or as `name_file`.
    pub fn credential(
        &mut self,
        name: &str,
        inline: Option<&SecretString>,
        env: Option<&str>,
        file: Option<&Path>,
    ) -> Credential {
        let base = self.base.clone();
        self.cx.credential(&base, name, inline, env, file)
    }

    /// An http(s) URL with a host, else an error at `key`.
    pub fn check_url(&mut self, key: &str, url: &str) -> bool {
        let path = self.path(key);
        self.cx.check_url(&path, url)
    }

    /// Which form of a credential the table has (`name`, `name_env` or `name_file`), so
    /// a message points at the key the admin wrote.
    pub fn written_form(&self, name: &str) -> String {
        [
            name.to_string(),
            format!("{name}_env"),
            format!("{name}_file"),
        ]
        .into_iter()
        .find(|k| self.cx.node(&self.path(k)).is_some())
        .unwrap_or_else(|| name.to_string())
    }

    /// `[portal.task]` (defaults filled in).
    pub fn task(&self) -> &TaskSection {
        &self.task
    }

    /// `[portal.rate_limit]` when the portal overrides the CRM's pacing.
    pub fn rate_limit(&self) -> Option<&RateLimitSection> {
        self.rate_limit.as_ref()
    }
}

impl Ctx<'_> {
    pub(super) fn portals(&mut self, spec: Option<&ScoringSpec>) -> Option<Vec<Portal>> {
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
            let Some((section, entry)) = self.portal_common(&base) else {
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
            match self.portal(&base, section, entry, spec) {
                Some(p) => portals.push(p),
                None => ok = false,
            }
        }
        ok.then_some(portals)
    }

    /// The keys a table at `base` has.
    fn table_keys(&self, base: &str) -> Vec<String> {
        match self.node(base).map(|n| n.get_ref()) {
            Some(DeValue::Table(t)) => t.iter().map(|(k, _)| k.get_ref().to_string()).collect(),
            _ => Vec::new(),
        }
    }

    /// The shared keys of a portal and its CRM's registry entry; `None` (with the error
    /// recorded) for an unknown key, a type mistake or an unknown CRM, which end the
    /// portal's checks as they always did.
    fn portal_common(&mut self, base: &str) -> Option<(PortalCommon, &'static CrmEntry)> {
        let present = self.table_keys(base);
        let known = |k: &str| {
            COMMON_KEYS.contains(&k)
                || registry::CRMS
                    .iter()
                    .any(|c| (c.keys)().iter().any(|own| own == k))
        };
        if let Some(unknown) = present.iter().find(|k| !known(k)) {
            let mut expected: Vec<String> = COMMON_KEYS.iter().map(|k| k.to_string()).collect();
            for c in registry::CRMS {
                expected.extend((c.keys)());
            }
            let list = expected
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ");
            let message = unknown_key_message(&format!(
                "unknown field `{unknown}`, expected one of {list}"
            ));
            self.error(&format!("{base}.{unknown}"), message);
            return None;
        }
        let mut node = self.node(base)?.clone();
        keep_keys(&mut node, |k| COMMON_KEYS.contains(&k));
        let common: PortalCommon = self.de_node(base, node)?;
        let Some(entry) = registry::find(&common.crm) else {
            let names: Vec<String> = registry::CRMS
                .iter()
                .map(|c| format!("`{}`", c.name))
                .collect();
            let expected = match names.split_last() {
                Some((last, [])) => last.clone(),
                Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
                None => "nothing".into(),
            };
            let path = format!("{base}.crm");
            let offset = self.node(&path).map_or(0, |n| n.span().start);
            self.error_at_offset(
                path,
                offset,
                format!("unknown variant `{}`, expected {expected}", common.crm),
            );
            return None;
        };
        Some((common, entry))
    }

    fn portal(
        &mut self,
        base: &str,
        s: PortalCommon,
        entry: &'static CrmEntry,
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

        let own_keys = (entry.keys)();
        for key in self.table_keys(base) {
            if COMMON_KEYS.contains(&key.as_str()) || own_keys.contains(&key) {
                continue;
            }
            let others: Vec<&str> = registry::CRMS
                .iter()
                .filter(|c| (c.keys)().contains(&key))
                .map(|c| c.name)
                .collect();
            self.error(
                &format!("{base}.{key}"),
                format!(
                    "`{key}` applies only to {} portals; this portal has crm = \"{}\"",
                    others.join(" or "),
                    entry.name
                ),
            );
        }

        let mut check = PortalCheck {
            cx: &mut *self,
            base: base.to_string(),
            own_keys,
            task: s.task.clone(),
            rate_limit: s.rate_limit,
        };
        let crm = (entry.settings)(&mut check);

        let rate_limit = self.rate_limit(base, &s, &crm);
        // A portal's own model decides its tiers and threshold, so its fields and task
        // are checked against that model.
        let own = s
            .model
            .clone()
            .map(|p| self.model_file(&format!("{base}.model"), &p));
        let spec = match &own {
            Some(Some((own_spec, _))) => Some(own_spec),
            Some(None) => None,
            None => spec,
        };
        self.fields(base, &s.fields, spec);
        let mut s = s;
        s.fields.activity_map = self.activity_map(base, &s.activity_map, entry);
        let (threshold, rearm_below) = self.task(base, &s, spec);
        let tracking = s.tracking.as_ref().map(|t| self.tracking(base, t));
        if let Some(field) = s.tracking.as_ref().and_then(|t| t.visitor_field.as_deref()) {
            self.mapped_lead_field(
                &format!("{base}.tracking.visitor_field"),
                field.trim(),
                &s.fields.map,
                "the visitor id a site form recorded",
            );
        }
        let reminder = s
            .reminder
            .as_ref()
            .map(|r| self.reminder(base, r, &s.fields.map));
        let stages = self.stages(base, s.stages.as_ref());

        if self.errors.len() > errors_before {
            return None;
        }
        Some(Portal {
            id: s.id,
            crm: entry.name,
            settings: crm.settings?,
            rate_limit: rate_limit?,
            fields: s.fields,
            task: s.task,
            threshold,
            rearm_below,
            model: own.flatten().map(|(_, m)| Arc::new(m)),
            tracking: tracking.map(|t| t.map(Arc::new)).unwrap_or(None),
            reminder: reminder.map(|r| r.map(Arc::new)).unwrap_or(None),
            stages,
        })
    }

    /// `[portal.stages]`, each refused coefficient reported at its key.
    fn stages(
        &mut self,
        base: &str,
        section: Option<&crate::weighted::StagesSection>,
    ) -> crate::weighted::StageCoefficients {
        let Some(section) = section else {
            return Default::default();
        };
        match crate::weighted::StageCoefficients::check(section) {
            Ok(c) => c,
            Err(errors) => {
                for e in errors {
                    let path = format!(
                        "{base}.stages.pipelines.{}",
                        format_path(&[Seg::Key(e.pipeline.clone()), Seg::Key(e.stage.clone())])
                    );
                    self.error(&path, e.message);
                }
                Default::default()
            }
        }
    }

    /// `[[portal.activity_map]]` compiled against the CRM's attributes; each mistake is
    /// reported at its entry and key.
    fn activity_map(
        &mut self,
        base: &str,
        entries: &[ActivityMapEntry],
        entry: &'static CrmEntry,
    ) -> ActivityMap {
        match ActivityMap::compile(entries, entry.activity_attrs) {
            Ok(map) => map,
            Err(errors) => {
                for e in errors {
                    let at = format!("{base}.activity_map[{}]", e.index);
                    let path = if e.key.is_empty() {
                        at
                    } else {
                        format!("{at}.{}", e.key)
                    };
                    self.error(&path, e.message);
                }
                ActivityMap::default()
            }
        }
    }

    /// An http(s) URL with a host, else an error at `path`.
    pub(super) fn check_url(&mut self, path: &str, url: &str) -> bool {
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

    /// The pacing in force: the CRM's default, or the checked override.
    fn rate_limit(
        &mut self,
        base: &str,
        s: &PortalCommon,
        crm: &PortalCrm,
    ) -> Option<RateLimitSection> {
        let default = crm.default_rate;
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
                    rl.per_second, s.crm, default.per_second, crm.over_limit_note
                ),
            );
        }
        if rl.burst < 1 {
            self.error(&format!("{base}.rate_limit.burst"), "must be at least 1");
            ok = false;
        }
        if let Some(l) = rl.operating_limit_secs {
            if !(l.is_finite() && l > 0.0) {
                self.error(
                    &format!("{base}.rate_limit.operating_limit_secs"),
                    "must be greater than 0",
                );
                ok = false;
            }
        }
        if rl.operating_window_secs == Some(0) {
            self.error(
                &format!("{base}.rate_limit.operating_window_secs"),
                "must be at least 1",
            );
            ok = false;
        }
        ok.then_some(rl)
    }

    /// `[portal.fields]`: tier values match the model, write-back fields, the mapping.
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
            let sets = [
                ("fields", f.tier.is_some(), &f.tier_values),
                ("fields.deal", f.deal.tier.is_some(), &f.deal.tier_values),
            ];
            for (section, named, values) in sets {
                if section == "fields.deal" {
                    for key in values.keys().filter(|k| !tiers.contains(k.as_str())) {
                        self.error(
                            &format!(
                                "{base}.fields.deal.tier_values.{}",
                                format_path(&[Seg::Key(key.clone())])
                            ),
                            format!("`{key}` is not a tier of the scoring model"),
                        );
                    }
                }
                if named && !values.is_empty() {
                    for t in tiers {
                        if !values.contains_key(*t) {
                            self.error(
                                &format!("{base}.{section}.tier_values"),
                                format!("no value for tier `{t}`: every tier needs its CRM list item id (`leadscore setup` prints them)"),
                            );
                        }
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
    fn task(&mut self, base: &str, s: &PortalCommon, spec: Option<&ScoringSpec>) -> (i32, i32) {
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
        if let Some(c) = &t.capacity {
            let c_path = format!("{base}.task.capacity");
            if c.per_rep_per_day == 0 {
                self.error(
                    &format!("{c_path}.per_rep_per_day"),
                    "must be at least 1 (set `enabled = false` to create no tasks)",
                );
            }
            if let Some(o) = &c.utc_offset {
                if o.parse::<chrono::FixedOffset>().is_err() {
                    self.error(
                        &format!("{c_path}.utc_offset"),
                        "must look like \"+03:00\" or \"-05:00\" (where the portal's day starts)",
                    );
                }
            }
            if let Some(days) = &c.working_days {
                for d in days
                    .iter()
                    .filter(|d| super::schema::weekday_of(d).is_none())
                {
                    self.error(
                        &format!("{c_path}.working_days"),
                        format!(
                            "{d:?} is not a weekday (use \"mon\" .. \"sun\" or \"пн\" .. \"вс\")"
                        ),
                    );
                }
                if days.is_empty() {
                    self.error(
                        &format!("{c_path}.working_days"),
                        "must name at least one day (leave it out for Monday to Friday)",
                    );
                }
            }
            for h in c
                .holidays
                .iter()
                .filter(|h| h.parse::<chrono::NaiveDate>().is_err())
            {
                self.error(
                    &format!("{c_path}.holidays"),
                    format!("{h:?} is not a date like \"2027-01-01\""),
                );
            }
            if c.fallback_responsible
                .as_deref()
                .is_some_and(|f| f.trim().is_empty())
            {
                self.error(
                    &format!("{c_path}.fallback_responsible"),
                    "must not be empty (leave it out to let leads wait for the next day)",
                );
            }
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

//! The config file's shape, as serde reads it (`deny_unknown_fields` everywhere, so a
//! misspelt key is an error with its line, not a silently ignored setting).
//!
//! Credentials appear in three forms (inline, `*_env`, `*_file`); `load` resolves them
//! into `SecretString`s and checks that exactly one form is given. The keys of
//! `[[portal]]` that belong to one CRM are that CRM's (`src/crm/<name>/settings.rs`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use secrecy::SecretString;
use serde::Deserialize;

use crate::scoring::spec::ScoringSpec;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub server: ServerSection,
    /// Read table by table (`config::portal`), each CRM's keys by that CRM.
    #[serde(default, rename = "portal")]
    pub portals: Vec<toml::Table>,
    pub scoring: ScoringSpec,
}

/// `[server]`: how the daemon listens, where it keeps state and how hard it works.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// Address the webhook endpoint listens on.
    pub listen: String,
    /// Where sled keeps the queue, the ledger and the crossings.
    pub data_dir: PathBuf,
    /// Concurrent lead-processing workers (each still obeys the portal's rate limit).
    pub workers: usize,
    /// Events for one lead within this window become one fetch.
    pub coalesce_ms: u64,
    /// How often the reconciliation sweep looks for leads changed without a webhook.
    pub sweep_interval_secs: u64,
    /// Largest webhook body accepted; bigger ones get 413.
    pub max_body_bytes: usize,
    /// Most leads waiting on disk; beyond it the intake answers 503 with Retry-After.
    pub queue_limit: usize,
    /// Delays between attempts for a failing lead; after the last one it is dead-lettered.
    pub retry_delays_secs: Vec<u64>,
    /// A lead near or above the call-now threshold that waits longer than this for its
    /// fetch (a rate limit or an operating-time pause) is logged at WARN with its id.
    pub hot_wait_warn_secs: u64,
    /// After a SIGHUP that changes the scoring model, re-score every stored lead with it
    /// (no call-now tasks from that); off: the new model reaches a lead with its next
    /// event or decay timer, and the log shows what it would change.
    pub rescore_on_reload: bool,
    /// Token that guards /dashboard (optional; without it the page is served only on loopback).
    pub dashboard_token: Option<SecretString>,
    pub dashboard_token_env: Option<String>,
    pub dashboard_token_file: Option<PathBuf>,
    /// Most connections open at once; more clients wait in the kernel's backlog, so a
    /// flood of idle connections cannot exhaust the process's file descriptors.
    pub max_connections: usize,
    /// Seconds a client has for a whole request head, counted from when it connects or
    /// gets its previous answer: silent and slowloris connections are closed.
    pub header_read_timeout_secs: u64,
    /// Seconds a client has for the whole body once the head is in; slower ones get 408.
    pub body_read_timeout_secs: u64,
    /// Seconds an answered connection may stay idle waiting for another request (0: no
    /// keep-alive).
    pub keep_alive_timeout_secs: u64,
    /// A model file (only `[scoring]`) scored beside the live model and kept in the
    /// ledger, never written: the way to try a new model on real leads.
    pub shadow_model: Option<PathBuf>,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            listen: "127.0.0.1:8088".into(),
            data_dir: PathBuf::from("/var/lib/leadscore"),
            workers: 4,
            coalesce_ms: 2000,
            sweep_interval_secs: 300,
            max_body_bytes: 64 * 1024,
            queue_limit: 100_000,
            retry_delays_secs: vec![1, 5, 30, 120, 600, 1800],
            hot_wait_warn_secs: 60,
            rescore_on_reload: false,
            dashboard_token: None,
            dashboard_token_env: None,
            dashboard_token_file: None,
            max_connections: 1024,
            header_read_timeout_secs: 10,
            body_read_timeout_secs: 10,
            keep_alive_timeout_secs: 5,
            shadow_model: None,
        }
    }
}

/// Overrides of the CRM's default request pacing.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSection {
    /// Sustained requests per second (Bitrix24: the bucket's drain rate).
    pub per_second: f64,
    /// Requests allowed at once (Bitrix24: the bucket size).
    pub burst: u32,
    /// Bitrix24: execution seconds one method may use per window before the portal
    /// refuses it (OPERATION_TIME_LIMIT); 480 on cloud portals, 420 where a self-hosted
    /// portal enables the limit.
    #[serde(default)]
    pub operating_limit_secs: Option<f64>,
    /// Bitrix24: the window of that limit in seconds (ten one-minute baskets: 600).
    #[serde(default)]
    pub operating_window_secs: Option<u64>,
}

/// `[portal.fields]`: where the score lands in the CRM and where lead data comes from.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FieldsSection {
    /// Integer field for the score, e.g. `UF_CRM_LEADSCORE` (Bitrix24) or a field id (amoCRM).
    pub score: Option<String>,
    /// Enumeration field for the tier.
    pub tier: Option<String>,
    /// Tier id -> enumeration item id in the CRM (`leadscore setup` prints them).
    pub tier_values: BTreeMap<String, String>,
    /// Text field for the readable breakdown.
    pub breakdown: Option<String>,
    /// Also post the breakdown as a timeline comment / note when the score changes.
    pub comment: bool,
    /// Optional text field for the score with its win probability ("72 ≈ 18%"), from
    /// the calibration the last `backtest --portal` of this portal computed.
    pub probability: Option<String>,
    /// Optional number field for the weighted value: amount × the coefficient of the
    /// record's stage (`[portal.stages]`); amoCRM leads, or Bitrix24 leads with an
    /// amount (Bitrix24 deals: `[portal.fields.deal] expected_value`).
    pub expected_value: Option<String>,
    /// Optional text field for the qualification state in short ("B✓ A? N✓ T✗",
    /// `[scoring.qualification]`), so a CRM filter or report can pick the leads nobody
    /// has qualified.
    pub qualification: Option<String>,
    /// Neutral field name (`industry`, `revenue`, `employees`, `region`, `custom.<x>`, ...)
    /// -> the CRM field that holds it.
    pub map: BTreeMap<String, String>,
    /// `[[portal.activity_map]]`, compiled when the config loads (it travels with the
    /// field mapping, so a reload applies it to the next fetch).
    #[serde(skip)]
    pub activity_map: crate::crm::activity_map::ActivityMap,
    /// `[portal.fields.deal]`: where a Bitrix24 deal's score lands (deal user fields
    /// are separate from lead ones, and so are their enumeration item ids).
    pub deal: DealFieldsSection,
}

/// `[portal.fields.deal]`: the write-back fields of Bitrix24 deals (portals with
/// `entities` containing "deal"). `score` defaults to `UF_CRM_LEADSCORE`; the tier and
/// breakdown are written only when named, as for leads.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DealFieldsSection {
    /// Integer deal field for the score.
    pub score: Option<String>,
    /// Enumeration deal field for the tier.
    pub tier: Option<String>,
    /// Tier id -> enumeration item id of the deal's tier field (`setup` prints them).
    pub tier_values: BTreeMap<String, String>,
    /// Text deal field for the breakdown.
    pub breakdown: Option<String>,
    /// Number deal field for the weighted value (amount × the stage's coefficient).
    pub expected_value: Option<String>,
    /// Text deal field for the qualification state in short ("B✓ A? N✓ T✗").
    pub qualification: Option<String>,
}

impl FieldsSection {
    /// The lead field an optional value goes to, if the portal names one.
    pub fn extra(&self, kind: crate::crm::extras::Extra) -> Option<&str> {
        use crate::crm::extras::Extra;
        match kind {
            Extra::Probability => self.probability.as_deref(),
            Extra::ExpectedValue => self.expected_value.as_deref(),
            Extra::Qualification => self.qualification.as_deref(),
        }
    }
}

impl DealFieldsSection {
    /// The deal field an optional value goes to (deals have no probability field: the
    /// calibration is learnt on leads).
    pub fn extra(&self, kind: crate::crm::extras::Extra) -> Option<&str> {
        use crate::crm::extras::Extra;
        match kind {
            Extra::Probability => None,
            Extra::ExpectedValue => self.expected_value.as_deref(),
            Extra::Qualification => self.qualification.as_deref(),
        }
    }
}

/// How the "call now" reminder is created in the CRM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskKind {
    /// Bitrix24 `tasks.task.add` / amoCRM task.
    Task,
    /// Bitrix24 `crm.activity.todo.add` (the CRM-native to-do on the lead card).
    Todo,
}

/// `[portal.task]`: the "call now" task for the responsible rep.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TaskSection {
    pub enabled: bool,
    pub kind: TaskKind,
    /// Title; `{score}`, `{tier}`, `{lead}` and `{name}` are filled in.
    pub title: String,
    /// Body; the same placeholders plus `{why}` (the explanation) and `{questions}`
    /// (the qualification questions still open, or "—").
    pub text: String,
    /// Deadline, minutes from creation.
    pub deadline_minutes: u32,
    /// After a task, a new one for the same lead waits at least this long.
    pub cooldown_hours: u32,
    /// Overrides `scoring.triggers.call_now_above` for this portal.
    pub threshold: Option<i32>,
    /// Overrides `scoring.triggers.rearm_below` for this portal.
    pub rearm_below: Option<i32>,
    /// Who gets the task when the lead has no responsible user.
    pub fallback_responsible_id: Option<String>,
    /// `[portal.task.capacity]`: at most N call-now tasks per rep per day.
    pub capacity: Option<CapacitySection>,
}

/// `[portal.task.capacity]`: a rep can call only so many leads a day. Beyond the limit
/// the highest-scored leads go first and the rest wait for the next working day (or go
/// to the fallback rep while that rep has room). On a day off every crossing waits for
/// the next working day, so a "call now" task never lands where nobody reads it.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CapacitySection {
    /// Most call-now tasks one rep gets per calendar day.
    pub per_rep_per_day: u32,
    /// Who gets the tasks beyond a rep's limit (within this rep's own limit).
    #[serde(default)]
    pub fallback_responsible: Option<String>,
    /// The portal's time zone as a UTC offset ("+03:00"), where its calendar day
    /// starts; default UTC.
    #[serde(default)]
    pub utc_offset: Option<String>,
    /// The days reps work ("mon".."sun", or Russian "пн".."вс"); default Monday to
    /// Friday.
    #[serde(default)]
    pub working_days: Option<Vec<String>>,
    /// Days off besides the weekly ones, as dates ("2027-01-01"): public holidays.
    #[serde(default)]
    pub holidays: Vec<String>,
}

/// A weekday's name as the config may write it (English or Russian, short or long).
pub fn weekday_of(name: &str) -> Option<chrono::Weekday> {
    use chrono::Weekday::*;
    let n = name.trim().to_lowercase();
    let day = match n.as_str() {
        "mon" | "monday" | "пн" | "понедельник" => Mon,
        "tue" | "tuesday" | "вт" | "вторник" => Tue,
        "wed" | "wednesday" | "ср" | "среда" => Wed,
        "thu" | "thursday" | "чт" | "четверг" => Thu,
        "fri" | "friday" | "пт" | "пятница" => Fri,
        "sat" | "saturday" | "сб" | "суббота" => Sat,
        "sun" | "sunday" | "вс" | "воскресенье" => Sun,
        _ => return None,
    };
    Some(day)
}

impl CapacitySection {
    /// The offset the calendar day is counted in (UTC when unset or unreadable; the
    /// config check rejects an unreadable one).
    pub fn offset(&self) -> chrono::FixedOffset {
        self.utc_offset
            .as_deref()
            .and_then(|o| o.parse().ok())
            .unwrap_or_else(|| chrono::FixedOffset::east_opt(0).expect("zero offset"))
    }

    /// Do reps work on `day`? (Unreadable names and dates are rejected by the config
    /// check, so they are skipped here.)
    pub fn is_working(&self, day: chrono::NaiveDate) -> bool {
        use chrono::Datelike;
        let weekday = day.weekday();
        let weekly = match &self.working_days {
            Some(days) => days.iter().any(|d| weekday_of(d) == Some(weekday)),
            None => weekday.number_from_monday() <= 5,
        };
        weekly && !self.holidays.iter().any(|h| h.parse() == Ok(day))
    }
}

impl Default for TaskSection {
    fn default() -> Self {
        TaskSection {
            enabled: true,
            kind: TaskKind::Task,
            title: "Позвонить сейчас: {name} (скоринг {score})".into(),
            text: "Лид {lead} набрал {score} баллов ({tier}).\n{why}".into(),
            deadline_minutes: 60,
            cooldown_hours: 72,
            threshold: None,
            rearm_below: None,
            fallback_responsible_id: None,
            capacity: None,
        }
    }
}

//! The seam between the pipeline and a CRM.
//!
//! The pipeline knows leads, scores and tasks; each CRM integration knows its REST API.
//! `Crm` is everything the pipeline asks of a CRM, phrased in neutral terms and in
//! *batches*, so an implementation can pack many leads into few API requests (the rate
//! limit, not the CPU, is what bounds throughput). Each CRM lives in its own folder
//! (settings, webhook decoding, adapter) and is listed once in [`registry`]; what
//! every CRM shares exists once here: the field [`mapping`], the activity [`tags`] and
//! the OAuth token [`vault`].
//!
//! The reloadable settings (field mapping, task settings) are passed to every call
//! from the pipeline's live snapshot instead of being captured by the adapter, so a
//! config reload never builds a second client, limiter or token holder for a portal.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::{FieldsSection, TaskSection};
use crate::lead::{Activity, Lead};

pub mod activity_map;
pub mod admin_retry;
pub mod extras;
pub mod mapping;
pub mod registry;
pub mod tags;
pub mod vault;

/// Declares each CRM's folder (`src/crm/<name>/`) and lists its `ENTRY` in
/// [`registry::CRMS`], so a CRM is known by one name on one line.
macro_rules! crms {
    ($($name:ident),+ $(,)?) => {
        $(pub mod $name;)+

        /// Every CRM leadscore knows (the registry's list).
        pub const CRMS: &[registry::CrmEntry] = &[$($name::ENTRY),+];
    };
}

// The registry line: adding a CRM is adding its folder's name here.
crms!(bitrix24, amocrm);

/// The CRM's id of a lead, as text.
pub type LeadId = String;

/// What a webhook said changed. Bitrix24 activity events carry only the activity id,
/// so the lead behind them is found by the worker's fetch ([`FetchBatch::activities`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Subject {
    Lead(LeadId),
    Activity(String),
}

/// A lead and its activity as fetched from the CRM.
#[derive(Debug, Clone, PartialEq)]
pub struct Fetched {
    pub lead: Lead,
    /// The lead's whole (bounded) history when `activities_complete`, else only what
    /// changed since the request's cursor (to merge into the pipeline's snapshot).
    pub activities: Vec<Activity>,
    /// `activities` replaces what the pipeline knew (a full read) rather than adding to it.
    pub activities_complete: bool,
    /// Where the next incremental read of this lead's activities starts (`None`: no
    /// activities were read, keep the previous cursor).
    pub activity_cursor: Option<String>,
    /// The score currently stored in the CRM's score field, if any (lets the pipeline
    /// notice an admin overwriting it by hand).
    pub current_score: Option<i32>,
    /// The lead is closed (won or lost by the portal's outcome mapping): the pipeline
    /// records the outcome with the score the lead had then (`None`: still open).
    pub closed: Option<Closed>,
}

/// A lead's close as the CRM shows it when the lead is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed {
    pub outcome: crate::backtest::Outcome,
    pub at: DateTime<Utc>,
}

impl Fetched {
    /// A lead read with its whole activity history.
    pub fn complete(lead: Lead, activities: Vec<Activity>, current_score: Option<i32>) -> Self {
        Fetched {
            lead,
            activities,
            activities_complete: true,
            activity_cursor: None,
            current_score,
            closed: None,
        }
    }
}

/// How much of a lead's activity a fetch must read, given what the pipeline's input
/// snapshot already holds. Activities are the expensive part of a read (Bitrix24
/// charges each list against a per-method operating-time budget), so a lead whose
/// activities cannot have changed is read without them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActivityRead {
    /// No usable snapshot: read the whole (bounded) history.
    Full,
    /// Read only what changed at or after this CRM-specific cursor.
    Since(String),
    /// Nothing in the activities changed (e.g. the echo of our own write): read the
    /// lead's fields only.
    Skip,
}

/// One lead to fetch and how much of its activity to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRequest {
    pub id: LeadId,
    pub activities: ActivityRead,
}

impl FetchRequest {
    /// Whole histories for these leads (`Crm::fetch`, backtests, the sweep).
    pub fn full(lead_ids: &[LeadId]) -> Vec<FetchRequest> {
        lead_ids
            .iter()
            .map(|id| FetchRequest {
                id: id.clone(),
                activities: ActivityRead::Full,
            })
            .collect()
    }
}

/// What one worker turn asks the CRM to read.
pub struct FetchBatch<'a> {
    /// Leads named by their events, each with how much activity to read.
    pub leads: &'a [FetchRequest],
    /// Activity events whose lead the webhook did not name (Bitrix24).
    pub activities: &'a [String],
    /// How much activity to read for a lead found through `activities`: the pipeline
    /// knows that lead's input snapshot, the CRM adapter does not.
    pub read_for: &'a (dyn Fn(&LeadId) -> ActivityRead + Send + Sync),
}

/// What one worker turn read.
#[derive(Debug, Default)]
pub struct FetchOutcome {
    /// The leads read (asked for or found through activities); a lead asked for and
    /// missing here was deleted.
    pub leads: BTreeMap<LeadId, Fetched>,
    /// Every activity asked about → its lead (`None`: bound to no lead, or gone).
    pub activity_leads: BTreeMap<String, Option<LeadId>>,
}

/// The values written back to one lead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScoreWrite {
    pub lead_id: LeadId,
    pub score: i32,
    /// Tier id from the scoring model (`cold`, `warm`, `hot`); the impl maps it to the
    /// CRM's enumeration value.
    pub tier: String,
    /// The readable explanation for the breakdown field.
    pub breakdown: String,
    /// Also post the explanation as a timeline comment / note.
    pub comment: bool,
    /// The optional values for their own fields (probability, weighted value,
    /// qualification state); each is written only where the portal names a field.
    #[serde(flatten)]
    pub extras: extras::ExtraValues,
}

/// When, and where the API says so by whom, the CRM last modified a lead. The sweep
/// compares the stamp it lists with the one our own write produced, so a lead whose
/// only change is our write is not fetched again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrmStamp {
    pub at: DateTime<Utc>,
    /// The CRM user who made the change (`None`: the API did not say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

impl CrmStamp {
    /// Is `listed` (what the sweep saw) no newer than this stamp of our own write? A
    /// different modifier at the same second counts as newer, when both are known.
    pub fn covers(&self, listed: &CrmStamp) -> bool {
        listed.at < self.at
            || (listed.at == self.at
                && match (&self.by, &listed.by) {
                    (Some(ours), Some(theirs)) => ours == theirs,
                    _ => true,
                })
    }
}

/// A lead the reconciliation sweep found modified, with the CRM's stamp of that change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changed {
    pub id: LeadId,
    /// `None`: the CRM listed no modification time (the lead is always re-fetched).
    pub stamp: Option<CrmStamp>,
}

/// One lead's outcome of a score write: the CRM's stamp of the modification our write
/// made (`None`: the CRM did not tell), or why it failed.
pub type WriteResult = Result<Option<CrmStamp>, CrmError>;

/// A "call now" reminder to create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRequest {
    pub lead_id: LeadId,
    /// The rep; `None` lets the CRM pick its default (the integration's user).
    pub responsible_id: Option<String>,
    pub title: String,
    pub text: String,
    pub deadline: DateTime<Utc>,
    /// Unique text put into the task so that, after a crash between "created in the
    /// CRM" and "recorded in sled", recovery can find the task instead of doubling it.
    pub marker: String,
}

/// A task the CRM holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRef {
    pub id: String,
    /// Still open (not completed)?
    pub open: bool,
}

/// What `setup` created or found in the CRM, printed for the admin to paste into config.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldSetup {
    pub score_field: String,
    pub tier_field: String,
    pub breakdown_field: String,
    /// Tier id -> enumeration value id.
    pub tier_values: BTreeMap<String, String>,
    /// Field names that were created now (the rest already existed).
    pub created: Vec<String>,
    /// The deal fields (Bitrix24 portals scoring deals), printed as `[portal.fields.deal]`.
    pub deal: Option<Box<FieldSetup>>,
    /// What the admin should know (e.g. the portal is in Bitrix24's simple CRM mode).
    pub notes: Vec<String>,
}

/// Why a CRM call failed, in the terms the pipeline's retry policy needs
/// (`pipeline::retry` decides what each means for the entry).
#[derive(Debug, Clone, thiserror::Error)]
pub enum CrmError {
    /// Worth retrying later: rate limits, 5xx, timeouts, resets. `retry_after` is the
    /// CRM's own hint (Retry-After, operating_reset_at) when it gave one.
    #[error("temporary CRM failure: {message}")]
    Transient {
        message: String,
        retry_after: Option<Duration>,
    },
    /// The client holds the portal (or a method) back for a while to stay under a
    /// CRM budget (Bitrix24's operating time): not a failure, try again after it.
    #[error("CRM paused: {message}")]
    Paused {
        message: String,
        retry_after: Duration,
    },
    /// Will not succeed by retrying (validation, missing rights, bad request).
    #[error("CRM rejected the request: {0}")]
    Rejected(String),
    /// Credentials are wrong, expired beyond refresh, or revoked: an admin must act.
    #[error("CRM authentication failed: {0}")]
    Auth(String),
    /// The CRM blocked this integration (amoCRM 403 after limit violations): stop all
    /// traffic to the portal.
    #[error("CRM blocked the integration: {0}")]
    Blocked(String),
}

impl CrmError {
    /// Should the pipeline try this lead again later?
    pub fn is_retryable(&self) -> bool {
        matches!(self, CrmError::Transient { .. } | CrmError::Paused { .. })
    }

    /// The CRM's own hint for when to retry.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            CrmError::Transient { retry_after, .. } => *retry_after,
            CrmError::Paused { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

/// Everything the pipeline asks of a CRM. Methods take many leads at once so an
/// implementation can batch; results are per lead so one bad lead does not fail the rest.
/// `fields` and `task` come from the live snapshot the caller's batch started with.
#[async_trait]
pub trait Crm: Send + Sync {
    /// Fetch leads with their whole activity history. A lead missing from the map was
    /// deleted.
    async fn fetch(
        &self,
        fields: &FieldsSection,
        lead_ids: &[LeadId],
    ) -> Result<BTreeMap<LeadId, Fetched>, CrmError>;

    /// One worker turn's reads: the leads asked for, each reading only as much activity
    /// as its request says, and the leads behind activity events (found and read in the
    /// same turn, so an activity costs no second pass). A CRM whose webhooks always
    /// name the lead has no activity subjects, and one whose activity reads cost little
    /// may read everything: that is this default.
    async fn fetch_batch(
        &self,
        fields: &FieldsSection,
        batch: FetchBatch<'_>,
    ) -> Result<FetchOutcome, CrmError> {
        let ids: Vec<LeadId> = batch.leads.iter().map(|r| r.id.clone()).collect();
        let leads = if ids.is_empty() {
            BTreeMap::new()
        } else {
            self.fetch(fields, &ids).await?
        };
        Ok(FetchOutcome {
            leads,
            activity_leads: batch.activities.iter().map(|a| (a.clone(), None)).collect(),
        })
    }

    /// Write scores back; the outer error means nothing is known to be written, the
    /// per-lead results say exactly which writes were applied.
    async fn write_scores(
        &self,
        fields: &FieldsSection,
        writes: &[ScoreWrite],
    ) -> Result<BTreeMap<LeadId, WriteResult>, CrmError>;

    /// Look for a task we created earlier (by its marker) on a lead.
    async fn find_task(
        &self,
        task: &TaskSection,
        lead_id: &str,
        marker: &str,
    ) -> Result<Option<TaskRef>, CrmError>;

    /// [`Crm::find_task`] for several leads: recovery after a crash or a failed task
    /// batch meets a whole turn of intents, and a CRM that batches look-ups answers them
    /// in one request. Every lead asked for is in the answer.
    async fn find_tasks(
        &self,
        task: &TaskSection,
        wanted: &[(LeadId, String)],
    ) -> Result<BTreeMap<LeadId, Option<TaskRef>>, CrmError> {
        let mut out = BTreeMap::new();
        for (lead, marker) in wanted {
            out.insert(lead.clone(), self.find_task(task, lead, marker).await?);
        }
        Ok(out)
    }

    /// Create the "call now" task or to-do.
    async fn create_task(
        &self,
        task: &TaskSection,
        request: &TaskRequest,
    ) -> Result<TaskRef, CrmError>;

    /// Create many call-now tasks in as few requests as the CRM allows (Bitrix24: 50
    /// per `batch`, amoCRM: 50 per `POST /api/v4/tasks`): one result per request, in
    /// order, so one refused task does not fail the others. Every marker must be
    /// durable before this is called: a task whose result is an error may still exist
    /// (an ambiguous answer), and recovery finds it by its marker.
    async fn create_tasks(
        &self,
        task: &TaskSection,
        requests: &[TaskRequest],
    ) -> Vec<Result<TaskRef, CrmError>> {
        let mut out = Vec::with_capacity(requests.len());
        for r in requests {
            out.push(self.create_task(task, r).await);
        }
        out
    }

    /// Is a task we created on this lead still open? (No new task while one is open.)
    /// A task id not bound to `lead_id` counts as not open.
    async fn task_open(
        &self,
        task: &TaskSection,
        lead_id: &str,
        task_id: &str,
    ) -> Result<bool, CrmError>;

    /// Leads modified at or after `since` with their modification stamps, for the
    /// reconciliation sweep that catches webhooks the CRM never redelivers.
    async fn changed_since(&self, since: DateTime<Utc>) -> Result<Vec<Changed>, CrmError>;

    /// Every closed lead (won or lost by the portal's outcome mapping) with its deal
    /// size, close time and whole activity history, for backtests; read through this
    /// adapter's paced client, in as few requests as the API allows. `progress` hears
    /// how far the pull got. CRMs without an outcome reader say so.
    async fn closed_leads(
        &self,
        _fields: &FieldsSection,
        _progress: &PullProgressFn,
    ) -> Result<ClosedLeads, CrmError> {
        Err(CrmError::Rejected(
            "reading won/lost outcomes is not implemented for this CRM yet".into(),
        ))
    }

    /// The lead a person's e-mail or phone belongs to (the most recent open one), for a
    /// signed identify call from the site's backend; `None`: the CRM has no open lead
    /// with it. Read through this adapter's paced client. CRMs without a look-up say so.
    async fn find_lead_by_contact(
        &self,
        _who: &crate::tracking::contact::ContactPoint,
    ) -> Result<Option<LeadId>, CrmError> {
        Err(CrmError::Rejected(
            "finding a lead by e-mail or phone is not implemented for this CRM".into(),
        ))
    }

    /// Most leads the pipeline should hand over per batch, so that one batch of
    /// fetches or writes fits the CRM's request packing (Bitrix24 keeps one `batch`
    /// command free for reading back the modification stamps of its writes).
    fn batch_size(&self) -> usize {
        50
    }

    /// The rate limiter's counters since start (telemetry for `leadscore status`, the
    /// dashboard and /metrics; `None`: this client does not keep any).
    fn pacing(&self) -> Option<PacingState> {
        None
    }
}

/// Per task request of a `create_tasks` call, its result once known.
pub(crate) type TaskSlots = Vec<Option<Result<TaskRef, CrmError>>>;

/// Each task request in the CRM's own form, for `create_tasks`: a request that cannot
/// be put in that form gets its error at once, the rest come back with their index.
pub(crate) fn prepare_tasks<T>(
    requests: &[TaskRequest],
    build: impl Fn(&TaskRequest) -> Result<T, CrmError>,
) -> (TaskSlots, Vec<(usize, T)>) {
    let mut out: TaskSlots = vec![None; requests.len()];
    let mut todo = Vec::new();
    for (i, r) in requests.iter().enumerate() {
        match build(r) {
            Ok(t) => todo.push((i, t)),
            Err(e) => out[i] = Some(Err(e)),
        }
    }
    (out, todo)
}

/// The results of `create_tasks`, one per request; a request the CRM gave no answer
/// for failed transiently (its marker lets the retry find it if it was made).
pub(crate) fn task_results(out: TaskSlots) -> Vec<Result<TaskRef, CrmError>> {
    out.into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                Err(CrmError::Transient {
                    message: "the CRM gave no answer for this task".into(),
                    retry_after: None,
                })
            })
        })
        .collect()
}

/// What an admin asks of a CRM, apart from the daemon's runtime work: `leadscore
/// setup` and the demo use it, the pipeline never does.
#[async_trait]
pub trait CrmAdmin: Send + Sync {
    /// Create the score, tier and breakdown fields if missing, reuse them if present
    /// (those `fields` names when it names them).
    async fn setup_fields(
        &self,
        fields: &FieldsSection,
        tiers: &[(String, String)],
    ) -> Result<FieldSetup, CrmError>;
}

/// How far an outcome pull got: a phase (`leads`, `deals`, `activities`), the rows
/// read in it so far, and the requests made in all (drives a progress bar).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PullProgress {
    pub phase: &'static str,
    pub rows: usize,
    pub requests: u64,
}

/// What an outcome pull read, and the fewest requests the API allows for that data
/// (so a report can say how close the pull came to it).
#[derive(Debug, Clone, Default)]
pub struct ClosedLeads {
    pub leads: Vec<crate::backtest::ClosedLead>,
    /// `None`: the CRM does not say.
    pub floor_requests: Option<u64>,
}

/// Where an outcome pull reports its [`PullProgress`].
pub type PullProgressFn = dyn Fn(PullProgress) + Send + Sync;

/// A CRM client's rate-limiter counters since the daemon started.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PacingState {
    /// Requests let through the limiter.
    pub requests: u64,
    /// Rate-limit answers from the CRM (503 QUERY_LIMIT_EXCEEDED, 429): should stay 0.
    pub limit_errors: u64,
    /// Seconds callers spent waiting for the limiter, in all.
    pub wait_secs: f64,
    /// The CRM stopped all traffic (amoCRM's 403 block).
    pub blocked: bool,
    /// Per-method budgets (Bitrix24's operating time); empty where the CRM has none.
    #[serde(default)]
    pub methods: Vec<MethodBudget>,
}

impl PacingState {
    /// "paused until 20:33 UTC (crm.activity.list, operating limit)" while any method is
    /// held back, for `leadscore status`, the dashboard and logs.
    pub fn pause_summary(&self) -> Option<String> {
        let paused: Vec<&MethodBudget> = self
            .methods
            .iter()
            .filter(|m| m.paused_until.is_some())
            .collect();
        let until = paused.iter().filter_map(|m| m.paused_until).max()?;
        let names: Vec<&str> = paused.iter().map(|m| m.method.as_str()).collect();
        Some(format!(
            "paused until {} ({}, operating limit)",
            until.format("%H:%M:%S UTC"),
            names.join(", ")
        ))
    }

    /// Prometheus lines for the per-method budgets of one portal.
    pub fn render_metrics(&self, portal: &str, out: &mut String) {
        use std::fmt::Write as _;
        for m in &self.methods {
            let _ = writeln!(
                out,
                "leadscore_crm_operating_seconds{{portal=\"{portal}\",method=\"{}\"}} {}",
                m.method, m.used_secs
            );
            let _ = writeln!(
                out,
                "leadscore_crm_operating_paused{{portal=\"{portal}\",method=\"{}\"}} {}",
                m.method,
                u8::from(m.paused_until.is_some())
            );
        }
    }
}

/// One API method's use of a per-method budget (Bitrix24: operating seconds per
/// method in a 10-minute window), and whether the daemon holds it back.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct MethodBudget {
    pub method: String,
    pub used_secs: f64,
    pub limit_secs: f64,
    /// Held back until then (`None`: it runs now).
    pub paused_until: Option<DateTime<Utc>>,
}

/// The config lines an admin pastes after `leadscore setup`.
pub fn render_setup(portal: &crate::config::Portal, setup: &FieldSetup) -> String {
    let mut out = String::new();
    if setup.created.is_empty() {
        out.push_str("All fields already existed; nothing was created.\n");
    } else {
        out.push_str(&format!("Created: {}\n", setup.created.join(", ")));
    }
    for note in &setup.notes {
        out.push_str(&format!("Note: {note}\n"));
    }
    out.push_str(&format!(
        "\nPut this into the [[portal]] with id = \"{}\":\n",
        portal.id
    ));
    let mut block = |section: &str, s: &FieldSetup| {
        out.push_str(&format!(
            "\n[{section}]\nscore = \"{}\"\ntier = \"{}\"\nbreakdown = \"{}\"\n",
            s.score_field, s.tier_field, s.breakdown_field
        ));
        let pairs: Vec<String> = s
            .tier_values
            .iter()
            .map(|(k, v)| format!("{k} = \"{v}\""))
            .collect();
        out.push_str(&format!("tier_values = {{ {} }}\n", pairs.join(", ")));
    };
    if !setup.score_field.is_empty() {
        block("portal.fields", setup);
    }
    if let Some(deal) = &setup.deal {
        block("portal.fields.deal", deal);
    }
    out
}

/// `scheme://host[:port]` of an http(s) URL: the part of a CRM address that may appear
/// on a page (a webhook URL's path is a secret).
pub fn origin(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let host = rest.split(['/', '?', '#']).next()?;
    (!host.is_empty() && !host.contains('@')).then(|| &url[..url.len() - rest.len() + host.len()])
}

#[cfg(test)]
mod stamp_tests {
    use super::CrmStamp;
    use chrono::{TimeZone, Utc};

    fn stamp(sec: u32, by: Option<&str>) -> CrmStamp {
        CrmStamp {
            at: Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, sec).unwrap(),
            by: by.map(str::to_string),
        }
    }

    #[test]
    fn our_write_covers_only_what_is_no_newer_and_by_the_same_user() {
        let ours = stamp(10, Some("7"));
        assert!(ours.covers(&stamp(10, Some("7"))));
        assert!(ours.covers(&stamp(9, Some("3"))));
        assert!(!ours.covers(&stamp(11, Some("7"))));
        // Someone else in the same second: a change of theirs, not ours.
        assert!(!ours.covers(&stamp(10, Some("3"))));
        // Without users (amoCRM's PATCH answer), the time alone decides.
        assert!(stamp(10, None).covers(&stamp(10, Some("3"))));
        assert!(!stamp(10, None).covers(&stamp(11, None)));
    }
}

#[cfg(test)]
mod origin_tests {
    #[test]
    fn the_origin_drops_the_secret_path() {
        let hook = "https://acme.bitrix24.ru/rest/1/s3cr3t/";
        assert_eq!(super::origin(hook), Some("https://acme.bitrix24.ru"));
        assert_eq!(
            super::origin("http://127.0.0.1:8080"),
            Some("http://127.0.0.1:8080")
        );
        assert_eq!(super::origin("https://user:pw@host/"), None);
        assert_eq!(super::origin("ftp://host/"), None);
    }
}

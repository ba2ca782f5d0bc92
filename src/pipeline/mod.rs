//! The workers: take due leads from the store, fetch them in batches, score, write back
//! only what changed, fire the "call now" trigger, and retry or dead-letter failures.
//!
//! Every step is idempotent and recorded in sled before the next begins, so a crash at
//! any point resumes from the store without losing or doubling anything.

mod reload;
pub mod rescore;
pub mod scheduler;
pub mod trigger;

pub use reload::{server_restart_changes, spawn_sighup_reload, ReloadError, ReloadReport};

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;
use tokio::sync::{Mutex, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::Portal;
use crate::crm::{ActivityRead, Crm, CrmError, FetchRequest, Fetched, LeadId, ScoreWrite, Subject};
use crate::metrics::Metrics;
use crate::scoring::spec::Language;
use crate::scoring::Model;
use crate::store::{
    Cause, CauseSource, InputSnapshot, LedgerEntry, PendingEntry, Store, StoreError, Written,
};

use scheduler::Scheduler;

/// Most leads fetched and written per worker pass: one Bitrix24 batch, one amoCRM page.
pub const MAX_BATCH: usize = 50;

/// Everything a worker needs to process one portal's leads.
pub struct PortalRuntime {
    pub portal: Portal,
    pub crm: Arc<dyn Crm>,
}

/// Tunables of the pipeline, from `[server]`.
#[derive(Debug, Clone)]
pub struct PipelineSettings {
    pub coalesce: Duration,
    pub queue_limit: usize,
    pub retry_delays: Vec<Duration>,
    pub language: Language,
    /// A hot lead waiting longer than this for its fetch is logged at WARN.
    pub hot_wait_warn: Duration,
}

/// Why one lead could not be finished this pass.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Crm(#[from] CrmError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// When a portal's CRM last answered and last failed (unix ms; 0 = never), for /readyz.
#[derive(Debug, Default)]
pub struct PortalHealth {
    pub last_ok_ms: AtomicI64,
    pub last_err_ms: AtomicI64,
}

impl PortalHealth {
    fn ok(&self) {
        self.last_ok_ms
            .store(Utc::now().timestamp_millis(), Ordering::Relaxed);
    }
    fn err(&self) {
        self.last_err_ms
            .store(Utc::now().timestamp_millis(), Ordering::Relaxed);
    }
    /// Healthy unless the latest CRM call failed (a portal never called is healthy).
    pub fn healthy(&self) -> bool {
        self.last_err_ms.load(Ordering::Relaxed) <= self.last_ok_ms.load(Ordering::Relaxed)
    }
}

/// The shared pipeline: store, portals, model and the due-time index.
pub struct Pipeline {
    pub store: Arc<Store>,
    pub metrics: Arc<Metrics>,
    health: HashMap<String, PortalHealth>,
    /// The portals as started: identity, credentials and webhook checks (what the
    /// intake and sweeps need; a restart changes these).
    portals: HashMap<String, Arc<PortalRuntime>>,
    /// What the workers use, replaced by a config reload.
    live: RwLock<Arc<reload::Live>>,
    settings: PipelineSettings,
    scheduler: Mutex<Scheduler>,
    wake: Notify,
    /// Added to the wall clock (milliseconds): lets tests move the daemon's "now" days
    /// ahead to watch scores decay without waiting for them. Zero in production.
    clock_offset_ms: AtomicI64,
    /// The rescore job, as stored (`rescore::JOB_KEY`).
    rescore: Mutex<Option<rescore::Job>>,
    /// Rescore entries still waiting, and when that was counted (a scan of the queue).
    rescore_waiting: std::sync::Mutex<Option<(std::time::Instant, usize)>>,
}

/// Why a rescore could not start.
#[derive(Debug, thiserror::Error)]
pub enum RescoreError {
    #[error("a rescore is running already ({queued} of {total} leads queued)")]
    Busy { queued: usize, total: usize },
    #[error("no portal {0:?} in the config")]
    UnknownPortal(String),
    #[error(transparent)]
    Crm(#[from] CrmError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How one processed lead ended, for logs, tests and the demo table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeadOutcome {
    Written { score: i32, tier: String },
    Unchanged { score: i32 },
    Deleted,
}

impl Pipeline {
    /// Build the pipeline and load every waiting entry from the store into the index,
    /// so a restart resumes exactly where the last run stopped.
    pub fn new(
        store: Arc<Store>,
        portals: Vec<PortalRuntime>,
        model: Arc<Model>,
        settings: PipelineSettings,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Pipeline>, StoreError> {
        let portals: HashMap<String, Arc<PortalRuntime>> = portals
            .into_iter()
            .map(|p| (p.portal.id.clone(), Arc::new(p)))
            .collect();
        let job = rescore::load(&store)?;
        let mut sched = Scheduler::default();
        for e in store.pending_all()? {
            if let (Subject::Lead(id), Some(rt)) = (&e.subject, portals.get(&e.portal)) {
                sched.set_hot(&e.key(), near_threshold(&store, &rt.portal, id));
            }
            sched.schedule(e.key(), e.due_at);
        }
        Ok(Arc::new(Pipeline {
            store,
            metrics,
            health: portals
                .keys()
                .map(|id| (id.clone(), PortalHealth::default()))
                .collect(),
            live: RwLock::new(Arc::new(reload::Live {
                model,
                portals: portals.clone(),
            })),
            portals,
            settings,
            scheduler: Mutex::new(sched),
            wake: Notify::new(),
            clock_offset_ms: AtomicI64::new(0),
            rescore: Mutex::new(job),
            rescore_waiting: std::sync::Mutex::new(None),
        }))
    }

    /// The portal runtime by id.
    pub fn portal(&self, id: &str) -> Option<&Arc<PortalRuntime>> {
        self.portals.get(id)
    }

    /// All portals.
    pub fn portals(&self) -> impl Iterator<Item = &Arc<PortalRuntime>> {
        self.portals.values()
    }

    /// CRM health of a portal.
    pub fn health(&self, portal: &str) -> Option<&PortalHealth> {
        self.health.get(portal)
    }

    fn crm_ok(&self, portal: &str) {
        if let Some(h) = self.health.get(portal) {
            h.ok();
        }
    }

    fn crm_err(&self, portal: &str) {
        if let Some(h) = self.health.get(portal) {
            h.err();
        }
    }

    /// The pipeline's "now": the wall clock, plus any offset a test has set.
    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + chrono::Duration::milliseconds(self.clock_offset_ms.load(Ordering::Relaxed))
    }

    /// Move the pipeline's clock ahead (tests: decay without waiting days).
    pub fn advance_clock(&self, by: Duration) {
        self.clock_offset_ms
            .fetch_add(by.as_millis() as i64, Ordering::Relaxed);
        self.wake.notify_waiters();
    }

    /// Settings in force.
    pub fn settings(&self) -> &PipelineSettings {
        &self.settings
    }

    /// Durably record events and schedule them. The caller flushes (once per request)
    /// before acknowledging.
    pub async fn enqueue(
        &self,
        portal: &str,
        subjects: &[Subject],
        cause: Cause,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut due = Vec::with_capacity(subjects.len());
        let rt = self.live().portals.get(portal).cloned();
        for s in subjects {
            let out = self.store.enqueue(
                portal,
                s,
                cause.clone(),
                now,
                self.settings.coalesce,
                self.settings.queue_limit,
            )?;
            let hot = match (s, &rt) {
                (Subject::Lead(id), Some(rt)) => near_threshold(&self.store, &rt.portal, id),
                _ => false,
            };
            due.push((crate::store::pending_key(portal, s), out.due_at, hot));
        }
        let mut sched = self.scheduler.lock().await;
        for (k, d, hot) in due {
            if hot {
                sched.set_hot(&k, true);
            }
            sched.schedule(k, d);
        }
        drop(sched);
        self.wake.notify_waiters();
        Ok(())
    }

    /// No work scheduled and none in flight (used by the demo and tests to wait).
    pub async fn is_idle(&self) -> bool {
        self.scheduler.lock().await.is_idle()
    }

    /// Run `workers` worker loops until `shutdown`; in-flight batches finish first.
    pub async fn run(self: Arc<Self>, workers: usize, shutdown: CancellationToken) {
        let mut set = tokio::task::JoinSet::new();
        for n in 0..workers.max(1) {
            let me = self.clone();
            let stop = shutdown.clone();
            set.spawn(async move { me.worker_loop(n, stop).await });
        }
        let watchdog = {
            let me = self.clone();
            let stop = shutdown.clone();
            tokio::spawn(async move { me.hot_wait_watchdog(stop).await })
        };
        let decay = {
            let me = self.clone();
            let stop = shutdown.clone();
            tokio::spawn(async move { me.decay_loop(stop).await })
        };
        let rescoring = {
            let me = self.clone();
            let stop = shutdown.clone();
            tokio::spawn(async move { me.rescore_loop(stop).await })
        };
        while set.join_next().await.is_some() {}
        watchdog.abort();
        decay.abort();
        rescoring.abort();
    }

    /// Start a rescore job (see [`rescore`]); a dry run is computed at once from the
    /// stored inputs and returned finished.
    pub async fn start_rescore(
        &self,
        request: rescore::RescoreRequest,
    ) -> Result<rescore::Progress, RescoreError> {
        let mut current = self.rescore.lock().await;
        if let Some(j) = current.as_ref().filter(|j| j.finished_at.is_none()) {
            return Err(RescoreError::Busy {
                queued: j.queued(),
                total: j.total(),
            });
        }
        let live = self.live();
        let mut portals: Vec<Arc<PortalRuntime>> = live
            .portals
            .values()
            .filter(|rt| request.portal.as_ref().is_none_or(|p| *p == rt.portal.id))
            .cloned()
            .collect();
        if portals.is_empty() {
            return Err(RescoreError::UnknownPortal(
                request.portal.clone().unwrap_or_default(),
            ));
        }
        portals.sort_by(|a, b| a.portal.id.cmp(&b.portal.id));
        let now = self.now();
        let mut plans = Vec::new();
        for rt in &portals {
            let mut leads = match &request.target {
                rescore::Target::Lead { id } => vec![id.clone()],
                rescore::Target::Stored => rescore::known_leads(&self.store, &rt.portal.id)?,
                rescore::Target::Since { since } => {
                    let mut ids = rt.crm.changed_since(*since).await?;
                    ids.extend(rescore::known_leads(&self.store, &rt.portal.id)?);
                    ids
                }
                rescore::Target::All => {
                    let epoch = DateTime::from_timestamp(0, 0).expect("epoch");
                    let mut ids = rt.crm.changed_since(epoch).await?;
                    ids.extend(rescore::known_leads(&self.store, &rt.portal.id)?);
                    ids
                }
            };
            leads.sort_by(|a, b| a.len().cmp(&b.len()).then_with(|| a.cmp(b)));
            leads.dedup();
            plans.push(rescore::PortalPlan {
                portal: rt.portal.id.clone(),
                leads,
                next: 0,
            });
        }
        let mut job = rescore::Job {
            id: now.timestamp_millis().to_string(),
            request: request.clone(),
            plans,
            started_at: now,
            finished_at: None,
            tasks_by_rep: Default::default(),
            report: None,
        };
        if request.dry_run {
            let mut report = rescore::DryRunReport::default();
            for (rt, plan) in portals.iter().zip(&job.plans) {
                rescore::dry_run(
                    &self.store,
                    &rt.portal,
                    &live.model,
                    &plan.leads,
                    now,
                    &mut report,
                )?;
            }
            job.report = Some(report);
            job.finished_at = Some(now);
        } else {
            rescore::save(&self.store, &job)?;
            self.store.flush().await?;
            info!(job = %job.id, leads = job.total(), "rescore started");
        }
        *current = Some(job);
        drop(current);
        self.wake.notify_waiters();
        Ok(self.rescore_progress().await)
    }

    /// The current (or last) rescore job and how far it got.
    pub async fn rescore_progress(&self) -> rescore::Progress {
        let job = self.rescore.lock().await.clone();
        let waiting = match &job {
            Some(j) if j.finished_at.is_none() => self.rescore_waiting(j),
            _ => 0,
        };
        let (requests, limit_errors) = self
            .portals()
            .filter_map(|rt| rt.crm.pacing())
            .fold((0, 0), |(r, l), p| (r + p.requests, l + p.limit_errors));
        rescore::Progress {
            done: job.as_ref().map_or(0, |j| {
                if j.finished_at.is_some() {
                    j.total()
                } else {
                    j.queued().saturating_sub(waiting)
                }
            }),
            running: job.as_ref().is_some_and(|j| j.finished_at.is_none()),
            job,
            requests,
            limit_errors,
        }
    }

    /// Entries of the running job still in the queue (a scan, at most every 2 s).
    fn rescore_waiting(&self, job: &rescore::Job) -> usize {
        let mut cached = self
            .rescore_waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some((at, n)) = *cached {
            if at.elapsed() < Duration::from_secs(2) {
                return n;
            }
        }
        let detail = job.cause_detail();
        let n = self
            .store
            .pending_all()
            .map(|all| {
                all.iter()
                    .filter(|e| e.causes.iter().any(|c| c.detail == detail))
                    .count()
            })
            .unwrap_or(0);
        *cached = Some((std::time::Instant::now(), n));
        n
    }

    /// Feed the running rescore job into the queue a chunk at a time, while the queue
    /// has room (webhooks first), and mark it finished when its last entry is done.
    async fn rescore_loop(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let busy = self.step_rescore().await;
            let wait = if busy {
                Duration::from_millis(200)
            } else {
                Duration::from_secs(2)
            };
            let notified = self.wake.notified();
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
                _ = notified => {}
            }
        }
    }

    /// One step of the running job; `true` while it is running.
    async fn step_rescore(&self) -> bool {
        let mut guard = self.rescore.lock().await;
        let Some(job) = guard.as_mut().filter(|j| j.finished_at.is_none()) else {
            return false;
        };
        let now = self.now();
        if job.all_queued() {
            let job_snapshot = job.clone();
            drop(guard);
            if self.rescore_waiting(&job_snapshot) > 0 {
                return true;
            }
            let mut guard = self.rescore.lock().await;
            if let Some(job) = guard.as_mut() {
                job.finished_at = Some(now);
                if let Err(e) = rescore::save(&self.store, job) {
                    warn!(error = %e, "cannot record the end of the rescore");
                }
                info!(job = %job.id, leads = job.total(), "rescore finished");
            }
            return false;
        }
        // Webhook work first: feed only while the queue is short.
        if self.store.pending_len() >= 2 * MAX_BATCH * 4 {
            return true;
        }
        let cause = Cause {
            source: CauseSource::Rescore,
            detail: job.cause_detail(),
            at: now,
        };
        let Some(plan) = job.plans.iter_mut().find(|p| p.next < p.leads.len()) else {
            return true;
        };
        let end = (plan.next + rescore::CHUNK).min(plan.leads.len());
        let subjects: Vec<Subject> = plan.leads[plan.next..end]
            .iter()
            .cloned()
            .map(Subject::Lead)
            .collect();
        let portal = plan.portal.clone();
        plan.next = end;
        if let Err(e) = self.enqueue(&portal, &subjects, cause, now).await {
            warn!(portal, error = %e, "cannot queue leads for the rescore; will try again");
            plan.next -= subjects.len();
            return true;
        }
        // What was counted before this chunk no longer holds.
        *self
            .rescore_waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = None;
        if let Err(e) = rescore::save(&self.store, job) {
            warn!(error = %e, "cannot keep the rescore cursor");
        }
        if let Err(e) = self.store.flush().await {
            warn!(error = %e, "cannot flush the rescore cursor");
        }
        true
    }

    /// Whether the trigger may create a task for this entry: a bulk rescore creates
    /// tasks only as its policy allows.
    async fn tasks_allowed(&self, e: &PendingEntry, rep: Option<&str>) -> bool {
        if !e.causes.iter().all(|c| c.source == CauseSource::Rescore) {
            return true;
        }
        let guard = self.rescore.lock().await;
        guard
            .as_ref()
            .filter(|j| e.causes.iter().any(|c| c.detail == j.cause_detail()))
            .is_some_and(|j| j.task_allowed(rep))
    }

    /// Count a task a rescore created against its rep's cap.
    async fn count_rescore_task(&self, e: &PendingEntry, rep: Option<&str>) {
        if !e.causes.iter().all(|c| c.source == CauseSource::Rescore) {
            return;
        }
        let mut guard = self.rescore.lock().await;
        if let Some(j) = guard.as_mut() {
            *j.tasks_by_rep
                .entry(rep.unwrap_or("").to_string())
                .or_default() += 1;
            if let Err(err) = rescore::save(&self.store, j) {
                warn!(error = %err, "cannot keep the rescore task count");
            }
        }
    }

    /// Re-score leads whose score changes with time alone, when it does: due decay
    /// timers become queue entries (scored from the stored inputs, no CRM read; a write
    /// only if the result changed). Overdue timers after a restart run at once. The
    /// queue is filled at most half way, so webhooks always find room.
    async fn decay_loop(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let now = self.now();
            let room = (self.settings.queue_limit / 2).saturating_sub(self.store.pending_len());
            let due = if room == 0 {
                Vec::new()
            } else {
                self.store
                    .due_timers(now, room.min(1000))
                    .unwrap_or_else(|e| {
                        warn!(error = %e, "cannot read decay timers");
                        Vec::new()
                    })
            };
            if !due.is_empty() && self.enqueue_decay(&due, now).await {
                continue;
            }
            let wait = match self.store.next_timer() {
                Ok(Some(at)) => (at - now).to_std().unwrap_or_default(),
                _ => Duration::from_secs(60),
            }
            .clamp(Duration::from_secs(1), Duration::from_secs(60));
            let notified = self.wake.notified();
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
                _ = notified => {}
            }
        }
    }

    /// Queue the leads of fired timers durably, then clear the timers (a crash in
    /// between re-fires them, which merges into the same entries). `false` when
    /// nothing could be queued.
    async fn enqueue_decay(
        &self,
        due: &[(String, LeadId, DateTime<Utc>)],
        now: DateTime<Utc>,
    ) -> bool {
        let cause = Cause {
            source: CauseSource::Decay,
            detail: "score changes with time".into(),
            at: now,
        };
        let mut by_portal: BTreeMap<&str, Vec<Subject>> = BTreeMap::new();
        for (portal, lead, _) in due {
            by_portal
                .entry(portal.as_str())
                .or_default()
                .push(Subject::Lead(lead.clone()));
        }
        let mut queued = false;
        for (portal, subjects) in by_portal {
            if !self.live().portals.contains_key(portal) {
                // A portal no longer configured: its timers return with its leads.
                for (p, lead, at) in due.iter().filter(|(p, _, _)| p == portal) {
                    if let Err(e) = self.store.clear_timer(p, lead, *at) {
                        warn!(error = %e, "cannot clear a decay timer");
                    }
                }
                queued = true;
                continue;
            }
            match self.enqueue(portal, &subjects, cause.clone(), now).await {
                Ok(()) => queued = true,
                Err(e) => warn!(portal, error = %e, "cannot queue decayed leads"),
            }
        }
        if !queued {
            return false;
        }
        if let Err(e) = self.store.flush().await {
            warn!(error = %e, "cannot flush decayed leads");
            return false;
        }
        for (portal, lead, at) in due {
            if let Err(e) = self.store.clear_timer(portal, lead, *at) {
                warn!(error = %e, "cannot clear a decay timer");
            }
        }
        debug!(leads = due.len(), "decay timers fired");
        true
    }

    /// Log at WARN, once per lead and wait, every hot lead that has waited longer than
    /// `hot_wait_warn` for its fetch, with what holds its portal back, so a slow or
    /// paused CRM never delays a call-now task silently.
    async fn hot_wait_watchdog(self: Arc<Self>, shutdown: CancellationToken) {
        let bound = self.settings.hot_wait_warn;
        let period = (bound / 4).clamp(Duration::from_millis(200), Duration::from_secs(10));
        let mut warned: HashMap<Vec<u8>, DateTime<Utc>> = HashMap::new();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(period) => {}
            }
            let keys = self.scheduler.lock().await.hot_keys();
            let now = self.now();
            warned.retain(|k, _| keys.contains(k));
            for k in keys {
                let Ok(Some(e)) = self.store.pending_get(&k) else {
                    continue;
                };
                let waited = (now - e.first_at).to_std().unwrap_or_default();
                if waited < bound || warned.get(&k) == Some(&e.first_at) {
                    continue;
                }
                warned.insert(k, e.first_at);
                let held_by = self
                    .portal(&e.portal)
                    .and_then(|rt| rt.crm.pacing())
                    .map(|p| {
                        p.methods
                            .iter()
                            .filter(|m| m.paused_until.is_some())
                            .map(|m| m.method.clone())
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .unwrap_or_default();
                let lead = match &e.subject {
                    Subject::Lead(id) | Subject::Activity(id) => id.clone(),
                };
                warn!(
                    portal = %e.portal,
                    lead = %lead,
                    waited_secs = waited.as_secs(),
                    paused_methods = %held_by,
                    attempts = e.attempts,
                    "hot lead waiting for its fetch longer than server.hot_wait_warn_secs"
                );
                Metrics::inc(&self.metrics.failures, &e.portal, "hot_wait");
            }
        }
    }

    async fn worker_loop(self: Arc<Self>, n: usize, shutdown: CancellationToken) {
        debug!(worker = n, "worker started");
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            let now = self.now();
            let (keys, next) = {
                let mut s = self.scheduler.lock().await;
                let keys = s.take_due(now, MAX_BATCH);
                (keys, s.next_due())
            };
            if keys.is_empty() {
                // Something due but not handed out waits for a running batch to end
                // (which wakes us); otherwise sleep until the next due time.
                let wait = match next {
                    Some(d) if d <= now => Duration::from_millis(500),
                    Some(d) => (d - now).to_std().unwrap_or(Duration::ZERO),
                    None => Duration::from_secs(3600),
                }
                .min(Duration::from_secs(3600))
                .max(Duration::from_millis(5));
                let notified = self.wake.notified();
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = notified => {}
                    _ = tokio::time::sleep(wait) => {}
                }
                continue;
            }
            self.process_keys(&keys).await;
            let mut s = self.scheduler.lock().await;
            for k in &keys {
                s.done(k);
            }
            // Whatever arrived for these keys while they were in flight is still in the
            // store: schedule it now that the keys are free.
            for k in &keys {
                match self.store.pending_get(k) {
                    Ok(Some(e)) => s.schedule(k.clone(), e.due_at),
                    _ => s.set_hot(k, false),
                }
            }
            drop(s);
            self.wake.notify_waiters();
        }
        debug!(worker = n, "worker stopped");
    }

    /// Process one batch of keys of one portal. Never panics on CRM or store errors:
    /// each entry ends completed, rescheduled or dead-lettered.
    pub async fn process_keys(&self, keys: &[Vec<u8>]) {
        let mut entries = Vec::new();
        for k in keys {
            match self.store.pending_get(k) {
                Ok(Some(e)) => entries.push(e),
                Ok(None) => {}
                Err(e) => warn!(error = %e, "cannot read a pending entry"),
            }
        }
        let Some(first) = entries.first() else { return };
        // One snapshot for the whole batch: a reload meanwhile applies to the next one.
        let live = self.live();
        let Some(rt) = live.portals.get(&first.portal).cloned() else {
            // The portal was removed from the config: keep the entries for when it returns.
            warn!(portal = %first.portal, "events for a portal that is not configured");
            return;
        };
        let (activities, leads): (Vec<_>, Vec<_>) = entries
            .into_iter()
            .partition(|e| matches!(e.subject, Subject::Activity(_)));
        if !activities.is_empty() {
            self.resolve_activities(&rt, activities).await;
        }
        if !leads.is_empty() {
            self.process_leads(&rt, &live.model, leads).await;
        }
        if let Err(e) = self.store.flush().await {
            warn!(error = %e, "flush after batch failed");
        }
        crate::crashpoint::hit("after_batch");
    }

    async fn resolve_activities(&self, rt: &PortalRuntime, entries: Vec<PendingEntry>) {
        let ids: Vec<String> = entries
            .iter()
            .filter_map(|e| match &e.subject {
                Subject::Activity(id) => Some(id.clone()),
                Subject::Lead(_) => None,
            })
            .collect();
        let now = self.now();
        match rt.crm.resolve_activities(&ids).await {
            Ok(map) => {
                for e in entries {
                    let Subject::Activity(id) = &e.subject else {
                        continue;
                    };
                    match map.get(id).cloned().flatten() {
                        Some(lead) => match self.store.retarget(&e, &lead, now) {
                            Ok(Some(le)) => {
                                let hot = near_threshold(&self.store, &rt.portal, &lead);
                                let mut sched = self.scheduler.lock().await;
                                if hot {
                                    sched.set_hot(&le.key(), true);
                                }
                                sched.schedule(le.key(), le.due_at);
                            }
                            Ok(None) => {}
                            Err(err) => self.fail(rt, &e, PipelineError::Store(err)).await,
                        },
                        None => {
                            debug!(portal = %rt.portal.id, activity = %id, "activity not bound to a lead; ignored");
                            if let Err(err) = self.store.complete(&e) {
                                warn!(error = %err, "cannot complete entry");
                            }
                        }
                    }
                }
            }
            Err(err) => {
                let msg = err.to_string();
                let retry_after = err.retry_after();
                for e in entries {
                    self.fail_with(rt, &e, err.is_retryable(), &msg, retry_after)
                        .await;
                }
            }
        }
    }

    async fn process_leads(&self, rt: &PortalRuntime, model: &Model, entries: Vec<PendingEntry>) {
        let now = self.now();
        let portal = &rt.portal;
        let mut requests = Vec::with_capacity(entries.len());
        let mut snapshots: HashMap<LeadId, Option<InputSnapshot>> = HashMap::new();
        let mut ready = Vec::with_capacity(entries.len());
        for e in entries {
            let Subject::Lead(id) = &e.subject else {
                continue;
            };
            match self.store.snapshot(&portal.id, id) {
                Ok(snap) => {
                    // A change with time alone is scored from the stored inputs: no read.
                    if !(snap.is_some() && from_snapshot_only(&e)) {
                        requests.push(FetchRequest {
                            id: id.clone(),
                            activities: activity_read(&e, snap.as_ref(), now),
                        });
                    }
                    snapshots.insert(id.clone(), snap);
                    ready.push(e);
                }
                Err(err) => self.fail(rt, &e, err.into()).await,
            }
        }
        let entries = ready;
        let fetched = if requests.is_empty() {
            BTreeMap::new()
        } else {
            match rt.crm.fetch_incremental(&requests).await {
                Ok(f) => {
                    self.crm_ok(&rt.portal.id);
                    f
                }
                Err(err) => {
                    let msg = err.to_string();
                    for e in &entries {
                        self.fail_with(rt, e, err.is_retryable(), &msg, err.retry_after())
                            .await;
                    }
                    return;
                }
            }
        };
        let fetched_ids: HashSet<&str> = requests.iter().map(|r| r.id.as_str()).collect();
        let now = self.now();
        let mut writes = Vec::new();
        let mut scored = Vec::new();
        for e in entries {
            let Subject::Lead(id) = &e.subject else {
                continue;
            };
            let previous = snapshots.remove(id).flatten();
            let (snap, current_score) = if fetched_ids.contains(id.as_str()) {
                let Some(f) = fetched.get(id) else {
                    info!(portal = %portal.id, lead = %id, "lead no longer exists; dropped");
                    Metrics::inc(&self.metrics.leads, &portal.id, "deleted");
                    if let Err(err) = self.store.remove_snapshot(&portal.id, id) {
                        warn!(error = %err, "cannot forget a deleted lead's inputs");
                    }
                    self.finish(&e).await;
                    continue;
                };
                let snap = merge_snapshot(previous, f, now);
                if let Err(err) = self.store.put_snapshot(&portal.id, id, &snap) {
                    self.fail(rt, &e, err.into()).await;
                    continue;
                }
                (snap, f.current_score)
            } else {
                let Some(snap) = previous else { continue };
                (snap, None)
            };
            if let Err(err) = self.store.set_timer(
                &portal.id,
                id,
                model.next_change(&snap.lead, &snap.activities, now),
            ) {
                self.fail(rt, &e, err.into()).await;
                continue;
            }
            let f = Fetched {
                lead: snap.lead,
                activities: snap.activities,
                activities_complete: true,
                activity_cursor: snap.activity_cursor,
                current_score,
            };
            let score = model.score(&f.lead, &f.activities, now);
            Metrics::inc(&self.metrics.scores, &portal.id, &score.tier);
            self.metrics
                .lead_latency
                .observe((now - e.first_at).num_milliseconds().max(0) as f64 / 1000.0);
            let explanation = score.explain_dated(model.language(), model.utc_offset(), now);
            let last = match self.store.written(&portal.id, id) {
                Ok(w) => w,
                Err(err) => {
                    self.fail(rt, &e, err.into()).await;
                    continue;
                }
            };
            let same = last.as_ref().is_some_and(|w| {
                w.score == score.total && w.tier == score.tier && w.breakdown == explanation
            }) && f.current_score.is_none_or(|c| c == score.total);
            if !same {
                writes.push(ScoreWrite {
                    lead_id: id.clone(),
                    score: score.total,
                    tier: score.tier.clone(),
                    breakdown: explanation.clone(),
                    comment: portal.fields.comment,
                });
            }
            scored.push((e, f, score, explanation, !same));
        }
        let results = if writes.is_empty() {
            Default::default()
        } else {
            match rt.crm.write_scores(&writes).await {
                Ok(r) => {
                    crate::crashpoint::hit("after_crm_write");
                    r
                }
                Err(err) => {
                    let msg = err.to_string();
                    for (e, _, _, _, needs_write) in &scored {
                        if *needs_write {
                            self.fail_with(rt, e, err.is_retryable(), &msg, err.retry_after())
                                .await;
                        }
                    }
                    scored.retain(|s| !s.4);
                    Default::default()
                }
            }
        };
        for (e, f, score, explanation, needs_write) in scored {
            let lead_id = f.lead.id.clone();
            if needs_write {
                match results.get(&lead_id) {
                    Some(Ok(())) => {
                        let written = Written {
                            score: score.total,
                            tier: score.tier.clone(),
                            breakdown: explanation.clone(),
                            at: now,
                        };
                        let ledger = LedgerEntry {
                            at: now,
                            score: score.total,
                            tier: score.tier.clone(),
                            explanation: explanation.clone(),
                            detail: score.clone(),
                            causes: e.causes.clone(),
                        };
                        if let Err(err) = self
                            .store
                            .record_write(&portal.id, &lead_id, &written, &ledger)
                        {
                            self.fail(rt, &e, err.into()).await;
                            continue;
                        }
                        info!(portal = %portal.id, lead = %lead_id, score = score.total, tier = %score.tier, "score written");
                        Metrics::inc(&self.metrics.leads, &portal.id, "written");
                    }
                    Some(Err(err)) => {
                        let msg = err.to_string();
                        self.fail_with(rt, &e, err.is_retryable(), &msg, err.retry_after())
                            .await;
                        continue;
                    }
                    None => {
                        self.fail_with(rt, &e, true, "write result missing", None)
                            .await;
                        continue;
                    }
                }
            } else {
                debug!(portal = %portal.id, lead = %lead_id, score = score.total, "unchanged; nothing written");
                Metrics::inc(&self.metrics.leads, &portal.id, "unchanged");
            }
            let rep = f
                .lead
                .responsible_id
                .clone()
                .or_else(|| portal.task.fallback_responsible_id.clone());
            let allow_new = self.tasks_allowed(&e, rep.as_deref()).await;
            match trigger::apply_with(
                &self.store,
                rt,
                &f.lead,
                &score,
                &explanation,
                now,
                allow_new,
            )
            .await
            {
                Ok(outcome) => {
                    match outcome {
                        trigger::TriggerOutcome::Created(_) => {
                            self.count_rescore_task(&e, rep.as_deref()).await;
                            Metrics::inc(&self.metrics.tasks, &portal.id, "created")
                        }
                        trigger::TriggerOutcome::Recovered(_) => {
                            Metrics::inc(&self.metrics.tasks, &portal.id, "recovered")
                        }
                        trigger::TriggerOutcome::Nothing => {}
                    }
                    self.finish(&e).await
                }
                Err(err) => self.fail(rt, &e, err).await,
            }
        }
    }

    async fn finish(&self, e: &PendingEntry) {
        match self.store.complete(e) {
            Ok(Some(newer)) => {
                debug!(key = ?String::from_utf8_lossy(&newer.key()), "more events arrived meanwhile");
            }
            Ok(None) => {}
            Err(err) => warn!(error = %err, "cannot complete entry"),
        }
    }

    async fn fail(&self, rt: &PortalRuntime, e: &PendingEntry, err: PipelineError) {
        let (retryable, retry_after) = match &err {
            PipelineError::Crm(c) => (
                c.is_retryable() || matches!(c, CrmError::Auth(_) | CrmError::Blocked(_)),
                c.retry_after(),
            ),
            PipelineError::Store(_) => (true, None),
        };
        self.fail_with(rt, e, retryable, &err.to_string(), retry_after)
            .await;
    }

    /// Retry later with backoff and jitter, or dead-letter when the schedule is spent
    /// or the error cannot succeed by retrying.
    async fn fail_with(
        &self,
        rt: &PortalRuntime,
        e: &PendingEntry,
        retryable: bool,
        msg: &str,
        retry_after: Option<Duration>,
    ) {
        self.crm_err(&rt.portal.id);
        let now = self.now();
        let delays = &self.settings.retry_delays;
        let attempt = e.attempts as usize;
        if !retryable || attempt >= delays.len() {
            Metrics::inc(&self.metrics.failures, &rt.portal.id, "dead_letter");
            match self.store.dead_letter(e, msg, now) {
                Ok(id) => {
                    warn!(portal = %rt.portal.id, subject = ?e.subject, dead_letter = id, error = %msg, "gave up; moved to the dead-letter queue")
                }
                Err(err) => warn!(error = %err, "cannot dead-letter entry"),
            }
            return;
        }
        let base = delays[attempt].max(retry_after.unwrap_or(Duration::ZERO));
        let jitter = rand::rng().random_range(0.0..=0.25) * base.as_secs_f64();
        let delay = base + Duration::from_secs_f64(jitter);
        let due = now + chrono::Duration::from_std(delay).unwrap_or_default();
        Metrics::inc(&self.metrics.failures, &rt.portal.id, "retry");
        match self.store.retry_later(e, msg, due) {
            Ok(_) => {
                warn!(portal = %rt.portal.id, subject = ?e.subject, attempt = attempt + 1, retry_in_ms = delay.as_millis() as u64, error = %msg, "will retry");
            }
            Err(err) => warn!(error = %err, "cannot record retry"),
        }
    }
}

/// Scores this close under the threshold count as "near" it (fetched first).
const NEAR_THRESHOLD: i32 = 15;

/// Was the lead's last written score near or above the portal's call-now threshold?
fn near_threshold(store: &Store, portal: &Portal, lead: &str) -> bool {
    store
        .written(&portal.id, lead)
        .ok()
        .flatten()
        .is_some_and(|w| w.score >= portal.threshold - NEAR_THRESHOLD)
}

/// Everything merged into the entry is a change with time alone (decay) or of the
/// model (a rescore), which the stored inputs answer: nothing in the CRM needs reading.
fn from_snapshot_only(e: &PendingEntry) -> bool {
    !e.activities_changed
        && !e.causes.is_empty()
        && e.causes
            .iter()
            .all(|c| matches!(c.source, CauseSource::Decay | CauseSource::Rescore))
}

/// How long a snapshot's activities are trusted for events that do not touch them: a
/// lead event after this re-reads what changed, so an activity whose webhook was lost
/// (Bitrix24 never redelivers) is still picked up.
const ACTIVITY_TRUST: chrono::Duration = chrono::Duration::minutes(15);

/// The whole activity history is read again after this (an incremental read cannot see
/// a deleted activity).
const FULL_REFRESH: chrono::Duration = chrono::Duration::hours(24);

/// How much of a lead's activity to read, given its snapshot and what the events were
/// about: only a change in activities (or a stale snapshot) costs an activity read, and
/// the echo of our own write costs none.
pub fn activity_read(
    e: &PendingEntry,
    snap: Option<&InputSnapshot>,
    now: DateTime<Utc>,
) -> ActivityRead {
    let Some(s) = snap else {
        return ActivityRead::Full;
    };
    let replay = e.causes.iter().any(|c| c.source == CauseSource::Replay);
    if replay || now - s.full_read_at > FULL_REFRESH {
        return ActivityRead::Full;
    }
    if !e.activities_changed && now - s.activities_read_at <= ACTIVITY_TRUST {
        return ActivityRead::Skip;
    }
    match &s.activity_cursor {
        Some(c) => ActivityRead::Since(c.clone()),
        None => ActivityRead::Full,
    }
}

/// The inputs to score: what was fetched, completed by the snapshot where the fetch
/// read only the lead's fields or only what changed in its activities.
pub fn merge_snapshot(
    previous: Option<InputSnapshot>,
    f: &Fetched,
    now: DateTime<Utc>,
) -> InputSnapshot {
    match previous {
        Some(mut s) if !f.activities_complete => {
            s.lead = f.lead.clone();
            if let Some(cursor) = &f.activity_cursor {
                s.activity_cursor = Some(cursor.clone());
                s.activities_read_at = now;
            }
            s.merge_activities(f.activities.clone());
            s
        }
        _ => {
            let mut s = InputSnapshot {
                lead: f.lead.clone(),
                activities: f.activities.clone(),
                activity_cursor: f.activity_cursor.clone(),
                activities_read_at: now,
                full_read_at: now,
            };
            s.bound();
            s
        }
    }
}

/// A webhook cause.
pub fn webhook_cause(detail: impl Into<String>, at: DateTime<Utc>) -> Cause {
    Cause {
        source: CauseSource::Webhook,
        detail: detail.into(),
        at,
    }
}

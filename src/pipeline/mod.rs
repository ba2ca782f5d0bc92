//! The workers: take due leads from the store, fetch them in batches, score, write back
//! only what changed, fire the "call now" trigger, and retry or dead-letter failures.
//!
//! Every step is idempotent and recorded in sled before the next begins, so a crash at
//! any point resumes from the store without losing or doubling anything.

mod calibration;
pub mod capacity;
mod company;
mod decay;
mod outcomes;
mod reload;
mod reminders;
pub mod rescore;
mod rescore_job;
pub mod retry;
mod rule_tasks;
pub mod scheduler;
mod stages;
pub mod trigger;
mod watchdog;

pub use stages::{activity_read, merge_snapshot};
use watchdog::near_threshold;

pub use reload::{server_restart_changes, spawn_sighup_reload, ReloadError, ReloadReport};

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;
use tokio::sync::{Mutex, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::config::Portal;
use crate::crm::{
    ActivityRead, Crm, CrmError, FetchBatch, FetchOutcome, FetchRequest, Fetched, LeadId,
    ScoreWrite, Subject,
};
use crate::metrics::Metrics;
use crate::scoring::spec::Language;
use crate::scoring::Model;
use crate::store::{
    Cause, CauseSource, InputSnapshot, LedgerEntry, PendingEntry, Queueing, Store, StoreError,
    Written,
};

use scheduler::Scheduler;

/// Leads fed per step of a rescore, and the queue length (in those) up to which it
/// feeds: one Bitrix24 batch.
pub const MAX_BATCH: usize = 50;

/// Most leads one worker turn takes for a portal, whatever its CRM asks for: one amoCRM
/// lead page (250 ids; its writes go in arrays of 50 inside the turn). Bitrix24 asks
/// for five write batches' worth (245: read in one `batch`, written in five).
pub const MAX_TURN: usize = 250;

/// The longest a due part batch waits for company (the coalescing window, up to this):
/// a portal set to coalesce for minutes still sends a part batch within seconds.
const MAX_FILL_HOLD: Duration = Duration::from_secs(2);

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
        shadow: Option<Arc<Model>>,
        settings: PipelineSettings,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Pipeline>, StoreError> {
        let portals: HashMap<String, Arc<PortalRuntime>> = portals
            .into_iter()
            .map(|p| (p.portal.id.clone(), Arc::new(p)))
            .collect();
        let job = rescore::load(&store)?;
        let mut sched = Scheduler::with_fill_hold(settings.coalesce.min(MAX_FILL_HOLD));
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
                shadow,
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

    /// Durably record events and schedule them: on return they are in sled and flushed,
    /// so the intake may acknowledge and the sweep, decay timers and rescore may move
    /// their cursors. Concurrent callers share sled's flush of its log.
    pub async fn enqueue(
        &self,
        portal: &str,
        subjects: &[Subject],
        cause: Cause,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.enqueue_events(portal, subjects, &[], cause, now).await
    }

    /// [`Pipeline::enqueue`] for a webhook that says which of its leads' activities
    /// changed (`activities`, a subset of `subjects`): those are read again, the rest
    /// may reuse activities read in the last minutes.
    pub async fn enqueue_events(
        &self,
        portal: &str,
        subjects: &[Subject],
        activities: &[Subject],
        cause: Cause,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut due = Vec::with_capacity(subjects.len());
        let rt = self.live().portals.get(portal).cloned();
        // The window gathers a webhook burst; a timer or a rescore sends each lead once,
        // and waiting would leave the pacer idle (2 s at the start of every rescore).
        let coalesce = match cause.source {
            CauseSource::Decay | CauseSource::Rescore => Duration::ZERO,
            _ => self.settings.coalesce,
        };
        for s in subjects {
            let out = self.store.enqueue(
                portal,
                s,
                cause.clone(),
                now,
                Queueing {
                    coalesce,
                    limit: self.settings.queue_limit,
                },
                activities.contains(s),
            )?;
            let hot = match (s, &rt) {
                (Subject::Lead(id), Some(rt)) => near_threshold(&self.store, &rt.portal, id),
                _ => false,
            };
            due.push((crate::store::pending_key(portal, s), out.due_at, hot));
        }
        self.store.flush().await?;
        let now = now.max(self.now());
        let mut sched = self.scheduler.lock().await;
        // The workers sleep until the earliest due time: wake them only when this moves
        // it earlier or something is due already (a merge into a waiting entry, a hot
        // lead, a rescore). Waking both on every webhook cost each a pass over the
        // scheduler per request, while nothing changed for them.
        let earliest = sched.next_due();
        let wake = due
            .iter()
            .any(|(_, d, _)| *d <= now || earliest.is_none_or(|e| *d < e));
        for (k, d, hot) in due {
            if hot {
                sched.set_hot(&k, true);
            }
            sched.schedule(k, d);
        }
        drop(sched);
        if wake {
            self.wake.notify_waiters();
        }
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
            tokio::spawn(async move {
                me.refresh_probabilities().await;
                me.rescore_loop(stop).await
            })
        };
        while set.join_next().await.is_some() {}
        // The side loops hold the pipeline (and so the store): stop them and wait until
        // they are gone, so a restart in the same process can open the store again.
        for side in [watchdog, decay, rescoring] {
            side.abort();
            let _ = side.await;
        }
    }

    /// Leads per batch for a portal (by its key bytes): what its CRM packs best.
    fn batch_size(&self, portal: &[u8]) -> usize {
        let live = self.live();
        std::str::from_utf8(portal)
            .ok()
            .and_then(|p| live.portals.get(p))
            .map_or(MAX_BATCH, |rt| rt.crm.batch_size().min(MAX_TURN))
    }

    async fn worker_loop(self: Arc<Self>, n: usize, shutdown: CancellationToken) {
        debug!(worker = n, "worker started");
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            // Registered before the scheduler is read: an entry scheduled (and its
            // wake-up sent) between that read and the sleep would otherwise wait for the
            // sleep's end, up to an hour.
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let now = self.now();
            let (keys, next, release) = {
                let mut s = self.scheduler.lock().await;
                let keys = s.take_due_sized(now, |portal| self.batch_size(portal));
                (keys, s.next_due(), s.next_release())
            };
            if keys.is_empty() {
                // Something due but not handed out waits for its batch to fill (until
                // its hold ends) or for a running batch to end (which wakes us);
                // otherwise sleep until the next due time.
                let wait = match next {
                    Some(d) if d <= now => release
                        .filter(|r| *r > now)
                        .and_then(|r| (r - now).to_std().ok())
                        .unwrap_or(Duration::from_millis(500))
                        .min(Duration::from_millis(500)),
                    Some(d) => (d - now).to_std().unwrap_or(Duration::ZERO),
                    None => Duration::from_secs(3600),
                }
                .min(Duration::from_secs(3600))
                .max(Duration::from_millis(5));
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = notified => {}
                    _ = tokio::time::sleep(wait) => {}
                }
                continue;
            }
            let mut keys = keys;
            keys.extend(self.process_keys(&keys).await);
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
    /// each entry ends completed, rescheduled or dead-lettered. Returns the keys of
    /// leads found through activity events that this turn took over (in flight until
    /// the caller marks them done, like `keys`).
    pub async fn process_keys(&self, keys: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let mut entries = Vec::new();
        for k in keys {
            match self.store.pending_get(k) {
                Ok(Some(e)) => entries.push(e),
                Ok(None) => {}
                Err(e) => warn!(error = %e, "cannot read a pending entry"),
            }
        }
        let Some(first) = entries.first() else {
            return Vec::new();
        };
        // One snapshot for the whole batch: a reload meanwhile applies to the next one.
        let live = self.live();
        let Some(rt) = live.portals.get(&first.portal).cloned() else {
            // The portal was removed from the config: keep the entries for when it returns.
            warn!(portal = %first.portal, "events for a portal that is not configured");
            return Vec::new();
        };
        let (activities, leads): (Vec<_>, Vec<_>) = entries
            .into_iter()
            .partition(|e| matches!(e.subject, Subject::Activity(_)));
        let model = live.model_for(&rt);
        let claimed = self
            .process_batch(&rt, &model, live.shadow.as_deref(), leads, activities)
            .await;
        if let Err(e) = self.store.flush().await {
            warn!(error = %e, "flush after batch failed");
        }
        crate::crashpoint::hit("after_batch");
        claimed
    }

    async fn finish(&self, e: &PendingEntry) {
        let window = chrono::Duration::from_std(self.settings.coalesce).unwrap_or_default();
        match self.store.complete(e, self.now() + window) {
            Ok(Some(newer)) => {
                debug!(key = ?String::from_utf8_lossy(&newer.key()), "more events arrived meanwhile");
            }
            Ok(None) => {}
            Err(err) => warn!(error = %err, "cannot complete entry"),
        }
    }

    /// Whatever failed, the entry ends as [`retry::decide`] says: retried (with jitter
    /// on counted retries), dead-lettered, or retried after a pause of its portal.
    async fn fail(&self, rt: &PortalRuntime, e: &PendingEntry, err: &PipelineError) {
        let portal = &rt.portal.id;
        self.crm_err(portal);
        let now = self.now();
        let msg = err.to_string();
        let (after, counts) = match retry::decide(err, e.attempts, &self.settings.retry_delays) {
            retry::Disposition::DeadLetter => {
                Metrics::inc(&self.metrics.failures, portal, "dead_letter");
                match self.store.dead_letter(e, &msg, now) {
                    Ok(id) => {
                        warn!(portal = %portal, subject = ?e.subject, dead_letter = id, error = %msg, "gave up; moved to the dead-letter queue")
                    }
                    Err(err) => warn!(error = %err, "cannot dead-letter entry"),
                }
                return;
            }
            retry::Disposition::PausePortal { pause } => {
                let until = now + chrono::Duration::from_std(pause).unwrap_or_default();
                let key = e.key();
                self.scheduler
                    .lock()
                    .await
                    .pause_portal(scheduler::portal_of(&key), until);
                Metrics::inc(&self.metrics.failures, portal, "portal_paused");
                warn!(portal = %portal, until = %until, error = %msg, "the CRM stopped this integration: no requests to the portal until then");
                (pause, false)
            }
            retry::Disposition::Retry { after, counts } => (after, counts),
        };
        let delay = if counts {
            let jitter = rand::rng().random_range(0.0..=0.25) * after.as_secs_f64();
            after + Duration::from_secs_f64(jitter)
        } else {
            after
        };
        let due = now + chrono::Duration::from_std(delay).unwrap_or_default();
        let kind = if counts { "retry" } else { "postponed" };
        Metrics::inc(&self.metrics.failures, portal, kind);
        match self.store.retry_later(e, &msg, due, counts) {
            Ok(_) if counts => {
                warn!(portal = %portal, subject = ?e.subject, attempt = e.attempts + 1, retry_in_ms = delay.as_millis() as u64, error = %msg, "will retry");
            }
            Ok(_) => {
                debug!(portal = %portal, subject = ?e.subject, retry_in_ms = delay.as_millis() as u64, reason = %msg, "postponed");
            }
            Err(err) => warn!(error = %err, "cannot record retry"),
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

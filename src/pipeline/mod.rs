//! The workers: take due leads from the store, fetch them in batches, score, write back
//! only what changed, fire the "call now" trigger, and retry or dead-letter failures.
//!
//! Every step is idempotent and recorded in sled before the next begins, so a crash at
//! any point resumes from the store without losing or doubling anything.

mod reload;
pub mod scheduler;
pub mod trigger;

pub use reload::{server_restart_changes, spawn_sighup_reload, ReloadError, ReloadReport};

use std::collections::HashMap;
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
        while set.join_next().await.is_some() {}
        watchdog.abort();
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
            let now = Utc::now();
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
            let now = Utc::now();
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
    }

    async fn resolve_activities(&self, rt: &PortalRuntime, entries: Vec<PendingEntry>) {
        let ids: Vec<String> = entries
            .iter()
            .filter_map(|e| match &e.subject {
                Subject::Activity(id) => Some(id.clone()),
                Subject::Lead(_) => None,
            })
            .collect();
        let now = Utc::now();
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
        let now = Utc::now();
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
                    requests.push(FetchRequest {
                        id: id.clone(),
                        activities: activity_read(&e, snap.as_ref(), now),
                    });
                    snapshots.insert(id.clone(), snap);
                    ready.push(e);
                }
                Err(err) => self.fail(rt, &e, err.into()).await,
            }
        }
        let entries = ready;
        let fetched = match rt.crm.fetch_incremental(&rt.portal.fields, &requests).await {
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
        };
        let now = Utc::now();
        let mut writes = Vec::new();
        let mut scored = Vec::new();
        for e in entries {
            let Subject::Lead(id) = &e.subject else {
                continue;
            };
            let Some(f) = fetched.get(id) else {
                info!(portal = %portal.id, lead = %id, "lead no longer exists; dropped");
                Metrics::inc(&self.metrics.leads, &portal.id, "deleted");
                if let Err(err) = self.store.remove_snapshot(&portal.id, id) {
                    warn!(error = %err, "cannot forget a deleted lead's inputs");
                }
                self.finish(&e).await;
                continue;
            };
            let previous = snapshots.remove(id).flatten();
            let snap = merge_snapshot(previous, f, now);
            if let Err(err) = self.store.put_snapshot(&portal.id, id, &snap) {
                self.fail(rt, &e, err.into()).await;
                continue;
            }
            let f = Fetched {
                lead: snap.lead,
                activities: snap.activities,
                activities_complete: true,
                activity_cursor: snap.activity_cursor,
                current_score: f.current_score,
            };
            let score = model.score(&f.lead, &f.activities, now);
            Metrics::inc(&self.metrics.scores, &portal.id, &score.tier);
            self.metrics
                .lead_latency
                .observe((now - e.first_at).num_milliseconds().max(0) as f64 / 1000.0);
            let explanation = score.explain(self.settings.language, now);
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
            match rt.crm.write_scores(&rt.portal.fields, &writes).await {
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
            match trigger::apply(&self.store, rt, &f.lead, &score, &explanation, now).await {
                Ok(outcome) => {
                    match outcome {
                        trigger::TriggerOutcome::Created(_) => {
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
        let now = Utc::now();
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

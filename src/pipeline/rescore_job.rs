//! The rescore job at run time: starting it, feeding it into the queue while there is
//! room, its progress, and the task policy it imposes on the trigger.

use std::sync::Arc;
use std::time::Duration;

use chrono::DateTime;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{
    rescore, Cause, CauseSource, PendingEntry, Pipeline, PortalRuntime, RescoreError, Subject,
    MAX_BATCH,
};

impl Pipeline {
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
                    let mut ids: Vec<crate::crm::LeadId> = rt
                        .crm
                        .changed_since(*since)
                        .await?
                        .into_iter()
                        .map(|c| c.id)
                        .collect();
                    ids.extend(rescore::known_leads(&self.store, &rt.portal.id)?);
                    ids
                }
                rescore::Target::All => {
                    let epoch = DateTime::from_timestamp(0, 0).expect("epoch");
                    let mut ids: Vec<crate::crm::LeadId> = rt
                        .crm
                        .changed_since(epoch)
                        .await?
                        .into_iter()
                        .map(|c| c.id)
                        .collect();
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
                    &live.model_for(rt),
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
            Some(j) if j.finished_at.is_none() => self.rescore_waiting(j, Duration::from_secs(2)),
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

    /// Entries of the running job still in the queue (a scan, at most every `max_age`).
    pub(super) fn rescore_waiting(&self, job: &rescore::Job, max_age: Duration) -> usize {
        let mut cached = self
            .rescore_waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some((at, n)) = *cached {
            if at.elapsed() < max_age {
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
    pub(super) async fn rescore_loop(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            // Registered before the step looks at the job, so a wake-up meanwhile counts.
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let busy = self.step_rescore().await;
            let wait = if busy {
                Duration::from_millis(200)
            } else {
                Duration::from_secs(2)
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
                _ = notified => {}
            }
        }
    }

    /// One step of the running job; `true` while it is running.
    pub(super) async fn step_rescore(&self) -> bool {
        let mut guard = self.rescore.lock().await;
        let Some(job) = guard.as_mut().filter(|j| j.finished_at.is_none()) else {
            return false;
        };
        let now = self.now();
        if job.all_queued() {
            let job_snapshot = job.clone();
            drop(guard);
            // The tail of the queue is short: scan it afresh, so the job ends when its
            // last lead does (a 2 s old count added up to 2 s to every rescore).
            if self.rescore_waiting(&job_snapshot, Duration::ZERO) > 0 {
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
        // Whole batches of the portal's size: a chunk of 500 on Bitrix24 (49 leads per
        // write batch) left a batch of 10 at the end of every chunk, 4 % more requests.
        let batch = self.batch_size(plan.portal.as_bytes()).max(1);
        let chunk = (rescore::CHUNK / batch).max(1) * batch;
        let end = (plan.next + chunk).min(plan.leads.len());
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
    pub(super) async fn tasks_allowed(&self, e: &PendingEntry, rep: Option<&str>) -> bool {
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
    pub(super) async fn count_rescore_task(&self, e: &PendingEntry, rep: Option<&str>) {
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
}

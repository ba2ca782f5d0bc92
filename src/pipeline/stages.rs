//! One batch of leads through the stages: plan (which inputs the snapshots lack) →
//! fetch (with the leads behind activity events) → score and diff (pure) → write what
//! changed → record and trigger. Each stage ends every entry it cannot carry on
//! (retried, dead-lettered or completed) and hands the rest to the next one.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use tracing::{debug, info, warn};

use super::{
    near_threshold, trigger, ActivityRead, CauseSource, CrmError, FetchBatch, FetchOutcome,
    FetchRequest, Fetched, InputSnapshot, LeadId, LedgerEntry, Metrics, Model, PendingEntry,
    Pipeline, PipelineError, PortalRuntime, ScoreWrite, Subject, Written,
};
use crate::crm::extras::{Extra, ExtraValues};
use crate::crm::WriteResult;
use crate::lead::{Activity, Lead};
use crate::scoring::Score;
use crate::store::ShadowScore;

/// A lead entry in this turn, with the inputs the engine last scored it on.
struct Planned {
    entry: PendingEntry,
    previous: Option<InputSnapshot>,
    /// Read from the CRM this turn (else scored from `previous` alone).
    read: bool,
}

/// One lead scored this turn, and whether the CRM must hear about it.
struct Scored {
    entry: PendingEntry,
    lead: Lead,
    score: Score,
    explanation: String,
    needs_write: bool,
    /// The shadow model's verdict, for the ledger only.
    shadow: Option<ShadowScore>,
    /// The optional values for their own fields (probability, weighted value,
    /// qualification state).
    extras: ExtraValues,
}

/// Per lead, what the CRM said about its write (absent: not written this turn).
type WriteResults = BTreeMap<LeadId, WriteResult>;

/// A lead whose purchase reminder is due, with its next score change (its next timer).
type DueReminder = (Lead, super::reminders::Due, Option<DateTime<Utc>>);

impl Pipeline {
    /// Carry one portal's lead and activity entries through every stage. Returns the
    /// store keys of leads found through activities that this turn took over from the
    /// scheduler (the caller marks them done like its own keys).
    pub(super) async fn process_batch(
        &self,
        rt: &PortalRuntime,
        model: &Model,
        shadow: Option<&Model>,
        leads: Vec<PendingEntry>,
        activities: Vec<PendingEntry>,
    ) -> Vec<Vec<u8>> {
        let now = self.now();
        let mut planned = self.plan(rt, leads).await;
        let Some(outcome) = self.fetch_stage(rt, &planned, &activities, now).await else {
            return Vec::new();
        };
        let claimed = self
            .adopt_activities(rt, activities, &outcome, &mut planned, now)
            .await;
        let models = (model, shadow);
        let (scored, reminders) = self.score_stage(rt, models, planned, &outcome.leads).await;
        let (scored, results) = self.write_stage(rt, scored).await;
        self.record_and_trigger(rt, model, scored, &results).await;
        self.send_reminders(rt, reminders, model.utc_offset()).await;
        claimed
    }

    /// Read each entry's input snapshot and decide whether the CRM must be read: a
    /// change with time alone (decay, rescore) is scored from the stored inputs.
    async fn plan(&self, rt: &PortalRuntime, entries: Vec<PendingEntry>) -> Vec<Planned> {
        let mut planned = Vec::with_capacity(entries.len());
        for e in entries {
            let Subject::Lead(id) = &e.subject else {
                continue;
            };
            match self.store.snapshot(&rt.portal.id, id) {
                Ok(previous) => {
                    let read = !(previous.is_some() && from_snapshot_only(&e));
                    planned.push(Planned {
                        entry: e,
                        previous,
                        read,
                    });
                }
                Err(err) => self.fail(rt, &e, &err.into()).await,
            }
        }
        planned
    }

    /// One read of the CRM for the whole turn. `None`: it failed, and every entry of
    /// the turn was handed to the retry policy.
    async fn fetch_stage(
        &self,
        rt: &PortalRuntime,
        planned: &[Planned],
        activities: &[PendingEntry],
        now: DateTime<Utc>,
    ) -> Option<FetchOutcome> {
        let requests: Vec<FetchRequest> = planned
            .iter()
            .filter(|p| p.read)
            .filter_map(|p| match &p.entry.subject {
                Subject::Lead(id) => Some(FetchRequest {
                    id: id.clone(),
                    activities: activity_read(&p.entry, p.previous.as_ref(), now),
                }),
                Subject::Activity(_) => None,
            })
            .collect();
        let activity_ids: Vec<String> = activities
            .iter()
            .filter_map(|e| match &e.subject {
                Subject::Activity(id) => Some(id.clone()),
                Subject::Lead(_) => None,
            })
            .collect();
        if requests.is_empty() && activity_ids.is_empty() {
            return Some(FetchOutcome::default());
        }
        let portal = &rt.portal.id;
        // A lead found through an activity event: one of its activities is new.
        let read_for = |id: &LeadId| {
            let snap = self.store.snapshot(portal, id).ok().flatten();
            read_mode(snap.as_ref(), true, false, now)
        };
        let batch = FetchBatch {
            leads: &requests,
            activities: &activity_ids,
            read_for: &read_for,
        };
        match rt.crm.fetch_batch(&rt.portal.fields, batch).await {
            Ok(outcome) => {
                self.crm_ok(portal);
                Some(outcome)
            }
            Err(err) => {
                let err = PipelineError::Crm(err);
                for e in planned.iter().map(|p| &p.entry).chain(activities) {
                    self.fail(rt, e, &err).await;
                }
                None
            }
        }
    }

    /// Move each activity entry onto its lead's entry (merging with what is pending
    /// there) and score that lead in this same turn; an activity bound to no lead ends
    /// here. A lead another worker holds is left to it: its worker re-reads the store
    /// when it finishes and picks up what was merged.
    async fn adopt_activities(
        &self,
        rt: &PortalRuntime,
        activities: Vec<PendingEntry>,
        outcome: &FetchOutcome,
        planned: &mut Vec<Planned>,
        now: DateTime<Utc>,
    ) -> Vec<Vec<u8>> {
        let mut claimed = Vec::new();
        for e in activities {
            let Subject::Activity(id) = &e.subject else {
                continue;
            };
            let Some(lead) = outcome.activity_leads.get(id).cloned().flatten() else {
                debug!(portal = %rt.portal.id, activity = %id, "activity not bound to a lead; ignored");
                self.finish(&e).await;
                continue;
            };
            let le = match self.store.retarget(&e, &lead, now) {
                Ok(Some(le)) => le,
                // A newer event for this activity arrived meanwhile: it runs again.
                Ok(None) => continue,
                Err(err) => {
                    self.fail(rt, &e, &PipelineError::Store(err)).await;
                    continue;
                }
            };
            if let Some(p) = planned.iter_mut().find(|p| p.entry.subject == le.subject) {
                p.entry = le;
                p.read = true;
                continue;
            }
            let key = le.key();
            {
                let mut sched = self.scheduler.lock().await;
                if near_threshold(&self.store, &rt.portal, &lead) {
                    sched.set_hot(&key, true);
                }
                if !sched.claim(&key) {
                    continue;
                }
            }
            claimed.push(key);
            match self.store.snapshot(&rt.portal.id, &lead) {
                Ok(previous) => planned.push(Planned {
                    entry: le,
                    previous,
                    read: true,
                }),
                Err(err) => self.fail(rt, &le, &err.into()).await,
            }
        }
        claimed
    }

    /// Merge what was read into the snapshots, re-arm decay timers, score, and decide
    /// per lead whether the CRM's fields differ from what it should show.
    async fn score_stage(
        &self,
        rt: &PortalRuntime,
        (model, shadow): (&Model, Option<&Model>),
        planned: Vec<Planned>,
        fetched: &BTreeMap<LeadId, Fetched>,
    ) -> (Vec<Scored>, Vec<DueReminder>) {
        let portal = &rt.portal;
        let now = self.now();
        let wants_qualification = portal.fields.extra(Extra::Qualification).is_some()
            || portal.fields.deal.extra(Extra::Qualification).is_some();
        let mut scored = Vec::with_capacity(planned.len());
        let mut timers = Vec::with_capacity(planned.len());
        let mut reminders = Vec::new();
        let mut regroup = Vec::new();
        for Planned {
            entry: e,
            previous,
            read,
        } in planned
        {
            let Subject::Lead(id) = &e.subject else {
                continue;
            };
            let (snap, current_score, closed) = if read {
                let Some(f) = fetched.get(id) else {
                    info!(portal = %portal.id, lead = %id, "lead no longer exists; dropped");
                    Metrics::inc(&self.metrics.leads, &portal.id, "deleted");
                    if let Err(err) = self.store.remove_snapshot(&portal.id, id) {
                        warn!(error = %err, "cannot forget a deleted lead's inputs");
                    }
                    self.leave_company(&portal.id, id, now).await;
                    self.finish(&e).await;
                    continue;
                };
                // A close is an outcome when this read sees the status change (a lead
                // first seen closed, or read again while closed, had no score then).
                let moved = previous
                    .as_ref()
                    .is_some_and(|p| p.lead.status != f.lead.status);
                let snap = merge_snapshot(previous, f, now);
                if let Err(err) = self.store.put_snapshot(&portal.id, id, &snap) {
                    self.fail(rt, &e, &err.into()).await;
                    continue;
                }
                (snap, f.current_score, f.closed.filter(|_| moved))
            } else {
                let Some(snap) = previous else { continue };
                (snap, None, None)
            };
            // A visitor id the CRM recorded from a site form identifies that visitor.
            if let Some(field) = portal
                .tracking
                .as_ref()
                .and_then(|t| t.visitor_field.as_deref())
            {
                if let Err(err) = crate::tracking::attach_recorded(
                    &self.store,
                    &portal.id,
                    &snap.lead,
                    field,
                    now,
                ) {
                    self.fail(rt, &e, &err.into()).await;
                    continue;
                }
            }
            // The website events of the lead's identified visitors count beside the
            // CRM's activities (kept apart: the snapshot is what the CRM said).
            // Portals without tracking skip the store scan (a hot path).
            let tracked = match portal
                .tracking
                .as_ref()
                .map(|_| self.store.tracked_for_lead(&portal.id, id))
            {
                None => Vec::new(),
                Some(Ok(t)) => t,
                Some(Err(err)) => {
                    self.fail(rt, &e, &err.into()).await;
                    continue;
                }
            };
            let activities = crate::tracking::with_tracked(&snap.activities, &tracked);
            let company = match self.company_view(&portal.id, model, &snap.lead, &activities, now) {
                Ok((company, others)) => {
                    regroup.extend(others);
                    company
                }
                Err(err) => {
                    self.fail(rt, &e, &err.into()).await;
                    continue;
                }
            };
            // The timer is the earlier of the next score change and the next purchase
            // reminder; a reminder due now goes out after this turn's writes.
            let change = model.next_change_with(&snap.lead, &activities, company.as_ref(), now);
            let timer = match self.reminder_due(rt, &snap.lead, model.utc_offset(), now) {
                Some(due) if due.at <= now => {
                    reminders.push((snap.lead.clone(), due, change));
                    // A minute ahead until the task is recorded (then set anew): a
                    // crash before that brings the lead back to finish it.
                    let retry = now + chrono::Duration::seconds(60);
                    Some(change.map_or(retry, |c| c.min(retry)))
                }
                Some(due) => Some(change.map_or(due.at, |c| c.min(due.at))),
                None => change,
            };
            timers.push((id.clone(), timer));
            let score = model.score_with(&snap.lead, &activities, company.as_ref(), now);
            Metrics::inc(&self.metrics.scores, &portal.id, &score.tier);
            self.metrics
                .lead_latency
                .observe((now - e.first_at).num_milliseconds().max(0) as f64 / 1000.0);
            let explanation = score.explain_dated(model.language(), model.utc_offset(), now);
            let last = match self.store.written(&portal.id, id) {
                Ok(w) => w,
                Err(err) => {
                    self.fail(rt, &e, &err.into()).await;
                    continue;
                }
            };
            let probability = match self.probability_text(&portal.fields, &portal.id, score.total) {
                Ok(p) => p,
                Err(err) => {
                    self.fail(rt, &e, &err.into()).await;
                    continue;
                }
            };
            let extras = ExtraValues {
                probability,
                expected_value: crate::weighted::expected_text(&portal.stages, &snap.lead),
                // Only for a portal with a field for it: the breakdown already carries
                // the state, so without one a change needs no write of its own.
                qualification: score
                    .qualification
                    .as_ref()
                    .filter(|_| wants_qualification)
                    .map(|q| q.code()),
            };
            let same = last.as_ref().is_some_and(|w| {
                w.score == score.total
                    && w.tier == score.tier
                    && w.breakdown == explanation
                    && w.extras == extras
            }) && current_score.is_none_or(|c| c == score.total);
            let shadow = shadow.map(|m| shadow_score(m, &snap.lead, &activities, now));
            if let Some(closed) = closed {
                let at_close = super::outcomes::AtClose {
                    lead: &snap.lead,
                    closed,
                    last: last.as_ref(),
                };
                if let Err(err) = self.note_outcome(&portal.id, at_close, now) {
                    self.fail(rt, &e, &err.into()).await;
                    continue;
                }
            }
            scored.push(Scored {
                entry: e,
                lead: snap.lead,
                score,
                explanation,
                needs_write: !same,
                shadow,
                extras,
            });
        }
        let timers = timers.iter().map(|(id, at)| (id.as_str(), *at));
        if let Err(err) = self.store.set_timers(&portal.id, timers) {
            let err = PipelineError::Store(err);
            for s in &scored {
                self.fail(rt, &s.entry, &err).await;
            }
            return (Vec::new(), Vec::new());
        }
        let why = "a colleague's activity changed the buying group";
        self.requeue_from_inputs(&portal.id, regroup, why, now)
            .await;
        (scored, reminders)
    }

    /// Write every changed score in one call. If the call fails as a whole, the leads
    /// that needed a write go back to the retry policy and leave the turn.
    async fn write_stage(
        &self,
        rt: &PortalRuntime,
        mut scored: Vec<Scored>,
    ) -> (Vec<Scored>, WriteResults) {
        let writes: Vec<ScoreWrite> = scored
            .iter()
            .filter(|s| s.needs_write)
            .map(|s| ScoreWrite {
                lead_id: s.lead.id.clone(),
                score: s.score.total,
                tier: s.score.tier.clone(),
                breakdown: s.explanation.clone(),
                comment: rt.portal.fields.comment,
                extras: s.extras.clone(),
            })
            .collect();
        if writes.is_empty() {
            return (scored, WriteResults::new());
        }
        match rt.crm.write_scores(&rt.portal.fields, &writes).await {
            Ok(r) => {
                crate::crashpoint::hit("after_crm_write");
                (scored, r)
            }
            Err(err) => {
                let err = PipelineError::Crm(err);
                for s in scored.iter().filter(|s| s.needs_write) {
                    self.fail(rt, &s.entry, &err).await;
                }
                scored.retain(|s| !s.needs_write);
                (scored, WriteResults::new())
            }
        }
    }

    /// Record each applied write in the ledger, then let the trigger decide on a
    /// call-now task; an entry is complete only after both.
    async fn record_and_trigger(
        &self,
        rt: &PortalRuntime,
        model: &Model,
        scored: Vec<Scored>,
        results: &WriteResults,
    ) {
        let portal = &rt.portal;
        let now = self.now();
        let mut fires = Vec::new();
        // Leads whose rule-trigger episodes advance this turn (not a bulk rescore's).
        let mut held = Vec::new();
        let recovered =
            trigger::recover_intents(&self.store, rt, scored.iter().map(|s| &s.lead.id)).await;
        for s in scored {
            let Scored {
                entry: e,
                lead,
                score,
                explanation,
                needs_write,
                shadow,
                extras,
            } = s;
            if needs_write {
                match results.get(&lead.id) {
                    Some(Ok(stamp)) => {
                        let written = Written {
                            score: score.total,
                            tier: score.tier.clone(),
                            breakdown: explanation.clone(),
                            extras,
                            at: now,
                            crm_stamp: stamp.clone(),
                        };
                        let ledger = LedgerEntry {
                            at: now,
                            score: score.total,
                            tier: score.tier.clone(),
                            explanation: explanation.clone(),
                            detail: score.clone(),
                            causes: e.causes.clone(),
                            shadow,
                        };
                        if let Err(err) = self
                            .store
                            .record_write(&portal.id, &lead.id, &written, &ledger)
                        {
                            self.fail(rt, &e, &err.into()).await;
                            continue;
                        }
                        info!(portal = %portal.id, lead = %lead.id, score = score.total, tier = %score.tier, "score written");
                        Metrics::inc(&self.metrics.leads, &portal.id, "written");
                    }
                    Some(Err(err)) => {
                        self.fail(rt, &e, &PipelineError::Crm(err.clone())).await;
                        continue;
                    }
                    None => {
                        let missing = CrmError::Transient {
                            message: "write result missing".into(),
                            retry_after: None,
                        };
                        self.fail(rt, &e, &PipelineError::Crm(missing)).await;
                        continue;
                    }
                }
            } else {
                debug!(portal = %portal.id, lead = %lead.id, score = score.total, "unchanged; nothing written");
                Metrics::inc(&self.metrics.leads, &portal.id, "unchanged");
            }
            if !e.causes.iter().all(|c| c.source == CauseSource::Rescore) {
                held.push((lead.clone(), score.clone()));
            }
            let rep = lead
                .responsible_id
                .clone()
                .or_else(|| portal.task.fallback_responsible_id.clone());
            let turn = trigger::Turn {
                allow_new: self.tasks_allowed(&e, rep.as_deref()).await,
                recovered: Some(&recovered),
            };
            match trigger::decide(&self.store, rt, &lead, &score, &explanation, now, &turn).await {
                // A bulk rescore's tasks count against a per-rep cap as each is
                // made, so they go one at a time; every other crossing waits for the
                // turn's batch.
                Ok(trigger::Step::Fire(f))
                    if e.causes.iter().all(|c| c.source == CauseSource::Rescore) =>
                {
                    for (e, rep, f) in self.admit_fires(rt, vec![(e, rep, f)]).await {
                        let mut res = trigger::fire_all(&self.store, rt, vec![f]).await;
                        let res = res.pop().unwrap_or(Ok(trigger::TriggerOutcome::Nothing));
                        self.triggered(rt, &e, rep, res).await
                    }
                }
                Ok(trigger::Step::Fire(f)) => fires.push((e, rep, f)),
                Ok(trigger::Step::Done(outcome)) => {
                    // No longer hot, or its task exists: it waits for no slot.
                    if portal.task.capacity.is_some() {
                        if let Err(err) = self.store.remove_waiting(&portal.id, &lead.id) {
                            self.fail(rt, &e, &err.into()).await;
                            continue;
                        }
                    }
                    self.triggered(rt, &e, rep, Ok(outcome)).await
                }
                Err(err) => self.fail(rt, &e, &err).await,
            }
        }
        self.rule_tasks(rt, model, &held, now).await;
        let fires = self.admit_fires(rt, fires).await;
        if fires.is_empty() {
            return;
        }
        // Every crossing of the turn at once: one flush of the intents, tasks in batches.
        let (entries, fires): (Vec<_>, Vec<_>) =
            fires.into_iter().map(|(e, rep, f)| ((e, rep), f)).unzip();
        let results = trigger::fire_all(&self.store, rt, fires).await;
        for ((e, rep), res) in entries.into_iter().zip(results) {
            self.triggered(rt, &e, rep, res).await;
        }
    }

    /// Count what the trigger did for an entry and finish it, or hand it to the retry
    /// policy (a crossing whose task failed keeps its intent and is tried again alone).
    async fn triggered(
        &self,
        rt: &PortalRuntime,
        e: &PendingEntry,
        rep: Option<String>,
        res: Result<trigger::TriggerOutcome, PipelineError>,
    ) {
        let portal = &rt.portal;
        match res {
            Ok(outcome) => {
                match outcome {
                    trigger::TriggerOutcome::Created(_) => {
                        self.count_rescore_task(e, rep.as_deref()).await;
                        Metrics::inc(&self.metrics.tasks, &portal.id, "created")
                    }
                    trigger::TriggerOutcome::Recovered(_) => {
                        Metrics::inc(&self.metrics.tasks, &portal.id, "recovered")
                    }
                    trigger::TriggerOutcome::Nothing => {}
                }
                self.finish(e).await
            }
            Err(err) => self.fail(rt, e, &err).await,
        }
    }
}

/// The shadow model on the same inputs at the same instant as the live one.
fn shadow_score(
    model: &Model,
    lead: &Lead,
    activities: &[Activity],
    now: DateTime<Utc>,
) -> ShadowScore {
    let score = model.score(lead, activities, now);
    ShadowScore {
        call_now: score.total > model.triggers().call_now_above,
        score: score.total,
        tier: score.tier,
    }
}

/// Everything merged into the entry is a change with time alone (decay) or of the
/// model (a rescore), which the stored inputs answer: nothing in the CRM needs reading.
fn from_snapshot_only(e: &PendingEntry) -> bool {
    !e.activities_changed
        && !e.causes.is_empty()
        && e.causes.iter().all(|c| {
            matches!(
                c.source,
                CauseSource::Decay | CauseSource::Rescore | CauseSource::Tracking
            )
        })
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
    let replay = e.causes.iter().any(|c| c.source == CauseSource::Replay);
    read_mode(snap, e.activities_changed, replay, now)
}

/// [`activity_read`] from its parts, for a lead known only through an activity event.
fn read_mode(
    snap: Option<&InputSnapshot>,
    activities_changed: bool,
    replay: bool,
    now: DateTime<Utc>,
) -> ActivityRead {
    let Some(s) = snap else {
        return ActivityRead::Full;
    };
    if replay || now - s.full_read_at > FULL_REFRESH {
        return ActivityRead::Full;
    }
    if !activities_changed && now - s.activities_read_at <= ACTIVITY_TRUST {
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

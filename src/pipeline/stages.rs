//! One batch of leads through the stages: fetch (reading only what the input
//! snapshots lack) → score and diff (pure) → write what changed → trigger.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use tracing::{debug, info, warn};

use super::{
    trigger, ActivityRead, CauseSource, CrmError, FetchRequest, Fetched, InputSnapshot, LeadId,
    LedgerEntry, Metrics, Model, PendingEntry, Pipeline, PipelineError, PortalRuntime, ScoreWrite,
    Subject, Written,
};

impl Pipeline {
    pub(super) async fn process_leads(
        &self,
        rt: &PortalRuntime,
        model: &Model,
        entries: Vec<PendingEntry>,
    ) {
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
                Err(err) => self.fail(rt, &e, &err.into()).await,
            }
        }
        let entries = ready;
        let fetched = if requests.is_empty() {
            BTreeMap::new()
        } else {
            match rt.crm.fetch_incremental(&rt.portal.fields, &requests).await {
                Ok(f) => {
                    self.crm_ok(&rt.portal.id);
                    f
                }
                Err(err) => {
                    for e in &entries {
                        self.fail(rt, e, &PipelineError::Crm(err.clone())).await;
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
                    self.fail(rt, &e, &err.into()).await;
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
                self.fail(rt, &e, &err.into()).await;
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
                    self.fail(rt, &e, &err.into()).await;
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
                    for (e, _, _, _, needs_write) in &scored {
                        if *needs_write {
                            self.fail(rt, e, &PipelineError::Crm(err.clone())).await;
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
                    Some(Ok(stamp)) => {
                        let written = Written {
                            score: score.total,
                            tier: score.tier.clone(),
                            breakdown: explanation.clone(),
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
                        };
                        if let Err(err) = self
                            .store
                            .record_write(&portal.id, &lead_id, &written, &ledger)
                        {
                            self.fail(rt, &e, &err.into()).await;
                            continue;
                        }
                        info!(portal = %portal.id, lead = %lead_id, score = score.total, tier = %score.tier, "score written");
                        Metrics::inc(&self.metrics.leads, &portal.id, "written");
                    }
                    Some(Err(err)) => {
                        self.fail(rt, &e, &PipelineError::Crm(err.clone())).await;
                        continue;
                    }
                    None => {
                        self.fail(
                            rt,
                            &e,
                            &PipelineError::Crm(CrmError::Transient {
                                message: "write result missing".into(),
                                retry_after: None,
                            }),
                        )
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
                Err(err) => self.fail(rt, &e, &err).await,
            }
        }
    }
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

//! The "call now" trigger: one task per upward crossing of the threshold.
//!
//! State lives in sled (`store::Crossing`) and moves Armed → Intent → Fired. The intent,
//! with a unique marker, is flushed *before* the CRM call; after a crash the marker lets
//! recovery find a task that was created but not recorded, so no lead ever gets two.
//! Re-arming needs the score to fall below `rearm_below`, the cool-down to pass, and our
//! previous task to be closed.
//!
//! A worker turn decides for all its leads first ([`decide`]) and creates the tasks of
//! every crossing together ([`fire_all`]): all intents are flushed with one fsync, then
//! the CRM gets them in batches (50 per request), and each task's own error leaves only
//! that lead to retry.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use tracing::info;

use crate::config::Portal;
use crate::crm::{CrmError, LeadId, TaskRef, TaskRequest};
use crate::lead::Lead;
use crate::scoring::Score;
use crate::store::{Crossing, Episode, Store};

use super::{PipelineError, PortalRuntime};

/// What the trigger did for one lead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TriggerOutcome {
    Nothing,
    /// A task was created now.
    Created(TaskRef),
    /// A task created before a crash was found by its marker and recorded.
    Recovered(TaskRef),
}

fn fill(template: &str, lead: &Lead, score: &Score, why: &str) -> String {
    let questions = score
        .qualification
        .as_ref()
        .map(|q| q.open_questions().join(", "))
        .filter(|q| !q.is_empty())
        .unwrap_or_else(|| "—".to_string());
    template
        .replace("{score}", &score.total.to_string())
        .replace("{questions}", &questions)
        .replace("{tier}", &score.tier_label)
        .replace("{lead}", &lead.id)
        .replace("{name}", lead.name.as_deref().unwrap_or(&lead.id))
        .replace("{why}", why)
}

fn task_request(
    portal: &Portal,
    lead: &Lead,
    score: &Score,
    why: &str,
    marker: &str,
    now: DateTime<Utc>,
) -> TaskRequest {
    TaskRequest {
        lead_id: lead.id.clone(),
        responsible_id: lead
            .responsible_id
            .clone()
            .or_else(|| portal.task.fallback_responsible_id.clone()),
        title: fill(&portal.task.title, lead, score, why),
        text: fill(&portal.task.text, lead, score, why),
        deadline: now + chrono::Duration::minutes(i64::from(portal.task.deadline_minutes)),
        marker: marker.to_string(),
    }
}

/// What the state machine decided for one lead: finished, or a task to create.
#[derive(Debug)]
pub enum Step {
    Done(TriggerOutcome),
    Fire(Fire),
}

/// A task to create for a crossing, with the marker its intent is recorded under.
#[derive(Debug, Clone)]
pub struct Fire {
    lead_id: String,
    score: i32,
    request: TaskRequest,
    now: DateTime<Utc>,
    /// A new crossing (a new marker), not the retry of an intent already recorded: only
    /// a fresh one takes a slot of its rep's daily capacity.
    fresh: bool,
    /// A rule-trigger episode's key (see `store::Episode`) instead of the lead's
    /// call-now crossing: where the intent and the created task are recorded.
    episode: Option<String>,
}

impl Fire {
    /// The task of a rule-trigger episode, recorded under `episode` (its intent was
    /// claimed when the episode started); the same intent-flush-create-record path as
    /// a call-now crossing.
    pub fn for_episode(request: TaskRequest, episode: String, now: DateTime<Utc>) -> Fire {
        Fire {
            lead_id: request.lead_id.clone(),
            score: 0,
            request,
            now,
            fresh: true,
            episode: Some(episode),
        }
    }

    /// The lead the task is for.
    pub fn lead_id(&self) -> &str {
        &self.lead_id
    }

    /// The score that crossed the threshold.
    pub fn score(&self) -> i32 {
        self.score
    }

    /// Who gets the task (`None`: the CRM's default).
    pub fn responsible(&self) -> Option<&str> {
        self.request.responsible_id.as_deref()
    }

    /// Whether this is a new crossing rather than the retry of a recorded intent.
    pub fn fresh(&self) -> bool {
        self.fresh
    }

    /// Give the task to another rep (capacity's fallback).
    pub fn reassign(&mut self, rep: &str) {
        self.request.responsible_id = Some(rep.to_string());
    }
}

/// Advance the crossing state machine for a freshly scored lead.
pub async fn apply(
    store: &Store,
    rt: &PortalRuntime,
    lead: &Lead,
    score: &Score,
    why: &str,
    now: DateTime<Utc>,
) -> Result<TriggerOutcome, PipelineError> {
    apply_with(store, rt, lead, score, why, now, true).await
}

/// [`apply`], where `allow_new = false` records what happened but creates no new task
/// (a bulk rescore after a model change must not flood the reps); recovery of a task
/// already intended still runs.
pub async fn apply_with(
    store: &Store,
    rt: &PortalRuntime,
    lead: &Lead,
    score: &Score,
    why: &str,
    now: DateTime<Utc>,
    allow_new: bool,
) -> Result<TriggerOutcome, PipelineError> {
    let turn = Turn {
        allow_new,
        recovered: None,
    };
    match decide(store, rt, lead, score, why, now, &turn).await? {
        Step::Done(outcome) => Ok(outcome),
        Step::Fire(f) => fire_all(store, rt, vec![f])
            .await
            .pop()
            .unwrap_or(Ok(TriggerOutcome::Nothing)),
    }
}

/// Per lead whose task was intended before (a crash, a failed task batch): what the
/// turn's one look-up found, or why it failed.
pub type Recovered = BTreeMap<LeadId, Result<Option<TaskRef>, CrmError>>;

/// What the worker turn brings to each lead's decision.
pub struct Turn<'a> {
    /// `false`: record what happened but create no new task (a bulk rescore after a
    /// model change must not flood the reps); recovery of an intended task still runs.
    pub allow_new: bool,
    /// The turn's [`recover_intents`]; a lead not in it is looked up alone.
    pub recovered: Option<&'a Recovered>,
}

/// Look up, in one call for the whole turn, the tasks intended before for those of
/// `leads` whose crossing is an intent: after a crash or a failed task batch a turn
/// meets dozens, and one look-up each would cost as many requests.
pub async fn recover_intents<'a>(
    store: &Store,
    rt: &PortalRuntime,
    leads: impl Iterator<Item = &'a LeadId>,
) -> Recovered {
    if !rt.portal.task.enabled {
        return Recovered::new();
    }
    let wanted: Vec<(LeadId, String)> = leads
        .filter_map(|lead| match store.crossing(&rt.portal.id, lead) {
            Ok(Crossing::Intent { marker, .. }) => Some((lead.clone(), marker)),
            _ => None,
        })
        .collect();
    if wanted.is_empty() {
        return Recovered::new();
    }
    let found = rt.crm.find_tasks(&rt.portal.task, &wanted).await;
    wanted
        .into_iter()
        .map(|(lead, _)| {
            let answer = match &found {
                Ok(found) => found
                    .get(&lead)
                    .cloned()
                    .ok_or_else(|| CrmError::Transient {
                        message: "the task look-up left this lead out".into(),
                        retry_after: None,
                    }),
                Err(e) => Err(e.clone()),
            };
            (lead, answer)
        })
        .collect()
}

/// The state machine's decision for one lead, without creating a task: a crossing
/// comes back as [`Step::Fire`] for [`fire_all`]. Recovery of an intended task (found
/// by its marker, or already looked up for the turn) and the open-task check run here.
pub async fn decide(
    store: &Store,
    rt: &PortalRuntime,
    lead: &Lead,
    score: &Score,
    why: &str,
    now: DateTime<Utc>,
    turn: &Turn<'_>,
) -> Result<Step, PipelineError> {
    let allow_new = turn.allow_new;
    let portal = &rt.portal;
    if !portal.task.enabled {
        return Ok(Step::Done(TriggerOutcome::Nothing));
    }
    let above = score.total > portal.threshold;
    let state = store.crossing(&portal.id, &lead.id)?;
    match state {
        Crossing::Armed => {
            if !above {
                return Ok(Step::Done(TriggerOutcome::Nothing));
            }
            if !allow_new {
                store.set_crossing(
                    &portal.id,
                    &lead.id,
                    &Crossing::Suppressed {
                        score: score.total,
                        at: now,
                    },
                )?;
                return Ok(Step::Done(TriggerOutcome::Nothing));
            }
            let marker = format!(
                "leadscore:{}:{}:{}",
                portal.id,
                lead.id,
                now.timestamp_millis()
            );
            Ok(fire(rt, lead, score, why, marker, now, true))
        }
        Crossing::Intent { marker, .. } => {
            let found = match turn.recovered.and_then(|r| r.get(&lead.id)) {
                Some(answer) => answer.clone()?,
                None => rt.crm.find_task(&rt.portal.task, &lead.id, &marker).await?,
            };
            if let Some(task) = found {
                store.set_crossing(
                    &portal.id,
                    &lead.id,
                    &Crossing::Fired {
                        task: task.clone(),
                        marker: marker.clone(),
                        at: now,
                        fell_below: false,
                    },
                )?;
                store.flush().await?;
                info!(portal = %portal.id, lead = %lead.id, task = %task.id, "recovered a task created before a restart");
                return Ok(Step::Done(TriggerOutcome::Recovered(task)));
            }
            if above {
                Ok(fire(rt, lead, score, why, marker, now, false))
            } else {
                // The lead fell back before the task was made: no crossing any more.
                store.set_crossing(&portal.id, &lead.id, &Crossing::Armed)?;
                Ok(Step::Done(TriggerOutcome::Nothing))
            }
        }
        Crossing::Suppressed { .. } => {
            if score.total < portal.rearm_below {
                store.set_crossing(&portal.id, &lead.id, &Crossing::Armed)?;
            }
            Ok(Step::Done(TriggerOutcome::Nothing))
        }
        Crossing::Fired {
            task,
            marker,
            at,
            fell_below,
        } => {
            if score.total < portal.rearm_below && !fell_below {
                store.set_crossing(
                    &portal.id,
                    &lead.id,
                    &Crossing::Fired {
                        task,
                        marker,
                        at,
                        fell_below: true,
                    },
                )?;
                return Ok(Step::Done(TriggerOutcome::Nothing));
            }
            let cooled = now - at >= chrono::Duration::hours(i64::from(portal.task.cooldown_hours));
            if !(above && fell_below && cooled && allow_new) {
                return Ok(Step::Done(TriggerOutcome::Nothing));
            }
            if rt
                .crm
                .task_open(&rt.portal.task, &lead.id, &task.id)
                .await?
            {
                // Never a second task while the rep still has ours open.
                return Ok(Step::Done(TriggerOutcome::Nothing));
            }
            let marker = format!(
                "leadscore:{}:{}:{}",
                portal.id,
                lead.id,
                now.timestamp_millis()
            );
            Ok(fire(rt, lead, score, why, marker, now, true))
        }
    }
}

fn fire(
    rt: &PortalRuntime,
    lead: &Lead,
    score: &Score,
    why: &str,
    marker: String,
    now: DateTime<Utc>,
    fresh: bool,
) -> Step {
    Step::Fire(Fire {
        lead_id: lead.id.clone(),
        score: score.total,
        request: task_request(&rt.portal, lead, score, why, &marker, now),
        now,
        fresh,
        episode: None,
    })
}

/// Create the tasks of many crossings: every intent with its marker is written and made
/// durable with one flush *before* the CRM hears of any task, the tasks go out in as
/// few requests as the CRM allows, and each created task is recorded. One result per
/// crossing, in order; an error leaves that lead in `Intent`, so its retry first looks
/// for the task by its marker.
pub async fn fire_all(
    store: &Store,
    rt: &PortalRuntime,
    fires: Vec<Fire>,
) -> Vec<Result<TriggerOutcome, PipelineError>> {
    let portal = &rt.portal;
    let mut out: Vec<Option<Result<TriggerOutcome, PipelineError>>> =
        (0..fires.len()).map(|_| None).collect();
    let mut sent = Vec::new();
    for (i, f) in fires.iter().enumerate() {
        let recorded = match &f.episode {
            None => store.set_crossing(
                &portal.id,
                &f.lead_id,
                &Crossing::Intent {
                    marker: f.request.marker.clone(),
                    score: f.score,
                    at: f.now,
                },
            ),
            Some(key) => store.set_episode(
                &portal.id,
                key,
                &Episode::Intent {
                    marker: f.request.marker.clone(),
                    lead: f.lead_id.clone(),
                    at: f.now,
                },
            ),
        };
        match recorded {
            Ok(()) => sent.push(i),
            Err(e) => out[i] = Some(Err(e.into())),
        }
    }
    if let Err(e) = store.flush().await {
        // Nothing was sent: every crossing of the turn is retried.
        let e = PipelineError::from(e);
        return out
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(again(&e))))
            .collect();
    }
    crate::crashpoint::hit("after_intent");
    let requests: Vec<TaskRequest> = sent.iter().map(|&i| fires[i].request.clone()).collect();
    let created = if requests.is_empty() {
        Vec::new()
    } else {
        rt.crm.create_tasks(&portal.task, &requests).await
    };
    crate::crashpoint::hit("after_task_create");
    for (&i, res) in sent.iter().zip(created) {
        let f = &fires[i];
        out[i] = Some(match res {
            Ok(task) => record_fired(store, portal, f, &task).map(|()| {
                info!(portal = %portal.id, lead = %f.lead_id, task = %task.id, score = f.score, episode = ?f.episode, "task created");
                TriggerOutcome::Created(task)
            }),
            Err(e) => Err(e.into()),
        });
    }
    let flushed = store.flush().await.map_err(PipelineError::from);
    out.into_iter()
        .map(|r| match (r, &flushed) {
            (Some(Ok(o)), Ok(())) => Ok(o),
            (Some(Ok(_)), Err(e)) => Err(again(e)),
            (Some(Err(e)), _) => Err(e),
            (None, _) => Err(PipelineError::Crm(crate::crm::CrmError::Transient {
                message: "the CRM gave no result for this task".into(),
                retry_after: None,
            })),
        })
        .collect()
}

/// The same failure for another crossing of the batch (store errors keep their text).
fn again(e: &PipelineError) -> PipelineError {
    match e {
        PipelineError::Crm(c) => PipelineError::Crm(c.clone()),
        PipelineError::Store(s) => PipelineError::Store(crate::store::StoreError::Sled(
            sled::Error::Io(std::io::Error::other(s.to_string())),
        )),
    }
}

/// Record a created task (the caller flushes).
fn record_fired(
    store: &Store,
    portal: &Portal,
    f: &Fire,
    task: &TaskRef,
) -> Result<(), PipelineError> {
    if let Some(key) = &f.episode {
        store.set_episode(
            &portal.id,
            key,
            &Episode::Fired {
                task: task.clone(),
                marker: f.request.marker.clone(),
                lead: f.lead_id.clone(),
                at: f.now,
            },
        )?;
        return Ok(());
    }
    store.set_crossing(
        &portal.id,
        &f.lead_id,
        &Crossing::Fired {
            task: task.clone(),
            marker: f.request.marker.clone(),
            at: f.now,
            fell_below: false,
        },
    )?;
    Ok(())
}

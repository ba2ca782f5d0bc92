//! The "call now" trigger: one task per upward crossing of the threshold.
//!
//! State lives in sled (`store::Crossing`) and moves Armed → Intent → Fired. The intent,
//! with a unique marker, is flushed *before* the CRM call; after a crash the marker lets
//! recovery find a task that was created but not recorded, so no lead ever gets two.
//! Re-arming needs the score to fall below `rearm_below`, the cool-down to pass, and our
//! previous task to be closed.

use chrono::{DateTime, Utc};
use tracing::info;

use crate::config::Portal;
use crate::crm::{TaskRef, TaskRequest};
use crate::lead::Lead;
use crate::scoring::Score;
use crate::store::{Crossing, Store};

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
    template
        .replace("{score}", &score.total.to_string())
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
    let portal = &rt.portal;
    if !portal.task.enabled {
        return Ok(TriggerOutcome::Nothing);
    }
    let above = score.total > portal.threshold;
    let state = store.crossing(&portal.id, &lead.id)?;
    match state {
        Crossing::Armed => {
            if !above {
                return Ok(TriggerOutcome::Nothing);
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
                return Ok(TriggerOutcome::Nothing);
            }
            let marker = format!(
                "leadscore:{}:{}:{}",
                portal.id,
                lead.id,
                now.timestamp_millis()
            );
            fire(store, rt, lead, score, why, marker, now).await
        }
        Crossing::Intent { marker, .. } => {
            if let Some(task) = rt.crm.find_task(&rt.portal.task, &lead.id, &marker).await? {
                record_fired(store, portal, lead, &task, &marker, now).await?;
                info!(portal = %portal.id, lead = %lead.id, task = %task.id, "recovered a task created before a restart");
                return Ok(TriggerOutcome::Recovered(task));
            }
            if above {
                fire(store, rt, lead, score, why, marker, now).await
            } else {
                // The lead fell back before the task was made: no crossing any more.
                store.set_crossing(&portal.id, &lead.id, &Crossing::Armed)?;
                Ok(TriggerOutcome::Nothing)
            }
        }
        Crossing::Suppressed { .. } => {
            if score.total < portal.rearm_below {
                store.set_crossing(&portal.id, &lead.id, &Crossing::Armed)?;
            }
            Ok(TriggerOutcome::Nothing)
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
                return Ok(TriggerOutcome::Nothing);
            }
            let cooled = now - at >= chrono::Duration::hours(i64::from(portal.task.cooldown_hours));
            if !(above && fell_below && cooled && allow_new) {
                return Ok(TriggerOutcome::Nothing);
            }
            if rt
                .crm
                .task_open(&rt.portal.task, &lead.id, &task.id)
                .await?
            {
                // Never a second task while the rep still has ours open.
                return Ok(TriggerOutcome::Nothing);
            }
            let marker = format!(
                "leadscore:{}:{}:{}",
                portal.id,
                lead.id,
                now.timestamp_millis()
            );
            fire(store, rt, lead, score, why, marker, now).await
        }
    }
}

async fn fire(
    store: &Store,
    rt: &PortalRuntime,
    lead: &Lead,
    score: &Score,
    why: &str,
    marker: String,
    now: DateTime<Utc>,
) -> Result<TriggerOutcome, PipelineError> {
    let portal = &rt.portal;
    store.set_crossing(
        &portal.id,
        &lead.id,
        &Crossing::Intent {
            marker: marker.clone(),
            score: score.total,
            at: now,
        },
    )?;
    store.flush().await?;
    crate::crashpoint::hit("after_intent");
    let req = task_request(portal, lead, score, why, &marker, now);
    let task = rt.crm.create_task(&rt.portal.task, &req).await?;
    crate::crashpoint::hit("after_task_create");
    record_fired(store, portal, lead, &task, &marker, now).await?;
    info!(portal = %portal.id, lead = %lead.id, task = %task.id, score = score.total, "call-now task created");
    Ok(TriggerOutcome::Created(task))
}

async fn record_fired(
    store: &Store,
    portal: &Portal,
    lead: &Lead,
    task: &TaskRef,
    marker: &str,
    now: DateTime<Utc>,
) -> Result<(), PipelineError> {
    store.set_crossing(
        &portal.id,
        &lead.id,
        &Crossing::Fired {
            task: task.clone(),
            marker: marker.to_string(),
            at: now,
            fell_below: false,
        },
    )?;
    store.flush().await?;
    Ok(())
}

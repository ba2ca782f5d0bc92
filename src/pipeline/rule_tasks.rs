//! Rule-trigger tasks: a rule with `task` creates one task per episode (from the turn
//! it starts to hold until the turn it stops), for the lead's rep, or for a buying
//! group once per company, on the company's highest-scored lead.
//!
//! The episode's intent is claimed in the store by compare-and-swap, then created
//! through the call-now path ([`trigger::fire_all`]: intents flushed before the CRM
//! call, recorded after); an intent found on a later turn is first looked for in the
//! CRM by its marker, so no episode ever gets two tasks.

use chrono::{DateTime, Utc};
use tracing::warn;

use super::{trigger, LeadId, Model, Pipeline, PipelineError, PortalRuntime};
use crate::crm::TaskRequest;
use crate::lead::Lead;
use crate::scoring::{CompanyKey, RuleTask, Score};
use crate::store::Episode;

/// Whose episode a rule's task belongs to.
struct Scope {
    /// The store key: rule, then the lead or the company.
    key: String,
    company: Option<CompanyKey>,
}

impl Pipeline {
    /// Advance every task-carrying rule's episode for the leads scored this turn and
    /// create the tasks of the episodes that started; a lead whose step failed is
    /// queued again (its intent, if any, is recovered by marker then).
    pub(super) async fn rule_tasks(
        &self,
        rt: &PortalRuntime,
        model: &Model,
        held: &[(Lead, Score)],
        now: DateTime<Utc>,
    ) {
        let tasks = model.rule_tasks();
        if tasks.is_empty() || !rt.portal.task.enabled {
            return;
        }
        let mut fires = Vec::new();
        let mut again: Vec<LeadId> = Vec::new();
        for (lead, score) in held {
            for t in &tasks {
                match self.episode_step(rt, model, t, lead, score, now).await {
                    Ok(Some(f)) => fires.push(f),
                    Ok(None) => {}
                    Err(e) => {
                        warn!(portal = %rt.portal.id, lead = %lead.id, rule = %t.rule_id, error = %e, "rule task step failed");
                        again.push(lead.id.clone());
                    }
                }
            }
        }
        if !fires.is_empty() {
            let leads: Vec<LeadId> = fires.iter().map(|f| f.lead_id().to_string()).collect();
            let results = trigger::fire_all(&self.store, rt, fires).await;
            for (lead, res) in leads.into_iter().zip(results) {
                if let Err(e) = res {
                    warn!(portal = %rt.portal.id, lead = %lead, error = %e, "rule task not created");
                    again.push(lead);
                }
            }
        }
        self.requeue_from_inputs(&rt.portal.id, again, "a rule task to retry", now)
            .await;
    }

    /// One rule's episode for one lead: a task to create, or nothing.
    async fn episode_step(
        &self,
        rt: &PortalRuntime,
        model: &Model,
        t: &RuleTask,
        lead: &Lead,
        score: &Score,
        now: DateTime<Utc>,
    ) -> Result<Option<trigger::Fire>, PipelineError> {
        let portal = &rt.portal.id;
        let holds = score.breakdown.iter().any(|e| e.rule_id == t.rule_id);
        let scope = if t.company {
            let Some(c) = model.company_key(lead) else {
                return Ok(None);
            };
            Scope {
                key: format!("{}\0company\0{}", t.rule_id, c.key),
                company: Some(c),
            }
        } else {
            Scope {
                key: format!("{}\0lead\0{}", t.rule_id, lead.id),
                company: None,
            }
        };
        match self.store.episode(portal, &scope.key)? {
            None if holds => {
                // Compared without the rule's own points: the other leads' written
                // scores do not have the group yet.
                let own: i32 = score
                    .breakdown
                    .iter()
                    .filter(|e| e.rule_id == t.rule_id)
                    .map(|e| e.points)
                    .sum();
                let (bound, bound_score) = match &scope.company {
                    Some(c) => self.top_lead(portal, &c.key, lead, score.total - own)?,
                    None => (lead.clone(), score.total),
                };
                let marker = format!(
                    "leadscore:{portal}:{}:{}:{}",
                    bound.id,
                    t.rule_id,
                    now.timestamp_millis()
                );
                let intent = Episode::Intent {
                    marker: marker.clone(),
                    lead: bound.id.clone(),
                    at: now,
                };
                if !self.store.episode_claim(portal, &scope.key, &intent)? {
                    return Ok(None);
                }
                let req = request(rt, t, &scope, &bound, bound_score, marker, now);
                Ok(Some(trigger::Fire::for_episode(req, scope.key, now)))
            }
            Some(Episode::Intent {
                marker,
                lead: bound,
                ..
            }) if bound == lead.id => {
                if let Some(task) = rt.crm.find_task(&rt.portal.task, &bound, &marker).await? {
                    let fired = Episode::Fired {
                        task,
                        marker,
                        lead: bound,
                        at: now,
                    };
                    self.store.set_episode(portal, &scope.key, &fired)?;
                    self.store.flush().await?;
                    return Ok(None);
                }
                if !holds {
                    self.store.end_episode(portal, &scope.key)?;
                    return Ok(None);
                }
                let req = request(rt, t, &scope, lead, score.total, marker, now);
                Ok(Some(trigger::Fire::for_episode(req, scope.key, now)))
            }
            Some(Episode::Fired { .. }) if !holds => {
                self.store.end_episode(portal, &scope.key)?;
                Ok(None)
            }
            // Idle, running with its task, or an intent its own lead's turn recovers.
            _ => Ok(None),
        }
    }

    /// The company's highest-scored lead (by the score last written; this lead by
    /// `score`, and on a tie), with its stored fields.
    fn top_lead(
        &self,
        portal: &str,
        company: &str,
        lead: &Lead,
        score: i32,
    ) -> Result<(Lead, i32), PipelineError> {
        let mut best = (lead.id.clone(), score);
        if let Some(rec) = self.store.company_record(portal, company)? {
            for other in rec.leads.keys().filter(|l| **l != lead.id) {
                if let Some(w) = self.store.written(portal, other)? {
                    if w.score > best.1 {
                        best = (other.clone(), w.score);
                    }
                }
            }
        }
        if best.0 == lead.id {
            return Ok((lead.clone(), score));
        }
        Ok(match self.store.snapshot(portal, &best.0)? {
            Some(s) => (s.lead, best.1),
            None => (lead.clone(), score),
        })
    }
}

/// The task for an episode, on `bound`: the rule's text filled in, for its rep.
fn request(
    rt: &PortalRuntime,
    t: &RuleTask,
    scope: &Scope,
    bound: &Lead,
    score: i32,
    marker: String,
    now: DateTime<Utc>,
) -> TaskRequest {
    let company = scope
        .company
        .as_ref()
        .map(|c| c.name.clone())
        .or_else(|| bound.company.clone())
        .unwrap_or_default();
    let text = t
        .template
        .replace("{company}", &company)
        .replace("{label}", &t.label)
        .replace("{name}", bound.name.as_deref().unwrap_or(&bound.id))
        .replace("{lead}", &bound.id)
        .replace("{score}", &score.to_string());
    let task = &rt.portal.task;
    TaskRequest {
        lead_id: bound.id.clone(),
        responsible_id: bound
            .responsible_id
            .clone()
            .or_else(|| task.fallback_responsible_id.clone()),
        title: text.clone(),
        text,
        deadline: now + chrono::Duration::minutes(i64::from(task.deadline_minutes)),
        marker,
    }
}

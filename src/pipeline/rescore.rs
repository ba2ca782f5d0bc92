//! Re-scoring many leads at once: after a model change (SIGHUP, `leadscore rescore`),
//! or for leads the daemon has not seen yet.
//!
//! A job runs *inside* the daemon, so every CRM request it causes goes through the
//! portal's one pacer. It is durable: the job (its target list and a cursor) lives in
//! sled, and it feeds leads into the ordinary queue a chunk at a time, only while the
//! queue has room, so webhook work always comes first. A lead with a stored input
//! snapshot is scored from it (no CRM read); the rest are read in full. A kill -9
//! resumes from the cursor; entries already queued are in sled like any other, and
//! the no-write-loop guard makes a repeated lead cost nothing.
//!
//! A model change must not flood the reps: by default a rescore creates no call-now
//! task (`TaskPolicy::None`); `NewCrossings` allows them up to a cap per rep.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::crm::LeadId;
use crate::scoring::spec::Language;
use crate::scoring::Model;
use crate::store::{Crossing, Store, StoreError};

/// The store key of the current (or last) job.
pub const JOB_KEY: &str = "rescore:job";

/// Leads fed into the queue per step.
pub const CHUNK: usize = 500;

/// Which leads to re-score.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Target {
    /// One lead.
    Lead { id: LeadId },
    /// Leads the CRM reports modified since then (plus every lead with stored inputs).
    Since { since: DateTime<Utc> },
    /// Every lead the CRM lists (plus every lead with stored inputs).
    All,
    /// Every lead with stored inputs (no CRM listing): what a model change affects.
    Stored,
}

/// Whether a rescore may create call-now tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum TaskPolicy {
    /// No task from the rescore itself (a later real event on a hot lead still makes one).
    #[default]
    None,
    /// Tasks for leads that newly cross, at most `per_rep` per responsible rep.
    NewCrossings { per_rep: usize },
}

/// What an admin asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RescoreRequest {
    /// One portal, or all of them.
    pub portal: Option<String>,
    pub target: Target,
    /// Report what would change; write nothing.
    #[serde(default)]
    pub dry_run: bool,
    #[serde(default)]
    pub tasks: TaskPolicy,
}

/// One portal's share of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortalPlan {
    pub portal: String,
    pub leads: Vec<LeadId>,
    /// How many of `leads` are in the queue already (the cursor).
    pub next: usize,
}

/// A job as stored: the request, the target lists and the cursors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    pub request: RescoreRequest,
    pub plans: Vec<PortalPlan>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Tasks the job created per rep (for the `NewCrossings` cap).
    #[serde(default)]
    pub tasks_by_rep: BTreeMap<String, usize>,
    /// The dry run's findings (dry runs only).
    #[serde(default)]
    pub report: Option<DryRunReport>,
}

impl Job {
    /// Leads in the job.
    pub fn total(&self) -> usize {
        self.plans.iter().map(|p| p.leads.len()).sum()
    }

    /// Leads fed into the queue so far.
    pub fn queued(&self) -> usize {
        self.plans.iter().map(|p| p.next).sum()
    }

    /// Everything fed into the queue.
    pub fn all_queued(&self) -> bool {
        self.plans.iter().all(|p| p.next >= p.leads.len())
    }

    /// The `detail` of the causes this job puts on its entries.
    pub fn cause_detail(&self) -> String {
        format!("rescore {}", self.id)
    }

    /// May this job create a task for a lead of `rep`?
    pub fn task_allowed(&self, rep: Option<&str>) -> bool {
        match self.request.tasks {
            TaskPolicy::None => false,
            TaskPolicy::NewCrossings { per_rep } => {
                self.tasks_by_rep
                    .get(rep.unwrap_or(""))
                    .copied()
                    .unwrap_or(0)
                    < per_rep
            }
        }
    }
}

/// Progress as `leadscore rescore` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub job: Option<Job>,
    /// Leads of the job processed so far.
    pub done: usize,
    /// Requests and rate-limit answers of the portals' clients since the daemon started.
    pub requests: u64,
    pub limit_errors: u64,
    pub running: bool,
}

/// What a model change would do, from the stored inputs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DryRunReport {
    /// (tier on the card now, tier under the model) -> leads.
    pub migration: BTreeMap<String, BTreeMap<String, usize>>,
    /// Leads at or under the threshold now that the model puts above it (and whose
    /// trigger is armed): the tasks a rescore with `new-crossings` could create.
    pub new_crossings: usize,
    /// Leads scored from stored inputs.
    pub scored: usize,
    /// Leads with no stored inputs yet (a real rescore reads them from the CRM).
    pub unseen: usize,
    /// Up to five leads whose card text changes: (lead, now, then).
    pub examples: Vec<(LeadId, String, String)>,
}

impl DryRunReport {
    /// The table and counts as text, for the CLI and the SIGHUP log line.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("tier now -> tier under the model: leads\n");
        for (from, tos) in &self.migration {
            for (to, n) in tos {
                let mark = if from == to { "" } else { "  *" };
                out.push_str(&format!("  {from:>8} -> {to:<8} {n}{mark}\n"));
            }
        }
        out.push_str(&format!(
            "{} scored from stored inputs, {} not seen yet, {} would newly cross the threshold\n",
            self.scored, self.unseen, self.new_crossings
        ));
        for (lead, before, after) in &self.examples {
            out.push_str(&format!(
                "lead {lead}:\n  now:  {before}\n  then: {after}\n"
            ));
        }
        out
    }

    /// One line for a log.
    pub fn summary(&self) -> String {
        let moved: usize = self
            .migration
            .iter()
            .flat_map(|(from, tos)| tos.iter().filter(move |(to, _)| *to != from))
            .map(|(_, n)| n)
            .sum();
        format!(
            "{moved} of {} leads change tier, {} would newly cross the threshold, {} not seen yet",
            self.scored, self.new_crossings, self.unseen
        )
    }
}

/// Score `leads` of a portal from their stored inputs with `model` and compare with
/// what their cards say now. Pure over the store: no CRM request.
pub fn dry_run(
    store: &Store,
    portal: &crate::config::Portal,
    model: &Model,
    leads: &[LeadId],
    now: DateTime<Utc>,
    report: &mut DryRunReport,
) -> Result<(), StoreError> {
    let lang: Language = model.language();
    for id in leads {
        let Some(snap) = store.snapshot(&portal.id, id)? else {
            report.unseen += 1;
            continue;
        };
        report.scored += 1;
        let score = model.score(&snap.lead, &snap.activities, now);
        let written = store.written(&portal.id, id)?;
        let from = written
            .as_ref()
            .map_or_else(|| "-".to_string(), |w| w.tier.clone());
        *report
            .migration
            .entry(from)
            .or_default()
            .entry(score.tier.clone())
            .or_default() += 1;
        let was = written.as_ref().map_or(i32::MIN, |w| w.score);
        if was <= portal.threshold
            && score.total > portal.threshold
            && matches!(store.crossing(&portal.id, id)?, Crossing::Armed)
        {
            report.new_crossings += 1;
        }
        let text = score.explain_dated(lang, model.utc_offset(), now);
        if report.examples.len() < 5 {
            if let Some(w) = written.filter(|w| w.breakdown != text) {
                report.examples.push((id.clone(), w.breakdown, text));
            }
        }
    }
    Ok(())
}

/// Every lead of a portal the store knows (it has written or scored it).
pub fn known_leads(store: &Store, portal: &str) -> Result<Vec<LeadId>, StoreError> {
    let mut ids: Vec<LeadId> = store.written_ids(portal)?;
    ids.extend(store.snapshot_ids(portal)?);
    ids.sort_by(|a, b| a.len().cmp(&b.len()).then_with(|| a.cmp(b)));
    ids.dedup();
    Ok(ids)
}

/// Load the stored job.
pub fn load(store: &Store) -> Result<Option<Job>, StoreError> {
    Ok(store
        .meta_get(JOB_KEY)?
        .and_then(|s| serde_json::from_str(&s).ok()))
}

/// Keep the job (made durable by the caller's flush).
pub fn save(store: &Store, job: &Job) -> Result<(), StoreError> {
    store.meta_set(
        JOB_KEY,
        &serde_json::to_string(job).expect("a job always serializes"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(tasks: TaskPolicy) -> Job {
        Job {
            id: "1".into(),
            request: RescoreRequest {
                portal: None,
                target: Target::All,
                dry_run: false,
                tasks,
            },
            plans: vec![PortalPlan {
                portal: "p".into(),
                leads: vec!["1".into(), "2".into(), "3".into()],
                next: 2,
            }],
            started_at: Utc::now(),
            finished_at: None,
            tasks_by_rep: BTreeMap::new(),
            report: None,
        }
    }

    #[test]
    fn tasks_follow_the_policy_and_the_cap_per_rep() {
        let none = job(TaskPolicy::None);
        assert!(!none.task_allowed(Some("7")));
        let mut capped = job(TaskPolicy::NewCrossings { per_rep: 2 });
        assert!(capped.task_allowed(Some("7")));
        capped.tasks_by_rep.insert("7".into(), 2);
        assert!(!capped.task_allowed(Some("7")));
        assert!(capped.task_allowed(Some("8")));
        assert_eq!((capped.total(), capped.queued()), (3, 2));
        assert!(!capped.all_queued());
    }

    #[test]
    fn requests_read_as_the_cli_and_http_send_them() {
        let r: RescoreRequest = serde_json::from_str(
            r#"{"portal":"main","target":{"kind":"since","since":"2026-11-01T00:00:00Z"},"tasks":{"mode":"new_crossings","per_rep":3}}"#,
        )
        .unwrap();
        assert_eq!(r.tasks, TaskPolicy::NewCrossings { per_rep: 3 });
        assert!(!r.dry_run);
        assert!(matches!(r.target, Target::Since { .. }));
    }
}

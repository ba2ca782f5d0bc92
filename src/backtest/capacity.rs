//! The capacity view: how many "call now" tasks a threshold would have given each rep,
//! and which threshold fits what reps can really call.
//!
//! A lead makes a task when its score ever went above the threshold during its life up
//! to the as-of instant (one task per lead: re-arming is rare and left out). Its score
//! is taken at creation and right after each activity, the only instants a score can
//! rise (decay and windows only lower it; a negative signal leaving its window is the
//! one exception, and is not modelled). Rates are per rep per working day (5 of 7).

use std::collections::BTreeMap;

use serde::Serialize;

use super::analyze::Scored;
use super::asof::known_before;
use super::{ClosedLead, Outcome};
use crate::scoring::Model;

/// One threshold's figures.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ThresholdRow {
    /// A task when the score goes above this.
    pub threshold: i32,
    pub tasks: usize,
    /// Tasks per rep per working day, all reps.
    pub per_rep_day: f64,
    /// The busiest rep's tasks per working day.
    pub busiest_per_day: f64,
    /// Share of won leads that would have had a task.
    pub wins_covered: f64,
    /// Share of tasks whose lead was won.
    pub precision: Option<f64>,
}

/// The capacity section of the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Capacity {
    pub working_days: f64,
    pub reps: usize,
    /// The busiest rep at the configured threshold.
    pub busiest_rep: Option<String>,
    /// At the model's `call_now_above`.
    pub current: ThresholdRow,
    /// Tasks a rep can take per working day (`--capacity`).
    pub capacity: Option<f64>,
    /// The lowest threshold whose busiest rep stays within `capacity`.
    pub fitting: Option<ThresholdRow>,
    /// Every 5 points, for the chart and the table.
    pub curve: Vec<ThresholdRow>,
}

/// The highest score each lead reached from creation to its as-of instant.
pub fn peaks(model: &Model, leads: &[ClosedLead], scored: &[Scored]) -> Vec<i32> {
    leads
        .iter()
        .zip(scored)
        .map(|(c, s)| {
            let acts = known_before(&c.activities, s.at);
            let start = c.created_at.min(s.at);
            let mut peak = model.total_only(c.lead_at(start), acts, start);
            for a in acts {
                peak = peak.max(model.total_only(c.lead_at(a.at), acts, a.at));
            }
            peak.max(s.total)
        })
        .collect()
}

fn row(
    threshold: i32,
    peaks: &[i32],
    reps: &[usize],
    won: &[bool],
    n_reps: usize,
    days: f64,
) -> ThresholdRow {
    let mut per_rep = vec![0usize; n_reps];
    let (mut tasks, mut won_tasks) = (0, 0);
    for i in 0..peaks.len() {
        if peaks[i] > threshold {
            tasks += 1;
            per_rep[reps[i]] += 1;
            won_tasks += usize::from(won[i]);
        }
    }
    let wins = won.iter().filter(|w| **w).count();
    ThresholdRow {
        threshold,
        tasks,
        per_rep_day: tasks as f64 / n_reps.max(1) as f64 / days,
        busiest_per_day: per_rep.iter().copied().max().unwrap_or(0) as f64 / days,
        wins_covered: if wins == 0 {
            0.0
        } else {
            won_tasks as f64 / wins as f64
        },
        precision: (tasks > 0).then(|| won_tasks as f64 / tasks as f64),
    }
}

/// The capacity section for `model` on scored leads.
pub fn capacity(
    model: &Model,
    leads: &[ClosedLead],
    scored: &[Scored],
    capacity: Option<f64>,
) -> Capacity {
    let peaks = peaks(model, leads, scored);
    let mut rep_ids: BTreeMap<String, usize> = BTreeMap::new();
    let reps: Vec<usize> = leads
        .iter()
        .map(|c| {
            let id = c.rep().unwrap_or("(none)").to_string();
            let n = rep_ids.len();
            *rep_ids.entry(id).or_insert(n)
        })
        .collect();
    let won: Vec<bool> = leads.iter().map(|c| c.outcome == Outcome::Won).collect();
    let first = leads.iter().map(|c| c.created_at).min();
    let last = scored.iter().map(|s| s.at).max();
    let days = match (first, last) {
        (Some(a), Some(b)) => ((b - a).num_seconds() as f64 / 86_400.0 * 5.0 / 7.0).max(1.0),
        _ => 1.0,
    };
    let n_reps = rep_ids.len();
    let threshold = model.triggers().call_now_above;
    let current = row(threshold, &peaks, &reps, &won, n_reps, days);
    let busiest_rep = {
        let mut per = vec![0usize; n_reps];
        for (i, p) in peaks.iter().enumerate() {
            per[reps[i]] += usize::from(*p > threshold);
        }
        rep_ids
            .iter()
            .max_by_key(|(id, &i)| (per[i], std::cmp::Reverse((*id).clone())))
            .filter(|(_, &i)| per[i] > 0)
            .map(|(id, _)| id.clone())
    };
    let fitting = capacity.and_then(|cap| {
        (model.min()..model.max())
            .map(|t| row(t, &peaks, &reps, &won, n_reps, days))
            .find(|r| r.busiest_per_day <= cap)
    });
    let curve = (model.min()..model.max())
        .filter(|t| (t - model.min()) % 5 == 0)
        .map(|t| row(t, &peaks, &reps, &won, n_reps, days))
        .collect();
    Capacity {
        working_days: days,
        reps: n_reps,
        busiest_rep,
        current,
        capacity,
        fitting,
        curve,
    }
}

//! Per-rep daily capacity of call-now tasks (`[portal.task.capacity]`).
//!
//! A rep calls only so many leads a day. Each new crossing takes a slot of its rep's
//! working day (the portal's time zone) before its intent is flushed; one that finds
//! the day full goes to the fallback rep while that rep has room, or waits: its crossing
//! stays armed, a waiting record keeps its score, and a timer at the next working day's
//! start scores it again. On a day off (weekly, or a holiday) every crossing waits. Within a turn the highest scores go first, and a lead waiting since
//! an earlier day keeps its place ahead of lower-scored newcomers. The exactly-once
//! guarantees are the trigger's own: a waiting lead has no intent and no task, and the
//! retry of a recorded intent is never held back (its slot was counted already).

use std::cmp::Reverse;
use std::collections::HashSet;

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use tracing::{info, warn};

use super::trigger::Fire;
use super::{Pipeline, PipelineError, PortalRuntime};
use crate::config::CapacitySection;
use crate::store::{PendingEntry, Store, StoreError, Waiting};

/// A waiting record older than this (days) no longer holds a slot for its lead: the
/// lead was deleted or moved on without being scored again.
const STALE_DAYS: i64 = 7;

/// What admission decided for one crossing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Create the task now.
    Go,
    /// The rep's day is full: score the lead again at `until` (the next working
    /// day's start).
    Wait { until: DateTime<Utc> },
}

/// The portal's calendar day at `now`, and when the next working day after it starts
/// (weekly days off and holidays skipped; at most a year ahead).
pub fn day_of(cap: &CapacitySection, now: DateTime<Utc>) -> (NaiveDate, DateTime<Utc>) {
    let off = cap.offset();
    let day = now.with_timezone(&off).date_naive();
    let mut next = day.succ_opt().unwrap_or(day);
    for _ in 0..366 {
        if cap.is_working(next) {
            break;
        }
        next = next.succ_opt().unwrap_or(next);
    }
    let next = next
        .and_time(NaiveTime::MIN)
        .and_local_timezone(off)
        .single()
        .map(|d| d.with_timezone(&Utc))
        .unwrap_or(now + chrono::Duration::days(1));
    (day, next)
}

/// Decide which crossings get their task now: highest scores first, each fresh one
/// taking a slot (counted in the store, flushed by the caller with the intents), a
/// reassignment to the fallback rep where the own rep is full, or a waiting record.
pub fn admit(
    store: &Store,
    portal: &str,
    cap: &CapacitySection,
    fires: &mut [Fire],
    now: DateTime<Utc>,
) -> Result<Vec<Admit>, StoreError> {
    let (day, next) = day_of(cap, now);
    let working = cap.is_working(day);
    let stale = day - chrono::Duration::days(STALE_DAYS);
    let waiting = store.waiting_all(portal)?;
    let batch: HashSet<String> = fires.iter().map(|f| f.lead_id().to_string()).collect();
    let mut order: Vec<usize> = (0..fires.len()).collect();
    order.sort_by_key(|&i| Reverse(fires[i].score()));
    let mut out = vec![Admit::Go; fires.len()];
    for i in order {
        if !fires[i].fresh() {
            continue;
        }
        let lead = fires[i].lead_id().to_string();
        let rep = fires[i].responsible().unwrap_or("").to_string();
        let score = fires[i].score();
        // Leads that waited since an earlier day with a higher score come first.
        let room = |rep: &str| -> Result<bool, StoreError> {
            let ahead = waiting
                .iter()
                .filter(|(l, w)| {
                    w.rep == rep
                        && w.since < day
                        && w.since >= stale
                        && w.score > score
                        && !batch.contains(l)
                })
                .count() as u32;
            Ok(store.capacity_used(portal, day, rep)? + ahead < cap.per_rep_per_day)
        };
        let fallback = cap.fallback_responsible.as_deref().filter(|fb| *fb != rep);
        // On a day off nobody reads a task, so every crossing waits like an overflow.
        if working && room(&rep)? {
            store.capacity_take(portal, day, &rep)?;
            store.remove_waiting(portal, &lead)?;
        } else if let Some(fb) = fallback.filter(|fb| working && room(fb).unwrap_or(false)) {
            store.capacity_take(portal, day, fb)?;
            fires[i].reassign(fb);
            store.remove_waiting(portal, &lead)?;
        } else {
            let since = waiting
                .iter()
                .find(|(l, _)| *l == lead)
                .map(|(_, w)| w.since)
                .unwrap_or(day);
            let w = Waiting {
                rep,
                score,
                since,
                at: now,
            };
            store.set_waiting(portal, &lead, &w)?;
            out[i] = Admit::Wait { until: next };
        }
    }
    Ok(out)
}

/// A crossing of the turn: its entry, the rep it counts for, the task to create.
pub(super) type TurnFire = (PendingEntry, Option<String>, Fire);

impl Pipeline {
    /// Apply the portal's capacity to a turn's crossings: the waiting ones get a timer
    /// at the next working day's start and their entries finish; the rest come back to be fired.
    pub(super) async fn admit_fires(
        &self,
        rt: &PortalRuntime,
        crossings: Vec<TurnFire>,
    ) -> Vec<TurnFire> {
        let Some(cap) = &rt.portal.task.capacity else {
            return crossings;
        };
        let portal = &rt.portal.id;
        let (mut meta, mut fires): (Vec<_>, Vec<_>) = crossings
            .into_iter()
            .map(|(e, rep, f)| ((e, rep), f))
            .unzip();
        let decided = match admit(&self.store, portal, cap, &mut fires, self.now()) {
            Ok(d) => d,
            Err(err) => {
                let err = PipelineError::Store(err);
                for (e, _) in &meta {
                    self.fail(rt, e, &err).await;
                }
                return Vec::new();
            }
        };
        let mut go = Vec::new();
        let mut waited = Vec::new();
        for (((e, rep), f), d) in meta.drain(..).zip(fires).zip(decided) {
            match d {
                Admit::Go => go.push((e, rep, f)),
                Admit::Wait { until } => waited.push((e, f.lead_id().to_string(), until)),
            }
        }
        for (_, lead, until) in &waited {
            // The lead's own decay timer may come first: keep the earlier one.
            let at = match self.store.timer_at(portal, lead) {
                Ok(Some(t)) if t < *until => t,
                _ => *until,
            };
            if let Err(err) = self.store.set_timer(portal, lead, Some(at)) {
                warn!(error = %err, "cannot set the timer of a lead waiting for capacity");
            }
            info!(portal = %portal, lead = %lead, until = %until, "call-now task waits: the rep's day is full");
        }
        if !waited.is_empty() {
            if let Err(err) = self.store.flush().await {
                let err = PipelineError::Store(err);
                for (e, _, _) in &waited {
                    self.fail(rt, e, &err).await;
                }
                return go;
            }
            for (e, _, _) in &waited {
                self.finish(e).await;
            }
        }
        go
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap(days: Option<&[&str]>, holidays: &[&str], offset: Option<&str>) -> CapacitySection {
        CapacitySection {
            per_rep_per_day: 2,
            fallback_responsible: None,
            utc_offset: offset.map(String::from),
            working_days: days.map(|d| d.iter().map(|s| s.to_string()).collect()),
            holidays: holidays.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn the_next_working_day_skips_weekends_and_holidays() {
        // Friday 4 December 2026, 15:00 Moscow time.
        let friday = at("2026-12-04T12:00:00Z");
        let c = cap(None, &[], Some("+03:00"));
        let (day, next) = day_of(&c, friday);
        assert_eq!(day.to_string(), "2026-12-04");
        assert!(c.is_working(day));
        assert_eq!(next, at("2026-12-06T21:00:00Z"), "Monday 00:00 in Moscow");
        // Saturday is not a working day, and it too waits for Monday.
        let (sat, next) = day_of(&c, at("2026-12-05T09:00:00Z"));
        assert!(!c.is_working(sat));
        assert_eq!(next, at("2026-12-06T21:00:00Z"));
        // New year: 31 December (Thursday) → the holidays up to 8 January → Monday 11th.
        let ny = cap(
            None,
            &[
                "2027-01-01",
                "2027-01-04",
                "2027-01-05",
                "2027-01-06",
                "2027-01-07",
                "2027-01-08",
            ],
            None,
        );
        let (_, next) = day_of(&ny, at("2026-12-31T10:00:00Z"));
        assert_eq!(next, at("2027-01-11T00:00:00Z"));
    }

    #[test]
    fn working_days_are_named_in_english_or_russian() {
        let c = cap(Some(&["пн", "Tuesday", "сб"]), &[], None);
        let monday = NaiveDate::from_ymd_opt(2026, 11, 30).unwrap();
        let week: Vec<bool> = (0..7)
            .map(|i| c.is_working(monday + chrono::Duration::days(i)))
            .collect();
        assert_eq!(week, [true, true, false, false, false, true, false]);
        // Calendar days when every day is listed (the old behaviour).
        let all = cap(
            Some(&["mon", "tue", "wed", "thu", "fri", "sat", "sun"]),
            &[],
            None,
        );
        let (_, next) = day_of(&all, at("2026-12-05T09:00:00Z"));
        assert_eq!(next, at("2026-12-06T00:00:00Z"));
    }
}

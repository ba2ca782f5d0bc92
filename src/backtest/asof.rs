//! The instant a closed lead is scored at, and what was known then.
//!
//! A backtest that scores a lead with activities from after its outcome (the onboarding
//! call of a won deal) flatters the model: that is leakage. Each lead is scored at an
//! instant chosen relative to its own life, with only the activities *strictly before*
//! it. Fit fields are cut the same way when the source keeps their history (amoCRM's
//! change events, [`super::FitHistory`]); otherwise they are today's values, and the
//! report says which is which.

use std::fmt;

use chrono::{DateTime, TimeDelta, Utc};

use serde::Serialize;

use super::ClosedLead;
use crate::lead::Activity;

/// Where in a lead's life it is scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsOf {
    /// `outcome` / `outcome-2d`: just before the outcome, or this long before it.
    BeforeOutcome(TimeDelta),
    /// `created+7d`: this long after the lead was created (never past its outcome).
    AfterCreated(TimeDelta),
}

impl Default for AsOf {
    fn default() -> Self {
        AsOf::BeforeOutcome(TimeDelta::zero())
    }
}

fn parse_span(s: &str) -> Result<TimeDelta, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a number then m, h, d or w"))?;
    match unit {
        "m" => Ok(TimeDelta::minutes(n)),
        "h" => Ok(TimeDelta::hours(n)),
        "d" => Ok(TimeDelta::days(n)),
        "w" => Ok(TimeDelta::weeks(n)),
        _ => Err(format!("{s:?}: the unit is m, h, d or w")),
    }
}

impl std::str::FromStr for AsOf {
    type Err = String;
    /// `outcome`, `outcome-3d`, `created+7d`, `created+12h` (units m, h, d, w).
    fn from_str(s: &str) -> Result<AsOf, String> {
        let s = s.trim();
        if s == "outcome" {
            return Ok(AsOf::default());
        }
        if let Some(rest) = s.strip_prefix("outcome-") {
            return parse_span(rest).map(AsOf::BeforeOutcome);
        }
        if let Some(rest) = s.strip_prefix("created+") {
            return parse_span(rest).map(AsOf::AfterCreated);
        }
        Err(format!(
            "--as-of {s:?}: use outcome, outcome-<N><unit> or created+<N><unit> (unit m, h, d, w)"
        ))
    }
}

impl fmt::Display for AsOf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let span = |d: &TimeDelta| {
            if d.num_days() * 86_400 == d.num_seconds() && d.num_days() != 0 {
                format!("{}d", d.num_days())
            } else if d.num_hours() * 3600 == d.num_seconds() && d.num_hours() != 0 {
                format!("{}h", d.num_hours())
            } else {
                format!("{}m", d.num_minutes())
            }
        };
        match self {
            AsOf::BeforeOutcome(d) if d.is_zero() => f.write_str("outcome"),
            AsOf::BeforeOutcome(d) => write!(f, "outcome-{}", span(d)),
            AsOf::AfterCreated(d) => write!(f, "created+{}", span(d)),
        }
    }
}

impl AsOf {
    /// The instant this lead is scored at, and whether it had to be pulled back to the
    /// outcome (a `created+30d` of a lead closed after 10 days is scored at its close).
    pub fn instant(&self, c: &ClosedLead) -> (DateTime<Utc>, bool) {
        let t = match self {
            AsOf::BeforeOutcome(d) => c.closed_at - *d,
            AsOf::AfterCreated(d) => c.created_at + *d,
        };
        let t = t.max(c.created_at);
        if t > c.closed_at {
            (c.closed_at, true)
        } else {
            (t, false)
        }
    }
}

/// The activities known strictly before `at`: the only ones a score as of `at` may see.
/// `acts` must be sorted by time (the readers sort them), so this is a prefix.
pub fn known_before(acts: &[Activity], at: DateTime<Utc>) -> &[Activity] {
    let n = acts.partition_point(|a| a.at < at);
    &acts[..n]
}

/// Where a backtest's fit fields came from, for the report.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FitSources {
    /// Rebuilt as of each lead's instant from the CRM's change log.
    pub replayed: Vec<String>,
    /// Today's values (the source gives no history of them).
    pub today: Vec<String>,
    /// Leads scored with an earlier value of a replayed field than today's.
    pub changed_leads: usize,
    /// Leads whose source gave no history at all (every fit field today's).
    pub without_history: usize,
}

impl FitSources {
    /// What `leads`, scored at `instants`, saw of their fit fields.
    pub fn of(leads: &[ClosedLead], instants: &[DateTime<Utc>]) -> FitSources {
        let mut f = FitSources::default();
        for (c, at) in leads.iter().zip(instants) {
            let Some(h) = &c.fit_history else {
                f.without_history += 1;
                continue;
            };
            for (into, from) in [(&mut f.replayed, &h.replayed), (&mut f.today, &h.today)] {
                for name in from {
                    if !into.contains(name) {
                        into.push(name.clone());
                    }
                }
            }
            f.changed_leads += usize::from(!std::ptr::eq(c.lead_at(*at), &c.lead));
        }
        f.replayed.sort();
        f.today.sort();
        f
    }

    /// The report's caveat on fit fields (`fallback` when no lead has history).
    pub fn note(&self, fallback: &str) -> String {
        if self.replayed.is_empty() {
            return fallback.to_string();
        }
        let mut s = format!(
            "Fit fields replayed from the CRM's change log as of each lead's instant: {}; \
             {} lead(s) were scored with a value changed later. A field with no change \
             event keeps today's value (the log reaches back only as far as the CRM keeps it).",
            self.replayed.join(", "),
            self.changed_leads
        );
        if !self.today.is_empty() {
            s.push_str(&format!(
                " Today's values (no history read): {}.",
                self.today.join(", ")
            ));
        }
        if self.without_history > 0 {
            s.push_str(&format!(
                " {} lead(s) came without history: all their fit fields are today's values.",
                self.without_history
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_the_documented_forms() {
        for s in [
            "outcome",
            "outcome-3d",
            "created+7d",
            "created+12h",
            "created+2w",
        ] {
            let a: AsOf = s.parse().unwrap();
            let back = a.to_string();
            let again: AsOf = back.parse().unwrap();
            assert_eq!(a, again, "{s} -> {back}");
        }
        assert_eq!(
            "created+7d".parse::<AsOf>(),
            Ok(AsOf::AfterCreated(TimeDelta::days(7)))
        );
        assert!("created-7d".parse::<AsOf>().is_err());
        assert!("created+7y".parse::<AsOf>().is_err());
    }

    fn at(day: u32) -> DateTime<Utc> {
        chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 3, day, 12, 0, 0).unwrap()
    }

    /// Employees 10 until day 5, 40 until day 9, 600 since (today's).
    fn closed_with_history() -> ClosedLead {
        let lead = |n: f64| crate::lead::Lead {
            id: "7".into(),
            employees: Some(n),
            ..crate::lead::Lead::default()
        };
        ClosedLead {
            lead: lead(600.0),
            activities: Vec::new(),
            created_at: at(1),
            closed_at: at(20),
            outcome: super::super::Outcome::Won,
            amount: None,
            rep_id: None,
            loss_reason: None,
            stage: None,
            fit_history: Some(super::super::FitHistory {
                replayed: vec!["employees".into()],
                today: vec!["email".into(), "position".into()],
                earlier: vec![
                    super::super::EarlierFit {
                        until: at(5),
                        lead: lead(10.0),
                    },
                    super::super::EarlierFit {
                        until: at(9),
                        lead: lead(40.0),
                    },
                ],
            }),
        }
    }

    #[test]
    fn a_lead_as_of_an_instant_has_the_fields_before_the_next_change() {
        let c = closed_with_history();
        let employees = |t| c.lead_at(t).employees;
        assert_eq!(employees(at(2)), Some(10.0));
        assert_eq!(
            employees(at(5)),
            Some(10.0),
            "a change at the instant is not known"
        );
        assert_eq!(employees(at(6)), Some(40.0));
        assert_eq!(employees(at(9)), Some(40.0));
        assert_eq!(
            employees(at(10)),
            Some(600.0),
            "today's after the last change"
        );
        let mut plain = c.clone();
        plain.fit_history = None;
        assert_eq!(plain.lead_at(at(2)).employees, Some(600.0));
    }

    #[test]
    fn the_fit_note_names_replayed_and_todays_fields() {
        let c = closed_with_history();
        let mut plain = c.clone();
        plain.fit_history = None;
        let f = FitSources::of(&[c.clone(), c, plain], &[at(2), at(12), at(2)]);
        assert_eq!(f.replayed, vec!["employees"]);
        assert_eq!(f.today, vec!["email", "position"]);
        assert_eq!((f.changed_leads, f.without_history), (1, 1));
        let note = f.note("fallback");
        assert!(
            note.contains(
                "replayed from the CRM's change log as of each lead's instant: employees;"
            ),
            "{note}"
        );
        assert!(
            note.contains("1 lead(s) were scored with a value changed later"),
            "{note}"
        );
        assert!(
            note.contains("Today's values (no history read): email, position."),
            "{note}"
        );
        assert!(note.contains("1 lead(s) came without history"), "{note}");
        assert_eq!(FitSources::of(&[], &[]).note("fallback"), "fallback");
    }
}

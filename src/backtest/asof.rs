//! The instant a closed lead is scored at, and what was known then.
//!
//! A backtest that scores a lead with activities from after its outcome (the onboarding
//! call of a won deal) flatters the model: that is leakage. Each lead is scored at an
//! instant chosen relative to its own life, with only the activities *strictly before*
//! it. Fit fields cannot be cut that way (exports hold today's values); the report says so.

use std::fmt;

use chrono::{DateTime, TimeDelta, Utc};

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
}

//! Checking the tiers: they must cover the score's range without gaps or overlaps.

use std::collections::HashSet;

use super::compile::Errors;
use super::spec::{ScoringSpec, TierSpec};
use super::TierInfo;

/// The tiers sorted lowest first, with every coverage mistake pushed to `errs`.
pub(crate) fn compile_tiers(spec: &ScoringSpec, errs: &mut Errors) -> Vec<TierInfo> {
    if spec.tiers.is_empty() {
        errs.push("scoring.tiers", "at least one tier is needed");
        return Vec::new();
    }
    let mut ids = HashSet::new();
    let mut sane: Vec<(usize, &TierSpec)> = Vec::new();
    for (i, t) in spec.tiers.iter().enumerate() {
        let p = format!("scoring.tiers[{i}]");
        if t.id.trim().is_empty() {
            errs.push(format!("{p}.id"), "tier id must not be empty");
        } else if !ids.insert(t.id.as_str()) {
            errs.push(format!("{p}.id"), format!("duplicate tier id '{}'", t.id));
        }
        if t.min > t.max {
            errs.push(
                format!("{p}.min"),
                format!("tier min ({}) is greater than its max ({})", t.min, t.max),
            );
        } else {
            sane.push((i, t));
        }
    }
    // Coverage is checked on the well-formed tiers, lowest first.
    sane.sort_by_key(|(i, t)| (t.min, t.max, *i));
    if let Some(&(i, first)) = sane.first() {
        if first.min != spec.min {
            errs.push(
                format!("scoring.tiers[{i}].min"),
                format!(
                    "the lowest tier must start at the score's min ({}), not {}",
                    spec.min, first.min
                ),
            );
        }
    }
    for pair in sane.windows(2) {
        let ((_, a), (j, b)) = (pair[0], pair[1]);
        if b.min <= a.max {
            errs.push(
                format!("scoring.tiers[{j}].min"),
                format!(
                    "tier '{}' ({}..={}) overlaps tier '{}' ({}..={})",
                    b.id, b.min, b.max, a.id, a.min, a.max
                ),
            );
        } else if b.min > a.max.saturating_add(1) {
            errs.push(
                format!("scoring.tiers[{j}].min"),
                format!(
                    "gap: no tier covers {}..={} (tier '{}' ends at {}, '{}' starts at {})",
                    a.max.saturating_add(1),
                    b.min - 1,
                    a.id,
                    a.max,
                    b.id,
                    b.min
                ),
            );
        }
    }
    if let Some(&(i, last)) = sane.iter().max_by_key(|(i, t)| (t.max, usize::MAX - *i)) {
        if last.max != spec.max {
            errs.push(
                format!("scoring.tiers[{i}].max"),
                format!(
                    "the highest tier must end at the score's max ({}), not {}",
                    spec.max, last.max
                ),
            );
        }
    }
    sane.iter()
        .map(|(_, t)| TierInfo {
            id: t.id.clone(),
            label: t.label.clone().unwrap_or_else(|| t.id.clone()),
            min: t.min,
            max: t.max,
        })
        .collect()
}

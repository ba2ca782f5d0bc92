//! The scoring engine: pure, deterministic, no I/O and no clock.
//!
//! `Model::compile` checks a [`spec::ScoringSpec`] (collecting every mistake with its key
//! path) and turns it into a fast form: regexes compiled once, lists lowercased once,
//! fields resolved to an enum. `Model::score` then evaluates a lead and its activities at
//! a caller-given `now` and returns a [`Score`] whose breakdown explains every point.
//!
//! Invariants of every [`Score`]: the entries' `points` sum to `unclamped`, which is also
//! the sum of the groups' `points`; `total` is `unclamped` clamped to the model's bounds,
//! then to the qualification gate's cap when a required criterion is not known-yes;
//! `tier` is the tier containing `total`.

mod classify;
mod compile;
mod cond;
mod eval;
mod explain;
mod group;
#[cfg(test)]
mod group_tests;
mod intent;
#[cfg(test)]
mod intent_tests;
mod qualify;
#[cfg(test)]
mod qualify_tests;
pub mod spec;
#[cfg(test)]
mod tests;
mod text;
mod tiers;
mod walk;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::lead::{Activity, Lead};

pub use explain::render_table;
pub use group::{Company, CompanyKey, Member, RuleTask};
pub use qualify::{CriterionState, Known, Qualification};
pub use spec::Language;

/// A mistake in the `[scoring]` section, by key path (e.g. `scoring.rules[3].when.regex`,
/// 0-based indices) so config loading can point at the file's line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for SpecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

impl std::error::Error for SpecError {}

/// A compiled scoring model, shared read-only by all workers (it is `Send + Sync`).
#[derive(Debug)]
pub struct Model {
    pub(crate) language: Language,
    /// Where the dates on the lead card are told.
    pub(crate) utc_offset: chrono::FixedOffset,
    /// A fingerprint of the spec compiled, so a reload can tell a changed model from
    /// the same one loaded again.
    pub(crate) fingerprint: u64,
    pub(crate) min: i32,
    pub(crate) max: i32,
    pub(crate) groups: Vec<compile::Group>,
    pub(crate) rules: Vec<compile::Rule>,
    /// Sorted by `min`; they cover `min..=max` exactly.
    pub(crate) tiers: Vec<TierInfo>,
    pub(crate) triggers: spec::TriggerSpec,
    /// `true` when some activity rule exists (lets fit-only models skip ordering work).
    pub(crate) has_activity_rules: bool,
    /// The activity rules' subject and URL patterns, matched once per activity.
    pub(crate) classifier: classify::Classifier,
    /// The activity rules by the kind they count, for one walk over the activities.
    pub(crate) kinds: walk::KindIndex,
    /// `true` when the clock alone can change a score (activity rules, or a
    /// `within_months` condition in a rule or a qualification criterion).
    pub(crate) timed: bool,
    /// The qualification gate, when `[scoring.qualification]` is configured.
    pub(crate) gate: Option<qualify::Gate>,
}

/// A tier as the model knows it, for summaries (`leadscore check`) and CRM mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierInfo {
    /// `cold`, `warm`, `hot`, ...: the key of the CRM enumeration value.
    pub id: String,
    /// What reps read (the id when the config gives no label).
    pub label: String,
    /// Inclusive lower bound.
    pub min: i32,
    /// Inclusive upper bound.
    pub max: i32,
}

/// A rule's identity and weight, as analyses need them (see [`Model::rule_infos`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleInfo {
    /// The stable id from the config.
    pub id: String,
    /// What reps read.
    pub label: String,
    /// Group id.
    pub group: String,
    /// Points per match or per occurrence.
    pub points: i32,
    /// An activity rule (counts occurrences) rather than a field rule.
    pub activity: bool,
}

/// The result of scoring one lead: the number, its tier and the reasons for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Score {
    /// `unclamped` clamped to the model's bounds: the value written to the CRM.
    pub total: i32,
    /// Id of the tier containing `total`.
    pub tier: String,
    /// That tier's label, in the model's language.
    pub tier_label: String,
    /// Every declared group, in config order, with its subtotal after its cap.
    pub groups: Vec<GroupTotal>,
    /// One entry per rule that fired, in config order.
    pub breakdown: Vec<Entry>,
    /// Fit rules that could not be judged because the lead lacks the data.
    pub gaps: Vec<DataGap>,
    /// Sum of the capped group subtotals, before clamping to the model's bounds.
    pub unclamped: i32,
    /// The qualification state, when the model has `[scoring.qualification]`; its cap
    /// may have lowered `total` below the clamped `unclamped`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qualification: Option<Qualification>,
}

/// A group's subtotal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupTotal {
    pub id: String,
    pub label: String,
    /// Subtotal after the group's cap (the sum of its entries' `points`).
    pub points: i32,
    /// Subtotal before the cap (after decay and rounding).
    pub raw_points: i32,
    /// Whether the cap changed the subtotal.
    pub capped: bool,
}

/// Why a rule contributed what it did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub rule_id: String,
    pub label: String,
    /// Group id.
    pub group: String,
    /// Points given, after decay and the group cap.
    pub points: i32,
    /// Points before cap and decay (for activity rules: points × counted occurrences).
    pub raw_points: i32,
    /// The group cap reduced this entry.
    pub capped: bool,
    /// Time decay reduced this entry.
    pub decayed: bool,
    pub evidence: Evidence,
}

/// What the rule saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Evidence {
    /// A fit rule matched this value of this field (for e-mail domain lists: the domain;
    /// for `exists = false`: an empty value).
    Field { field: String, value: String },
    /// An activity rule counted `count` occurrences between `oldest` and `newest`.
    Activities {
        count: u32,
        newest: DateTime<Utc>,
        oldest: DateTime<Utc>,
    },
    /// A spike rule saw `recent` activities in the last `recent_days`, against
    /// `baseline_per_day` a day before that.
    Spike {
        recent: u32,
        recent_days: f64,
        baseline_per_day: f64,
        newest: DateTime<Utc>,
    },
    /// A high-intent rule saw this event (the newest in its window): its kind, its
    /// subject (or URL) when it has one, and its time.
    Intent {
        kind: String,
        subject: Option<String>,
        at: DateTime<Utc>,
    },
    /// A buying-group rule saw `people` distinct people of `company` (its display name)
    /// active in the last `window_days`.
    Group {
        people: u32,
        company: String,
        window_days: f64,
    },
}

/// A fit rule that gave 0 because the lead has no value for `field`: something for the
/// rep to ask, not a sign of a poor fit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataGap {
    pub rule_id: String,
    /// Neutral field name, e.g. `industry` or `custom.budget`.
    pub field: String,
}

impl Model {
    /// Check a spec and compile it; on failure returns every mistake found, each with
    /// the key path of the most specific offending key.
    pub fn compile(spec: &spec::ScoringSpec) -> Result<Model, Vec<SpecError>> {
        compile::compile(spec)
    }

    /// Score a lead at `now`. Pure and deterministic: the same inputs give the same
    /// `Score`. Activities dated after `now` are ignored.
    pub fn score(&self, lead: &Lead, activities: &[Activity], now: DateTime<Utc>) -> Score {
        self.score_impl(lead, activities, None, now)
    }

    /// [`Model::score`] with the lead's company aggregate (see [`Model::company_key`]),
    /// which buying-group rules count; without one they never fire.
    pub fn score_with(
        &self,
        lead: &Lead,
        activities: &[Activity],
        company: Option<&Company>,
        now: DateTime<Utc>,
    ) -> Score {
        self.score_impl(lead, activities, company, now)
    }

    /// [`Model::next_change`] with the lead's company aggregate: a colleague's activity
    /// leaving the window can end a buying group.
    pub fn next_change_with(
        &self,
        lead: &Lead,
        activities: &[Activity],
        company: Option<&Company>,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        self.next_change_impl(lead, activities, company, now)
    }

    /// The total only, without building the breakdown: the same number as
    /// `score(..).total`, for bulk re-scoring and backtests where allocation matters.
    pub fn total_only(&self, lead: &Lead, activities: &[Activity], now: DateTime<Utc>) -> i32 {
        self.total_impl(lead, activities, None, now)
    }

    /// The earliest time after `now` at which `score` would return a different `Score`
    /// with no new data (an activity leaves its window, a future-dated one starts to
    /// count, a decaying contribution's rounded points drop), or `None` if it never
    /// changes. Lets the pipeline re-score decaying leads without waiting for a webhook.
    /// Decay steps are rounded up to the next whole second.
    pub fn next_change(
        &self,
        lead: &Lead,
        activities: &[Activity],
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        self.next_change_impl(lead, activities, None, now)
    }

    /// Explanation language configured for the model.
    pub fn language(&self) -> Language {
        self.language
    }

    /// Same rules, groups, tiers and triggers as `other` (compiled from an equal spec)?
    pub fn same_rules(&self, other: &Model) -> bool {
        self.fingerprint == other.fingerprint
    }

    /// The UTC offset dates on the lead card are written in.
    pub fn utc_offset(&self) -> chrono::FixedOffset {
        self.utc_offset
    }

    /// Lowest possible total.
    pub fn min(&self) -> i32 {
        self.min
    }

    /// Highest possible total.
    pub fn max(&self) -> i32 {
        self.max
    }

    /// The tiers, sorted from lowest to highest.
    pub fn tiers(&self) -> &[TierInfo] {
        &self.tiers
    }

    /// The tier a total falls in (totals outside the bounds are clamped first).
    pub fn tier_for(&self, total: i32) -> &TierInfo {
        let t = total.clamp(self.min, self.max);
        self.tiers
            .iter()
            .find(|tier| tier.min <= t && t <= tier.max)
            .unwrap_or(&self.tiers[self.tiers.len() - 1])
    }

    /// Whether the model has a qualification gate (`[scoring.qualification]`).
    pub fn has_qualification(&self) -> bool {
        self.gate.is_some()
    }

    /// The "call now" thresholds of the model (portals may override them).
    pub fn triggers(&self) -> &spec::TriggerSpec {
        &self.triggers
    }

    /// Every rule in config order, for analyses that weigh rules against outcomes
    /// (backtest per-rule lift, `leadscore tune`) without reaching into the engine.
    pub fn rule_infos(&self) -> Vec<RuleInfo> {
        self.rules
            .iter()
            .map(|r| RuleInfo {
                id: r.id.clone(),
                label: r.label.clone(),
                group: self.groups[r.group].id.clone(),
                points: r.points,
                activity: matches!(r.body, compile::Body::Activity(_)),
            })
            .collect()
    }

    /// Each rule's input at `now`, in config order and in the rule's own units, before
    /// points, caps and rounding: 1 or 0 for a field rule (matched or not; a data gap is
    /// 0), the decayed number of counted occurrences for an activity rule. `points ×
    /// unit` is what the rule adds before its group cap, so a regression on these units
    /// suggests points on the config's own scale. Reuses `out` (cleared first).
    pub fn rule_units(
        &self,
        lead: &Lead,
        activities: &[Activity],
        now: DateTime<Utc>,
        out: &mut Vec<f64>,
    ) {
        self.rule_units_impl(lead, activities, now, out)
    }

    /// `(group id, number of rules)` in config order, for one-screen summaries.
    pub fn rules_per_group(&self) -> Vec<(&str, usize)> {
        self.groups
            .iter()
            .map(|g| (g.id.as_str(), g.rules.len()))
            .collect()
    }
}

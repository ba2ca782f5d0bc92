//! The `[scoring]` section of the config file, exactly as an admin writes it.
//!
//! These types only describe; `Model::compile` checks them (regexes, groups, tiers)
//! and turns them into the fast form the engine evaluates. Keeping the two apart lets
//! config validation report every mistake with its key path before anything runs.

use serde::{Deserialize, Serialize};

/// The whole scoring model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoringSpec {
    /// Language of the explanations reps read on the lead card.
    #[serde(default)]
    pub language: Language,
    /// UTC offset of the dates written on the lead card ("запрос демо 28.11"), e.g.
    /// "+03:00"; default Moscow time for Russian text, UTC for English. Cards carry
    /// dates, not ages, so the text never goes stale between writes.
    #[serde(default)]
    pub utc_offset: Option<String>,
    /// Lowest possible total (default 0).
    #[serde(default)]
    pub min: i32,
    /// Highest possible total (default 100).
    #[serde(default = "default_max")]
    pub max: i32,
    /// Groups of rules with caps, e.g. engagement at most 40.
    #[serde(default)]
    pub groups: Vec<GroupSpec>,
    pub rules: Vec<RuleSpec>,
    pub tiers: Vec<TierSpec>,
    #[serde(default)]
    pub triggers: TriggerSpec,
    /// The qualification gate (BANT, ANUM, AM or custom criteria); none by default.
    #[serde(default)]
    pub qualification: Option<QualificationSpec>,
}

/// `[scoring.qualification]`: which questions a lead must have answered before it may
/// be hot. Each criterion is known-yes (its `when` holds), known-no (its `no` holds) or
/// unknown; while a required one is not known-yes, the total is capped at `cap`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QualificationSpec {
    /// `BANT` (budget, authority, need, timeframe), `ANUM` (authority, need, urgency,
    /// money), `AM` (authority, money) or `custom` (the criteria named below).
    pub formula: String,
    /// Highest total of a lead whose required criteria are not all known-yes (default:
    /// the call-now threshold, so an unqualified lead is never hot).
    #[serde(default)]
    pub cap: Option<i32>,
    /// The criteria that gate the score (default: all of the formula's).
    #[serde(default)]
    pub require: Vec<String>,
    /// One condition per criterion, as `[[scoring.qualification.criteria]]`.
    #[serde(default)]
    pub criteria: Vec<CriterionSpec>,
}

/// One qualification criterion: when it is known to hold, when it is known not to, and
/// what the rep asks while it is unknown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CriterionSpec {
    /// `budget`/`money`, `authority`, `need`, `timeframe`/`urgency`, or a custom name.
    pub id: String,
    /// Known-yes: the same condition language as the rules.
    pub when: Condition,
    /// Known-no (e.g. the budget field says 0 or "нет"); without it, a lead is never
    /// known-no on this criterion.
    #[serde(default)]
    pub no: Option<Condition>,
    /// The question for the rep (defaults: "бюджет", "кто принимает решение",
    /// "задача/потребность", "сроки", or the English ones).
    #[serde(default)]
    pub question: Option<String>,
}

fn default_max() -> i32 {
    100
}

/// Explanation language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    #[default]
    Ru,
    En,
}

/// A group of rules whose subtotal is capped, so that no one kind of signal can
/// make a lead hot on its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupSpec {
    pub id: String,
    /// Shown in explanations; defaults to the id.
    #[serde(default)]
    pub label: Option<String>,
    /// Lowest subtotal the group may contribute (e.g. -20 so negatives cannot bury a lead).
    #[serde(default)]
    pub min: Option<i32>,
    /// Highest subtotal the group may contribute.
    #[serde(default)]
    pub max: Option<i32>,
}

/// One scoring rule: a condition on lead fields (`when`), a count of matching
/// activities (`activity`), a burst of activity against the lead's own baseline
/// (`spike`), one high-intent event in a window (`high_intent`) or several people of
/// the lead's company active at once (`buying_group`); exactly one of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Stable id: shown in breakdowns and kept in the score ledger.
    pub id: String,
    /// The group this rule belongs to (must be declared in `groups`).
    pub group: String,
    /// Human label reps read, e.g. "запрос демо".
    pub label: String,
    /// Points for a field match, or per matching activity. May be negative.
    pub points: i32,
    #[serde(default)]
    pub when: Option<Condition>,
    #[serde(default)]
    pub activity: Option<ActivitySpec>,
    #[serde(default)]
    pub spike: Option<SpikeSpec>,
    #[serde(default)]
    pub high_intent: Option<HighIntentSpec>,
    #[serde(default)]
    pub buying_group: Option<BuyingGroupSpec>,
    /// A task for the lead's rep each time the rule starts to hold (once per episode;
    /// for a buying group once per company, on its highest-scored lead). `{company}`,
    /// `{label}`, `{name}`, `{lead}` and `{score}` are filled in.
    #[serde(default)]
    pub task: Option<String>,
}

/// A buying group: at least `min_people` distinct people of the lead's company active
/// (activities of `kinds`) within the last `window_days`. Several people of one company
/// reading at once is a purchase being prepared, which no single lead shows.
///
/// The company is the value of `company_field` when the portal maps one (e.g.
/// `custom.company_id`), else the domain of the lead's e-mail; free mailbox domains are
/// never a company. The first `buying_group` rule's `company_field` and
/// `free_domains` define the company for every such rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuyingGroupSpec {
    /// Activity kinds that make a person active (empty: every kind).
    #[serde(default)]
    pub kinds: Vec<String>,
    /// The window, in days (default 7).
    #[serde(default = "default_intent_days")]
    pub window_days: f64,
    /// Distinct active people needed (default 3, at least 2).
    #[serde(default = "default_min_people")]
    pub min_people: u32,
    /// A lead field holding the CRM's company id (`custom.<name>` or a neutral name).
    #[serde(default)]
    pub company_field: Option<String>,
    /// Mailbox domains that are never a company (default: the common free ones).
    #[serde(default)]
    pub free_domains: Option<Vec<String>>,
}

fn default_min_people() -> u32 {
    3
}

/// A high-intent event: any activity of `kinds` (optionally matching `subject` / `url`
/// like an `activity` rule) in the last `window_days`. Scores its points once however
/// many there are: one demo request says what ten say, and the card names the newest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HighIntentSpec {
    /// Activity kinds that count (at least one).
    pub kinds: Vec<String>,
    #[serde(default)]
    pub direction: Option<crate::lead::Direction>,
    /// Regex the subject must match.
    #[serde(default)]
    pub subject: Option<String>,
    /// Regex the URL must match.
    #[serde(default)]
    pub url: Option<String>,
    /// The window, in days (default 7).
    #[serde(default = "default_intent_days")]
    pub window_days: f64,
}

fn default_intent_days() -> f64 {
    7.0
}

/// A sudden burst of activity: in the last `recent_days` at least `min_count`
/// activities of `kinds`, at a daily rate at least `factor` times the lead's own rate
/// over the `baseline_days` before that. A lead that reads ten pages in two days after
/// a quiet month is buying now; one that always reads ten is a regular reader.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpikeSpec {
    /// Activity kinds that count (empty: every kind).
    #[serde(default)]
    pub kinds: Vec<String>,
    /// The recent window, in days (default 2).
    #[serde(default = "default_recent_days")]
    pub recent_days: f64,
    /// The baseline window before it, in days (default 28).
    #[serde(default = "default_baseline_days")]
    pub baseline_days: f64,
    /// How many times the baseline daily rate the recent rate must reach (default 3).
    #[serde(default = "default_factor")]
    pub factor: f64,
    /// At least this many recent activities (default 3), so one visit after a silent
    /// month is not a spike.
    #[serde(default = "default_min_count")]
    pub min_count: u32,
}

fn default_recent_days() -> f64 {
    2.0
}
fn default_baseline_days() -> f64 {
    28.0
}
fn default_factor() -> f64 {
    3.0
}
fn default_min_count() -> u32 {
    3
}

/// A condition on lead fields. Exactly one operator key is set: a field test
/// (`field` plus one of `equals`, `in`, `range`, `regex`, `contains`, `exists`,
/// `email_domain_in`, `within_months`) or a combinator (`all`, `any`, `not`).
///
/// A flat table (not an enum) so that a mistake is reported by its key path.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// Neutral field name (see `lead::FIELD_NAMES`) or `custom.<name>`.
    #[serde(default)]
    pub field: Option<String>,
    /// Case-insensitive equality after trimming.
    #[serde(default)]
    pub equals: Option<String>,
    /// Case-insensitive membership.
    #[serde(default, rename = "in")]
    pub in_list: Option<Vec<String>>,
    /// Numeric range, half-open: `min <= value < max`, either side optional.
    #[serde(default)]
    pub range: Option<RangeSpec>,
    /// Regular expression (Rust `regex` syntax; add `(?i)` for case-insensitive).
    #[serde(default)]
    pub regex: Option<String>,
    /// Case-insensitive substring.
    #[serde(default)]
    pub contains: Option<String>,
    /// `true`: the field has a value; `false`: it has none.
    #[serde(default)]
    pub exists: Option<bool>,
    /// The domain of any e-mail of the lead is in this list (case-insensitive).
    #[serde(default)]
    pub email_domain_in: Option<Vec<String>>,
    /// The field holds a date (`2026-05-31`, `31.05.2026`) from today to N months ahead
    /// (UTC days): "the purchase is planned within 3 months".
    #[serde(default)]
    pub within_months: Option<u32>,
    #[serde(default)]
    pub all: Option<Vec<Condition>>,
    #[serde(default)]
    pub any: Option<Vec<Condition>>,
    #[serde(default)]
    pub not: Option<Box<Condition>>,
}

/// Half-open numeric range `[min, max)`.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeSpec {
    #[serde(default)]
    pub min: Option<f64>,
    #[serde(default)]
    pub max: Option<f64>,
}

/// Which activities a behaviour rule counts and how their points age.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivitySpec {
    /// Activity kind name (`call`, `demo_request`, `page_view`, ... or a custom kind).
    pub kind: String,
    #[serde(default)]
    pub direction: Option<crate::lead::Direction>,
    /// Regex the subject must match.
    #[serde(default)]
    pub subject: Option<String>,
    /// Regex the URL must match.
    #[serde(default)]
    pub url: Option<String>,
    /// Only activities in the last N days count.
    #[serde(default)]
    pub window_days: Option<f64>,
    /// At most this many occurrences score (the newest ones).
    #[serde(default)]
    pub max_count: Option<u32>,
    /// Each occurrence's points halve every N days.
    #[serde(default)]
    pub half_life_days: Option<f64>,
}

/// A score band: inclusive integer bounds. Tiers must cover `min..=max` of the model
/// without gaps or overlaps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierSpec {
    /// `cold`, `warm`, `hot`, ...: also the key for the CRM enumeration value.
    pub id: String,
    /// What reps read, e.g. "горячий".
    #[serde(default)]
    pub label: Option<String>,
    pub min: i32,
    pub max: i32,
}

/// Score-based triggers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerSpec {
    /// "Call now" fires when the score goes from `<= call_now_above` to `> call_now_above`.
    #[serde(default = "default_call_now")]
    pub call_now_above: i32,
    /// Hysteresis: a new crossing may fire only after the score fell below this mark.
    #[serde(default = "default_rearm")]
    pub rearm_below: i32,
}

fn default_call_now() -> i32 {
    70
}
fn default_rearm() -> i32 {
    60
}

impl Default for TriggerSpec {
    fn default() -> Self {
        TriggerSpec {
            call_now_above: default_call_now(),
            rearm_below: default_rearm(),
        }
    }
}

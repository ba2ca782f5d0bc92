//! Checking a `ScoringSpec` and compiling it into the form the engine evaluates.
//!
//! Every check pushes a `SpecError` and carries on, so an admin sees all mistakes in one
//! pass. Paths name the most specific key (`scoring.rules[2].when.any[0].regex`).

use std::collections::HashSet;

use chrono::TimeDelta;

use super::spec::{ActivitySpec, Condition, Language, RuleSpec, ScoringSpec, SpikeSpec};
use super::text::{lower_str, Pattern};
use super::{Model, SpecError};
use crate::lead::{ActivityKind, Direction, FIELD_NAMES};

/// A declared group with the indices of its rules (config order).
#[derive(Debug)]
pub(crate) struct Group {
    pub(crate) id: String,
    pub(crate) label: String,
    pub(crate) min: Option<i32>,
    pub(crate) max: Option<i32>,
    pub(crate) rules: Vec<usize>,
}

/// A compiled rule.
#[derive(Debug)]
pub(crate) struct Rule {
    pub(crate) id: String,
    pub(crate) label: String,
    pub(crate) group: usize,
    pub(crate) points: i32,
    pub(crate) body: Body,
    /// See [`Rule::timed`].
    pub(crate) timed: bool,
    /// The task template created once per episode of the rule.
    pub(crate) task: Option<String>,
}

impl Rule {
    /// Whether the clock can move its result (fit rules read only the lead's fields,
    /// unless a `within_months` test compares a date with today). Worked out once at
    /// compile time: `next_change` asks for every rule at every candidate instant.
    pub(crate) fn timed(&self) -> bool {
        self.timed
    }
}

/// What a rule looks at.
#[derive(Debug)]
pub(crate) enum Body {
    Fit(Cond),
    Activity(ActRule),
    Spike(SpikeRule),
    Intent(super::intent::IntentRule),
    Group(super::group::GroupRule),
}

/// A compiled spike rule (see [`crate::scoring::spec::SpikeSpec`]).
#[derive(Debug)]
pub(crate) struct SpikeRule {
    /// Empty: every kind counts.
    pub(crate) kinds: Vec<ActivityKind>,
    /// The built-in kinds among `kinds`, a bit each (see `walk::builtin`).
    pub(crate) builtin_kinds: u16,
    pub(crate) recent: TimeDelta,
    pub(crate) baseline: TimeDelta,
    pub(crate) recent_days: f64,
    pub(crate) baseline_days: f64,
    pub(crate) factor: f64,
    pub(crate) min_count: u32,
}

/// A lead field resolved once, so evaluation does not compare names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FieldKind {
    Name,
    Position,
    Email,
    Phone,
    Company,
    Industry,
    Revenue,
    Employees,
    Region,
    Source,
    Status,
    ResponsibleId,
    Custom,
}

/// A field reference: its kind plus the neutral name (for evidence, gaps and `custom.`).
#[derive(Debug)]
pub(crate) struct FieldRef {
    pub(crate) kind: FieldKind,
    /// The neutral name as written, e.g. `industry` or `custom.budget`.
    pub(crate) name: String,
    /// For `custom.<x>`: `x`.
    pub(crate) custom_key: String,
}

/// A compiled condition.
#[derive(Debug)]
pub(crate) enum Cond {
    Test { field: FieldRef, test: Test },
    Exists { field: FieldRef, want: bool },
    All(Vec<Cond>),
    Any(Vec<Cond>),
    Not(Box<Cond>),
}

/// A test on one field value.
#[derive(Debug)]
pub(crate) enum Test {
    /// Lowercased text, and the same as a number when it parses as one.
    Equals {
        text: String,
        number: Option<f64>,
    },
    In {
        texts: Vec<String>,
        numbers: Vec<f64>,
    },
    Range {
        min: Option<f64>,
        max: Option<f64>,
    },
    Regex(Pattern),
    /// Lowercased needle.
    Contains(String),
    /// Lowercased domains.
    EmailDomainIn(Vec<String>),
    /// A date field (`2026-05-31` or `31.05.2026`) between today and N months ahead.
    WithinMonths(u32),
}

/// A compiled behaviour rule.
#[derive(Debug)]
pub(crate) struct ActRule {
    pub(crate) kind: ActivityKind,
    pub(crate) direction: Option<Direction>,
    pub(crate) subject: Option<Pattern>,
    pub(crate) url: Option<Pattern>,
    /// An activity counts while `now - at < window`.
    pub(crate) window: Option<TimeDelta>,
    pub(crate) max_count: Option<u32>,
    pub(crate) half_life_days: Option<f64>,
    /// Its patterns' bits in the model's classifier (set once all rules are compiled).
    pub(crate) ids: super::classify::TextIds,
    /// Its slot in the model's one walk over the activities (`None`: past the walk's
    /// capacity, it walks on its own); set once all rules are compiled.
    pub(crate) walk: Option<u8>,
}

/// Lowercase the way evaluation does (char by char, no locale), trimmed.
pub(crate) fn lower(s: &str) -> String {
    lower_str(s.trim())
}

/// Every mistake found so far (compilation carries on after each).
pub(crate) struct Errors(pub(crate) Vec<SpecError>);

impl Errors {
    pub(crate) fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(SpecError {
            path: path.into(),
            message: message.into(),
        });
    }
}

pub(crate) fn compile(spec: &ScoringSpec) -> Result<Model, Vec<SpecError>> {
    let mut errs = Errors(Vec::new());

    if spec.min >= spec.max {
        errs.push(
            "scoring.max",
            format!("max ({}) must be greater than min ({})", spec.max, spec.min),
        );
    }

    let mut groups = Vec::with_capacity(spec.groups.len());
    let mut group_ids = HashSet::new();
    for (i, g) in spec.groups.iter().enumerate() {
        let p = format!("scoring.groups[{i}]");
        if g.id.trim().is_empty() {
            errs.push(format!("{p}.id"), "group id must not be empty");
        } else if !group_ids.insert(g.id.as_str()) {
            errs.push(format!("{p}.id"), format!("duplicate group id '{}'", g.id));
        }
        if let (Some(min), Some(max)) = (g.min, g.max) {
            if min > max {
                errs.push(
                    format!("{p}.min"),
                    format!("group min ({min}) is greater than its max ({max})"),
                );
            }
        }
        // A group where no rule fired contributes 0, so 0 must be a legal subtotal;
        // this also guarantees a cap can always be met by trimming entries toward 0.
        if let Some(min) = g.min.filter(|m| *m > 0) {
            errs.push(
                format!("{p}.min"),
                format!("group min ({min}) must be 0 or less (an idle group contributes 0)"),
            );
        }
        if let Some(max) = g.max.filter(|m| *m < 0) {
            errs.push(
                format!("{p}.max"),
                format!("group max ({max}) must be 0 or more (an idle group contributes 0)"),
            );
        }
        groups.push(Group {
            id: g.id.clone(),
            label: g.label.clone().unwrap_or_else(|| g.id.clone()),
            min: g.min,
            max: g.max,
            rules: Vec::new(),
        });
    }

    let mut rules = Vec::with_capacity(spec.rules.len());
    let mut rule_ids = HashSet::new();
    for (i, r) in spec.rules.iter().enumerate() {
        let p = format!("scoring.rules[{i}]");
        if r.id.trim().is_empty() {
            errs.push(format!("{p}.id"), "rule id must not be empty");
        } else if !rule_ids.insert(r.id.as_str()) {
            errs.push(format!("{p}.id"), format!("duplicate rule id '{}'", r.id));
        }
        let group = spec.groups.iter().position(|g| g.id == r.group);
        if group.is_none() {
            let known: Vec<&str> = spec.groups.iter().map(|g| g.id.as_str()).collect();
            errs.push(
                format!("{p}.group"),
                format!(
                    "unknown group '{}' (declared: {})",
                    r.group,
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            );
        }
        if r.task.as_deref().is_some_and(|t| t.trim().is_empty()) {
            errs.push(format!("{p}.task"), "the task text must not be empty");
        }
        if let (Some(body), Some(group)) = (compile_body(r, &p, &mut errs), group) {
            groups[group].rules.push(rules.len());
            let timed = match &body {
                Body::Fit(c) => c.timed(),
                _ => true,
            };
            rules.push(Rule {
                id: r.id.clone(),
                label: r.label.clone(),
                group,
                points: r.points,
                body,
                timed,
                task: r.task.clone(),
            });
        }
    }

    let tiers = super::tiers::compile_tiers(spec, &mut errs);

    let t = &spec.triggers;
    if t.call_now_above < spec.min || t.call_now_above >= spec.max {
        errs.push(
            "scoring.triggers.call_now_above",
            format!(
                "threshold {} can never be crossed: it must be at least min ({}) and below max ({})",
                t.call_now_above, spec.min, spec.max
            ),
        );
    }
    if t.rearm_below > t.call_now_above {
        errs.push(
            "scoring.triggers.rearm_below",
            format!(
                "rearm_below ({}) must not be above call_now_above ({})",
                t.rearm_below, t.call_now_above
            ),
        );
    }

    let default_offset = match spec.language {
        Language::Ru => "+03:00",
        Language::En => "+00:00",
    };
    let utc_offset = spec
        .utc_offset
        .as_deref()
        .unwrap_or(default_offset)
        .parse::<chrono::FixedOffset>();
    let utc_offset = match utc_offset {
        Ok(o) => o,
        Err(_) => {
            errs.push(
                "utc_offset",
                "must look like \"+03:00\" or \"-05:00\" (the offset card dates are written in)",
            );
            chrono::FixedOffset::east_opt(0).expect("zero offset")
        }
    };

    let gate = super::qualify::compile_gate(spec, &mut errs);

    if !errs.0.is_empty() {
        return Err(errs.0);
    }
    let has_activity_rules = rules.iter().any(|r| !matches!(r.body, Body::Fit(_)));
    let classifier = super::classify::Classifier::new(&mut rules);
    let kinds = super::walk::KindIndex::new(&mut rules);
    let timed = rules.iter().any(Rule::timed) || gate.as_ref().is_some_and(|g| g.timed);
    let fingerprint = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        format!("{spec:?}").hash(&mut h);
        h.finish()
    };
    Ok(Model {
        language: spec.language,
        utc_offset,
        fingerprint,
        min: spec.min,
        max: spec.max,
        groups,
        rules,
        tiers,
        triggers: spec.triggers.clone(),
        has_activity_rules,
        classifier,
        kinds,
        timed,
        gate,
    })
}

fn compile_body(r: &RuleSpec, p: &str, errs: &mut Errors) -> Option<Body> {
    let given: Vec<&str> = [
        ("when", r.when.is_some()),
        ("activity", r.activity.is_some()),
        ("spike", r.spike.is_some()),
        ("high_intent", r.high_intent.is_some()),
        ("buying_group", r.buying_group.is_some()),
    ]
    .into_iter()
    .filter_map(|(k, set)| set.then_some(k))
    .collect();
    match given.as_slice() {
        [] => {
            errs.push(
                p.to_string(),
                "a rule needs `when` (a field condition), `activity`, `spike`, `high_intent` or `buying_group`",
            );
            None
        }
        [_] => {
            if let Some(c) = &r.when {
                compile_cond(c, &format!("{p}.when"), errs).map(Body::Fit)
            } else if let Some(a) = &r.activity {
                compile_activity(a, &format!("{p}.activity"), errs).map(Body::Activity)
            } else if let Some(s) = &r.spike {
                compile_spike(s, &format!("{p}.spike"), errs).map(Body::Spike)
            } else if let Some(s) = &r.high_intent {
                super::intent::compile_intent(s, &format!("{p}.high_intent"), errs)
                    .map(Body::Intent)
            } else {
                let s = r.buying_group.as_ref().expect("one of the bodies is set");
                super::group::compile_group(s, &format!("{p}.buying_group"), errs).map(Body::Group)
            }
        }
        [.., last] => {
            errs.push(
                format!("{p}.{last}"),
                "a rule has one of `when` (a field condition), `activity`, `spike`, `high_intent` or `buying_group`, not several",
            );
            None
        }
    }
}

fn compile_spike(s: &SpikeSpec, p: &str, errs: &mut Errors) -> Option<SpikeRule> {
    let recent = positive_days(
        Some(s.recent_days),
        &format!("{p}.recent_days"),
        "recent_days",
        errs,
    );
    let baseline = positive_days(
        Some(s.baseline_days),
        &format!("{p}.baseline_days"),
        "baseline_days",
        errs,
    );
    let mut ok = true;
    if !(s.factor.is_finite() && s.factor >= 1.0) {
        errs.push(
            format!("{p}.factor"),
            "factor must be a number of at least 1",
        );
        ok = false;
    }
    if s.min_count == 0 {
        errs.push(format!("{p}.min_count"), "min_count must be at least 1");
        ok = false;
    }
    if let Some(i) = s.kinds.iter().position(|k| k.trim().is_empty()) {
        errs.push(format!("{p}.kinds[{i}]"), "activity kind must not be empty");
        ok = false;
    }
    let days = |d: f64| TimeDelta::milliseconds((d * 86_400_000.0).round() as i64);
    let (recent_days, baseline_days) = (recent?.unwrap_or(2.0), baseline?.unwrap_or(28.0));
    let kinds: Vec<ActivityKind> = s
        .kinds
        .iter()
        .map(|k| ActivityKind::from_name(k.trim()))
        .collect();
    let builtin_kinds = kinds
        .iter()
        .filter_map(super::walk::builtin)
        .fold(0, |m, b| m | 1 << b);
    ok.then(|| SpikeRule {
        kinds,
        builtin_kinds,
        recent: days(recent_days),
        baseline: days(baseline_days),
        recent_days,
        baseline_days,
        factor: s.factor,
        min_count: s.min_count,
    })
}

/// The operator keys of a condition, in a fixed order (for "several operators").
fn operators(c: &Condition) -> Vec<&'static str> {
    let mut ops = Vec::new();
    if c.equals.is_some() {
        ops.push("equals");
    }
    if c.in_list.is_some() {
        ops.push("in");
    }
    if c.range.is_some() {
        ops.push("range");
    }
    if c.regex.is_some() {
        ops.push("regex");
    }
    if c.contains.is_some() {
        ops.push("contains");
    }
    if c.exists.is_some() {
        ops.push("exists");
    }
    if c.email_domain_in.is_some() {
        ops.push("email_domain_in");
    }
    if c.within_months.is_some() {
        ops.push("within_months");
    }
    if c.all.is_some() {
        ops.push("all");
    }
    if c.any.is_some() {
        ops.push("any");
    }
    if c.not.is_some() {
        ops.push("not");
    }
    ops
}

pub(crate) fn compile_field(name: &str, path: &str, errs: &mut Errors) -> Option<FieldRef> {
    let kind = match name {
        "name" => FieldKind::Name,
        "position" => FieldKind::Position,
        "email" => FieldKind::Email,
        "phone" => FieldKind::Phone,
        "company" => FieldKind::Company,
        "industry" => FieldKind::Industry,
        "revenue" => FieldKind::Revenue,
        "employees" => FieldKind::Employees,
        "region" => FieldKind::Region,
        "source" => FieldKind::Source,
        "status" => FieldKind::Status,
        "responsible_id" => FieldKind::ResponsibleId,
        other => match other.strip_prefix("custom.") {
            Some(key) if !key.is_empty() => FieldKind::Custom,
            _ => {
                errs.push(
                    path.to_string(),
                    format!(
                        "unknown field '{name}' (known: {}, or custom.<name>)",
                        FIELD_NAMES.join(", ")
                    ),
                );
                return None;
            }
        },
    };
    Some(FieldRef {
        kind,
        name: name.to_string(),
        custom_key: name.strip_prefix("custom.").unwrap_or("").to_string(),
    })
}

pub(crate) fn compile_regex(src: &str, path: &str, errs: &mut Errors) -> Option<Pattern> {
    match Pattern::new(src) {
        Ok(re) => Some(re),
        Err(e) => {
            // The regex crate's message spans several lines; keep the first meaningful one.
            let msg = e.to_string();
            let detail = msg
                .lines()
                .rev()
                .find(|l| l.starts_with("error:"))
                .unwrap_or(msg.lines().next().unwrap_or("invalid"))
                .trim_start_matches("error:")
                .trim()
                .to_string();
            errs.push(path.to_string(), format!("invalid regex '{src}': {detail}"));
            None
        }
    }
}

fn compile_list(items: &[String], path: &str, errs: &mut Errors) -> Option<Vec<String>> {
    if items.is_empty() {
        errs.push(path.to_string(), "the list must not be empty");
        return None;
    }
    let mut ok = true;
    for (j, item) in items.iter().enumerate() {
        if item.trim().is_empty() {
            errs.push(format!("{path}[{j}]"), "empty list item");
            ok = false;
        }
    }
    ok.then(|| items.iter().map(|s| lower(s)).collect())
}

fn parse_number(s: &str) -> Option<f64> {
    s.trim().parse::<f64>().ok().filter(|n| n.is_finite())
}

pub(crate) fn compile_cond(c: &Condition, p: &str, errs: &mut Errors) -> Option<Cond> {
    let ops = operators(c);
    if ops.is_empty() {
        errs.push(
            p.to_string(),
            "a condition needs one operator: equals, in, range, regex, contains, exists, email_domain_in, within_months, all, any or not",
        );
        return None;
    }
    if ops.len() > 1 {
        errs.push(
            format!("{p}.{}", ops[1]),
            format!(
                "a condition has exactly one operator, found {} (split it with `all`/`any`)",
                ops.join(", ")
            ),
        );
        return None;
    }
    let op = ops[0];
    let combinator = matches!(op, "all" | "any" | "not");
    if combinator {
        if c.field.is_some() {
            errs.push(
                format!("{p}.field"),
                format!("`{op}` combines conditions and takes no `field`; put `field` in each inner condition"),
            );
        }
        return match op {
            "all" | "any" => {
                let list = if op == "all" {
                    c.all.as_ref()
                } else {
                    c.any.as_ref()
                }?;
                if list.is_empty() {
                    errs.push(
                        format!("{p}.{op}"),
                        format!("`{op}` needs at least one condition"),
                    );
                    return None;
                }
                let mut out = Vec::with_capacity(list.len());
                let mut ok = true;
                for (j, inner) in list.iter().enumerate() {
                    match compile_cond(inner, &format!("{p}.{op}[{j}]"), errs) {
                        Some(ci) => out.push(ci),
                        None => ok = false,
                    }
                }
                (ok && c.field.is_none()).then(|| {
                    if op == "all" {
                        Cond::All(out)
                    } else {
                        Cond::Any(out)
                    }
                })
            }
            _ => {
                let inner = compile_cond(c.not.as_deref()?, &format!("{p}.not"), errs)?;
                c.field.is_none().then(|| Cond::Not(Box::new(inner)))
            }
        };
    }

    let field = match &c.field {
        None => {
            errs.push(p.to_string(), format!("`{op}` needs a `field`"));
            None
        }
        Some(name) => compile_field(name, &format!("{p}.field"), errs),
    };
    let op_path = format!("{p}.{op}");
    let test = match op {
        "equals" => {
            let v = c.equals.as_deref()?;
            Some(Test::Equals {
                text: lower(v),
                number: parse_number(v),
            })
        }
        "in" => compile_list(c.in_list.as_deref()?, &op_path, errs).map(|texts| Test::In {
            numbers: texts.iter().filter_map(|t| parse_number(t)).collect(),
            texts,
        }),
        "range" => {
            let r = c.range?;
            let finite = |v: Option<f64>| v.is_none_or(f64::is_finite);
            if r.min.is_none() && r.max.is_none() {
                errs.push(op_path, "a range needs `min`, `max` or both");
                None
            } else if !finite(r.min) || !finite(r.max) {
                errs.push(op_path, "range bounds must be finite numbers");
                None
            } else if matches!((r.min, r.max), (Some(a), Some(b)) if a >= b) {
                errs.push(
                    op_path,
                    format!(
                        "range min ({}) must be below max ({}): the range is min <= value < max",
                        r.min.unwrap_or_default(),
                        r.max.unwrap_or_default()
                    ),
                );
                None
            } else {
                Some(Test::Range {
                    min: r.min,
                    max: r.max,
                })
            }
        }
        "regex" => compile_regex(c.regex.as_deref()?, &op_path, errs).map(Test::Regex),
        "contains" => {
            let v = c.contains.as_deref()?;
            if v.trim().is_empty() {
                errs.push(op_path, "`contains` needs a non-empty text");
                None
            } else {
                Some(Test::Contains(lower(v)))
            }
        }
        "email_domain_in" => {
            compile_list(c.email_domain_in.as_deref()?, &op_path, errs).map(|domains| {
                Test::EmailDomainIn(
                    domains
                        .into_iter()
                        .map(|d| d.trim_start_matches('@').to_string())
                        .collect(),
                )
            })
        }
        "within_months" => match c.within_months? {
            m @ 1..=120 => Some(Test::WithinMonths(m)),
            m => {
                errs.push(op_path, format!("within_months must be 1 to 120, got {m}"));
                None
            }
        },
        "exists" => {
            let want = c.exists?;
            return field.map(|field| Cond::Exists { field, want });
        }
        _ => None,
    };
    Some(Cond::Test {
        field: field?,
        test: test?,
    })
}

/// A rule's `window_days` at key path `{p}.window_days`: the window and its days.
pub(crate) fn window_days(days: f64, p: &str, errs: &mut Errors) -> Option<(TimeDelta, f64)> {
    let d = positive_days(Some(days), &format!("{p}.window_days"), "window_days", errs)??;
    Some((
        TimeDelta::milliseconds((d * 86_400_000.0).round() as i64),
        d,
    ))
}

pub(crate) fn positive_days(
    v: Option<f64>,
    path: &str,
    what: &str,
    errs: &mut Errors,
) -> Option<Option<f64>> {
    match v {
        Some(d) if !(d.is_finite() && d > 0.0) => {
            errs.push(
                path.to_string(),
                format!("{what} must be a positive number of days, got {d}"),
            );
            None
        }
        other => Some(other),
    }
}

fn compile_activity(a: &ActivitySpec, p: &str, errs: &mut Errors) -> Option<ActRule> {
    let mut ok = true;
    if a.kind.trim().is_empty() {
        errs.push(format!("{p}.kind"), "activity kind must not be empty");
        ok = false;
    }
    let subject = match &a.subject {
        Some(s) => {
            let re = compile_regex(s, &format!("{p}.subject"), errs);
            ok &= re.is_some();
            re
        }
        None => None,
    };
    let url = match &a.url {
        Some(s) => {
            let re = compile_regex(s, &format!("{p}.url"), errs);
            ok &= re.is_some();
            re
        }
        None => None,
    };
    let window = positive_days(
        a.window_days,
        &format!("{p}.window_days"),
        "window_days",
        errs,
    );
    let half_life = positive_days(
        a.half_life_days,
        &format!("{p}.half_life_days"),
        "half_life_days",
        errs,
    );
    if a.max_count == Some(0) {
        errs.push(format!("{p}.max_count"), "max_count must be at least 1");
        ok = false;
    }
    let window = window?.map(|d| TimeDelta::milliseconds((d * 86_400_000.0).round() as i64));
    let half_life_days = half_life?;
    ok.then(|| ActRule {
        kind: ActivityKind::from_name(a.kind.trim()),
        direction: a.direction,
        subject,
        url,
        window,
        max_count: a.max_count,
        half_life_days,
        ids: Default::default(),
        walk: None,
    })
}

//! The qualification gate: BANT, ANUM, AM or custom criteria, each known-yes, known-no
//! or unknown on a lead, and a cap on the total while a required one is not known-yes.
//!
//! A lead that reads every page but whose budget and decision maker nobody knows is not
//! ready for a call-now task: the cap keeps it below hot, and the unknown criteria become
//! the questions the rep asks ("уточнить: бюджет, сроки").

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::compile::{compile_cond, Cond, Errors};
use super::cond::{eval_cond, Outcome};
use super::spec::{Language, QualificationSpec, ScoringSpec};
use crate::lead::Lead;

/// What is known about one criterion on a lead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Known {
    /// Its `when` condition holds.
    Yes,
    /// Its `no` condition holds (e.g. "бюджета нет").
    No,
    /// Neither: the rep has a question to ask.
    Unknown,
}

/// One criterion's state, as the card and the task show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CriterionState {
    /// Canonical id (`budget`, `authority`, ... or the custom name).
    pub id: String,
    /// The question for the rep while it is unknown.
    pub question: String,
    /// Whether it gates the score.
    pub required: bool,
    pub known: Known,
}

/// A lead's qualification: every criterion's state and whether the gate capped it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Qualification {
    /// `BANT`, `ANUM`, `AM` or `custom`.
    pub formula: String,
    /// In the formula's order.
    pub criteria: Vec<CriterionState>,
    /// Every required criterion is known-yes.
    pub qualified: bool,
    /// The gate's cap, when it applies (not qualified).
    pub cap: Option<i32>,
    /// The cap lowered the total (from this value).
    pub capped_from: Option<i32>,
}

impl Qualification {
    /// The questions still open (unknown criteria), in the formula's order.
    pub fn open_questions(&self) -> Vec<&str> {
        self.criteria
            .iter()
            .filter(|c| c.known == Known::Unknown)
            .map(|c| c.question.as_str())
            .collect()
    }

    /// A compact state for a card field: `B✓ A? N✓ T✗`.
    pub fn code(&self) -> String {
        let mut out = Vec::with_capacity(self.criteria.len());
        for c in &self.criteria {
            let letter: String = c.id.chars().take(1).flat_map(char::to_uppercase).collect();
            let mark = match c.known {
                Known::Yes => '✓',
                Known::No => '✗',
                Known::Unknown => '?',
            };
            out.push(format!("{letter}{mark}"));
        }
        out.join(" ")
    }

    /// The part of the card's line about qualification, e.g. `ограничено 70: не
    /// квалифицирован (B? A✓ N✓ T?) — уточнить: бюджет, сроки`.
    pub fn phrase(&self, lang: Language) -> String {
        let ru = lang == Language::Ru;
        let mut s = match (self.qualified, self.capped_from, self.cap) {
            (false, Some(_), Some(cap)) if ru => format!("ограничено {cap}: не квалифицирован"),
            (false, Some(_), Some(cap)) => format!("capped at {cap}: not qualified"),
            (false, ..) if ru => "не квалифицирован".to_string(),
            (false, ..) => "not qualified".to_string(),
            (true, ..) if ru => "квалифицирован".to_string(),
            (true, ..) => "qualified".to_string(),
        };
        s.push_str(&format!(" ({})", self.code()));
        let open = self.open_questions();
        if !open.is_empty() {
            s.push_str(if ru {
                " — уточнить: "
            } else {
                " — ask: "
            });
            s.push_str(&open.join(", "));
        }
        let no: Vec<&str> = self
            .criteria
            .iter()
            .filter(|c| c.known == Known::No)
            .map(|c| c.question.as_str())
            .collect();
        if !no.is_empty() {
            s.push_str(if ru { " — нет: " } else { " — no: " });
            s.push_str(&no.join(", "));
        }
        s
    }
}

/// A compiled criterion.
#[derive(Debug)]
pub(crate) struct Criterion {
    id: String,
    question: String,
    required: bool,
    yes: Cond,
    no: Option<Cond>,
}

/// The compiled gate.
#[derive(Debug)]
pub(crate) struct Gate {
    formula: String,
    criteria: Vec<Criterion>,
    cap: i32,
    /// Some condition reads the clock (`within_months`).
    pub(crate) timed: bool,
}

/// A formula's criteria in order, with the aliases each accepts.
fn formula_criteria(formula: &str) -> Option<&'static [&'static str]> {
    match formula {
        "BANT" => Some(&["budget", "authority", "need", "timeframe"]),
        "ANUM" => Some(&["authority", "need", "urgency", "money"]),
        "AM" => Some(&["authority", "money"]),
        "custom" => Some(&[]),
        _ => None,
    }
}

/// `money` and `budget`, `urgency` and `timeframe` name the same question: resolve a
/// name to the one the formula uses.
fn canonical<'a>(name: &'a str, known: &[&'static str]) -> &'a str {
    let alias = match name {
        "money" => "budget",
        "budget" => "money",
        "urgency" => "timeframe",
        "timeframe" => "urgency",
        _ => return name,
    };
    match known.iter().find(|k| **k == alias) {
        Some(k) if !known.contains(&name) => k,
        _ => name,
    }
}

fn default_question(id: &str, lang: Language) -> String {
    let (ru, en) = match id {
        "budget" | "money" => ("бюджет", "budget"),
        "authority" => ("кто принимает решение", "who decides"),
        "need" => ("задача/потребность", "the need"),
        "timeframe" | "urgency" => ("сроки", "timeframe"),
        other => (other, other),
    };
    match lang {
        Language::Ru => ru.to_string(),
        Language::En => en.to_string(),
    }
}

/// Check `[scoring.qualification]` and compile it; mistakes go to `errs` by key path.
pub(crate) fn compile_gate(spec: &ScoringSpec, errs: &mut Errors) -> Option<Gate> {
    let q: &QualificationSpec = spec.qualification.as_ref()?;
    let p = "scoring.qualification";
    let formula = match q.formula.trim().to_ascii_uppercase().as_str() {
        "CUSTOM" => "custom".to_string(),
        f => f.to_string(),
    };
    let Some(known) = formula_criteria(&formula) else {
        errs.push(
            format!("{p}.formula"),
            format!(
                "unknown formula '{}' (use BANT, ANUM, AM or custom)",
                q.formula
            ),
        );
        return None;
    };
    let mut ok = true;
    let cap = q.cap.unwrap_or(spec.triggers.call_now_above);
    if cap < spec.min || cap > spec.max {
        errs.push(
            format!("{p}.cap"),
            format!(
                "cap {cap} is outside the score's range {}..={}",
                spec.min, spec.max
            ),
        );
        ok = false;
    }
    let mut criteria: Vec<Criterion> = Vec::with_capacity(q.criteria.len());
    for (i, c) in q.criteria.iter().enumerate() {
        let cp = format!("{p}.criteria[{i}]");
        let id = canonical(c.id.trim(), known).to_string();
        if id.is_empty() {
            errs.push(format!("{cp}.id"), "criterion id must not be empty");
            ok = false;
            continue;
        }
        if formula != "custom" && !known.contains(&id.as_str()) {
            errs.push(
                format!("{cp}.id"),
                format!(
                    "unknown criterion '{}' for {formula} (its criteria: {})",
                    c.id,
                    known.join(", ")
                ),
            );
            ok = false;
            continue;
        }
        if criteria.iter().any(|x| x.id == id) {
            errs.push(format!("{cp}.id"), format!("duplicate criterion '{id}'"));
            ok = false;
            continue;
        }
        let yes = compile_cond(&c.when, &format!("{cp}.when"), errs);
        let no = match &c.no {
            Some(n) => compile_cond(n, &format!("{cp}.no"), errs).map(Some),
            None => Some(None),
        };
        let question = match c.question.as_deref().map(str::trim) {
            Some("") => {
                errs.push(format!("{cp}.question"), "question must not be empty");
                ok = false;
                continue;
            }
            Some(text) => text.to_string(),
            None => default_question(&id, spec.language),
        };
        match (yes, no) {
            (Some(yes), Some(no)) => criteria.push(Criterion {
                id,
                question,
                required: false,
                yes,
                no,
            }),
            _ => ok = false,
        }
    }
    if formula == "custom" && q.criteria.is_empty() {
        errs.push(
            format!("{p}.criteria"),
            "a custom formula needs at least one [[scoring.qualification.criteria]]",
        );
        return None;
    }
    let missing: Vec<&str> = known
        .iter()
        .filter(|k| {
            !q.criteria
                .iter()
                .any(|c| canonical(c.id.trim(), known) == **k)
        })
        .copied()
        .collect();
    if !missing.is_empty() {
        errs.push(
            format!("{p}.criteria"),
            format!(
                "{formula} needs a condition for each criterion; missing: {}",
                missing.join(", ")
            ),
        );
        ok = false;
    }
    // Criteria in the formula's order (custom: as declared).
    criteria.sort_by_key(|c| known.iter().position(|k| *k == c.id).unwrap_or(0));
    let names: Vec<String> = q
        .criteria
        .iter()
        .map(|c| canonical(c.id.trim(), known).to_string())
        .collect();
    if q.require.is_empty() {
        criteria.iter_mut().for_each(|c| c.required = true);
    }
    for (i, r) in q.require.iter().enumerate() {
        let r = canonical(r.trim(), known);
        match criteria.iter_mut().find(|c| c.id == r) {
            Some(c) => c.required = true,
            None if names.iter().any(|n| n == r) => {}
            None => {
                errs.push(
                    format!("{p}.require[{i}]"),
                    format!(
                        "'{r}' is not a criterion of this formula (its criteria: {})",
                        names.join(", ")
                    ),
                );
                ok = false;
            }
        }
    }
    let timed = criteria
        .iter()
        .any(|c| c.yes.timed() || c.no.as_ref().is_some_and(Cond::timed));
    ok.then_some(Gate {
        formula,
        criteria,
        cap,
        timed,
    })
}

impl Criterion {
    fn known(&self, lead: &Lead, now: DateTime<Utc>) -> Known {
        if matches!(eval_cond(&self.yes, lead, now), Outcome::Match(_)) {
            return Known::Yes;
        }
        match &self.no {
            Some(no) if matches!(eval_cond(no, lead, now), Outcome::Match(_)) => Known::No,
            _ => Known::Unknown,
        }
    }
}

impl Gate {
    /// The cap on `total` for this lead, without building the state (the hot path of
    /// `total_only`): `None` when every required criterion is known-yes.
    pub(crate) fn cap_for(&self, lead: &Lead, now: DateTime<Utc>) -> Option<i32> {
        let open = self
            .criteria
            .iter()
            .any(|c| c.required && !matches!(eval_cond(&c.yes, lead, now), Outcome::Match(_)));
        open.then_some(self.cap)
    }

    /// Every criterion's state, and the cap applied to `total`.
    pub(crate) fn qualify(&self, lead: &Lead, now: DateTime<Utc>, total: i32) -> Qualification {
        let criteria: Vec<CriterionState> = self
            .criteria
            .iter()
            .map(|c| CriterionState {
                id: c.id.clone(),
                question: c.question.clone(),
                required: c.required,
                known: c.known(lead, now),
            })
            .collect();
        let qualified = criteria
            .iter()
            .all(|c| !c.required || c.known == Known::Yes);
        Qualification {
            formula: self.formula.clone(),
            criteria,
            qualified,
            cap: (!qualified).then_some(self.cap),
            capped_from: (!qualified && total > self.cap).then_some(total),
        }
    }

    /// The states packed in a number, for `next_change`'s comparison of instants.
    pub(crate) fn signature(&self, lead: &Lead, now: DateTime<Utc>) -> i32 {
        self.criteria.iter().fold(0i32, |acc, c| {
            acc.wrapping_mul(3).wrapping_add(match c.known(lead, now) {
                Known::Yes => 0,
                Known::No => 1,
                Known::Unknown => 2,
            })
        })
    }

    /// Offer the instants at which a `within_months` condition flips for this lead.
    pub(crate) fn boundaries(&self, lead: &Lead, offer: &mut dyn FnMut(DateTime<Utc>)) {
        for c in &self.criteria {
            c.yes.boundaries(lead, offer);
            if let Some(no) = &c.no {
                no.boundaries(lead, offer);
            }
        }
    }
}

//! One backtest: score every closed lead as of its instant, then every table of the
//! report. Pure over its inputs (no clock, no I/O), so tests check it on built data.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::asof::{known_before, AsOf, FitSources};
use super::auc::{self, AucCi, PairedDelta};
use super::calibration::Calibration;
use super::capacity::{self, Capacity};
use super::tables::{self, Band, Bucket, Obs};
use super::{ClosedLead, Outcome};
use crate::scoring::Model;

/// What to compute, from the command line.
#[derive(Debug, Clone)]
pub struct Options {
    pub as_of: AsOf,
    /// Only leads closed at or after this instant.
    pub since: Option<DateTime<Utc>>,
    /// Call-now tasks a rep can take per working day, for the threshold that fits.
    pub capacity: Option<f64>,
    /// "Of the last N wins …".
    pub last_wins: usize,
    /// How many false positives and negatives to list.
    pub top: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            as_of: AsOf::default(),
            since: None,
            capacity: None,
            last_wins: 50,
            top: 10,
        }
    }
}

/// One lead's score as of its instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    pub total: i32,
    pub at: DateTime<Utc>,
}

/// Score every lead as of its instant with only the activities strictly before it.
pub fn score_all(model: &Model, leads: &[ClosedLead], as_of: AsOf) -> Vec<Scored> {
    leads
        .iter()
        .map(|c| {
            let (at, _) = as_of.instant(c);
            Scored {
                total: model.total_only(c.lead_at(at), known_before(&c.activities, at), at),
                at,
            }
        })
        .collect()
}

/// A rule against outcomes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleStat {
    pub id: String,
    pub label: String,
    pub group: String,
    pub points: i32,
    /// Share of won leads on which the rule fired (as of their instant).
    pub won_hit_rate: f64,
    /// Share of lost leads on which it fired.
    pub lost_hit_rate: f64,
    /// Win rate of the leads it fired on over the overall win rate (`None`: never fired).
    pub lift: Option<f64>,
}

/// A lead the model got wrong, with the breakdown it had then.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Case {
    pub lead_id: String,
    pub name: Option<String>,
    pub company: Option<String>,
    pub score: i32,
    pub tier: String,
    pub outcome: Outcome,
    pub amount: Option<f64>,
    pub closed_at: DateTime<Utc>,
    pub loss_reason: Option<String>,
    /// The card line as of the scoring instant.
    pub why: String,
}

/// "Of the last N wins, how many were hot / warm / cold when it mattered."
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LastWins {
    pub n: usize,
    /// Tier id → wins, lowest tier first.
    pub by_tier: Vec<(String, usize)>,
}

/// Two models on the same leads.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// Where model B came from.
    pub other: String,
    /// B − A, DeLong paired.
    pub delta: Option<PairedDelta>,
    pub tiers_a: Vec<String>,
    pub tiers_b: Vec<String>,
    /// `migration[i][j]`: leads in A's tier i and B's tier j.
    pub migration: Vec<Vec<usize>>,
    /// Won leads among them.
    pub migration_wins: Vec<Vec<usize>>,
    /// B's tiers and deciles, to read beside A's.
    pub tiers: Vec<Bucket>,
}

/// Everything the backtest report shows, in the order it shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub source: String,
    pub as_of: String,
    /// Caveats the reader must see (today's fit fields, capped instants, …).
    pub notes: Vec<String>,
    /// Which fit fields were replayed from the CRM's history and which are today's.
    pub fit: FitSources,
    pub leads: usize,
    pub wins: usize,
    pub base_rate: f64,
    pub first_created: Option<DateTime<Utc>>,
    pub last_closed: Option<DateTime<Utc>>,
    /// DeLong 95% interval.
    pub auc: Option<AucCi>,
    pub tiers: Vec<Bucket>,
    /// Conversion of the highest tier over the overall conversion.
    pub top_tier_lift: Option<f64>,
    pub deciles: Vec<Bucket>,
    pub calibration: Vec<Band>,
    /// The monotone score → probability mapping ("72 ≈ 18%").
    pub probability: Calibration,
    /// `(score, probability)` at the tier bounds and the call-now threshold.
    pub probability_examples: Vec<(i32, f64)>,
    pub rules: Vec<RuleStat>,
    pub false_positives: Vec<Case>,
    pub false_negatives: Vec<Case>,
    pub last_wins: LastWins,
    pub capacity: Capacity,
    pub comparison: Option<Comparison>,
}

impl Report {
    /// "0 ≈ 3%, 31 ≈ 20%, 71 ≈ 74%": the probability beside the points, as printed.
    pub fn probability_text(&self) -> String {
        let parts: Vec<String> = self
            .probability_examples
            .iter()
            .map(|(s, p)| format!("{s} ≈ {:.0}%", p * 100.0))
            .collect();
        parts.join(", ")
    }

    /// "7 cold, 42 warm, 1 hot": the last wins by tier, as printed.
    pub fn last_wins_text(&self) -> String {
        let parts: Vec<String> = self
            .last_wins
            .by_tier
            .iter()
            .map(|(t, n)| format!("{n} {t}"))
            .collect();
        parts.join(", ")
    }
}

fn obs(leads: &[ClosedLead], scored: &[Scored]) -> Vec<Obs> {
    leads
        .iter()
        .zip(scored)
        .map(|(c, s)| Obs {
            score: s.total,
            won: c.outcome == Outcome::Won,
            amount: c.amount,
            days: c.days_to_close(),
        })
        .collect()
}

fn rule_stats(model: &Model, leads: &[ClosedLead], scored: &[Scored], base: f64) -> Vec<RuleStat> {
    let infos = model.rule_infos();
    let mut hits_won = vec![0usize; infos.len()];
    let mut hits_lost = vec![0usize; infos.len()];
    let mut units = Vec::new();
    for (c, s) in leads.iter().zip(scored) {
        model.rule_units(
            c.lead_at(s.at),
            known_before(&c.activities, s.at),
            s.at,
            &mut units,
        );
        let hits = if c.outcome == Outcome::Won {
            &mut hits_won
        } else {
            &mut hits_lost
        };
        for (h, u) in hits.iter_mut().zip(&units) {
            *h += usize::from(*u > 0.0);
        }
    }
    let won = leads.iter().filter(|c| c.outcome == Outcome::Won).count();
    let lost = leads.len() - won;
    let rate = |h: usize, n: usize| if n == 0 { 0.0 } else { h as f64 / n as f64 };
    infos
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let fired = hits_won[i] + hits_lost[i];
            RuleStat {
                won_hit_rate: rate(hits_won[i], won),
                lost_hit_rate: rate(hits_lost[i], lost),
                lift: (fired > 0 && base > 0.0).then(|| rate(hits_won[i], fired) / base),
                id: r.id,
                label: r.label,
                group: r.group,
                points: r.points,
            }
        })
        .collect()
}

fn case(model: &Model, c: &ClosedLead, s: &Scored) -> Case {
    let lead = c.lead_at(s.at);
    let score = model.score(lead, known_before(&c.activities, s.at), s.at);
    Case {
        lead_id: lead.id.clone(),
        name: lead.name.clone(),
        company: lead.company.clone(),
        score: score.total,
        tier: score.tier.clone(),
        outcome: c.outcome,
        amount: c.amount,
        closed_at: c.closed_at,
        loss_reason: c.loss_reason.clone(),
        why: score.explain_dated(model.language(), model.utc_offset(), s.at),
    }
}

/// Indices of the `top` leads of the highest tier that were lost (highest score first)
/// and of the lowest tier that were won (lowest score first, larger deals first).
fn mistakes(
    model: &Model,
    leads: &[ClosedLead],
    scored: &[Scored],
    top: usize,
) -> (Vec<Case>, Vec<Case>) {
    let tiers = model.tiers();
    let (low, high) = (&tiers[0], &tiers[tiers.len() - 1]);
    let mut fp: Vec<usize> = (0..leads.len())
        .filter(|&i| leads[i].outcome == Outcome::Lost && scored[i].total >= high.min)
        .collect();
    fp.sort_by_key(|&i| (std::cmp::Reverse(scored[i].total), leads[i].lead.id.clone()));
    let mut fneg: Vec<usize> = (0..leads.len())
        .filter(|&i| leads[i].outcome == Outcome::Won && scored[i].total <= low.max)
        .collect();
    fneg.sort_by(|&a, &b| {
        scored[a]
            .total
            .cmp(&scored[b].total)
            .then(
                leads[b]
                    .amount
                    .unwrap_or(0.0)
                    .total_cmp(&leads[a].amount.unwrap_or(0.0)),
            )
            .then(leads[a].lead.id.cmp(&leads[b].lead.id))
    });
    let cases = |v: Vec<usize>| {
        v.into_iter()
            .take(top)
            .map(|i| case(model, &leads[i], &scored[i]))
            .collect()
    };
    (cases(fp), cases(fneg))
}

fn last_wins(model: &Model, leads: &[ClosedLead], scored: &[Scored], n: usize) -> LastWins {
    let mut wins: Vec<usize> = (0..leads.len())
        .filter(|&i| leads[i].outcome == Outcome::Won)
        .collect();
    wins.sort_by_key(|&i| std::cmp::Reverse(leads[i].closed_at));
    wins.truncate(n);
    let mut counts: BTreeMap<usize, usize> = BTreeMap::new();
    for &i in &wins {
        let t = model.tier_for(scored[i].total);
        let ti = model.tiers().iter().position(|x| x.id == t.id).unwrap_or(0);
        *counts.entry(ti).or_default() += 1;
    }
    LastWins {
        n: wins.len(),
        by_tier: model
            .tiers()
            .iter()
            .enumerate()
            .map(|(i, t)| (t.id.clone(), counts.get(&i).copied().unwrap_or(0)))
            .collect(),
    }
}

fn tier_index(model: &Model, total: i32) -> usize {
    let id = &model.tier_for(total).id;
    model.tiers().iter().position(|t| &t.id == id).unwrap_or(0)
}

fn compare(
    a: &Model,
    b: &Model,
    other: &str,
    leads: &[ClosedLead],
    sa: &[Scored],
    as_of: AsOf,
) -> Comparison {
    let sb = score_all(b, leads, as_of);
    let won: Vec<bool> = leads.iter().map(|c| c.outcome == Outcome::Won).collect();
    let fa: Vec<f64> = sa.iter().map(|s| f64::from(s.total)).collect();
    let fb: Vec<f64> = sb.iter().map(|s| f64::from(s.total)).collect();
    let (na, nb) = (a.tiers().len(), b.tiers().len());
    let mut migration = vec![vec![0; nb]; na];
    let mut migration_wins = vec![vec![0; nb]; na];
    for i in 0..leads.len() {
        let (ta, tb) = (tier_index(a, sa[i].total), tier_index(b, sb[i].total));
        migration[ta][tb] += 1;
        migration_wins[ta][tb] += usize::from(won[i]);
    }
    Comparison {
        other: other.to_string(),
        delta: auc::paired(&fa, &fb, &won),
        tiers_a: a.tiers().iter().map(|t| t.id.clone()).collect(),
        tiers_b: b.tiers().iter().map(|t| t.id.clone()).collect(),
        migration,
        migration_wins,
        tiers: tables::by_tier(&obs(leads, &sb), b.tiers()),
    }
}

/// The fit-field caveat of a report whose source keeps no history of fit fields.
pub const FIT_NOTE: &str = "Fit fields (title, company size, industry, region, e-mail) are today's values: \
the export keeps no history of them, so fit rules see what is known now, not what was known at the as-of instant.";

/// Run a backtest of `model` on `leads` (already read), optionally against a second
/// model `other = (name, model)`.
pub fn analyze(
    model: &Model,
    source: &str,
    leads: &[ClosedLead],
    opts: &Options,
    other: Option<(&str, &Model)>,
) -> Report {
    let leads: Vec<ClosedLead> = leads
        .iter()
        .filter(|c| opts.since.is_none_or(|s| c.closed_at >= s))
        .cloned()
        .collect();
    let scored = score_all(model, &leads, opts.as_of);
    let obs = obs(&leads, &scored);
    let won: Vec<bool> = obs.iter().map(|o| o.won).collect();
    let wins = won.iter().filter(|w| **w).count();
    let base_rate = if leads.is_empty() {
        0.0
    } else {
        wins as f64 / leads.len() as f64
    };
    let scores: Vec<f64> = obs.iter().map(|o| f64::from(o.score)).collect();

    let instants: Vec<DateTime<Utc>> = scored.iter().map(|s| s.at).collect();
    let fit = FitSources::of(&leads, &instants);
    let mut notes = vec![fit.note(FIT_NOTE)];
    let capped = leads.iter().filter(|c| opts.as_of.instant(c).1).count();
    if capped > 0 {
        notes.push(format!(
            "{capped} lead(s) closed before their as-of instant ({}) and were scored just before their outcome.",
            opts.as_of
        ));
    }
    let hidden: usize = leads
        .iter()
        .zip(&scored)
        .map(|(c, s)| c.activities.len() - known_before(&c.activities, s.at).len())
        .sum();
    notes.push(format!(
        "{hidden} activit{} dated at or after their lead's as-of instant did not count (no leakage).",
        if hidden == 1 { "y" } else { "ies" }
    ));

    let tiers = tables::by_tier(&obs, model.tiers());
    let top_tier_lift = tiers
        .last()
        .filter(|t| t.count > 0 && base_rate > 0.0)
        .map(|t| t.conversion / base_rate);
    let probability = Calibration::fit(obs.iter().map(|o| (o.score, o.won)));
    let mut example_scores: Vec<i32> = model.tiers().iter().map(|t| t.min).collect();
    example_scores.push(model.triggers().call_now_above + 1);
    example_scores.sort_unstable();
    example_scores.dedup();
    let probability_examples = example_scores
        .into_iter()
        .filter_map(|s| probability.probability(s).map(|p| (s, p)))
        .collect();
    let (false_positives, false_negatives) = mistakes(model, &leads, &scored, opts.top);
    Report {
        source: source.to_string(),
        as_of: opts.as_of.to_string(),
        notes,
        fit,
        leads: leads.len(),
        wins,
        base_rate,
        first_created: leads.iter().map(|c| c.created_at).min(),
        last_closed: leads.iter().map(|c| c.closed_at).max(),
        auc: auc::auc(&scores, &won),
        top_tier_lift,
        deciles: tables::by_decile(&obs),
        calibration: tables::calibration_bands(&obs, model.min(), model.max(), 10, &probability),
        probability,
        probability_examples,
        rules: rule_stats(model, &leads, &scored, base_rate),
        false_positives,
        false_negatives,
        last_wins: last_wins(model, &leads, &scored, opts.last_wins),
        capacity: capacity::capacity(model, &leads, &scored, opts.capacity),
        comparison: other.map(|(name, b)| compare(model, b, name, &leads, &scored, opts.as_of)),
        tiers,
    }
}

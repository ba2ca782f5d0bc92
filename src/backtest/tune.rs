//! `leadscore tune`: fit the rules' weights to past outcomes and suggest integer points
//! on the config's own scale, with the cross-validated AUC of the current and the
//! suggested model on the same folds, and a diff the admin can apply. Never writes the
//! config.
//!
//! Features are each rule's units as of the lead's instant ([`Model::rule_units`]:
//! matched or not for a field rule, decayed occurrences for an activity rule). An
//! L2-regularised logistic regression gives log-odds per unit; these are put on the
//! config's scale by one factor that keeps the sum of |points| the admin chose, then
//! rounded. Rule ids, labels, groups and group caps stay as they are (the regression
//! sees uncapped units; the suggested model is scored *with* the caps). Each fold's
//! suggested model is fitted without that fold, compiled and scored by the real engine.

use serde::Serialize;

use super::analyze::score_all;
use super::asof::{known_before, AsOf};
use super::auc;
use super::generate::Rng;
use super::logistic;
use super::{ClosedLead, Outcome};
use crate::scoring::spec::ScoringSpec;
use crate::scoring::Model;

/// How to tune.
#[derive(Debug, Clone, Copy)]
pub struct TuneOptions {
    pub as_of: AsOf,
    pub folds: usize,
    /// L2 penalty on standardised coefficients.
    pub lambda: f64,
    /// Fold assignment seed.
    pub seed: u64,
}

impl Default for TuneOptions {
    fn default() -> Self {
        TuneOptions {
            as_of: AsOf::default(),
            folds: 5,
            lambda: 1.0,
            seed: 1,
        }
    }
}

/// One rule's verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TunedRule {
    pub id: String,
    pub label: String,
    pub group: String,
    pub current: i32,
    pub suggested: i32,
    /// Log-odds per unit (per match / per occurrence).
    pub coef: f64,
    /// Log-odds per standard deviation: how much the rule tells apart won and lost.
    pub importance: f64,
    /// Share of leads it fired on.
    pub hit_rate: f64,
}

/// The fold AUCs of both models.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FoldAuc {
    pub current: f64,
    pub suggested: f64,
}

/// What `tune` prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TuneReport {
    pub leads: usize,
    pub wins: usize,
    pub as_of: String,
    pub lambda: f64,
    /// Points per unit of log-odds.
    pub scale: f64,
    pub rules: Vec<TunedRule>,
    pub folds: Vec<FoldAuc>,
    pub cv_current: f64,
    pub cv_suggested: f64,
    /// Group caps kept as they are, e.g. `fit ≤ 60`.
    pub caps: Vec<String>,
}

fn features(model: &Model, leads: &[ClosedLead], as_of: AsOf) -> Vec<Vec<f64>> {
    let mut units = Vec::new();
    leads
        .iter()
        .map(|c| {
            let (at, _) = as_of.instant(c);
            model.rule_units(
                c.lead_at(at),
                known_before(&c.activities, at),
                at,
                &mut units,
            );
            units.clone()
        })
        .collect()
}

/// Integer points from coefficients: one scale keeping the admin's total |points|.
fn to_points(coef: &[f64], current: &[i32]) -> (f64, Vec<i32>) {
    let cur: f64 = current.iter().map(|p| f64::from(p.abs())).sum();
    let fit: f64 = coef.iter().map(|c| c.abs()).sum();
    let scale = if fit > 0.0 { cur / fit } else { 0.0 };
    (
        scale,
        coef.iter().map(|c| (c * scale).round() as i32).collect(),
    )
}

/// `spec` with each rule's points replaced (same order as the rules).
pub fn with_points(spec: &ScoringSpec, points: &[i32]) -> ScoringSpec {
    let mut s = spec.clone();
    for (r, p) in s.rules.iter_mut().zip(points) {
        r.points = *p;
    }
    s
}

/// Fit, suggest and cross-validate. `spec` is the config's `[scoring]`, `model` its
/// compiled form.
pub fn tune(
    spec: &ScoringSpec,
    model: &Model,
    leads: &[ClosedLead],
    opts: &TuneOptions,
) -> anyhow::Result<TuneReport> {
    let won: Vec<bool> = leads.iter().map(|c| c.outcome == Outcome::Won).collect();
    let wins = won.iter().filter(|w| **w).count();
    if wins < opts.folds || leads.len() - wins < opts.folds {
        anyhow::bail!(
            "tune needs at least {} won and {} lost leads ({} won, {} lost given)",
            opts.folds,
            opts.folds,
            wins,
            leads.len() - wins
        );
    }
    let x = features(model, leads, opts.as_of);
    let current: Vec<i32> = spec.rules.iter().map(|r| r.points).collect();
    let full = logistic::fit(&x, &won, opts.lambda);
    let (scale, suggested) = to_points(&full.coef, &current);
    let n = leads.len();
    let rules = model
        .rule_infos()
        .into_iter()
        .enumerate()
        .map(|(j, r)| TunedRule {
            current: r.points,
            suggested: suggested[j],
            coef: full.coef[j],
            importance: full.std_coef[j],
            hit_rate: x.iter().filter(|row| row[j] > 0.0).count() as f64 / n as f64,
            id: r.id,
            label: r.label,
            group: r.group,
        })
        .collect();

    // Folds: stratified so each holds its share of wins, assigned by a seeded shuffle.
    let mut fold = vec![0usize; n];
    for class in [true, false] {
        let mut idx: Vec<usize> = (0..n).filter(|&i| won[i] == class).collect();
        Rng::new(opts.seed).shuffle(&mut idx);
        for (k, i) in idx.into_iter().enumerate() {
            fold[i] = k % opts.folds;
        }
    }
    let current_scores = score_all(model, leads, opts.as_of);
    let mut folds = Vec::new();
    for f in 0..opts.folds {
        let train: Vec<usize> = (0..n).filter(|&i| fold[i] != f).collect();
        let test: Vec<usize> = (0..n).filter(|&i| fold[i] == f).collect();
        let xt: Vec<Vec<f64>> = train.iter().map(|&i| x[i].clone()).collect();
        let yt: Vec<bool> = train.iter().map(|&i| won[i]).collect();
        let fit = logistic::fit(&xt, &yt, opts.lambda);
        let (_, pts) = to_points(&fit.coef, &current);
        let m = Model::compile(&with_points(spec, &pts))
            .map_err(|e| anyhow::anyhow!("suggested model does not compile: {e:?}"))?;
        let held: Vec<ClosedLead> = test.iter().map(|&i| leads[i].clone()).collect();
        let sug: Vec<f64> = score_all(&m, &held, opts.as_of)
            .iter()
            .map(|s| f64::from(s.total))
            .collect();
        let cur: Vec<f64> = test
            .iter()
            .map(|&i| f64::from(current_scores[i].total))
            .collect();
        let yw: Vec<bool> = test.iter().map(|&i| won[i]).collect();
        let a = |s: &[f64]| auc::auc(s, &yw).map_or(f64::NAN, |a| a.auc);
        folds.push(FoldAuc {
            current: a(&cur),
            suggested: a(&sug),
        });
    }
    let mean = |f: fn(&FoldAuc) -> f64| folds.iter().map(f).sum::<f64>() / folds.len() as f64;
    let caps = spec
        .groups
        .iter()
        .map(|g| match (g.min, g.max) {
            (Some(lo), Some(hi)) => format!("{} {lo}..{hi}", g.id),
            (None, Some(hi)) => format!("{} ≤ {hi}", g.id),
            (Some(lo), None) => format!("{} ≥ {lo}", g.id),
            (None, None) => format!("{} uncapped", g.id),
        })
        .collect();
    Ok(TuneReport {
        leads: n,
        wins,
        as_of: opts.as_of.to_string(),
        lambda: opts.lambda,
        scale,
        rules,
        cv_current: mean(|f| f.current),
        cv_suggested: mean(|f| f.suggested),
        folds,
        caps,
    })
}

/// A unified diff of the config text changing each rule's `points = N` line to the
/// suggestion (apply with `patch -p0`), found by the rule's `id` line inside its
/// `[[scoring.rules]]` table. Rules written another way (inline tables) are listed as
/// comments at the end instead.
pub fn toml_diff(config_text: &str, file: &str, rules: &[TunedRule]) -> String {
    let mut out = format!("--- {file}\n+++ {file}\n");
    let mut in_rules = false;
    let mut current_id: Option<String> = None;
    let mut done = std::collections::HashSet::new();
    for (i, line) in config_text.lines().enumerate() {
        let t = line.trim();
        if t.starts_with('[') {
            in_rules = t == "[[scoring.rules]]";
            current_id = None;
            continue;
        }
        if !in_rules {
            continue;
        }
        let kv = t.split_once('=').map(|(k, v)| (k.trim(), v.trim()));
        match kv {
            Some(("id", v)) => current_id = Some(v.trim_matches('"').to_string()),
            Some(("points", v)) => {
                let Some(id) = &current_id else { continue };
                let Some(r) = rules.iter().find(|r| &r.id == id) else {
                    continue;
                };
                let old: Option<i32> = v.split('#').next().and_then(|x| x.trim().parse().ok());
                done.insert(id.clone());
                if old == Some(r.suggested) {
                    continue;
                }
                let indent = &line[..line.len() - line.trim_start().len()];
                out.push_str(&format!(
                    "@@ -{n} +{n} @@ {id}\n-{line}\n+{indent}points = {}\n",
                    r.suggested,
                    n = i + 1
                ));
            }
            _ => {}
        }
    }
    for r in rules
        .iter()
        .filter(|r| !done.contains(&r.id) && r.current != r.suggested)
    {
        out.push_str(&format!(
            "# rule {}: set points = {} (was {})\n",
            r.id, r.suggested, r.current
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_changes_only_points_lines_of_named_rules() {
        let text = "[scoring]\nmax = 100\n\n[[scoring.rules]]\nid = \"a\"\npoints = 5\n\n[[scoring.rules]]\nid = \"b\"\n  points = -3 # why\n";
        let rule = |id: &str, current, suggested| TunedRule {
            id: id.into(),
            label: String::new(),
            group: String::new(),
            current,
            suggested,
            coef: 0.0,
            importance: 0.0,
            hit_rate: 0.0,
        };
        let d = toml_diff(
            text,
            "c.toml",
            &[rule("a", 5, 5), rule("b", -3, 7), rule("z", 1, 2)],
        );
        assert_eq!(
            d,
            "--- c.toml\n+++ c.toml\n@@ -10 +10 @@ b\n-  points = -3 # why\n+  points = 7\n# rule z: set points = 2 (was 1)\n"
        );
    }

    #[test]
    fn points_keep_the_total_scale() {
        let (scale, p) = to_points(&[1.0, -0.5, 0.5], &[10, -5, 5]);
        assert_eq!(scale, 10.0);
        assert_eq!(p, vec![10, -5, 5]);
    }
}

//! Weighted pipeline value (issue 18, item 3): a deal's expected value is its amount
//! times the coefficient of the stage it is in (before qualification ×0, qualified
//! ×0.1, solution and price agreed ×0.4–0.5, tender won ×0.8–0.9, and 1 only once it is
//! paid: an open stage never counts the whole amount). Coefficients are configured per
//! pipeline and stage in `[portal.stages]`; sums per rep and per pipeline stand next to
//! the plain sums so a manager sees how much of the funnel is real.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::lead::Lead;

/// `[portal.stages]` as written: `won` stage ids, and per pipeline (`"*"`: any other)
/// a coefficient per stage id.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StagesSection {
    /// Stage ids that mean "paid" (the only ones allowed a coefficient of 1); default
    /// Bitrix24's `WON` (any `C<n>:WON` too) and amoCRM's 142.
    #[serde(default)]
    pub won: Option<Vec<String>>,
    /// Pipeline id (Bitrix24 `CATEGORY_ID`, amoCRM `pipeline_id`; `"*"` for any) →
    /// stage id → coefficient.
    #[serde(default)]
    pub pipelines: BTreeMap<String, BTreeMap<String, f64>>,
}

/// The checked coefficients of one portal.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StageCoefficients {
    won: Vec<String>,
    pipelines: BTreeMap<String, BTreeMap<String, f64>>,
}

/// Why a coefficient was refused (the config check reports it at its key).
#[derive(Debug, Clone, PartialEq)]
pub struct CoefficientError {
    pub pipeline: String,
    pub stage: String,
    pub message: String,
}

/// The won stages when the config names none.
fn default_won() -> Vec<String> {
    vec!["WON".into(), "142".into()]
}

impl StageCoefficients {
    /// Check a `[portal.stages]` section: every coefficient is a finite number in
    /// [0, 1), or exactly 1 for a won stage (a deal is worth its whole amount only
    /// once paid). Every mistake is returned, not only the first.
    pub fn check(section: &StagesSection) -> Result<StageCoefficients, Vec<CoefficientError>> {
        let won = section.won.clone().unwrap_or_else(default_won);
        let out = StageCoefficients {
            won,
            pipelines: section.pipelines.clone(),
        };
        let mut errors = Vec::new();
        for (pipeline, stages) in &section.pipelines {
            for (stage, &c) in stages {
                let err = |message: String| CoefficientError {
                    pipeline: pipeline.clone(),
                    stage: stage.clone(),
                    message,
                };
                if !c.is_finite() || c < 0.0 {
                    errors.push(err(format!("{c} is not a coefficient between 0 and 1")));
                } else if c > 1.0 || (c >= 1.0 && !out.is_won(stage)) {
                    errors.push(err(format!(
                        "{c}: an open stage is worth less than the whole amount (below 1); only a won stage ({}) may be 1",
                        out.won.join(", ")
                    )));
                }
            }
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(errors)
        }
    }

    /// Is `stage` a won (paid) stage? Bitrix24 custom pipelines prefix their stages
    /// (`C1:WON`), so the part after the colon counts too.
    pub fn is_won(&self, stage: &str) -> bool {
        let tail = stage.rsplit(':').next().unwrap_or(stage);
        self.won.iter().any(|w| w == stage || w == tail)
    }

    /// Are any coefficients configured?
    pub fn is_empty(&self) -> bool {
        self.pipelines.is_empty()
    }

    /// The coefficient of a stage in a pipeline (the pipeline's own table, else `"*"`);
    /// `None`: not configured, so the deal has no expected value.
    pub fn coefficient(&self, pipeline: Option<&str>, stage: &str) -> Option<f64> {
        let own = pipeline.and_then(|p| self.pipelines.get(p));
        own.and_then(|t| t.get(stage))
            .or_else(|| self.pipelines.get("*").and_then(|t| t.get(stage)))
            .copied()
    }

    /// amount × coefficient of the deal's stage (`None`: no amount, no stage, or a
    /// stage without a coefficient).
    pub fn expected_value(&self, lead: &Lead) -> Option<f64> {
        let amount = lead.amount.filter(|a| a.is_finite())?;
        let c = self.coefficient(lead.pipeline.as_deref(), lead.stage.as_deref()?)?;
        Some(amount * c)
    }

    /// Plain and weighted sums of open deals per rep and per pipeline. Deals in a won
    /// stage are done, not pipeline, and are left out; so are deals without an amount.
    pub fn sums<'a>(&self, leads: impl IntoIterator<Item = &'a Lead>) -> PipelineSums {
        let mut out = PipelineSums::default();
        for lead in leads {
            let Some(amount) = lead.amount.filter(|a| a.is_finite()) else {
                continue;
            };
            if lead.stage.as_deref().is_some_and(|s| self.is_won(s)) {
                continue;
            }
            let weighted = self.expected_value(lead).unwrap_or(0.0);
            let add = |m: &mut BTreeMap<String, Sum>, key: String| {
                let s = m.entry(key).or_default();
                s.deals += 1;
                s.plain += amount;
                s.weighted += weighted;
            };
            add(
                &mut out.per_rep,
                lead.responsible_id.clone().unwrap_or_else(|| "-".into()),
            );
            add(
                &mut out.per_pipeline,
                lead.pipeline.clone().unwrap_or_else(|| "-".into()),
            );
        }
        out
    }
}

/// One group's open deals: how many, their plain and their weighted sum.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Sum {
    pub deals: usize,
    pub plain: f64,
    pub weighted: f64,
}

/// Sums per rep (`responsible_id`, `-` for none) and per pipeline (`-` for none).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PipelineSums {
    pub per_rep: BTreeMap<String, Sum>,
    pub per_pipeline: BTreeMap<String, Sum>,
}

impl PipelineSums {
    /// Lines for `leadscore status`: one per rep and per pipeline, plain next to weighted.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (title, map) in [("rep", &self.per_rep), ("pipeline", &self.per_pipeline)] {
            for (key, s) in map {
                out.push_str(&format!(
                    "  {title} {key}: {} open deals, sum {:.2}, weighted {:.2}\n",
                    s.deals, s.plain, s.weighted
                ));
            }
        }
        out
    }
}

/// Coefficients of Bitrix24's standard deal funnel (pipeline "0") as the sales guides
/// give them: nothing before qualification, a tenth once qualified, 0.4–0.5 once the
/// solution and price are agreed, 0.8 at the final invoice, the whole amount when won.
/// The body of a `[portal.stages.pipelines."0"]` table (the demo's funnel uses it).
pub const BITRIX24_FUNNEL: &str = "NEW = 0.0
PREPARATION = 0.1
PREPAYMENT_INVOICE = 0.4
EXECUTING = 0.5
FINAL_INVOICE = 0.8
WON = 1.0
";

/// The weighted value as the CRM field gets it: a decimal with at most two places
/// (`None`: no coefficients configured, or the record has no amount or stage).
pub fn expected_text(stages: &StageCoefficients, lead: &Lead) -> Option<String> {
    if stages.is_empty() {
        return None;
    }
    let v = stages.expected_value(lead)?;
    let text = format!("{:.2}", (v * 100.0).round() / 100.0);
    Some(text.trim_end_matches('0').trim_end_matches('.').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(toml_text: &str) -> StagesSection {
        toml::from_str(toml_text).unwrap()
    }

    /// The commented default of the example config: Bitrix24's standard deal funnel.
    fn bitrix24_funnel() -> StagesSection {
        section(&format!("[pipelines.\"0\"]\n{BITRIX24_FUNNEL}"))
    }

    fn deal(rep: &str, pipeline: &str, stage: &str, amount: f64) -> Lead {
        Lead {
            responsible_id: Some(rep.into()),
            pipeline: Some(pipeline.into()),
            stage: Some(stage.into()),
            amount: Some(amount),
            ..Lead::default()
        }
    }

    #[test]
    fn expected_values_match_hand_computed_cases() {
        let c = StageCoefficients::check(&bitrix24_funnel()).unwrap();
        // 250,000 × 0.4 = 100,000; 1,000,000 × 0.1 = 100,000; 80,000 × 0.8 = 64,000.
        assert_eq!(
            c.expected_value(&deal("3", "0", "PREPAYMENT_INVOICE", 250_000.0)),
            Some(100_000.0)
        );
        assert_eq!(
            c.expected_value(&deal("3", "0", "PREPARATION", 1_000_000.0)),
            Some(100_000.0)
        );
        assert_eq!(
            c.expected_value(&deal("5", "0", "FINAL_INVOICE", 80_000.0)),
            Some(64_000.0)
        );
        assert_eq!(
            c.expected_value(&deal("5", "0", "NEW", 500_000.0)),
            Some(0.0)
        );
        // Unknown stage or pipeline without a "*" table: no expected value.
        assert_eq!(c.expected_value(&deal("5", "0", "C1:NEW", 10.0)), None);
        assert_eq!(c.expected_value(&deal("5", "1", "NEW", 10.0)), None);
        assert_eq!(c.expected_value(&Lead::default()), None);
    }

    #[test]
    fn the_field_gets_a_plain_decimal_and_nothing_without_coefficients() {
        let c = StageCoefficients::check(&bitrix24_funnel()).unwrap();
        let text = |stage: &str, amount: f64| expected_text(&c, &deal("3", "0", stage, amount));
        assert_eq!(
            text("PREPAYMENT_INVOICE", 250_000.0).as_deref(),
            Some("100000")
        );
        // 33,333.33 × 0.4 = 13,333.332 → two places.
        assert_eq!(
            text("PREPAYMENT_INVOICE", 33_333.33).as_deref(),
            Some("13333.33")
        );
        assert_eq!(text("EXECUTING", 1_001.0).as_deref(), Some("500.5"));
        assert_eq!(text("NEW", 500_000.0).as_deref(), Some("0"));
        let none = StageCoefficients::default();
        assert_eq!(expected_text(&none, &deal("3", "0", "NEW", 1.0)), None);
    }

    #[test]
    fn sums_per_rep_and_pipeline_stand_next_to_the_plain_sums() {
        let mut s = bitrix24_funnel();
        // amoCRM-style ids in another pipeline, through the "*" fallback.
        s.pipelines.insert(
            "*".into(),
            [("7001".to_string(), 0.5)].into_iter().collect(),
        );
        let c = StageCoefficients::check(&s).unwrap();
        let deals = [
            deal("3", "0", "PREPAYMENT_INVOICE", 250_000.0), // 100,000
            deal("3", "0", "PREPARATION", 1_000_000.0),      // 100,000
            deal("5", "0", "FINAL_INVOICE", 80_000.0),       // 64,000
            deal("5", "9", "7001", 30_000.0),                // 15,000
            deal("5", "0", "WON", 999_999.0),                // done: left out
            deal("5", "0", "UNKNOWN", 1_000.0),              // counted plain, weighs 0
        ];
        let sums = c.sums(deals.iter());
        assert_eq!(
            sums.per_rep["3"],
            Sum {
                deals: 2,
                plain: 1_250_000.0,
                weighted: 200_000.0
            }
        );
        assert_eq!(
            sums.per_rep["5"],
            Sum {
                deals: 3,
                plain: 111_000.0,
                weighted: 79_000.0
            }
        );
        assert_eq!(
            sums.per_pipeline["0"],
            Sum {
                deals: 4,
                plain: 1_331_000.0,
                weighted: 264_000.0
            }
        );
        assert_eq!(
            sums.per_pipeline["9"],
            Sum {
                deals: 1,
                plain: 30_000.0,
                weighted: 15_000.0
            }
        );
        let text = sums.render();
        assert!(
            text.contains("rep 3: 2 open deals, sum 1250000.00, weighted 200000.00"),
            "{text}"
        );
    }

    #[test]
    fn an_open_stage_may_not_count_the_whole_amount() {
        let bad = section(
            r#"
[pipelines."0"]
EXECUTING = 1.0
NEW = -0.1
"C1:WON" = 1.0
PREPARATION = 1.5
"#,
        );
        let errors = StageCoefficients::check(&bad).unwrap_err();
        let stages: Vec<&str> = errors.iter().map(|e| e.stage.as_str()).collect();
        assert_eq!(stages, ["EXECUTING", "NEW", "PREPARATION"], "{errors:?}");
        assert!(errors[0].message.contains("only a won stage"));
        // amoCRM's won status (142) is won by default.
        let amo = section("[pipelines.\"*\"]\n142 = 1.0\n143 = 0.0\n");
        assert!(StageCoefficients::check(&amo).is_ok());
        // A portal naming its own won stages.
        let own = section("won = [\"PAID\"]\n[pipelines.\"*\"]\nPAID = 1.0\nWON = 1.0\n");
        let errors = StageCoefficients::check(&own).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].stage, "WON");
    }
}

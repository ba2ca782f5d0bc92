//! Score → win probability, from past outcomes: "72 ≈ 18%".
//!
//! Pool-adjacent-violators (isotonic regression): the observed win rate per score,
//! pooled with its neighbours wherever a higher score won less often, until the rates
//! never go down. The result is a step function that only rises with the score (so the
//! probability never contradicts the ranking reps see) and that equals the observed
//! rate of each pooled band (so it is as honest as the data). No smoothing beyond the
//! pooling: with few leads per score the steps are coarse, and the report shows counts.

use serde::{Deserialize, Serialize};

/// One pooled band of scores with its observed win rate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// Lowest score seen in the band.
    pub lo: i32,
    /// Highest score seen in the band.
    pub hi: i32,
    /// Leads in the band.
    pub n: usize,
    /// Won leads in the band.
    pub wins: usize,
}

impl Step {
    /// The band's observed win rate.
    pub fn rate(&self) -> f64 {
        self.wins as f64 / self.n as f64
    }
}

/// A monotone score → probability mapping, serialisable so the daemon can load the one
/// a backtest computed and show a probability beside the points.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Calibration {
    /// Bands in rising score order, with rising (never falling) rates.
    pub steps: Vec<Step>,
}

impl Calibration {
    /// Fit on `(score, won)` pairs.
    pub fn fit(obs: impl IntoIterator<Item = (i32, bool)>) -> Calibration {
        let mut by_score: Vec<(i32, bool)> = obs.into_iter().collect();
        by_score.sort_by_key(|&(s, _)| s);
        let mut steps: Vec<Step> = Vec::new();
        let mut i = 0;
        while i < by_score.len() {
            let s = by_score[i].0;
            let mut step = Step {
                lo: s,
                hi: s,
                n: 0,
                wins: 0,
            };
            while i < by_score.len() && by_score[i].0 == s {
                step.n += 1;
                step.wins += usize::from(by_score[i].1);
                i += 1;
            }
            steps.push(step);
            // Pool while the previous band wins more often than this one.
            while steps.len() >= 2 {
                let (a, b) = (steps[steps.len() - 2], steps[steps.len() - 1]);
                if a.wins * b.n <= b.wins * a.n {
                    break;
                }
                steps.pop();
                let last = steps.last_mut().expect("two steps");
                last.hi = b.hi;
                last.n += b.n;
                last.wins += b.wins;
            }
        }
        Calibration { steps }
    }

    /// The win probability of a lead scoring `score`: the rate of the band holding it,
    /// or of the highest band below it (scores never seen fall back to their lower
    /// neighbour, so the mapping stays monotone); `None` with no data.
    pub fn probability(&self, score: i32) -> Option<f64> {
        let first = self.steps.first()?;
        let i = self.steps.partition_point(|s| s.lo <= score);
        Some(if i == 0 {
            first.rate()
        } else {
            self.steps[i - 1].rate()
        })
    }

    /// "72 ≈ 18%": the score with its probability, for reports and cards.
    pub fn describe(&self, score: i32) -> String {
        match self.probability(score) {
            Some(p) => format!("{score} ≈ {:.0}%", p * 100.0),
            None => format!("{score} ≈ ?"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_violators_by_hand() {
        // score 10: 1/2 won, 20: 0/2, 30: 2/2. 10 and 20 pool to 1/4; 30 stays 2/2.
        let obs = [
            (10, true),
            (10, false),
            (20, false),
            (20, false),
            (30, true),
            (30, true),
        ];
        let c = Calibration::fit(obs);
        assert_eq!(c.steps.len(), 2);
        assert_eq!(
            (c.steps[0].lo, c.steps[0].hi, c.steps[0].n, c.steps[0].wins),
            (10, 20, 4, 1)
        );
        assert_eq!(c.probability(15), Some(0.25));
        assert_eq!(c.probability(5), Some(0.25));
        assert_eq!(c.probability(29), Some(0.25));
        assert_eq!(c.probability(99), Some(1.0));
        assert_eq!(c.describe(30), "30 ≈ 100%");
        assert_eq!(Calibration::default().probability(1), None);
    }

    #[test]
    fn always_monotone() {
        let obs: Vec<(i32, bool)> = (0..500i32)
            .map(|i| (i * 37 % 101, (i * 7919) % 13 < ((i * 37 % 101) / 10)))
            .collect();
        let c = Calibration::fit(obs.iter().copied());
        let ps: Vec<f64> = (0..=100).map(|s| c.probability(s).unwrap()).collect();
        assert!(ps.windows(2).all(|w| w[0] <= w[1]), "{ps:?}");
        assert_eq!(c.steps.iter().map(|s| s.n).sum::<usize>(), 500);
    }
}

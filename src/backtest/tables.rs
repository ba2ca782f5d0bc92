//! Counting tables over scored closed leads: per tier, per score decile and per
//! calibration band: count, conversion, mean deal size, median time to close.

use serde::Serialize;

use super::calibration::Calibration;
use crate::scoring::TierInfo;

/// One scored closed lead, as the tables see it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Obs {
    pub score: i32,
    pub won: bool,
    /// The deal size, when known.
    pub amount: Option<f64>,
    /// Days from creation to close.
    pub days: f64,
}

/// The figures of one group of leads.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bucket {
    /// `hot`, `D10`, `70–79`.
    pub label: String,
    /// Lowest and highest score in the group (or the band's bounds).
    pub lo: i32,
    pub hi: i32,
    pub count: usize,
    pub wins: usize,
    /// `wins / count` (0 for an empty group).
    pub conversion: f64,
    /// Mean amount of the won deals with an amount.
    pub mean_deal: Option<f64>,
    /// Median days from creation to close, won and lost alike.
    pub median_days_to_close: Option<f64>,
    /// Median days from creation to close of the won leads.
    pub median_days_to_win: Option<f64>,
}

/// The median of `v` (sorted in place); `None` when empty.
pub fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// The figures of the leads in `group`; `lo`/`hi` are their score range.
pub fn bucket<'a>(label: String, group: impl IntoIterator<Item = &'a Obs>) -> Bucket {
    let (mut count, mut wins) = (0, 0);
    let (mut lo, mut hi) = (i32::MAX, i32::MIN);
    let mut amounts = Vec::new();
    let mut days = Vec::new();
    let mut all_days = Vec::new();
    for o in group {
        count += 1;
        all_days.push(o.days);
        lo = lo.min(o.score);
        hi = hi.max(o.score);
        if o.won {
            wins += 1;
            days.push(o.days);
            amounts.extend(o.amount);
        }
    }
    Bucket {
        label,
        lo: if count == 0 { 0 } else { lo },
        hi: if count == 0 { 0 } else { hi },
        count,
        wins,
        conversion: if count == 0 {
            0.0
        } else {
            wins as f64 / count as f64
        },
        mean_deal: (!amounts.is_empty())
            .then(|| amounts.iter().sum::<f64>() / amounts.len() as f64),
        median_days_to_close: median(&mut all_days),
        median_days_to_win: median(&mut days),
    }
}

/// One bucket per tier, lowest tier first (empty tiers included, with their bounds).
pub fn by_tier(obs: &[Obs], tiers: &[TierInfo]) -> Vec<Bucket> {
    tiers
        .iter()
        .map(|t| {
            let mut b = bucket(
                t.id.clone(),
                obs.iter().filter(|o| t.min <= o.score && o.score <= t.max),
            );
            b.lo = t.min;
            b.hi = t.max;
            b
        })
        .collect()
}

/// Score deciles, `D1` the lowest scores to `D10` the highest. Leads with equal scores
/// stay together: a lead's decile is ⌊10 × (leads scoring strictly lower) / n⌋ + 1, so
/// with many ties some deciles are empty (and left out) rather than split at random.
pub fn by_decile(obs: &[Obs]) -> Vec<Bucket> {
    let n = obs.len();
    let mut sorted: Vec<i32> = obs.iter().map(|o| o.score).collect();
    sorted.sort_unstable();
    let decile = |s: i32| sorted.partition_point(|&x| x < s) * 10 / n.max(1);
    (0..10)
        .filter_map(|d| {
            let b = bucket(
                format!("D{}", d + 1),
                obs.iter().filter(|o| decile(o.score) == d),
            );
            (b.count > 0).then_some(b)
        })
        .collect()
}

/// One calibration band: observed win rate beside the fitted probability.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Band {
    pub lo: i32,
    pub hi: i32,
    pub count: usize,
    pub wins: usize,
    /// Observed win rate in the band (`None` when empty).
    pub observed: Option<f64>,
    /// Mean fitted (isotonic) probability of the band's leads.
    pub fitted: Option<f64>,
}

/// Bands of `width` points from `min` to `max` (the last one ends at `max`), each
/// with its observed win rate and the isotonic fit `cal`'s mean probability.
pub fn calibration_bands(
    obs: &[Obs],
    min: i32,
    max: i32,
    width: i32,
    cal: &Calibration,
) -> Vec<Band> {
    let mut out = Vec::new();
    let mut lo = min;
    while lo <= max {
        // The last band takes the remainder: 90–100, not 90–99 and 100–100.
        let hi = lo.saturating_add(width - 1);
        let hi = if max.saturating_sub(hi) < width {
            max
        } else {
            hi
        };
        let inside: Vec<&Obs> = obs
            .iter()
            .filter(|o| lo <= o.score && o.score <= hi)
            .collect();
        let wins = inside.iter().filter(|o| o.won).count();
        let fitted: f64 = inside.iter().filter_map(|o| cal.probability(o.score)).sum();
        out.push(Band {
            lo,
            hi,
            count: inside.len(),
            wins,
            observed: (!inside.is_empty()).then(|| wins as f64 / inside.len() as f64),
            fitted: (!inside.is_empty()).then(|| fitted / inside.len() as f64),
        });
        lo = hi + 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(score: i32, won: bool, amount: Option<f64>, days: f64) -> Obs {
        Obs {
            score,
            won,
            amount,
            days,
        }
    }

    #[test]
    fn deciles_keep_ties_together_by_hand() {
        // 10 leads: scores 1..=10 → one per decile; then 4 leads tied at 5 share one.
        let obs: Vec<Obs> = (1..=10).map(|s| o(s, s > 7, None, 1.0)).collect();
        let d = by_decile(&obs);
        assert_eq!(d.len(), 10);
        assert_eq!((d[9].label.as_str(), d[9].lo, d[9].wins), ("D10", 10, 1));
        let tied = [
            o(5, true, None, 1.0),
            o(5, false, None, 1.0),
            o(5, false, None, 1.0),
            o(9, true, None, 1.0),
        ];
        let d = by_decile(&tied);
        // Three leads score lower than none: D1; the 9 has 3 below → ⌊30/4⌋ = 7 → D8.
        assert_eq!(d.len(), 2);
        assert_eq!((d[0].label.as_str(), d[0].count, d[0].wins), ("D1", 3, 1));
        assert_eq!((d[1].label.as_str(), d[1].count), ("D8", 1));
    }

    #[test]
    fn bucket_figures_by_hand() {
        let obs = [
            o(80, true, Some(100.0), 10.0),
            o(75, true, Some(300.0), 30.0),
            o(72, true, None, 20.0),
            o(90, false, Some(999.0), 5.0),
        ];
        let b = bucket("hot".into(), &obs);
        assert_eq!((b.count, b.wins, b.lo, b.hi), (4, 3, 72, 90));
        assert_eq!(b.conversion, 0.75);
        assert_eq!(b.mean_deal, Some(200.0), "won deals with an amount only");
        assert_eq!(b.median_days_to_win, Some(20.0));
        assert_eq!(b.median_days_to_close, Some(15.0));
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn calibration_bands_by_hand() {
        let obs = [
            o(5, false, None, 1.0),
            o(15, true, None, 1.0),
            o(15, false, None, 1.0),
            o(100, true, None, 1.0),
        ];
        let cal = Calibration::fit(obs.iter().map(|x| (x.score, x.won)));
        let bands = calibration_bands(&obs, 0, 100, 10, &cal);
        assert_eq!(bands.len(), 10);
        assert_eq!((bands[0].lo, bands[0].hi, bands[0].count), (0, 9, 1));
        assert_eq!(
            (bands[1].count, bands[1].wins, bands[1].observed),
            (2, 1, Some(0.5))
        );
        assert_eq!((bands[9].lo, bands[9].hi, bands[9].count), (90, 100, 1));
        assert_eq!(bands[5].observed, None);
    }
}

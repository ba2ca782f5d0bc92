//! AUC (the chance that a random won lead outscored a random lost one; ties count
//! half) with DeLong's variance, and DeLong's paired test for two models on the same
//! leads.
//!
//! DeLong rather than Hanley–McNeil: it makes no assumption about the score
//! distributions (Hanley–McNeil assumes exponential ones) and it gives the covariance of
//! two AUCs on the same leads, which a paired ΔAUC interval needs. Each lead's
//! "placement" (its share of the other class it beats) is found by binary search in the
//! sorted other class, so the whole computation is O(n log n).

use serde::Serialize;

/// z for a two-sided 95% interval.
const Z95: f64 = 1.959_963_984_540_054;

/// An AUC with its DeLong standard error and 95% interval (normal approximation,
/// clamped to 0..1).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AucCi {
    pub auc: f64,
    pub se: f64,
    pub lo: f64,
    pub hi: f64,
}

/// Model B minus model A on the same leads, with DeLong's paired interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PairedDelta {
    pub auc_a: f64,
    pub auc_b: f64,
    /// `auc_b - auc_a`.
    pub delta: f64,
    pub se: f64,
    pub lo: f64,
    pub hi: f64,
    /// Two-sided p-value of "no difference".
    pub p_value: f64,
}

/// Per-class placements of one score vector: `v10[i]` is the share of negatives won
/// lead `i` beats, `v01[j]` the share of positives lost lead `j` loses to.
struct Placements {
    v10: Vec<f64>,
    v01: Vec<f64>,
}

fn beats(sorted: &[f64], x: f64) -> f64 {
    let below = sorted.partition_point(|&y| y < x);
    let not_above = sorted.partition_point(|&y| y <= x);
    below as f64 + 0.5 * (not_above - below) as f64
}

fn placements(scores: &[f64], won: &[bool]) -> Option<Placements> {
    let mut pos: Vec<f64> = Vec::new();
    let mut neg: Vec<f64> = Vec::new();
    for (&s, &w) in scores.iter().zip(won) {
        if w {
            pos.push(s)
        } else {
            neg.push(s)
        }
    }
    if pos.is_empty() || neg.is_empty() {
        return None;
    }
    let (m, n) = (pos.len() as f64, neg.len() as f64);
    let mut sneg = neg.clone();
    sneg.sort_by(f64::total_cmp);
    let mut spos = pos.clone();
    spos.sort_by(f64::total_cmp);
    let v10 = pos.iter().map(|&x| beats(&sneg, x) / n).collect();
    // A lost lead's placement: the share of won leads scoring above it (ties half).
    let v01 = neg.iter().map(|&y| (m - beats(&spos, y)) / m).collect();
    Some(Placements { v10, v01 })
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// Sample covariance (n − 1); 0 for a single value.
fn cov(a: &[f64], b: &[f64]) -> f64 {
    if a.len() < 2 {
        return 0.0;
    }
    let (ma, mb) = (mean(a), mean(b));
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - ma) * (y - mb))
        .sum::<f64>()
        / (a.len() - 1) as f64
}

/// AUC of `scores` against `won` with its DeLong interval; `None` without both a won
/// and a lost lead.
pub fn auc(scores: &[f64], won: &[bool]) -> Option<AucCi> {
    let p = placements(scores, won)?;
    let a = mean(&p.v10);
    let var = cov(&p.v10, &p.v10) / p.v10.len() as f64 + cov(&p.v01, &p.v01) / p.v01.len() as f64;
    let se = var.max(0.0).sqrt();
    Some(AucCi {
        auc: a,
        se,
        lo: (a - Z95 * se).max(0.0),
        hi: (a + Z95 * se).min(1.0),
    })
}

/// DeLong's paired comparison of two score vectors over the same leads.
pub fn paired(a: &[f64], b: &[f64], won: &[bool]) -> Option<PairedDelta> {
    let pa = placements(a, won)?;
    let pb = placements(b, won)?;
    let (m, n) = (pa.v10.len() as f64, pa.v01.len() as f64);
    let (auc_a, auc_b) = (mean(&pa.v10), mean(&pb.v10));
    let var = (cov(&pa.v10, &pa.v10) + cov(&pb.v10, &pb.v10) - 2.0 * cov(&pa.v10, &pb.v10)) / m
        + (cov(&pa.v01, &pa.v01) + cov(&pb.v01, &pb.v01) - 2.0 * cov(&pa.v01, &pb.v01)) / n;
    let se = var.max(0.0).sqrt();
    let delta = auc_b - auc_a;
    let p_value = if se > 0.0 {
        2.0 * normal_sf((delta / se).abs())
    } else if delta == 0.0 {
        1.0
    } else {
        0.0
    };
    Some(PairedDelta {
        auc_a,
        auc_b,
        delta,
        se,
        lo: delta - Z95 * se,
        hi: delta + Z95 * se,
        p_value,
    })
}

/// P(Z > z) for a standard normal, from erfc (Abramowitz & Stegun 7.1.26, |error| <
/// 1.5e-7: plenty for a p-value printed to three places).
fn normal_sf(z: f64) -> f64 {
    let x = z / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erfc = poly * (-x * x).exp();
    let erfc = if x >= 0.0 { erfc } else { 2.0 - erfc };
    0.5 * erfc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_small_case() {
        // won: 3, 2; lost: 2, 1. Pairs: 3>2, 3>1, 2=2 (half), 2>1 → 3.5 / 4.
        let s = [3.0, 2.0, 2.0, 1.0];
        let w = [true, true, false, false];
        let a = auc(&s, &w).unwrap();
        assert!((a.auc - 0.875).abs() < 1e-12);
        assert!(a.lo <= a.auc && a.auc <= a.hi);
        assert!(auc(&s, &[true; 4]).is_none());
    }

    #[test]
    fn paired_same_model_is_zero_and_reversal_is_negative() {
        let s = [5.0, 4.0, 3.0, 2.0, 1.0, 0.5];
        let w = [true, true, false, true, false, false];
        let d = paired(&s, &s, &w).unwrap();
        assert_eq!(d.delta, 0.0);
        assert_eq!(d.p_value, 1.0);
        let flipped: Vec<f64> = s.iter().map(|x| -x).collect();
        let d = paired(&s, &flipped, &w).unwrap();
        assert!((d.auc_a + d.auc_b - 1.0).abs() < 1e-12);
        assert!(d.delta < 0.0 && d.hi >= d.delta && d.lo <= d.delta);
    }

    #[test]
    fn normal_tail_matches_known_values() {
        assert!((normal_sf(0.0) - 0.5).abs() < 1e-7);
        assert!((normal_sf(1.959_963_984_540_054) - 0.025).abs() < 1e-6);
        assert!((normal_sf(-1.0) - 0.841_344_746).abs() < 1e-6);
    }
}

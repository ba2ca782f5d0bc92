//! L2-regularised logistic regression by Newton's method (IRLS), for `leadscore tune`.
//!
//! Written here rather than taken from linfa-logistic: that crate brings ndarray and
//! argmin (a large compile on two cores) for what is here a ~20-feature problem whose
//! Hessian is a 21×21 matrix. Newton on the standardised features converges in a
//! handful of steps; the L2 penalty (on standardised coefficients, not the intercept)
//! keeps rare or collinear rules (two title rules, three headcount bands) from taking
//! wild weights, and makes the Hessian positive definite so Cholesky always works.

/// A fitted model on the original (unstandardised) feature scale.
#[derive(Debug, Clone, PartialEq)]
pub struct Fit {
    pub intercept: f64,
    /// Log-odds per unit of each feature.
    pub coef: Vec<f64>,
    /// Log-odds per standard deviation of each feature: comparable across features.
    pub std_coef: Vec<f64>,
    pub iterations: usize,
    pub converged: bool,
}

fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// Solve `a x = b` for symmetric positive definite `a` (Cholesky); `None` if not SPD.
fn cholesky_solve(a: &[Vec<f64>], b: &[f64]) -> Option<Vec<f64>> {
    let n = b.len();
    let mut l = vec![vec![0.0; n]; n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[i][k] * l[j][k]).sum();
            if i == j {
                let d = a[i][i] - s;
                if d <= 0.0 || !d.is_finite() {
                    return None;
                }
                l[i][j] = d.sqrt();
            } else {
                l[i][j] = (a[i][j] - s) / l[j][j];
            }
        }
    }
    let mut y = vec![0.0; n];
    for i in 0..n {
        y[i] = (b[i] - (0..i).map(|k| l[i][k] * y[k]).sum::<f64>()) / l[i][i];
    }
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        x[i] = (y[i] - (i + 1..n).map(|k| l[k][i] * x[k]).sum::<f64>()) / l[i][i];
    }
    Some(x)
}

/// Fit `P(y) = σ(b0 + Σ bj xj)` with penalty `lambda/2 · Σ (bj·sdj)²`. Rows of `x` are
/// leads; a constant column gets coefficient 0.
pub fn fit(x: &[Vec<f64>], y: &[bool], lambda: f64) -> Fit {
    let n = x.len();
    let p = x.first().map_or(0, Vec::len);
    let mean: Vec<f64> = (0..p)
        .map(|j| x.iter().map(|r| r[j]).sum::<f64>() / n.max(1) as f64)
        .collect();
    let sd: Vec<f64> = (0..p)
        .map(|j| {
            let v = x.iter().map(|r| (r[j] - mean[j]).powi(2)).sum::<f64>() / n.max(1) as f64;
            v.sqrt()
        })
        .collect();
    let live: Vec<usize> = (0..p).filter(|&j| sd[j] > 1e-12).collect();
    // Standardised design with the intercept first.
    let z: Vec<Vec<f64>> = x
        .iter()
        .map(|r| {
            std::iter::once(1.0)
                .chain(live.iter().map(|&j| (r[j] - mean[j]) / sd[j]))
                .collect()
        })
        .collect();
    let q = live.len() + 1;
    let mut beta = vec![0.0; q];
    let (mut iterations, mut converged) = (0, false);
    for it in 1..=100 {
        iterations = it;
        let mut grad = vec![0.0; q];
        let mut hess = vec![vec![0.0; q]; q];
        for (row, &yi) in z.iter().zip(y) {
            let eta: f64 = row.iter().zip(&beta).map(|(a, b)| a * b).sum();
            let pi = sigmoid(eta);
            let w = (pi * (1.0 - pi)).max(1e-10);
            let r = f64::from(u8::from(yi)) - pi;
            // The full matrix (not a triangle): q is ~20, the doubling costs nothing.
            for ((g, h), &ra) in grad.iter_mut().zip(hess.iter_mut()).zip(row) {
                *g += ra * r;
                for (hab, &rb) in h.iter_mut().zip(row) {
                    *hab += w * ra * rb;
                }
            }
        }
        // The penalty, on every coefficient but the intercept.
        for (a, (g, h)) in grad.iter_mut().zip(hess.iter_mut()).enumerate().skip(1) {
            *g -= lambda * beta[a];
            h[a] += lambda;
        }
        hess[0][0] += 1e-9;
        let Some(step) = cholesky_solve(&hess, &grad) else {
            break;
        };
        let size = step.iter().fold(0.0f64, |m, s| m.max(s.abs()));
        for (b, s) in beta.iter_mut().zip(&step) {
            *b += s;
        }
        if size < 1e-9 {
            converged = true;
            break;
        }
    }
    let mut coef = vec![0.0; p];
    let mut std_coef = vec![0.0; p];
    let mut intercept = beta[0];
    for (k, &j) in live.iter().enumerate() {
        std_coef[j] = beta[k + 1];
        coef[j] = beta[k + 1] / sd[j];
        intercept -= coef[j] * mean[j];
    }
    Fit {
        intercept,
        coef,
        std_coef,
        iterations,
        converged,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_a_planted_model() {
        // y ~ Bernoulli(σ(-1 + 2·x0 + 0·x1)), deterministic pseudo-random draws.
        let mut s = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f64 / (1u64 << 53) as f64
        };
        let mut x = Vec::new();
        let mut y = Vec::new();
        for _ in 0..20_000 {
            let (a, b) = (next(), next());
            x.push(vec![a, b, 1.0]);
            y.push(next() < sigmoid(-1.0 + 2.0 * a));
        }
        let f = fit(&x, &y, 0.0);
        assert!(f.converged);
        assert!((f.coef[0] - 2.0).abs() < 0.15, "{f:?}");
        assert!(f.coef[1].abs() < 0.15, "{f:?}");
        assert_eq!(f.coef[2], 0.0, "constant column");
        assert!((f.intercept + 1.0).abs() < 0.15, "{f:?}");
        // The penalty shrinks toward 0 and never flips the planted sign.
        let g = fit(&x, &y, 5_000.0);
        assert!(g.coef[0] > 0.0 && g.coef[0] < f.coef[0]);
    }

    #[test]
    fn separable_data_stays_finite_with_a_penalty() {
        let x: Vec<Vec<f64>> = (0..20).map(|i| vec![f64::from(i)]).collect();
        let y: Vec<bool> = (0..20).map(|i| i >= 10).collect();
        let f = fit(&x, &y, 1.0);
        assert!(f.coef[0].is_finite() && f.coef[0] > 0.0);
    }
}

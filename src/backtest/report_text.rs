//! The backtest and tune reports as plain text for a terminal or an e-mail.

use std::fmt::Write;

use super::analyze::{Case, Report};
use super::tables::Bucket;
use super::tune::TuneReport;

fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

fn money(x: Option<f64>) -> String {
    x.map_or("—".into(), |v| {
        let s = format!("{:.0}", v);
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(' ');
            }
            out.push(c);
        }
        out
    })
}

fn days(x: Option<f64>) -> String {
    x.map_or("—".into(), |d| format!("{d:.0} d"))
}

fn buckets(out: &mut String, title: &str, rows: &[Bucket]) {
    let _ = writeln!(out, "\n{title}");
    let _ = writeln!(
        out,
        "  {:<6} {:>9} {:>7} {:>6} {:>11} {:>13} {:>13} {:>11}",
        "", "scores", "leads", "won", "conversion", "mean deal", "median close", "median win"
    );
    for b in rows {
        let _ = writeln!(
            out,
            "  {:<6} {:>9} {:>7} {:>6} {:>11} {:>13} {:>13} {:>11}",
            b.label,
            format!("{}–{}", b.lo, b.hi),
            b.count,
            b.wins,
            pct(b.conversion),
            money(b.mean_deal),
            days(b.median_days_to_close),
            days(b.median_days_to_win)
        );
    }
}

fn cases(out: &mut String, title: &str, cases: &[Case]) {
    let _ = writeln!(out, "\n{title}");
    if cases.is_empty() {
        let _ = writeln!(out, "  none");
    }
    for c in cases {
        let _ = writeln!(
            out,
            "  lead {} {} ({}), {} {}, closed {}{}\n    {}",
            c.lead_id,
            c.name.as_deref().unwrap_or(""),
            c.company.as_deref().unwrap_or("—"),
            c.outcome.as_str(),
            money(c.amount),
            c.closed_at.format("%Y-%m-%d"),
            c.loss_reason
                .as_deref()
                .map(|r| format!(", reason: {r}"))
                .unwrap_or_default(),
            c.why
        );
    }
}

/// The whole backtest report as text.
pub fn render(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Backtest of {} closed leads from {}",
        r.leads, r.source
    );
    if let (Some(a), Some(b)) = (r.first_created, r.last_closed) {
        let _ = writeln!(
            out,
            "  created {} … closed {}",
            a.format("%Y-%m-%d"),
            b.format("%Y-%m-%d")
        );
    }
    let _ = writeln!(
        out,
        "  scored as of: {} (only activities strictly before that instant)",
        r.as_of
    );
    for n in &r.notes {
        let _ = writeln!(out, "  note: {n}");
    }
    let _ = writeln!(
        out,
        "\nWon {} of {} ({})",
        r.wins,
        r.leads,
        pct(r.base_rate)
    );
    match &r.auc {
        Some(a) => {
            let _ = writeln!(
                out,
                "AUC {:.3} (95% CI {:.3}–{:.3}, DeLong): a won lead outscores a lost one {:.0}% of the time",
                a.auc,
                a.lo,
                a.hi,
                a.auc * 100.0
            );
        }
        None => {
            let _ = writeln!(out, "AUC: needs both won and lost leads");
        }
    }
    if let (Some(l), Some(t)) = (r.top_tier_lift, r.tiers.last()) {
        let _ = writeln!(out, "Lift of {} over the average: {l:.2}×", t.label);
    }
    buckets(&mut out, "By tier", &r.tiers);
    buckets(
        &mut out,
        "By score decile (D10 = highest scores; ties stay together)",
        &r.deciles,
    );

    let _ = writeln!(
        out,
        "\nCalibration (score band → observed win rate; isotonic fit)"
    );
    for b in &r.calibration {
        let _ = writeln!(
            out,
            "  {:>3}–{:<3} {:>6} leads  observed {:>7}  fitted {:>7}",
            b.lo,
            b.hi,
            b.count,
            b.observed.map_or("—".into(), pct),
            b.fitted.map_or("—".into(), pct)
        );
    }
    let ex = r.probability_text();
    let _ = writeln!(out, "  probability beside points: {}", ex);

    let _ = writeln!(
        out,
        "\nRules (hit rate among won vs lost, lift = win rate when it fired / average)"
    );
    for rule in &r.rules {
        let _ = writeln!(
            out,
            "  {:<18} {:>+4}  won {:>6}  lost {:>6}  lift {}",
            rule.id,
            rule.points,
            pct(rule.won_hit_rate),
            pct(rule.lost_hit_rate),
            rule.lift.map_or("—".into(), |l| format!("{l:.2}×"))
        );
    }
    cases(
        &mut out,
        "Biggest false positives (top tier, lost)",
        &r.false_positives,
    );
    cases(
        &mut out,
        "Biggest false negatives (bottom tier, won)",
        &r.false_negatives,
    );

    let lw = r.last_wins_text();
    let _ = writeln!(
        out,
        "\nOf the last {} wins, when it mattered: {}",
        r.last_wins.n, lw
    );

    let c = &r.capacity;
    let _ = writeln!(
        out,
        "\nCapacity ({} reps, {:.0} working days)\n  above {}: {} call-now tasks, {:.2} per rep per day (busiest rep{}: {:.2}), {} of wins had one, {} of tasks were won",
        c.reps,
        c.working_days,
        c.current.threshold,
        c.current.tasks,
        c.current.per_rep_day,
        c.busiest_rep.as_deref().map(|r| format!(" {r}")).unwrap_or_default(),
        c.current.busiest_per_day,
        pct(c.current.wins_covered),
        c.current.precision.map_or("—".into(), pct)
    );
    match (c.capacity, &c.fitting) {
        (Some(cap), Some(f)) => {
            let _ = writeln!(
                out,
                "  to stay within {cap} tasks per rep per day: threshold {} ({:.2} for the busiest rep, {} of wins covered)",
                f.threshold,
                f.busiest_per_day,
                pct(f.wins_covered)
            );
        }
        (Some(cap), None) => {
            let _ = writeln!(
                out,
                "  no threshold keeps every rep within {cap} tasks per day"
            );
        }
        _ => {
            let _ = writeln!(
                out,
                "  (--capacity N finds the threshold that fits N tasks per rep per day)"
            );
        }
    }

    if let Some(cmp) = &r.comparison {
        let _ = writeln!(out, "\nCompared with {}", cmp.other);
        if let Some(d) = &cmp.delta {
            let _ = writeln!(
                out,
                "  AUC {:.3} → {:.3}: Δ {:+.3} (95% CI {:+.3}…{:+.3}, DeLong paired, p = {:.3})",
                d.auc_a, d.auc_b, d.delta, d.lo, d.hi, d.p_value
            );
        }
        let _ = writeln!(
            out,
            "  tier migration (rows: current, columns: other; won in brackets)"
        );
        let _ = write!(out, "  {:<8}", "");
        for t in &cmp.tiers_b {
            let _ = write!(out, " {t:>12}");
        }
        let _ = writeln!(out);
        for (i, t) in cmp.tiers_a.iter().enumerate() {
            let _ = write!(out, "  {t:<8}");
            for j in 0..cmp.tiers_b.len() {
                let _ = write!(
                    out,
                    " {:>12}",
                    format!("{} ({})", cmp.migration[i][j], cmp.migration_wins[i][j])
                );
            }
            let _ = writeln!(out);
        }
        buckets(&mut out, "  Other model by tier", &cmp.tiers);
    }
    out
}

/// The tune report as text, followed by the diff.
pub fn render_tune(t: &TuneReport, diff: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Tuned on {} closed leads ({} won), scored as of {}; L2 logistic regression (IRLS, λ = {}), {:.1} points per unit of log-odds",
        t.leads, t.wins, t.as_of, t.lambda, t.scale
    );
    let _ = writeln!(out, "Group caps kept: {}", t.caps.join(", "));
    let _ = writeln!(
        out,
        "\n  {:<18} {:<12} {:>8} {:>10} {:>10} {:>9}",
        "rule", "group", "current", "suggested", "importance", "fired on"
    );
    for r in &t.rules {
        let _ = writeln!(
            out,
            "  {:<18} {:<12} {:>8} {:>10} {:>10.2} {:>9}",
            r.id,
            r.group,
            r.current,
            r.suggested,
            r.importance,
            pct(r.hit_rate)
        );
    }
    let _ = writeln!(
        out,
        "\n{}-fold cross-validated AUC on the same folds: current {:.3}, suggested {:.3}",
        t.folds.len(),
        t.cv_current,
        t.cv_suggested
    );
    for (i, f) in t.folds.iter().enumerate() {
        let _ = writeln!(
            out,
            "  fold {}: current {:.3}, suggested {:.3}",
            i + 1,
            f.current,
            f.suggested
        );
    }
    let _ = writeln!(
        out,
        "\nThe config is not changed. To apply the suggestion, review and apply this diff (patch -p0):\n"
    );
    out.push_str(diff);
    out
}

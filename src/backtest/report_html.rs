//! The backtest report as one self-contained HTML file: inline CSS, inline SVG charts
//! drawn by `plotters`, no script and nothing loaded from elsewhere, so it can be
//! mailed, archived and opened offline.

use std::fmt::Write;

use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use super::analyze::{Case, Report};
use super::tables::Bucket;

const W: u32 = 560;
const H: u32 = 320;
const FONT: &str = "sans-serif";

/// Escape text for HTML.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// One chart as an SVG string: the frame (canvas, caption, axes areas, legend) is the
/// same for every chart; `draw` adds the mesh and the series.
fn svg_chart(
    caption: &str,
    x: std::ops::Range<f64>,
    y: std::ops::Range<f64>,
    legend: SeriesLabelPosition,
    draw: impl FnOnce(&mut Chart<'_, '_>) -> anyhow::Result<()>,
) -> anyhow::Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, H)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(caption, (FONT, 18))
            .margin(12)
            .x_label_area_size(32)
            .y_label_area_size(48)
            .build_cartesian_2d(x, y)?;
        draw(&mut chart)?;
        chart
            .configure_series_labels()
            .position(legend)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
    }
    Ok(svg)
}

/// A legend mark for a line series.
fn line_mark(color: RGBColor, width: u32) -> impl Fn((i32, i32)) -> PathElement<(i32, i32)> {
    move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(width))
}

/// Conversion per score decile, with the average as a line.
fn decile_chart(r: &Report) -> anyhow::Result<String> {
    let ymax = r
        .deciles
        .iter()
        .map(|b| b.conversion * 100.0)
        .fold(r.base_rate * 100.0, f64::max)
        .max(1.0)
        * 1.15;
    let labels: Vec<String> = r.deciles.iter().map(|b| b.label.clone()).collect();
    let n = r.deciles.len().max(1);
    let right = n as f64 - 0.5;
    svg_chart(
        "Conversion by score decile",
        -0.5..right,
        0.0..ymax,
        SeriesLabelPosition::UpperLeft,
        |chart| {
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(n)
                .x_label_formatter(&|x| {
                    let i = x.round();
                    if (x - i).abs() < 1e-6 && i >= 0.0 {
                        labels.get(i as usize).cloned().unwrap_or_default()
                    } else {
                        String::new()
                    }
                })
                .y_desc("won, %")
                .draw()?;
            chart.draw_series(r.deciles.iter().enumerate().map(|(i, b)| {
                let x = i as f64;
                Rectangle::new(
                    [(x - 0.38, 0.0), (x + 0.38, b.conversion * 100.0)],
                    BLUE.mix(0.7).filled(),
                )
            }))?;
            let avg = r.base_rate * 100.0;
            chart
                .draw_series(LineSeries::new(
                    vec![(-0.5, avg), (right, avg)],
                    RED.stroke_width(2),
                ))?
                .label(format!("average {avg:.1}%"))
                .legend(line_mark(RED, 2));
            Ok(())
        },
    )
}

/// Observed win rate per band (dots) and the isotonic probability (steps).
fn calibration_chart(r: &Report) -> anyhow::Result<String> {
    let lo = r.calibration.first().map_or(0, |b| b.lo);
    let hi = r.calibration.last().map_or(100, |b| b.hi);
    svg_chart(
        "Calibration: score → win probability",
        f64::from(lo)..f64::from(hi),
        0.0..100.0,
        SeriesLabelPosition::UpperLeft,
        |chart| {
            chart
                .configure_mesh()
                .x_desc("score")
                .y_desc("won, %")
                .draw()?;
            let steps: Vec<(f64, f64)> = (lo..=hi)
                .filter_map(|s| {
                    r.probability
                        .probability(s)
                        .map(|p| (f64::from(s), p * 100.0))
                })
                .collect();
            chart
                .draw_series(LineSeries::new(steps, GREEN.stroke_width(2)))?
                .label("isotonic fit")
                .legend(line_mark(GREEN, 2));
            chart
                .draw_series(r.calibration.iter().filter_map(|b| {
                    b.observed.map(|o| {
                        Circle::new((f64::from(b.lo + b.hi) / 2.0, o * 100.0), 5, BLUE.filled())
                    })
                }))?
                .label("observed per band")
                .legend(|(x, y)| Circle::new((x + 8, y), 4, BLUE.filled()));
            Ok(())
        },
    )
}

/// Tasks per day for the busiest rep against the threshold.
fn capacity_chart(r: &Report) -> anyhow::Result<String> {
    let c = &r.capacity;
    let lo = f64::from(c.curve.first().map_or(0, |x| x.threshold));
    let hi = f64::from(c.curve.last().map_or(100, |x| x.threshold));
    let ymax = c
        .curve
        .iter()
        .map(|x| x.busiest_per_day)
        .fold(c.capacity.unwrap_or(0.0), f64::max)
        .max(0.5)
        * 1.1;
    svg_chart(
        "Call-now tasks per day, busiest rep",
        lo..hi,
        0.0..ymax,
        SeriesLabelPosition::UpperRight,
        |chart| {
            chart
                .configure_mesh()
                .x_desc("threshold")
                .y_desc("tasks / day")
                .draw()?;
            let curve = c
                .curve
                .iter()
                .map(|x| (f64::from(x.threshold), x.busiest_per_day));
            chart
                .draw_series(LineSeries::new(curve, BLUE.stroke_width(2)))?
                .label("busiest rep")
                .legend(line_mark(BLUE, 2));
            let t = f64::from(c.current.threshold);
            chart
                .draw_series(LineSeries::new(
                    vec![(t, 0.0), (t, ymax)],
                    RED.stroke_width(1),
                ))?
                .label(format!("configured threshold {}", c.current.threshold))
                .legend(line_mark(RED, 1));
            if let Some(cap) = c.capacity {
                chart
                    .draw_series(LineSeries::new(
                        vec![(lo, cap), (hi, cap)],
                        BLACK.stroke_width(1),
                    ))?
                    .label(format!("capacity {cap}"))
                    .legend(line_mark(BLACK, 1));
            }
            Ok(())
        },
    )
}

fn bucket_table(out: &mut String, rows: &[Bucket]) {
    out.push_str("<table><tr><th></th><th>scores</th><th>leads</th><th>won</th><th>conversion</th><th>mean deal</th><th>median days to close</th><th>median days to win</th></tr>");
    for b in rows {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}–{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&b.label),
            b.lo,
            b.hi,
            b.count,
            b.wins,
            pct(b.conversion),
            b.mean_deal.map_or("—".into(), |v| format!("{v:.0}")),
            b.median_days_to_close.map_or("—".into(), |v| format!("{v:.0}")),
            b.median_days_to_win.map_or("—".into(), |v| format!("{v:.0}"))
        );
    }
    out.push_str("</table>");
}

fn case_table(out: &mut String, cases: &[Case]) {
    out.push_str("<table><tr><th>lead</th><th>company</th><th>score</th><th>amount</th><th>closed</th><th>why (as of then)</th></tr>");
    for c in cases {
        let _ = write!(
            out,
            "<tr><td>{} {}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=why>{}</td></tr>",
            esc(&c.lead_id),
            esc(c.name.as_deref().unwrap_or("")),
            esc(c.company.as_deref().unwrap_or("—")),
            c.score,
            c.amount.map_or("—".into(), |v| format!("{v:.0}")),
            c.closed_at.format("%Y-%m-%d"),
            esc(&c.why)
        );
    }
    out.push_str("</table>");
}

const STYLE: &str = "body{font-family:sans-serif;margin:24px;color:#222;max-width:1200px}\
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ccc}\
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right;font-size:13px}\
th{background:#f3f3f3}td.why{text-align:left;max-width:640px}.note{color:#8a5a00}\
.charts{display:flex;flex-wrap:wrap;gap:12px}.big{font-size:20px}";

/// The report as one HTML page.
pub fn render(r: &Report) -> anyhow::Result<String> {
    let mut o = String::new();
    let _ = write!(
        o,
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>leadscore backtest</title><style>{STYLE}</style></head><body>"
    );
    let _ = write!(o, "<h1>Backtest of {} closed leads</h1><p>Source: {}. Scored as of <b>{}</b>, with only the activities strictly before that instant.</p>", r.leads, esc(&r.source), esc(&r.as_of));
    for n in &r.notes {
        let _ = write!(o, "<p class=note>{}</p>", esc(n));
    }
    let _ = write!(
        o,
        "<p class=big>Won {} of {} ({})",
        r.wins,
        r.leads,
        pct(r.base_rate)
    );
    if let Some(a) = &r.auc {
        let _ = write!(
            o,
            " · AUC <b>{:.3}</b> (95% CI {:.3}–{:.3}, DeLong)",
            a.auc, a.lo, a.hi
        );
    }
    if let (Some(l), Some(t)) = (r.top_tier_lift, r.tiers.last()) {
        let _ = write!(o, " · lift of {} over average {:.2}×", esc(&t.label), l);
    }
    o.push_str("</p>");
    let ex = r.probability_text();
    let _ = write!(o, "<p>Probability beside points: {}</p>", esc(&ex));
    let _ = write!(
        o,
        "<div class=charts>{}{}{}</div>",
        decile_chart(r)?,
        calibration_chart(r)?,
        capacity_chart(r)?
    );
    o.push_str("<h2>By tier</h2>");
    bucket_table(&mut o, &r.tiers);
    o.push_str("<h2>By score decile</h2>");
    bucket_table(&mut o, &r.deciles);
    o.push_str("<h2>Calibration</h2><table><tr><th>band</th><th>leads</th><th>won</th><th>observed</th><th>fitted (isotonic)</th></tr>");
    for b in &r.calibration {
        let _ = write!(
            o,
            "<tr><td>{}–{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            b.lo,
            b.hi,
            b.count,
            b.wins,
            b.observed.map_or("—".into(), pct),
            b.fitted.map_or("—".into(), pct)
        );
    }
    o.push_str("</table><h2>Rules</h2><table><tr><th>rule</th><th>label</th><th>points</th><th>fired on won</th><th>fired on lost</th><th>lift</th></tr>");
    for x in &r.rules {
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{}</td><td>{:+}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&x.id),
            esc(&x.label),
            x.points,
            pct(x.won_hit_rate),
            pct(x.lost_hit_rate),
            x.lift.map_or("—".into(), |l| format!("{l:.2}×"))
        );
    }
    o.push_str("</table><h2>Biggest false positives (top tier, lost)</h2>");
    case_table(&mut o, &r.false_positives);
    o.push_str("<h2>Biggest false negatives (bottom tier, won)</h2>");
    case_table(&mut o, &r.false_negatives);
    let lw = r.last_wins_text();
    let _ = write!(
        o,
        "<h2>Last {} wins, when it mattered</h2><p>{}</p>",
        r.last_wins.n,
        esc(&lw)
    );
    let c = &r.capacity;
    let _ = write!(o, "<h2>Capacity</h2><p>{} reps, {:.0} working days. Above {}: {} call-now tasks, {:.2} per rep per day, busiest rep {:.2}; {} of wins had a task.</p>", c.reps, c.working_days, c.current.threshold, c.current.tasks, c.current.per_rep_day, c.current.busiest_per_day, pct(c.current.wins_covered));
    if let (Some(cap), Some(f)) = (c.capacity, &c.fitting) {
        let _ = write!(o, "<p>To stay within {cap} tasks per rep per day: threshold <b>{}</b> ({} of wins covered).</p>", f.threshold, pct(f.wins_covered));
    }
    if let Some(cmp) = &r.comparison {
        let _ = write!(o, "<h2>Compared with {}</h2>", esc(&cmp.other));
        if let Some(d) = &cmp.delta {
            let _ = write!(o, "<p>AUC {:.3} → {:.3}: Δ {:+.3} (95% CI {:+.3}…{:+.3}, DeLong paired, p = {:.3})</p>", d.auc_a, d.auc_b, d.delta, d.lo, d.hi, d.p_value);
        }
        o.push_str("<table><tr><th>current ↓ / other →</th>");
        for t in &cmp.tiers_b {
            let _ = write!(o, "<th>{}</th>", esc(t));
        }
        o.push_str("</tr>");
        for (i, t) in cmp.tiers_a.iter().enumerate() {
            let _ = write!(o, "<tr><th>{}</th>", esc(t));
            for j in 0..cmp.tiers_b.len() {
                let _ = write!(
                    o,
                    "<td>{} ({} won)</td>",
                    cmp.migration[i][j], cmp.migration_wins[i][j]
                );
            }
            o.push_str("</tr>");
        }
        o.push_str("</table>");
        o.push_str("<h3>The other model by tier</h3>");
        bucket_table(&mut o, &cmp.tiers);
    }
    o.push_str("</body></html>\n");
    Ok(o)
}

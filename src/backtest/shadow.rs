//! `backtest --portal P --shadow`: the live and the shadow model compared on real
//! outcomes, from what the daemon already kept. For each closed lead of the portal's
//! outcome pull (the store's cache), the ledger says what both models scored before
//! the close; the comparison uses only ledger entries that carry a shadow verdict, so
//! both models are judged at the same instants on the same inputs: the last such entry
//! before the close gives each model's tier, and the crossings over them the call-now
//! tasks each would have sent (live: above the portal's threshold; shadow: above its
//! own). Pure: the CLI reads the store and hands the ledgers in.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{auc, ClosedLead, Outcome};
use crate::store::{crossings, LedgerEntry};

/// One model's side of the comparison.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Side {
    /// AUC of the last score before the close (`None`: no won or no lost lead).
    pub auc: Option<f64>,
    /// Leads, wins and conversion per tier, in the live model's tier order.
    pub tiers: Vec<TierRow>,
    /// Call-now tasks it would have sent before the closes.
    pub call_now: usize,
    /// Leads it called at least once that were won.
    pub called_won: usize,
    /// Leads it called at least once.
    pub called: usize,
    /// Won leads it never called.
    pub won_never_called: usize,
}

/// One tier of one model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TierRow {
    pub tier: String,
    pub leads: usize,
    pub won: usize,
    /// won / leads (`None`: no lead).
    pub conversion: Option<f64>,
}

/// Leads that went from a live tier to a shadow tier, and how many of them were won.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Migration {
    pub live: String,
    pub shadow: String,
    pub leads: usize,
    pub won: usize,
}

/// The whole comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShadowReport {
    pub portal: String,
    /// Closed leads with a shadow verdict before their close.
    pub leads: usize,
    pub won: usize,
    /// Closed leads left out: no ledger entry with a shadow verdict before the close.
    pub without_shadow: usize,
    /// Share of leads both models put in the same tier.
    pub agreement: Option<f64>,
    pub live: Side,
    pub shadow: Side,
    pub migration: Vec<Migration>,
}

/// Compare on `leads` with each lead's ledger (`ledgers` by lead id); `tiers` orders
/// the tier rows, `threshold` is the live call-now threshold.
pub fn compare(
    portal: &str,
    leads: &[ClosedLead],
    ledgers: &BTreeMap<String, Vec<LedgerEntry>>,
    tiers: &[String],
    threshold: i32,
) -> ShadowReport {
    struct Row {
        won: bool,
        live: (i32, String),
        shadow: (i32, String),
        calls: (usize, usize),
    }
    let mut rows = Vec::new();
    let mut without = 0;
    for c in leads {
        let before: Vec<&LedgerEntry> = ledgers
            .get(&c.lead.id)
            .map(|l| {
                l.iter()
                    .filter(|e| e.at < c.closed_at && e.shadow.is_some())
                    .collect()
            })
            .unwrap_or_default();
        let Some(last) = before.last() else {
            without += 1;
            continue;
        };
        let Some(s) = &last.shadow else { continue };
        rows.push(Row {
            won: c.outcome == Outcome::Won,
            live: (last.score, last.tier.clone()),
            shadow: (s.score, s.tier.clone()),
            calls: crossings(before.iter().copied(), threshold),
        });
    }
    let won: Vec<bool> = rows.iter().map(|r| r.won).collect();
    let side = |pick: &dyn Fn(&Row) -> (i32, &str, usize)| {
        let scores: Vec<f64> = rows.iter().map(|r| f64::from(pick(r).0)).collect();
        let mut s = Side {
            auc: auc::auc(&scores, &won).map(|a| a.auc),
            ..Side::default()
        };
        let mut by_tier: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
        for r in &rows {
            let (_, tier, calls) = pick(r);
            let t = by_tier.entry(tier).or_default();
            t.0 += 1;
            t.1 += usize::from(r.won);
            s.call_now += calls;
            s.called += usize::from(calls > 0);
            s.called_won += usize::from(calls > 0 && r.won);
            s.won_never_called += usize::from(calls == 0 && r.won);
        }
        let mut order: Vec<String> = tiers.to_vec();
        order.extend(
            by_tier
                .keys()
                .map(|k| k.to_string())
                .filter(|k| !tiers.contains(k)),
        );
        s.tiers = order
            .into_iter()
            .map(|tier| {
                let (leads, won) = by_tier.get(tier.as_str()).copied().unwrap_or_default();
                TierRow {
                    tier,
                    leads,
                    won,
                    conversion: (leads > 0).then(|| won as f64 / leads as f64),
                }
            })
            .collect();
        s
    };
    let live = side(&|r: &Row| (r.live.0, r.live.1.as_str(), r.calls.0));
    let shadow = side(&|r: &Row| (r.shadow.0, r.shadow.1.as_str(), r.calls.1));
    let mut cells: BTreeMap<(String, String), (usize, usize)> = BTreeMap::new();
    for r in &rows {
        let c = cells
            .entry((r.live.1.clone(), r.shadow.1.clone()))
            .or_default();
        c.0 += 1;
        c.1 += usize::from(r.won);
    }
    let same = rows.iter().filter(|r| r.live.1 == r.shadow.1).count();
    ShadowReport {
        portal: portal.to_string(),
        leads: rows.len(),
        won: won.iter().filter(|w| **w).count(),
        without_shadow: without,
        agreement: (!rows.is_empty()).then(|| same as f64 / rows.len() as f64),
        live,
        shadow,
        migration: cells
            .into_iter()
            .map(|((live, shadow), (leads, won))| Migration {
                live,
                shadow,
                leads,
                won,
            })
            .collect(),
    }
}

/// One count of a [`Side`], for the text table.
type Count = fn(&Side) -> usize;

fn pct(x: Option<f64>) -> String {
    x.map_or("–".into(), |v| format!("{:.1}%", v * 100.0))
}

/// The comparison as text a sales lead reads.
pub fn render_text(r: &ShadowReport) -> String {
    use std::fmt::Write as _;
    let mut t = String::new();
    let _ = writeln!(
        t,
        "Live vs shadow model on {} closed leads of portal {} ({} won), each as last scored before its close",
        r.leads, r.portal, r.won
    );
    if r.without_shadow > 0 {
        let _ = writeln!(
            t,
            "({} closed leads left out: no score with a shadow verdict before the close)",
            r.without_shadow
        );
    }
    let _ = writeln!(t, "Same tier: {}", pct(r.agreement));
    let _ = writeln!(t, "\n{:<34}{:>14}{:>14}", "", "live", "shadow");
    let auc = |a: Option<f64>| a.map_or("–".into(), |v| format!("{v:.3}"));
    let counts: [(&str, Count); 4] = [
        ("call-now tasks sent", |s| s.call_now),
        ("leads called", |s| s.called),
        ("of them won", |s| s.called_won),
        ("won leads never called", |s| s.won_never_called),
    ];
    let mut rows = vec![("AUC", auc(r.live.auc), auc(r.shadow.auc))];
    for (label, f) in counts {
        rows.push((label, f(&r.live).to_string(), f(&r.shadow).to_string()));
    }
    for (label, a, b) in rows {
        let _ = writeln!(t, "{label:<34}{a:>14}{b:>14}");
    }
    let _ = writeln!(t, "\nConversion by tier (leads, won, rate):");
    for (l, s) in r.live.tiers.iter().zip(&r.shadow.tiers) {
        let _ = writeln!(
            t,
            "  {:<10} live {:>5} {:>5} {:>7}   shadow {:>5} {:>5} {:>7}",
            l.tier,
            l.leads,
            l.won,
            pct(l.conversion),
            s.leads,
            s.won,
            pct(s.conversion)
        );
    }
    let _ = writeln!(t, "\nTier changes (live → shadow: leads, won):");
    for m in r.migration.iter().filter(|m| m.live != m.shadow) {
        let _ = writeln!(t, "  {} → {}: {}, {} won", m.live, m.shadow, m.leads, m.won);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lead::Lead;
    use crate::store::ShadowScore;
    use chrono::{DateTime, Utc};

    fn at(day: u32) -> DateTime<Utc> {
        format!("2026-03-{day:02}T12:00:00Z").parse().unwrap()
    }

    fn entry(day: u32, score: i32, tier: &str, shadow: Option<(i32, &str, bool)>) -> LedgerEntry {
        LedgerEntry {
            at: at(day),
            score,
            tier: tier.into(),
            explanation: String::new(),
            detail: crate::scoring::Score {
                total: score,
                tier: tier.into(),
                tier_label: tier.into(),
                groups: Vec::new(),
                breakdown: Vec::new(),
                gaps: Vec::new(),
                unclamped: score,
                qualification: None,
            },
            causes: Vec::new(),
            shadow: shadow.map(|(score, tier, call_now)| ShadowScore {
                score,
                tier: tier.into(),
                call_now,
            }),
        }
    }

    fn closed(id: &str, won: bool, day: u32) -> ClosedLead {
        ClosedLead {
            lead: Lead {
                id: id.into(),
                ..Lead::default()
            },
            activities: Vec::new(),
            created_at: at(1),
            closed_at: at(day),
            outcome: if won { Outcome::Won } else { Outcome::Lost },
            amount: None,
            rep_id: None,
            loss_reason: None,
            stage: None,
            fit_history: None,
        }
    }

    #[test]
    fn hand_computed_comparison() {
        // Threshold 70. Lead a (won): live 50 → 80 (one crossing), shadow 60 → 75
        // (call_now on the second: one crossing); last before close: hot / hot.
        // Lead b (lost): live 75 (a crossing) then 40, shadow 30 / 20: never; last:
        // cold live, cold shadow; an entry after its close (day 20) does not count.
        // Lead c (won): live 65 warm, shadow 72 hot (call_now): shadow calls, live not.
        // Lead d (lost): only an entry without shadow: left out.
        let mut l = BTreeMap::new();
        l.insert(
            "a".to_string(),
            vec![
                entry(2, 50, "warm", Some((60, "warm", false))),
                entry(3, 80, "hot", Some((75, "hot", true))),
            ],
        );
        l.insert(
            "b".to_string(),
            vec![
                entry(2, 75, "hot", Some((30, "cold", false))),
                entry(4, 40, "warm", Some((20, "cold", false))),
                entry(20, 90, "hot", Some((90, "hot", true))),
            ],
        );
        l.insert(
            "c".to_string(),
            vec![entry(2, 65, "warm", Some((72, "hot", true)))],
        );
        l.insert("d".to_string(), vec![entry(2, 90, "hot", None)]);
        let leads = [
            closed("a", true, 10),
            closed("b", false, 10),
            closed("c", true, 10),
            closed("d", false, 10),
        ];
        let tiers = ["cold".to_string(), "warm".into(), "hot".into()];
        let r = compare("main", &leads, &l, &tiers, 70);
        assert_eq!((r.leads, r.won, r.without_shadow), (3, 2, 1));
        // Same tier: a only (hot/hot); b warm/cold, c warm/hot.
        assert_eq!(r.agreement, Some(1.0 / 3.0));
        // Live: a 80 (won), b 40 (lost), c 65 (won): both wins above the loss → 1.0.
        assert_eq!(r.live.auc, Some(1.0));
        assert_eq!(r.shadow.auc, Some(1.0));
        assert_eq!(
            (
                r.live.call_now,
                r.live.called,
                r.live.called_won,
                r.live.won_never_called
            ),
            (2, 2, 1, 1)
        );
        assert_eq!(
            (
                r.shadow.call_now,
                r.shadow.called,
                r.shadow.called_won,
                r.shadow.won_never_called
            ),
            (2, 2, 2, 0)
        );
        let rows = |s: &Side| {
            s.tiers
                .iter()
                .map(|t| (t.tier.clone(), t.leads, t.won))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            rows(&r.live),
            [
                ("cold".into(), 0, 0),
                ("warm".into(), 2, 1),
                ("hot".into(), 1, 1)
            ]
        );
        assert_eq!(
            rows(&r.shadow),
            [
                ("cold".into(), 1, 0),
                ("warm".into(), 0, 0),
                ("hot".into(), 2, 2)
            ]
        );
        assert_eq!(r.shadow.tiers[2].conversion, Some(1.0));
        assert_eq!(r.live.tiers[1].conversion, Some(0.5));
        let cells: Vec<_> = r
            .migration
            .iter()
            .map(|m| (m.live.as_str(), m.shadow.as_str(), m.leads, m.won))
            .collect();
        assert_eq!(
            cells,
            [
                ("hot", "hot", 1, 1),
                ("warm", "cold", 1, 0),
                ("warm", "hot", 1, 1)
            ]
        );
        let text = render_text(&r);
        assert!(text.contains("Same tier: 33.3%"), "{text}");
        assert!(text.contains("warm → hot: 1, 1 won"), "{text}");
    }
}

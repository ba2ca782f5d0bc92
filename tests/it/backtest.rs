//! Backtest and tune against independent computations: AUC by brute force over every
//! (won, lost) pair, no leakage of activities after the as-of instant, tune ranking the
//! generator's planted strong drivers above its weak ones, and the real binary on the
//! shipped history.

use std::process::Command;

use chrono::{DateTime, TimeDelta, Utc};

use leadscore::backtest::analyze::score_all;
use leadscore::backtest::generate::{generate, Plan};
use leadscore::backtest::{self, auc, tune, AsOf, ClosedLead, Options, Outcome};
use leadscore::config::schema::FileConfig;
use leadscore::lead::{Activity, ActivityKind, Lead};
use leadscore::scoring::spec::ScoringSpec;
use leadscore::scoring::Model;

const EXAMPLE: &str = include_str!("../../config/leadscore.example.toml");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn spec() -> ScoringSpec {
    let cfg: FileConfig = toml::from_str(EXAMPLE).expect("example parses");
    cfg.scoring
}

fn model() -> Model {
    Model::compile(&spec()).expect("example compiles")
}

/// A generated history (the generator's planted drivers, see docs/backtest.md).
fn history(leads: usize, seed: u64) -> Vec<ClosedLead> {
    generate(&Plan {
        leads,
        seed,
        ..Plan::default()
    })
}

fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

/// The AUC definition itself: every (won, lost) pair, ties half. O(n·m), no sorting.
fn brute_auc(scores: &[i32], won: &[bool]) -> f64 {
    let (mut num, mut pairs) = (0.0, 0.0);
    for (i, &wi) in won.iter().enumerate() {
        for (j, &wj) in won.iter().enumerate() {
            if wi && !wj {
                pairs += 1.0;
                num += match scores[i].cmp(&scores[j]) {
                    std::cmp::Ordering::Greater => 1.0,
                    std::cmp::Ordering::Equal => 0.5,
                    std::cmp::Ordering::Less => 0.0,
                };
            }
        }
    }
    num / pairs
}

#[test]
fn auc_equals_brute_force_pairwise_on_generated_history() {
    let m = model();
    let leads = history(600, 3);
    let scored = score_all(&m, &leads, AsOf::default());
    let scores: Vec<i32> = scored.iter().map(|s| s.total).collect();
    let won: Vec<bool> = leads.iter().map(|c| c.outcome == Outcome::Won).collect();
    let brute = brute_auc(&scores, &won);
    let f: Vec<f64> = scores.iter().map(|&s| f64::from(s)).collect();
    let fast = auc::auc(&f, &won).unwrap();
    assert!((fast.auc - brute).abs() < 1e-12, "{} vs {brute}", fast.auc);
    let report = backtest::analyze(&m, "gen", &leads, &Options::default(), None);
    assert!((report.auc.unwrap().auc - brute).abs() < 1e-12);
    assert!(fast.lo < brute && brute < fast.hi);
    // Many ties (integer scores): the half-credit matters, so this is a real check.
    let ties = scores.iter().filter(|&&s| s == scores[0]).count();
    assert!(ties > 1);
    assert!(brute > 0.6, "the generator's drivers should show: {brute}");
}

#[test]
fn paired_delta_of_a_model_against_itself_is_zero_and_migration_is_diagonal() {
    let m = model();
    let leads = history(300, 5);
    let r = backtest::analyze(&m, "gen", &leads, &Options::default(), Some(("same", &m)));
    let c = r.comparison.unwrap();
    assert_eq!(c.delta.unwrap().delta, 0.0);
    for (i, row) in c.migration.iter().enumerate() {
        for (j, n) in row.iter().enumerate() {
            if i != j {
                assert_eq!(*n, 0);
            }
        }
    }
    assert_eq!(c.migration.iter().flatten().sum::<usize>(), 300);
}

fn closed(acts: Vec<Activity>) -> ClosedLead {
    ClosedLead {
        lead: Lead {
            id: "1".into(),
            ..Lead::default()
        },
        activities: acts,
        created_at: t("2026-03-01T00:00:00Z"),
        closed_at: t("2026-03-20T00:00:00Z"),
        outcome: Outcome::Won,
        amount: None,
        rep_id: None,
        loss_reason: None,
        stage: None,
        fit_history: None,
    }
}

fn demo(at: &str) -> Activity {
    Activity {
        id: String::new(),
        kind: ActivityKind::DemoRequest,
        direction: None,
        subject: None,
        url: None,
        at: t(at),
        contact_id: None,
        mapped_by: None,
    }
}

#[test]
fn an_activity_at_or_after_the_as_of_instant_never_counts() {
    let m = model();
    let base = score_all(&m, &[closed(vec![])], AsOf::default())[0].total;
    // At the very instant of the outcome, and after it: neither counts.
    for at in [
        "2026-03-20T00:00:00Z",
        "2026-03-20T00:00:01Z",
        "2026-04-01T00:00:00Z",
    ] {
        let s = score_all(&m, &[closed(vec![demo(at)])], AsOf::default())[0].total;
        assert_eq!(s, base, "demo request at {at} leaked into the score");
    }
    // One second before the outcome: it counts.
    let s = score_all(
        &m,
        &[closed(vec![demo("2026-03-19T23:59:59Z")])],
        AsOf::default(),
    )[0]
    .total;
    assert_eq!(s, base + 20);
    // created+7d: a demo on day 6 counts, one on day 8 does not, nor on day 7 exactly.
    let week = AsOf::AfterCreated(TimeDelta::days(7));
    let d6 = score_all(&m, &[closed(vec![demo("2026-03-07T00:00:00Z")])], week)[0].total;
    let d7 = score_all(&m, &[closed(vec![demo("2026-03-08T00:00:00Z")])], week)[0].total;
    let d8 = score_all(&m, &[closed(vec![demo("2026-03-09T00:00:00Z")])], week)[0].total;
    assert!(d6 > base);
    assert_eq!((d7, d8), (base, base));
    // The rule statistics see the same cut: the demo after close is no hit.
    let r = backtest::analyze(
        &m,
        "x",
        &[closed(vec![demo("2026-04-01T00:00:00Z")])],
        &Options::default(),
        None,
    );
    let rule = r.rules.iter().find(|x| x.id == "demo_request").unwrap();
    assert_eq!(rule.won_hit_rate, 0.0);
    assert!(
        r.notes.iter().any(|n| n.starts_with("1 activity")),
        "{:?}",
        r.notes
    );
}

#[test]
fn generated_onboarding_after_close_would_inflate_the_auc_if_it_leaked() {
    // The generator gives won deals meetings after their close; scoring at "now" with
    // every activity (the leak) must look better than the honest as-of backtest.
    let m = model();
    let leads = history(800, 9);
    let won: Vec<bool> = leads.iter().map(|c| c.outcome == Outcome::Won).collect();
    let honest: Vec<f64> = score_all(&m, &leads, AsOf::default())
        .iter()
        .map(|s| f64::from(s.total))
        .collect();
    let leaky: Vec<f64> = leads
        .iter()
        .map(|c| {
            let at = c.closed_at + TimeDelta::days(7);
            f64::from(m.total_only(&c.lead, &c.activities, at))
        })
        .collect();
    let (h, l) = (
        auc::auc(&honest, &won).unwrap().auc,
        auc::auc(&leaky, &won).unwrap().auc,
    );
    assert!(l > h + 0.02, "leaky {l} vs honest {h}");
}

#[test]
fn tune_ranks_planted_strong_drivers_above_weak_ones() {
    let leads = history(2500, 16);
    let r = tune::tune(&spec(), &model(), &leads, &tune::TuneOptions::default()).unwrap();
    let imp = |id: &str| r.rules.iter().find(|x| x.id == id).unwrap().importance;
    for strong in ["demo_request", "meeting", "title_exec", "employees_best"] {
        for weak in ["blog_read", "email_open", "region_served"] {
            assert!(
                imp(strong) > imp(weak).abs(),
                "{strong} {:.3} should outrank {weak} {:.3}",
                imp(strong),
                imp(weak)
            );
        }
    }
    assert_eq!(r.folds.len(), 5);
    assert!(r.cv_suggested > 0.6 && r.cv_current > 0.6, "{r:?}");
    let sug = |id: &str| r.rules.iter().find(|x| x.id == id).unwrap().suggested;
    assert!(sug("demo_request") > sug("blog_read"));
}

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_leadscore"));
    c.current_dir(ROOT);
    c
}

/// Run the binary and insist it succeeded; its standard output.
fn run_ok(c: &mut Command) -> Vec<u8> {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn cli_backtest_and_tune_run_on_the_shipped_history() {
    let config = "config/leadscore.example.toml";
    let input = "examples/history/closed-leads.jsonl";
    let stdout = run_ok(bin().args([
        "backtest",
        "--config",
        config,
        "--input",
        input,
        "--format",
        "json",
        "--capacity",
        "2",
        "--model",
        "examples/history/suggested.toml",
    ]));
    let v: serde_json::Value = serde_json::from_slice(&stdout).unwrap();
    assert!(v["leads"].as_u64().unwrap() >= 2000);
    let a = v["auc"]["auc"].as_f64().unwrap();
    assert!(a > 0.6 && a < 1.0, "{a}");
    assert_eq!(v["tiers"].as_array().unwrap().len(), 3);
    assert!(v["capacity"]["fitting"]["threshold"].is_i64());
    // tune's suggestion, fitted on this history, ranks it better (in-sample).
    let d = &v["comparison"]["delta"];
    assert!(d["delta"].as_f64().unwrap() > 0.0, "{d}");
    assert!(d["lo"].as_f64().unwrap() > 0.0, "{d}");

    let dir = tempfile::tempdir().unwrap();
    let html = dir.path().join("r.html");
    run_ok(
        bin()
            .args([
                "backtest", "--config", config, "--input", input, "--format", "html", "--model",
                config,
            ])
            .arg("--out")
            .arg(&html),
    );
    let page = std::fs::read_to_string(&html).unwrap();
    assert_eq!(page.matches("<svg").count(), 3);
    assert!(!page.contains("<script"));
    assert!(page.contains("DeLong paired"));

    // A CRM pull needs the portal's credentials (the CRM half runs in tests/daemon).
    let out = bin()
        .args(["backtest", "--config", config, "--portal", "main"])
        .env_remove("LEADSCORE_B24_WEBHOOK_URL")
        .env_remove("LEADSCORE_B24_APP_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("LEADSCORE_B24_WEBHOOK_URL"), "{err}");

    let stdout = run_ok(bin().args(["tune", "--config", config, "--input", input, "--folds", "3"]));
    let text = String::from_utf8_lossy(&stdout);
    assert!(text.contains("cross-validated AUC"), "{text}");
    assert!(text.contains("+++ config/leadscore.example.toml"), "{text}");
    assert!(text.contains("\n+points = "), "{text}");
}

#[test]
fn the_shipped_history_is_the_documented_generator_output() {
    let shipped =
        std::fs::read_to_string(format!("{ROOT}/examples/history/closed-leads.jsonl")).unwrap();
    let made = leadscore::backtest::generate::to_jsonl(&generate(&Plan::default()));
    assert!(shipped == made, "regenerate: leadscore backtest generate --out examples/history/closed-leads.jsonl --leads 2500 --seed 16");
}

#[test]
fn cli_generate_is_seeded() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.jsonl"), dir.path().join("b.jsonl"));
    for p in [&a, &b] {
        run_ok(
            bin()
                .args([
                    "backtest", "generate", "--leads", "50", "--seed", "4", "--out",
                ])
                .arg(p),
        );
    }
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
}

#[test]
fn cli_reads_the_csv_sample_like_the_same_leads_in_json_lines() {
    let csv = run_ok(bin().args([
        "backtest",
        "--config",
        "config/leadscore.example.toml",
        "--input",
        "examples/history/sample-leads.csv",
        "--activities",
        "examples/history/sample-activities.csv",
        "--format",
        "json",
    ]));
    let v: serde_json::Value = serde_json::from_slice(&csv).unwrap();
    assert_eq!(v["leads"], 12);
    // The same twelve leads from the JSON Lines history score the same.
    let dir = tempfile::tempdir().unwrap();
    let first12: String =
        std::fs::read_to_string(format!("{ROOT}/examples/history/closed-leads.jsonl"))
            .unwrap()
            .lines()
            .take(12)
            .map(|l| format!("{l}\n"))
            .collect();
    let p = dir.path().join("first12.jsonl");
    std::fs::write(&p, first12).unwrap();
    let json = run_ok(
        bin()
            .args([
                "backtest",
                "--config",
                "config/leadscore.example.toml",
                "--format",
                "json",
                "--input",
            ])
            .arg(&p),
    );
    let w: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(v["auc"], w["auc"]);
    assert_eq!(v["deciles"], w["deciles"]);
    // --since keeps leads closed on or after the date.
    let since = run_ok(bin().args([
        "backtest",
        "--config",
        "config/leadscore.example.toml",
        "--input",
        "examples/history/sample-leads.csv",
        "--since",
        "2026-03-01",
        "--format",
        "json",
    ]));
    let s: serde_json::Value = serde_json::from_slice(&since).unwrap();
    let n = s["leads"].as_u64().unwrap();
    assert!(n > 0 && n < 12, "{n}");
}

#[test]
fn a_bad_csv_row_is_named_by_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("leads.csv");
    std::fs::write(&p, "id,created_at,closed_at,outcome,amount\n1,2026-01-01,2026-02-01,won,10\n2,2026-01-01,2026-02-01,won,ten\n").unwrap();
    let e = backtest::history::read(&p, None).unwrap_err().to_string();
    assert!(
        e.ends_with("leads.csv:3:5 (amount): \"ten\" is not a number"),
        "{e}"
    );
}

/// A ledger entry of the live model (score, tier) with the shadow's verdict.
fn shadow_entry(
    at: &str,
    live: (i32, &str),
    shadow: (i32, &str, bool),
) -> leadscore::store::LedgerEntry {
    let m = model();
    let mut detail = m.score(&Lead::default(), &[], t(at));
    detail.total = live.0;
    detail.tier = live.1.into();
    leadscore::store::LedgerEntry {
        at: t(at),
        score: live.0,
        tier: live.1.into(),
        explanation: String::new(),
        detail,
        causes: Vec::new(),
        shadow: Some(leadscore::store::ShadowScore {
            score: shadow.0,
            tier: shadow.1.into(),
            call_now: shadow.2,
        }),
    }
}

#[test]
fn cli_shadow_compares_the_ledgers_live_and_shadow_scores_on_cached_outcomes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("leadscore.toml");
    std::fs::write(
        &config,
        EXAMPLE.replace(
            "data_dir = \"/var/lib/leadscore\"",
            &format!("data_dir = {:?}", data.display().to_string()),
        ),
    )
    .unwrap();
    // Three closed leads: 11 won (live hot 80 after 50, shadow warm 60: never calls),
    // 12 lost (live warm 40, shadow hot 75 calling), 13 won (both hot, both call).
    let lead = |id: &str, won: bool| {
        let mut c = closed(Vec::new());
        c.lead.id = id.into();
        c.outcome = if won { Outcome::Won } else { Outcome::Lost };
        c
    };
    let leads = vec![lead("11", true), lead("12", false), lead("13", true)];
    let store = leadscore::store::Store::open(&data).unwrap();
    let pull = leadscore::store::OutcomePull {
        pulled_at: t("2026-06-01T00:00:00Z"),
        leads: 3,
        requests: 0,
    };
    store.put_outcomes("main", &pull, &leads).unwrap();
    let close = leads[0].closed_at;
    let day = |d: i64| (close - TimeDelta::days(d)).to_rfc3339();
    let entries = [
        (
            "11",
            shadow_entry(&day(5), (50, "warm"), (55, "warm", false)),
        ),
        (
            "11",
            shadow_entry(&day(2), (80, "hot"), (60, "warm", false)),
        ),
        ("12", shadow_entry(&day(3), (40, "warm"), (75, "hot", true))),
        ("13", shadow_entry(&day(3), (90, "hot"), (85, "hot", true))),
        // After 13's close: never counts.
        (
            "13",
            shadow_entry(
                &(close + TimeDelta::days(1)).to_rfc3339(),
                (10, "cold"),
                (10, "cold", false),
            ),
        ),
    ];
    for (id, e) in &entries {
        let w = leadscore::store::Written {
            score: e.score,
            tier: e.tier.clone(),
            breakdown: String::new(),
            extras: Default::default(),
            at: e.at,
            crm_stamp: None,
        };
        store.record_write("main", id, &w, e).unwrap();
    }
    store.flush_blocking().unwrap();
    drop(store);
    let stdout = run_ok(
        bin()
            .args(["backtest", "--config"])
            .arg(&config)
            .args(["--portal", "main", "--shadow", "--format", "json"])
            .env(
                "LEADSCORE_B24_WEBHOOK_URL",
                "https://x.bitrix24.ru/rest/1/unused0000/",
            )
            .env("LEADSCORE_B24_APP_TOKEN", "unused-token-0123456789"),
    );
    let v: serde_json::Value = serde_json::from_slice(&stdout).unwrap();
    // Same tier: only 13 (hot/hot) of 3.
    assert!(
        (v["agreement"].as_f64().unwrap() - 1.0 / 3.0).abs() < 1e-12,
        "{v}"
    );
    assert_eq!(v["leads"], 3);
    // Live (threshold 70): 11 crosses once, 13 once; shadow: 12 and 13.
    assert_eq!(v["live"]["call_now"], 2);
    assert_eq!(v["live"]["called_won"], 2);
    assert_eq!(v["shadow"]["call_now"], 2);
    assert_eq!(v["shadow"]["called_won"], 1);
    assert_eq!(v["shadow"]["won_never_called"], 1);
    // Live scores 80, 40, 90 rank both wins above the loss; shadow 60 < 75: 0.5.
    assert_eq!(v["live"]["auc"], 1.0);
    assert_eq!(v["shadow"]["auc"], 0.5);
    let hot = |side: &str| {
        v[side]["tiers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["tier"] == "hot")
            .unwrap()
            .clone()
    };
    assert_eq!(
        (hot("live")["leads"].clone(), hot("live")["won"].clone()),
        (2.into(), 2.into())
    );
    assert_eq!(
        (hot("shadow")["leads"].clone(), hot("shadow")["won"].clone()),
        (2.into(), 1.into())
    );
}

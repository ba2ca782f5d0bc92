//! Unit tests of the qualification gate: each formula, known-yes/no/unknown, the cap,
//! the questions, `within_months`, and the compile errors by key path.

use chrono::{DateTime, Utc};

use super::spec::ScoringSpec;
use super::*;
use crate::lead::Lead;

fn now() -> DateTime<Utc> {
    "2026-11-20T12:00:00Z".parse().unwrap()
}

/// One fit rule worth 90 on a non-empty company, the seed model's tiers, and the given
/// `[qualification]` TOML.
fn spec(qualification: &str) -> ScoringSpec {
    let rules = format!(
        r#"
[[rules]]
id = "company"
group = "fit"
label = "компания"
points = 90
when = {{ field = "company", exists = true }}
{qualification}
"#
    );
    super::tests::spec_with("[[groups]]\nid = \"fit\"\n", &rules)
}

fn model(q: &str) -> Model {
    Model::compile(&spec(q)).unwrap_or_else(|e| panic!("{e:?}"))
}

fn errors(q: &str) -> Vec<String> {
    match Model::compile(&spec(q)) {
        Ok(_) => panic!("expected errors"),
        Err(e) => e.into_iter().map(|e| e.to_string()).collect(),
    }
}

const BANT: &str = r#"
[qualification]
formula = "BANT"
[[qualification.criteria]]
id = "budget"
when = { field = "custom.budget", range = { min = 1 } }
no = { field = "custom.budget", in = ["0", "нет"] }
[[qualification.criteria]]
id = "authority"
when = { field = "position", regex = "(?i)директор|лпр" }
[[qualification.criteria]]
id = "need"
when = { field = "custom.need", exists = true }
[[qualification.criteria]]
id = "timeframe"
when = { field = "custom.deadline", within_months = 6 }
"#;

fn lead(pairs: &[(&str, &str)]) -> Lead {
    let mut l = Lead {
        id: "1".into(),
        company: Some("ООО Завод".into()),
        ..Lead::default()
    };
    for (k, v) in pairs {
        match *k {
            "position" => l.position = Some(v.to_string()),
            other => {
                l.custom.insert(other.to_string(), v.to_string());
            }
        }
    }
    l
}

fn qualified_lead() -> Lead {
    lead(&[
        ("budget", "500000"),
        ("position", "Генеральный директор"),
        ("need", "автоматизация склада"),
        ("deadline", "2027-02-01"),
    ])
}

fn states(q: &Qualification) -> Vec<(String, Known)> {
    q.criteria.iter().map(|c| (c.id.clone(), c.known)).collect()
}

#[test]
fn bant_all_known_yes_is_not_capped() {
    let m = model(BANT);
    let s = m.score(&qualified_lead(), &[], now());
    let q = s.qualification.as_ref().expect("state");
    assert!(q.qualified);
    assert_eq!((s.total, s.tier.as_str()), (90, "hot"));
    assert_eq!((q.cap, q.capped_from), (None, None));
    assert_eq!(q.code(), "B✓ A✓ N✓ T✓");
    assert!(q.open_questions().is_empty());
    let line = s.explain(Language::Ru, now());
    assert!(
        line.starts_with("90 — горячий: квалифицирован (B✓ A✓ N✓ T✓); +90 компания"),
        "{line}"
    );
    assert_eq!(m.total_only(&qualified_lead(), &[], now()), 90);
}

#[test]
fn bant_unknown_budget_and_timeframe_cap_at_the_threshold_with_questions() {
    let m = model(BANT);
    let l = lead(&[("position", "Директор по закупкам"), ("need", "склад")]);
    let s = m.score(&l, &[], now());
    let q = s.qualification.as_ref().unwrap();
    assert!(!q.qualified);
    // The default cap is the call-now threshold (70): never hot.
    assert_eq!((s.total, s.tier.as_str(), s.unclamped), (70, "warm", 90));
    assert_eq!((q.cap, q.capped_from), (Some(70), Some(90)));
    assert_eq!(
        states(q),
        vec![
            ("budget".into(), Known::Unknown),
            ("authority".into(), Known::Yes),
            ("need".into(), Known::Yes),
            ("timeframe".into(), Known::Unknown),
        ]
    );
    assert_eq!(q.open_questions(), vec!["бюджет", "сроки"]);
    let line = s.explain(Language::Ru, now());
    assert!(
        line.contains("ограничено 70: не квалифицирован (B? A✓ N✓ T?) — уточнить: бюджет, сроки"),
        "{line}"
    );
    assert_eq!(m.total_only(&l, &[], now()), 70);
    let table = render_table(&s, Language::Ru, now());
    assert!(
        table.contains("Квалификация BANT: ограничено 70"),
        "{table}"
    );
}

#[test]
fn known_no_is_told_apart_from_unknown() {
    let m = model(BANT);
    let mut l = qualified_lead();
    l.custom.insert("budget".into(), "нет".into());
    l.position = Some("менеджер".into());
    let s = m.score(&l, &[], now());
    let q = s.qualification.as_ref().unwrap();
    assert_eq!(q.criteria[0].known, Known::No, "budget says нет");
    // A title that is not a decision maker is unknown (no `no` condition): ask.
    assert_eq!(q.criteria[1].known, Known::Unknown);
    assert_eq!(s.total, 70);
    let line = s.explain(Language::Ru, now());
    assert!(
        line.contains("(B✗ A? N✓ T✓) — уточнить: кто принимает решение — нет: бюджет"),
        "{line}"
    );
    let en = s.explain(Language::En, now());
    assert!(en.contains("capped at 70: not qualified"), "{en}");
}

#[test]
fn a_lead_below_the_cap_is_not_lowered_but_still_told_what_to_ask() {
    let m = model(BANT);
    let mut l = lead(&[]);
    l.company = None;
    let s = m.score(&l, &[], now());
    let q = s.qualification.as_ref().unwrap();
    assert_eq!((s.total, q.cap, q.capped_from), (0, Some(70), None));
    let line = s.explain(Language::Ru, now());
    assert!(line.contains("не квалифицирован (B? A? N? T?) — уточнить: бюджет, кто принимает решение, задача/потребность, сроки"), "{line}");
    assert!(!line.contains("ограничено"), "{line}");
}

#[test]
fn anum_with_aliases_requires_only_what_is_listed_and_caps_at_the_configured_value() {
    let m = model(
        r#"
[qualification]
formula = "ANUM"
cap = 50
require = ["authority", "budget"]
[[qualification.criteria]]
id = "authority"
when = { field = "custom.lpr", exists = true }
[[qualification.criteria]]
id = "need"
when = { field = "custom.need", exists = true }
[[qualification.criteria]]
id = "timeframe"
when = { field = "custom.deadline", within_months = 3 }
[[qualification.criteria]]
id = "money"
when = { field = "custom.budget", range = { min = 1 } }
question = "какой бюджет заложен?"
"#,
    );
    let l = lead(&[("lpr", "Иванов")]);
    let s = m.score(&l, &[], now());
    let q = s.qualification.as_ref().unwrap();
    let ids: Vec<&str> = q.criteria.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, vec!["authority", "need", "urgency", "money"]);
    assert_eq!(q.code(), "A✓ N? U? M?");
    assert_eq!(s.total, 50);
    assert_eq!(
        q.open_questions(),
        vec!["задача/потребность", "сроки", "какой бюджет заложен?"]
    );
    // Money known: need and urgency are not required, so no cap.
    let l = lead(&[("lpr", "Иванов"), ("budget", "100")]);
    let s = m.score(&l, &[], now());
    assert_eq!(s.total, 90);
    assert!(s.qualification.as_ref().unwrap().qualified);
}

#[test]
fn am_formula_gates_on_authority_and_money() {
    let m = model(
        r#"
[qualification]
formula = "am"
[[qualification.criteria]]
id = "authority"
when = { field = "position", contains = "директор" }
[[qualification.criteria]]
id = "budget"
when = { field = "custom.budget", range = { min = 1 } }
"#,
    );
    let s = m.score(&lead(&[("budget", "10")]), &[], now());
    assert_eq!(s.qualification.as_ref().unwrap().code(), "A? M✓");
    assert_eq!(s.total, 70);
    let s = m.score(
        &lead(&[("budget", "10"), ("position", "директор")]),
        &[],
        now(),
    );
    assert_eq!(s.total, 90);
}

#[test]
fn custom_criteria_keep_their_order_and_questions() {
    let m = model(
        r#"
[qualification]
formula = "custom"
cap = 40
require = ["tender"]
[[qualification.criteria]]
id = "tender"
when = { field = "custom.tender", equals = "да" }
no = { field = "custom.tender", equals = "нет" }
question = "будет ли тендер"
[[qualification.criteria]]
id = "pilot"
when = { field = "custom.pilot", exists = true }
"#,
    );
    let s = m.score(&lead(&[]), &[], now());
    let q = s.qualification.as_ref().unwrap();
    assert_eq!(q.code(), "T? P?");
    assert_eq!(q.open_questions(), vec!["будет ли тендер", "pilot"]);
    assert_eq!(s.total, 40);
    let s = m.score(&lead(&[("tender", "нет")]), &[], now());
    assert_eq!(
        s.qualification.as_ref().unwrap().criteria[0].known,
        Known::No
    );
    assert_eq!(s.total, 40);
    let s = m.score(&lead(&[("tender", "Да")]), &[], now());
    assert_eq!(s.total, 90);
}

#[test]
fn within_months_moves_with_the_clock_and_next_change_finds_the_day() {
    let m = model(BANT);
    let mut l = qualified_lead();
    // Over seven months ahead: outside the six-month window until 2027-01-02.
    l.custom.insert("deadline".into(), "01.07.2027".into());
    let s = m.score(&l, &[], now());
    assert_eq!(
        s.qualification.as_ref().unwrap().criteria[3].known,
        Known::Unknown
    );
    assert_eq!(s.total, 70);
    let at = m
        .next_change(&l, &[], now())
        .expect("the date enters the window");
    assert_eq!(at, "2027-01-02T00:00:00Z".parse::<DateTime<Utc>>().unwrap());
    assert_eq!(m.score(&l, &[], at).total, 90);
    // And it leaves the window the day after the date.
    let gone = m.next_change(&l, &[], at).expect("the date passes");
    assert_eq!(
        gone,
        "2027-07-02T00:00:00Z".parse::<DateTime<Utc>>().unwrap()
    );
    assert_eq!(m.score(&l, &[], gone).total, 70);
    // A model without time-dependent conditions never changes by itself.
    assert_eq!(model("").next_change(&l, &[], now()), None);
}

#[test]
fn a_model_without_qualification_carries_no_state() {
    let s = model("").score(&qualified_lead(), &[], now());
    assert_eq!((s.total, s.qualification.is_none()), (90, true));
}

#[test]
fn mistakes_are_reported_by_key_path() {
    let e = errors("[qualification]\nformula = \"BANTT\"\n");
    assert_eq!(
        e,
        vec![
            "scoring.qualification.formula: unknown formula 'BANTT' (use BANT, ANUM, AM or custom)"
        ]
    );
    let e = errors(
        r#"
[qualification]
formula = "AM"
cap = 101
require = ["need"]
[[qualification.criteria]]
id = "authority"
when = { field = "position", exists = true }
[[qualification.criteria]]
id = "budgett"
when = { field = "custom.budget", within_months = 0 }
[[qualification.criteria]]
id = "money"
when = { field = "custom.budget", exists = true }
"#,
    );
    assert!(
        e.contains(
            &"scoring.qualification.cap: cap 101 is outside the score's range 0..=100".to_string()
        ),
        "{e:?}"
    );
    assert!(
        e.contains(&"scoring.qualification.criteria[1].id: unknown criterion 'budgett' for AM (its criteria: authority, money)".to_string()),
        "{e:?}"
    );
    assert!(
        e.iter()
            .any(|m| m.starts_with("scoring.qualification.require[0]: 'need' is not a criterion")),
        "{e:?}"
    );
    let e = errors(
        r#"
[qualification]
formula = "BANT"
[[qualification.criteria]]
id = "budget"
when = { field = "custom.budget", within_months = 0 }
"#,
    );
    assert!(
        e.contains(&"scoring.qualification.criteria[0].when.within_months: within_months must be 1 to 120, got 0".to_string()),
        "{e:?}"
    );
    assert!(
        e.contains(&"scoring.qualification.criteria: BANT needs a condition for each criterion; missing: authority, need, timeframe".to_string()),
        "{e:?}"
    );
    let e = errors("[qualification]\nformula = \"custom\"\n");
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("scoring.qualification.criteria: a custom formula needs"));
}

#[test]
fn the_example_configs_commented_bant_block_compiles_and_gates() {
    let example = include_str!("../../config/leadscore.example.toml");
    let start = example
        .find("# [scoring.qualification]")
        .expect("the example has a BANT block");
    let block: String = example[start..]
        .lines()
        .take_while(|l| l.starts_with('#'))
        .map(|l| l.strip_prefix("# ").unwrap_or(l.trim_start_matches('#')))
        .map(|l| l.replace("[scoring.qualification", "[qualification") + "\n")
        .collect();
    let m = model(&block);
    let mut l = lead(&[("need", "склад"), ("purchase_date", "2027-01-15")]);
    l.position = Some("Генеральный директор".into());
    let s = m.score(&l, &[], now());
    assert_eq!(s.qualification.as_ref().unwrap().code(), "B? A✓ N✓ T✓");
    assert_eq!(s.total, 70, "money is required");
    l.custom.insert("budget".into(), "1200000".into());
    assert_eq!(m.score(&l, &[], now()).total, 90);
}

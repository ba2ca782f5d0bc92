//! Hand-computed cases of the high-intent rule: points once, the newest event named
//! with its date, window edges, `next_change` at expiry, and compile errors by path.
//! Its helpers serve the buying-group tests too.

use chrono::{DateTime, FixedOffset, TimeDelta, Utc};

use super::spec::Language;
use super::tests::spec_with;
use super::*;
use crate::lead::{Activity, ActivityKind, Lead};

pub(super) const GROUPS: &str = "[[groups]]\nid = \"eng\"\n";

const INTENT: &str = r#"
[[rules]]
id = "intent"
group = "eng"
label = "высокое намерение"
points = 20
high_intent = { kinds = ["demo_request", "download"], subject = "(?i)демо|прайс", window_days = 7 }
"#;

pub(super) fn now() -> DateTime<Utc> {
    "2026-11-30T12:00:00Z".parse().unwrap()
}

pub(super) fn days_ago(d: f64) -> DateTime<Utc> {
    now() - TimeDelta::milliseconds((d * 86_400_000.0) as i64)
}

pub(super) fn model(rules: &str) -> Model {
    Model::compile(&spec_with(GROUPS, rules)).unwrap_or_else(|e| panic!("{e:?}"))
}

fn lead() -> Lead {
    Lead {
        id: "1".into(),
        ..Lead::default()
    }
}

fn ev(kind: &str, subject: Option<&str>, at: DateTime<Utc>) -> Activity {
    Activity {
        id: String::new(),
        kind: ActivityKind::from_name(kind),
        direction: None,
        subject: subject.map(str::to_string),
        url: None,
        at,
        contact_id: None,
        mapped_by: None,
    }
}

/// Two demo requests and a price-list download in the window: +20 once (not 60), and
/// the card names the newest, "Запрос демо" of 28.11 (2 days ago, Moscow time).
#[test]
fn points_once_and_the_card_names_the_newest_event_with_its_date() {
    let m = model(INTENT);
    let acts = vec![
        ev("demo_request", Some("Запрос демо"), days_ago(2.0)),
        ev("download", Some("Скачан прайс-лист"), days_ago(4.0)),
        ev("demo_request", Some("Запрос демо"), days_ago(6.0)),
    ];
    let s = m.score(&lead(), &acts, now());
    assert_eq!(s.total, 20);
    let msk = FixedOffset::east_opt(3 * 3600).unwrap();
    let card = s.explain_dated(Language::Ru, msk, now());
    assert!(
        card.contains("+20 высокое намерение: Запрос демо 28.11"),
        "{card}"
    );
    let en = s.explain(Language::En, now());
    assert!(
        en.contains("+20 высокое намерение: Запрос демо (2 days ago)"),
        "{en}"
    );
    assert_eq!(
        m.total_only(&lead(), &acts, now()),
        20,
        "the fast path agrees"
    );
}

/// Without a subject the kind's name is said: "запрос демо".
#[test]
fn an_event_without_a_subject_is_named_by_its_kind() {
    let m = model(&INTENT.replace(", subject = \"(?i)демо|прайс\"", ""));
    let s = m.score(&lead(), &[ev("demo_request", None, days_ago(2.0))], now());
    let card = s.explain_dated(
        Language::Ru,
        FixedOffset::east_opt(3 * 3600).unwrap(),
        now(),
    );
    assert!(
        card.contains("+20 высокое намерение: запрос демо 28.11"),
        "{card}"
    );
}

/// Window edges, by hand: an event exactly 7 days old has left (the window is
/// `now - at < 7 days`), one a second younger counts; other kinds, a subject the regex
/// refuses and future-dated events do not count.
#[test]
fn window_edges_kinds_subjects_and_future_events() {
    let m = model(INTENT);
    let total = |acts: &[Activity]| m.score(&lead(), acts, now()).total;
    assert_eq!(total(&[ev("demo_request", Some("демо"), days_ago(7.0))]), 0);
    let just_in = days_ago(7.0) + TimeDelta::seconds(1);
    assert_eq!(total(&[ev("demo_request", Some("демо"), just_in)]), 20);
    assert_eq!(total(&[ev("call", Some("демо"), days_ago(1.0))]), 0);
    assert_eq!(
        total(&[ev("download", Some("Кейс клиента"), days_ago(1.0))]),
        0
    );
    assert_eq!(
        total(&[ev(
            "demo_request",
            Some("демо"),
            now() + TimeDelta::hours(1)
        )]),
        0
    );
}

/// `next_change` names the instant the rule stops holding: with events 2 and 6 days
/// old, the older one leaving (1 day from now) changes nothing visible, so the first
/// change is the newest one's expiry, 5 days from now, when the points go.
#[test]
fn next_change_knows_when_the_intent_expires() {
    let m = model(INTENT);
    let acts = vec![
        ev("demo_request", Some("демо"), days_ago(2.0)),
        ev("demo_request", Some("демо"), days_ago(6.0)),
    ];
    let change = m.next_change(&lead(), &acts, now()).unwrap();
    assert_eq!(change, days_ago(2.0) + TimeDelta::days(7));
    assert_eq!(m.score(&lead(), &acts, change).total, 0);
    assert_eq!(
        m.score(&lead(), &acts, change - TimeDelta::seconds(1))
            .total,
        20
    );
    // A future-dated event changes what the card names when it starts to count.
    let future = now() + TimeDelta::hours(3);
    let acts = vec![
        ev("demo_request", Some("демо"), days_ago(2.0)),
        ev("download", Some("прайс"), future),
    ];
    assert_eq!(m.next_change(&lead(), &acts, now()), Some(future));
}

#[test]
fn a_bad_high_intent_is_refused_by_path() {
    let bad = INTENT
        .replace("kinds = [\"demo_request\", \"download\"]", "kinds = []")
        .replace("(?i)демо|прайс", "(")
        .replace("window_days = 7", "window_days = 0");
    let errs = Model::compile(&spec_with(GROUPS, &bad)).unwrap_err();
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        vec![
            "scoring.rules[0].high_intent.kinds",
            "scoring.rules[0].high_intent.subject",
            "scoring.rules[0].high_intent.window_days",
        ]
    );
    let both = format!("{INTENT}activity = {{ kind = \"call\" }}\n");
    let errs = Model::compile(&spec_with(GROUPS, &both)).unwrap_err();
    assert_eq!(errs[0].path, "scoring.rules[0].high_intent");
}

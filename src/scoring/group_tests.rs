//! Hand-computed cases of the buying-group rule: distinct people, window edges, the
//! company key (CRM id first, corporate domain else, free mailboxes never), the card's
//! line, `next_change`, and compile errors by path.

use chrono::{DateTime, TimeDelta, Utc};

use super::intent_tests::{days_ago, model, now};
use super::spec::Language;
use super::*;
use crate::lead::{Activity, ActivityKind, Lead};

const GROUP: &str = r#"
[[rules]]
id = "buying_group"
group = "eng"
label = "группа закупки"
points = 15
buying_group = { kinds = ["page_view", "download"], window_days = 7, min_people = 3, company_field = "custom.company_id" }
"#;

fn lead(email: &str) -> Lead {
    Lead {
        id: "1".into(),
        emails: vec![email.into()],
        company: Some("Ромашка".into()),
        ..Lead::default()
    }
}

fn member(id: &str, kind: &str, at: DateTime<Utc>) -> Member {
    Member {
        id: id.into(),
        latest: [(kind.to_string(), at)].into(),
    }
}

fn company(people: Vec<Member>) -> Company {
    Company {
        name: "Ромашка".into(),
        people,
    }
}

/// Three people active in 7 days: +15 and "3 сотрудника «Ромашка» за 7 дней".
#[test]
fn three_people_in_the_window_make_a_group() {
    let m = model(GROUP);
    let c = company(vec![
        member("lead:1", "page_view", days_ago(1.0)),
        member("lead:2", "download", days_ago(3.0)),
        member("contact:9", "page_view", days_ago(6.0)),
    ]);
    let s = m.score_with(&lead("a@romashka.ru"), &[], Some(&c), now());
    assert_eq!(s.total, 15);
    let text = s.explain(Language::Ru, now());
    assert!(
        text.contains("+15 группа закупки: 3 сотрудника «Ромашка» за 7 дней"),
        "{text}"
    );
    assert!(s
        .explain(Language::En, now())
        .contains("3 people of \"Ромашка\" in 7 days"));
    // Without the aggregate (or with `score`) the rule cannot fire.
    assert_eq!(m.score(&lead("a@romashka.ru"), &[], now()).total, 0);
}

/// Distinct people only, and only qualifying kinds: two people (one with two kinds),
/// a third whose only activity is a call, is no group of 3.
#[test]
fn people_are_counted_once_and_other_kinds_do_not_count() {
    let m = model(GROUP);
    let mut two_kinds = member("lead:1", "page_view", days_ago(1.0));
    two_kinds.latest.insert("download".into(), days_ago(2.0));
    let c = company(vec![
        two_kinds,
        member("lead:2", "download", days_ago(3.0)),
        member("lead:3", "call", days_ago(1.0)),
    ]);
    assert_eq!(
        m.score_with(&lead("a@romashka.ru"), &[], Some(&c), now())
            .total,
        0
    );
}

/// Window edges: a person last active exactly 7 days ago has left; a second later
/// counts; a future time does not count yet. next_change names the instant the
/// oldest of three leaves, and the group ends then.
#[test]
fn window_edges_and_next_change() {
    let m = model(GROUP);
    let l = lead("a@romashka.ru");
    let with_third = |at: DateTime<Utc>| {
        company(vec![
            member("lead:1", "page_view", days_ago(1.0)),
            member("lead:2", "page_view", days_ago(2.0)),
            member("lead:3", "page_view", at),
        ])
    };
    let total = |c: &Company| m.score_with(&l, &[], Some(c), now()).total;
    assert_eq!(total(&with_third(days_ago(7.0))), 0);
    let just_in = days_ago(7.0) + TimeDelta::seconds(1);
    assert_eq!(total(&with_third(just_in)), 15);
    assert_eq!(total(&with_third(now() + TimeDelta::hours(1))), 0);

    let c = with_third(days_ago(5.0));
    let change = m.next_change_with(&l, &[], Some(&c), now()).unwrap();
    assert_eq!(change, days_ago(5.0) + TimeDelta::days(7));
    assert_eq!(m.score_with(&l, &[], Some(&c), change).total, 0);
}

/// The company: the CRM id field first, else the corporate domain; a free mailbox is
/// never a company (so its lead is never grouped), and neither is no e-mail.
#[test]
fn the_company_key_prefers_the_crm_id_and_never_groups_free_mailboxes() {
    let m = model(GROUP);
    let key = m.company_key(&lead("Ivan@Romashka.RU")).unwrap();
    assert_eq!(key.key, "domain:romashka.ru");
    assert_eq!(key.name, "Ромашка");
    let mut with_id = lead("ivan@gmail.com");
    with_id.custom.insert("company_id".into(), "42".into());
    assert_eq!(m.company_key(&with_id).unwrap().key, "id:42");
    assert_eq!(m.company_key(&lead("ivan@gmail.com")), None);
    assert_eq!(m.company_key(&lead("ivan@Yandex.ru")), None);
    assert_eq!(m.company_key(&Lead::default()), None);
    // A free mailbox first, a corporate one second: the corporate one names it.
    let mut both = lead("ivan@mail.ru");
    both.emails.push("ivan@romashka.ru".into());
    assert_eq!(m.company_key(&both).unwrap().key, "domain:romashka.ru");
    // Without a buying-group rule there is no company at all.
    let plain = model(
        "[[rules]]\nid = \"r\"\ngroup = \"eng\"\nlabel = \"r\"\npoints = 1\nactivity = { kind = \"call\" }\n",
    );
    assert_eq!(plain.company_key(&lead("a@romashka.ru")), None);
}

/// A lead's people: each activity's contact when it names one, else the lead itself,
/// with the latest time per kind.
#[test]
fn members_come_from_contacts_or_the_lead() {
    let act = |kind: &str, at: DateTime<Utc>, contact: Option<&str>| Activity {
        id: String::new(),
        kind: ActivityKind::from_name(kind),
        direction: None,
        subject: None,
        url: None,
        at,
        contact_id: contact.map(str::to_string),
        mapped_by: None,
    };
    let people = Member::from_activities(
        "7",
        &[
            act("page_view", days_ago(3.0), None),
            act("page_view", days_ago(1.0), None),
            act("download", days_ago(2.0), Some("55")),
        ],
    );
    assert_eq!(
        people,
        vec![
            member("contact:55", "download", days_ago(2.0)),
            member("lead:7", "page_view", days_ago(1.0)),
        ]
    );
}

#[test]
fn a_bad_buying_group_is_refused_by_path() {
    let bad = GROUP
        .replace("min_people = 3", "min_people = 1")
        .replace("custom.company_id", "compnay")
        .replace("window_days = 7", "window_days = -1");
    let errs =
        Model::compile(&super::tests::spec_with(super::intent_tests::GROUPS, &bad)).unwrap_err();
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        vec![
            "scoring.rules[0].buying_group.min_people",
            "scoring.rules[0].buying_group.company_field",
            "scoring.rules[0].buying_group.window_days",
        ]
    );
}

/// `task` on a rule: listed by `rule_tasks` (a buying group's episode is the
/// company's); an empty text is refused by path.
#[test]
fn rule_tasks_are_listed_and_an_empty_one_is_refused() {
    let with_task = format!("{GROUP}task = \"Несколько сотрудников «{{company}}» изучают цены\"\n");
    let tasks = model(&with_task).rule_tasks();
    assert_eq!(tasks.len(), 1);
    assert_eq!(
        (tasks[0].rule_id.as_str(), tasks[0].company),
        ("buying_group", true)
    );
    assert!(model(GROUP).rule_tasks().is_empty());
    let empty = format!("{GROUP}task = \" \"\n");
    let errs = Model::compile(&super::tests::spec_with(
        super::intent_tests::GROUPS,
        &empty,
    ))
    .unwrap_err();
    assert_eq!(errs[0].path, "scoring.rules[0].task");
}

/// Only a change in who counts (or the name) makes the company's other leads read
/// differently: a later time of someone already counted does not.
#[test]
fn the_group_view_moves_only_when_who_counts_changes() {
    let m = model(GROUP);
    let three = company(vec![
        member("lead:1", "page_view", days_ago(1.0)),
        member("lead:2", "download", days_ago(3.0)),
        member("lead:3", "page_view", days_ago(6.0)),
    ]);
    let mut later = three.clone();
    later.people[0] = member("lead:1", "page_view", days_ago(0.1));
    assert!(m.same_group_view(Some(&three), Some(&later), now()));
    // A fourth person: "4 сотрудника".
    let mut four = three.clone();
    four.people
        .push(member("lead:4", "download", days_ago(2.0)));
    assert!(!m.same_group_view(Some(&three), Some(&four), now()));
    // Someone whose only activity is of another kind, or out of the window, counts for
    // nothing: the view stays.
    let mut other = three.clone();
    other
        .people
        .push(member("lead:5", "email_open", days_ago(1.0)));
    other
        .people
        .push(member("lead:6", "page_view", days_ago(9.0)));
    assert!(m.same_group_view(Some(&three), Some(&other), now()));
    // The group forms from two people: the view moves.
    let two = company(three.people[..2].to_vec());
    assert!(!m.same_group_view(Some(&two), Some(&three), now()));
    assert!(!m.same_group_view(None, Some(&three), now()));
}

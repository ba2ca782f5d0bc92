//! Behavioural trigger rules end to end over HTTP against the Bitrix24 sandbox.
//!
//! Buying group: three leads of one company (one corporate e-mail domain) each read a
//! page; every one of them gains the group's points with the line on its card, written
//! to the CRM, the first two by a re-score from their stored inputs when the third
//! arrived. A lead with a free mailbox reading the same page is never grouped, and a
//! deleted lead leaves the group. With `task` on the rule, the company's episode makes
//! exactly one task, on its highest-scored lead, repeated events make none, and the
//! next episode (after the group broke up) makes one more. A high-intent rule's task is
//! the lead's own, once per episode too, and an intent left by a crash is recovered
//! by its marker instead of making a second task.

use crate::common;

use std::sync::Arc;

use common::{Daemon, Options};
use leadscore::config::Config;
use leadscore::demo;
use leadscore::scoring::spec::ScoringSpec;
use leadscore::scoring::Model;
use leadscore::store::Episode;
use serde_json::json;

const RULE: &str = r#"
id = "buying_group"
group = "engagement"
label = "группа закупки"
points = 15
buying_group = { kinds = ["page_view"], window_days = 7, min_people = 3 }
"#;

/// The seed model plus `rule` (TOML of one `[[scoring.rules]]` table).
fn with_rule(config: &mut Config, rule: &str) {
    let text = leadscore::demo::example_scoring_toml().unwrap();
    let mut doc: toml::Table = toml::from_str(&text).unwrap();
    let mut spec: ScoringSpec = doc.remove("scoring").unwrap().try_into().unwrap();
    spec.rules.push(toml::from_str(rule).unwrap());
    config.model = Arc::new(Model::compile(&spec).unwrap());
}

fn with_group(config: &mut Config) {
    with_rule(config, RULE)
}

fn with_group_task(config: &mut Config) {
    let rule =
        format!("{RULE}task = \"Несколько сотрудников «{{company}}» изучают сайт ({{label}})\"\n");
    with_rule(config, &rule)
}

fn add_person(d: &Daemon, n: usize, email: &str) -> u64 {
    add_person_as(d, n, email, "Менеджер")
}

fn add_person_as(d: &Daemon, n: usize, email: &str, post: &str) -> u64 {
    d.sandbox
        .add_lead(json!({
            "TITLE": format!("Lead {n}"),
            "NAME": format!("Имя{n}"),
            "POST": post,
            "COMPANY_TITLE": "Ромашка",
            "EMAIL": [{"VALUE": email, "VALUE_TYPE": "WORK"}],
            "ASSIGNED_BY_ID": "3",
        }))
        .unwrap()
}

fn read_page(d: &Daemon, lead: u64) {
    d.sandbox
        .add_activity(json!({
            "OWNER_TYPE_ID": 1,
            "OWNER_ID": lead,
            "TYPE_ID": 6,
            "PROVIDER_ID": "REST_APP",
            "SUBJECT": "[page] https://example.ru/about",
            "COMPLETED": "Y",
        }))
        .unwrap();
}

fn card(d: &Daemon, id: u64) -> String {
    d.crm_card(id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_people_of_one_company_all_gain_the_group_points() {
    let d = Daemon::start(Options {
        configure: Some(with_group),
        ..Options::default()
    })
    .await;
    let people: Vec<u64> = [
        "anna@romashka-corp.ru",
        "boris@romashka-corp.ru",
        "vera@Romashka-Corp.ru",
    ]
    .iter()
    .enumerate()
    .map(|(i, e)| add_person(&d, i + 1, e))
    .collect();
    let free = add_person(&d, 4, "gleb@gmail.com");
    d.settle().await;
    let before: Vec<Option<i64>> = people.iter().map(|&id| d.crm_score(id)).collect();
    let free_before = d.crm_score(free);

    // Two of them read: not a group of 3 yet.
    read_page(&d, people[0]);
    read_page(&d, people[1]);
    d.settle().await;
    for &id in &people[..2] {
        assert!(!card(&d, id).contains("группа закупки"), "{}", card(&d, id));
    }

    read_page(&d, people[2]);
    read_page(&d, free);
    d.settle().await;
    let line = "+15 группа закупки: 3 сотрудника «Ромашка» за 7 дней";
    for (i, &id) in people.iter().enumerate() {
        let text = card(&d, id);
        assert!(text.contains(line), "lead {id}: {text}");
        assert_eq!(
            d.crm_score(id),
            before[i].map(|s| s + 15),
            "lead {id} gained the group's points in the CRM: {text}"
        );
    }
    assert!(
        !card(&d, free).contains("группа закупки"),
        "{}",
        card(&d, free)
    );
    assert_eq!(
        d.crm_score(free),
        free_before,
        "a free mailbox is never grouped"
    );

    // One of the three is deleted: the other two are a group of 2, not 3, and lose it.
    // (The daemon learns of it from an update event: its read finds the lead gone.)
    d.sandbox.delete_lead(people[2]).unwrap();
    let (status, _) = d.post(&d.lead_event(people[2])).await;
    assert_eq!(status, 200);
    d.settle().await;
    for (i, &id) in people[..2].iter().enumerate() {
        assert_eq!(d.crm_score(id), before[i], "lead {id}: {}", card(&d, id));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_company_episode_makes_one_task_on_its_top_lead() {
    let d = Daemon::start(Options {
        configure: Some(with_group_task),
        ..Options::default()
    })
    .await;
    let anna = add_person(&d, 1, "anna@romashka-corp.ru");
    // The director scores highest: the episode's task goes to her lead.
    let boss = add_person_as(&d, 2, "boss@romashka-corp.ru", "Генеральный директор");
    let vera = add_person(&d, 3, "vera@romashka-corp.ru");
    let people = [anna, boss, vera];
    d.settle().await;
    let tasks = |d: &Daemon| people.iter().map(|&id| d.tasks_for(id)).sum::<usize>();
    assert_eq!(tasks(&d), 0);

    for &id in &people {
        read_page(&d, id);
    }
    d.settle().await;
    assert!(
        d.crm_card(anna).contains("группа закупки"),
        "{}",
        d.crm_card(anna)
    );
    assert_eq!(tasks(&d), 1, "one task for the company's episode");
    assert_eq!(d.tasks_for(boss), 1, "on its highest-scored lead");
    let task = d
        .sandbox
        .tasks()
        .into_iter()
        .find(|t| t.crm_bindings.contains(&format!("L_{boss}")))
        .unwrap();
    assert!(
        task.title
            .contains("Несколько сотрудников «Ромашка» изучают сайт (группа закупки)"),
        "{}",
        task.title
    );

    // More reading in the same episode: no second task.
    for &id in &people {
        read_page(&d, id);
    }
    d.settle().await;
    assert_eq!(tasks(&d), 1, "repeated events make no task");

    // Vera's lead is deleted: the group of 3 ends, and with it the episode (no task).
    d.sandbox.delete_lead(vera).unwrap();
    let (status, _) = d.post(&d.lead_event(vera)).await;
    assert_eq!(status, 200);
    d.settle().await;
    assert!(!d.crm_card(anna).contains("группа закупки"));
    assert_eq!(tasks(&d), 1);

    // A new colleague reads: the group holds again, a new episode, one new task.
    let dima = add_person(&d, 4, "dima@romashka-corp.ru");
    read_page(&d, dima);
    d.settle().await;
    assert!(
        d.crm_card(dima).contains("группа закупки"),
        "{}",
        d.crm_card(dima)
    );
    assert_eq!(tasks(&d) + d.tasks_for(dima), 2, "one task per episode");
    assert_eq!(d.tasks_for(boss), 2);
}

fn with_intent_task(config: &mut Config) {
    with_rule(
        config,
        r#"
id = "intent"
group = "engagement"
label = "высокое намерение"
points = 10
high_intent = { kinds = ["demo_request"], window_days = 7 }
task = "{label}: {name}"
"#,
    )
}

/// A lead's own episode: the first demo request starts it (one task, the card names the
/// event), a second in the same window makes none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_high_intent_episode_makes_one_task_for_the_lead() {
    let d = Daemon::start(Options {
        configure: Some(with_intent_task),
        ..Options::default()
    })
    .await;
    let anna = add_person(&d, 1, "anna@romashka-corp.ru");
    d.settle().await;
    assert_eq!(d.tasks_for(anna), 0);
    d.add_demo_request(anna);
    d.settle().await;
    let card = d.crm_card(anna);
    assert!(
        card.contains("+10 высокое намерение: Заявка на демо"),
        "{card}"
    );
    assert_eq!(d.tasks_for(anna), 1);
    let task = d.sandbox.tasks().into_iter().next().unwrap();
    assert_eq!(task.title, "высокое намерение: Имя1");
    d.add_demo_request(anna);
    d.settle().await;
    assert_eq!(
        d.tasks_for(anna),
        1,
        "the same episode makes no second task"
    );

    // A crash between the CRM call and its record leaves the intent: put it back as
    // the crash would have. The next turn finds the task by its marker and records it
    // instead of creating another.
    let store = d.store();
    let key = format!("intent\0lead\0{anna}");
    let Some(Episode::Fired { marker, lead, .. }) = store.episode(demo::PORTAL, &key).unwrap()
    else {
        panic!("the episode's task is recorded");
    };
    let intent = Episode::Intent {
        marker: marker.clone(),
        lead,
        at: chrono::Utc::now(),
    };
    store.set_episode(demo::PORTAL, &key, &intent).unwrap();
    let (status, _) = d.post(&d.lead_event(anna)).await;
    assert_eq!(status, 200);
    d.settle().await;
    assert_eq!(
        d.tasks_for(anna),
        1,
        "recovered by its marker, not created again"
    );
    assert!(matches!(
        store.episode(demo::PORTAL, &key).unwrap(),
        Some(Episode::Fired { marker: m, .. }) if m == marker
    ));
}

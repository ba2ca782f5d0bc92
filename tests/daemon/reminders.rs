//! Purchase-month reminders through the real daemon and the Bitrix24 sandbox: the task
//! comes `days_before` the purchase month with the clock advanced, once per cycle,
//! through duplicate webhooks and a restart.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{Datelike, Utc};
use leadscore::config::reminder::Reminder;
use leadscore::config::Config;
use serde_json::json;

use crate::common::{Daemon, Options};

fn with_reminder(config: &mut Config) {
    let portal = &mut config.portals[0];
    portal.fields.map.insert(
        "custom.purchase_month".into(),
        "UF_CRM_PURCHASE_MONTH".into(),
    );
    portal.reminder = Some(Arc::new(Reminder {
        field: "custom.purchase_month".into(),
        days_before: 30,
        yearly: true,
        title: "Скоро закупка: {name} ({date})".into(),
        text: "Клиент {name} обычно покупает около {date}.".into(),
    }));
}

fn reminder_tasks(d: &Daemon, lead: u64) -> Vec<String> {
    let tag = format!("L_{lead}");
    d.sandbox
        .tasks()
        .into_iter()
        .filter(|t| t.crm_bindings.contains(&tag) && t.title.starts_with("Скоро закупка"))
        .map(|t| t.title)
        .collect()
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purchase_month_reminder_comes_once_days_before_with_the_clock_advanced() {
    let mut d = Daemon::start(Options {
        configure: Some(with_reminder),
        ..Options::default()
    })
    .await;
    // A customer who buys in the month three months from now (its first day is 60 to
    // 92 days ahead, so the reminder, 30 days earlier, is weeks away).
    let month = (Utc::now() + chrono::Duration::days(92)).month();
    let lead = d
        .sandbox
        .add_lead(json!({
            "TITLE": "Завод",
            "NAME": "Покупатель",
            "ASSIGNED_BY_ID": "3",
            "UF_CRM_PURCHASE_MONTH": month.to_string(),
        }))
        .unwrap();
    d.settle().await;
    wait_for("the lead is scored", || d.crm_score(lead).is_some()).await;
    assert!(reminder_tasks(&d, lead).is_empty(), "not yet");
    assert!(d.store().timers_len() >= 1, "the reminder is scheduled");

    // No webhook: the clock alone reaches the reminder (at most 92 - 30 days ahead).
    d.unbind_events();
    d.pipeline().advance_clock(Duration::from_secs(63 * 86_400));
    wait_for("the reminder task", || reminder_tasks(&d, lead).len() == 1).await;
    let titles = reminder_tasks(&d, lead);
    assert!(titles[0].contains("Покупатель"), "{titles:?}");
    let task = d
        .sandbox
        .tasks()
        .into_iter()
        .find(|t| t.title.starts_with("Скоро закупка"))
        .unwrap();
    assert_eq!(task.responsible_id, 3, "the lead's rep gets it");
    assert!(
        task.description.contains("обычно покупает"),
        "{}",
        task.description
    );
    let state = d.store().reminders_all(leadscore::demo::PORTAL).unwrap();
    assert_eq!(state.len(), 1);
    assert!(state[0].1.task.is_some(), "recorded: {state:?}");

    // A crash between "created in the CRM" and "recorded": only the intent survives.
    // The next turn finds the task by its marker instead of making a second one.
    let mut intent = state[0].1.clone();
    intent.task = None;
    d.store()
        .set_reminder(leadscore::demo::PORTAL, &lead.to_string(), &intent)
        .unwrap();
    d.store().flush().await.unwrap();

    // Webhooks, a restart and more days inside the same cycle make no second task.
    d.stop().await;
    d.launch(true).await;
    d.pipeline().advance_clock(Duration::from_secs(70 * 86_400));
    d.sandbox
        .update_lead(lead, json!({"TITLE": "Завод (обновлён)"}))
        .unwrap();
    d.settle().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(reminder_tasks(&d, lead).len(), 1, "once per cycle");
    let state = d.store().reminders_all(leadscore::demo::PORTAL).unwrap();
    assert_eq!(
        state[0].1.task.as_ref().map(|t| t.id.as_str()),
        Some(task.id.to_string().as_str()),
        "recovered by its marker"
    );
    // The next year's cycle is scheduled.
    let at = d
        .store()
        .next_timer()
        .unwrap()
        .expect("a timer for next year");
    assert!(
        at > d.pipeline().now() + chrono::Duration::days(200),
        "next cycle at {at}"
    );
}

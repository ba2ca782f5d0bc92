//! The call-now state machine over time, against the Bitrix24 sandbox: one task per
//! crossing, hysteresis (re-arm only below `rearm_below`), the cool-down, and never a new
//! task while ours is still open. `trigger::apply` takes `now`, so days pass instantly.

use crate::common;

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use common::{Daemon, Options};
use leadscore::crm::Crm;
use leadscore::lead::Lead;
use leadscore::pipeline::trigger::{self, TriggerOutcome};
use leadscore::pipeline::PortalRuntime;
use leadscore::scoring::Score;
use leadscore::store::{Crossing, Store};

fn score(total: i32) -> Score {
    let tier = if total > 70 {
        "hot"
    } else if total > 30 {
        "warm"
    } else {
        "cold"
    };
    Score {
        total,
        tier: tier.into(),
        tier_label: tier.into(),
        groups: Vec::new(),
        breakdown: Vec::new(),
        gaps: Vec::new(),
        unclamped: total,
        qualification: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hysteresis_cooldown_and_open_task_gate_a_second_task() {
    let mut d = Daemon::start(Options {
        bind_events: false,
        ..Options::default()
    })
    .await;
    d.stop().await;
    let id = d.add_strong_lead(1);
    let store = Store::open(&d.config.server.data_dir).unwrap();
    let portal = d.config.portals[0].clone();
    assert_eq!((portal.threshold, portal.rearm_below), (70, 60));
    let crm: Arc<dyn Crm> = leadscore::app::build_crm(
        &portal,
        &Arc::new(Store::open(&d.dir.path().join("crm-store")).unwrap()),
    )
    .unwrap();
    let rt = PortalRuntime { portal, crm };
    let lead = Lead {
        id: id.to_string(),
        name: Some("Анна".into()),
        responsible_id: Some("3".into()),
        ..Lead::default()
    };
    let t0: DateTime<Utc> = Utc::now();
    let at = |h: i64| t0 + Duration::hours(h);
    let step = |total: i32, h: i64| {
        let (store, rt, lead) = (&store, &rt, &lead);
        async move {
            trigger::apply(store, rt, lead, &score(total), "why", at(h))
                .await
                .unwrap()
        }
    };

    assert_eq!(
        step(70, 0).await,
        TriggerOutcome::Nothing,
        "70 is not above 70"
    );
    let first = match step(80, 1).await {
        TriggerOutcome::Created(t) => t,
        other => panic!("expected a task, got {other:?}"),
    };
    assert_eq!(d.tasks_for(id), 1);
    let task = d.sandbox.tasks().into_iter().next().unwrap();
    assert_eq!(task.responsible_id, 3);
    assert!(
        task.description.contains("leadscore:"),
        "the marker is in the task"
    );

    // Wobbling around the threshold: no new task.
    assert_eq!(step(69, 2).await, TriggerOutcome::Nothing);
    assert_eq!(step(75, 3).await, TriggerOutcome::Nothing);
    // Falls below the re-arm mark, comes back within the cool-down: still nothing.
    assert_eq!(step(55, 4).await, TriggerOutcome::Nothing);
    assert!(matches!(
        store.crossing(&rt.portal.id, &lead.id).unwrap(),
        Crossing::Fired {
            fell_below: true,
            ..
        }
    ));
    assert_eq!(step(85, 5).await, TriggerOutcome::Nothing);
    // Cool-down (72 h) over, but our first task is still open: nothing.
    assert_eq!(step(85, 80).await, TriggerOutcome::Nothing);
    assert_eq!(d.tasks_for(id), 1);
    // The rep closes it: the next crossing makes a new task.
    d.sandbox.complete_task(first.id.parse().unwrap()).unwrap();
    assert!(matches!(step(86, 81).await, TriggerOutcome::Created(_)));
    assert_eq!(d.tasks_for(id), 2);
    // And that one does not repeat either.
    assert_eq!(step(90, 82).await, TriggerOutcome::Nothing);
    assert_eq!(d.tasks_for(id), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_is_idempotent() {
    let d = Daemon::start(Options {
        bind_events: false,
        ..Options::default()
    })
    .await;
    let store = Arc::new(Store::open(&d.dir.path().join("setup-store")).unwrap());
    let portal = &d.config.portals[0];
    let admin = leadscore::app::build_admin(portal, &store).unwrap();
    let tiers = vec![
        ("cold".to_string(), "холодный".to_string()),
        ("warm".to_string(), "тёплый".to_string()),
        ("hot".to_string(), "горячий".to_string()),
    ];
    let again = admin.setup_fields(&portal.fields, &tiers).await.unwrap();
    assert!(
        again.created.is_empty(),
        "second setup creates nothing: {again:?}"
    );
    assert_eq!(again.tier_values, d.config.portals[0].fields.tier_values);
    assert_eq!(d.sandbox.userfields().len(), 3);
}

//! Call-now tasks in batches (issue 19): the crossings of one worker turn cost
//! ceil(N/50) task requests on each CRM, every intent is in sled before the CRM hears of
//! its task, and one task failing inside a batch leaves only that lead to retry.

use crate::common;
use crate::e2e_amocrm;

use std::sync::Arc;

use chrono::Utc;
use leadscore::crm::Crm;
use leadscore::lead::Lead;
use leadscore::pipeline::trigger::{self, Fire, Step, TriggerOutcome};
use leadscore::pipeline::{PipelineError, PortalRuntime};
use leadscore::scoring::Score;
use leadscore::store::{Crossing, Store};

fn hot() -> Score {
    Score {
        total: 80,
        tier: "hot".into(),
        tier_label: "hot".into(),
        groups: Vec::new(),
        breakdown: Vec::new(),
        gaps: Vec::new(),
        unclamped: 80,
        qualification: None,
    }
}

fn lead(id: u64, rep: Option<&str>) -> Lead {
    Lead {
        id: id.to_string(),
        name: Some(format!("Лид {id}")),
        responsible_id: rep.map(str::to_string),
        ..Lead::default()
    }
}

/// The crossing of each lead, as one worker turn decides them.
async fn decide_all(store: &Store, rt: &PortalRuntime, leads: &[Lead]) -> Vec<Fire> {
    let now = Utc::now();
    let mut fires = Vec::new();
    for l in leads {
        match trigger::decide(store, rt, l, &hot(), "why", now, &fresh_turn())
            .await
            .unwrap()
        {
            Step::Fire(f) => fires.push(f),
            Step::Done(o) => panic!("lead {} did not cross: {o:?}", l.id),
        }
    }
    fires
}

/// A turn with nothing looked up beforehand.
fn fresh_turn() -> trigger::Turn<'static> {
    trigger::Turn {
        allow_new: true,
        recovered: None,
    }
}

fn created(results: &[Result<TriggerOutcome, PipelineError>]) -> usize {
    results
        .iter()
        .filter(|r| matches!(r, Ok(TriggerOutcome::Created(_))))
        .count()
}

fn runtime(portal: leadscore::config::Portal, dir: &std::path::Path) -> PortalRuntime {
    let crm: Arc<dyn Crm> = leadscore::app::build_crm(
        &portal,
        &Arc::new(Store::open(&dir.join("crm-store")).unwrap()),
    )
    .unwrap();
    PortalRuntime { portal, crm }
}

/// A Bitrix24 sandbox portal with 60 strong leads, its daemon stopped, and the trigger's
/// store and CRM client opened directly (each test drives the trigger itself).
async fn sixty_leads_beside_a_stopped_daemon(
) -> (common::Daemon, Store, PortalRuntime, Vec<u64>, Vec<Lead>) {
    let mut d = common::Daemon::start(common::Options {
        bind_events: false,
        ..common::Options::default()
    })
    .await;
    d.stop().await;
    let store = Store::open(&d.config.server.data_dir).unwrap();
    let rt = runtime(d.config.portals[0].clone(), d.dir.path());
    let ids: Vec<u64> = (0..60).map(|n| d.add_strong_lead(n)).collect();
    let leads: Vec<Lead> = ids.iter().map(|&id| lead(id, Some("3"))).collect();
    (d, store, rt, ids, leads)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bitrix24_crossings_go_in_batches_and_a_failed_command_retries_alone() {
    let (d, store, rt, ids, leads) = sixty_leads_beside_a_stopped_daemon().await;

    let fires = decide_all(&store, &rt, &leads).await;
    d.sandbox.reset_counters();
    let results = trigger::fire_all(&store, &rt, fires).await;
    assert_eq!(created(&results), 60);
    let c = d.sandbox.counters();
    assert_eq!(c.requests, 2, "60 tasks in ceil(60/50) requests: {c:?}");
    assert_eq!(c.by_method.get("batch"), Some(&2));
    assert_eq!(c.by_method.get("tasks.task.add"), Some(&60));
    for (l, id) in leads.iter().zip(&ids) {
        assert_eq!(d.tasks_for(*id), 1, "lead {id}");
        let Crossing::Fired { marker, task, .. } = store.crossing(&rt.portal.id, &l.id).unwrap()
        else {
            panic!("lead {id} not recorded as fired");
        };
        let t = d
            .sandbox
            .tasks()
            .into_iter()
            .find(|t| t.id.to_string() == task.id)
            .unwrap();
        assert!(t.description.contains(&marker), "the marker is in the task");
    }

    // One command of the next batch fails: only its lead is left, with its intent.
    let more: Vec<u64> = (60..65).map(|n| d.add_strong_lead(n)).collect();
    let leads: Vec<Lead> = more.iter().map(|&id| lead(id, Some("3"))).collect();
    let fires = decide_all(&store, &rt, &leads).await;
    d.sandbox.fail_batch_commands("tasks.task.add", 1);
    d.sandbox.reset_counters();
    let results = trigger::fire_all(&store, &rt, fires).await;
    assert_eq!(d.sandbox.counters().requests, 1);
    assert_eq!(created(&results), 4);
    let failed: Vec<usize> = (0..5).filter(|&i| results[i].is_err()).collect();
    assert_eq!(failed.len(), 1, "{results:?}");
    let bad = &leads[failed[0]];
    let Crossing::Intent { marker, .. } = store.crossing(&rt.portal.id, &bad.id).unwrap() else {
        panic!("the failed lead keeps its intent");
    };
    assert_eq!(d.tasks_for(more[failed[0]]), 0);
    // Its retry looks for the task by its marker, finds none, and creates it once.
    d.sandbox.reset_counters();
    let again = trigger::apply(&store, &rt, bad, &hot(), "why", Utc::now())
        .await
        .unwrap();
    assert!(matches!(again, TriggerOutcome::Created(_)), "{again:?}");
    assert_eq!(d.sandbox.counters().requests, 2, "one look-up, one create");
    for id in &more {
        assert_eq!(d.tasks_for(*id), 1, "lead {id}");
    }
    let retried = d
        .sandbox
        .tasks()
        .into_iter()
        .filter(|t| t.description.contains(&marker))
        .count();
    assert_eq!(retried, 1, "the retry kept the intent's marker");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amocrm_crossings_go_in_arrays_and_a_refused_task_does_not_fail_the_others() {
    let mut d = e2e_amocrm::Daemon::start(false).await;
    d.stop().await;
    let store = Store::open(&d.config.server.data_dir).unwrap();
    let rt = runtime(d.config.portals[0].clone(), d.dir.path());
    let ids: Vec<u64> = (0..60).map(|n| d.add_strong_lead(n)).collect();
    let leads: Vec<Lead> = ids.iter().map(|&id| lead(id, None)).collect();

    let fires = decide_all(&store, &rt, &leads).await;
    d.sandbox.reset_calls();
    let results = trigger::fire_all(&store, &rt, fires).await;
    assert_eq!(created(&results), 60);
    assert_eq!(
        d.sandbox.count_route("POST", "/api/v4/tasks"),
        2,
        "60 tasks in ceil(60/50) requests"
    );
    assert_eq!(d.sandbox.calls().len(), 2, "no other request");
    for (l, id) in leads.iter().zip(&ids) {
        let tasks = d.sandbox.tasks_of(*id);
        assert_eq!(tasks.len(), 1, "lead {id}");
        let Crossing::Fired { marker, task, .. } = store.crossing(&rt.portal.id, &l.id).unwrap()
        else {
            panic!("lead {id} not recorded as fired");
        };
        assert_eq!(tasks[0].id.to_string(), task.id);
        assert!(tasks[0].text.contains(&marker));
    }

    // amoCRM refuses a whole array for one bad task: that one is refused, the other
    // four go again in one more request.
    let more: Vec<u64> = (60..65).map(|n| d.add_strong_lead(n)).collect();
    let leads: Vec<Lead> = more.iter().map(|&id| lead(id, None)).collect();
    let fires = decide_all(&store, &rt, &leads).await;
    d.sandbox.refuse_tasks_on(more[2]);
    d.sandbox.reset_calls();
    let results = trigger::fire_all(&store, &rt, fires).await;
    assert_eq!(d.sandbox.count_route("POST", "/api/v4/tasks"), 2);
    assert_eq!(d.sandbox.count_status(400), 1);
    assert_eq!(created(&results), 4);
    assert!(results[2].is_err(), "{:?}", results[2]);
    assert!(matches!(
        store.crossing(&rt.portal.id, &leads[2].id).unwrap(),
        Crossing::Intent { .. }
    ));
    for (i, id) in more.iter().enumerate() {
        let want = usize::from(i != 2);
        assert_eq!(d.sandbox.tasks_of(*id).len(), want, "lead {id}");
    }
}

/// The answers of both task batches are lost (the portal made the 60 tasks, its nginx
/// answered 504): every lead keeps its intent, and the next turn finds all 60 tasks by
/// their markers in two look-up requests (50 to a `batch`), not 60, and makes none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bitrix24_intents_left_by_lost_answers_are_recovered_in_one_lookup_batch() {
    let (d, store, rt, ids, leads) = sixty_leads_beside_a_stopped_daemon().await;
    let fires = decide_all(&store, &rt, &leads).await;
    d.sandbox.lose_answers("batch", 2);
    let results = trigger::fire_all(&store, &rt, fires).await;
    assert_eq!(created(&results), 0, "{results:?}");
    for (l, id) in leads.iter().zip(&ids) {
        assert_eq!(d.tasks_for(*id), 1, "the portal made the task of lead {id}");
        assert!(matches!(
            store.crossing(&rt.portal.id, &l.id).unwrap(),
            Crossing::Intent { .. }
        ));
    }

    d.sandbox.reset_counters();
    let recovered = trigger::recover_intents(&store, &rt, leads.iter().map(|l| &l.id)).await;
    assert_eq!(recovered.len(), 60);
    let c = d.sandbox.counters();
    assert_eq!(c.requests, 2, "60 look-ups in ceil(60/50) requests: {c:?}");
    assert_eq!(c.by_method.get("tasks.task.list"), Some(&60));
    let turn = trigger::Turn {
        allow_new: true,
        recovered: Some(&recovered),
    };
    for (l, id) in leads.iter().zip(&ids) {
        let step = trigger::decide(&store, &rt, l, &hot(), "why", Utc::now(), &turn)
            .await
            .unwrap();
        assert!(
            matches!(step, Step::Done(TriggerOutcome::Recovered(_))),
            "lead {id}: {step:?}"
        );
        assert!(matches!(
            store.crossing(&rt.portal.id, &l.id).unwrap(),
            Crossing::Fired { .. }
        ));
        assert_eq!(d.tasks_for(*id), 1, "lead {id}: no second task");
    }
    assert_eq!(
        d.sandbox.counters().requests,
        2,
        "decisions asked nothing more"
    );
}

//! The reconciliation sweep skips leads whose last change is our own write (issue 15,
//! item 6), over HTTP against both sandboxes: a burst is scored and written, then a
//! sweep lists every lead of the burst (our writes moved their modification times)
//! and queues only the one someone else changed after our write.

use std::time::Duration;

use chrono::Utc;
use leadscore::app::sweep_once;
use leadscore_amocrm_sandbox::{FieldValue, LeadChange};
use serde_json::json;

use crate::common::{Daemon, Options};
use crate::e2e_amocrm::Daemon as AmoDaemon;

/// Leads in the burst.
const BURST: usize = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bitrix24_sweep_refetches_only_what_someone_else_changed_after_our_write() {
    let mut d = Daemon::start(Options::default()).await;
    let portal = leadscore::demo::PORTAL;
    // The first sweep only sets its cursor.
    assert_eq!(
        sweep_once(d.pipeline(), portal, Utc::now()).await.unwrap(),
        0
    );
    let leads: Vec<u64> = (0..BURST).map(|n| d.add_strong_lead(n)).collect();
    d.settle().await;
    assert!(leads.iter().all(|l| d.crm_score(*l) == Some(60)));
    let stamped = d
        .store()
        .written_all(portal)
        .unwrap()
        .iter()
        .filter(|(_, w)| w.crm_stamp.as_ref().is_some_and(|s| s.by.is_some()))
        .count();
    assert_eq!(
        stamped, BURST,
        "every write kept DATE_MODIFY and MODIFY_BY_ID"
    );

    // A rep edits one lead a second after our write, and that webhook is lost.
    d.unbind_events();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    d.sandbox
        .update_lead(leads[7], json!({"POST": "Менеджер"}))
        .unwrap();
    d.sandbox.reset_counters();
    let queued = sweep_once(d.pipeline(), portal, Utc::now()).await.unwrap();
    assert_eq!(queued, 1, "only the lead changed after our write");
    d.settle().await;
    assert_ne!(
        d.crm_score(leads[7]),
        Some(60),
        "the rep's change was scored"
    );
    assert_eq!(d.crm_score(leads[8]), Some(60));
    let c = d.sandbox.counters();
    // The sweep's list, one fetch batch, one write batch.
    assert!(c.requests <= 3, "{c:?}");
    assert_eq!(c.by_method.get("crm.lead.update"), Some(&1), "{c:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amocrm_sweep_refetches_only_what_someone_else_changed_after_our_write() {
    let mut d = AmoDaemon::start(true).await;
    let portal = leadscore::demo_amocrm::PORTAL;
    assert_eq!(
        sweep_once(d.pipeline(), portal, Utc::now()).await.unwrap(),
        0
    );
    let leads: Vec<u64> = (0..BURST).map(|n| d.add_strong_lead(n)).collect();
    d.settle().await;
    assert!(leads.iter().all(|l| d.score(*l) == Some(60)));
    let stamped = d
        .pipeline()
        .store
        .written_all(portal)
        .unwrap()
        .iter()
        .filter(|(_, w)| w.crm_stamp.is_some())
        .count();
    assert_eq!(stamped, BURST, "every PATCH answer gave updated_at");

    d.unbind();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let rep = d.sandbox.users()[1].id;
    let change = LeadChange {
        fields: vec![(d.fit.employees, Some(FieldValue::Number(3.0)))],
        ..LeadChange::default()
    };
    assert!(d.sandbox.update_lead(leads[7], change, rep).unwrap());
    d.sandbox.reset_calls();
    let queued = sweep_once(d.pipeline(), portal, Utc::now()).await.unwrap();
    assert_eq!(queued, 1, "only the lead changed after our write");
    d.settle().await;
    assert_ne!(d.score(leads[7]), Some(60), "the rep's change was scored");
    let calls = d.sandbox.calls();
    let api: Vec<_> = calls
        .iter()
        .filter(|c| c.path.starts_with("/api/"))
        .collect();
    // The sweep's list; lead, contact and events of one lead; one PATCH.
    assert!(api.len() <= 5, "{api:#?}");
    assert_eq!(d.patches(), 1);
}

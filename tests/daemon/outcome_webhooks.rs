//! Outcome webhooks over real HTTP: a lead moved to amoCRM's won (142) or lost (143)
//! stage sends a status webhook; the daemon reads the lead, sees it closed and records
//! the outcome in the store with the score and tier the lead had then (what it last
//! wrote), its close time and creation time; an open lead has no record.

use leadscore::store::LiveOutcome;
use leadscore_amocrm_sandbox::LeadChange;

use crate::e2e_amocrm::Daemon;

/// The recorded closes of `ids[0]` (must be won) and `ids[1]` (must be lost).
fn won_and_lost(store: &leadscore::store::Store, ids: &[u64]) -> (LiveOutcome, LiveOutcome) {
    let get = |i: usize| {
        store
            .live_outcome("demo", &ids[i].to_string())
            .unwrap()
            .expect("recorded")
    };
    let (won, lost) = (get(0), get(1));
    assert_eq!(won.outcome, leadscore::backtest::Outcome::Won);
    assert_eq!(lost.outcome, leadscore::backtest::Outcome::Lost);
    (won, lost)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lead_moved_to_won_or_lost_is_recorded_with_the_score_it_had() {
    let d = Daemon::start(true).await;
    let ids: Vec<u64> = (0..3).map(|n| d.add_strong_lead(n)).collect();
    d.settle().await;
    let written: Vec<i64> = ids.iter().map(|id| d.score(*id).expect("scored")).collect();
    let store = d.pipeline().store.clone();
    for id in &ids {
        assert_eq!(store.live_outcome("demo", &id.to_string()).unwrap(), None);
    }
    let user = d.sandbox.current_user_id();
    assert!(d
        .sandbox
        .update_lead(ids[0], LeadChange::default().status(142), user)
        .unwrap());
    assert!(d
        .sandbox
        .update_lead(ids[1], LeadChange::default().status(143), user)
        .unwrap());
    d.settle().await;

    let (won, lost) = won_and_lost(&store, &ids);
    for (o, id, score) in [(&won, ids[0], written[0]), (&lost, ids[1], written[1])] {
        let lead = d.sandbox.lead(id).unwrap();
        assert_eq!(i64::from(o.score), score);
        assert_eq!(
            o.tier,
            if score > 70 {
                "hot"
            } else if score > 30 {
                "warm"
            } else {
                "cold"
            }
        );
        assert_eq!(Some(o.closed_at.timestamp()), lead.closed_at);
        assert_eq!(o.created_at.map(|t| t.timestamp()), Some(lead.created_at));
    }
    assert_eq!(
        store.live_outcome("demo", &ids[2].to_string()).unwrap(),
        None
    );
    assert_eq!(store.live_outcomes("demo").unwrap().len(), 2);

    // A duplicate delivery of the same close keeps the first record.
    let recorded_at = won.recorded_at;
    let body = crate::e2e_amocrm::update_hook_body(&d, &ids[..1]);
    assert_eq!(
        d.post(&format!("?secret={}", crate::e2e_amocrm::SECRET), &body)
            .await,
        200
    );
    d.settle().await;
    let again = store
        .live_outcome("demo", &ids[0].to_string())
        .unwrap()
        .unwrap();
    assert_eq!(again.recorded_at, recorded_at);

    // A lead that arrives already won was never scored before its close: no record
    // (scoring it now would count what happened after the close).
    let born_won = d
        .sandbox
        .add_lead(leadscore_amocrm_sandbox::NewLead::named("born won").status(142))
        .unwrap();
    d.settle().await;
    assert!(d.score(born_won).is_some(), "it is still scored");
    assert_eq!(
        store.live_outcome("demo", &born_won.to_string()).unwrap(),
        None
    );

    // The model page shows conversion by the tier the leads had when they closed.
    let addr = d.running.as_ref().unwrap().addr;
    let page = reqwest::get(format!("http://{addr}/dashboard/model"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!page.contains("No outcomes yet"), "{page}");
    let tier = &won.tier;
    assert_eq!(*tier, lost.tier, "both strong leads share a tier");
    // Created and closed within the test: 0.0 days.
    let row = format!("<tr><td>{tier}</td><td>2</td><td>1</td><td>50%</td><td>0.0</td></tr>");
    assert!(page.contains(&row), "{row} in {page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bitrix24_lead_converted_or_junked_is_recorded_with_the_score_it_had() {
    let d = crate::common::Daemon::start(crate::common::Options::default()).await;
    let ids: Vec<u64> = (0..3).map(|n| d.add_strong_lead(n)).collect();
    d.settle().await;
    let written: Vec<i64> = ids
        .iter()
        .map(|id| d.crm_score(*id).expect("scored"))
        .collect();
    // Converted (semantic S): won; junk (F, in the default lost_lead_statuses): lost.
    d.sandbox
        .update_lead(ids[0], serde_json::json!({"STATUS_ID": "CONVERTED"}))
        .unwrap();
    d.sandbox
        .update_lead(ids[1], serde_json::json!({"STATUS_ID": "JUNK"}))
        .unwrap();
    d.settle().await;
    let store = d.store();
    let (won, lost) = won_and_lost(store, &ids);
    assert_eq!(
        (i64::from(won.score), i64::from(lost.score)),
        (written[0], written[1])
    );
    assert!(won.created_at.is_some_and(|c| c <= won.closed_at));
    assert_eq!(
        store.live_outcome("demo", &ids[2].to_string()).unwrap(),
        None
    );
}

/// The probability field: a calibration kept for the portal (what `backtest --portal`
/// stores) makes the daemon write "score ≈ win rate" beside the points.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probability_field_gets_the_score_with_its_calibrated_win_rate() {
    let mut d = crate::common::Daemon::start(crate::common::Options {
        configure: Some(|c| {
            c.portals[0].fields.probability = Some("UF_CRM_LEADSCORE_P".into());
        }),
        ..crate::common::Options::default()
    })
    .await;
    d.sandbox
        .add_userfield(
            serde_json::json!({"FIELD_NAME": "UF_CRM_LEADSCORE_P", "USER_TYPE_ID": "string"}),
        )
        .unwrap();
    // Scores up to 50 won 1 of 3 leads, above 50 every lead: 33% and 100%.
    let c = leadscore::backtest::calibration::Calibration::fit([
        (10, false),
        (50, false),
        (50, true),
        (90, true),
    ]);
    d.store().put_calibration("demo", &c).unwrap();
    let id = d.add_strong_lead(7);
    d.settle().await;
    let score = d.crm_score(id).expect("scored");
    let lead = d.sandbox.get_lead(id).unwrap();
    let want = c.describe(score as i32);
    assert!(want.contains('%'), "{want}");
    assert_eq!(lead["UF_CRM_LEADSCORE_P"], serde_json::json!(want));
    assert_eq!(
        d.store()
            .written("demo", &id.to_string())
            .unwrap()
            .unwrap()
            .extras
            .probability,
        Some(want)
    );

    // A backtest recomputes the calibration while the daemon is stopped: at the next
    // start every stored lead's field is refreshed, with no webhook and no task.
    d.stop().await;
    let newer = leadscore::backtest::calibration::Calibration::fit([
        (10, false),
        (50, false),
        (60, false),
        (90, true),
    ]);
    let fresh = newer.describe(score as i32);
    assert_ne!(
        fresh,
        c.describe(score as i32),
        "the test needs a different text"
    );
    let store = d.stopped_store();
    store.put_calibration("demo", &newer).unwrap();
    store.flush().await.unwrap();
    drop(store);
    d.unbind_events();
    let tasks = d.sandbox.tasks().len();
    d.launch(false).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while d.sandbox.get_lead(id).unwrap()["UF_CRM_LEADSCORE_P"] != serde_json::json!(fresh) {
        assert!(
            std::time::Instant::now() < deadline,
            "the field was not refreshed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(d.sandbox.tasks().len(), tasks, "a refresh makes no task");
}

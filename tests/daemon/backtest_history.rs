//! `leadscore backtest --portal` on amoCRM replays fit fields from the account's change
//! log: a head count raised and an industry cleared on leads, and a job title raised on
//! a main contact, after the leads closed (changed through the sandbox, whose event log
//! records `custom_field_{ID}_value_changed` of the lead or contact) are scored with
//! the values they had, a price raised after the close is read as it was, the report
//! says which fields were replayed, and the second run reads the cache with no request.
//! Both ways of reading the change log are exercised: account-wide (the account's
//! changes fit in fewer pages than the leads take requests by id) and per id (an open
//! lead edited a thousand times makes the account-wide feed the dearer).

use leadscore::backtest::analyze::score_all;
use leadscore::backtest::generate::{generate, Plan};
use leadscore::backtest::{AsOf, ClosedLead, Outcome};
use leadscore_amocrm_sandbox::{FieldValue, LeadChange, NewLead, Sandbox, SandboxOptions};

use crate::backtest_portal::backtest_json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amocrm_fit_fields_are_scored_as_they_were_before_later_changes() {
    // 40 leads and contacts: 8 requests by id; the account's few changes: one page.
    replayed_pull(0, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amocrm_fit_fields_are_read_per_id_when_the_account_log_is_longer() {
    // 1,000 changes of a mapped field on an open lead: the feed's 10 pages cost more
    // than the 8 requests by id.
    replayed_pull(1_000, false).await;
}

/// The scenario of the module doc over 40 leads, with `noise` changes of a mapped field
/// on an open lead; `account_wide`: the change log must be read without
/// `filter[entity_id]`.
async fn replayed_pull(noise: usize, account_wide: bool) {
    let sb = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let text = leadscore::crm::amocrm::backtest_config_for(&sb, &data).unwrap();
    let config = dir.path().join("leadscore.toml");
    std::fs::write(&config, text).unwrap();
    let loaded = leadscore::config::load_with(&config, leadscore::config::Secrets::Require)
        .unwrap_or_else(|e| panic!("{e}"));
    let fields = &loaded.portals[0].fields;
    let history = generate(&Plan {
        leads: 40,
        seed: 3,
        ..Plan::default()
    });
    let ids = leadscore::crm::amocrm::seed_history(&sb, fields, &history).unwrap();
    // A won lead with fewer than 500 employees grows to 5,000 today (a rule gives
    // points from 500 up); another lead's industry is cleared today; a third lead's
    // contact, a manager, is the CEO today.
    let grown = history
        .iter()
        .position(|c| c.outcome == Outcome::Won && c.lead.employees.is_some_and(|e| e < 500.0))
        .expect("a small won lead");
    let cleared = history
        .iter()
        .position(|c| c.lead.industry.is_some() && c.lead.id != history[grown].lead.id)
        .expect("a lead with an industry");
    let promoted = history
        .iter()
        .position(|c| {
            c.lead
                .position
                .as_deref()
                .is_some_and(|p| p.starts_with("Менеджер"))
                && ![grown, cleared]
                    .iter()
                    .any(|i| history[*i].lead.id == c.lead.id)
        })
        .expect("a manager");
    let field = |name: &str| fields.map[name].parse::<u64>().unwrap();
    let user = sb.current_user_id();
    let change = |f: u64, v: Option<FieldValue>| LeadChange {
        fields: vec![(f, v)],
        ..LeadChange::default()
    };
    let big = Some(FieldValue::Number(5000.0));
    let old_price = history[grown].amount.expect("a won lead's amount");
    let raised = LeadChange {
        price: Some(old_price as i64 * 10),
        ..change(field("employees"), big)
    };
    assert!(sb.update_lead(ids[grown], raised, user).unwrap());
    assert!(sb
        .update_lead(ids[cleared], change(field("industry"), None), user)
        .unwrap());
    // A manager then, the CEO today (the job title is the main contact's POSITION).
    let open = sb.add_lead(NewLead::named("edited all day")).unwrap();
    for n in 0..noise {
        let v = Some(FieldValue::Number(n as f64 + 1.0));
        assert!(sb
            .update_lead(open, change(field("employees"), v), user)
            .unwrap());
    }
    let contact = sb.lead(ids[promoted]).unwrap().contacts[0].id;
    assert!(sb
        .set_contact_field(contact, "POSITION", &["CEO"], user)
        .unwrap());

    let args = vec![
        "--config".to_string(),
        config.display().to_string(),
        "--portal".into(),
        "demo".into(),
    ];
    sb.reset_calls();
    let (report, stderr) = backtest_json(args.clone()).await;
    assert!(sb.calls().iter().all(|r| r.status < 300), "{stderr}");
    let decoded = |q: &str| {
        [("%5B", "["), ("%5D", "]"), ("%5F", "_"), ("%2C", ",")]
            .iter()
            .fold(q.to_string(), |q, (a, b)| q.replace(a, b))
    };
    let log_reads: Vec<String> = sb
        .calls()
        .iter()
        .filter(|r| r.path == "/api/v4/events")
        .map(|r| decoded(&r.query))
        .filter(|q| q.contains("sale_field_changed"))
        .collect();
    assert!(!log_reads.is_empty());
    for q in &log_reads {
        // Only the mapped fields' and the price's types: never "any field change".
        assert!(!q.contains("custom_field_value_changed"), "{q}");
        assert!(q.contains(&format!(
            "custom_field_{}_value_changed",
            field("employees")
        )));
    }
    // Account-wide: the probe of the feed's page 9 (none) and the feed. Per id: the
    // probe (a page 9 there is) and the reads by id.
    let by_id = log_reads.iter().filter(|q| q.contains("entity_id")).count();
    let probes = log_reads.iter().filter(|q| q.contains("&page=9&")).count();
    assert_eq!(probes, 1, "{log_reads:#?}");
    assert_eq!(by_id == 0, account_wide, "{log_reads:#?}");
    assert_eq!(
        by_id + 1 == log_reads.len(),
        !account_wide,
        "{log_reads:#?}"
    );
    assert_eq!(
        report["fit"]["replayed"],
        serde_json::json!([
            "amount",
            "email",
            "employees",
            "industry",
            "phone",
            "position",
            "region",
            "revenue"
        ]),
        "{stderr}"
    );
    assert_eq!(report["fit"]["today"], serde_json::json!(["company"]));
    assert_eq!(report["fit"]["changed_leads"], 3);
    let note = report["notes"][0].as_str().unwrap();
    assert!(
        note.contains("replayed from the CRM's change log"),
        "{note}"
    );

    let store = leadscore::store::Store::open(&data).unwrap();
    let (_, pulled) = store.outcomes("demo").unwrap().expect("a cached pull");
    drop(store);
    let find = |i: usize| -> &ClosedLead {
        pulled
            .iter()
            .find(|c| c.lead.id == ids[i].to_string())
            .unwrap()
    };
    let (g, c, p) = (find(grown), find(cleared), find(promoted));
    let at = |c: &ClosedLead| AsOf::default().instant(c).0;
    assert_eq!(g.lead.employees, Some(5000.0), "today's value is kept");
    assert_eq!(g.lead_at(at(g)).employees, history[grown].lead.employees);
    assert_eq!(
        g.lead.amount,
        Some(old_price * 10.0),
        "today's price is kept"
    );
    assert_eq!(g.lead_at(at(g)).amount, Some(old_price));
    assert_eq!(
        g.amount,
        Some(old_price),
        "the deal's size as it was at the close"
    );
    assert_eq!(c.lead.industry, None);
    assert_eq!(c.lead_at(at(c)).industry, history[cleared].lead.industry);
    assert_eq!(p.lead.position.as_deref(), Some("CEO"));
    assert_eq!(p.lead_at(at(p)).position, history[promoted].lead.position);
    let model = leadscore::scoring::Model::compile(&loaded.scoring).unwrap();
    // Scored as of the close: the old head count and title, not today's.
    let scores = |c: &ClosedLead| {
        let mut today = c.clone();
        today.fit_history = None;
        let replayed = score_all(&model, std::slice::from_ref(c), AsOf::default())[0].total;
        (
            replayed,
            score_all(&model, &[today], AsOf::default())[0].total,
        )
    };
    let (replayed, naive) = scores(g);
    assert!(
        replayed < naive,
        "fewer employees then: {replayed} vs {naive}"
    );
    let (replayed, naive) = scores(p);
    assert!(
        replayed < naive,
        "a manager then, a CEO today: {replayed} vs {naive}"
    );

    sb.reset_calls();
    let (again, stderr) = backtest_json(args).await;
    assert_eq!(sb.calls().len(), 0, "{stderr}");
    assert!(stderr.contains("from the cache"), "{stderr}");
    assert_eq!(again["fit"], report["fit"]);
    assert_eq!(again["auc"], report["auc"]);
}

//! Bitrix24 deals and the simple CRM mode (issue 18, item 1), end to end over HTTP: the
//! real daemon and `setup` against the sandbox portal, sled in a temp dir. A portal in
//! the simple mode (no leads) with `entities = ["deal"]` gets its deal fields from
//! `setup`, scores deals from ONCRMDEALADD and deal-owned activities, writes score, tier
//! and breakdown to the deal, creates exactly one call-now task bound `D_<id>`, and
//! its own ONCRMDEALUPDATE writes nothing more; the sweep lists deals and skips our own
//! writes. A classic portal scoring leads and deals keeps both apart.

use std::time::Duration;

use chrono::Utc;
use leadscore::app::{self, sweep_once, Running};
use leadscore::config::{self, Config, DealFieldsSection};
use leadscore::crm::FieldSetup;
use leadscore::demo;
use leadscore_bitrix24_sandbox::{Sandbox, SandboxHandle, SandboxOptions};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "t0k3n-for-deal-tests-0123456789ab";

/// Deals in the burst the request count is measured on.
const BURST: usize = 20;

/// A daemon on a sandbox portal set up the way `leadscore setup` does.
struct DealPortal {
    sandbox: SandboxHandle,
    _dir: tempfile::TempDir,
    running: Running,
    shutdown: CancellationToken,
    setup: FieldSetup,
    bindings: Vec<u32>,
}

impl DealPortal {
    /// `simple`: the portal is in the simple CRM mode; `entities`: the config's line.
    async fn start(simple: bool, entities: &str) -> DealPortal {
        DealPortal::start_with(simple, entities, |_| {}).await
    }

    /// [`DealPortal::start`] with a last word on the config (after `setup`).
    async fn start_with(simple: bool, entities: &str, configure: fn(&mut Config)) -> DealPortal {
        let sandbox = Sandbox::start(SandboxOptions::default()).await.unwrap();
        sandbox.set_simple_mode(simple);
        let dir = tempfile::tempdir().unwrap();
        let text = demo::demo_config_text(dir.path(), sandbox.webhook_url().expose_secret(), TOKEN)
            .unwrap()
            .replacen(
                "crm = \"bitrix24\"\n",
                &format!("crm = \"bitrix24\"\nentities = {entities}\n"),
                1,
            );
        let path = dir.path().join("deals.toml");
        std::fs::write(&path, text).unwrap();
        let mut config: Config = config::load(&path).unwrap();
        let store = app::open_store(&config).unwrap();
        let portal = config.portals[0].clone();
        let tiers = app::tier_pairs(&config);
        let setup = app::build_admin(&portal, &store)
            .unwrap()
            .setup_fields(&portal.fields, &tiers)
            .await
            .unwrap();
        let p = &mut config.portals[0];
        p.fields.tier_values = setup.tier_values.clone();
        if let Some(deal) = &setup.deal {
            p.fields.deal = DealFieldsSection {
                score: Some(deal.score_field.clone()),
                tier: Some(deal.tier_field.clone()),
                tier_values: deal.tier_values.clone(),
                breakdown: Some(deal.breakdown_field.clone()),
                ..Default::default()
            };
        }
        // 40 points of fit call nobody; a demo request on top (60) does.
        p.threshold = 50;
        p.rearm_below = 45;
        config.server.coalesce_ms = 150;
        config.server.retry_delays_secs = vec![1, 1, 2, 2, 3, 5];
        config.server.sweep_interval_secs = 3600;
        configure(&mut config);
        let shutdown = CancellationToken::new();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let running = app::start_with_store(config, store, listener, shutdown.clone())
            .await
            .unwrap();
        let hook = format!("http://{}/webhooks/bitrix24/{}", running.addr, demo::PORTAL);
        let bindings = [
            "ONCRMLEADADD",
            "ONCRMLEADUPDATE",
            "ONCRMDEALADD",
            "ONCRMDEALUPDATE",
            "ONCRMACTIVITYADD",
            "ONCRMACTIVITYUPDATE",
        ]
        .iter()
        .map(|e| sandbox.bind_event(e, &hook, SecretString::from(TOKEN.to_string())))
        .collect();
        DealPortal {
            sandbox,
            _dir: dir,
            running,
            shutdown,
            setup,
            bindings,
        }
    }

    async fn settle(&self) {
        demo::settle(
            &self.sandbox,
            &self.running.pipeline,
            Duration::from_secs(120),
        )
        .await
        .expect("settles");
    }

    /// A deal with 40 points of fit in the seed model (industry, revenue, headcount,
    /// region; a deal has no position or e-mail of its own).
    fn add_fit_deal(&self, n: usize) -> u64 {
        self.sandbox
            .add_deal(json!({
                "TITLE": format!("Поставка {n}"),
                "STAGE_ID": "PREPARATION",
                "CATEGORY_ID": "0",
                "OPPORTUNITY": "250000.00",
                "ASSIGNED_BY_ID": "3",
                "UF_CRM_INDUSTRY": "Производство",
                "UF_CRM_REVENUE": "800000000",
                "UF_CRM_EMPLOYEES": "240",
                "UF_CRM_REGION": "Москва",
            }))
            .unwrap()
    }

    /// A demo-request activity owned by a deal (+20).
    fn add_deal_demo_request(&self, deal: u64) -> u64 {
        self.sandbox
            .add_activity(json!({
                "OWNER_TYPE_ID": 2,
                "OWNER_ID": deal,
                "TYPE_ID": 6,
                "PROVIDER_ID": "REST_APP",
                "SUBJECT": "[demo] Заявка на демо",
                "COMPLETED": "Y",
            }))
            .unwrap()
    }

    fn deal(&self, id: u64) -> Value {
        self.sandbox.get_deal(id).expect("deal exists")
    }

    fn deal_score(&self, id: u64) -> Option<i64> {
        let v = &self.deal(id)["UF_CRM_LEADSCORE"];
        v.as_i64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
    }

    /// Tasks bound to `tag` (`D_5`, `L_5`).
    fn tasks_bound(&self, tag: &str) -> usize {
        self.sandbox
            .tasks()
            .iter()
            .filter(|t| t.crm_bindings.iter().any(|b| b == tag))
            .count()
    }
}

impl Drop for DealPortal {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simple_mode_portal_is_scored_on_its_deals() {
    let mut d = DealPortal::start(true, r#"["deal"]"#).await;
    let portal = demo::PORTAL;
    // setup asked the mode, said so, and created the fields on deals only.
    assert!(
        d.setup.notes.iter().any(|n| n.contains("simple CRM mode")),
        "{:?}",
        d.setup.notes
    );
    assert!(
        d.setup.score_field.is_empty(),
        "no lead fields in simple mode"
    );
    let deal_setup = d.setup.deal.clone().expect("deal fields set up");
    assert_eq!(deal_setup.tier_values.len(), 3);
    let deal_fields: Vec<String> = d
        .sandbox
        .deal_userfields()
        .iter()
        .filter_map(|f| f["FIELD_NAME"].as_str().map(str::to_string))
        .collect();
    for f in [
        "UF_CRM_LEADSCORE",
        "UF_CRM_LEADSCORE_TIER",
        "UF_CRM_LEADSCORE_WHY",
    ] {
        assert!(deal_fields.iter().any(|n| n == f), "{deal_fields:?}");
    }
    assert!(d.sandbox.userfields().is_empty(), "no lead user fields");
    assert_eq!(
        sweep_once(&d.running.pipeline, portal, Utc::now())
            .await
            .unwrap(),
        0,
        "the first sweep only sets its cursor"
    );

    // A deal arrives (ONCRMDEALADD): scored and written to the deal's fields.
    let deal = d.add_fit_deal(0);
    d.settle().await;
    assert_eq!(d.deal_score(deal), Some(40));
    let card = d.deal(deal);
    let warm_or_cold = card["UF_CRM_LEADSCORE_TIER"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        deal_setup.tier_values.values().any(|v| *v == warm_or_cold),
        "the tier is one of the deal field's items: {card}"
    );
    assert!(card["UF_CRM_LEADSCORE_WHY"]
        .as_str()
        .is_some_and(|s| !s.is_empty()));
    assert_eq!(d.tasks_bound(&format!("D_{deal}")), 0);

    // A demo request on the deal (ONCRMACTIVITYADD, owner type 2) makes it hot: one
    // call-now task bound to the deal.
    d.add_deal_demo_request(deal);
    d.settle().await;
    assert_eq!(d.deal_score(deal), Some(60));
    assert_eq!(d.tasks_bound(&format!("D_{deal}")), 1);
    let task = d.sandbox.tasks().into_iter().next().unwrap();
    assert_eq!(task.responsible_id, 3);
    // Two real changes, two writes: our own ONCRMDEALUPDATE echoes (delivered to the
    // daemon) wrote nothing more, and no lead method was ever called.
    let echoes = d
        .sandbox
        .delivered()
        .iter()
        .filter(|x| x.event == "ONCRMDEALUPDATE")
        .count();
    assert!(echoes >= 2, "our writes fired ONCRMDEALUPDATE ({echoes})");
    assert_eq!(d.sandbox.count_method("crm.deal.update"), 2);
    assert_eq!(d.sandbox.count_method("crm.lead.list"), 0);
    assert_eq!(d.sandbox.count_method("crm.lead.update"), 0);
    let quiet = d.sandbox.counters().requests;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    d.settle().await;
    assert_eq!(d.sandbox.counters().requests, quiet, "no write loop");

    // The sweep lists deals: our own writes are skipped, a rep's later change is not.
    assert_eq!(
        sweep_once(&d.running.pipeline, portal, Utc::now())
            .await
            .unwrap(),
        0
    );
    for id in d.bindings.drain(..) {
        d.sandbox.unbind_event(id);
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    d.sandbox
        .update_deal(deal, json!({"STAGE_ID": "EXECUTING"}))
        .unwrap();
    assert_eq!(
        sweep_once(&d.running.pipeline, portal, Utc::now())
            .await
            .unwrap(),
        1
    );
    d.settle().await;
    assert_eq!(d.tasks_bound(&format!("D_{deal}")), 1, "still one task");
}

/// Requests per deal of a burst (each deal added, then a demo request on it), by the
/// sandbox's counters; printed for BENCHMARKS.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_deals_costs_few_requests_per_deal() {
    let d = DealPortal::start(true, r#"["deal"]"#).await;
    d.sandbox.reset_counters();
    let deals: Vec<u64> = (0..BURST).map(|n| d.add_fit_deal(n)).collect();
    d.settle().await;
    let after_add = d.sandbox.counters();
    for deal in &deals {
        d.add_deal_demo_request(*deal);
    }
    d.settle().await;
    let c = d.sandbox.counters();
    for deal in &deals {
        assert_eq!(d.deal_score(*deal), Some(60));
        assert_eq!(d.tasks_bound(&format!("D_{deal}")), 1);
    }
    // The weighted pipeline value in `status`, from the stored deals: 20 deals of
    // 250,000 in PREPARATION (×0.1) by rep 3 in pipeline 0.
    let stages: leadscore::weighted::StagesSection =
        toml::from_str("[pipelines.\"0\"]\nNEW = 0.0\nPREPARATION = 0.1\nWON = 1.0\n").unwrap();
    let spec = leadscore::status::PortalSpec {
        id: demo::PORTAL.into(),
        crm: "bitrix24".into(),
        stages: leadscore::weighted::StageCoefficients::check(&stages).unwrap(),
        capacity: None,
    };
    let report =
        leadscore::status::collect(&d.running.pipeline.store, &[spec], &[], None, Utc::now())
            .unwrap();
    let value = report.portals[0].pipeline_value.clone().expect("sums");
    let want = leadscore::weighted::Sum {
        deals: BURST,
        plain: 5_000_000.0,
        weighted: 500_000.0,
    };
    assert_eq!(value.per_rep["3"], want);
    assert_eq!(value.per_pipeline["0"], want);
    let text = leadscore::status::render(&report);
    assert!(
        text.contains("rep 3: 20 open deals, sum 5000000.00, weighted 500000.00"),
        "{text}"
    );
    let per_deal = c.requests as f64 / BURST as f64;
    eprintln!(
        "deals burst: {BURST} deals, {} requests after the adds, {} in all = {per_deal:.2} per deal; by method {:?}",
        after_add.requests, c.requests, c.by_method
    );
    // Batching: fewer requests than events (two per deal, plus our writes' echoes).
    assert!(per_deal < 2.0, "{per_deal} requests per deal ({c:?})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_classic_portal_scores_leads_and_deals_apart() {
    let d = DealPortal::start(false, r#"["lead", "deal"]"#).await;
    assert!(d.setup.notes.is_empty(), "{:?}", d.setup.notes);
    assert!(!d.setup.score_field.is_empty() && d.setup.deal.is_some());
    let lead = d
        .sandbox
        .add_lead(json!({
            "TITLE": "Lead 1",
            "POST": "Генеральный директор",
            "EMAIL": [{"VALUE": "ceo@factory1.ru", "VALUE_TYPE": "WORK"}],
            "ASSIGNED_BY_ID": "3",
            "UF_CRM_INDUSTRY": "Производство",
            "UF_CRM_REVENUE": "800000000",
            "UF_CRM_EMPLOYEES": "240",
            "UF_CRM_REGION": "Москва",
        }))
        .unwrap();
    // A deal with the same numeric id as the lead: `D_1` and `1` never mix.
    let deal = d.add_fit_deal(1);
    assert_eq!(lead, deal);
    d.settle().await;
    let lead_score = d.sandbox.get_lead(lead).unwrap()["UF_CRM_LEADSCORE"].clone();
    assert_eq!(lead_score, json!("60"));
    assert_eq!(d.deal_score(deal), Some(40));
    // The lead is hot (60 > 50): its task is bound to the lead, none to the deal.
    assert_eq!(d.tasks_bound(&format!("L_{lead}")), 1);
    assert_eq!(d.tasks_bound(&format!("D_{deal}")), 0);
    d.add_deal_demo_request(deal);
    d.settle().await;
    assert_eq!(d.deal_score(deal), Some(60));
    assert_eq!(d.tasks_bound(&format!("D_{deal}")), 1);
    assert_eq!(d.tasks_bound(&format!("L_{lead}")), 1);
    let written = d.running.pipeline.store.written_all(demo::PORTAL).unwrap();
    let ids: Vec<&String> = written.iter().map(|(id, _)| id).collect();
    assert!(
        ids.contains(&&lead.to_string()) && ids.contains(&&format!("D_{deal}")),
        "{ids:?}"
    );
}

/// The weighted value on the deal card: amount × the stage's coefficient, written with
/// the score and rewritten when a rep moves the deal to another stage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_weighted_value_is_written_and_follows_the_stage() {
    let p = DealPortal::start_with(true, "[\"deal\"]", |c| {
        let stages: leadscore::weighted::StagesSection = toml::from_str(
            "[pipelines.\"0\"]\nNEW = 0.0\nPREPARATION = 0.1\nEXECUTING = 0.5\nWON = 1.0\n",
        )
        .unwrap();
        let portal = &mut c.portals[0];
        portal.stages = leadscore::weighted::StageCoefficients::check(&stages).unwrap();
        portal.fields.deal.expected_value = Some("UF_CRM_LEADSCORE_EV".into());
    })
    .await;
    p.sandbox
        .add_deal_userfield(json!({"FIELD_NAME": "UF_CRM_LEADSCORE_EV", "USER_TYPE_ID": "double"}))
        .unwrap();
    let ev = |id: u64| {
        let v = &p.deal(id)["UF_CRM_LEADSCORE_EV"];
        v.as_f64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
    };
    // 250,000 in PREPARATION: × 0.1.
    let deal = p.add_fit_deal(1);
    p.settle().await;
    assert_eq!(p.deal_score(deal), Some(40));
    assert_eq!(ev(deal), Some(25_000.0));
    // The rep moves it on: × 0.5, the score unchanged, the value rewritten.
    let updates = p.sandbox.count_method("crm.deal.update");
    p.sandbox
        .update_deal(deal, json!({"STAGE_ID": "EXECUTING"}))
        .unwrap();
    p.settle().await;
    assert_eq!(ev(deal), Some(125_000.0));
    assert_eq!(
        p.sandbox.count_method("crm.deal.update"),
        updates + 1,
        "one write for the new value, no echo loop"
    );
}

/// The demo's deal funnel: its sums are the hand-computed ones (open deals only; won
/// is done, not pipeline), and each card got its weighted value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_funnel_sums_match_the_hand_computed_values() {
    let dir = tempfile::tempdir().unwrap();
    let mut out = Vec::new();
    leadscore::demo_deals::run(dir.path(), &mut out)
        .await
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    // 0.1 × (800,000 + 300,000) + 0.4 × 2,500,000 + 0.5 × (1,000,000 + 600,000)
    // + 0.8 × 450,000 = 2,270,000 of 6,850,000 open.
    assert!(
        text.contains("pipeline 0: 7 open deals, sum 6850000.00, weighted 2270000.00"),
        "{text}"
    );
    assert!(
        text.contains("rep 1: 3 open deals, sum 3000000.00, weighted 580000.00"),
        "{text}"
    );
    assert!(
        text.contains("rep 3: 4 open deals, sum 3850000.00, weighted 1690000.00"),
        "{text}"
    );
    let weighted: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("Склад для") || l.contains("(оплачено)"))
        .collect();
    assert!(weighted[0].contains(" 2500000     1000000 "), "{text}");
    assert!(weighted[1].contains(" 700000      700000 "), "{text}");
    assert!(text.contains("no crm.lead.* call (0)"), "{text}");
}

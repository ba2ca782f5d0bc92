//! Shadow and per-portal models (issue 16, item 5) over HTTP against the Bitrix24
//! sandbox: the ledger carries the live and the shadow score, the CRM gets only the
//! live one, no task ever comes from the shadow; a portal's own model is its live
//! model; a SIGHUP-style reload swaps the shadow and refuses a broken one with
//! file:line errors.

use crate::common::{Daemon, Options};
use leadscore::config::Config;
use leadscore::demo;

/// The shipped model with the fit group capped at `fit` (a strong lead scores 60 with
/// the shipped cap of 60) and call-now above `call_now`, as the text of a model file
/// (only `[scoring]`).
fn model_text(fit: i32, call_now: i32) -> String {
    let mut doc: toml::Table = toml::from_str(&demo::example_scoring_toml().unwrap()).unwrap();
    let scoring = doc["scoring"].as_table_mut().unwrap();
    let groups = scoring["groups"].as_array_mut().unwrap();
    let group = groups.iter_mut().find(|g| g["id"].as_str() == Some("fit"));
    group
        .unwrap()
        .as_table_mut()
        .unwrap()
        .insert("max".into(), fit.into());
    let triggers = scoring["triggers"].as_table_mut().unwrap();
    triggers.insert("call_now_above".into(), call_now.into());
    triggers.insert("rearm_below".into(), (call_now - 10).into());
    toml::to_string(&doc).unwrap()
}

/// Write `model` beside the config as `name` and load the config with `edit` applied
/// to its text.
fn load_with(d: &Daemon, name: &str, model: &str, edit: impl Fn(&str) -> String) -> Config {
    std::fs::write(d.dir.path().join(name), model).unwrap();
    let path = d.config_path();
    let text = edit(&std::fs::read_to_string(&path).unwrap());
    let edited = d.dir.path().join("edited.toml");
    std::fs::write(&edited, text).unwrap();
    leadscore::config::load(&edited).unwrap_or_else(|e| panic!("{e}"))
}

/// `[server] shadow_model = "<name>"` added to the config text.
fn shadow_key(name: &str) -> impl Fn(&str) -> String + '_ {
    move |t: &str| {
        t.replacen(
            "[server]\n",
            &format!("[server]\nshadow_model = \"{name}\"\n"),
            1,
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shadow_is_recorded_never_written_and_never_calls() {
    let d = Daemon::start(Options::default()).await;
    // The shadow: fit capped at 50 (a strong lead scores 50) and call-now above 40.
    let config = load_with(
        &d,
        "shadow.toml",
        &model_text(50, 40),
        shadow_key("shadow.toml"),
    );
    assert!(config.shadow.is_some());
    let report = d.pipeline().reload(&config).unwrap();
    assert!(
        report.applied.iter().any(|a| a.contains("shadow")),
        "{report:?}"
    );

    let lead = d.add_strong_lead(1);
    d.settle().await;
    assert_eq!(d.crm_score(lead), Some(60), "the CRM holds the live score");
    assert_eq!(d.tasks_for(lead), 0, "the shadow's call-now is not a task");
    let ledger = d.store().ledger(demo::PORTAL, &lead.to_string()).unwrap();
    let last = ledger.last().expect("a ledger entry");
    assert_eq!((last.score, last.tier.as_str()), (60, "warm"));
    let shadow = last.shadow.as_ref().expect("the shadow's verdict is kept");
    assert_eq!(
        (shadow.score, shadow.tier.as_str(), shadow.call_now),
        (50, "warm", true)
    );

    // A demo request: live crosses 70 (one task), the shadow scores 70.
    d.add_demo_request(lead);
    d.settle().await;
    assert_eq!(d.crm_score(lead), Some(80));
    assert_eq!(d.tasks_for(lead), 1, "only the live crossing made a task");
    let ledger = d.store().ledger(demo::PORTAL, &lead.to_string()).unwrap();
    let shadow = ledger.last().unwrap().shadow.clone().unwrap();
    assert_eq!((shadow.score, shadow.tier.as_str()), (70, "warm"));

    // The model page (loopback, no token): agreement, migration, call-now counts and
    // the disagreeing lead by name with a link to its card.
    let url = format!("http://{}/dashboard/model", d.addr());
    let html = reqwest::get(&url).await.unwrap().text().await.unwrap();
    assert!(html.contains("Same tier: 0 of 1 leads (0%)"), "{html}");
    assert!(
        html.contains("Call-now tasks: live 1, shadow would have sent 1"),
        "{html}"
    );
    let card = format!("/crm/lead/details/{lead}/\">");
    assert!(html.contains(&card), "a link to the lead's card: {html}");
    let name = d
        .store()
        .snapshot(demo::PORTAL, &lead.to_string())
        .unwrap()
        .unwrap()
        .lead
        .name;
    assert!(
        html.contains(&format!("{card}{}</a>", name.expect("a name"))),
        "{html}"
    );
    assert!(html.contains("No outcomes yet."), "{html}");

    // A broken shadow file: the reload is refused with the model file's line.
    std::fs::write(d.dir.path().join("bad.toml"), "[scoring]\nmin = \"zero\"\n").unwrap();
    let path = d.config_path();
    let text = shadow_key("bad.toml")(&std::fs::read_to_string(&path).unwrap());
    let bad = d.dir.path().join("bad-config.toml");
    std::fs::write(&bad, text).unwrap();
    let err = d
        .pipeline()
        .reload_file(&bad, &d.config.server)
        .expect_err("refused")
        .to_string();
    assert!(err.contains("bad.toml:2:"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_portal_with_its_own_model_is_scored_and_written_with_it() {
    let d = Daemon::start(Options::default()).await;
    let config = load_with(&d, "portal.toml", &model_text(55, 50), |t| {
        let at = t.find("[[portal]]\n").expect("a portal") + "[[portal]]\n".len();
        format!("{}model = \"portal.toml\"\n{}", &t[..at], &t[at..])
    });
    assert!(config.portals[0].model.is_some());
    d.pipeline().reload(&config).unwrap();
    let lead = d.add_strong_lead(2);
    d.settle().await;
    assert_eq!(
        d.crm_score(lead),
        Some(55),
        "the portal's own model is its live model"
    );
    assert_eq!(d.tasks_for(lead), 1, "with its own threshold (above 50)");
    let ledger = d.store().ledger(demo::PORTAL, &lead.to_string()).unwrap();
    assert!(
        ledger.last().unwrap().shadow.is_none(),
        "no shadow configured"
    );
}

//! The Bitrix24 adapter against the sandbox portal over real HTTP on 127.0.0.1.

use chrono::Utc;
use leadscore_bitrix24::types::value_text;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use super::*;
use super::settings::{Auth as PortalAuth, Settings};
use crate::config::{RateLimitSection, TaskKind, TaskSection};
use crate::crm::{ActivityRead, FetchBatch, FetchRequest};
use crate::crm::vault::vault_key;
use crate::lead::ActivityKind;
use leadscore_bitrix24_sandbox::{RateLimit, Sandbox, SandboxHandle, SandboxOptions};

fn portal_for(sb: &SandboxHandle, kind: TaskKind) -> Portal {
    let mut fields = FieldsSection::default();
    fields.map.insert("revenue".into(), "UF_CRM_REVENUE".into());
    Portal {
        id: "sbx".into(),
        crm: NAME,
        settings: Settings::with_auth(PortalAuth::Webhook {
            url: sb.webhook_url(),
        }),
        rate_limit: RateLimitSection {
            per_second: 20.0,
            burst: 20,
            operating_limit_secs: None,
            operating_window_secs: None,
        },
        fields,
        task: TaskSection {
            kind,
            ..TaskSection::default()
        },
        threshold: 70,
        rearm_below: 60,
        model: None,
        tracking: None,
        reminder: None,
        stages: Default::default(),
    }
}

async fn start() -> SandboxHandle {
    Sandbox::start(SandboxOptions {
        rate_limit: Some(RateLimit {
            burst: 20.0,
            drain_per_sec: 20.0,
        }),
        ..SandboxOptions::default()
    })
    .await
    .unwrap()
}

fn tiers() -> Vec<(String, String)> {
    [("cold", "Холодный"), ("warm", "Тёплый"), ("hot", "Горячий")]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// A CRM whose config holds what `setup` printed.
async fn configured(sb: &SandboxHandle, kind: TaskKind) -> (Bitrix24Crm, Portal) {
    let mut portal = portal_for(sb, kind);
    let (_dir, store) = test_store();
    let bare = Bitrix24Crm::new(&portal, store).unwrap();
    let setup = bare.setup_fields(&portal.fields, &tiers()).await.unwrap();
    portal.fields.score = Some(setup.score_field);
    portal.fields.tier = Some(setup.tier_field);
    portal.fields.breakdown = Some(setup.breakdown_field);
    portal.fields.tier_values = setup.tier_values;
    (bare, portal)
}

/// The token set the vault holds for the `sbx` portal.
fn stored_tokens(store: &Store) -> leadscore_bitrix24::client::OAuthTokens {
    let raw = store.meta_get(&vault_key(NAME, "sbx")).unwrap().unwrap();
    let doc: serde_json::Value = serde_json::from_str(&raw).unwrap();
    tokens_from_json(&doc["pair"]).unwrap()
}

/// A store in a temp dir; keep the `TempDir` alive as long as the store.
fn test_store() -> (tempfile::TempDir, Arc<Store>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    (dir, Arc::new(store))
}

#[tokio::test]
async fn setup_is_idempotent_and_returns_enum_ids() {
    let sb = start().await;
    let (_dir, store) = test_store();
    let portal = portal_for(&sb, TaskKind::Task);
    let crm = Bitrix24Crm::new(&portal, store).unwrap();
    let first = crm.setup_fields(&portal.fields, &tiers()).await.unwrap();
    assert_eq!(first.created.len(), 3);
    assert_eq!(first.score_field, DEFAULT_SCORE_FIELD);
    assert_eq!(first.tier_values.len(), 3);
    let second = crm.setup_fields(&portal.fields, &tiers()).await.unwrap();
    assert!(second.created.is_empty());
    assert_eq!(second.tier_values, first.tier_values);
    assert_eq!(sb.userfields().len(), 3);

    // Optional fields the config names are created with their types, once.
    let mut fields = portal.fields.clone();
    fields.expected_value = Some("UF_CRM_LEADSCORE_EV".into());
    fields.qualification = Some("UF_CRM_LEADSCORE_QUAL".into());
    let third = crm.setup_fields(&fields, &tiers()).await.unwrap();
    assert_eq!(third.created, ["UF_CRM_LEADSCORE_EV", "UF_CRM_LEADSCORE_QUAL"]);
    let types: Vec<(String, String)> = sb
        .userfields()
        .iter()
        .map(|f| (f["FIELD_NAME"].as_str().unwrap().to_string(), f["USER_TYPE_ID"].as_str().unwrap().to_string()))
        .filter(|(n, _)| n.ends_with("_EV") || n.ends_with("_QUAL"))
        .collect();
    assert_eq!(
        types,
        [
            ("UF_CRM_LEADSCORE_EV".to_string(), "double".to_string()),
            ("UF_CRM_LEADSCORE_QUAL".to_string(), "string".to_string())
        ]
    );
    assert!(crm.setup_fields(&fields, &tiers()).await.unwrap().created.is_empty());
    sb.shutdown().await;
}

/// A 504 after the portal made a field (its nginx gave up waiting): one setup call
/// fails, and setup run as `leadscore setup` runs it (retried) lists the fields again,
/// finds the one made and creates only the rest.
#[tokio::test]
async fn setup_survives_a_lost_answer_without_making_a_field_twice() {
    let sb = start().await;
    let (_dir, store) = test_store();
    let portal = portal_for(&sb, TaskKind::Task);
    let crm = Bitrix24Crm::new(&portal, store).unwrap();
    sb.lose_answers("crm.lead.userfield.add", 1);
    let once = crm.setup_fields(&portal.fields, &tiers()).await;
    assert!(matches!(once, Err(CrmError::Transient { .. })), "{once:?}");
    assert_eq!(sb.userfields().len(), 1, "the first field was made all the same");

    sb.lose_answers("crm.lead.userfield.add", 1);
    let delays = [Duration::from_millis(10); 3];
    let tiers = tiers();
    let setup = crate::crm::admin_retry::with_retries("setup", &delays, || {
        crm.setup_fields(&portal.fields, &tiers)
    })
    .await
    .unwrap();
    assert_eq!(setup.tier_values.len(), 3);
    let mut names: Vec<String> = sb
        .userfields()
        .iter()
        .map(|f| f["FIELD_NAME"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["UF_CRM_LEADSCORE", "UF_CRM_LEADSCORE_TIER", "UF_CRM_LEADSCORE_WHY"],
        "each field once"
    );
    sb.shutdown().await;
}

#[tokio::test]
async fn fetch_write_and_tasks_in_few_requests() {
    let sb = start().await;
    let (crm, portal) = configured(&sb, TaskKind::Task).await;
    let (fs, ts) = (&portal.fields, &portal.task);
    let mut ids = Vec::new();
    for i in 0..60 {
        let id = sb
            .add_lead(
                json!({"TITLE": format!("Lead {i}"), "NAME": "Olga", "POST": "Director",
                "EMAIL": [{"VALUE": format!("o{i}@corp.test"), "VALUE_TYPE": "WORK"}],
                "ASSIGNED_BY_ID": 1, "UF_CRM_REVENUE": "5000000"}),
            )
            .unwrap();
        sb.add_activity(
            json!({"OWNER_TYPE_ID": 1, "OWNER_ID": id, "TYPE_ID": 6, "PROVIDER_ID": "REST_APP",
            "SUBJECT": "[demo] Demo request", "START_TIME": "2026-11-20T10:00:00+03:00"}),
        )
        .unwrap();
        ids.push(id.to_string());
    }
    // One busy lead: 120 activities = 3 pages.
    for n in 0..119 {
        sb.add_activity(
            json!({"OWNER_TYPE_ID": 1, "OWNER_ID": ids[0], "TYPE_ID": 2, "DIRECTION": 1,
            "SUBJECT": format!("call {n}"), "START_TIME": "2026-11-21T10:00:00+03:00"}),
        )
        .unwrap();
    }
    sb.reset_counters();
    let mut wanted = ids.clone();
    wanted.push("99999".into()); // deleted / unknown: absent from the answer
    let fetched = crm.fetch(fs, &wanted).await.unwrap();
    assert_eq!(fetched.len(), 60);
    // 2 lead lists + 3 activity lists (25 leads each) = 5 commands = 1 batch; then
    // pages 2 and 3 of the busy lead's group: 2 more (before: one list per lead,
    // 62 commands in 2 batches, then the same 2 pages).
    assert_eq!(sb.counters().requests, 3, "{:?}", sb.counters());
    assert_eq!(sb.counters().by_method["crm.activity.list"], 5);
    let busy = &fetched[&ids[0]];
    assert_eq!(busy.activities.len(), 120);
    let f = &fetched[&ids[5]];
    assert_eq!(f.lead.position.as_deref(), Some("Director"));
    assert_eq!(f.lead.emails, vec!["o5@corp.test"]);
    assert_eq!(f.lead.revenue, Some(5_000_000.0));
    assert_eq!(f.activities.len(), 1);
    assert_eq!(f.activities[0].kind, ActivityKind::DemoRequest);
    assert_eq!(f.current_score, None);

    // Write back 60 scores with comments: 120 commands = 3 batches.
    sb.reset_counters();
    let writes: Vec<ScoreWrite> = ids
        .iter()
        .map(|id| ScoreWrite {
            lead_id: id.clone(),
            score: 75,
            tier: "hot".into(),
            breakdown: "Demo request +20".into(),
            comment: true,
            extras: Default::default(),
        })
        .collect();
    let res = crm.write_scores(fs, &writes).await.unwrap();
    assert!(res.values().all(Result::is_ok), "{res:?}");
    assert_eq!(sb.counters().requests, 3);
    assert_eq!(sb.comments().len(), 60);
    let again = crm.fetch(fs, &ids[..1]).await.unwrap();
    assert_eq!(again[&ids[0]].current_score, Some(75));
    let lead = sb.get_lead(ids[0].parse().unwrap()).unwrap();
    let hot = &fs.tier_values["hot"];
    assert_eq!(
        value_text(&lead[fs.tier.as_ref().unwrap()]).as_deref(),
        Some(hot.as_str())
    );
    // A lead that does not exist fails alone.
    let res = crm
        .write_scores(
            fs,
            &[
            ScoreWrite {
                lead_id: "99999".into(),
                ..writes[0].clone()
            },
            writes[1].clone(),
        ])
        .await
        .unwrap();
    assert!(
        matches!(res["99999"], Err(CrmError::Rejected(_))),
        "{res:?}"
    );
    assert!(res[&ids[1]].is_ok());

    // Task: created once, found by marker, closed when the rep completes it.
    let req = TaskRequest {
        lead_id: ids[2].clone(),
        responsible_id: Some("1".into()),
        title: "Позвонить сейчас".into(),
        text: "75 баллов".into(),
        deadline: Utc::now() + chrono::Duration::hours(1),
        marker: "leadscore:sbx:2:1".into(),
    };
    assert_eq!(crm.find_task(ts, &ids[2], &req.marker).await.unwrap(), None);
    let t = crm.create_task(ts, &req).await.unwrap();
    let found = crm.find_task(ts, &ids[2], &req.marker).await.unwrap().unwrap();
    assert_eq!(
        found,
        TaskRef {
            id: t.id.clone(),
            open: true
        }
    );
    assert!(crm.task_open(ts, &ids[2], &t.id).await.unwrap());
    assert!(
        !crm.task_open(ts, &ids[3], &t.id).await.unwrap(),
        "another lead's view of our task id is not open"
    );
    sb.complete_task(t.id.parse().unwrap()).unwrap();
    assert!(!crm.task_open(ts, &ids[2], &t.id).await.unwrap());
    assert_eq!(sb.tasks().len(), 1);

    // Activities resolve to their lead.
    let act_id = sb
        .activities()
        .iter()
        .find(|a| a["OWNER_ID"] == json!(ids[3]))
        .unwrap()["ID"]
        .clone();
    let act_id = value_text(&act_id).unwrap();
    // A deal-owned activity bound to a lead too (the owner must exist, as on a portal).
    let deal = sb.add_deal(json!({"TITLE": "Сделка"})).unwrap();
    let bound = sb
        .add_activity(json!({"OWNER_TYPE_ID": 2, "OWNER_ID": deal, "TYPE_ID": 2,
            "BINDINGS": [{"OWNER_TYPE_ID": 2, "OWNER_ID": deal}, {"OWNER_TYPE_ID": 1, "OWNER_ID": ids[4]}],
            "START_TIME": "2026-11-21T10:00:00+03:00"}))
        .unwrap()
        .to_string();
    // One fetch turn finds the leads behind activity events and reads them with the
    // leads asked for: lead 2 is asked for its fields only (an echo), but an activity
    // event names it too, so its activities are read after all.
    let on_two = sb
        .add_activity(json!({"OWNER_TYPE_ID": 1, "OWNER_ID": ids[2], "TYPE_ID": 2,
            "START_TIME": "2026-11-21T11:00:00+03:00"}))
        .unwrap()
        .to_string();
    let asked = [
        FetchRequest {
            id: ids[1].clone(),
            activities: ActivityRead::Skip,
        },
        FetchRequest {
            id: ids[2].clone(),
            activities: ActivityRead::Skip,
        },
    ];
    let activities = [act_id.clone(), bound.clone(), on_two.clone(), "424242".into()];
    let found_through_activities = std::sync::Mutex::new(Vec::new());
    let read_for = |id: &LeadId| {
        found_through_activities.lock().unwrap().push(id.clone());
        ActivityRead::Full
    };
    sb.reset_counters();
    let out = crm
        .fetch_batch(
            fs,
            FetchBatch {
                leads: &asked,
                activities: &activities,
                read_for: &read_for,
            },
        )
        .await
        .unwrap();
    let map = &out.activity_leads;
    assert_eq!(map[&act_id].as_deref(), Some(ids[3].as_str()));
    assert_eq!(map[&bound].as_deref(), Some(ids[4].as_str()));
    assert_eq!(map[&on_two].as_deref(), Some(ids[2].as_str()));
    assert_eq!(map["424242"], None);
    let mut found = found_through_activities.into_inner().unwrap();
    found.sort();
    assert_eq!(found, vec![ids[2].clone(), ids[3].clone(), ids[4].clone()]);
    let read: Vec<&String> = out.leads.keys().collect();
    assert_eq!(read, vec![&ids[1], &ids[2], &ids[3], &ids[4]]);
    assert!(out.leads[&ids[1]].activities.is_empty(), "an echo reads no activity");
    assert!(
        out.leads[&ids[2]].activities.iter().any(|a| a.id == on_two),
        "the lead named by an activity event reads its activities"
    );
    assert!(out.leads[&ids[3]].activities_complete);
    // Resolution, then one read of all four leads: two requests in one call.
    assert_eq!(sb.counters().requests, 2, "{:?}", sb.counters());

    // The sweep sees every lead modified since a time in the past.
    let changed = crm
        .changed_since(Utc::now() - chrono::Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(changed.len(), 60);
    assert_eq!(sb.count_status(503), 0);
    sb.shutdown().await;
}

#[tokio::test]
async fn todo_kind_uses_crm_todos() {
    let sb = start().await;
    let (crm, portal) = configured(&sb, TaskKind::Todo).await;
    let ts = &portal.task;
    let id = sb
        .add_lead(json!({"TITLE": "x", "ASSIGNED_BY_ID": 1}))
        .unwrap()
        .to_string();
    let req = TaskRequest {
        lead_id: id.clone(),
        responsible_id: None,
        title: "Call".into(),
        text: "now".into(),
        deadline: Utc::now() + chrono::Duration::hours(1),
        marker: "leadscore:sbx:todo:1".into(),
    };
    let t = crm.create_task(ts, &req).await.unwrap();
    assert_eq!(sb.todos().len(), 1);
    let found = crm.find_task(ts, &id, &req.marker).await.unwrap().unwrap();
    assert_eq!(found.id, t.id);
    assert!(crm.task_open(ts, &id, &t.id).await.unwrap());
    assert!(!crm.task_open(ts, "424242", &t.id).await.unwrap());
    sb.update_activity(t.id.parse().unwrap(), json!({"COMPLETED": "Y"}))
        .unwrap();
    assert!(!crm.task_open(ts, &id, &t.id).await.unwrap());
    sb.shutdown().await;
}

#[tokio::test]
async fn oauth_tokens_rotate_into_the_store_and_survive_a_restart() {
    use leadscore_bitrix24_sandbox::OAuthOptions;
    let sb = Sandbox::start(SandboxOptions {
        rate_limit: None,
        oauth: Some(OAuthOptions {
            client_id: "app.lead".into(),
            client_secret: SecretString::from("cs"),
            access_token: SecretString::from("at0"),
            refresh_token: SecretString::from("rt0"),
            access_ttl: std::time::Duration::from_secs(3600),
        }),
        ..SandboxOptions::default()
    })
    .await
    .unwrap();
    let mut portal = portal_for(&sb, TaskKind::Task);
    portal.settings = Settings::with_auth(PortalAuth::OAuth {
        base_url: sb.client_endpoint(),
        client_id: "app.lead".into(),
        client_secret: SecretString::from("cs"),
        refresh_token: SecretString::from("rt0"),
    });
    let id = sb.add_lead(json!({"TITLE": "x"})).unwrap().to_string();
    let (_dir, store) = test_store();
    // No access token at start: the first call refreshes and stores the new pair.
    let crm =
        Bitrix24Crm::with_oauth_server(&portal, store.clone(), &sb.oauth_token_url()).unwrap();
    assert_eq!(crm.fetch(&portal.fields, std::slice::from_ref(&id)).await.unwrap().len(), 1);
    let saved = stored_tokens(&store);
    let (_, portal_rt) = sb.oauth_tokens().unwrap();
    assert_eq!(
        saved.refresh_token.expose_secret(),
        portal_rt.expose_secret()
    );
    assert_ne!(portal_rt.expose_secret(), "rt0");
    // A restart reads the rotated token (the config's rt0 is spent) and keeps working
    // after the access token expires.
    drop(crm);
    sb.expire_access_tokens();
    let crm =
        Bitrix24Crm::with_oauth_server(&portal, store.clone(), &sb.oauth_token_url()).unwrap();
    assert_eq!(crm.fetch(&portal.fields, std::slice::from_ref(&id)).await.unwrap().len(), 1);
    let again = stored_tokens(&store);
    assert_ne!(
        again.refresh_token.expose_secret(),
        saved.refresh_token.expose_secret()
    );
    sb.shutdown().await;
}

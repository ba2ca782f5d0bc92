//! Outgoing webhooks: real form format, fired by REST changes (the daemon's own writes
//! included) and by the seed API, none for a no-op update, no retries.

use std::sync::{Arc, Mutex};

use crate::support::{ok, portal};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use secrecy::SecretString;
use serde_json::json;

type Seen = Arc<Mutex<Vec<(String, String)>>>;

/// A tiny handler that records content type and body, answering `status`.
async fn receiver(status: StatusCode) -> (String, Seen, tokio::task::JoinHandle<()>) {
    let seen: Seen = Arc::default();
    let app = axum::Router::new()
        .route(
            "/hook",
            post(
                move |State(seen): State<Seen>, headers: HeaderMap, body: Bytes| async move {
                    let ctype = headers
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned();
                    seen.lock()
                        .unwrap()
                        .push((ctype, String::from_utf8_lossy(&body).into_owned()));
                    status
                },
            ),
        )
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, seen, task)
}

fn decode(body: &str) -> Vec<(String, String)> {
    body.split('&')
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap();
            let d = |s: &str| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (d(k), d(v))
        })
        .collect()
}

#[tokio::test]
async fn rest_and_seed_changes_are_posted_in_the_real_format() {
    let p = portal().await;
    let (url, seen, server) = receiver(StatusCode::OK).await;
    let token = SecretString::from("jvh9y1ulvt2m6k5or90v9mg8nn32ozas");
    let hid = p.bind_event("ONCRMLEADUPDATE", &url, token.clone());
    p.bind_event("ONCRMLEADADD", &url, token.clone());
    p.bind_event("ONCRMACTIVITYADD", &url, token);

    let lead = p.add_lead(json!({"TITLE": "A"})).unwrap();
    p.settle().await;
    assert_eq!(seen.lock().unwrap().len(), 1);

    // The daemon's own write through REST fires ONCRMLEADUPDATE too.
    ok(
        &p,
        "crm.lead.update",
        json!({"id": lead, "fields": {"TITLE": "B"}}),
    )
    .await;
    p.settle().await;
    let (ctype, body) = seen.lock().unwrap()[1].clone();
    assert_eq!(ctype, "application/x-www-form-urlencoded");
    assert!(
        body.starts_with("event=ONCRMLEADUPDATE&event_handler_id="),
        "{body}"
    );
    assert!(
        body.contains("data%5BFIELDS%5D%5BID%5D="),
        "brackets are escaped: {body}"
    );
    let fields = decode(&body);
    let keys: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "event",
            "event_handler_id",
            "data[FIELDS][ID]",
            "ts",
            "auth[domain]",
            "auth[client_endpoint]",
            "auth[server_endpoint]",
            "auth[member_id]",
            "auth[application_token]"
        ]
    );
    let get = |k: &str| fields.iter().find(|(x, _)| x == k).unwrap().1.clone();
    assert_eq!(get("event_handler_id"), hid.to_string());
    assert_eq!(get("data[FIELDS][ID]"), lead.to_string());
    assert_eq!(get("auth[domain]"), p.domain());
    assert_eq!(get("auth[member_id]"), p.member_id());
    assert_eq!(
        get("auth[application_token]"),
        "jvh9y1ulvt2m6k5or90v9mg8nn32ozas"
    );
    assert!(get("ts").parse::<u64>().unwrap() > 1_700_000_000);

    // Activities added through REST or by a to-do fire ONCRMACTIVITYADD.
    ok(
        &p,
        "crm.activity.todo.add",
        json!({"ownerTypeId": 1, "ownerId": lead, "deadline": "2026-11-20T12:00:00+03:00"}),
    )
    .await;
    p.settle().await;
    let last = seen.lock().unwrap().last().unwrap().1.clone();
    assert!(last.starts_with("event=ONCRMACTIVITYADD&"), "{last}");

    let deliveries = p.delivered();
    assert_eq!(deliveries.len(), 3);
    assert!(deliveries
        .iter()
        .all(|d| d.status == Some(200) && d.error.is_none()));
    p.shutdown().await;
    server.abort();
}

#[tokio::test]
async fn a_no_op_update_saves_nothing_and_fires_nothing() {
    let p = portal().await;
    p.add_userfield(json!({"FIELD_NAME": "SCORE", "USER_TYPE_ID": "integer"}))
        .unwrap();
    let (url, seen, server) = receiver(StatusCode::OK).await;
    p.bind_event("ONCRMLEADUPDATE", &url, SecretString::from("t"));
    let lead = p
        .add_lead(
            json!({"TITLE": "A", "UF_CRM_SCORE": 50, "DATE_MODIFY": "2026-01-01T00:00:00+03:00"}),
        )
        .unwrap();
    let before = p.get_lead(lead).unwrap();

    ok(
        &p,
        "crm.lead.update",
        json!({"id": lead, "fields": {"UF_CRM_SCORE": "50", "TITLE": "A"}}),
    )
    .await;
    ok(
        &p,
        "crm.item.update",
        json!({"entityTypeId": 1, "id": lead, "fields": {"ufCrm_SCORE": 50}}),
    )
    .await;
    p.settle().await;
    assert!(seen.lock().unwrap().is_empty());
    assert_eq!(p.get_lead(lead).unwrap(), before, "DATE_MODIFY untouched");

    ok(
        &p,
        "crm.lead.update",
        json!({"id": lead, "fields": {"UF_CRM_SCORE": 51}}),
    )
    .await;
    p.settle().await;
    assert_eq!(seen.lock().unwrap().len(), 1);
    assert_ne!(
        p.get_lead(lead).unwrap()["DATE_MODIFY"],
        before["DATE_MODIFY"]
    );
    p.shutdown().await;
    server.abort();
}

#[tokio::test]
async fn failed_deliveries_are_recorded_and_not_retried() {
    let p = portal().await;
    let (url, seen, server) = receiver(StatusCode::INTERNAL_SERVER_ERROR).await;
    p.bind_event("ONCRMLEADADD", &url, SecretString::from("t"));
    p.bind_event(
        "ONCRMLEADADD",
        "http://127.0.0.1:9/closed",
        SecretString::from("t"),
    );
    p.add_lead(json!({"TITLE": "A"})).unwrap();
    p.settle().await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(seen.lock().unwrap().len(), 1, "exactly one attempt");
    let d = p.delivered();
    assert_eq!(d.len(), 2);
    assert!(d.iter().any(|x| x.status == Some(500) && x.error.is_some()));
    assert!(d.iter().any(|x| x.status.is_none() && x.error.is_some()));
    assert_eq!(p.pending_deliveries(), 0);
    p.shutdown().await;
    server.abort();
}

#[tokio::test]
async fn updates_and_deletes_of_leads_and_activities_fire_their_events() {
    let p = portal().await;
    let (url, seen, server) = receiver(StatusCode::OK).await;
    for event in [
        "ONCRMLEADDELETE",
        "ONCRMACTIVITYUPDATE",
        "ONCRMACTIVITYDELETE",
    ] {
        p.bind_event(event, &url, SecretString::from("t"));
    }
    let lead = p.add_lead(json!({"TITLE": "A"})).unwrap();
    let act = p
        .add_activity(json!({"OWNER_TYPE_ID": 1, "OWNER_ID": lead, "TYPE_ID": 2}))
        .unwrap();
    assert!(p.update_activity(act, json!({"COMPLETED": "Y"})).unwrap());
    assert!(!p.update_activity(act, json!({"COMPLETED": "Y"})).unwrap());
    ok(&p, "crm.activity.delete", json!({"id": act})).await;
    ok(&p, "crm.lead.delete", json!({"id": lead})).await;
    p.settle().await;
    let events: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|(_, b)| b.split('&').next().unwrap().to_owned())
        .collect();
    let mut sorted = events.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [
            "event=ONCRMACTIVITYDELETE",
            "event=ONCRMACTIVITYUPDATE",
            "event=ONCRMLEADDELETE"
        ]
    );
    p.shutdown().await;
    server.abort();
}

#[tokio::test]
async fn deal_adds_and_real_updates_fire_deal_events() {
    let p = portal().await;
    let (url, seen, server) = receiver(StatusCode::OK).await;
    p.bind_event("ONCRMDEALADD", &url, SecretString::from("t"));
    p.bind_event("ONCRMDEALUPDATE", &url, SecretString::from("t"));
    let id = ok(&p, "crm.deal.add", json!({"fields": {"TITLE": "D"}})).await;
    ok(
        &p,
        "crm.deal.update",
        json!({"id": id, "fields": {"TITLE": "D"}}),
    )
    .await;
    ok(
        &p,
        "crm.deal.update",
        json!({"id": id, "fields": {"OPPORTUNITY": 10}}),
    )
    .await;
    p.settle().await;
    let events: Vec<(String, String)> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|(_, body)| {
            let f = decode(body);
            let get = |k: &str| {
                f.iter()
                    .find(|(n, _)| n == k)
                    .map(|(_, v)| v.clone())
                    .unwrap()
            };
            (get("event"), get("data[FIELDS][ID]"))
        })
        .collect();
    let mut events = events;
    events.sort();
    let id = id.to_string();
    assert_eq!(
        events,
        [
            ("ONCRMDEALADD".to_string(), id.clone()),
            ("ONCRMDEALUPDATE".to_string(), id)
        ],
        "the no-op update fired nothing"
    );
    p.shutdown().await;
    server.abort();
}

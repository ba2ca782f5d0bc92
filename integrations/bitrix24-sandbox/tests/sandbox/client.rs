//! The client against the sandbox portal over real HTTP on 127.0.0.1.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use leadscore_bitrix24::batch::BatchCommand;
use leadscore_bitrix24::client::{
    task_fields, Auth, Client, ClientConfig, OAuth, OAuthTokens, RetryPolicy,
};
use leadscore_bitrix24::error::Error;
use leadscore_bitrix24::limiter::PacingConfig;
use leadscore_bitrix24_sandbox::{
    FaultConfig, FaultKind, OAuthOptions, RateLimit, Sandbox, SandboxHandle, SandboxOptions,
};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 8,
        base_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(200),
        ..RetryPolicy::default()
    }
}

fn client_for(portal: &SandboxHandle, pacing: PacingConfig) -> Client {
    Client::new(
        Auth::WebhookUrl(portal.webhook_url()),
        ClientConfig {
            pacing,
            retry: fast_retry(),
            timeout: Duration::from_secs(5),
            ..ClientConfig::default()
        },
    )
    .unwrap()
}

/// Pacing matched to a fast sandbox bucket (burst 20, 20/s) so tests stay quick.
fn fast_bucket() -> (RateLimit, PacingConfig) {
    (
        RateLimit {
            burst: 20.0,
            drain_per_sec: 20.0,
        },
        PacingConfig {
            per_second: 20.0,
            burst: 20,
            initial_available: 1.0,
            safety_margin: 1,
        },
    )
}

async fn start(rate: Option<RateLimit>) -> SandboxHandle {
    Sandbox::start(SandboxOptions {
        rate_limit: rate,
        ..SandboxOptions::default()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn typed_methods_round_trip() {
    let (rate, pacing) = fast_bucket();
    let portal = start(Some(rate)).await;
    let c = client_for(&portal, pacing);
    let a = portal
        .add_lead(
            json!({"TITLE": "ACME", "NAME": "Anna", "POST": "CEO", "ASSIGNED_BY_ID": 1,
            "EMAIL": [{"VALUE": "anna@acme.test", "VALUE_TYPE": "WORK"}]}),
        )
        .unwrap();
    let b = portal.add_lead(json!({"TITLE": "Beta"})).unwrap();
    portal.add_lead(json!({"TITLE": "Other"})).unwrap();

    let (leads, _) = c
        .lead_list(
            json!({"@ID": [a, b]}),
            &["*", "UF_*", "EMAIL", "PHONE"],
            json!({"ID": "ASC"}),
            None,
        )
        .await
        .unwrap();
    assert_eq!(leads.len(), 2);
    assert_eq!(leads[0].id, a.to_string());
    assert_eq!(leads[0].post.as_deref(), Some("CEO"));
    assert_eq!(leads[0].email[0].value.as_deref(), Some("anna@acme.test"));

    let item = c.item_get(1, &a.to_string()).await.unwrap();
    assert_eq!(item.title.as_deref(), Some("ACME"));

    let field = c
        .lead_userfield_add(
            json!({"FIELD_NAME": "LEADSCORE", "USER_TYPE_ID": "integer", "LABEL": "Score"}),
        )
        .await
        .unwrap();
    assert!(!field.is_empty());
    let fields = c
        .lead_userfield_list(json!({"FIELD_NAME": "UF_CRM_LEADSCORE"}))
        .await
        .unwrap();
    assert_eq!(fields.len(), 1);
    c.lead_update(&a.to_string(), json!({"UF_CRM_LEADSCORE": 77}))
        .await
        .unwrap();
    assert_eq!(
        portal.get_lead(a).unwrap()["UF_CRM_LEADSCORE"]
            .to_string()
            .trim_matches('"'),
        "77"
    );

    portal
        .add_activity(
            json!({"OWNER_TYPE_ID": 1, "OWNER_ID": a, "TYPE_ID": 2, "DIRECTION": 1,
            "SUBJECT": "Incoming call", "START_TIME": "2026-11-20T10:00:00+03:00"}),
        )
        .unwrap();
    let (acts, _) = c
        .activity_list(
            json!({"OWNER_TYPE_ID": 1, "OWNER_ID": a}),
            &["*"],
            json!({"ID": "DESC"}),
            Some(0),
        )
        .await
        .unwrap();
    assert_eq!(acts.len(), 1);
    assert_eq!(acts[0].type_id.as_deref(), Some("2"));
    let got = c.activity_get(&acts[0].id).await.unwrap();
    assert_eq!(got.owner_id.as_deref(), Some(a.to_string().as_str()));

    let comment = c
        .timeline_comment_add("lead", &a.to_string(), "Score 77")
        .await
        .unwrap();
    assert!(!comment.is_empty());
    assert_eq!(portal.comments().len(), 1);

    let deadline = chrono::Utc::now() + chrono::Duration::hours(1);
    let task = c
        .task_add(task_fields(
            &a.to_string(),
            "Call now",
            "why\n\nleadscore:p:1:42",
            Some("1"),
            deadline,
        ))
        .await
        .unwrap();
    assert!(task.is_open());
    let found = c
        .task_list(
            json!({"UF_CRM_TASK": format!("L_{a}")}),
            &["ID", "DESCRIPTION", "STATUS"],
        )
        .await
        .unwrap();
    assert!(found.iter().any(|t| t.id == task.id
        && t.description
            .as_deref()
            .is_some_and(|d| d.contains("leadscore:p:1:42"))));
    let tasks = portal.tasks();
    assert_eq!(tasks[0].crm_bindings, vec![format!("L_{a}")]);
    assert_eq!(tasks[0].priority, 2);

    let todo = c
        .todo_add(json!({"ownerTypeId": 1, "ownerId": a, "deadline": "2026-12-01T10:00:00+03:00", "title": "Call"}))
        .await
        .unwrap();
    assert!(!todo.is_empty());
    assert_eq!(portal.todos().len(), 1);

    // Errors are typed; "not found" is recognisable.
    let err = c.activity_get("999999").await.unwrap_err();
    assert!(err.is_not_found() && !err.is_retryable(), "{err:?}");
    assert_eq!(portal.count_status(503), 0);
    portal.shutdown().await;
}

#[tokio::test]
async fn batch_all_splits_and_reports_per_command() {
    let (rate, pacing) = fast_bucket();
    let portal = start(Some(rate)).await;
    let c = client_for(&portal, pacing);
    let ids: Vec<u64> = (0..70)
        .map(|i| portal.add_lead(json!({"TITLE": format!("L{i}")})).unwrap())
        .collect();
    let mut cmds: Vec<BatchCommand> = ids
        .iter()
        .map(|id| {
            BatchCommand::new(
                format!("u{id}"),
                "crm.lead.update",
                json!({"id": id, "fields": {"TITLE": format!("T{id}")}}),
            )
        })
        .collect();
    cmds.push(BatchCommand::new(
        "bad",
        "crm.lead.update",
        json!({"id": 99999999, "fields": {"TITLE": "x"}}),
    ));
    portal.reset_counters();
    let out = c.batch_all(cmds).await.unwrap();
    assert_eq!(out.len(), 71);
    assert_eq!(portal.count_method("batch"), 2, "71 commands = 2 requests");
    for id in &ids {
        assert_eq!(out[&format!("u{id}")].result, Ok(json!(true)));
        assert_eq!(
            portal.get_lead(*id).unwrap()["TITLE"],
            json!(format!("T{id}"))
        );
    }
    let bad = out["bad"].result.clone().unwrap_err();
    assert!(
        matches!(bad, Error::Command { .. }) && bad.is_not_found(),
        "{bad:?}"
    );
    // Duplicate keys are refused before anything is sent.
    let dup = vec![
        BatchCommand::new("x", "crm.lead.get", json!({"id": 1})),
        BatchCommand::new("x", "crm.lead.get", json!({"id": 2})),
    ];
    assert!(matches!(c.batch_all(dup).await, Err(Error::Config(_))));
    portal.shutdown().await;
}

#[tokio::test]
async fn a_burst_draws_no_503() {
    let (rate, pacing) = fast_bucket();
    let portal = start(Some(rate)).await;
    let c = client_for(&portal, pacing);
    let id = portal.add_lead(json!({"TITLE": "x"})).unwrap();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..20 {
                c.call("crm.lead.get", json!({ "id": id })).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let took = started.elapsed().as_secs_f64();
    assert_eq!(portal.count_status(503), 0);
    assert_eq!(c.stats().limit_errors, 0);
    assert_eq!(c.stats().requests_sent, 120);
    // Floor: (120 - 19) / 20 = 5.05 s; allow scheduling slack above it.
    assert!((5.0..7.0).contains(&took), "took {took}");
    portal.shutdown().await;
}

#[tokio::test]
async fn an_aggressive_client_backs_off_on_503_and_loses_nothing() {
    let portal = start(Some(RateLimit {
        burst: 5.0,
        drain_per_sec: 20.0,
    }))
    .await;
    // Pacing deliberately wrong (the bucket is much smaller): 503s happen, and the
    // backoff schedule (up to 12 attempts, delays up to 1 s) outlasts the overload.
    let c = Client::new(
        Auth::WebhookUrl(portal.webhook_url()),
        ClientConfig {
            pacing: PacingConfig {
                per_second: 200.0,
                burst: 100,
                initial_available: 1.0,
                safety_margin: 0,
            },
            retry: RetryPolicy {
                max_attempts: 12,
                base_delay: Duration::from_millis(50),
                max_delay: Duration::from_secs(1),
                ..RetryPolicy::default()
            },
            ..ClientConfig::default()
        },
    )
    .unwrap();
    let id = portal.add_lead(json!({"TITLE": "x"})).unwrap();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..10 {
                c.call("crm.lead.get", json!({ "id": id })).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let seen = portal.count_status(503) as u64;
    assert!(seen > 0, "the test must actually provoke the limit");
    assert_eq!(c.stats().limit_errors, seen);
    assert_eq!(portal.count_status(200) as u64, 40);
    portal.shutdown().await;
}

#[tokio::test]
async fn injected_faults_are_retried_or_surfaced_by_kind() {
    let portal = start(None).await;
    let c = client_for(
        &portal,
        PacingConfig {
            per_second: 1000.0,
            burst: 1000,
            initial_available: 1.0,
            safety_margin: 0,
        },
    );
    let id = portal.add_lead(json!({"TITLE": "x"})).unwrap();
    for kind in [
        FaultKind::QueryLimitExceeded,
        FaultKind::InternalServerError,
        FaultKind::BadGatewayHtml,
        FaultKind::ConnectionReset,
        FaultKind::OperationTimeLimit,
    ] {
        portal.set_faults(FaultConfig::only(kind, 0.4, 7));
        for _ in 0..10 {
            c.call("crm.lead.get", json!({ "id": id }))
                .await
                .unwrap_or_else(|e| panic!("{kind:?}: {e:?}"));
        }
    }
    // A creating call is not repeated after a reset (it may have run): the error
    // surfaces and at most one task exists.
    portal.set_faults(FaultConfig::only(FaultKind::ConnectionReset, 1.0, 1));
    let deadline = chrono::Utc::now() + chrono::Duration::hours(1);
    let err = c
        .task_add(task_fields(
            &id.to_string(),
            "Call",
            "m",
            Some("1"),
            deadline,
        ))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Transport(_)), "{err:?}");
    assert!(portal.tasks().len() <= 1);
    assert!(
        portal.count_method("tasks.task.add") <= 1,
        "a reset *.add is not repeated"
    );
    // …but one refused with a limit error is repeated (it surely did not run).
    portal.set_faults(FaultConfig::only(FaultKind::QueryLimitExceeded, 0.5, 3));
    c.task_add(task_fields(
        &id.to_string(),
        "Call",
        "m2",
        Some("1"),
        deadline,
    ))
    .await
    .unwrap();
    portal.shutdown().await;
}

#[tokio::test]
async fn errors_never_carry_the_webhook_code() {
    let portal = start(None).await;
    let url = portal.webhook_url();
    let code = url
        .expose_secret()
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    let wrong = url.expose_secret().replace(&code, "wrongcode123");
    let c = Client::new(
        Auth::WebhookUrl(SecretString::from(wrong)),
        ClientConfig {
            retry: fast_retry(),
            ..ClientConfig::default()
        },
    )
    .unwrap();
    let err = c.call("crm.lead.list", json!({})).await.unwrap_err();
    assert!(matches!(err, Error::Auth { .. }), "{err:?}");
    assert!(!format!("{err} {err:?}").contains("wrongcode123"));
    let base = portal.base_url().to_string();
    portal.shutdown().await;
    // Connection refused: the URL (and code) must not leak through reqwest's message.
    let c = client_for_url(&format!("{base}/rest/1/{code}/"));
    let err = c.call("crm.lead.list", json!({})).await.unwrap_err();
    assert!(
        matches!(err, Error::Connect(_) | Error::Transport(_)),
        "{err:?}"
    );
    assert!(!format!("{err} {err:?}").contains(&code), "{err:?}");
}

fn client_for_url(url: &str) -> Client {
    Client::new(
        Auth::WebhookUrl(SecretString::from(url.to_string())),
        ClientConfig {
            retry: RetryPolicy {
                max_attempts: 2,
                ..fast_retry()
            },
            ..ClientConfig::default()
        },
    )
    .unwrap()
}

#[tokio::test]
async fn oauth_refreshes_once_on_expiry_and_persists_rotated_tokens() {
    let portal = Sandbox::start(SandboxOptions {
        rate_limit: None,
        oauth: Some(OAuthOptions {
            client_id: "app.test".into(),
            client_secret: SecretString::from("cs-secret"),
            access_token: SecretString::from("at-initial"),
            refresh_token: SecretString::from("rt-initial"),
            access_ttl: Duration::from_secs(3600),
        }),
        ..SandboxOptions::default()
    })
    .await
    .unwrap();
    let saved: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = saved.clone();
    let c = Client::new(
        Auth::OAuth(OAuth {
            base_url: portal.client_endpoint(),
            client_id: "app.test".into(),
            client_secret: SecretString::from("cs-secret"),
            tokens: OAuthTokens {
                access_token: Some(SecretString::from("at-initial")),
                refresh_token: SecretString::from("rt-initial"),
                expires_at: None,
            },
            on_refresh: Arc::new(move |t: &OAuthTokens| {
                sink.lock()
                    .unwrap()
                    .push(t.refresh_token.expose_secret().to_string());
            }),
            oauth_server: portal.oauth_token_url(),
        }),
        ClientConfig {
            retry: fast_retry(),
            ..ClientConfig::default()
        },
    )
    .unwrap();
    portal.add_lead(json!({"TITLE": "x"})).unwrap();
    c.call("crm.lead.list", json!({})).await.unwrap();
    assert!(
        saved.lock().unwrap().is_empty(),
        "no refresh while the token is valid"
    );
    portal.expire_access_tokens();
    c.call("crm.lead.list", json!({})).await.unwrap();
    let rotated = saved.lock().unwrap().clone();
    assert_eq!(rotated.len(), 1);
    assert_ne!(rotated[0], "rt-initial");
    let (_, portal_refresh) = portal.oauth_tokens().unwrap();
    assert_eq!(portal_refresh.expose_secret(), rotated[0]);
    // Several workers hitting the expiry together share one refresh.
    portal.expire_access_tokens();
    let calls: Vec<_> = (0..4)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { c.call("crm.lead.list", json!({})).await })
        })
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    assert_eq!(
        saved.lock().unwrap().len(),
        2,
        "one refresh for four expired calls"
    );
    portal.shutdown().await;
}

/// A portal whose domain changed answers 302 with the new address (b24phpsdk follows
/// it): the client re-POSTs there and keeps using the new host.
#[tokio::test]
async fn a_moved_portal_is_followed_with_the_body_intact() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let portal = start(None).await;
    let id = portal.add_lead(json!({"TITLE": "moved"})).unwrap();
    let new_origin = portal.base_url().trim_end_matches('/').to_string();
    let old = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let old_addr = old.local_addr().unwrap();
    let redirector = tokio::spawn(async move {
        let mut served = 0;
        while let Ok((mut sock, _)) = old.accept().await {
            let mut buf = vec![0u8; 8192];
            let n = sock.read(&mut buf).await.unwrap_or(0);
            let head = String::from_utf8_lossy(&buf[..n]).to_string();
            let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
            let reply = format!(
                "HTTP/1.1 302 Found\r\nLocation: {new_origin}{path}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let _ = sock.write_all(reply.as_bytes()).await;
            served += 1;
        }
        served
    });
    let url = portal.webhook_url();
    let path = url
        .expose_secret()
        .split_once("/rest/")
        .unwrap()
        .1
        .to_string();
    let c = client_for_url(&format!("http://{old_addr}/rest/{path}"));
    let r = c.call("crm.lead.get", json!({ "id": id })).await.unwrap();
    assert_eq!(r.result["TITLE"], json!("moved"));
    // The second call goes straight to the new host.
    c.call("crm.lead.get", json!({ "id": id })).await.unwrap();
    assert_eq!(portal.count_method("crm.lead.get"), 2);
    redirector.abort();
    portal.shutdown().await;
}

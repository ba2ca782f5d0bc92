//! The request limit, the account block, and fault injection over real HTTP.

use std::time::Duration;

use crate::support::{client, get, send, token};
use leadscore_amocrm_sandbox::{
    BlockPolicy, ErrorBody, FaultConfig, FaultKind, LeadChange, NewLead, RateLimit, Sandbox,
    SandboxOptions,
};
use reqwest::Method;
use serde_json::{json, Value};

async fn burst(base: &str, token: &str, n: usize) -> Vec<u16> {
    let mut tasks = Vec::new();
    for _ in 0..n {
        let url = format!("{base}/api/v4/account");
        let token = token.to_owned();
        tasks.push(tokio::spawn(async move {
            client()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out.sort_unstable();
    out
}

#[tokio::test]
async fn seven_requests_per_second_then_429() {
    let options = SandboxOptions {
        block: None,
        ..SandboxOptions::default()
    };
    let amo = Sandbox::start(options).await.unwrap();
    let (base, tok) = (amo.base_url().to_owned(), token(&amo));
    let statuses = burst(&base, &tok, 10).await;
    assert_eq!(
        statuses,
        vec![200, 200, 200, 200, 200, 200, 200, 429, 429, 429]
    );
    assert_eq!(amo.count_status(429), 3);
    assert_eq!(amo.violations(), 3);
    // A one-request window for the body checks, so they do not depend on timing.
    let strict = Some(RateLimit {
        requests: 1,
        per: Duration::from_secs(60),
    });
    amo.set_rate_limit(strict);
    assert_eq!(get(&amo, "/api/v4/account").await.status(), 200);
    let throttled = get(&amo, "/api/v4/account").await;
    assert_eq!(throttled.status(), 429);
    assert_eq!(
        throttled.headers()["content-type"],
        "application/problem+json"
    );
    let body: Value = throttled.json().await.unwrap();
    assert_eq!(body["status"], 429);

    amo.set_rate_limit(Some(RateLimit::default()));
    let statuses = burst(&base, &tok, 7).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let statuses = burst(&base, &tok, 7).await;
    assert!(
        statuses.iter().all(|s| *s == 200),
        "a second later the window is free: {statuses:?}"
    );

    amo.set_error_bodies(ErrorBody::Html, ErrorBody::Html);
    amo.set_rate_limit(strict);
    assert_eq!(get(&amo, "/api/v4/account").await.status(), 200);
    let html = get(&amo, "/api/v4/account").await;
    assert_eq!(html.status(), 429);
    assert!(html.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(html.text().await.unwrap().contains("429 Too Many Requests"));

    amo.set_rate_limit(None);
    assert!(burst(&base, &tok, 20).await.iter().all(|s| *s == 200));
    amo.shutdown().await;
}

#[tokio::test]
async fn repeated_violations_block_the_account_until_unblocked() {
    let options = SandboxOptions {
        // A long window so the sequence does not depend on how fast the machine is.
        rate_limit: Some(RateLimit {
            requests: 7,
            per: Duration::from_secs(30),
        }),
        block: Some(BlockPolicy {
            violations: 5,
            within: Duration::from_secs(60),
        }),
        ..SandboxOptions::default()
    };
    let amo = Sandbox::start(options).await.unwrap();
    let mut statuses = Vec::new();
    for _ in 0..20 {
        statuses.push(get(&amo, "/api/v4/account").await.status().as_u16());
    }
    let expected: Vec<u16> = [vec![200; 7], vec![429; 5], vec![403; 8]].concat();
    assert_eq!(statuses, expected);
    assert!(amo.blocked());
    let blocked = get(&amo, "/api/v4/leads").await;
    assert_eq!(blocked.status(), 403);
    let body: Value = blocked.json().await.unwrap();
    assert_eq!(body["type"], "https://httpstatus.es/403");
    let anon = client()
        .get(format!("{}/api/v4/leads", amo.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        anon.status(),
        403,
        "every API request is refused while blocked"
    );

    amo.unblock();
    amo.set_rate_limit(Some(RateLimit::default()));
    assert!(!amo.blocked());
    assert_eq!(get(&amo, "/api/v4/account").await.status(), 200);
    amo.shutdown().await;
}

async fn statuses_with_faults(seed: u64) -> Vec<(u16, Option<FaultKind>)> {
    let faults = FaultConfig::uniform(0.4, seed).slow_delay(Duration::from_millis(20));
    let amo = Sandbox::start(SandboxOptions {
        faults,
        ..SandboxOptions::unlimited()
    })
    .await
    .unwrap();
    let lead = amo.add_lead(NewLead::named("f")).unwrap();
    let fresh = || client();
    for i in 0..60 {
        // A new connection each time: a reset kills the connection it happens on.
        let req = if i % 3 == 0 {
            fresh()
                .patch(format!("{}/api/v4/leads", amo.base_url()))
                .bearer_auth(token(&amo))
                .json(&json!([{"id": lead, "price": i}]))
        } else {
            fresh()
                .get(format!("{}/api/v4/leads/{lead}", amo.base_url()))
                .bearer_auth(token(&amo))
        };
        let _ = req.send().await;
    }
    let calls = amo.calls();
    amo.shutdown().await;
    calls.iter().map(|c| (c.status, c.fault)).collect()
}

#[tokio::test]
async fn faults_are_deterministic_for_a_seed() {
    let a = statuses_with_faults(7).await;
    let b = statuses_with_faults(7).await;
    assert_eq!(a, b, "same seed, same requests, same faults");
    let c = statuses_with_faults(8).await;
    assert_ne!(a, c, "another seed differs");
    let faulted = a.iter().filter(|(_, f)| f.is_some()).count();
    assert!((10..=40).contains(&faulted), "{faulted} of 60 at 40%");
    for (status, fault) in &a {
        match fault {
            Some(FaultKind::TooManyRequests) => assert_eq!(*status, 429),
            Some(FaultKind::InternalServerError) => assert_eq!(*status, 500),
            Some(FaultKind::BadGatewayHtml) => assert_eq!(*status, 502),
            Some(FaultKind::GatewayTimeout) => assert_eq!(*status, 504),
            Some(FaultKind::ConnectionReset) => assert_eq!(*status, 0),
            Some(FaultKind::SlowResponse) | None => assert!(*status == 200 || *status == 204),
        }
    }
}

#[tokio::test]
async fn each_fault_kind_behaves() {
    let amo = Sandbox::start(SandboxOptions::unlimited()).await.unwrap();
    let lead = amo.add_lead(NewLead::named("before")).unwrap();
    let patch = json!([{"id": lead, "name": "after"}]);

    amo.set_faults(FaultConfig::only(FaultKind::BadGatewayHtml, 1.0, 1));
    let resp = get(&amo, "/api/v4/account").await;
    assert_eq!(resp.status(), 502);
    assert!(resp.text().await.unwrap().contains("<html>"));

    amo.set_faults(FaultConfig::only(FaultKind::GatewayTimeout, 1.0, 1));
    assert_eq!(
        get(&amo, "/api/v4/account").await.status(),
        200,
        "504 only on writes"
    );
    let resp = send(&amo, Method::PATCH, "/api/v4/leads", &patch).await;
    assert_eq!(resp.status(), 504);
    assert_eq!(
        amo.lead(lead).unwrap().name,
        "before",
        "a 504 changes nothing"
    );

    amo.set_faults(FaultConfig::only(FaultKind::ConnectionReset, 1.0, 1));
    let err = client()
        .patch(format!("{}/api/v4/leads", amo.base_url()))
        .bearer_auth(token(&amo))
        .json(&patch)
        .send()
        .await
        .expect_err("the connection is reset");
    assert!(!err.is_timeout(), "{err}");
    assert_eq!(
        amo.lead(lead).unwrap().name,
        "before",
        "a reset changes nothing"
    );

    amo.set_faults(
        FaultConfig::only(FaultKind::SlowResponse, 1.0, 1).slow_delay(Duration::from_secs(3)),
    );
    let err = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap()
        .patch(format!("{}/api/v4/leads", amo.base_url()))
        .bearer_auth(token(&amo))
        .json(&patch)
        .send()
        .await
        .expect_err("answer comes after the client's timeout");
    assert!(err.is_timeout());
    assert_eq!(
        amo.lead(lead).unwrap().name,
        "after",
        "the change was made; only the answer was late"
    );

    amo.set_faults(FaultConfig::only(FaultKind::TooManyRequests, 1.0, 1));
    assert_eq!(get(&amo, "/api/v4/account").await.status(), 429);
    assert_eq!(amo.violations(), 0, "an injected 429 is not a violation");

    amo.set_faults(FaultConfig::default());
    amo.set_timeout_batch_above(Some(50));
    let big: Vec<Value> = (0..60).map(|_| json!({"id": lead, "price": 7})).collect();
    assert_eq!(
        send(&amo, Method::PATCH, "/api/v4/leads", &Value::Array(big))
            .await
            .status(),
        504
    );
    let small: Vec<Value> = (0..50).map(|_| json!({"id": lead, "price": 7})).collect();
    assert_eq!(
        send(&amo, Method::PATCH, "/api/v4/leads", &Value::Array(small))
            .await
            .status(),
        200
    );
    assert_eq!(amo.lead(lead).unwrap().price, 7);
    assert!(amo
        .update_lead(lead, LeadChange::default().price(8), amo.current_user_id())
        .unwrap());

    let counters = amo.counters();
    assert_eq!(
        counters.get(&("PATCH".to_owned(), "/api/v4/leads".to_owned(), 504)),
        Some(&2)
    );
    assert_eq!(amo.count_route("PATCH", "/api/v4/leads"), 5);
    amo.reset_calls();
    assert!(amo.calls().is_empty());
    amo.shutdown().await;
}

//! The leaky bucket, the operating limit and fault injection, over real HTTP.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::support::{call, portal};
use leadscore_bitrix24_sandbox::{
    FaultConfig, FaultKind, OperatingLimit, RateLimit, Sandbox, SandboxOptions,
};
use secrecy::ExposeSecret;
use serde_json::json;

#[tokio::test]
async fn leaky_bucket_refuses_past_the_burst_and_recovers_after_draining() {
    let p = portal().await;
    p.set_rate_limit(Some(RateLimit {
        burst: 10.0,
        drain_per_sec: 1.0,
    }));
    let mut passed = 0;
    let body = loop {
        let (status, body) = call(&p, "crm.lead.list", json!({})).await;
        if status == 503 {
            break body;
        }
        assert_eq!(status, 200);
        passed += 1;
        assert!(passed < 20, "bucket never refused");
    };
    assert!((10..=12).contains(&passed), "{passed} passed with burst 10");
    assert_eq!(
        body,
        json!({"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"})
    );
    assert_eq!(p.count_status(503), 1);

    tokio::time::sleep(Duration::from_millis(1300)).await;
    let (status, _) = call(&p, "crm.lead.list", json!({})).await;
    assert_eq!(status, 200, "one request drained after a second at 1/s");

    // A batch of many commands counts once.
    p.reset_bucket();
    let cmd: serde_json::Map<String, serde_json::Value> = (0..30)
        .map(|i| (format!("c{i}"), json!("crm.lead.list")))
        .collect();
    let (status, _) = call(&p, "batch", json!({"cmd": cmd})).await;
    assert_eq!(status, 200);
    assert!(p.bucket_level() <= 1.0 + 1e-9, "level {}", p.bucket_level());
    p.shutdown().await;
}

#[tokio::test]
async fn operating_limit_blocks_one_method_with_reset_time() {
    let p = portal().await;
    p.set_operating_limit(Some(OperatingLimit {
        limit: Duration::from_secs(1),
        cost_per_call: Duration::from_millis(500),
        window: Duration::from_secs(600),
        ..OperatingLimit::default()
    }));
    for _ in 0..2 {
        let (status, body) = call(&p, "crm.lead.list", json!({})).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = call(&p, "crm.lead.list", json!({})).await;
    assert_eq!(status, 429);
    assert_eq!(body["error"], json!("OPERATION_TIME_LIMIT"));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let reset = body["time"]["operating_reset_at"].as_i64().unwrap();
    assert!(
        reset > now + 500 && reset <= now + 601,
        "reset {reset} now {now}"
    );
    assert_eq!(body["time"]["operating"], json!(1.0));
    let (status, _) = call(&p, "crm.activity.list", json!({})).await;
    assert_eq!(status, 200, "other methods keep working");
    p.reset_operating();
    let (status, _) = call(&p, "crm.lead.list", json!({})).await;
    assert_eq!(status, 200);
    p.shutdown().await;
}

async fn statuses(rate: f64, seed: u64, n: usize) -> Vec<u16> {
    let p = Sandbox::start(SandboxOptions {
        rate_limit: None,
        faults: FaultConfig::only(FaultKind::InternalServerError, rate, seed),
        ..SandboxOptions::default()
    })
    .await
    .unwrap();
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(call(&p, "crm.lead.list", json!({})).await.0);
    }
    assert_eq!(
        p.count_status(500),
        out.iter().filter(|s| **s == 500).count()
    );
    p.shutdown().await;
    out
}

#[tokio::test]
async fn fault_rate_is_roughly_honoured_and_seeded() {
    let a = statuses(0.2, 42, 300).await;
    let b = statuses(0.2, 42, 300).await;
    assert_eq!(a, b, "same seed, same faults");
    let faults = a.iter().filter(|s| **s == 500).count();
    assert!((35..=85).contains(&faults), "{faults} of 300 at 20%");
    let c = statuses(0.2, 43, 300).await;
    assert_ne!(a, c, "another seed, another sequence");
}

#[tokio::test]
async fn each_fault_kind_looks_like_the_real_failure() {
    let p = portal().await;
    let url = format!("{}crm.lead.list", p.webhook_url().expose_secret());
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(400))
        .build()
        .unwrap();

    p.set_faults(FaultConfig::only(FaultKind::QueryLimitExceeded, 1.0, 1));
    let (status, body) = call(&p, "crm.lead.list", json!({})).await;
    assert_eq!(
        (status, body["error"].clone()),
        (503, json!("QUERY_LIMIT_EXCEEDED"))
    );

    p.set_faults(FaultConfig::only(FaultKind::OperationTimeLimit, 1.0, 1));
    let (status, body) = call(&p, "crm.lead.list", json!({})).await;
    assert_eq!(
        (status, body["error"].clone()),
        (429, json!("OPERATION_TIME_LIMIT"))
    );
    assert!(body["time"]["operating_reset_at"].is_i64());

    p.set_faults(FaultConfig::only(FaultKind::InternalServerError, 1.0, 1));
    let (status, body) = call(&p, "crm.lead.list", json!({})).await;
    assert_eq!(
        (status, body["error"].clone()),
        (500, json!("INTERNAL_SERVER_ERROR"))
    );

    p.set_faults(FaultConfig::only(FaultKind::BadGatewayHtml, 1.0, 1));
    let resp = client.post(&url).json(&json!({})).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 502);
    assert_eq!(resp.headers()["content-type"], "text/html");
    assert!(resp
        .text()
        .await
        .unwrap()
        .contains("<h1>502 Bad Gateway</h1>"));

    p.set_faults(FaultConfig::only(FaultKind::ConnectionReset, 1.0, 1));
    let err = client.post(&url).json(&json!({})).send().await.unwrap_err();
    assert!(!err.is_timeout(), "reset, not timeout: {err}");
    assert!(err.status().is_none());

    p.set_faults(FaultConfig {
        slow_delay: Duration::from_millis(1500),
        ..FaultConfig::only(FaultKind::SlowResponse, 1.0, 1)
    });
    let err = client.post(&url).json(&json!({})).send().await.unwrap_err();
    assert!(err.is_timeout(), "{err}");

    p.set_faults(FaultConfig::default());
    let (status, _) = call(&p, "crm.lead.list", json!({})).await;
    assert_eq!(status, 200);
    let faults: Vec<_> = p.calls().iter().filter_map(|c| c.fault).collect();
    assert_eq!(
        faults.len(),
        5,
        "the slow call is recorded only once it finishes, after this check"
    );
    p.shutdown().await;
}

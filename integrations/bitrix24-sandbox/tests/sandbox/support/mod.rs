//! Shared helpers for the sandbox's HTTP tests: plain reqwest calls, no client code from
//! this crate, so the tests pin the wire protocol itself.
#![allow(dead_code)]

use leadscore_bitrix24_sandbox::{Sandbox, SandboxHandle, SandboxOptions};
use secrecy::ExposeSecret;
use serde_json::Value;

/// A portal with the rate limit off unless a test turns it on.
pub async fn portal() -> SandboxHandle {
    Sandbox::start(SandboxOptions {
        rate_limit: None,
        ..SandboxOptions::default()
    })
    .await
    .expect("sandbox starts")
}

/// POSTs JSON to `{webhook}{method}` and returns status and parsed body (Null if the
/// body is not JSON).
pub async fn call(portal: &SandboxHandle, method: &str, body: Value) -> (u16, Value) {
    let url = format!("{}{}", portal.webhook_url().expose_secret(), method);
    let resp = reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .expect("request reaches the sandbox");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// `call` that expects 200 and returns `result`.
pub async fn ok(portal: &SandboxHandle, method: &str, body: Value) -> Value {
    let (status, v) = call(portal, method, body).await;
    assert_eq!(status, 200, "{method}: {v}");
    v["result"].clone()
}

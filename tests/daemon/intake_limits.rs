//! The intake under pressure and hostile requests: a bounded queue that answers 503 with
//! Retry-After instead of growing, an intake that stays fast while the CRM hangs, and
//! oversized request heads refused with a 4xx instead of a hang or a 500.

use crate::common;

use std::time::{Duration, Instant};

use common::{Daemon, Options};
use leadscore::crm::Subject;
use leadscore::store::pending_key;
use leadscore_bitrix24_sandbox::{FaultConfig, FaultKind, SandboxOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// POST a webhook body; status and Retry-After.
async fn post_raw(url: &str, body: String) -> (u16, Option<String>) {
    let resp = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .expect("daemon answers");
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    (resp.status().as_u16(), retry)
}

fn lead_key(id: u64) -> Vec<u8> {
    pending_key(leadscore::demo::PORTAL, &Subject::Lead(id.to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_503_with_retry_after_and_merges_still_succeed() {
    let d = Daemon::start(Options {
        // Nothing becomes due during the test: the queue only fills.
        coalesce_ms: 600_000,
        bind_events: false,
        queue_limit: Some(3),
        ..Options::default()
    })
    .await;

    for id in [101, 102, 103] {
        let (status, _) = post_raw(&d.hook, d.lead_event(id)).await;
        assert_eq!(status, 200, "lead {id} fits in the queue");
    }
    assert_eq!(d.store().pending_len(), 3);

    // A fourth lead: refused with 503 + Retry-After, and nothing is written for it.
    let (status, retry) = post_raw(&d.hook, d.lead_event(104)).await;
    assert_eq!(status, 503, "a full queue refuses new leads");
    let secs: u64 = retry
        .expect("503 carries Retry-After")
        .parse()
        .expect("Retry-After is a number of seconds");
    assert!(secs > 0);
    assert_eq!(
        d.store().pending_len(),
        3,
        "nothing queued for the refused lead"
    );
    assert_eq!(d.store().pending_get(&lead_key(104)).unwrap(), None);

    // Events for leads already waiting merge into their entries: still accepted.
    for _ in 0..3 {
        let (status, retry) = post_raw(&d.hook, d.lead_event(102)).await;
        assert_eq!((status, retry), (200, None), "a merge needs no room");
    }
    assert_eq!(d.store().pending_len(), 3);
    let merged = d.store().pending_get(&lead_key(102)).unwrap().unwrap();
    assert_eq!(merged.events, 4, "every accepted event is in the entry");

    // Still refused while full; the refusal is counted for operators.
    assert_eq!(post_raw(&d.hook, d.lead_event(105)).await.0, 503);
    let metrics = reqwest::get(format!("http://{}/metrics", d.addr()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.contains("queue_full") && !l.starts_with('#') && !l.ends_with(" 0")),
        "queue_full refusals show in /metrics:\n{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_crm_never_slows_the_intake() {
    let mut faults = FaultConfig::only(FaultKind::SlowResponse, 1.0, 11);
    faults.slow_delay = Duration::from_secs(6);
    let d = Daemon::start(Options {
        sandbox: SandboxOptions {
            faults,
            ..SandboxOptions::default()
        },
        coalesce_ms: 20,
        bind_events: false,
        ..Options::default()
    })
    .await;
    let ids: Vec<u64> = (0..20).map(|n| d.add_strong_lead(n)).collect();
    let before = d.sandbox.counters().requests;

    // Hand the workers the first leads and wait until they are stuck in the CRM.
    for id in &ids[..5] {
        assert_eq!(post_raw(&d.hook, d.lead_event(*id)).await.0, 200);
    }
    let started = Instant::now();
    while d.pipeline().is_idle().await && started.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !d.pipeline().is_idle().await,
        "workers are busy with the CRM"
    );

    // While they wait on the CRM, every webhook (new leads and merges) is answered fast.
    let burst = Instant::now();
    let mut slowest = Duration::ZERO;
    for round in 0..3 {
        for id in &ids {
            let t = Instant::now();
            let (status, _) = post_raw(&d.hook, d.lead_event(*id)).await;
            slowest = slowest.max(t.elapsed());
            assert_eq!(status, 200, "round {round}, lead {id}");
        }
    }
    let took = burst.elapsed();
    assert!(
        slowest < Duration::from_millis(500),
        "slowest webhook answer {slowest:?} while the CRM hangs"
    );
    assert!(
        took < Duration::from_secs(4),
        "60 webhooks in {took:?}, less than one CRM answer (6 s)"
    );
    // The CRM really was hanging: the workers' calls reached it but none has been
    // answered yet (the portal records a call when it answers, 6 s after it came in,
    // and the burst took under 4 s), and nothing has been scored yet.
    assert_eq!(
        d.sandbox.counters().requests,
        before,
        "no CRM answer came back during the burst"
    );
    assert!(
        ids.iter().all(|id| d.crm_score(*id).is_none()),
        "no CRM call finished during the burst"
    );

    // Once the CRM recovers, every lead is scored: the fast answers lost nothing.
    d.sandbox.set_faults(FaultConfig::default());
    d.settle().await;
    for id in &ids {
        assert!(
            d.crm_score(*id).is_some(),
            "lead {id} scored after recovery"
        );
    }
}

/// Send a raw request head and return the status code of the answer (`None`: the
/// connection closed without one). Times out rather than hanging the test.
async fn raw_status(d: &Daemon, head: &[u8]) -> Option<u16> {
    let mut s = TcpStream::connect(d.addr()).await.unwrap();
    // The server may answer and close before it has read everything we send.
    let _ = s.write_all(head).await;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut chunk = [0u8; 1024];
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server neither answered nor closed");
    let text = String::from_utf8_lossy(&buf);
    text.strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_paths_and_headers_get_a_4xx_not_a_hang_or_a_500() {
    let d = Daemon::start_idle(None).await;
    let body = d.lead_event(7);
    let post = |path: String, extra: String| {
        format!(
            "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-www-form-urlencoded\r\n\
             content-length: {}\r\n{extra}\r\n{body}",
            body.len()
        )
        .into_bytes()
    };
    let path = format!("/webhooks/bitrix24/{}", leadscore::demo::PORTAL);

    // The well-formed request goes through (the probe itself works).
    assert_eq!(
        raw_status(&d, &post(path.clone(), String::new())).await,
        Some(200)
    );
    assert_eq!(d.store().pending_len(), 1);

    // hyper's HTTP/1 defaults answer these itself (414 for a URI over 64 KiB, 431 for
    // a head over ~400 KiB or more than 100 headers); axum adds no limits of its own.
    let cases = [
        (
            "a 100 KB path",
            post(format!("{path}/{}", "a".repeat(100 * 1024)), String::new()),
        ),
        (
            "a 100 KB query",
            post(
                format!("{path}?x={}", "a".repeat(100 * 1024)),
                String::new(),
            ),
        ),
        (
            "a 1 MB header",
            post(
                path.clone(),
                format!("x-big: {}\r\n", "a".repeat(1024 * 1024)),
            ),
        ),
        (
            "500 headers",
            post(
                path.clone(),
                (0..500).map(|i| format!("x-h{i}: v\r\n")).collect(),
            ),
        ),
    ];
    for (what, req) in cases {
        let status = raw_status(&d, &req).await;
        let status = status.unwrap_or_else(|| panic!("{what}: closed without an answer"));
        assert!(
            (400..500).contains(&status),
            "{what}: expected a 4xx, got {status}"
        );
    }
    assert_eq!(d.store().pending_len(), 1, "none of them queued anything");

    // The daemon still serves after the abuse.
    assert_eq!(raw_status(&d, &post(path, String::new())).await, Some(200));
    let health = reqwest::get(format!("http://{}/healthz", d.addr()))
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);
}

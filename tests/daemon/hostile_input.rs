//! Hostile input over real HTTP on 127.0.0.1 (issue 14): what a stranger without the
//! token can make the daemon spend. Each probe asserts its status, that nothing was
//! queued, and that /healthz still answers quickly afterwards; random paths add no
//! metric series; idle and slow connections are closed by the timeouts and never block a
//! valid webhook.

use std::time::{Duration, Instant};

use crate::common::{self, Daemon, Options};
use leadscore::config::Config;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bounds for a loaded two-core CI box running a debug build: far above what a healthy
/// daemon needs (milliseconds), far below what the quadratic parser took (seconds).
const QUICK: Duration = Duration::from_secs(2);

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A Bitrix24 lead event with the given id, `ts` and token.
fn event(id: &str, ts: i64, token: &str) -> String {
    format!(
        "event=ONCRMLEADUPDATE&data%5BFIELDS%5D%5BID%5D={id}&ts={ts}\
         &auth%5Bdomain%5D=sandbox.bitrix24.test&auth%5Bmember_id%5D=m\
         &auth%5Bapplication_token%5D={token}"
    )
}

/// `common::post`, timed.
async fn post(url: &str, body: String) -> (u16, Duration) {
    let t = Instant::now();
    let (status, _) = common::post(url, &body).await;
    (status, t.elapsed())
}

async fn healthz_latency(d: &Daemon) -> Duration {
    let t = Instant::now();
    let resp = reqwest::get(format!("http://{}/healthz", d.addr()))
        .await
        .expect("healthz answers");
    assert_eq!(resp.status().as_u16(), 200);
    t.elapsed()
}

fn with_replay_window(config: &mut Config) {
    let portal = &mut config.portals[0];
    let mut settings = portal
        .settings_of::<leadscore::crm::bitrix24::settings::Settings>()
        .expect("a Bitrix24 portal")
        .clone();
    settings.webhook.max_event_age_secs = Some(300);
    portal.settings = std::sync::Arc::new(settings);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_bodies_are_refused_at_once_and_queue_nothing() {
    let d = Daemon::start_idle(Some(with_replay_window)).await;
    let token = d.token.clone();
    let repro = vec!["a[]"; 10_000].join("&");
    let auth =
        format!("&auth%5Bdomain%5D=d&auth%5Bmember_id%5D=m&auth%5Bapplication_token%5D={token}");
    let mut deep = String::new();
    let mut i = 0;
    while deep.len() < 60 * 1024 {
        deep.push_str(&format!("k{i}{}=1&", "[a]".repeat(16)));
        i += 1;
    }
    let amocrm_hook = d.hook.replace("/bitrix24/", "/amocrm/");
    let probes: Vec<(&str, String, String, u16)> = vec![
        (
            "the issue's reproduction",
            d.hook.clone(),
            repro.clone(),
            401,
        ),
        (
            "the reproduction with the right token",
            d.hook.clone(),
            format!("{repro}{auth}"),
            400,
        ),
        (
            "60 KiB of 16-level keys with the right token",
            d.hook.clone(),
            format!("{deep}{auth}"),
            400,
        ),
        (
            "60 KiB of 16-level keys without a token",
            d.hook.clone(),
            deep.clone(),
            401,
        ),
        (
            "a wrong token",
            d.hook.clone(),
            event("5", now(), "not-the-token"),
            401,
        ),
        (
            "lead id 0001",
            d.hook.clone(),
            event("0001", now(), &token),
            400,
        ),
        (
            "a 60,000-digit lead id",
            d.hook.clone(),
            event(&"7".repeat(60_000), now(), &token),
            400,
        ),
        (
            "a replayed event an hour old",
            d.hook.clone(),
            event("5", now() - 3600, &token),
            401,
        ),
        (
            "an event without ts",
            d.hook.clone(),
            event("5", now(), &token).replace(&format!("&ts={}", now()), ""),
            401,
        ),
        (
            "a body over max_body_bytes",
            d.hook.clone(),
            format!("{}{auth}", "a=1&".repeat(20_000)),
            413,
        ),
        (
            // (hyper refuses a URI over 64 KiB itself.)
            "the amoCRM route with a 60 kB query",
            format!("{amocrm_hook}?{}", vec!["a[]"; 15_000].join("&")),
            event("5", now(), &token),
            404,
        ),
        (
            "an unknown portal",
            format!("{}-nope", d.hook),
            event("5", now(), &token),
            404,
        ),
    ];
    for (what, url, body, want) in probes {
        let before = d.store().pending_len();
        let (status, took) = post(&url, body).await;
        assert_eq!(status, want, "{what}");
        assert!(took < QUICK, "{what}: answered in {took:?}");
        assert_eq!(d.store().pending_len(), before, "{what}: nothing queued");
        let health = healthz_latency(&d).await;
        assert!(
            health < QUICK,
            "{what}: /healthz took {health:?} afterwards"
        );
    }

    // The probes can see an enqueue: a fresh, valid event is queued.
    assert_eq!(post(&d.hook, event("5", now(), &token)).await.0, 200);
    assert_eq!(d.store().pending_len(), 1);
}

/// Metric lines (not comments) of /metrics, and the size of the whole answer.
async fn series(d: &Daemon) -> (Vec<String>, usize) {
    let text = reqwest::get(format!("http://{}/metrics", d.addr()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.rsplit_once(' ').map_or(l, |(name, _)| name).to_string())
        .collect();
    (lines, text.len())
}

fn random_segment(rng: &mut impl Rng) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.~";
    let len = if rng.random_ratio(1, 100) {
        4096
    } else {
        rng.random_range(1..=200)
    };
    let mut s: String = (0..len)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect();
    // Escapes that decode to control characters and quotes, for the log lines.
    if rng.random_ratio(1, 4) {
        s.push_str("%0A%22%1B");
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_path_segments_add_no_metric_series() {
    let d = Daemon::start_idle(None).await;
    let base = format!("http://{}/webhooks", d.addr());
    let portal = leadscore::demo::PORTAL;
    // The `unknown` series exist after the first stranger of each kind.
    for url in [
        format!("{base}/nope/{portal}"),
        format!("{base}/bitrix24/nope"),
        format!("{base}/nope/nope"),
    ] {
        assert_eq!(post(&url, String::new()).await.0, 404);
    }
    let (before, size_before) = series(&d).await;

    // 10,000 strangers over four keep-alive connections.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(4)
        .build()
        .unwrap();
    let mut senders = Vec::new();
    for seed in 0..4 {
        let (client, base) = (client.clone(), base.clone());
        senders.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            for n in 0..2_500 {
                let seg = random_segment(&mut rng);
                let url = match n % 3 {
                    0 => format!("{base}/{seg}/{portal}"),
                    1 => format!("{base}/bitrix24/{seg}"),
                    _ => format!("{base}/{seg}/{}", random_segment(&mut rng)),
                };
                let resp = client.post(&url).body("a=1").send().await.unwrap();
                assert_eq!(resp.status().as_u16(), 404, "{}", &url[..url.len().min(80)]);
                let _ = resp.bytes().await;
            }
        }));
    }
    for s in senders {
        s.await.unwrap();
    }

    let (after, size_after) = series(&d).await;
    let new: Vec<&String> = after.iter().filter(|l| !before.contains(l)).collect();
    assert!(new.is_empty(), "new series: {new:?}");
    assert_eq!(after.len(), before.len());
    // Only counter values changed (a few digits), not the exposition's shape.
    assert!(
        size_after < size_before + 64,
        "/metrics grew from {size_before} to {size_after} bytes"
    );
    assert_eq!(d.store().pending_len(), 0);
}

fn short_timeouts(config: &mut Config) {
    config.server.header_read_timeout_secs = 8;
    config.server.keep_alive_timeout_secs = 1;
    config.server.body_read_timeout_secs = 1;
}

/// Read until the server closes the connection; what it sent, or `None` if it was
/// still open after `limit`.
async fn until_closed(s: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(limit, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .ok()
    .map(|_| got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_connections_are_closed_and_never_block_a_webhook() {
    let d = Daemon::start_idle(Some(short_timeouts)).await;
    let opened = Instant::now();
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(TcpStream::connect(d.addr()).await.unwrap());
    }
    // A head that never ends, and a body that never ends.
    let mut slow_head = TcpStream::connect(d.addr()).await.unwrap();
    slow_head
        .write_all(b"POST /webhooks/bitrix24/main HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let mut slow_body = TcpStream::connect(d.addr()).await.unwrap();
    let path = format!("/webhooks/bitrix24/{}", leadscore::demo::PORTAL);
    slow_body
        .write_all(
            format!("POST {path} HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\nevent=")
                .as_bytes(),
        )
        .await
        .unwrap();

    // While all of them are open, a valid webhook goes through at once.
    let (status, took) = post(&d.hook, d.lead_event(7)).await;
    assert_eq!(status, 200);
    assert!(
        took < QUICK,
        "valid webhook took {took:?} beside 302 idle connections"
    );
    assert_eq!(d.store().pending_len(), 1);

    // A kept-alive connection that was answered closes after keep_alive_timeout_secs
    // (1 s), well before the header timeout (8 s).
    let mut kept = TcpStream::connect(d.addr()).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let answered = Instant::now();
    let got = until_closed(&mut kept, Duration::from_secs(30))
        .await
        .expect("the kept-alive connection is closed");
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    let kept_for = answered.elapsed();
    assert!(
        kept_for < Duration::from_secs(6),
        "idle keep-alive connection closed after {kept_for:?}"
    );

    // The slow body gets 408 after body_read_timeout_secs.
    let got = until_closed(&mut slow_body, Duration::from_secs(30))
        .await
        .expect("the slow body's connection is closed");
    assert!(
        got.starts_with(b"HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&got)
    );

    // Every idle connection and the slow head are closed by the header timeout.
    for (n, s) in idle.iter_mut().chain([&mut slow_head]).enumerate() {
        let left = Duration::from_secs(60).saturating_sub(opened.elapsed());
        assert!(
            until_closed(s, left).await.is_some(),
            "connection {n} still open after {:?}",
            opened.elapsed()
        );
    }
    assert!(
        opened.elapsed() >= Duration::from_secs(8),
        "closed by the header timeout, not before it"
    );
    assert_eq!(d.store().pending_len(), 1, "none of them queued anything");
    assert!(healthz_latency(&d).await < QUICK);
}

fn with_dashboard_token(config: &mut Config) {
    config.server.dashboard_token = Some(secrecy::SecretString::from("dash-t0ken"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_takes_any_case_bearer_and_sends_security_headers() {
    let d = Daemon::start(Options {
        bind_events: false,
        configure: Some(with_dashboard_token),
        ..Options::default()
    })
    .await;
    let client = reqwest::Client::new();
    for (path, auth, want) in [
        ("/dashboard", "bearer dash-t0ken", 200),
        ("/status", "BEARER dash-t0ken", 200),
        ("/dashboard", "Bearer nope", 401),
    ] {
        let resp = client
            .get(format!("http://{}{path}", d.addr()))
            .header("authorization", auth)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), want, "{path} {auth}");
        let h = resp.headers();
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'none'"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(!csp.contains("script-src"), "no script is allowed: {csp}");
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["referrer-policy"], "no-referrer");
    }
}

//! Helpers shared by the sandbox tests: a plain reqwest client, the long-lived token,
//! a small axum receiver for webhooks, and a form decoder.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use leadscore_amocrm_sandbox::SandboxHandle;
use percent_encoding::percent_decode_str;
use secrecy::ExposeSecret;
use serde_json::Value;
use tokio::sync::oneshot;

/// A client with bounded timeouts.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(5))
        .build()
        .expect("client")
}

/// The sandbox's long-lived token.
pub fn token(amo: &SandboxHandle) -> String {
    amo.long_lived_token()
        .expect("long-lived token")
        .expose_secret()
        .to_owned()
}

/// `GET base + path` with the long-lived token.
pub async fn get(amo: &SandboxHandle, path: &str) -> reqwest::Response {
    client()
        .get(format!("{}{}", amo.base_url(), path))
        .bearer_auth(token(amo))
        .send()
        .await
        .expect("GET")
}

/// `GET` expecting 200 and a HAL body.
pub async fn get_json(amo: &SandboxHandle, path: &str) -> Value {
    let resp = get(amo, path).await;
    assert_eq!(resp.status(), 200, "GET {path}");
    let ctype = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert_eq!(ctype, "application/hal+json", "GET {path}");
    resp.json().await.expect("json")
}

/// `method base + path` with a JSON body and the long-lived token.
pub async fn send(
    amo: &SandboxHandle,
    method: reqwest::Method,
    path: &str,
    body: &Value,
) -> reqwest::Response {
    client()
        .request(method, format!("{}{}", amo.base_url(), path))
        .bearer_auth(token(amo))
        .json(body)
        .send()
        .await
        .expect("request")
}

/// Decodes an `application/x-www-form-urlencoded` body into ordered pairs.
pub fn form_pairs(body: &str) -> Vec<(String, String)> {
    let dec = |s: &str| {
        percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    body.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (dec(k), dec(v)),
            None => (dec(p), String::new()),
        })
        .collect()
}

/// The value of `key` in decoded pairs.
pub fn form_get<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// One POST the receiver got.
#[derive(Clone, Debug)]
pub struct Hit {
    pub headers: HeaderMap,
    pub query: Option<String>,
    pub body: String,
}

#[derive(Clone)]
struct RxState {
    hits: Arc<Mutex<Vec<Hit>>>,
    status: Arc<AtomicU16>,
}

/// A webhook receiver on 127.0.0.1 that records every POST and answers `status`.
pub struct Receiver {
    pub url: String,
    hits: Arc<Mutex<Vec<Hit>>>,
    status: Arc<AtomicU16>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

async fn record(
    State(st): State<RxState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    st.hits.lock().unwrap().push(Hit {
        headers,
        query,
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    StatusCode::from_u16(st.status.load(Ordering::SeqCst)).unwrap()
}

impl Receiver {
    /// Starts a receiver whose URL carries `?secret=s3cr3t`.
    pub async fn start() -> Self {
        let hits = Arc::new(Mutex::new(Vec::new()));
        let status = Arc::new(AtomicU16::new(200));
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(record))
            .with_state(RxState {
                hits: hits.clone(),
                status: status.clone(),
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        Self {
            url: format!("http://{addr}/hook?secret=s3cr3t"),
            hits,
            status,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Everything received so far.
    pub fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    /// The status answered from now on.
    pub fn answer(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    /// Stops the receiver.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

//! `GET /status`, `GET /dashboard` and `leadscore status`, against the real daemon and
//! the Bitrix24 sandbox: a lead crosses the threshold, then every view must show it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use chrono::Utc;
use leadscore::app::{self, Running};
use leadscore::config::Config;
use leadscore::crm::TaskRef;
use leadscore::demo;
use leadscore::status::StatusReport;
use leadscore::store::Crossing;
use leadscore_bitrix24_sandbox::{Sandbox, SandboxHandle, SandboxOptions};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const APP_TOKEN: &str = "status-test-app-token-0123456789";
const DASH_TOKEN: &str = "dash-secret-token-for-tests-42";

struct Setup {
    sandbox: SandboxHandle,
    _dir: tempfile::TempDir,
    config_path: PathBuf,
}

/// A sandbox portal and a config for it on a fixed port, optionally with a token.
async fn setup(token: Option<&str>) -> Setup {
    let sandbox = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let prepared = demo::prepare(&sandbox, dir.path(), APP_TOKEN)
        .await
        .unwrap();
    let config_path = prepared.config_path.clone();
    drop(prepared);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut text = std::fs::read_to_string(&config_path).unwrap();
    text = text.replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{port}\""),
    );
    text = text.replace("sweep_interval_secs = 5", "sweep_interval_secs = 3600");
    if let Some(t) = token {
        text = text.replace(
            "workers = 2\n",
            &format!("workers = 2\ndashboard_token = {t:?}\n"),
        );
    }
    std::fs::write(&config_path, text).unwrap();
    Setup {
        sandbox,
        _dir: dir,
        config_path,
    }
}

fn load(path: &Path) -> Config {
    leadscore::config::load(path).expect("config loads")
}

async fn start(config: &Config) -> (Running, CancellationToken) {
    let listener = TcpListener::bind(&config.server.listen).await.unwrap();
    let shutdown = CancellationToken::new();
    let running = app::start(config.clone(), listener, shutdown.clone())
        .await
        .unwrap();
    (running, shutdown)
}

async fn stop(running: Running, shutdown: CancellationToken) {
    shutdown.cancel();
    let handle = running.handle;
    drop(running.pipeline);
    handle.await.unwrap().unwrap();
}

/// A strong lead plus a demo request: 80 points in the seed model, one call-now task.
async fn hot_lead(s: &Setup, running: &Running) -> u64 {
    let hook = format!("http://{}/webhooks/bitrix24/{}", running.addr, demo::PORTAL);
    demo::bind_events(&s.sandbox, &hook, APP_TOKEN);
    let id = s
        .sandbox
        .add_lead(json!({
            "TITLE": "Hot lead",
            "NAME": "<script>alert('name')</script>",
            "POST": "Генеральный директор <script>alert('post')</script>",
            "EMAIL": [{"VALUE": "ceo@factory.ru", "VALUE_TYPE": "WORK"}],
            "ASSIGNED_BY_ID": "3",
            "UF_CRM_INDUSTRY": "Производство",
            "UF_CRM_REVENUE": "800000000",
            "UF_CRM_EMPLOYEES": "240",
            "UF_CRM_REGION": "Москва",
        }))
        .unwrap();
    s.sandbox
        .add_activity(json!({
            "OWNER_TYPE_ID": 1, "OWNER_ID": id, "TYPE_ID": 6, "PROVIDER_ID": "REST_APP",
            "SUBJECT": "[demo] Заявка на демо", "DESCRIPTION": "https://example.ru/demo",
            "COMPLETED": "Y",
        }))
        .unwrap();
    demo::settle(&s.sandbox, &running.pipeline, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(s.sandbox.tasks().len(), 1, "the lead crossed 70");
    id
}

fn status_cli(config: &Path) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_leadscore"))
        .args(["status", "--config"])
        .arg(config)
        .env_remove("LEADSCORE_CONFIG")
        .output()
        .expect("the binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_status_and_dashboard_show_the_crossing_escaped() {
    let s = setup(None).await;
    let config = load(&s.config_path);
    let (running, shutdown) = start(&config).await;
    let lead = hot_lead(&s, &running).await;
    let base = format!("http://{}", running.addr);
    let http = reqwest::Client::new();

    let report: StatusReport = http
        .get(format!("{base}/status"))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(report.source, "daemon");
    let p = &report.portals[0];
    assert_eq!(p.id, demo::PORTAL);
    assert_eq!(p.tasks_today, 1);
    let hot = p.tiers.iter().find(|t| t.tier == "hot").expect("hot tier");
    assert_eq!(hot.leads, 1);
    assert_eq!(p.tiers.iter().map(|t| t.leads).sum::<usize>(), 1);
    assert!(p
        .crm_health
        .as_ref()
        .is_some_and(|h| h.healthy && h.last_ok.is_some()));
    let pacing = p
        .pacing
        .clone()
        .expect("the Bitrix24 client reports its limiter");
    assert!(pacing.requests > 0 && pacing.limit_errors == 0 && !pacing.blocked);
    let crossing = &p.recent_crossings[0];
    assert_eq!(crossing.lead, lead.to_string());
    assert_eq!(crossing.score, Some(80));

    // A crossing whose lead id and task id carry markup (both come from the CRM).
    running
        .pipeline
        .store
        .set_crossing(
            demo::PORTAL,
            "<script>alert('lead')</script>",
            &Crossing::Fired {
                task: TaskRef {
                    id: "<img src=x onerror=alert(1)>".into(),
                    open: true,
                },
                marker: "m".into(),
                at: Utc::now(),
                fell_below: false,
            },
        )
        .unwrap();
    let resp = http.get(format!("{base}/dashboard")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = resp.text().await.unwrap();
    assert!(html.contains("Recent threshold crossings"));
    assert!(html.contains(&format!("<td>{lead}</td>")), "{html}");
    assert!(html.contains(&crossing.task));
    assert!(html.contains("&lt;script&gt;alert(&#39;lead&#39;)&lt;/script&gt;"));
    assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"));
    // The lead's position is quoted in the breakdown: CRM text, escaped.
    assert!(
        crossing
            .breakdown
            .as_deref()
            .unwrap_or("")
            .contains("<script>alert('post')"),
        "{crossing:?}"
    );
    assert!(
        html.contains("&lt;script&gt;alert(&#39;post&#39;)"),
        "{html}"
    );
    assert!(!html.contains("<script"), "no raw markup from the CRM");
    assert!(!html.contains("<img"), "no raw markup from the CRM");

    // While the daemon holds the data dir, `leadscore status` asks it over HTTP.
    let path = s.config_path.clone();
    let (ok, out, err) = tokio::task::spawn_blocking(move || status_cli(&path))
        .await
        .unwrap();
    assert!(ok, "status failed: {err}");
    assert!(out.contains("(daemon,"), "{out}");
    assert!(out.contains("hot 1"), "{out}");
    assert!(out.contains(" req, 0 limited"), "limiter state: {out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("demo ") && l.contains(" yes ")),
        "{out}"
    );

    stop(running, shutdown).await;

    // Daemon stopped: the store is read directly (no CRM health then).
    let path = s.config_path.clone();
    let (ok, out, err) = tokio::task::spawn_blocking(move || status_cli(&path))
        .await
        .unwrap();
    assert!(ok, "status failed: {err}");
    assert!(out.contains("(data dir,"), "{out}");
    assert!(out.contains("hot 1"), "{out}");
    let demo_line = out
        .lines()
        .find(|l| l.starts_with("demo "))
        .unwrap_or_else(|| panic!("{out}"));
    // Two crossings today: the real one and the hand-made one above.
    let cols: Vec<&str> = demo_line.split_whitespace().collect();
    assert_eq!(cols[6], "2", "{demo_line}");
    s.sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_is_required_when_configured() {
    let s = setup(Some(DASH_TOKEN)).await;
    let config = load(&s.config_path);
    assert!(config.server.dashboard_token.is_some());
    let (running, shutdown) = start(&config).await;
    let base = format!("http://{}", running.addr);
    let http = reqwest::Client::new();
    for path in ["/dashboard", "/dashboard/model", "/status"] {
        let resp = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(resp.status(), 401, "{path} without a token");
        assert_eq!(resp.headers()["www-authenticate"], "Bearer");
        let resp = http
            .get(format!("{base}{path}?token=wrong-{DASH_TOKEN}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "{path} with a wrong token");
        let resp = http
            .get(format!("{base}{path}"))
            .bearer_auth("dash-secret-token-for-tests-4")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "{path} with a prefix of the token");
        let resp = http
            .get(format!("{base}{path}?token={DASH_TOKEN}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path} with ?token=");
        let resp = http
            .get(format!("{base}{path}"))
            .bearer_auth(DASH_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path} with a bearer token");
    }
    // `leadscore status` sends the token from the config.
    let path = s.config_path.clone();
    let (ok, out, err) = tokio::task::spawn_blocking(move || status_cli(&path))
        .await
        .unwrap();
    assert!(ok, "status failed: {err}");
    assert!(out.contains("(daemon,"), "{out}");
    stop(running, shutdown).await;
    s.sandbox.shutdown().await;
}

//! Test harness: the real daemon (`app::start`, real HTTP on 127.0.0.1, real sled in a
//! temp dir) against the Bitrix24 sandbox portal.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use leadscore::app::{self, Running};
use leadscore::config::Config;
use leadscore::demo;
use leadscore::pipeline::Pipeline;
use leadscore::store::Store;
use leadscore_bitrix24_sandbox::{Sandbox, SandboxHandle, SandboxOptions};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A daemon and its sandbox portal.
pub struct Daemon {
    pub sandbox: SandboxHandle,
    pub dir: tempfile::TempDir,
    pub config: Config,
    pub token: String,
    pub hook: String,
    running: Option<Running>,
    shutdown: CancellationToken,
    bindings: Vec<u32>,
    /// The store `prepare` opened, handed to the first launch.
    first_store: Option<std::sync::Arc<leadscore::store::Store>>,
}

/// Knobs tests turn.
pub struct Options {
    pub sandbox: SandboxOptions,
    pub token: String,
    pub coalesce_ms: u64,
    pub comment: bool,
    pub bind_events: bool,
    /// Overrides `[server] queue_limit` (most leads waiting on disk).
    pub queue_limit: Option<usize>,
    /// Last word on the daemon's config before it starts (rate limits and the like).
    pub configure: Option<fn(&mut Config)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            sandbox: SandboxOptions::default(),
            token: "t0k3n-for-tests-0123456789abcdef".into(),
            coalesce_ms: 150,
            comment: false,
            bind_events: true,
            queue_limit: None,
            configure: None,
        }
    }
}

impl Daemon {
    pub async fn start(opts: Options) -> Daemon {
        let sandbox = Sandbox::start(opts.sandbox).await.expect("sandbox starts");
        let dir = tempfile::tempdir().unwrap();
        let prepared = demo::prepare(&sandbox, dir.path(), &opts.token)
            .await
            .expect("prepare");
        let mut config = prepared.config;
        config.server.coalesce_ms = opts.coalesce_ms;
        config.server.retry_delays_secs = vec![1, 1, 2, 2, 3, 5];
        config.server.sweep_interval_secs = 3600;
        config.portals[0].fields.comment = opts.comment;
        if let Some(limit) = opts.queue_limit {
            config.server.queue_limit = limit;
        }
        if let Some(configure) = opts.configure {
            configure(&mut config);
        }
        let mut d = Daemon {
            first_store: Some(prepared.store),
            sandbox,
            dir,
            config,
            token: opts.token,
            hook: String::new(),
            running: None,
            shutdown: CancellationToken::new(),
            bindings: Vec::new(),
        };
        d.launch(opts.bind_events).await;
        d
    }

    /// A daemon whose queue only fills (nothing becomes due, no sandbox events bound),
    /// so what a request queued stays visible; `configure` changes the config first.
    pub async fn start_idle(configure: Option<fn(&mut Config)>) -> Daemon {
        Daemon::start(Options {
            coalesce_ms: 600_000,
            bind_events: false,
            configure,
            ..Options::default()
        })
        .await
    }

    /// Start the daemon (again) on the config and data dir; `bind` subscribes its
    /// webhook URL to the portal's events.
    pub async fn launch(&mut self, bind: bool) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        self.shutdown = CancellationToken::new();
        // The first launch takes the store `prepare` opened (reopening at once would race
        // sled's release of its file lock); a restart opens it again, as a new process does.
        let running = match self.first_store.take() {
            Some(store) => {
                app::start_with_store(self.config.clone(), store, listener, self.shutdown.clone())
                    .await
            }
            None => app::start(self.config.clone(), listener, self.shutdown.clone()).await,
        }
        .expect("daemon starts");
        self.hook = format!("http://{}/webhooks/bitrix24/{}", running.addr, demo::PORTAL);
        for id in self.bindings.drain(..) {
            self.sandbox.unbind_event(id);
        }
        if bind {
            self.bindings = demo::bind_events(&self.sandbox, &self.hook, &self.token);
        }
        self.running = Some(running);
    }

    /// Stop the portal's webhooks to the daemon (to see what the daemon does on its own).
    pub fn unbind_events(&mut self) {
        for id in self.bindings.drain(..) {
            self.sandbox.unbind_event(id);
        }
    }

    pub fn pipeline(&self) -> &Pipeline {
        &self.running.as_ref().expect("running").pipeline
    }

    pub fn store(&self) -> &Store {
        &self.pipeline().store
    }

    /// Stop gracefully (as on SIGTERM) and wait for the state to be flushed.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(r) = self.running.take() {
            let handle = r.handle;
            drop(r.pipeline);
            handle.await.unwrap().unwrap();
        }
    }

    /// The store of a stopped daemon (as an admin command sees it), handed to the next
    /// launch instead of being reopened (which would race sled's lock release).
    pub fn stopped_store(&mut self) -> std::sync::Arc<Store> {
        assert!(self.running.is_none(), "stop the daemon first");
        let store = match &self.first_store {
            Some(s) => s.clone(),
            None => std::sync::Arc::new(
                Store::open(&self.config.server.data_dir).expect("the store opens"),
            ),
        };
        self.first_store = Some(store.clone());
        store
    }

    /// Stop and start again on the same data dir (a new port; events rebound).
    pub async fn restart(&mut self) {
        self.stop().await;
        self.launch(true).await;
    }

    /// Wait until every webhook is delivered and every lead processed.
    pub async fn settle(&self) {
        demo::settle(&self.sandbox, self.pipeline(), Duration::from_secs(120))
            .await
            .expect("settles");
    }

    /// The daemon's listening address.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.running.as_ref().expect("running").addr
    }

    /// The config file `demo::prepare` wrote (the daemon runs with a tuned copy of it).
    pub fn config_path(&self) -> std::path::PathBuf {
        self.dir.path().join("demo.toml")
    }

    /// A Bitrix24 `ONCRMLEADUPDATE` body for lead `id`, signed with the daemon's token,
    /// as the portal would send it.
    pub fn lead_event(&self, id: u64) -> String {
        format!(
            "event=ONCRMLEADUPDATE&event_handler_id=7&data%5BFIELDS%5D%5BID%5D={id}&ts=1763000000\
             &auth%5Bdomain%5D=sandbox.bitrix24.test&auth%5Bmember_id%5D=5a3d0c1e9b7f4a2c8d6e0f1a2b3c4d5e\
             &auth%5Bapplication_token%5D={}",
            self.token
        )
    }

    /// POST a raw body to the daemon's webhook URL.
    pub async fn post(&self, body: &str) -> (u16, Value) {
        post(&self.hook, body).await
    }

    /// The score the CRM holds for a lead.
    pub fn crm_score(&self, id: u64) -> Option<i64> {
        let lead = self.sandbox.get_lead(id)?;
        let v = &lead["UF_CRM_LEADSCORE"];
        v.as_i64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
    }

    /// The explanation the CRM holds for a lead (its card's "why" line).
    pub fn crm_card(&self, id: u64) -> String {
        let lead = self.sandbox.get_lead(id).expect("lead exists");
        lead["UF_CRM_LEADSCORE_WHY"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// Tasks bound to a lead.
    pub fn tasks_for(&self, id: u64) -> usize {
        let tag = format!("L_{id}");
        self.sandbox
            .tasks()
            .iter()
            .filter(|t| t.crm_bindings.contains(&tag))
            .count()
    }

    /// A lead with a strong fit (60 points in the seed model) and no activity yet.
    pub fn add_strong_lead(&self, n: usize) -> u64 {
        self.add_lead_of(n, "240", "Москва")
    }

    /// The strong lead with its headcount and region varied (the seed model gives 15
    /// for 100–499 staff, 8 for 500+, 7 for 20–99, and 5 for a served region).
    pub fn add_lead_of(&self, n: usize, employees: &str, region: &str) -> u64 {
        self.sandbox
            .add_lead(strong_lead_fields(n, employees, region))
            .unwrap()
    }

    /// A demo-request activity on a lead (+20 in the seed model).
    pub fn add_demo_request(&self, lead: u64) -> u64 {
        self.sandbox
            .add_activity(json!({
                "OWNER_TYPE_ID": 1,
                "OWNER_ID": lead,
                "TYPE_ID": 6,
                "PROVIDER_ID": "REST_APP",
                "SUBJECT": "[demo] Заявка на демо",
                "DESCRIPTION": "https://example.ru/demo",
                "COMPLETED": "Y",
            }))
            .unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// POST a form body and read the JSON answer.
pub async fn post(url: &str, body: &str) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.to_string())
        .send()
        .await
        .expect("daemon answers");
    let status = resp.status().as_u16();
    let json = resp.json::<Value>().await.unwrap_or(Value::Null);
    (status, json)
}

/// Requests grouped by what they carried: a `batch` is named by the distinct methods of
/// the commands recorded after it (the sandbox records a batch, then its commands).
pub fn request_shapes(
    calls: &[leadscore_bitrix24_sandbox::CallRecord],
) -> BTreeMap<String, (usize, usize)> {
    let mut shapes: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut i = 0;
    while i < calls.len() {
        let top = &calls[i];
        i += 1;
        if top.in_batch {
            continue;
        }
        let mut methods = std::collections::BTreeSet::new();
        let mut commands = 0;
        while i < calls.len() && calls[i].in_batch {
            methods.insert(calls[i].method.as_str());
            commands += 1;
            i += 1;
        }
        let name = if top.method == "batch" {
            format!(
                "batch[{}]",
                methods.into_iter().collect::<Vec<_>>().join("+")
            )
        } else {
            top.method.clone()
        };
        let e = shapes.entry(name).or_default();
        e.0 += 1;
        e.1 += commands;
    }
    shapes
}

/// Print [`request_shapes`], one line per shape.
pub fn print_shapes(shapes: &BTreeMap<String, (usize, usize)>) {
    for (shape, (requests, commands)) in shapes {
        eprintln!("  {requests:>4} requests, {commands:>5} commands: {shape}");
    }
}

/// The fields of the strong lead `n` (60 points in the seed model with 240 staff and
/// Moscow), for a test that adds fields of its own before the lead is made.
pub fn strong_lead_fields(n: usize, employees: &str, region: &str) -> Value {
    json!({
        "TITLE": format!("Lead {n}"),
        "NAME": format!("Имя{n}"),
        "POST": "Генеральный директор",
        "EMAIL": [{"VALUE": format!("ceo{n}@factory{n}.ru"), "VALUE_TYPE": "WORK"}],
        "ASSIGNED_BY_ID": "3",
        "UF_CRM_INDUSTRY": "Производство",
        "UF_CRM_REVENUE": "800000000",
        "UF_CRM_EMPLOYEES": employees,
        "UF_CRM_REGION": region,
    })
}

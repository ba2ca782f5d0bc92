//! Wiring: one `run` that production (`serve`), the demo and the tests all call.
//!
//! It opens the store, builds one CRM client per portal, then runs the HTTP intake, the
//! workers and the reconciliation sweeps side by side until `shutdown` fires; then it
//! stops accepting, lets in-flight batches finish and flushes sled.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{Config, Portal};
use crate::crm::{registry, Changed, Crm, CrmAdmin, Subject};
use crate::intake::{self, AppState};
use crate::pipeline::{Pipeline, PipelineSettings, PortalRuntime};
use crate::store::{Cause, CauseSource, Store, Written};

/// Build the CRM client for a portal (once per portal: reloads reuse it).
pub fn build_crm(portal: &Portal, store: &Arc<Store>) -> anyhow::Result<Arc<dyn Crm>> {
    Ok(registry::build(portal, store)?.crm)
}

/// Build the admin side of a portal's CRM (`leadscore setup`, the demo).
pub fn build_admin(portal: &Portal, store: &Arc<Store>) -> anyhow::Result<Arc<dyn CrmAdmin>> {
    Ok(registry::build(portal, store)?.admin)
}

/// The model's tiers as (id, label) pairs: what `setup` puts into the tier field.
pub fn tier_pairs(config: &Config) -> Vec<(String, String)> {
    config
        .model
        .tiers()
        .iter()
        .map(|t| (t.id.clone(), t.label.clone()))
        .collect()
}

/// Pipeline settings from the config.
pub fn settings(config: &Config) -> PipelineSettings {
    PipelineSettings {
        coalesce: Duration::from_millis(config.server.coalesce_ms),
        queue_limit: config.server.queue_limit,
        retry_delays: config
            .server
            .retry_delays_secs
            .iter()
            .map(|s| Duration::from_secs(*s))
            .collect(),
        language: config.scoring.language,
        hot_wait_warn: Duration::from_secs(config.server.hot_wait_warn_secs),
    }
}

/// Open the store and build the pipeline for a config.
pub fn build_pipeline(config: &Config, store: Arc<Store>) -> anyhow::Result<Arc<Pipeline>> {
    let mut portals = Vec::new();
    for p in &config.portals {
        portals.push(PortalRuntime {
            portal: p.clone(),
            crm: build_crm(p, &store)?,
        });
    }
    Ok(Pipeline::new(
        store,
        portals,
        config.model.clone(),
        config.shadow.clone(),
        settings(config),
        Arc::new(crate::metrics::Metrics::new()),
    )?)
}

/// A started daemon: its pipeline (for tests and the demo to watch) and its task.
pub struct Running {
    pub pipeline: Arc<Pipeline>,
    pub addr: std::net::SocketAddr,
    pub handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Run the daemon until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    start(config, listener, shutdown)
        .await?
        .handle
        .await
        .context("daemon task panicked")?
}

/// Open the store named by the config.
pub fn open_store(config: &Config) -> anyhow::Result<Arc<Store>> {
    Ok(Arc::new(Store::open(&config.server.data_dir).with_context(|| {
        format!(
            "cannot open the store in {} (is another leadscore process using it? sled allows one at a time)",
            config.server.data_dir.display()
        )
    })?))
}

/// Start the daemon in the background; it stops when `shutdown` is cancelled.
pub async fn start(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<Running> {
    let store = open_store(&config)?;
    start_with_store(config, store, listener, shutdown).await
}

/// Start with a store the caller already opened (the demo runs `setup` on it first).
pub async fn start_with_store(
    config: Config,
    store: Arc<Store>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<Running> {
    let pipeline = build_pipeline(&config, store.clone())?;
    let addr = listener.local_addr()?;
    info!(%addr, portals = config.portals.len(), pending = store.pending_len(), "leadscore is listening");

    let router =
        intake::router(AppState::new(pipeline.clone()), &config.server).layer(axum::Extension(
            Arc::new(crate::dashboard::DashboardAccess::from_config(&config)),
        ));
    if let Some(w) = intake::serve::fd_limit_warning(config.server.max_connections) {
        warn!("{w}");
    }
    let limits = intake::serve::ConnLimits::from_server(&config.server);
    let http_stop = shutdown.clone();
    // Connection caps and timeouts; peer addresses let /dashboard and /status serve
    // loopback clients only.
    let http = tokio::spawn(intake::serve::serve(listener, router, limits, http_stop));
    // Cancelled when the workers end for any reason (a panic too): the systemd
    // watchdog stops pinging then.
    let workers_alive = CancellationToken::new();
    let workers_guard = workers_alive.clone().drop_guard();
    let workers = tokio::spawn(
        pipeline
            .clone()
            .run(config.server.workers, shutdown.clone()),
    );
    let workers = tokio::spawn(async move {
        let _guard = workers_guard;
        workers.await
    });
    let mut sweeps = Vec::new();
    for rt in pipeline.portals() {
        let interval = Duration::from_secs(config.server.sweep_interval_secs.max(1));
        sweeps.push(tokio::spawn(sweep_loop(
            pipeline.clone(),
            rt.portal.id.clone(),
            interval,
            shutdown.clone(),
        )));
    }
    sweeps.push(tokio::spawn(crate::tracking::expiry_loop(
        pipeline.clone(),
        shutdown.clone(),
    )));
    let notifier = tokio::spawn(crate::notify::supervise(
        Arc::new(crate::notify::Notifier::from_env()),
        store.clone(),
        workers_alive,
        shutdown.clone(),
    ));
    let handle = tokio::spawn(async move {
        http.await.context("HTTP task panicked")?;
        workers
            .await
            .context("worker task panicked")?
            .context("worker task panicked")?;
        let _ = notifier.await;
        for s in sweeps {
            let _ = s.await;
        }
        store.flush().await?;
        info!(pending = store.pending_len(), "stopped; state flushed");
        Ok(())
    });
    Ok(Running {
        pipeline,
        addr,
        handle,
    })
}

fn sweep_key(portal: &str) -> String {
    format!("sweep:{portal}")
}

/// Periodically ask the CRM for leads changed since the last sweep and queue them:
/// Bitrix24 never redelivers a failed webhook, and amoCRM loses some too.
async fn sweep_loop(
    pipeline: Arc<Pipeline>,
    portal: String,
    interval: Duration,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        if let Err(e) = sweep_once(&pipeline, &portal, Utc::now()).await {
            warn!(portal = %portal, error = %e, "reconciliation sweep failed; will try again");
        }
    }
}

/// One reconciliation sweep: queue every lead modified since the cursor, except those
/// whose last modification is our own write (its stamp is kept with the write), then
/// move the cursor to the sweep's start (with a minute of overlap for clock skew).
pub async fn sweep_once(
    pipeline: &Pipeline,
    portal: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<usize> {
    // The live runtime: after a config reload, the sweep uses the same CRM client
    // (and rate-limit pacing) as the workers.
    let rt = pipeline.live_portal(portal).context("unknown portal")?;
    let store = &pipeline.store;
    let cursor = store
        .meta_get(&sweep_key(portal))?
        .and_then(|s| DateTime::parse_from_rfc3339(&s).ok())
        .map(|d| d.with_timezone(&Utc));
    let Some(since) = cursor else {
        // First run: start from now (a full rescore is an explicit admin command).
        store.meta_set(&sweep_key(portal), &now.to_rfc3339())?;
        store.flush().await?;
        return Ok(0);
    };
    let changed = rt
        .crm
        .changed_since(since - chrono::Duration::seconds(60))
        .await?;
    let listed = changed.len();
    let mut subjects = Vec::with_capacity(listed);
    for c in changed {
        if !only_our_write(&c, store.written(portal, &c.id)?.as_ref()) {
            subjects.push(Subject::Lead(c.id));
        }
    }
    if !subjects.is_empty() {
        let cause = Cause {
            source: CauseSource::Sweep,
            detail: "reconciliation sweep".into(),
            at: now,
        };
        pipeline.enqueue(portal, &subjects, cause, now).await?;
    }
    store.meta_set(&sweep_key(portal), &now.to_rfc3339())?;
    store.flush().await?;
    info!(portal = %portal, leads = subjects.len(), own_writes = listed - subjects.len(), "reconciliation sweep queued changed leads (skipped those whose last change is our own write)");
    Ok(subjects.len())
}

/// Is the change the sweep listed our own write and nothing after it? Only when the
/// CRM gave a stamp for both and the listed one is no newer than ours.
pub fn only_our_write(changed: &Changed, written: Option<&Written>) -> bool {
    match (written.and_then(|w| w.crm_stamp.as_ref()), &changed.stamp) {
        (Some(ours), Some(listed)) => ours.covers(listed),
        _ => false,
    }
}

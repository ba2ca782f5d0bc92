//! Config reload (SIGHUP): a valid new config applies to new work; an invalid one
//! changes nothing.
//!
//! What a reload swaps is exactly what the workers read per batch: the scoring model
//! (rules, groups, tiers, triggers) and, per portal, the field mapping, tier values,
//! task settings and call-now threshold. They live together in one [`Live`] snapshot
//! behind a lock that is held only to clone an `Arc`, so a batch already running
//! finishes on the snapshot it started with and never mixes old and new. The CRM
//! adapters take the field mapping and task settings per call from that snapshot, so a
//! reload keeps every portal's one client (its limiter and token holder) as it is.
//!
//! Some settings cannot change under a running daemon: the listening socket, the data
//! directory, worker count and queue tuning, the set of portals, credentials and the
//! webhook checks. A reload reports those as needing a restart and keeps the values
//! the daemon started with.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError};

use tracing::{info, warn};

use super::{Pipeline, PortalRuntime};
use crate::config::{same_secret, Config, Portal, Server};
use crate::scoring::Model;

/// The reloadable state the workers read, replaced as a whole.
pub(super) struct Live {
    pub(super) model: Arc<Model>,
    /// `server.shadow_model`: scored beside the live model, recorded, never written.
    pub(super) shadow: Option<Arc<Model>>,
    pub(super) portals: HashMap<String, Arc<PortalRuntime>>,
}

impl Live {
    /// The model a portal's leads are scored and written with: its own, else the
    /// config's `[scoring]`.
    pub(super) fn model_for(&self, rt: &PortalRuntime) -> Arc<Model> {
        rt.portal
            .model
            .clone()
            .unwrap_or_else(|| self.model.clone())
    }
}

/// What a successful reload did, for the log (and tests).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// Changes now in force for new work.
    pub applied: Vec<String>,
    /// Changes found in the file that only a restart applies; the old values stay.
    pub needs_restart: Vec<String>,
}

/// Why a reload was refused. Nothing was swapped.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file does not load (every error, with file:line:col).
    #[error("the config has errors; keeping the running one:\n{0}")]
    Invalid(crate::config::ConfigErrors),
}

/// Portal settings only a restart applies (identity, pacing, webhook checks).
fn portal_restart_changes(old: &Portal, new: &Portal, out: &mut Vec<String>) {
    let id = &old.id;
    if old.crm != new.crm {
        out.push(format!("portal {id}: crm"));
    }
    if old.settings.auth_label() != new.settings.auth_label() {
        out.push(format!("portal {id}: authentication method"));
    }
    if old.rate_limit != new.rate_limit {
        out.push(format!("portal {id}: rate_limit"));
    }
    if !old.settings.same_webhook_checks(&*new.settings) {
        out.push(format!("portal {id}: webhook checks (token, account)"));
    }
    if old.settings.scope_label() != new.settings.scope_label() {
        out.push(format!("portal {id}: entities"));
    }
}

/// `[server]` settings only a restart applies. The caller that knows the running
/// config (the `serve` command) adds these to a [`ReloadReport`].
pub fn server_restart_changes(old: &Server, new: &Server) -> Vec<String> {
    let mut out = Vec::new();
    let mut check = |name: &str, changed: bool| {
        if changed {
            out.push(format!("server.{name}"));
        }
    };
    check("listen", old.listen != new.listen);
    check("data_dir", old.data_dir != new.data_dir);
    check("workers", old.workers != new.workers);
    check("coalesce_ms", old.coalesce_ms != new.coalesce_ms);
    check(
        "sweep_interval_secs",
        old.sweep_interval_secs != new.sweep_interval_secs,
    );
    check("max_body_bytes", old.max_body_bytes != new.max_body_bytes);
    check("queue_limit", old.queue_limit != new.queue_limit);
    check(
        "retry_delays_secs",
        old.retry_delays_secs != new.retry_delays_secs,
    );
    check(
        "dashboard_token",
        !same_secret(&old.dashboard_token, &new.dashboard_token),
    );
    out
}

impl Pipeline {
    pub(super) fn live(&self) -> Arc<Live> {
        self.live
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The scoring model new work is scored with.
    pub fn model(&self) -> Arc<Model> {
        self.live().model.clone()
    }

    /// A portal as the workers use it now (reloadable settings included).
    pub fn live_portal(&self, id: &str) -> Option<Arc<PortalRuntime>> {
        self.live().portals.get(id).cloned()
    }

    /// Apply a loaded config to new work: the scoring model and, per portal, field
    /// mapping, tier values, task settings and threshold. Every portal keeps its CRM
    /// client (adapters read the new settings per call), so nothing is rebuilt.
    /// Settings only a restart applies are listed in the report and keep their old
    /// values (see the module docs).
    pub fn reload(&self, config: &Config) -> Result<ReloadReport, ReloadError> {
        let old = self.live();
        let mut report = ReloadReport::default();
        let mut portals = HashMap::with_capacity(old.portals.len());
        for (id, rt) in &old.portals {
            let Some(new) = config.portals.iter().find(|p| &p.id == id) else {
                report.needs_restart.push(format!(
                    "portal {id} removed (it keeps running until a restart)"
                ));
                portals.insert(id.clone(), rt.clone());
                continue;
            };
            let cur = &rt.portal;
            portal_restart_changes(cur, new, &mut report.needs_restart);
            let portal = Portal {
                fields: new.fields.clone(),
                task: new.task.clone(),
                threshold: new.threshold,
                rearm_below: new.rearm_below,
                model: new.model.clone(),
                stages: new.stages.clone(),
                ..cur.clone()
            };
            let fields_changed = cur.fields != portal.fields;
            let task_changed = cur.task != portal.task;
            if fields_changed {
                report.applied.push(format!(
                    "portal {id}: fields (mapping, tier values, comment)"
                ));
            }
            if task_changed {
                report.applied.push(format!("portal {id}: task"));
            }
            if (cur.threshold, cur.rearm_below) != (portal.threshold, portal.rearm_below) {
                report.applied.push(format!(
                    "portal {id}: call-now threshold {} / re-arm {}",
                    portal.threshold, portal.rearm_below
                ));
            }
            // One client per portal for the daemon's life: two would mean two limiters
            // and two holders of a single-use refresh token.
            let crm = rt.crm.clone();
            portals.insert(id.clone(), Arc::new(PortalRuntime { portal, crm }));
        }
        for p in &config.portals {
            if !old.portals.contains_key(&p.id) {
                report.needs_restart.push(format!("portal {} added", p.id));
            }
        }
        if config.scoring.language != self.settings.language {
            report.needs_restart.push("scoring.language".into());
        }
        report
            .applied
            .push("scoring model (rules, groups, tiers)".into());
        if config.shadow.is_some() || old.shadow.is_some() {
            report
                .applied
                .push("shadow model (server.shadow_model)".into());
        }
        let live = Arc::new(Live {
            model: config.model.clone(),
            shadow: config.shadow.clone(),
            portals,
        });
        *self.live.write().unwrap_or_else(PoisonError::into_inner) = live;
        Ok(report)
    }

    /// Load `path` and [`reload`](Self::reload) it. Logs what applied, what needs a
    /// restart, or every error (and then the running config stays).
    pub fn reload_file(
        &self,
        path: &std::path::Path,
        running: &Server,
    ) -> Result<ReloadReport, ReloadError> {
        let result = crate::config::load(path)
            .map_err(ReloadError::Invalid)
            .and_then(|config| {
                let mut report = self.reload(&config)?;
                let mut server = server_restart_changes(running, &config.server);
                server.append(&mut report.needs_restart);
                report.needs_restart = server;
                Ok(report)
            });
        match &result {
            Ok(report) => {
                info!(file = %path.display(), applied = ?report.applied, "config reloaded");
                if !report.needs_restart.is_empty() {
                    warn!(changed = ?report.needs_restart, "these changes need a restart; the running values stay until then");
                }
            }
            Err(e) => warn!(file = %path.display(), error = %e, "config reload refused"),
        }
        result
    }
}

impl Pipeline {
    /// After a reload: when the scoring model changed, log what it changes on the
    /// stored inputs (a dry run: tier migration, new crossings), and re-score them
    /// through a rescore job (no tasks) when `server.rescore_on_reload` is on. Without
    /// it, the new model reaches a lead with its next event or decay timer.
    pub async fn after_model_change(self: &Arc<Self>, before: &Arc<Model>, server: &Server) {
        let live = self.live();
        if Arc::ptr_eq(before, &live.model) || before.same_rules(&live.model) {
            return;
        }
        let me = self.clone();
        let now = self.now();
        let report = tokio::task::spawn_blocking(move || {
            let mut report = super::rescore::DryRunReport::default();
            let live = me.live();
            for rt in live.portals.values() {
                let leads = super::rescore::known_leads(&me.store, &rt.portal.id)?;
                let model = live.model_for(rt);
                super::rescore::dry_run(&me.store, &rt.portal, &model, &leads, now, &mut report)?;
            }
            Ok::<_, crate::store::StoreError>(report)
        })
        .await;
        match report {
            Ok(Ok(r)) => {
                info!(summary = %r.summary(), "the new scoring model, on the stored leads")
            }
            Ok(Err(e)) => warn!(error = %e, "cannot compare the new model on the stored leads"),
            Err(e) => warn!(error = %e, "cannot compare the new model on the stored leads"),
        }
        if server.rescore_on_reload {
            let req = super::rescore::RescoreRequest {
                portal: None,
                target: super::rescore::Target::Stored,
                dry_run: false,
                tasks: super::rescore::TaskPolicy::None,
            };
            match self.start_rescore(req).await {
                Ok(p) => info!(
                    leads = p.job.map_or(0, |j| j.total()),
                    "rescoring the stored leads with the new model (server.rescore_on_reload)"
                ),
                Err(e) => warn!(error = %e, "cannot start the rescore after the reload"),
            }
        }
    }
}

/// On SIGHUP, reload `path` into the running pipeline until `shutdown`: a valid file
/// applies to new events, an invalid one is logged error by error and the old config
/// stays. `running` is the `[server]` section the daemon started with.
pub fn spawn_sighup_reload(
    pipeline: Arc<Pipeline>,
    path: std::path::PathBuf,
    running: Server,
    shutdown: tokio_util::sync::CancellationToken,
) {
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "cannot listen for SIGHUP; config reload is off");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                got = hup.recv() => if got.is_none() { return },
            }
            info!(file = %path.display(), "SIGHUP: reloading the config");
            // Reading the file and building clients blocks; keep it off the async workers.
            let (p, f, s) = (pipeline.clone(), path.clone(), running.clone());
            let before = pipeline.live().model.clone();
            // The outcome is logged by `reload_file` itself.
            let reloaded = tokio::task::spawn_blocking(move || p.reload_file(&f, &s)).await;
            if matches!(reloaded, Ok(Ok(_))) {
                pipeline.after_model_change(&before, &running).await;
            }
        }
    });
    #[cfg(not(unix))]
    let _ = (pipeline, path, running, shutdown);
}

//! Closed leads read from a portal's CRM ([`CrmSource`]), cached in the store so the
//! next backtest of the portal makes no request.
//!
//! The pull goes through the portal's adapter, i.e. the same paced client (with the
//! bucket level the daemon last saved) the daemon uses. The rule for running beside a
//! daemon: the pull needs the store, and sled lets one process open it, so while the
//! daemon runs the pull is refused instead of opening a second client whose pacer
//! would not know the daemon's; run it with the daemon stopped (or on an export).

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use chrono::Utc;

use super::{ClosedLead, OutcomeSource};
use crate::config::Config;
use crate::crm::{registry, PullProgress};
use crate::store::{OutcomePull, Store};

/// A portal's closed leads: from the store's cache, else pulled from its CRM.
pub struct CrmSource<'a> {
    pub config: &'a Config,
    pub portal: String,
    /// Pull again even when a cached pull exists.
    pub refresh: bool,
}

/// What the last [`CrmSource::pull`] did (printed by the CLI, read by tests).
#[derive(Debug, Clone, PartialEq)]
pub struct PullReport {
    pub from_cache: bool,
    pub leads: usize,
    /// CRM requests made now (0 from the cache).
    pub requests: u64,
    pub floor_requests: Option<u64>,
    pub secs: f64,
}

impl CrmSource<'_> {
    /// The closed leads and how they were obtained.
    pub fn pull(&self) -> anyhow::Result<(Vec<ClosedLead>, PullReport)> {
        let portal = self
            .config
            .portals
            .iter()
            .find(|p| p.id == self.portal)
            .with_context(|| {
                format!(
                    "no portal {:?} in {}",
                    self.portal,
                    self.config.path.display()
                )
            })?;
        let store = Arc::new(Store::open(&self.config.server.data_dir).with_context(|| {
            format!(
                "cannot open the store in {}: is the daemon running? A pull beside it would \
                 pace the portal with a second rate limiter; stop it first, or backtest an export",
                self.config.server.data_dir.display()
            )
        })?);
        let started = Instant::now();
        if !self.refresh {
            if let Some((pull, leads)) = store.outcomes(&portal.id)? {
                eprintln!(
                    "portal {}: {} closed leads from the cache (pulled {}; --refresh reads the CRM again)",
                    portal.id,
                    leads.len(),
                    pull.pulled_at.format("%Y-%m-%d %H:%M UTC")
                );
                let report = PullReport {
                    from_cache: true,
                    leads: leads.len(),
                    requests: 0,
                    floor_requests: None,
                    secs: started.elapsed().as_secs_f64(),
                };
                return Ok((leads, report));
            }
        }
        let adapter = registry::build(portal, &store)?;
        let bar = progress_sink(&portal.id);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let before = adapter.crm.pacing().map_or(0, |p| p.requests);
        let pulled = rt
            .block_on(adapter.crm.closed_leads(&portal.fields, &*bar.0))
            .with_context(|| format!("portal {}: cannot read closed leads", portal.id))?;
        let requests = adapter.crm.pacing().map_or(0, |p| p.requests) - before;
        (bar.1)();
        let report = PullReport {
            from_cache: false,
            leads: pulled.leads.len(),
            requests,
            floor_requests: pulled.floor_requests,
            secs: started.elapsed().as_secs_f64(),
        };
        store.put_outcomes(
            &portal.id,
            &OutcomePull {
                pulled_at: Utc::now(),
                leads: pulled.leads.len(),
                requests,
            },
            &pulled.leads,
        )?;
        eprintln!(
            "portal {}: {} closed leads read in {} requests (floor {}) in {:.1} s; cached",
            portal.id,
            report.leads,
            requests,
            report
                .floor_requests
                .map_or("unknown".to_string(), |f| f.to_string()),
            report.secs
        );
        Ok((pulled.leads, report))
    }
}

type Sink = (Box<crate::crm::PullProgressFn>, Box<dyn Fn()>);

/// A spinner with counts on a terminal, a plain line per step otherwise.
fn progress_sink(portal: &str) -> Sink {
    if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {prefix}: {msg} [{elapsed}]")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        bar.set_prefix(format!("pulling {portal}"));
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        let b = bar.clone();
        (
            Box::new(move |p: PullProgress| {
                b.set_message(format!(
                    "{}: {} rows, {} requests",
                    p.phase, p.rows, p.requests
                ))
            }),
            Box::new(move || bar.finish_and_clear()),
        )
    } else {
        let portal = portal.to_string();
        (
            Box::new(move |p: PullProgress| {
                eprintln!(
                    "pulling {portal}: {}: {} rows, {} requests",
                    p.phase, p.rows, p.requests
                )
            }),
            Box::new(|| {}),
        )
    }
}

impl OutcomeSource for CrmSource<'_> {
    fn describe(&self) -> String {
        format!("portal {}", self.portal)
    }

    fn closed_leads(&self) -> anyhow::Result<Vec<ClosedLead>> {
        Ok(self.pull()?.0)
    }
}

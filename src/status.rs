//! What `leadscore status`, `GET /status` and the dashboard show: one report built from
//! the store (and, inside the daemon, the pipeline's live CRM health).
//!
//! sled lets one process open the data dir at a time, so `leadscore status` reads the
//! store directly only when no daemon runs; otherwise it asks the daemon's `/status`,
//! which serves this same report as JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::pipeline::Pipeline;
use crate::store::{Crossing, Store, StoreError};

/// How many recent threshold crossings a report lists per portal.
pub const RECENT_CROSSINGS: usize = 20;

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// `daemon` (asked over HTTP, includes CRM health) or `data dir` (read directly).
    pub source: String,
    pub generated_at: DateTime<Utc>,
    /// Entries waiting in the durable queue (all portals).
    pub queue: usize,
    /// Entries in the dead-letter queue (all portals).
    pub dead_letters: usize,
    /// Leads whose score was written at least once.
    pub leads_scored: usize,
    pub portals: Vec<PortalStatus>,
}

/// One portal's part of the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PortalStatus {
    pub id: String,
    pub crm: String,
    /// Queue entries of this portal, and how many of them are retrying after an error.
    pub queued: usize,
    pub retrying: usize,
    pub dead_letters: usize,
    /// When the last reconciliation sweep ran (meta `sweep:<portal>`).
    pub last_sweep: Option<DateTime<Utc>>,
    /// Leads per tier, in the model's tier order (then any tier the model no longer has).
    pub tiers: Vec<TierCount>,
    /// "Call now" tasks created since midnight UTC.
    pub tasks_today: usize,
    /// Only known to a running daemon.
    pub crm_health: Option<CrmHealth>,
    /// The CRM client's rate limiter since the daemon started (running daemon only).
    pub pacing: Option<crate::crm::PacingState>,
    /// Latest threshold crossings, newest first.
    pub recent_crossings: Vec<RecentCrossing>,
    /// Latest dead letters' errors, newest first (at most 5).
    pub recent_errors: Vec<RecentError>,
    /// Per rep, when `[portal.task.capacity]` is set: today's tasks and who waits.
    #[serde(default)]
    pub capacity: Vec<RepCapacity>,
    /// Open deals' plain and weighted sums per rep and pipeline (`None`: the portal
    /// configures no `[portal.stages]`).
    #[serde(default)]
    pub pipeline_value: Option<crate::weighted::PipelineSums>,
}

/// One rep's day against the portal's capacity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepCapacity {
    /// The rep's user id (`""`: leads without a responsible user).
    pub rep: String,
    /// Call-now tasks today (the portal's calendar day).
    pub today: u32,
    /// The daily limit.
    pub limit: u32,
    /// Hot leads waiting for this rep's next free slot.
    pub waiting: usize,
}

/// Leads in one tier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierCount {
    pub tier: String,
    pub label: String,
    pub leads: usize,
}

/// Whether the portal's CRM answered lately (from the pipeline's health marks).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrmHealth {
    pub healthy: bool,
    pub last_ok: Option<DateTime<Utc>>,
    pub last_error: Option<DateTime<Utc>>,
}

/// One lead that crossed the threshold and got a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecentCrossing {
    pub lead: String,
    pub at: DateTime<Utc>,
    pub task: String,
    pub task_open: bool,
    /// The lead's current score, tier and breakdown as last written (text from the CRM
    /// data: escape before putting it in HTML).
    pub score: Option<i32>,
    pub tier: Option<String>,
    pub breakdown: Option<String>,
}

/// One dead letter, briefly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecentError {
    pub id: u64,
    pub at: DateTime<Utc>,
    pub error: String,
}

/// A portal to report on: its id and CRM name (`bitrix24`, `amocrm`).
#[derive(Debug, Clone)]
pub struct PortalSpec {
    pub id: String,
    pub crm: String,
    /// The portal's task capacity, if it has one.
    pub capacity: Option<crate::config::CapacitySection>,
    /// `[portal.stages]`: the weighted pipeline value's coefficients.
    pub stages: crate::weighted::StageCoefficients,
}

fn from_ms(ms: i64) -> Option<DateTime<Utc>> {
    (ms > 0)
        .then(|| DateTime::from_timestamp_millis(ms))
        .flatten()
}

/// Build the report from the store; `pipeline` adds live CRM health.
pub fn collect(
    store: &Store,
    portals: &[PortalSpec],
    tiers: &[(String, String)],
    pipeline: Option<&Pipeline>,
    now: DateTime<Utc>,
) -> Result<StatusReport, StoreError> {
    let stats = store.stats();
    let pending = store.pending_all()?;
    let letters = store.dead_letters()?;
    let today = now.date_naive();
    let mut out = Vec::new();
    for spec in portals {
        let p = spec.id.as_str();
        let written: BTreeMap<String, crate::store::Written> =
            store.written_all(p)?.into_iter().collect();
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for w in written.values() {
            *counts.entry(w.tier.as_str()).or_default() += 1;
        }
        let mut tier_counts: Vec<TierCount> = tiers
            .iter()
            .map(|(id, label)| TierCount {
                tier: id.clone(),
                label: label.clone(),
                leads: counts.remove(id.as_str()).unwrap_or(0),
            })
            .collect();
        tier_counts.extend(counts.into_iter().map(|(id, n)| TierCount {
            tier: id.to_string(),
            label: id.to_string(),
            leads: n,
        }));
        let mut fired: Vec<RecentCrossing> = store
            .crossings_all(p)?
            .into_iter()
            .filter_map(|(lead, c)| match c {
                Crossing::Fired { task, at, .. } => {
                    let w = written.get(&lead);
                    Some(RecentCrossing {
                        score: w.map(|w| w.score),
                        tier: w.map(|w| w.tier.clone()),
                        breakdown: w.map(|w| w.breakdown.clone()),
                        lead,
                        at,
                        task: task.id,
                        task_open: task.open,
                    })
                }
                _ => None,
            })
            .collect();
        let tasks_today = fired.iter().filter(|c| c.at.date_naive() == today).count();
        fired.sort_by(|a, b| b.at.cmp(&a.at).then_with(|| a.lead.cmp(&b.lead)));
        fired.truncate(RECENT_CROSSINGS);
        let mut errors: Vec<RecentError> = letters
            .iter()
            .filter(|d| d.entry.portal == p)
            .map(|d| RecentError {
                id: d.id,
                at: d.at,
                error: d.error.clone(),
            })
            .collect();
        let portal_letters = errors.len();
        errors.sort_by_key(|e| std::cmp::Reverse(e.at));
        errors.truncate(5);
        let mine = pending.iter().filter(|e| e.portal == p);
        let last_sweep = store
            .meta_get(&format!("sweep:{p}"))?
            .and_then(|s| DateTime::parse_from_rfc3339(&s).ok())
            .map(|d| d.with_timezone(&Utc));
        let crm = pipeline.and_then(|pl| pl.health(p)).map(|h| {
            use std::sync::atomic::Ordering::Relaxed;
            CrmHealth {
                healthy: h.healthy(),
                last_ok: from_ms(h.last_ok_ms.load(Relaxed)),
                last_error: from_ms(h.last_err_ms.load(Relaxed)),
            }
        });
        let capacity = match &spec.capacity {
            Some(cap) => rep_capacity(store, p, cap, now)?,
            None => Vec::new(),
        };
        let pipeline_value = if spec.stages.is_empty() {
            None
        } else {
            Some(spec.stages.sums(store.deal_values(p)?.iter()))
        };
        out.push(PortalStatus {
            capacity,
            id: spec.id.clone(),
            crm: spec.crm.clone(),
            queued: mine.clone().count(),
            retrying: mine.filter(|e| e.attempts > 0).count(),
            dead_letters: portal_letters,
            last_sweep,
            tiers: tier_counts,
            tasks_today,
            crm_health: crm,
            pacing: pipeline
                .and_then(|pl| pl.portal(p))
                .and_then(|rt| rt.crm.pacing()),
            recent_crossings: fired,
            recent_errors: errors,
            pipeline_value,
        });
    }
    Ok(StatusReport {
        source: if pipeline.is_some() {
            "daemon".into()
        } else {
            "data dir".into()
        },
        generated_at: now,
        queue: stats.pending,
        dead_letters: stats.dead_letters,
        leads_scored: stats.leads_scored,
        portals: out,
    })
}

/// Each rep with tasks today or leads waiting, by rep id.
fn rep_capacity(
    store: &Store,
    portal: &str,
    cap: &crate::config::CapacitySection,
    now: DateTime<Utc>,
) -> Result<Vec<RepCapacity>, StoreError> {
    let (day, _) = crate::pipeline::capacity::day_of(cap, now);
    let mut reps: BTreeMap<String, RepCapacity> = BTreeMap::new();
    let blank = |rep: &str| RepCapacity {
        rep: rep.to_string(),
        today: 0,
        limit: cap.per_rep_per_day,
        waiting: 0,
    };
    for (rep, n) in store.capacity_day(portal, day)? {
        reps.entry(rep.clone()).or_insert_with(|| blank(&rep)).today = n;
    }
    for (_, w) in store.waiting_all(portal)? {
        reps.entry(w.rep.clone())
            .or_insert_with(|| blank(&w.rep))
            .waiting += 1;
    }
    Ok(reps.into_values().collect())
}

fn ago(at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    let Some(at) = at else {
        return "never".into();
    };
    let s = (now - at).num_seconds().max(0);
    match s {
        0..=119 => format!("{s}s ago"),
        120..=7199 => format!("{}m ago", s / 60),
        7200..=172_799 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86_400),
    }
}

/// The compact table `leadscore status` prints.
pub fn render(r: &StatusReport) -> String {
    let now = r.generated_at;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "leadscore status ({}, {})",
        r.source,
        now.format("%Y-%m-%d %H:%M:%S UTC")
    );
    let _ = writeln!(
        s,
        "queue {}  dead letters {}  leads scored {}",
        r.queue, r.dead_letters, r.leads_scored
    );
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "{:<14} {:<9} {:>6} {:>6} {:>4} {:<10} {:>10} {:<9} {:<22} tiers",
        "portal", "crm", "queued", "retry", "dlq", "sweep", "tasks/day", "crm ok", "limiter"
    );
    for p in &r.portals {
        let tiers = p
            .tiers
            .iter()
            .map(|t| format!("{} {}", t.tier, t.leads))
            .collect::<Vec<_>>()
            .join(", ");
        let health = match &p.crm_health {
            None => "-".to_string(),
            Some(h) if h.healthy => "yes".to_string(),
            Some(h) => format!("NO ({})", ago(h.last_error, now)),
        };
        let limiter = match &p.pacing {
            None => "-".to_string(),
            Some(l) if l.blocked => "BLOCKED by the CRM".to_string(),
            Some(l) if l.pause_summary().is_some() => "PAUSED (see below)".to_string(),
            Some(l) => format!(
                "{} req, {} limited, {:.0}s wait",
                l.requests, l.limit_errors, l.wait_secs
            ),
        };
        let _ = writeln!(
            s,
            "{:<14} {:<9} {:>6} {:>6} {:>4} {:<10} {:>10} {:<9} {:<22} {}",
            p.id,
            p.crm,
            p.queued,
            p.retrying,
            p.dead_letters,
            ago(p.last_sweep, now),
            p.tasks_today,
            health,
            limiter,
            tiers
        );
    }
    for p in &r.portals {
        for c in &p.capacity {
            let rep = if c.rep.is_empty() { "(none)" } else { &c.rep };
            let over = if c.waiting > 0 {
                format!(", OVER CAPACITY: {} waiting", c.waiting)
            } else {
                String::new()
            };
            let _ = writeln!(
                s,
                "{}: rep {rep} {}/{} tasks today{over}",
                p.id, c.today, c.limit
            );
        }
        if let Some(v) = &p.pipeline_value {
            let _ = writeln!(
                s,
                "{}: pipeline value (open deals, plain and weighted):",
                p.id
            );
            s.push_str(&v.render());
        }
    }
    for p in &r.portals {
        let Some(l) = &p.pacing else { continue };
        if let Some(pause) = l.pause_summary() {
            let _ = writeln!(s, "{}: {pause}", p.id);
        }
        for m in &l.methods {
            let _ = writeln!(
                s,
                "{}: {} used {:.0} of {:.0} s operating time{}",
                p.id,
                m.method,
                m.used_secs,
                m.limit_secs,
                if m.paused_until.is_some() {
                    ", paused"
                } else {
                    ""
                }
            );
        }
    }
    s
}

/// Why the running daemon could not be asked for its status.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("server.listen {0:?} is not an address `leadscore status` can connect to")]
    Listen(String),
    #[error("server.listen uses port 0, so the daemon's port is unknown; set a fixed port")]
    PortZero,
    #[error("the daemon at {url} did not answer: {source}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the daemon at {url} refused: HTTP {status} (is server.dashboard_token the same in this config?)")]
    Refused { url: String, status: u16 },
}

/// The URL of the daemon's `/status` for a `listen` address: a wildcard address
/// (0.0.0.0, ::) is reached on loopback.
pub fn status_url(listen: &str) -> Result<String, FetchError> {
    let addr: std::net::SocketAddr = listen
        .parse()
        .map_err(|_| FetchError::Listen(listen.to_string()))?;
    if addr.port() == 0 {
        return Err(FetchError::PortZero);
    }
    let ip = match addr.ip() {
        std::net::IpAddr::V4(v4) if v4.is_unspecified() => {
            std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
        }
        std::net::IpAddr::V6(v6) if v6.is_unspecified() => {
            std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
        }
        ip => ip,
    };
    Ok(format!(
        "http://{}/status",
        std::net::SocketAddr::new(ip, addr.port())
    ))
}

/// Ask a running daemon for its report (`GET /status`, with the dashboard token when
/// the config has one).
pub async fn fetch(server: &crate::config::Server) -> Result<StatusReport, FetchError> {
    use secrecy::ExposeSecret;
    let url = status_url(&server.listen)?;
    let http = |source| FetchError::Http {
        url: url.clone(),
        source,
    };
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .map_err(http)?;
    let mut req = client.get(&url);
    if let Some(token) = &server.dashboard_token {
        req = req.bearer_auth(token.expose_secret());
    }
    let resp = req.send().await.map_err(http)?;
    if !resp.status().is_success() {
        return Err(FetchError::Refused {
            url: url.clone(),
            status: resp.status().as_u16(),
        });
    }
    resp.json::<StatusReport>().await.map_err(http)
}

//! What each `leadscore` subcommand does. `main.rs` only parses arguments.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::config::{self, Config};
use crate::lead::{Activity, Lead};
use crate::store::Store;
use crate::telemetry::{self, LogFormat};

/// Load a config or print every error (with file:line:col) and fail.
pub fn load_config(path: &Path) -> anyhow::Result<Config> {
    load_config_with(path, config::Secrets::Require)
}

/// Load a config for a command that never talks to a CRM (`explain`, `history`,
/// `dlq`): credentials that cannot be resolved here are warnings, not errors.
pub fn load_config_offline(path: &Path) -> anyhow::Result<Config> {
    load_config_with(path, config::Secrets::Optional)
}

fn load_config_with(path: &Path, secrets: config::Secrets) -> anyhow::Result<Config> {
    match config::load_with(path, secrets) {
        Ok(config) => {
            for w in &config.warnings {
                eprintln!("warning: {w}");
            }
            Ok(config)
        }
        Err(errors) => bail!("{} has errors:\n{errors}", path.display()),
    }
}

/// `leadscore check CONFIG`: summary and exit 0, or every error and exit 2. With
/// `offline`, credentials that cannot be resolved from this shell (systemd credentials,
/// the service's environment) are warnings.
pub fn check(path: &Path, offline: bool) -> ExitCode {
    let secrets = if offline {
        config::Secrets::Optional
    } else {
        config::Secrets::Require
    };
    match config::load_with(path, secrets) {
        Ok(config) => {
            print!("{}", config::summary(&config));
            // The file limit is this shell's, which is the service's only when run the
            // same way (systemd sets LimitNOFILE= for the unit).
            if let Some(w) = crate::intake::serve::fd_limit_warning(config.server.max_connections) {
                println!("warning: {w}");
            }
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("{} error(s) in {}", errors.0.len(), path.display());
            ExitCode::from(2)
        }
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid", path.display()))
}

/// Where `explain` reads activities from.
pub struct ExplainInputs<'a> {
    /// Neutral activities (JSON array).
    pub activities: Option<&'a Path>,
    /// The CRM's own rows, classified with `portal`'s activity map.
    pub crm_activities: Option<&'a Path>,
    pub portal: Option<&'a str>,
}

/// `leadscore explain`: score one lead from files and print the table, then how each
/// activity was classified (which `[[portal.activity_map]]` entry, if any).
pub fn explain(
    config_path: &Path,
    lead_path: &Path,
    inputs: ExplainInputs<'_>,
    now: Option<&str>,
) -> anyhow::Result<()> {
    let config = load_config_offline(config_path)?;
    let lead: Lead = read_json(lead_path)?;
    let mut activities: Vec<Activity> = match inputs.activities {
        Some(p) => read_json(p)?,
        None => Vec::new(),
    };
    let mut not_scored = 0;
    if let Some(path) = inputs.crm_activities {
        let id = inputs.portal.context("--crm-activities needs --portal")?;
        let portal = config
            .portals
            .iter()
            .find(|p| p.id == id)
            .with_context(|| format!("no portal `{id}` in {}", config_path.display()))?;
        let entry = crate::crm::registry::of(portal)?;
        let rows: Vec<serde_json::Value> = read_json(path)?;
        for (i, row) in rows.iter().enumerate() {
            match (entry.classify_row)(&portal.fields, row)
                .map_err(|e| anyhow::anyhow!("{} row {}: {e}", path.display(), i + 1))?
            {
                Some(a) => activities.push(a),
                None => not_scored += 1,
            }
        }
    }
    let now = match now {
        Some(s) => DateTime::parse_from_rfc3339(s)
            .with_context(|| format!("--now {s:?} is not an RFC 3339 time"))?
            .with_timezone(&Utc),
        None => Utc::now(),
    };
    let score = config.model.score(&lead, &activities, now);
    print!(
        "{}",
        crate::scoring::render_table(&score, config.scoring.language, now)
    );
    println!();
    println!("{}", score.explain(config.scoring.language, now));
    if inputs.crm_activities.is_some() || activities.iter().any(|a| a.mapped_by.is_some()) {
        println!();
        print!("{}", classification_table(&activities));
        if not_scored > 0 {
            println!("{not_scored} row(s) are no scored activity (e.g. our own notes)");
        }
    }
    Ok(())
}

/// One line per activity: its id, time, kind, and what classified it.
fn classification_table(activities: &[Activity]) -> String {
    let mut out = String::from("activity  at                    kind            classified by\n");
    for a in activities {
        let by = match a.mapped_by {
            Some(n) => format!("activity_map entry #{n}"),
            None => "tag or built-in type rule".to_string(),
        };
        out.push_str(&format!(
            "{:<9} {:<21} {:<15} {by}\n",
            a.id,
            a.at.format("%Y-%m-%d %H:%M UTC"),
            a.kind.as_str()
        ));
    }
    out
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Cancel `token` on SIGINT or SIGTERM.
pub fn cancel_on_signals(token: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => {}
            _ = term => {}
        }
        tracing::info!("shutdown requested");
        token.cancel();
    });
}

/// `leadscore serve`.
pub fn serve(config_path: &Path, format: LogFormat) -> anyhow::Result<()> {
    telemetry::init(format, "info", std::io::stderr);
    let config = load_config(config_path)?;
    runtime()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&config.server.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.server.listen))?;
        let shutdown = CancellationToken::new();
        cancel_on_signals(shutdown.clone());
        let server = config.server.clone();
        let running = crate::app::start(config, listener, shutdown.clone()).await?;
        // SIGHUP reloads the config into the running daemon (see pipeline::reload).
        crate::pipeline::spawn_sighup_reload(
            running.pipeline.clone(),
            config_path.to_path_buf(),
            server,
            shutdown,
        );
        running.handle.await.context("daemon task panicked")?
    })
}

/// Which sandbox `leadscore demo` starts.
#[cfg(feature = "demo")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DemoCrm {
    Bitrix24,
    Amocrm,
}

/// `leadscore demo`.
#[cfg(feature = "demo")]
pub fn demo(
    data_dir: Option<std::path::PathBuf>,
    crm: DemoCrm,
    format: LogFormat,
) -> anyhow::Result<()> {
    telemetry::init(format, "warn", std::io::stderr);
    let rt = runtime()?;
    let mut out = std::io::stdout();
    match crm {
        DemoCrm::Bitrix24 => rt.block_on(crate::demo::run(data_dir, &mut out)),
        DemoCrm::Amocrm => rt.block_on(crate::demo_amocrm::run(data_dir, &mut out)),
    }
}

/// `leadscore setup`: create or find the CRM fields and print the config lines.
pub fn setup(config_path: &Path, portal_id: &str, format: LogFormat) -> anyhow::Result<()> {
    telemetry::init(format, "warn", std::io::stderr);
    let config = load_config(config_path)?;
    let portal = config
        .portals
        .iter()
        .find(|p| p.id == portal_id)
        .with_context(|| format!("no portal {portal_id:?} in {}", config_path.display()))?
        .clone();
    runtime()?.block_on(async move {
        let store = crate::app::open_store(&config)?;
        let admin = crate::app::build_admin(&portal, &store)?;
        let tiers = crate::app::tier_pairs(&config);
        // Setup lists the fields before it creates any, so running it again after a
        // lost answer finds what the first attempt made: retried like the daemon's work.
        let delays = crate::app::settings(&config).retry_delays;
        let setup = crate::crm::admin_retry::with_retries("setup", &delays, || {
            admin.setup_fields(&portal.fields, &tiers)
        })
        .await?;
        store.flush().await?;
        println!("{}", crate::crm::render_setup(&portal, &setup));
        Ok(())
    })
}

fn open_store(config: &Config) -> anyhow::Result<Arc<Store>> {
    crate::app::open_store(config)
}

/// `leadscore history`.
pub fn history(config_path: &Path, portal: &str, lead: &str) -> anyhow::Result<()> {
    let config = load_config_offline(config_path)?;
    let store = open_store(&config)?;
    let entries = store.ledger(portal, lead)?;
    if entries.is_empty() {
        println!("no score history for lead {lead} in portal {portal}");
        return Ok(());
    }
    println!(
        "{:<25} {:>5}  {:<8} {:<28} explanation",
        "time", "score", "tier", "cause"
    );
    for e in entries {
        let cause = e
            .causes
            .last()
            .map(|c| format!("{:?}: {}", c.source, c.detail).to_lowercase())
            .unwrap_or_default();
        println!(
            "{:<25} {:>5}  {:<8} {:<28} {}",
            e.at.format("%Y-%m-%d %H:%M:%S UTC"),
            e.score,
            e.tier,
            truncate(&cause, 28),
            e.explanation
        );
    }
    Ok(())
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}

/// `leadscore status`: queue, dead letters, last sweep, leads by tier and today's tasks
/// per portal. Reads the data dir directly when no daemon holds it (sled admits one
/// process), else asks the running daemon's `/status`.
pub fn status(config_path: &Path) -> anyhow::Result<()> {
    let config = load_config_offline(config_path)?;
    let access = crate::dashboard::DashboardAccess::from_config(&config);
    let dir = &config.server.data_dir;
    if !dir.exists() {
        bail!(
            "no data dir {} yet: the daemon has not run with this config",
            dir.display()
        );
    }
    let report = match Store::open_now(dir) {
        Ok(store) => {
            crate::status::collect(&store, &access.portals, &access.tiers, None, Utc::now())?
        }
        Err(open_error) => runtime()?
            .block_on(crate::status::fetch(&config.server))
            .with_context(|| {
                format!(
                    "{} is in use ({open_error}), so a daemon should be running, but asking it failed",
                    dir.display()
                )
            })?,
    };
    print!("{}", crate::status::render(&report));
    Ok(())
}

/// `leadscore dlq list`.
pub fn dlq_list(config_path: &Path) -> anyhow::Result<()> {
    let config = load_config_offline(config_path)?;
    let store = open_store(&config)?;
    let letters = store.dead_letters()?;
    if letters.is_empty() {
        println!("the dead-letter queue is empty");
    }
    for d in letters {
        println!(
            "{:>6}  {}  portal={} subject={:?} attempts={} error={}",
            d.id,
            d.at.format("%Y-%m-%d %H:%M:%S UTC"),
            d.entry.portal,
            d.entry.subject,
            d.entry.attempts,
            d.error
        );
    }
    Ok(())
}

/// `leadscore dlq replay [ID|--all]`.
pub fn dlq_replay(config_path: &Path, id: Option<u64>, all: bool) -> anyhow::Result<()> {
    let config = load_config_offline(config_path)?;
    let store = open_store(&config)?;
    let ids: Vec<u64> = match (id, all) {
        (Some(id), _) => vec![id],
        (None, true) => store.dead_letters()?.iter().map(|d| d.id).collect(),
        (None, false) => bail!("name a dead letter id or pass --all"),
    };
    let mut n = 0;
    for id in ids {
        if store.replay(id, Utc::now())? {
            n += 1;
        } else {
            eprintln!("no dead letter {id}");
        }
    }
    runtime()?.block_on(store.flush())?;
    println!("{n} dead letter(s) queued again; the daemon processes them on its next start");
    Ok(())
}

/// `leadscore dlq drop ID`.
pub fn dlq_drop(config_path: &Path, id: u64) -> anyhow::Result<()> {
    let config = load_config_offline(config_path)?;
    let store = open_store(&config)?;
    if !store.drop_dead_letter(id)? {
        bail!("no dead letter {id}");
    }
    runtime()?.block_on(store.flush())?;
    println!("dead letter {id} dropped");
    Ok(())
}

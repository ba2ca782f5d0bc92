//! `leadscore rescore`: re-score many leads through the running daemon (so every CRM
//! request goes through its one pacer), or, when no daemon runs, through an in-process
//! daemon on the same data dir. Either way the job is the daemon's durable rescore job
//! (see `pipeline::rescore`): Ctrl-C or kill -9 stops the watching, and the job goes on
//! (or resumes on the next start) from its cursor.

use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use indicatif::{ProgressBar, ProgressStyle};
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::pipeline::rescore::{Progress, RescoreRequest, Target, TaskPolicy};
use crate::pipeline::RescoreError;
use crate::telemetry::{self, LogFormat};

/// What to re-score, from the command line.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Only this portal.
    #[arg(long)]
    pub portal: Option<String>,
    /// Only this lead.
    #[arg(long)]
    pub lead: Option<String>,
    /// Leads modified since this date (2026-11-01 or RFC 3339).
    #[arg(long)]
    pub since: Option<String>,
    /// Every lead the CRM lists.
    #[arg(long)]
    pub all: bool,
    /// Print what would change (tier migration, new crossings, examples); write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// `none` (default) or `new-crossings`.
    #[arg(long, default_value = "none")]
    pub tasks: String,
    /// With `--tasks new-crossings`: most tasks per rep.
    #[arg(long, default_value_t = 5)]
    pub per_rep: usize,
}

/// The request the arguments describe (exactly one of --lead, --since, --all; with
/// none of them, the leads whose inputs are stored).
pub fn request(args: &Args) -> anyhow::Result<RescoreRequest> {
    let target = match (&args.lead, &args.since, args.all) {
        (Some(id), None, false) => Target::Lead { id: id.clone() },
        (None, Some(since), false) => Target::Since {
            since: parse_since(since)?,
        },
        (None, None, true) => Target::All,
        (None, None, false) => Target::Stored,
        _ => bail!("use only one of --lead, --since and --all"),
    };
    let tasks = match args.tasks.as_str() {
        "none" => TaskPolicy::None,
        "new-crossings" => TaskPolicy::NewCrossings {
            per_rep: args.per_rep,
        },
        other => bail!("--tasks {other:?}: use none or new-crossings"),
    };
    Ok(RescoreRequest {
        portal: args.portal.clone(),
        target,
        dry_run: args.dry_run,
        tasks,
    })
}

fn parse_since(s: &str) -> anyhow::Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    let day = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .with_context(|| format!("--since {s:?}: use 2026-11-01 or an RFC 3339 time"))?;
    Ok(day.and_hms_opt(0, 0, 0).expect("midnight").and_utc())
}

/// Run the command.
pub fn run(config_path: &Path, args: &Args, format: LogFormat) -> anyhow::Result<()> {
    let req = request(args)?;
    let config = crate::cli::load_config(config_path)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match via_daemon(&config, &req).await? {
            Some(()) => Ok(()),
            None => in_process(config, &req, format).await,
        }
    })
}

fn admin_url(config: &Config) -> anyhow::Result<String> {
    let status = crate::status::status_url(&config.server.listen)?;
    Ok(status.replace("/status", "/admin/rescore"))
}

/// Through the running daemon; `None` when no daemon answers.
async fn via_daemon(config: &Config, req: &RescoreRequest) -> anyhow::Result<Option<()>> {
    let url = admin_url(config)?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()?;
    let token = config.server.dashboard_token.clone();
    let with_token = |b: reqwest::RequestBuilder| match &token {
        Some(t) => b.bearer_auth(t.expose_secret()),
        None => b,
    };
    let resp = match with_token(http.post(&url).json(req)).send().await {
        Ok(r) => r,
        Err(e) if e.is_connect() => return Ok(None),
        Err(e) => return Err(e).context("the daemon did not answer"),
    };
    let status = resp.status().as_u16();
    if status == 409 {
        eprintln!("a rescore is already running in the daemon: following it");
    } else if status != 200 {
        let text = resp.text().await.unwrap_or_default();
        bail!("the daemon refused the rescore: HTTP {status}: {text}");
    }
    let first: Progress = resp.json().await.context("unreadable answer")?;
    let last = follow(first, || async {
        with_token(http.get(&url))
            .send()
            .await
            .ok()?
            .json::<Progress>()
            .await
            .ok()
    })
    .await;
    finish(&last, req);
    Ok(Some(()))
}

/// No daemon: run one in-process on the data dir until the job is done.
async fn in_process(config: Config, req: &RescoreRequest, format: LogFormat) -> anyhow::Result<()> {
    telemetry::init(format, "warn", std::io::stderr);
    eprintln!(
        "no daemon answers on {}: running the rescore here",
        config.server.listen
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let shutdown = CancellationToken::new();
    crate::cli::cancel_on_signals(shutdown.clone());
    let running = crate::app::start(config, listener, shutdown.clone()).await?;
    let pipeline = running.pipeline.clone();
    let first = match pipeline.start_rescore(req.clone()).await {
        Ok(p) => p,
        Err(RescoreError::Busy { .. }) => {
            eprintln!("an unfinished rescore is in the store: resuming it");
            pipeline.rescore_progress().await
        }
        Err(e) => {
            shutdown.cancel();
            return Err(e.into());
        }
    };
    let stop = shutdown.clone();
    let last = follow(first, || {
        let p = pipeline.clone();
        let stop = stop.clone();
        async move { (!stop.is_cancelled()).then_some(p.rescore_progress().await) }
    })
    .await;
    shutdown.cancel();
    drop(pipeline);
    let handle = running.handle;
    drop(running.pipeline);
    handle.await.context("the daemon task failed")??;
    finish(&last, req);
    Ok(())
}

/// Show progress until the job ends (or `poll` gives up): an indicatif bar on a
/// terminal, a plain line every few seconds otherwise.
async fn follow<F, Fut>(first: Progress, poll: F) -> Progress
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<Progress>>,
{
    let total = first.job.as_ref().map_or(0, |j| j.total()) as u64;
    let tty = std::io::stderr().is_terminal();
    let bar = if tty {
        let b = ProgressBar::new(total);
        b.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} leads  {per_sec}  ETA {eta}  {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        Some(b)
    } else {
        None
    };
    let started = Instant::now();
    let (base_requests, base_limits) = (first.requests, first.limit_errors);
    let mut last = first;
    let mut last_line = Instant::now() - Duration::from_secs(60);
    loop {
        let requests = last.requests.saturating_sub(base_requests);
        let limits = last.limit_errors.saturating_sub(base_limits);
        let rate = last.done as f64 / started.elapsed().as_secs_f64().max(0.001);
        match &bar {
            Some(b) => {
                b.set_position(last.done as u64);
                b.set_message(format!("{requests} requests, {limits} limit answers"));
            }
            None if last_line.elapsed() >= Duration::from_secs(5) || !last.running => {
                eprintln!(
                    "rescore: {}/{total} leads, {rate:.1} leads/s, {requests} requests, {limits} limit answers",
                    last.done
                );
                last_line = Instant::now();
            }
            None => {}
        }
        if !last.running {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        match poll().await {
            Some(p) => last = p,
            None => break,
        }
    }
    if let Some(b) = bar {
        b.finish();
    }
    last
}

fn finish(last: &Progress, req: &RescoreRequest) {
    match last.job.as_ref().and_then(|j| j.report.as_ref()) {
        Some(report) if req.dry_run => print!("{}", report.render()),
        _ if last.running => println!(
            "stopped watching; the rescore goes on in the daemon ({} of {} leads done)",
            last.done,
            last.job.as_ref().map_or(0, |j| j.total())
        ),
        _ => println!(
            "rescore finished: {} leads",
            last.job.as_ref().map_or(0, |j| j.total())
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> Args {
        Args {
            portal: None,
            lead: None,
            since: None,
            all: false,
            dry_run: false,
            tasks: "none".into(),
            per_rep: 5,
        }
    }

    #[test]
    fn arguments_make_one_request() {
        assert_eq!(request(&args()).unwrap().target, Target::Stored);
        let r = request(&Args {
            since: Some("2026-11-01".into()),
            tasks: "new-crossings".into(),
            ..args()
        })
        .unwrap();
        assert_eq!(
            r.target,
            Target::Since {
                since: "2026-11-01T00:00:00Z".parse().unwrap()
            }
        );
        assert_eq!(r.tasks, TaskPolicy::NewCrossings { per_rep: 5 });
        assert!(request(&Args {
            all: true,
            lead: Some("1".into()),
            ..args()
        })
        .is_err());
        assert!(request(&Args {
            tasks: "all".into(),
            ..args()
        })
        .is_err());
    }
}

//! `leadscore backtest`, `leadscore backtest generate` and `leadscore tune`: arguments
//! declared once here (clap), the work done by `crate::backtest`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::backtest::{
    self, generate, report_html, report_text, tune, AsOf, FileSource, OutcomeSource,
};

/// `leadscore backtest …`: a report, or with `generate` a synthetic history.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct BacktestCmd {
    #[command(subcommand)]
    pub action: Option<BacktestAction>,
    #[command(flatten)]
    pub args: Args,
}

/// What `backtest` does besides reporting.
#[derive(Debug, clap::Subcommand)]
pub enum BacktestAction {
    /// Write a seeded, realistic history of closed leads for the example config (JSON
    /// Lines; see docs/backtest.md for how outcomes are drawn).
    Generate {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 2500)]
        leads: usize,
        #[arg(long, default_value_t = 16)]
        seed: u64,
    },
}

/// Report format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
    Html,
}

/// Where closed leads come from and when they are scored (shared by backtest and tune).
#[derive(Debug, clap::Args)]
pub struct Input {
    /// The config whose `[scoring]` model is tested.
    #[arg(long, env = "LEADSCORE_CONFIG", required = true)]
    pub config: Option<PathBuf>,
    /// Closed leads: a JSON Lines (or `.csv`) export, columns in docs/backtest.md.
    #[arg(long, required_unless_present = "portal")]
    pub input: Option<PathBuf>,
    /// With a CSV input: the activities export (lead_id, kind, at, …).
    #[arg(long)]
    pub activities: Option<PathBuf>,
    /// Read outcomes from this portal's CRM (cached in the store after the first pull;
    /// the daemon must not be running: see docs/backtest.md).
    #[arg(long, conflicts_with = "input")]
    pub portal: Option<String>,
    /// With --portal: read the CRM again instead of the cached pull.
    #[arg(long, requires = "portal")]
    pub refresh: bool,
    /// Only leads closed on or after this date (2026-01-01 or RFC 3339).
    #[arg(long)]
    pub since: Option<String>,
    /// When each lead is scored: outcome (just before it), outcome-3d, created+7d, …
    #[arg(long, default_value = "outcome")]
    pub as_of: String,
}

/// `leadscore backtest` arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub input: Input,
    /// A second config (or a copy with another `[scoring]`) to compare on the same leads.
    #[arg(long)]
    pub model: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Write the report here instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Call-now tasks a rep can take per working day: finds the threshold that fits.
    #[arg(long)]
    pub capacity: Option<f64>,
    /// "Of the last N wins …".
    #[arg(long, default_value_t = 50)]
    pub last_wins: usize,
    /// With --portal: compare the live and the shadow model on the portal's outcomes,
    /// from what the ledger kept (agreement, tier changes, call-now tasks).
    #[arg(long, requires = "portal", conflicts_with = "model")]
    pub shadow: bool,
}

/// `leadscore tune` arguments.
#[derive(Debug, clap::Args)]
pub struct TuneArgs {
    #[command(flatten)]
    pub input: Input,
    /// Cross-validation folds.
    #[arg(long, default_value_t = 5)]
    pub folds: usize,
    /// L2 penalty on standardised coefficients.
    #[arg(long, default_value_t = 1.0)]
    pub lambda: f64,
    /// Print the report as JSON (the diff is included) instead of text.
    #[arg(long)]
    pub json: bool,
}

struct Loaded {
    config: crate::config::Config,
    source: String,
    leads: Vec<backtest::ClosedLead>,
    as_of: AsOf,
}

/// A config for an offline analysis: only `[scoring]` matters, so the portal warnings
/// (credentials this shell cannot see) are not printed; errors still stop it.
fn load_model_config(path: &Path) -> anyhow::Result<crate::config::Config> {
    crate::config::load_with(path, crate::config::Secrets::Optional)
        .map_err(|errors| anyhow::anyhow!("{} has errors:\n{errors}", path.display()))
}

fn load(input: &Input) -> anyhow::Result<Loaded> {
    let config_path = input.config.as_deref().context("--config is required")?;
    let (config, src): (_, Box<dyn OutcomeSource>) = match &input.portal {
        // A pull talks to the CRM: its credentials must resolve.
        Some(p) => {
            let config = crate::config::load_with(config_path, crate::config::Secrets::Require)
                .map_err(|e| anyhow::anyhow!("{} has errors:\n{e}", config_path.display()))?;
            let leads = backtest::CrmSource {
                config: &config,
                portal: p.clone(),
                refresh: input.refresh,
            }
            .closed_leads()?;
            let src = Box::new(Pulled(format!("portal {p}"), leads));
            (config, src)
        }
        None => {
            let path = input.input.clone().context("--input is required")?;
            let src = Box::new(FileSource {
                path,
                activities: input.activities.clone(),
            });
            (load_model_config(config_path)?, src)
        }
    };
    let mut leads = src.closed_leads()?;
    if let Some(s) = &input.since {
        let since =
            backtest::history::parse_time(s).map_err(|m| anyhow::anyhow!("--since: {m}"))?;
        leads.retain(|c| c.closed_at >= since);
    }
    if leads.is_empty() {
        bail!("no closed leads in {}", src.describe());
    }
    let as_of: AsOf = input
        .as_of
        .parse()
        .map_err(|m: String| anyhow::anyhow!(m))?;
    Ok(Loaded {
        config,
        source: src.describe(),
        leads,
        as_of,
    })
}

/// Leads already read (a CRM pull is made once, then analysed like a file).
struct Pulled(String, Vec<backtest::ClosedLead>);

impl OutcomeSource for Pulled {
    fn describe(&self) -> String {
        self.0.clone()
    }

    fn closed_leads(&self) -> anyhow::Result<Vec<backtest::ClosedLead>> {
        Ok(self.1.clone())
    }
}

fn emit(out: Option<&Path>, text: &str) -> anyhow::Result<()> {
    match out {
        Some(p) => std::fs::write(p, text).with_context(|| format!("cannot write {}", p.display())),
        None => {
            print!("{text}");
            Ok(())
        }
    }
}

/// `leadscore backtest`.
pub fn run(cmd: &BacktestCmd) -> anyhow::Result<()> {
    if let Some(BacktestAction::Generate { out, leads, seed }) = &cmd.action {
        return run_generate(out, *leads, *seed);
    }
    let a = &cmd.args;
    let l = load(&a.input)?;
    if a.shadow {
        return run_shadow(a, &l);
    }
    let other = match &a.model {
        Some(p) => Some((p.display().to_string(), load_model_config(p)?)),
        None => None,
    };
    let opts = backtest::Options {
        as_of: l.as_of,
        since: None,
        capacity: a.capacity,
        last_wins: a.last_wins,
        top: 10,
    };
    let report = backtest::analyze(
        &l.config.model,
        &l.source,
        &l.leads,
        &opts,
        other.as_ref().map(|(n, c)| (n.as_str(), &*c.model)),
    );
    if let Some(p) = &a.input.portal {
        keep_calibration(&l.config, p, &report.probability)?;
    }
    let text = match a.format {
        Format::Text => report_text::render(&report),
        Format::Json => serde_json::to_string_pretty(&report)? + "\n",
        Format::Html => report_html::render(&report)?,
    };
    emit(a.out.as_deref(), &text)?;
    if let Some(p) = &a.out {
        eprintln!("backtest report written to {}", p.display());
    }
    Ok(())
}

/// A portal's backtest refreshes the calibration the daemon writes "72 ≈ 18%" from
/// (`fields.probability`).
fn keep_calibration(
    config: &crate::config::Config,
    portal: &str,
    c: &backtest::calibration::Calibration,
) -> anyhow::Result<()> {
    let store = crate::store::Store::open(&config.server.data_dir).with_context(|| {
        format!(
            "cannot open the store in {}",
            config.server.data_dir.display()
        )
    })?;
    store.put_calibration(portal, c)?;
    store.flush_blocking()?;
    eprintln!("portal {portal}: calibration kept for the probability field (score ≈ win rate)");
    Ok(())
}

/// `leadscore backtest --portal P --shadow`: the ledger's live and shadow scores
/// before each close of the pull (see `backtest::shadow`).
fn run_shadow(a: &Args, l: &Loaded) -> anyhow::Result<()> {
    let id = a
        .input
        .portal
        .as_deref()
        .context("--shadow needs --portal")?;
    let portal = l
        .config
        .portals
        .iter()
        .find(|p| p.id == id)
        .with_context(|| format!("no portal {id:?}"))?;
    let store = crate::store::Store::open(&l.config.server.data_dir).with_context(|| {
        format!(
            "cannot open the store in {} (is the daemon running?)",
            l.config.server.data_dir.display()
        )
    })?;
    let mut ledgers = std::collections::BTreeMap::new();
    for c in &l.leads {
        ledgers.insert(c.lead.id.clone(), store.ledger(id, &c.lead.id)?);
    }
    drop(store);
    let tiers: Vec<String> = l
        .config
        .model
        .tiers()
        .iter()
        .map(|t| t.id.clone())
        .collect();
    let report = backtest::shadow::compare(id, &l.leads, &ledgers, &tiers, portal.threshold);
    if report.leads == 0 {
        bail!(
            "portal {id}: none of its {} closed leads has a score with a shadow verdict before \
             its close (is server.shadow_model set, and has the daemon scored them since?)",
            l.leads.len()
        );
    }
    let text = match a.format {
        Format::Text => backtest::shadow::render_text(&report),
        Format::Json => serde_json::to_string_pretty(&report)? + "\n",
        Format::Html => bail!("--shadow reports as text or json"),
    };
    emit(a.out.as_deref(), &text)
}

fn run_generate(out: &Path, leads: usize, seed: u64) -> anyhow::Result<()> {
    if out
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
    {
        bail!("generate writes JSON Lines: name the file .jsonl");
    }
    let plan = generate::Plan {
        leads,
        seed,
        ..generate::Plan::default()
    };
    let history = generate::generate(&plan);
    let wins = history
        .iter()
        .filter(|c| c.outcome == backtest::Outcome::Won)
        .count();
    emit(Some(out), &generate::to_jsonl(&history))?;
    eprintln!(
        "{} closed leads ({} won) written to {} (seed {seed})",
        history.len(),
        wins,
        out.display()
    );
    Ok(())
}

/// `leadscore tune`: prints suggested points and a diff; never writes the config.
pub fn run_tune(a: &TuneArgs) -> anyhow::Result<()> {
    let l = load(&a.input)?;
    let opts = tune::TuneOptions {
        as_of: l.as_of,
        folds: a.folds.max(2),
        lambda: a.lambda,
        ..tune::TuneOptions::default()
    };
    let report = tune::tune(&l.config.scoring, &l.config.model, &l.leads, &opts)?;
    let text = std::fs::read_to_string(&l.config.path).unwrap_or_default();
    let diff = tune::toml_diff(&text, &l.config.path.display().to_string(), &report.rules);
    if a.json {
        let mut v = serde_json::to_value(&report)?;
        v["diff"] = serde_json::Value::String(diff);
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", report_text::render_tune(&report, &diff));
    }
    Ok(())
}

//! The `leadscore` command line. Thin on purpose: every command is a function in the
//! library (`leadscore::cli`), so tests run exactly what admins run.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use leadscore::cli;
use leadscore::telemetry::LogFormat;

/// Transparent, automatic lead scoring for Bitrix24 and amoCRM.
#[derive(Debug, Parser)]
#[command(name = "leadscore", version, about)]
struct Args {
    /// Log format (default: human on a terminal, JSON otherwise).
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate a config file and print a one-screen summary (exit 2 on errors).
    Check {
        /// The config file.
        config: PathBuf,
        /// Treat unresolvable credentials (env vars, credential files only the service
        /// sees) as warnings.
        #[arg(long)]
        offline: bool,
    },
    /// Score one lead from JSON files and print the breakdown.
    Explain {
        #[arg(long)]
        config: PathBuf,
        /// Lead JSON (the neutral model, see config/samples/).
        #[arg(long)]
        lead: PathBuf,
        /// Activities JSON array.
        #[arg(long)]
        activities: Option<PathBuf>,
        /// The CRM's own activity rows (a JSON array as its API returns them: Bitrix24
        /// crm.activity.list rows, amoCRM notes or events), classified with the portal's
        /// `[[portal.activity_map]]` as a fetch would; needs --portal.
        #[arg(long, requires = "portal")]
        crm_activities: Option<PathBuf>,
        /// The portal whose activity map classifies --crm-activities.
        #[arg(long)]
        portal: Option<String>,
        /// Score as of this time (RFC 3339), default now.
        #[arg(long)]
        now: Option<String>,
    },
    /// Run the daemon: webhooks in, scores and tasks out.
    Serve {
        #[arg(long, env = "LEADSCORE_CONFIG")]
        config: PathBuf,
    },
    /// Run the daemon against a built-in sandbox CRM with sample leads: no account needed.
    #[cfg(feature = "demo")]
    Demo {
        /// Keep the demo's state in this directory (default: a fresh temporary one).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Which CRM the sandbox plays.
        #[arg(long, value_enum, default_value = "bitrix24")]
        crm: cli::DemoCrm,
    },
    /// Create (or find) the score, tier and breakdown fields in the CRM.
    Setup {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        portal: String,
    },
    /// Print a lead's score history from the ledger.
    History {
        #[arg(long, env = "LEADSCORE_CONFIG")]
        config: PathBuf,
        #[arg(long)]
        portal: String,
        #[arg(long)]
        lead: String,
    },
    /// A campaign link that identifies its reader as a lead (website tracking:
    /// `?ls=<lead>.<signature>`, signed with the portal's identify secret).
    Link {
        #[arg(long, env = "LEADSCORE_CONFIG")]
        config: PathBuf,
        #[arg(long)]
        portal: String,
        #[arg(long)]
        lead: String,
        #[arg(long)]
        url: String,
    },
    /// Erase a person's website-tracking data (a visitor id, every visitor identified as
    /// a lead, or by an e-mail or phone) and say what was erased; through the daemon
    /// when it runs.
    Forget {
        #[arg(long, env = "LEADSCORE_CONFIG")]
        config: PathBuf,
        #[arg(long)]
        portal: String,
        #[arg(long, group = "person")]
        visitor: Option<String>,
        #[arg(long, group = "person")]
        lead: Option<String>,
        #[arg(long, group = "person")]
        email: Option<String>,
        #[arg(long, group = "person")]
        phone: Option<String>,
    },
    /// Queue, dead letters, last sweep, leads by tier and today's tasks per portal
    /// (asks the running daemon when it holds the data dir).
    Status {
        #[arg(long, env = "LEADSCORE_CONFIG")]
        config: PathBuf,
    },
    /// Re-score many leads (after a model change, or leads never seen): through the
    /// running daemon, or in-process when none runs. Resumable; no tasks by default.
    Rescore {
        #[arg(long, env = "LEADSCORE_CONFIG")]
        config: PathBuf,
        #[command(flatten)]
        args: leadscore::cli_rescore::Args,
    },
    /// Backtest the model on closed leads: AUC, tiers, deciles, calibration, rules,
    /// mistakes, capacity; `--model` compares a second model (`generate`: a history).
    Backtest(leadscore::cli_backtest::BacktestCmd),
    /// Suggest rule points from closed leads (logistic regression, cross-validated);
    /// prints a diff, never rewrites the config.
    Tune(leadscore::cli_backtest::TuneArgs),
    /// Inspect and replay the dead-letter queue.
    Dlq {
        #[arg(long, env = "LEADSCORE_CONFIG")]
        config: PathBuf,
        #[command(subcommand)]
        action: DlqAction,
    },
}

#[derive(Debug, Subcommand)]
enum DlqAction {
    /// List dead letters.
    List,
    /// Put dead letters back into the queue.
    Replay {
        /// The dead letter's id.
        id: Option<u64>,
        /// Replay all of them.
        #[arg(long, conflicts_with = "id")]
        all: bool,
    },
    /// Delete a dead letter.
    Drop { id: u64 },
}

fn main() -> ExitCode {
    let args = Args::parse();
    let format = args.log_format.unwrap_or_else(LogFormat::detect);
    let result = match args.command {
        Command::Check { config, offline } => return cli::check(&config, offline),
        Command::Explain {
            config,
            lead,
            activities,
            crm_activities,
            portal,
            now,
        } => cli::explain(
            &config,
            &lead,
            cli::ExplainInputs {
                activities: activities.as_deref(),
                crm_activities: crm_activities.as_deref(),
                portal: portal.as_deref(),
            },
            now.as_deref(),
        ),
        Command::Serve { config } => cli::serve(&config, format),
        #[cfg(feature = "demo")]
        Command::Demo { data_dir, crm } => cli::demo(data_dir, crm, format),
        Command::Setup { config, portal } => cli::setup(&config, &portal, format),
        Command::History {
            config,
            portal,
            lead,
        } => cli::history(&config, &portal, &lead),
        Command::Status { config } => cli::status(&config),
        Command::Forget {
            config,
            portal,
            visitor,
            lead,
            email,
            phone,
        } => leadscore::cli_tracking::forget(
            &config,
            leadscore::tracking::ForgetRequest {
                portal,
                visitor,
                lead,
                email,
                phone,
            },
        ),
        Command::Link {
            config,
            portal,
            lead,
            url,
        } => leadscore::cli_tracking::link(&config, &portal, &lead, &url),
        Command::Rescore { config, args } => leadscore::cli_rescore::run(&config, &args, format),
        Command::Backtest(cmd) => leadscore::cli_backtest::run(&cmd),
        Command::Tune(args) => leadscore::cli_backtest::run_tune(&args),
        Command::Dlq { config, action } => match action {
            DlqAction::List => cli::dlq_list(&config),
            DlqAction::Replay { id, all } => cli::dlq_replay(&config, id, all),
            DlqAction::Drop { id } => cli::dlq_drop(&config, id),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

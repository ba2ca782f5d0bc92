//! `leadscore demo`: the whole product on one machine, no account, no network.
//!
//! Starts the Bitrix24 sandbox (real wire format, real 2 req/s burst 50 leaky bucket),
//! creates the score fields the way `setup` does, starts the daemon against it with the
//! shipped seed model, plays a realistic day in fast-forward and prints what a sales rep
//! would see on the lead cards.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use leadscore_bitrix24_sandbox::{Sandbox, SandboxHandle, SandboxOptions};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::app;
use crate::config::{self, Config};
use crate::crm::FieldSetup;
use crate::pipeline::Pipeline;
use crate::store::{Crossing, Store};

/// The seed model every demo run uses: the shipped example config.
const EXAMPLE_CONFIG: &str = include_str!("../config/leadscore.example.toml");

/// The demo's portal id (webhook path `/webhooks/bitrix24/demo`).
pub const PORTAL: &str = "demo";

/// Build the demo config: the example's `[scoring]` with a `[server]` and a portal
/// pointing at the sandbox.
/// The example config's `[scoring]` section, as TOML text: every demo scores with
/// exactly the model the project ships.
pub fn example_scoring_toml() -> anyhow::Result<String> {
    let example: toml::Table =
        toml::from_str(EXAMPLE_CONFIG).context("the bundled example config does not parse")?;
    let scoring = example
        .get("scoring")
        .context("example config has no [scoring]")?
        .clone();
    let mut doc = toml::Table::new();
    doc.insert("scoring".into(), scoring);
    Ok(toml::to_string(&doc)?)
}

/// The `[server]` section of every demo config: loopback on a free port, state in
/// `data_dir`, a short coalesce window and sweep so the demo moves quickly.
pub fn server_section(data_dir: &Path) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = {:?}\nworkers = 2\ncoalesce_ms = 800\nsweep_interval_secs = 5\n",
        data_dir.display().to_string()
    )
}

/// The Bitrix24 demo config: the example's `[scoring]` with a `[server]` and a portal
/// pointing at the sandbox.
pub fn demo_config_text(
    data_dir: &Path,
    webhook_url: &str,
    app_token: &str,
) -> anyhow::Result<String> {
    let scoring = example_scoring_toml()?;
    let server = server_section(data_dir);
    let head = format!(
        r#"# Written by `leadscore demo`. The sandbox it points at is gone once the demo ends,
# but `leadscore history --config THIS_FILE --portal demo --lead ID` still reads the ledger.
{server}
[[portal]]
id = "{PORTAL}"
crm = "bitrix24"
webhook_url = {webhook_url:?}
application_token = {app_token:?}

[portal.fields]
score = "UF_CRM_LEADSCORE"
tier = "UF_CRM_LEADSCORE_TIER"
breakdown = "UF_CRM_LEADSCORE_WHY"
comment = true
tier_values = {{ cold = "0", warm = "0", hot = "0" }}

[portal.fields.map]
industry = "UF_CRM_INDUSTRY"
revenue = "UF_CRM_REVENUE"
employees = "UF_CRM_EMPLOYEES"
region = "UF_CRM_REGION"

[portal.task]
deadline_minutes = 30

"#
    );
    Ok(format!("{head}{scoring}"))
}

pub use crate::demo_seeds::{seed_leads, SeedLead};

/// A sandbox portal made ready for the daemon: config written, fields created.
pub struct Prepared {
    pub config: Config,
    pub store: Arc<Store>,
    /// Where the config was written (`history` and `check` can read it).
    pub config_path: PathBuf,
    pub setup: FieldSetup,
}

/// Write the config for `sandbox` into `dir`, create the lead fields the way
/// `leadscore setup` does, and return the config with the tier enumeration ids filled in.
pub async fn prepare(
    sandbox: &SandboxHandle,
    dir: &Path,
    app_token: &str,
) -> anyhow::Result<Prepared> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let text = demo_config_text(dir, sandbox.webhook_url().expose_secret(), app_token)?;
    let config_path = dir.join("demo.toml");
    std::fs::write(&config_path, &text)
        .with_context(|| format!("cannot write {}", config_path.display()))?;
    let mut config: Config =
        config::load(&config_path).map_err(|e| anyhow::anyhow!("demo config is invalid:\n{e}"))?;
    let store = app::open_store(&config)?;
    let portal = config.portals[0].clone();
    let tiers = app::tier_pairs(&config);
    let setup = app::build_admin(&portal, &store)?
        .setup_fields(&portal.fields, &tiers)
        .await
        .context("setup failed")?;
    config.portals[0].fields.tier_values = setup.tier_values.clone();
    // Keep the written config in step, so `history` and `check` work on it afterwards.
    let values = setup
        .tier_values
        .iter()
        .map(|(k, v)| format!("{k} = \"{v}\""))
        .collect::<Vec<_>>()
        .join(", ");
    std::fs::write(
        &config_path,
        text.replace(
            r#"tier_values = { cold = "0", warm = "0", hot = "0" }"#,
            &format!("tier_values = {{ {values} }}"),
        ),
    )?;
    Ok(Prepared {
        config,
        store,
        config_path,
        setup,
    })
}

/// Subscribe the daemon's webhook URL to the lead and activity events, as an admin
/// does in the portal's outgoing-webhook form.
/// Returns the handler ids (to unbind when the daemon moves to another port).
pub fn bind_events(sandbox: &SandboxHandle, hook_url: &str, app_token: &str) -> Vec<u32> {
    [
        "ONCRMLEADADD",
        "ONCRMLEADUPDATE",
        "ONCRMACTIVITYADD",
        "ONCRMACTIVITYUPDATE",
    ]
    .iter()
    .map(|event| sandbox.bind_event(event, hook_url, SecretString::from(app_token.to_string())))
    .collect()
}

/// Wait until the sandbox has delivered every webhook and the daemon has processed
/// everything (including the echoes of its own writes), stable for a moment.
pub async fn settle(
    sandbox: &SandboxHandle,
    pipeline: &Pipeline,
    limit: Duration,
) -> anyhow::Result<()> {
    settle_with(
        || sandbox.settle(),
        || sandbox.pending_deliveries(),
        pipeline,
        limit,
    )
    .await
}

/// The settle loop for any sandbox: `deliver` waits for its outgoing webhooks,
/// `pending` counts those still queued. Done when the daemon is idle and nothing is
/// queued, three polls in a row (its own writes echo back as new webhooks).
pub async fn settle_with<D, F>(
    deliver: D,
    pending: impl Fn() -> usize,
    pipeline: &Pipeline,
    limit: Duration,
) -> anyhow::Result<()>
where
    D: Fn() -> F,
    F: std::future::Future<Output = ()>,
{
    let deadline = Instant::now() + limit;
    let mut quiet = 0;
    while quiet < 3 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the demo did not settle within {limit:?}"
        );
        deliver().await;
        if pipeline.is_idle().await && pending() == 0 {
            quiet += 1;
        } else {
            quiet = 0;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    Ok(())
}

/// The demo's last lines: where the state is and how to read a lead's history.
pub fn print_epilogue(
    out: &mut dyn Write,
    started: Instant,
    dir: &Path,
    config_path: &Path,
    portal: &str,
    lead: impl std::fmt::Display,
) -> std::io::Result<()> {
    writeln!(
        out,
        "\nfinished in {:.1} s. State (sled) is in {}",
        started.elapsed().as_secs_f64(),
        dir.display()
    )?;
    writeln!(
        out,
        "see a lead's score history:  leadscore history --config {} --portal {portal} --lead {lead}",
        config_path.display()
    )
}

pub fn random_token(len: usize) -> String {
    use rand::Rng;
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect()
}

pub fn shorten(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// Run the demo, printing to `out`.
pub async fn run(data_dir: Option<PathBuf>, out: &mut dyn Write) -> anyhow::Result<()> {
    let started = Instant::now();
    let dir = match data_dir {
        Some(d) => d,
        None => std::env::temp_dir().join(format!(
            "leadscore-demo-{}",
            Utc::now().format("%Y%m%d-%H%M%S")
        )),
    };
    writeln!(
        out,
        "leadscore demo: a sandbox Bitrix24 portal (2 req/s, burst 50), 20 leads, the seed model\n"
    )?;

    let sandbox = Sandbox::start(SandboxOptions::default())
        .await
        .context("cannot start the sandbox")?;
    let app_token = random_token(32);
    let Prepared {
        config,
        store,
        config_path,
        setup,
    } = prepare(&sandbox, &dir, &app_token).await?;
    writeln!(
        out,
        "setup: created lead fields {} (tier values {:?})",
        setup.created.join(", "),
        setup.tier_values
    )?;

    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let shutdown = CancellationToken::new();
    let running =
        app::start_with_store(config.clone(), store.clone(), listener, shutdown.clone()).await?;
    let pipeline = running.pipeline.clone();
    let hook = format!("http://{}/webhooks/bitrix24/{PORTAL}", running.addr);
    let _ = bind_events(&sandbox, &hook, &app_token);
    writeln!(
        out,
        "daemon: listening on {}, outgoing webhooks bound to it\n",
        running.addr
    )?;

    let now = Utc::now();
    let leads = seed_leads(now);
    // Phase 1: twenty leads arrive (a web form burst): twenty ONCRMLEADADD webhooks.
    let mut ids = Vec::new();
    for l in &leads {
        ids.push(sandbox.add_lead(l.fields.clone())?);
    }
    settle(&sandbox, &pipeline, Duration::from_secs(40)).await?;
    let writes_after_phase1 = sandbox.count_method("crm.lead.update");
    writeln!(
        out,
        "phase 1: {} new leads scored with {} API requests ({} lead updates)",
        ids.len(),
        sandbox.counters().requests,
        writes_after_phase1
    )?;

    // Phase 2: activity arrives in three waves (site tracker, calls, e-mail opens).
    for wave in 0..3 {
        for (l, id) in leads.iter().zip(&ids) {
            for (i, a) in l.later.iter().enumerate() {
                if i % 3 == wave {
                    let mut a = a.clone();
                    a["OWNER_TYPE_ID"] = json!(1);
                    a["OWNER_ID"] = json!(id);
                    sandbox.add_activity(a)?;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    settle(&sandbox, &pipeline, Duration::from_secs(40)).await?;
    let tasks_after_phase2 = sandbox.tasks().len();
    writeln!(
        out,
        "phase 2: activities arrived in 3 waves; {} call-now task(s) created",
        tasks_after_phase2
    )?;

    // Phase 3: the portal's queue server delivers the same event twice, and a user edits
    // a hot lead. Neither may create a second task.
    let hot_lead = ids[0];
    let body = event_body(&sandbox, "ONCRMLEADUPDATE", hot_lead, &app_token);
    let client = reqwest::Client::new();
    for _ in 0..2 {
        let status = client
            .post(&hook)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.clone())
            .send()
            .await?
            .status();
        anyhow::ensure!(
            status.is_success(),
            "duplicate webhook was refused: {status}"
        );
    }
    sandbox.update_lead(
        hot_lead,
        json!({"COMMENTS": "Просила перезвонить после обеда"}),
    )?;
    settle(&sandbox, &pipeline, Duration::from_secs(40)).await?;
    writeln!(
        out,
        "phase 3: a duplicate webhook (twice) and a user edit on lead {hot_lead}: tasks still {}\n",
        sandbox.tasks().len()
    )?;

    // The table a sales lead would look at.
    let tasks = sandbox.tasks();
    writeln!(
        out,
        "{:>4}  {:<34} {:>5}  {:<9} {:<5} why",
        "lead", "name", "score", "tier", "task"
    )?;
    let mut rows = Vec::new();
    for id in &ids {
        let l = sandbox.get_lead(*id).unwrap_or(Value::Null);
        let score = l["UF_CRM_LEADSCORE"]
            .as_str()
            .map(str::to_string)
            .or_else(|| l["UF_CRM_LEADSCORE"].as_i64().map(|n| n.to_string()))
            .unwrap_or_default();
        let why = l["UF_CRM_LEADSCORE_WHY"].as_str().unwrap_or("").to_string();
        let tier = why
            .split(':')
            .next()
            .and_then(|h| h.split(" — ").nth(1))
            .unwrap_or("")
            .to_string();
        let has_task = tasks
            .iter()
            .any(|t| t.crm_bindings.iter().any(|b| b == &format!("L_{id}")));
        let name = format!(
            "{} {}",
            l["NAME"].as_str().unwrap_or(""),
            l["LAST_NAME"].as_str().unwrap_or("")
        );
        rows.push((
            score.parse::<i32>().unwrap_or(0),
            *id,
            name,
            score,
            tier,
            has_task,
            why,
        ));
    }
    rows.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for (_, id, name, score, tier, has_task, why) in &rows {
        let why_rest = why.split_once(": ").map(|(_, r)| r).unwrap_or(why);
        writeln!(
            out,
            "{:>4}  {:<34} {:>5}  {:<9} {:<5} {}",
            id,
            shorten(name, 34),
            score,
            tier,
            if *has_task { "yes" } else { "" },
            shorten(why_rest, 110)
        )?;
    }

    let c = sandbox.counters();
    let scored = ids.len();
    let webhooks = sandbox.delivered();
    let echo = webhooks
        .iter()
        .filter(|d| d.event == "ONCRMLEADUPDATE")
        .count();
    writeln!(out)?;
    writeln!(
        out,
        "API requests: {} in all ({:.2} per lead), {} answered 503 QUERY_LIMIT_EXCEEDED",
        c.requests,
        c.requests as f64 / scored as f64,
        c.by_status.get(&503).copied().unwrap_or(0)
    )?;
    writeln!(out, "webhooks: {} delivered by the portal, {} of them ONCRMLEADUPDATE (mostly echoes of our own writes; none caused a further write)", webhooks.len(), echo)?;
    writeln!(
        out,
        "lead updates: {}, call-now tasks: {}, timeline comments: {}",
        sandbox.count_method("crm.lead.update"),
        tasks.len(),
        sandbox.comments().len()
    )?;
    let crossings = store.crossings_all(PORTAL)?;
    let fired = crossings
        .iter()
        .filter(|(_, c)| matches!(c, Crossing::Fired { .. }))
        .count();
    writeln!(out, "crossings recorded in sled: {fired}")?;

    shutdown.cancel();
    running.handle.await.context("daemon task panicked")??;
    drop(pipeline);
    sandbox.shutdown().await;
    crate::demo_deals::run(&dir, out).await?;
    crate::demo_site::run(&dir, out).await?;
    print_epilogue(out, started, &dir, &config_path, PORTAL, ids[0])?;
    Ok(())
}

/// The body the portal's queue server would POST for an event (used to replay a
/// duplicate delivery, as the real queue sometimes does).
pub fn event_body(sandbox: &SandboxHandle, event: &str, id: u64, token: &str) -> String {
    let pairs = [
        ("event", event.to_string()),
        ("event_handler_id", "1".to_string()),
        ("data[FIELDS][ID]", id.to_string()),
        ("ts", Utc::now().timestamp().to_string()),
        ("auth[domain]", sandbox.domain().to_string()),
        ("auth[client_endpoint]", sandbox.client_endpoint()),
        (
            "auth[server_endpoint]",
            "https://oauth.bitrix.info/rest/".to_string(),
        ),
        ("auth[member_id]", sandbox.member_id().to_string()),
        ("auth[application_token]", token.to_string()),
    ];
    pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                percent_encoding::utf8_percent_encode(k, percent_encoding::NON_ALPHANUMERIC),
                percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

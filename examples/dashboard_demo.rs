//! The demo's state, served for a while: for looking at `/dashboard` in a browser and
//! for `.ci/dashboard-screenshot.sh`.
//!
//! Runs the demo's first two phases (twenty leads from a web-form burst, then their
//! activity) against the Bitrix24 sandbox through the real daemon, writes the dashboard
//! URL to `--url-file`, then keeps serving for `--seconds` (default 60).
//!
//! ```text
//! cargo run --example dashboard_demo -- --seconds 600 --url-file /tmp/url
//! ```

use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use leadscore::{app, demo};
use leadscore_bitrix24_sandbox::{Sandbox, SandboxOptions};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

struct Args {
    seconds: u64,
    url_file: Option<std::path::PathBuf>,
}

fn args() -> anyhow::Result<Args> {
    let mut out = Args {
        seconds: 60,
        url_file: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seconds" => {
                out.seconds = it
                    .next()
                    .context("--seconds needs a value")?
                    .parse()
                    .context("--seconds takes a number")?
            }
            "--url-file" => {
                out.url_file = Some(it.next().context("--url-file needs a path")?.into())
            }
            other => anyhow::bail!("unknown argument {other:?} (use --seconds N, --url-file PATH)"),
        }
    }
    Ok(out)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args()?;
    let dir = tempfile::tempdir()?;
    let sandbox = Sandbox::start(SandboxOptions::default()).await?;
    let token = "dashboard-demo-application-token";
    let prepared = demo::prepare(&sandbox, dir.path(), token).await?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let shutdown = CancellationToken::new();
    let running =
        app::start_with_store(prepared.config, prepared.store, listener, shutdown.clone()).await?;
    let hook = format!("http://{}/webhooks/bitrix24/{}", running.addr, demo::PORTAL);
    demo::bind_events(&sandbox, &hook, token);

    let leads = demo::seed_leads(Utc::now());
    let mut ids = Vec::new();
    for l in &leads {
        ids.push(sandbox.add_lead(l.fields.clone())?);
    }
    demo::settle(&sandbox, &running.pipeline, Duration::from_secs(60)).await?;
    for (l, id) in leads.iter().zip(&ids) {
        for a in &l.later {
            let mut a = a.clone();
            a["OWNER_TYPE_ID"] = json!(1);
            a["OWNER_ID"] = json!(id);
            sandbox.add_activity(a)?;
        }
    }
    demo::settle(&sandbox, &running.pipeline, Duration::from_secs(60)).await?;
    // A few leads close (converted: won; junk: lost): the model page's conversion by
    // tier comes from these outcome webhooks.
    for (i, id) in ids.iter().enumerate().take(8) {
        let status = if i % 3 == 2 { "JUNK" } else { "CONVERTED" };
        sandbox.update_lead(*id, json!({"STATUS_ID": status}))?;
    }
    demo::settle(&sandbox, &running.pipeline, Duration::from_secs(60)).await?;

    let url = format!("http://{}/dashboard", running.addr);
    println!("dashboard: {url} (serving for {} s)", args.seconds);
    if let Some(f) = &args.url_file {
        std::fs::write(f, &url).with_context(|| format!("cannot write {}", f.display()))?;
    }
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_secs(args.seconds)) => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    shutdown.cancel();
    running.handle.await??;
    sandbox.shutdown().await;
    Ok(())
}

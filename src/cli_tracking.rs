//! `leadscore link`: a signed campaign link for one lead (the portal's identify secret
//! signs it; opening it identifies the browser's visitor as that lead). `leadscore
//! forget`: erase a person's tracking data, in the store or through the running daemon.

use std::path::Path;

use anyhow::{anyhow, Context};

/// Print `url` with the signed `ls` parameter for `lead` of `portal`.
pub fn link(config_path: &Path, portal: &str, lead: &str, url: &str) -> anyhow::Result<()> {
    let config = crate::cli::load_config(config_path)?;
    let p = config
        .portals
        .iter()
        .find(|p| p.id == portal)
        .ok_or_else(|| anyhow!("no portal {portal:?} in {}", config_path.display()))?;
    let t = p.tracking.as_ref().with_context(|| {
        format!("portal {portal:?} has no [portal.tracking] (its identify_secret signs links)")
    })?;
    if !crate::config::tracking::is_record_id(lead) {
        anyhow::bail!("--lead {lead:?} is not a CRM record id");
    }
    let signed = crate::tracking::link::signed_url(&t.identify_secret, lead, url)
        .map_err(|e| anyhow!("--url {e}"))?;
    println!("{signed}");
    Ok(())
}

/// Erase the tracking data of `--visitor` or of every visitor identified as `--lead`,
/// and print what was erased.
pub fn forget(
    config_path: &Path,
    portal: &str,
    visitor: Option<String>,
    lead: Option<String>,
) -> anyhow::Result<()> {
    use secrecy::ExposeSecret;
    if visitor.is_some() == lead.is_some() {
        anyhow::bail!("name exactly one of --visitor and --lead");
    }
    let config = crate::cli::load_config_offline(config_path)?;
    if !config.portals.iter().any(|p| p.id == portal) {
        anyhow::bail!("no portal {portal:?} in {}", config_path.display());
    }
    let req = crate::tracking::ForgetRequest {
        portal: portal.to_string(),
        visitor,
        lead,
    };
    let report = match crate::store::Store::open_now(&config.server.data_dir) {
        Ok(store) => {
            let r = crate::tracking::forget(&store, &req)?;
            store.flush_blocking()?;
            r
        }
        Err(open_error) => {
            // The daemon holds the store: ask it.
            let url = crate::status::status_url(&config.server.listen)?
                .replace("/status", "/admin/forget");
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let mut b = reqwest::Client::new().post(&url).json(&req);
                if let Some(t) = &config.server.dashboard_token {
                    b = b.bearer_auth(t.expose_secret());
                }
                let resp = b.send().await.with_context(|| {
                    format!("the store is in use ({open_error}) and the daemon did not answer")
                })?;
                if !resp.status().is_success() {
                    let status = resp.status();
                    anyhow::bail!(
                        "the daemon refused: HTTP {status}: {}",
                        resp.text().await.unwrap_or_default()
                    );
                }
                Ok::<_, anyhow::Error>(resp.json::<crate::tracking::ForgetReport>().await?)
            })?
        }
    };
    if report.visitors.is_empty() {
        println!("nothing tracked for that person in portal {portal}");
    } else {
        println!(
            "erased {} event(s) and {} identification(s) of visitor(s) {}",
            report.events,
            report.identities,
            report.visitors.join(", ")
        );
    }
    Ok(())
}

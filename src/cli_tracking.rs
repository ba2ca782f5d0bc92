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

/// Erase the tracking data of `--visitor`, of every visitor identified as `--lead`, or
/// by `--email` / `--phone` (with its cached resolution), and print what was erased.
pub fn forget(config_path: &Path, req: crate::tracking::ForgetRequest) -> anyhow::Result<()> {
    use secrecy::ExposeSecret;
    let config = crate::cli::load_config_offline(config_path)?;
    let portal = req.portal.clone();
    if !config.portals.iter().any(|p| p.id == portal) {
        anyhow::bail!("no portal {portal:?} in {}", config_path.display());
    }
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
    println!("{}", describe(&portal, &report));
    Ok(())
}

/// The line `forget` prints.
fn describe(portal: &str, r: &crate::tracking::ForgetReport) -> String {
    if r.visitors.is_empty() && r.resolutions == 0 {
        return format!("nothing tracked for that person in portal {portal}");
    }
    format!(
        "erased {} event(s) and {} identification(s) of {} visitor(s){}, and {} cached e-mail/phone resolution(s)",
        r.events,
        r.identities,
        r.visitors.len(),
        if r.visitors.is_empty() {
            String::new()
        } else {
            format!(" ({})", r.visitors.join(", "))
        },
        r.resolutions
    )
}

//! `leadscore link`: a signed campaign link for one lead (the portal's identify secret
//! signs it; opening it identifies the browser's visitor as that lead).

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
    let id_ok = !lead.is_empty()
        && lead.len() <= 18
        && !lead.starts_with('0')
        && lead.bytes().all(|b| b.is_ascii_digit());
    if !id_ok {
        anyhow::bail!("--lead {lead:?} is not a CRM record id");
    }
    let signed = crate::tracking::link::signed_url(&t.identify_secret, lead, url)
        .map_err(|e| anyhow!("--url {e}"))?;
    println!("{signed}");
    Ok(())
}

//! Where a lead's card lives in a Bitrix24 portal, for the dashboard's links.

use secrecy::ExposeSecret;

use super::settings::{Auth, Settings};
use crate::config::Portal;

/// `https://PORTAL/crm/lead/details/ID/` (a deal `D_<id>`: `/crm/deal/details/<id>/`). Only the scheme and host of the webhook URL
/// are used: its path holds the secret and never reaches a page.
pub fn lead_url(portal: &Portal, id: &str) -> Option<String> {
    let s = portal.settings.as_any().downcast_ref::<Settings>()?;
    let base = match &s.auth {
        Auth::Webhook { url } => url.expose_secret().to_string(),
        Auth::OAuth { base_url, .. } => base_url.clone(),
    };
    let origin = crate::crm::origin(&base)?;
    match id.strip_prefix("D_") {
        Some(deal) => Some(format!("{origin}/crm/deal/details/{deal}/")),
        None => Some(format!("{origin}/crm/lead/details/{id}/")),
    }
}

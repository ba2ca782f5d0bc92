//! Where a lead's card lives in an amoCRM account, for the dashboard's links.

use super::settings::Settings;
use crate::config::Portal;

/// `https://SUBDOMAIN.amocrm.ru/leads/detail/ID`, on the account's own address.
pub fn lead_url(portal: &Portal, id: &str) -> Option<String> {
    let s = portal.settings.as_any().downcast_ref::<Settings>()?;
    let origin = crate::crm::origin(s.auth.base_url())?;
    Some(format!("{origin}/leads/detail/{id}"))
}

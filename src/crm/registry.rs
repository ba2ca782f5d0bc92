//! The one list of CRMs leadscore knows. Each entry joins a CRM's name (as written in
//! `crm = "…"` and in `/webhooks/{crm}/{portal}`) to its folder's settings parser,
//! webhook decoder and adapter builder; nothing else in the daemon names a CRM.
//! The list itself is the `crms!(…)` line in `src/crm/mod.rs`, which also declares
//! the folders (see docs/architecture.md, "Adding a CRM").

use std::sync::Arc;

use super::{Crm, CrmAdmin};
use crate::config::{Portal, PortalCheck, PortalCrm};
use crate::intake::{Decoded, IntakeError};
use crate::store::Store;

/// A portal's adapter, as the runtime and as the admin see it (one object, one client).
pub struct Adapter {
    /// What the pipeline uses.
    pub crm: Arc<dyn Crm>,
    /// What `leadscore setup` and the demo use.
    pub admin: Arc<dyn CrmAdmin>,
}

impl Adapter {
    /// Both views of one adapter (they share its client, limiter and token holder).
    pub fn of<T: Crm + CrmAdmin + 'static>(adapter: T) -> Adapter {
        let adapter = Arc::new(adapter);
        Adapter {
            crm: adapter.clone(),
            admin: adapter,
        }
    }
}

/// A CRM's webhook decoder: the portal, the query string and the body in; the lead
/// subjects out, or why the webhook is refused.
pub type Decoder = fn(&Portal, Option<&str>, &[u8]) -> Result<Decoded, IntakeError>;

/// Everything the generic parts of the daemon need from one CRM.
pub struct CrmEntry {
    /// `crm = "<name>"` in the config, `/webhooks/<name>/<portal>` in URLs.
    pub name: &'static str,
    /// The CRM's own keys of a `[[portal]]` table (read from its settings struct).
    pub keys: fn() -> Vec<String>,
    /// Which of them hold secrets (their values never appear in a message).
    pub secrets: &'static [&'static str],
    /// What `[[portal.activity_map]]` entries may test on this CRM's activities.
    pub activity_attrs: &'static [super::activity_map::ActivityAttr],
    /// The CRM's own activity rows (as its API returns them) → neutral activities, as
    /// a fetch would classify them (`leadscore explain --crm-activities`); `None` for
    /// a row that is no scored activity.
    pub classify_row: ClassifyRow,
    /// Reads and validates the CRM's own keys of a `[[portal]]` table.
    pub settings: fn(&mut PortalCheck<'_, '_>) -> PortalCrm,
    /// Authenticates and decodes one webhook (query string and body).
    pub decode: Decoder,
    /// The lead's card in the CRM's web UI (each CRM knows its own URL shape), for the
    /// dashboard's links; `None` when the portal's address is unknown.
    pub lead_url: fn(&Portal, &str) -> Option<String>,
    /// Builds the portal's adapter (once per portal: reloads reuse it).
    pub build: fn(&Portal, &Arc<Store>) -> anyhow::Result<Adapter>,
}

/// See [`CrmEntry::classify_row`].
pub type ClassifyRow = fn(
    &crate::config::FieldsSection,
    &serde_json::Value,
) -> Result<Option<crate::lead::Activity>, String>;

pub use super::CRMS;

/// The CRM called `name`.
pub fn find(name: &str) -> Option<&'static CrmEntry> {
    CRMS.iter().find(|c| c.name == name)
}

/// The CRM a portal is (validated when the config was loaded).
pub fn of(portal: &Portal) -> anyhow::Result<&'static CrmEntry> {
    find(portal.crm)
        .ok_or_else(|| anyhow::anyhow!("portal {}: unknown crm {:?}", portal.id, portal.crm))
}

/// Build a portal's adapter.
pub fn build(portal: &Portal, store: &Arc<Store>) -> anyhow::Result<Adapter> {
    (of(portal)?.build)(portal, store)
}

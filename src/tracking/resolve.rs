//! An identify call that names the person by e-mail or phone: which lead that is, from
//! the hashed cache or else from the CRM (through the portal's paced client).
//!
//! When the CRM cannot answer now (an outage, a rate-limit pause, a timeout) the call
//! is answered 503 with `Retry-After` and its signature released, so the site's backend
//! retries it (a refusal that retrying cannot cure, e.g. revoked credentials, is 502),
//! rather than kept to be resolved later: keeping it would mean storing the
//! raw e-mail or phone until the CRM is back (a hash cannot be looked up in a CRM),
//! which the privacy rules of this store exclude. An e-mail or phone no open lead has
//! is answered 202 "not found": nothing is attached (the visitor's events wait, as an
//! anonymous visitor's do, until they expire), and it is not cached, so a lead created
//! a minute later is found by the next call.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::contact::ContactPoint;
use crate::config::tracking::Tracking;
use crate::crm::{Crm, CrmError, LeadId};
use crate::store::{Store, StoreError};

/// Longest wait for the CRM's answer (the site's backend is waiting on the call).
const CRM_TIMEOUT: Duration = Duration::from_secs(20);
/// `Retry-After` when the CRM gave no hint of its own.
const DEFAULT_RETRY: Duration = Duration::from_secs(30);

/// Why a contact could not be resolved now.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("the CRM did not answer: {0}")]
    Crm(CrmError),
    #[error("the CRM did not answer within {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ResolveError {
    /// Seconds the caller should wait before trying again; `None` when trying again
    /// will not help until an admin acts (the CRM refused the look-up).
    pub fn retry_after_secs(&self) -> Option<u64> {
        let d = match self {
            ResolveError::Crm(e) if !e.is_retryable() => return None,
            ResolveError::Crm(e) => e.retry_after().unwrap_or(DEFAULT_RETRY),
            _ => DEFAULT_RETRY,
        };
        Some(d.as_secs_f64().ceil().max(1.0) as u64)
    }
}

/// The lead `who` belongs to (`None`: the CRM has no open lead with it).
pub async fn resolve(
    store: &Store,
    crm: &dyn Crm,
    portal: &str,
    t: &Tracking,
    who: &ContactPoint,
    now: DateTime<Utc>,
) -> Result<Option<LeadId>, ResolveError> {
    let ttl = chrono::Duration::days(i64::from(t.resolution_days));
    if t.resolution_days > 0 {
        if let Some(lead) = store.cached_contact(portal, who, ttl, now)? {
            return Ok(Some(lead));
        }
    }
    let found = tokio::time::timeout(CRM_TIMEOUT, crm.find_lead_by_contact(who))
        .await
        .map_err(|_| ResolveError::Timeout(CRM_TIMEOUT))?
        .map_err(ResolveError::Crm)?;
    if let (Some(lead), true) = (&found, t.resolution_days > 0) {
        store.cache_contact(portal, who, lead, now)?;
    }
    Ok(found)
}

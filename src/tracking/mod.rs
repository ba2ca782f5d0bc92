//! Website behaviour the CRM does not hold: page views, downloads and form submits sent
//! by a small snippet on the company's site (`/track.js` → `POST /track/<portal>`).
//!
//! The tracking endpoint is public by nature, so nothing a browser sends can touch a
//! lead: events are kept under an anonymous first-party visitor id, and count for a
//! lead only after a trusted channel (the site's backend, signing `POST
//! /identify/<portal>` with the portal's secret) says who the visitor is. See
//! `payload` (what a browser may send), `identify` (the signed call) and `routes`.

pub mod contact;
mod forget;
pub mod identify;
pub mod link;
pub mod payload;
pub mod resolve;
pub mod routes;

use std::borrow::Cow;

pub use forget::{forget, ForgetError, ForgetReport, ForgetRequest};

use chrono::{DateTime, Utc};

use crate::lead::{Activity, ActivityKind, FieldValue, Lead};
use crate::store::tracking::TrackedEvent;
use crate::store::{Store, StoreError};

/// The engine's activity for a tracked event.
pub fn activity(e: &TrackedEvent) -> Activity {
    let kind = match e.kind.as_str() {
        "page_view" => ActivityKind::PageView,
        "download" => ActivityKind::Download,
        "form" => ActivityKind::Form,
        other => ActivityKind::Custom(other.to_string()),
    };
    Activity {
        id: format!("web:{}", e.at.timestamp_millis()),
        kind,
        direction: None,
        subject: e.title.clone(),
        url: e.url.clone(),
        at: e.at,
        contact_id: None,
        mapped_by: None,
    }
}

/// Attach the visitors a site form recorded in the lead's `field` (the snippet fills
/// any `leadscore_visitor` input with the visitor id; the CRM stores it with the lead
/// the form created): the CRM's own record, a trusted channel like a signed identify.
/// A visitor already identified as another lead stays there, so two leads naming one
/// visitor cannot pass it back and forth. Returns how many visitors were attached.
pub fn attach_recorded(
    store: &Store,
    portal: &str,
    lead: &Lead,
    field: &str,
    now: DateTime<Utc>,
) -> Result<usize, StoreError> {
    let mut attached = 0;
    for value in lead.values(field) {
        let FieldValue::Text(visitor) = value else {
            continue;
        };
        let visitor = visitor.trim();
        if !crate::config::tracking::is_token(visitor) {
            continue;
        }
        if store.visitor_lead(portal, visitor)?.is_none() {
            store.identify_visitor(portal, visitor, &lead.id, now)?;
            tracing::info!(portal, lead = %lead.id, visitor, "visitor attached: the CRM recorded it from a site form");
            attached += 1;
        }
    }
    Ok(attached)
}

/// The CRM's activities with the tracked ones added (borrowed when there are none).
pub fn with_tracked<'a>(crm: &'a [Activity], tracked: &[TrackedEvent]) -> Cow<'a, [Activity]> {
    if tracked.is_empty() {
        return Cow::Borrowed(crm);
    }
    let mut all = crm.to_vec();
    all.extend(tracked.iter().map(activity));
    all.sort_by_key(|a| a.at);
    Cow::Owned(all)
}

/// Hourly, drop the events of visitors never identified once they are older than their
/// portal's `anonymous_days`, and e-mail / phone resolutions older than its
/// `resolution_days` (the privacy promise: anonymous tracking does not pile up).
pub async fn expiry_loop(
    pipeline: std::sync::Arc<crate::pipeline::Pipeline>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        let now = chrono::Utc::now();
        for rt in pipeline.portals() {
            let Some(t) = &rt.portal.tracking else {
                continue;
            };
            let cutoff = now - chrono::Duration::days(i64::from(t.anonymous_days));
            match pipeline.store.expire_anonymous(&rt.portal.id, cutoff) {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(portal = %rt.portal.id, events = n, "anonymous tracking events expired")
                }
                Err(e) => {
                    tracing::warn!(portal = %rt.portal.id, error = %e, "cannot expire tracking events")
                }
            }
            let resolved_before = now - chrono::Duration::days(i64::from(t.resolution_days));
            if let Err(e) = pipeline
                .store
                .expire_contacts(&rt.portal.id, resolved_before)
            {
                tracing::warn!(portal = %rt.portal.id, error = %e, "cannot expire contact resolutions");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(std::time::Duration::from_secs(3600)) => {}
        }
    }
}

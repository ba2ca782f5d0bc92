//! The tracking endpoints: `GET /track.js`, `POST|OPTIONS /track/<portal>`,
//! `POST /identify/<portal>` (by lead id, or by e-mail or phone through `resolve`).
//!
//! `/track` is public: it checks the page's `Origin` against the portal's allow-list,
//! drops bots, limits each address and each visitor per minute (in memory only: no IP
//! is ever stored), and keeps the events in sled, flushed before its 204. An event
//! touches a lead only when its visitor was identified through `/identify`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{Duration, Utc};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde_json::json;
use tracing::{debug, info};

use super::contact::ContactPoint;
use super::identify::Who;
use super::{identify, payload, resolve};
use crate::config::tracking::Tracking;
use crate::crm::Subject;
use crate::intake::AppState;
use crate::store::{Cause, CauseSource};

const SNIPPET: &str = include_str!("snippet.js");

/// Per-portal limiters, rebuilt when the portal's limits change on a reload.
#[derive(Default)]
pub struct TrackLimits {
    portals: Mutex<HashMap<String, Arc<PortalLimits>>>,
}

struct PortalLimits {
    per_ip: u32,
    per_visitor: u32,
    ip: DefaultKeyedRateLimiter<IpAddr>,
    visitor: DefaultKeyedRateLimiter<String>,
}

impl TrackLimits {
    fn of(&self, portal: &str, t: &Tracking) -> Arc<PortalLimits> {
        let mut map = self.portals.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = map.get(portal) {
            if l.per_ip == t.per_ip_per_minute && l.per_visitor == t.per_visitor_per_minute {
                return l.clone();
            }
        }
        let quota = |n: u32| Quota::per_minute(NonZeroU32::new(n.max(1)).expect("at least 1"));
        let l = Arc::new(PortalLimits {
            per_ip: t.per_ip_per_minute,
            per_visitor: t.per_visitor_per_minute,
            ip: RateLimiter::keyed(quota(t.per_ip_per_minute)),
            visitor: RateLimiter::keyed(quota(t.per_visitor_per_minute)),
        });
        map.insert(portal.to_string(), l.clone());
        l
    }
}

impl PortalLimits {
    /// Forget keys whose limit has recovered, so a scan of many addresses cannot grow
    /// memory without bound.
    fn trim(&self) {
        if self.ip.len() > 10_000 {
            self.ip.retain_recent();
        }
        if self.visitor.len() > 10_000 {
            self.visitor.retain_recent();
        }
    }
}

/// The tracking routes (merged into the intake router).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/track.js", get(snippet))
        .route("/track/{portal}", post(track).options(preflight))
        .route("/identify/{portal}", post(identify_call))
}

async fn snippet() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                "application/javascript; charset=utf-8",
            ),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        SNIPPET,
    )
        .into_response()
}

fn tracking_of(state: &AppState, portal: &str) -> Option<Arc<Tracking>> {
    state.pipeline.portal(portal)?.portal.tracking.clone()
}

/// The allowed `Origin` of the request, echoed in CORS headers.
fn allowed_origin(t: &Tracking, headers: &HeaderMap) -> Option<HeaderValue> {
    let origin = headers.get(header::ORIGIN)?;
    t.allows_origin(origin.to_str().ok()?)
        .then(|| origin.clone())
}

fn cors(origin: HeaderValue, status: StatusCode) -> Response {
    (
        status,
        [
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, origin),
            (header::VARY, HeaderValue::from_static("Origin")),
        ],
    )
        .into_response()
}

async fn preflight(
    State(state): State<AppState>,
    Path(portal): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(t) = tracking_of(&state, &portal) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let Some(origin) = allowed_origin(&t, &headers) else {
        return StatusCode::FORBIDDEN.into_response();
    };
    let mut resp = cors(origin, StatusCode::NO_CONTENT);
    let h = resp.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("content-type"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    resp
}

/// User agents that are not people (crawlers, previews, scripts).
fn is_bot(headers: &HeaderMap) -> bool {
    let Some(ua) = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
    else {
        return true;
    };
    let ua = ua.to_ascii_lowercase();
    [
        "bot",
        "crawl",
        "spider",
        "slurp",
        "headless",
        "curl",
        "wget",
        "python-",
        "go-http",
        "preview",
        "facebookexternalhit",
        "yandexmetrika",
        "lighthouse",
    ]
    .iter()
    .any(|m| ua.contains(m))
}

async fn track(
    State(state): State<AppState>,
    Path(portal): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(t) = tracking_of(&state, &portal) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let Some(origin) = allowed_origin(&t, &headers) else {
        debug!(portal = %portal, "tracking from an origin not allowed");
        return StatusCode::FORBIDDEN.into_response();
    };
    if is_bot(&headers) {
        return cors(origin, StatusCode::NO_CONTENT);
    }
    let limits = state.track_limits.of(&portal, &t);
    limits.trim();
    if limits.ip.check_key(&peer.ip()).is_err() {
        return cors(origin, StatusCode::TOO_MANY_REQUESTS);
    }
    let now = Utc::now();
    let batch = match payload::parse(&body, now) {
        Ok(b) => b,
        Err(e) => {
            debug!(portal = %portal, error = %e, "tracking batch refused");
            return cors(origin, StatusCode::BAD_REQUEST);
        }
    };
    if batch.site_key != t.site_key {
        return cors(origin, StatusCode::FORBIDDEN);
    }
    let n = NonZeroU32::new(batch.events.len() as u32).expect("a batch has events");
    if !matches!(limits.visitor.check_key_n(&batch.visitor, n), Ok(Ok(()))) {
        return cors(origin, StatusCode::TOO_MANY_REQUESTS);
    }
    let store = &state.pipeline.store;
    // A signed campaign link names the visitor (only the secret's holder makes one).
    if let Some(lead) = batch
        .link
        .as_deref()
        .and_then(|l| super::link::verify(&t.identify_secret, l))
    {
        if let Err(e) = store.identify_visitor(&portal, &batch.visitor, &lead, now) {
            info!(portal = %portal, error = %e, "cannot record a link identification");
            return cors(origin, StatusCode::SERVICE_UNAVAILABLE);
        }
    }
    let lead = match store.track(&portal, &batch.visitor, &batch.events) {
        Ok(l) => l,
        Err(e) => {
            info!(portal = %portal, error = %e, "cannot keep tracking events");
            return cors(origin, StatusCode::SERVICE_UNAVAILABLE);
        }
    };
    if let Some(lead) = lead {
        let cause = Cause {
            source: CauseSource::Tracking,
            detail: format!("{} website event(s)", batch.events.len()),
            at: now,
        };
        // `enqueue` flushes: the events and the entry are durable together.
        if let Err(e) = state
            .pipeline
            .enqueue(&portal, &[Subject::Lead(lead)], cause, now)
            .await
        {
            info!(portal = %portal, error = %e, "cannot queue a tracked lead");
            return cors(origin, StatusCode::SERVICE_UNAVAILABLE);
        }
    } else if let Err(e) = store.flush().await {
        info!(portal = %portal, error = %e, "cannot flush tracking events");
        return cors(origin, StatusCode::SERVICE_UNAVAILABLE);
    }
    cors(origin, StatusCode::NO_CONTENT)
}

async fn identify_call(
    State(state): State<AppState>,
    Path(portal): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(t) = tracking_of(&state, &portal) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let now = Utc::now();
    let refused = |e: identify::IdentifyError| {
        info!(portal = %portal, error = %e, "identify call refused");
        (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": e.to_string()})),
        )
            .into_response()
    };
    let signature = match identify::verify(
        &t.identify_secret,
        header(identify::TIMESTAMP_HEADER),
        header(identify::SIGNATURE_HEADER),
        &body,
        now,
        t.max_skew_secs,
    ) {
        Ok(s) => s,
        Err(e) => return refused(e),
    };
    let call = match identify::parse_body(&body) {
        Ok(c) => c,
        Err(e) => {
            info!(portal = %portal, error = %e, "identify body refused");
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": e.to_string()})),
            )
                .into_response();
        }
    };
    let keep = Duration::seconds(2 * t.max_skew_secs as i64 + 60);
    let store = &state.pipeline.store;
    match store.use_signature(&signature, now, keep) {
        Ok(true) => {}
        Ok(false) => return refused(identify::IdentifyError::Replayed),
        Err(e) => {
            info!(portal = %portal, error = %e, "cannot record an identify call");
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
    }
    let (lead, attached) = match &call.who {
        Who::Lead(lead) => match store.identify_visitor(&portal, &call.visitor, lead, now) {
            Ok(n) => (lead.clone(), n),
            Err(e) => {
                info!(portal = %portal, error = %e, "cannot record an identification");
                return StatusCode::SERVICE_UNAVAILABLE.into_response();
            }
        },
        Who::Contact(who) => {
            match by_contact(&state, &portal, &t, &call.visitor, who, &signature, now).await {
                Ok(Some(found)) => found,
                Ok(None) => {
                    info!(portal = %portal, kind = who.kind(), "no open lead has that contact; nothing attached");
                    return (
                        StatusCode::ACCEPTED,
                        Json(json!({"attached": 0, "found": false})),
                    )
                        .into_response();
                }
                Err(resp) => return resp,
            }
        }
    };
    let cause = Cause {
        source: CauseSource::Tracking,
        detail: "visitor identified".into(),
        at: now,
    };
    if let Err(e) = state
        .pipeline
        .enqueue(&portal, &[Subject::Lead(lead.clone())], cause, now)
        .await
    {
        info!(portal = %portal, error = %e, "cannot queue an identified lead");
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    info!(portal = %portal, lead = %lead, events = attached, "visitor identified");
    (
        StatusCode::OK,
        Json(json!({"attached": attached, "found": true})),
    )
        .into_response()
}

/// Resolve an identify call's e-mail or phone and attach the visitor: the lead and
/// the events attached, `None` when no open lead has it, or the answer to give when
/// the CRM (or the store) cannot answer now: 503 with `Retry-After`, the signature
/// released so the same signed call may be sent again (502 when the CRM refused).
async fn by_contact(
    state: &AppState,
    portal: &str,
    t: &Tracking,
    visitor: &str,
    who: &ContactPoint,
    signature: &[u8],
    now: chrono::DateTime<Utc>,
) -> Result<Option<(String, usize)>, Response> {
    let Some(rt) = state.pipeline.portal(portal) else {
        return Err(StatusCode::NOT_FOUND.into_response());
    };
    let store = &state.pipeline.store;
    let unavailable = |retry_secs: u64| {
        if let Err(e) = store.release_signature(signature) {
            info!(portal = %portal, error = %e, "cannot release an identify signature");
        }
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, retry_secs.to_string())],
            Json(json!({"error": "the CRM cannot answer now; retry later"})),
        )
            .into_response()
    };
    let lead = match resolve::resolve(store, rt.crm.as_ref(), portal, t, who, now).await {
        Ok(Some(lead)) => lead,
        Ok(None) => return Ok(None),
        Err(e) => {
            info!(portal = %portal, error = %e, "cannot resolve an identify call's contact");
            return Err(match e.retry_after_secs() {
                Some(secs) => unavailable(secs),
                None => (
                    StatusCode::BAD_GATEWAY,
                    Json(json!({"error": "the CRM refused the look-up; see the daemon's log"})),
                )
                    .into_response(),
            });
        }
    };
    match store.identify_visitor_by_contact(portal, visitor, &lead, who, now) {
        Ok(n) => Ok(Some((lead, n))),
        Err(e) => {
            info!(portal = %portal, error = %e, "cannot record an identification");
            Err(unavailable(1))
        }
    }
}

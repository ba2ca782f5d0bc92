//! The HTTP side: CRM webhooks in, health out.
//!
//! A webhook is answered only after its event is durably in sled, and the handler makes
//! no CRM calls, so it answers in milliseconds (both CRMs throttle or switch off slow
//! endpoints). Everything else happens in the pipeline's workers.

pub mod admin;
pub mod reject_log;
pub mod serve;

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, FromRequest, Path, RawQuery, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use serde_json::json;
use tracing::{debug, info, warn};

use crate::config::Portal;
use crate::crm::{registry, Subject};
use crate::metrics::WebhookLabels;
use crate::pipeline::{webhook_cause, Pipeline};
use crate::store::StoreError;
use reject_log::{Admit, RejectLog};

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub struct AppState {
    pub pipeline: Arc<Pipeline>,
    /// The budget of log lines for refused webhooks (a flood is counted, not logged).
    pub rejects: Arc<RejectLog>,
    /// Per-address and per-visitor limits of the public tracking endpoint.
    pub track_limits: Arc<crate::tracking::routes::TrackLimits>,
}

impl AppState {
    /// Handlers' state for `pipeline`: 20 lines of refused webhooks per 10 s at most.
    pub fn new(pipeline: Arc<Pipeline>) -> Self {
        AppState {
            pipeline,
            rejects: Arc::new(RejectLog::new(20, 10)),
            track_limits: Arc::default(),
        }
    }
}

/// What a CRM-specific decoder made of a webhook body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// Leads or activities the event is about (empty: not about leads, ignored).
    pub subjects: Vec<Subject>,
    /// Short description for the ledger's cause, e.g. `ONCRMLEADUPDATE`.
    pub detail: String,
    /// Those of `subjects` whose activities the event says changed (an amoCRM note):
    /// the others (an edit, the echo of our own write) may be scored without re-reading
    /// activities the store read minutes ago.
    pub activities: Vec<Subject>,
}

/// Why a webhook was refused. Each maps to one status code and one log line; none
/// carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error("unknown portal")]
    UnknownPortal,
    #[error("malformed webhook: {0}")]
    Malformed(String),
    #[error("webhook authentication failed: {0}")]
    Unauthorized(&'static str),
    #[error("queue is full")]
    QueueFull,
    #[error("cannot persist the event: {0}")]
    Store(StoreError),
}

impl IntoResponse for IntakeError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            IntakeError::UnknownPortal => (StatusCode::NOT_FOUND, "unknown_portal"),
            IntakeError::Malformed(_) => (StatusCode::BAD_REQUEST, "malformed"),
            IntakeError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            IntakeError::QueueFull => (StatusCode::SERVICE_UNAVAILABLE, "queue_full"),
            IntakeError::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, "store"),
        };
        let mut resp = (
            status,
            Json(json!({"error": code, "message": self.to_string()})),
        )
            .into_response();
        if matches!(self, IntakeError::QueueFull) {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("30"));
        }
        resp
    }
}

/// The daemon's router: bodies limited to `max_body_bytes` (413) and read within
/// `body_read_timeout_secs` (408).
pub fn router(state: AppState, server: &crate::config::Server) -> Router {
    Router::new()
        .route("/webhooks/{crm}/{portal}", post(webhook))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(crate::dashboard::routes())
        .merge(crate::tracking::routes::routes())
        .route(
            "/admin/rescore",
            get(admin::rescore_progress).post(admin::rescore_start),
        )
        .route("/admin/forget", post(admin::forget))
        .layer(middleware::from_fn_with_state(
            Duration::from_secs(server.body_read_timeout_secs),
            read_body_in_time,
        ))
        .layer(DefaultBodyLimit::max(server.max_body_bytes))
        .with_state(state)
}

/// Read the whole request body before any handler runs, within `limit` from the end of
/// the head: a client that trickles its body (slowloris) gets 408 and the connection is
/// closed, instead of holding a handler and a descriptor for as long as it likes. The
/// size limit (`DefaultBodyLimit`, 413) applies while reading.
async fn read_body_in_time(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let reading = Bytes::from_request(Request::from_parts(parts.clone(), body), &());
    match tokio::time::timeout(limit, reading).await {
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Ok(Err(rejection)) => rejection.into_response(),
        Err(_) => (
            StatusCode::REQUEST_TIMEOUT,
            [(header::CONNECTION, "close")],
            "the request body did not arrive in time",
        )
            .into_response(),
    }
}

/// Longest piece of an unknown path segment that is logged.
const LOGGED_SEGMENT_CHARS: usize = 64;

/// A path segment for a log line: at most [`LOGGED_SEGMENT_CHARS`] characters, escaped
/// (no control characters or quotes reach the log), with `…` when cut.
fn log_segment(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(LOGGED_SEGMENT_CHARS)
        .flat_map(char::escape_debug)
        .collect();
    if s.chars().nth(LOGGED_SEGMENT_CHARS).is_some() {
        out.push('…');
    }
    out
}

/// The `crm` metric label: a CRM we know, else `unknown` (a closed set).
fn crm_label(segment: &str) -> &'static str {
    crate::crm::registry::find(segment).map_or("unknown", |c| c.name)
}

fn find_portal<'a>(pipeline: &'a Pipeline, crm: &str, id: &str) -> Result<&'a Portal, IntakeError> {
    let rt = pipeline.portal(id).ok_or(IntakeError::UnknownPortal)?;
    if rt.portal.crm != crm {
        return Err(IntakeError::UnknownPortal);
    }
    Ok(&rt.portal)
}

async fn webhook(
    State(state): State<AppState>,
    Path((crm, portal_id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Response, IntakeError> {
    let result = accept(&state, &crm, &portal_id, query.as_deref(), &body).await;
    let outcome = match &result {
        Ok((_, outcome)) => *outcome,
        Err(IntakeError::UnknownPortal) => "unknown_portal",
        Err(IntakeError::Malformed(_)) => "malformed",
        Err(IntakeError::Unauthorized(_)) => "unauthorized",
        Err(IntakeError::QueueFull) => "queue_full",
        Err(IntakeError::Store(_)) => "store",
    };
    // Label values come from a closed set (the CRMs we know, the configured portals,
    // `unknown`), so a scanner probing random paths cannot grow the metric families.
    let crm_label = crm_label(&crm);
    let portal_label = match state.pipeline.portal(&portal_id) {
        Some(rt) => rt.portal.id.as_str(),
        None => "unknown",
    };
    state
        .pipeline
        .metrics
        .webhooks
        .get_or_create(&WebhookLabels {
            crm: crm_label.into(),
            portal: portal_label.into(),
            outcome: outcome.into(),
        })
        .inc();
    let Err(e) = &result else {
        return result.map(|(r, _)| r);
    };
    let suppressed_before = match state.rejects.admit(Utc::now().timestamp().max(0) as u64) {
        Admit::Log { suppressed_before } => suppressed_before,
        Admit::Quiet => return result.map(|(r, _)| r),
    };
    if suppressed_before > 0 {
        warn!(
            count = suppressed_before,
            "refused webhooks left out of the log in the last window (leadscore_webhooks_total counts them all)"
        );
    }
    // Log fields: the label when it is one we know, else the segment cut and escaped.
    let crm_field = match crm_label {
        "unknown" => log_segment(&crm),
        known => known.to_string(),
    };
    let portal_field = match portal_label {
        "unknown" => log_segment(&portal_id),
        known => known.to_string(),
    };
    match e {
        IntakeError::Store(_) | IntakeError::QueueFull => {
            warn!(crm = %crm_field, portal = %portal_field, error = %e, "webhook not accepted")
        }
        _ => info!(crm = %crm_field, portal = %portal_field, error = %e, "webhook rejected"),
    }
    result.map(|(r, _)| r)
}

/// Ready when the store answers and every portal's latest CRM call succeeded.
async fn readyz(State(state): State<AppState>) -> Response {
    let p = &state.pipeline;
    let unhealthy: Vec<String> = p
        .portals()
        .filter(|rt| !p.health(&rt.portal.id).is_some_and(|h| h.healthy()))
        .map(|rt| rt.portal.id.clone())
        .collect();
    let store_ok = p.store.pending_get(b"readyz-probe").is_ok();
    if store_ok && unhealthy.is_empty() {
        (StatusCode::OK, Json(json!({"status": "ready"}))).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not_ready", "store_ok": store_ok, "crm_failing": unhealthy})),
        )
            .into_response()
    }
}

/// Prometheus text exposition.
async fn metrics(State(state): State<AppState>) -> Response {
    let p = &state.pipeline;
    let stats = p.store.stats();
    p.metrics.queue_depth.set(stats.pending as i64);
    p.metrics.dead_letters.set(stats.dead_letters as i64);
    let mut extra = String::new();
    let mut portals: Vec<_> = p.portals().collect();
    portals.sort_by(|a, b| a.portal.id.cmp(&b.portal.id));
    let states: Vec<_> = portals
        .iter()
        .filter_map(|rt| rt.crm.pacing().map(|s| (rt.portal.id.clone(), s)))
        .collect();
    if states.iter().any(|(_, s)| !s.methods.is_empty()) {
        extra.push_str("# HELP leadscore_crm_operating_seconds Operating seconds a CRM method used in its window (Bitrix24: 480 s per 10 minutes).\n# TYPE leadscore_crm_operating_seconds gauge\n");
        extra.push_str("# HELP leadscore_crm_operating_paused 1 while the daemon holds a CRM method back to stay under its operating limit.\n# TYPE leadscore_crm_operating_paused gauge\n");
        for (portal, s) in &states {
            s.render_metrics(portal, &mut extra);
        }
    }
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        p.metrics.render(&extra),
    )
        .into_response()
}

async fn accept(
    state: &AppState,
    crm: &str,
    portal_id: &str,
    query: Option<&str>,
    body: &[u8],
) -> Result<(Response, &'static str), IntakeError> {
    let pipeline = &state.pipeline;
    let portal = find_portal(pipeline, crm, portal_id)?;
    // The portal's CRM decodes its own webhooks (the registry says which).
    let entry = registry::find(portal.crm).ok_or(IntakeError::UnknownPortal)?;
    let decoded = (entry.decode)(portal, query, body)?;
    if decoded.subjects.is_empty() {
        debug!(portal = %portal.id, event = %decoded.detail, "event not about leads; ignored");
        return Ok((
            json_answer(Body::from(r#"{"status":"ignored"}"#)),
            "ignored",
        ));
    }
    let now = Utc::now();
    pipeline
        .enqueue_events(
            &portal.id,
            &decoded.subjects,
            &decoded.activities,
            webhook_cause(&decoded.detail, now),
            now,
        )
        .await
        .map_err(|e| match e {
            StoreError::Full { .. } => IntakeError::QueueFull,
            other => IntakeError::Store(other),
        })?;
    debug!(portal = %portal.id, event = %decoded.detail, subjects = decoded.subjects.len(), "queued");
    Ok((queued_answer(decoded.subjects.len()), "queued"))
}

/// `{"status":"queued","subjects":N}`, written out rather than built as a JSON tree
/// and serialized: it is on every webhook's path (issue 19's intake target).
fn queued_answer(subjects: usize) -> Response {
    let body = match subjects {
        1 => Body::from(r#"{"status":"queued","subjects":1}"#),
        n => Body::from(format!(r#"{{"status":"queued","subjects":{n}}}"#)),
    };
    json_answer(body)
}

/// A 200 answer with a JSON body given as text.
fn json_answer(body: Body) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_segments_are_cut_and_escaped() {
        assert_eq!(log_segment("main"), "main");
        let long = "x".repeat(60_000);
        assert_eq!(log_segment(&long), format!("{}…", "x".repeat(64)));
        assert_eq!(log_segment("a\nb\"c\u{1b}[2J"), "a\\nb\\\"c\\u{1b}[2J");
        assert_eq!(log_segment(&"я".repeat(64)), "я".repeat(64));
    }

    #[tokio::test]
    async fn the_written_out_answers_are_the_json_they_claim() {
        for (resp, want) in [
            (queued_answer(1), json!({"status": "queued", "subjects": 1})),
            (queued_answer(3), json!({"status": "queued", "subjects": 3})),
            (
                json_answer(Body::from(r#"{"status":"ignored"}"#)),
                json!({"status": "ignored"}),
            ),
        ] {
            assert_eq!(resp.status(), StatusCode::OK);
            assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");
            let bytes = axum::body::to_bytes(resp.into_body(), 1024).await.unwrap();
            let got: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(got, want);
        }
    }

    #[test]
    fn crm_labels_are_a_closed_set() {
        assert_eq!(crm_label("bitrix24"), "bitrix24");
        assert_eq!(crm_label("amocrm"), "amocrm");
        for other in ["", "Bitrix24", "x", &"a".repeat(4096)] {
            assert_eq!(crm_label(other), "unknown");
        }
    }
}

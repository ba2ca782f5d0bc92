//! Admin endpoints of the running daemon: `POST /admin/rescore` starts a rescore job,
//! `GET /admin/rescore` reports its progress. Guarded like the status page (the
//! dashboard token, or loopback only), because a rescore writes to the CRM.

use axum::body::to_bytes;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::AppState;
use crate::dashboard::authorize;
use crate::pipeline::rescore::RescoreRequest;
use crate::pipeline::RescoreError;

/// Largest rescore request body (a few fields).
const MAX_REQUEST_BYTES: usize = 4096;

/// `POST /admin/rescore`: start a job; 409 with the running job's progress when one is
/// running already (the CLI then follows that one).
pub async fn rescore_start(State(state): State<AppState>, req: Request) -> Response {
    if let Err(d) = authorize(&req) {
        return d.into_response();
    }
    let body = match to_bytes(req.into_body(), MAX_REQUEST_BYTES).await {
        Ok(b) => b,
        Err(_) => return (StatusCode::PAYLOAD_TOO_LARGE, "request too large").into_response(),
    };
    let request: RescoreRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return (StatusCode::BAD_REQUEST, format!("bad rescore request: {e}")).into_response()
        }
    };
    let pipeline = &state.pipeline;
    match pipeline.start_rescore(request).await {
        Ok(progress) => Json(progress).into_response(),
        Err(RescoreError::Busy { .. }) => (
            StatusCode::CONFLICT,
            Json(pipeline.rescore_progress().await),
        )
            .into_response(),
        Err(e @ RescoreError::UnknownPortal(_)) => {
            (StatusCode::BAD_REQUEST, e.to_string()).into_response()
        }
        Err(e @ RescoreError::Crm(_)) => {
            tracing::warn!(error = %e, "rescore could not list the leads");
            (StatusCode::BAD_GATEWAY, e.to_string()).into_response()
        }
        Err(e @ RescoreError::Store(_)) => {
            tracing::warn!(error = %e, "rescore could not use the store");
            (StatusCode::INTERNAL_SERVER_ERROR, "cannot use the store").into_response()
        }
    }
}

/// `GET /admin/rescore`: the current (or last) job's progress.
pub async fn rescore_progress(State(state): State<AppState>, req: Request) -> Response {
    if let Err(d) = authorize(&req) {
        return d.into_response();
    }
    Json(state.pipeline.rescore_progress().await).into_response()
}

/// `POST /admin/forget`: erase a person's tracking data (by visitor, lead, e-mail or
/// phone), for their erasure request while the daemon holds the store.
pub async fn forget(State(state): State<AppState>, req: Request) -> Response {
    if let Err(d) = authorize(&req) {
        return d.into_response();
    }
    let body = match to_bytes(req.into_body(), MAX_REQUEST_BYTES).await {
        Ok(b) => b,
        Err(_) => return (StatusCode::PAYLOAD_TOO_LARGE, "request too large").into_response(),
    };
    let request: crate::tracking::ForgetRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return (StatusCode::BAD_REQUEST, format!("bad forget request: {e}")).into_response()
        }
    };
    let store = &state.pipeline.store;
    match crate::tracking::forget(store, &request) {
        Ok(report) => match store.flush().await {
            Ok(()) => Json(report).into_response(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot flush an erasure");
                (StatusCode::INTERNAL_SERVER_ERROR, "cannot use the store").into_response()
            }
        },
        Err(crate::tracking::ForgetError::Request(e)) => {
            (StatusCode::BAD_REQUEST, format!("bad forget request: {e}")).into_response()
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot erase tracking data");
            (StatusCode::INTERNAL_SERVER_ERROR, "cannot use the store").into_response()
        }
    }
}

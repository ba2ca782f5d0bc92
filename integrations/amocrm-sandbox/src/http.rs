//! The HTTP face of the sandbox: the token endpoint, then for `/api/v4/*` in this order
//! the account block (403), authentication (401), the per-integration request limit
//! (429, counted towards the block), the fault dice, and the endpoint itself; plus the
//! call record. Connection resets are real: the handler marks its connection and the
//! socket is closed with RST before any byte of a response is written.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, State as AxState};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use leadscore_sandbox_kit::{lock, CallLog, Conn, Dice};
use serde_json::{json, Value};
use tokio::time::Instant;

use super::api::{self, ApiError, Call, Reply};
use super::limits::{self, Blocker, Windows};
use super::oauth::{token_params, Auth, Refused};
use super::query::Query;
use super::store::{now_unix, State};
use super::webhooks::Hooks;
use super::{CallRecord, ErrorBody, FaultConfig, FaultKind, MissingEntity};

/// Settings a test may change while the sandbox runs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Runtime {
    pub throttle_body: ErrorBody,
    pub blocked_body: ErrorBody,
    pub missing: MissingEntity,
    pub timeout_batch_above: Option<usize>,
}

/// Everything the server and the handle share.
pub(crate) struct Shared {
    pub state: Mutex<State>,
    pub auth: Mutex<Auth>,
    pub windows: Mutex<Windows>,
    pub blocker: Mutex<Blocker>,
    pub dice: Mutex<Dice<FaultConfig>>,
    pub calls: Mutex<CallLog<CallRecord>>,
    pub hooks: Arc<Hooks>,
    pub runtime: Mutex<Runtime>,
}

impl Shared {
    fn record(
        &self,
        method: &Method,
        path: &str,
        query: &str,
        status: u16,
        started: Instant,
        fault: Option<FaultKind>,
    ) {
        lock(&self.calls).push(CallRecord {
            method: method.as_str().to_owned(),
            path: path.to_owned(),
            route: route_of(path),
            query: query.to_owned(),
            status,
            at: SystemTime::now(),
            elapsed: started.elapsed(),
            fault,
        });
    }
}

/// The path with ids replaced by `{id}`, for counting calls per endpoint.
pub(crate) fn route_of(path: &str) -> String {
    path.split('/')
        .map(|s| {
            let numeric = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
            let event_id = s.len() == 26
                && s.starts_with("01")
                && s.bytes().all(|b| b.is_ascii_alphanumeric());
            if numeric || event_id {
                "{id}"
            } else {
                s
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

// ------------------------------------------------------------------- responses

fn with_type(status: u16, body: Body, content_type: &'static str) -> Response {
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

fn hal(status: u16, v: &Value) -> Response {
    with_type(status, Body::from(v.to_string()), "application/hal+json")
}

fn problem(status: u16, v: &Value) -> Response {
    with_type(
        status,
        Body::from(v.to_string()),
        "application/problem+json",
    )
}

fn no_content() -> Response {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    resp
}

fn html(status: u16, title: &str) -> Response {
    let page = format!(
        "<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    );
    with_type(status, Body::from(page), "text/html; charset=UTF-8")
}

fn problem_of(status: u16, title: &str, detail: &str) -> Value {
    json!({
        "title": title,
        "type": format!("https://httpstatus.es/{status}"),
        "status": status,
        "detail": detail,
    })
}

fn throttled(body: ErrorBody) -> Response {
    match body {
        ErrorBody::Json => problem(
            429,
            &problem_of(429, "Too Many Requests", "Too many requests"),
        ),
        ErrorBody::Html => html(429, "429 Too Many Requests"),
    }
}

fn blocked(body: ErrorBody) -> Response {
    match body {
        ErrorBody::Json => problem(
            403,
            &problem_of(
                403,
                "Forbidden",
                "Account is blocked for exceeding the API request limits",
            ),
        ),
        ErrorBody::Html => html(403, "403 Forbidden"),
    }
}

fn unauthorized() -> Response {
    problem(
        401,
        &problem_of(401, "Unauthorized", "Неверный логин или пароль"),
    )
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

fn json_array_len(body: &[u8]) -> Option<usize> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Array(a)) => Some(a.len()),
        _ => None,
    }
}

// ------------------------------------------------------------------- the handler

/// Records a slow call when its wait ends, answered or abandoned.
struct RecordOnDrop<'a> {
    shared: &'a Shared,
    method: &'a Method,
    path: &'a str,
    query: &'a str,
    status: u16,
    started: Instant,
}

impl Drop for RecordOnDrop<'_> {
    fn drop(&mut self) {
        self.shared.record(
            self.method,
            self.path,
            self.query,
            self.status,
            self.started,
            Some(FaultKind::SlowResponse),
        );
    }
}

/// The single handler behind every path.
pub(crate) async fn entry(
    AxState(shared): AxState<Arc<Shared>>,
    ConnectInfo(conn): ConnectInfo<Conn>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let path = uri.path().to_owned();
    let raw_query = uri.query().unwrap_or("").to_owned();

    if path == "/oauth2/access_token" {
        let resp = if method == Method::POST {
            let ctype = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let params = token_params(ctype, &body);
            let (status, v) = lock(&shared.auth).token_endpoint(&params);
            if status == 200 {
                with_type(200, Body::from(v.to_string()), "application/json")
            } else {
                problem(status, &v)
            }
        } else {
            problem(
                405,
                &problem_of(405, "Method Not Allowed", "Method not allowed"),
            )
        };
        shared.record(&method, &path, "", resp.status().as_u16(), started, None);
        return resp;
    }

    if !path.starts_with("/api/v4/") {
        shared.record(&method, &path, &raw_query, 404, started, None);
        return problem(404, &problem_of(404, "Not Found", "Not Found"));
    }

    let runtime = *lock(&shared.runtime);
    if lock(&shared.blocker).blocked {
        shared.record(&method, &path, &raw_query, 403, started, None);
        return blocked(runtime.blocked_body);
    }

    let integration = match lock(&shared.auth).authorize(bearer(&headers).as_deref()) {
        Ok(i) => i,
        Err(why) => {
            if why == Refused::Expired {
                tracing::debug!("sandbox: expired token presented");
            }
            shared.record(&method, &path, &raw_query, 401, started, None);
            return unauthorized();
        }
    };

    let now = Instant::now();
    let admitted = lock(&shared.windows).admit(&integration, now);
    if !admitted {
        if lock(&shared.blocker).violation(now) {
            tracing::warn!("sandbox: account blocked after repeated request-limit violations");
        }
        shared.record(&method, &path, &raw_query, 429, started, None);
        return throttled(runtime.throttle_body);
    }

    let write = api::is_write(&method);
    let fault = limits::roll(&mut lock(&shared.dice), write);
    let early = match fault {
        Some(FaultKind::TooManyRequests) => Some(throttled(runtime.throttle_body)),
        Some(FaultKind::InternalServerError) => Some(problem(
            500,
            &problem_of(500, "Internal Server Error", "Internal Server Error"),
        )),
        Some(FaultKind::BadGatewayHtml) => Some(html(502, "502 Bad Gateway")),
        Some(FaultKind::GatewayTimeout) => Some(html(504, "504 Gateway Time-out")),
        Some(FaultKind::ConnectionReset) => {
            conn.sever();
            shared.record(&method, &path, &raw_query, 0, started, fault);
            return Response::new(Body::empty());
        }
        Some(FaultKind::SlowResponse) | None => None,
    };
    if let Some(resp) = early {
        shared.record(
            &method,
            &path,
            &raw_query,
            resp.status().as_u16(),
            started,
            fault,
        );
        return resp;
    }
    if write {
        if let (Some(max), Some(n)) = (runtime.timeout_batch_above, json_array_len(&body)) {
            if n > max {
                shared.record(&method, &path, &raw_query, 504, started, None);
                return html(504, "504 Gateway Time-out");
            }
        }
    }

    let query = Query::parse(&raw_query);
    let mut items = Vec::new();
    let outcome = if path.starts_with("/api/v4/webhooks") {
        let user = lock(&shared.state).current_user_id();
        let call = Call {
            method: &method,
            path: &path,
            query: &query,
            body: &body,
            user,
            now: now_unix(),
            missing: runtime.missing,
        };
        api::webhooks(&shared.hooks, &call)
    } else {
        let mut st = lock(&shared.state);
        let user = st.current_user_id();
        let call = Call {
            method: &method,
            path: &path,
            query: &query,
            body: &body,
            user,
            now: now_unix(),
            missing: runtime.missing,
        };
        api::dispatch(&mut st, &call, &mut items)
    };
    shared.hooks.emit(&items);
    let resp = match outcome {
        Ok(Reply::Json(status, v)) => hal(status, &v),
        Ok(Reply::NoContent) => no_content(),
        Err(e @ ApiError::Validation(_)) | Err(e @ ApiError::Problem { .. }) => {
            problem(e.status(), &e.body())
        }
    };
    let status = resp.status().as_u16();
    if fault == Some(FaultKind::SlowResponse) {
        // The change is already made; only the answer is late (past the client's
        // timeout). The client may hang up meanwhile, which drops this future, so the
        // call is recorded by a guard whichever way the wait ends.
        let delay = lock(&shared.dice).config.slow_delay;
        let _record = RecordOnDrop {
            shared: &shared,
            method: &method,
            path: &path,
            query: &raw_query,
            status,
            started,
        };
        tokio::time::sleep(delay).await;
        return resp;
    }
    shared.record(&method, &path, &raw_query, status, started, fault);
    resp
}

#[cfg(test)]
mod tests {
    use super::route_of;

    #[test]
    fn routes_hide_ids() {
        assert_eq!(route_of("/api/v4/leads/20000001"), "/api/v4/leads/{id}");
        assert_eq!(
            route_of("/api/v4/leads/20000001/notes"),
            "/api/v4/leads/{id}/notes"
        );
        assert_eq!(route_of("/api/v4/events"), "/api/v4/events");
    }
}

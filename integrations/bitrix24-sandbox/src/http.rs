//! The HTTP face of the sandbox: inbound-webhook and OAuth routing, the token endpoint,
//! the leaky bucket and operating limit, fault injection (including dropping the TCP
//! connection without an answer), `batch`, the `time` object, and the call record.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, State as AxState};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::TimeZone;
use leadscore_sandbox_kit::{lock, CallLog, Conn, Dice};
use rand::Rng;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Map, Value};
use subtle::ConstantTimeEq;
use tokio::time::Instant;

use super::api::{self, Output};
use super::batch;
use super::events::{EventBus, PortalIdentity};
use super::limits::{Bucket, Operating, OperatingStatus};
use super::php::{parse_query, php_map, scalar_string};
use super::store::{fmt_date, offset, Actor, ApiError, Fired, State};
use super::{CallRecord, FaultConfig, FaultKind, OAuthOptions};

/// Everything the server and the handle share.
pub(crate) struct Shared {
    pub state: Mutex<State>,
    pub bucket: Mutex<Bucket>,
    pub operating: Mutex<Operating>,
    pub faults: Mutex<Dice<FaultConfig>>,
    pub calls: Mutex<CallLog<CallRecord>>,
    pub bus: Arc<EventBus>,
    pub user_id: u64,
    pub code: SecretString,
    pub oauth: Mutex<Option<OAuthState>>,
    pub identity: PortalIdentity,
    pub fault_reset_after: Mutex<Duration>,
    /// Per method, how many of its next commands inside a batch fail (see
    /// `SandboxHandle::fail_batch_commands`).
    pub command_faults: Mutex<std::collections::BTreeMap<String, usize>>,
    /// Per method: how many more top-level calls run and then answer 504.
    pub lost_answers: Mutex<std::collections::BTreeMap<String, usize>>,
}

impl Shared {
    /// Fires outgoing webhooks for changes made while the state lock was held.
    pub(crate) fn emit(&self, fired: Vec<Fired>) {
        for f in fired {
            self.bus.emit(f.event, f.id);
        }
    }

    fn record(&self, method: &str, status: u16, in_batch: bool, fault: Option<FaultKind>) {
        lock(&self.calls).push(CallRecord {
            method: method.to_owned(),
            status,
            at: SystemTime::now(),
            in_batch,
            fault,
        });
    }
}

/// OAuth token bookkeeping: access tokens with their expiry, one live refresh token.
pub(crate) struct OAuthState {
    pub client_id: String,
    pub client_secret: SecretString,
    pub ttl: Duration,
    pub access: HashMap<String, Instant>,
    pub refresh: Option<String>,
    pub current_access: String,
}

impl OAuthState {
    pub(crate) fn new(o: &OAuthOptions) -> Self {
        let access = o.access_token.expose_secret().to_owned();
        let mut map = HashMap::new();
        map.insert(access.clone(), Instant::now() + o.access_ttl);
        Self {
            client_id: o.client_id.clone(),
            client_secret: o.client_secret.clone(),
            ttl: o.access_ttl,
            access: map,
            refresh: Some(o.refresh_token.expose_secret().to_owned()),
            current_access: access,
        }
    }
}

fn random_token() -> String {
    let mut rng = rand::rng();
    (0..64)
        .map(|_| char::from_digit(rng.random_range(0..16), 16).unwrap_or('0'))
        .collect()
}

fn ct_eq(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

// ----------------------------------------------------------------------- time object

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn date_of(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    match offset().timestamp_opt(secs, 0).single() {
        Some(dt) => fmt_date(dt),
        None => String::new(),
    }
}

/// The `time` object every answer carries. `processing` is the execution time the
/// portal counts (the simulated cost when an operating limit is set); `duration` adds
/// the real time spent around it, as on a portal where transfer and queueing make
/// `duration` much larger than `processing`.
fn time_object(start: SystemTime, op: Option<OperatingStatus>) -> Value {
    let finish = SystemTime::now();
    let wall = (unix(finish) - unix(start)).max(0.0);
    let (operating, reset_in, booked) = op.map_or((0.0, Duration::from_secs(600), None), |o| {
        (o.operating, o.reset_in, o.booked)
    });
    let processing = booked.unwrap_or(wall);
    json!({
        "start": unix(start),
        "finish": unix(finish),
        "duration": processing + wall,
        "processing": processing,
        "date_start": date_of(start),
        "date_finish": date_of(finish),
        "operating_reset_at": (unix(finish) + reset_in.as_secs_f64()).ceil() as i64,
        "operating": operating,
    })
}

fn json_response(status: u16, body: Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (status, body.to_string()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json; charset=utf-8"),
    );
    resp
}

fn error_response(e: &ApiError, time: Option<Value>) -> Response {
    let mut body = e.body();
    if let (Some(t), Value::Object(m)) = (time, &mut body) {
        m.insert("time".into(), t);
    }
    json_response(e.status, body)
}

// ----------------------------------------------------------------------- routing

/// The single handler behind every path.
pub(crate) async fn handle(
    AxState(shared): AxState<Arc<Shared>>,
    ConnectInfo(conn): ConnectInfo<Conn>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let start = SystemTime::now();
    let path = uri.path().trim_start_matches('/');
    let segments: Vec<&str> = path.split('/').collect();
    let mut params = uri.query().map(parse_query).unwrap_or_default();
    match body_params(&headers, &body) {
        Ok(extra) => params.extend(extra),
        Err(e) => return error_response(&e, None),
    }
    match segments.as_slice() {
        ["oauth", "token"] | ["oauth", "token", ""] => token_endpoint(&shared, &params),
        ["rest", user, code, method] => {
            let method = normalize_method(method);
            let user_ok = user.parse::<u64>().ok() == Some(shared.user_id);
            if !user_ok || !ct_eq(code, shared.code.expose_secret()) {
                shared.record(&method, 401, false, None);
                return error_response(
                    &ApiError::new(401, "NO_AUTH_FOUND", "Wrong authorization data"),
                    None,
                );
            }
            rest_call(&shared, &conn, &method, params, start).await
        }
        ["rest", method] if !method.is_empty() => {
            let method = normalize_method(method);
            let token = params.remove("auth").and_then(|v| scalar_string(&v));
            if let Err(e) = check_access_token(&shared, token.as_deref()) {
                shared.record(&method, e.status, false, None);
                return error_response(&e, None);
            }
            rest_call(&shared, &conn, &method, params, start).await
        }
        _ => (StatusCode::NOT_FOUND, "Not Found").into_response(),
    }
}

fn normalize_method(raw: &str) -> String {
    raw.trim_end_matches(".json").to_ascii_lowercase()
}

fn body_params(headers: &HeaderMap, body: &Bytes) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let text = String::from_utf8_lossy(body);
    let looks_json = text.trim_start().starts_with('{');
    if ctype.contains("json") || (looks_json && !ctype.contains("form")) {
        return match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(m)) => Ok(m),
            Ok(_) | Err(_) => Err(ApiError::new(
                400,
                "INVALID_REQUEST",
                "Invalid JSON in request body",
            )),
        };
    }
    Ok(parse_query(&text))
}

fn check_access_token(shared: &Shared, token: Option<&str>) -> Result<(), ApiError> {
    let guard = lock(&shared.oauth);
    let Some(oauth) = guard.as_ref() else {
        return Err(ApiError::new(
            401,
            "NO_AUTH_FOUND",
            "Wrong authorization data",
        ));
    };
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return Err(ApiError::new(
            401,
            "NO_AUTH_FOUND",
            "Wrong authorization data",
        ));
    };
    match oauth.access.iter().find(|(t, _)| ct_eq(t, token)) {
        None => Err(ApiError::new(
            401,
            "invalid_token",
            "Unable to authenticate user",
        )),
        Some((_, expires)) if Instant::now() >= *expires => Err(ApiError::new(
            401,
            "expired_token",
            "The access token provided has expired.",
        )),
        Some(_) => Ok(()),
    }
}

fn token_endpoint(shared: &Shared, params: &Map<String, Value>) -> Response {
    let get = |k: &str| params.get(k).and_then(scalar_string).unwrap_or_default();
    let mut guard = lock(&shared.oauth);
    let Some(oauth) = guard.as_mut() else {
        return json_response(
            400,
            json!({"error": "invalid_request", "error_description": "OAuth is not enabled on this portal"}),
        );
    };
    if get("grant_type") != "refresh_token" {
        return json_response(
            400,
            json!({"error": "invalid_request", "error_description": "Unsupported grant_type"}),
        );
    }
    if !ct_eq(&get("client_id"), &oauth.client_id)
        || !ct_eq(&get("client_secret"), oauth.client_secret.expose_secret())
    {
        return json_response(
            401,
            json!({"error": "invalid_client", "error_description": "Invalid client credentials"}),
        );
    }
    let presented = get("refresh_token");
    let valid = oauth
        .refresh
        .as_deref()
        .is_some_and(|r| !presented.is_empty() && ct_eq(r, &presented));
    if !valid {
        return json_response(
            400,
            json!({"error": "invalid_grant", "error_description": "Invalid refresh token"}),
        );
    }
    let access = random_token();
    let refresh = random_token();
    oauth
        .access
        .insert(access.clone(), Instant::now() + oauth.ttl);
    oauth.refresh = Some(refresh.clone());
    oauth.current_access = access.clone();
    let expires_in = oauth.ttl.as_secs();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    json_response(
        200,
        json!({
            "access_token": access,
            "expires": now + expires_in,
            "expires_in": expires_in,
            "scope": "crm,task,user_brief",
            "domain": shared.identity.domain,
            "server_endpoint": shared.identity.server_endpoint,
            "status": "L",
            "client_endpoint": shared.identity.client_endpoint,
            "member_id": shared.identity.member_id,
            "user_id": shared.user_id,
            "refresh_token": refresh,
        }),
    )
}

const HTML_504: &str = "<html>\r\n<head><title>504 Gateway Time-out</title></head>\r\n<body>\r\n<center><h1>504 Gateway Time-out</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";

const HTML_502: &str = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";

/// An nginx error page in front of the portal: HTML, not the REST API's JSON.
fn proxy_page(status: StatusCode, page: &'static str) -> Response {
    let mut resp = (status, page).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/html"),
    );
    resp
}

async fn rest_call(
    shared: &Arc<Shared>,
    conn: &Conn,
    method: &str,
    params: Map<String, Value>,
    start: SystemTime,
) -> Response {
    if !lock(&shared.bucket).admit() {
        shared.record(method, 503, false, None);
        return error_response(
            &ApiError::new(503, "QUERY_LIMIT_EXCEEDED", "Too many requests"),
            None,
        );
    }
    let fault = lock(&shared.faults).roll();
    match fault {
        Some(FaultKind::QueryLimitExceeded) => {
            shared.record(method, 503, false, fault);
            return error_response(
                &ApiError::new(503, "QUERY_LIMIT_EXCEEDED", "Too many requests"),
                None,
            );
        }
        Some(FaultKind::OperationTimeLimit) => {
            shared.record(method, 429, false, fault);
            let reset_in = *lock(&shared.fault_reset_after);
            let op = OperatingStatus {
                operating: 0.0,
                reset_in,
                blocked: true,
                booked: None,
            };
            return error_response(&operating_error(), Some(time_object(start, Some(op))));
        }
        Some(FaultKind::InternalServerError) => {
            shared.record(method, 500, false, fault);
            return error_response(
                &ApiError::new(500, "INTERNAL_SERVER_ERROR", "Internal server error"),
                None,
            );
        }
        Some(FaultKind::BadGatewayHtml) => {
            shared.record(method, 502, false, fault);
            return proxy_page(StatusCode::BAD_GATEWAY, HTML_502);
        }
        Some(FaultKind::ConnectionReset) => {
            shared.record(method, 0, false, fault);
            conn.sever();
            return Response::new(Body::empty());
        }
        Some(FaultKind::SlowResponse) => {
            let delay = lock(&shared.faults).config.slow_delay;
            tokio::time::sleep(delay).await;
        }
        None => {}
    }
    let answer = if method == "batch" {
        run_batch(shared, &params, start, fault)
    } else {
        match run_one(shared, method, &params, false, fault) {
            (Ok(out), op) => success(out, time_object(start, Some(op))),
            (Err(e), op) => {
                let time = (e.status != 404).then(|| time_object(start, Some(op)));
                error_response(&e, time)
            }
        }
    };
    if take_one(&shared.lost_answers, method) {
        // The work is done; the proxy in front gave up waiting for it.
        shared.record(method, 504, false, None);
        return proxy_page(StatusCode::GATEWAY_TIMEOUT, HTML_504);
    }
    answer
}

fn operating_error() -> ApiError {
    ApiError::new(
        429,
        "OPERATION_TIME_LIMIT",
        "Method is blocked due to operation time limit.",
    )
}

/// Whether an injected fault fails this command of a batch (one fewer left).
fn take_command_fault(shared: &Shared, method: &str) -> bool {
    take_one(&shared.command_faults, method)
}

/// Take one from a per-method countdown: whether `method` had any left.
fn take_one(counts: &Mutex<std::collections::BTreeMap<String, usize>>, method: &str) -> bool {
    let mut faults = lock(counts);
    match faults.get_mut(method) {
        Some(n) if *n > 0 => {
            *n -= 1;
            true
        }
        _ => false,
    }
}

/// Runs one method with its operating check, records it, fires its events. The
/// returned standing is the one the answer reports (after booking this call's cost).
fn run_one(
    shared: &Shared,
    method: &str,
    params: &Map<String, Value>,
    in_batch: bool,
    fault: Option<FaultKind>,
) -> (Result<Output, ApiError>, OperatingStatus) {
    let before = lock(&shared.operating).status(method);
    let (outcome, op) = if !api::known(method) {
        (Err(api::method_not_found()), before)
    } else if before.blocked {
        (Err(operating_error()), before)
    } else {
        let mut fired = Vec::new();
        let actor = Actor::Rest {
            user_id: shared.user_id,
        };
        let out = {
            let mut st = lock(&shared.state);
            api::dispatch(&mut st, method, params, actor, &mut fired)
        };
        let rows = out.as_ref().map_or(0, |o| list_rows(&o.result));
        let after = lock(&shared.operating).spend(method, rows);
        shared.emit(fired);
        (out, after)
    };
    let status = match &outcome {
        Ok(_) => 200,
        Err(e) => e.status,
    };
    shared.record(method, status, in_batch, fault);
    (outcome, op)
}

/// Rows a list answer carries (`[..]`, or `{"items": [..]}` / `{"tasks": [..]}`).
fn list_rows(result: &Value) -> usize {
    match result {
        Value::Array(a) => a.len(),
        Value::Object(m) => m.values().find_map(Value::as_array).map_or(0, Vec::len),
        _ => 0,
    }
}

fn success(out: Output, time: Value) -> Response {
    let mut body = Map::new();
    body.insert("result".into(), out.result);
    if let Some(n) = out.next {
        body.insert("next".into(), json!(n));
    }
    if let Some(t) = out.total {
        body.insert("total".into(), json!(t));
    }
    body.insert("time".into(), time);
    json_response(200, Value::Object(body))
}

fn run_batch(
    shared: &Arc<Shared>,
    params: &Map<String, Value>,
    start: SystemTime,
    fault: Option<FaultKind>,
) -> Response {
    let (commands, halt) = match batch::parse(params) {
        Ok(parsed) => parsed,
        Err(e) => {
            shared.record("batch", e.status, false, fault);
            return error_response(&e, None);
        }
    };
    shared.record("batch", 200, false, fault);
    let mut lookup = Map::new();
    let mut results = Vec::new();
    let mut errors = Vec::new();
    let mut totals = Vec::new();
    let mut nexts = Vec::new();
    let mut times = Vec::new();
    let mut booked = 0.0;
    for cmd in commands {
        let sub_start = SystemTime::now();
        let sub_params = batch::resolve(&cmd.query, &lookup);
        let (outcome, op) = if take_command_fault(shared, &cmd.method) {
            let e = ApiError::new(500, "INTERNAL_SERVER_ERROR", "Internal server error");
            shared.record(
                &cmd.method,
                e.status,
                true,
                Some(FaultKind::InternalServerError),
            );
            (Err(e), lock(&shared.operating).status(&cmd.method))
        } else {
            run_one(shared, &cmd.method, &sub_params, true, None)
        };
        booked += op.booked.unwrap_or(0.0);
        times.push((cmd.key.clone(), time_object(sub_start, Some(op))));
        match outcome {
            Ok(out) => {
                lookup.insert(cmd.key.clone(), out.result.clone());
                results.push((cmd.key.clone(), out.result));
                if let Some(t) = out.total {
                    totals.push((cmd.key.clone(), json!(t)));
                }
                if let Some(n) = out.next {
                    nexts.push((cmd.key.clone(), json!(n)));
                }
            }
            Err(e) => {
                errors.push((cmd.key.clone(), e.body()));
                if halt {
                    break;
                }
            }
        }
    }
    let result = json!({
        "result": php_map(results),
        "result_error": php_map(errors),
        "result_total": php_map(totals),
        "result_next": php_map(nexts),
        "result_time": php_map(times),
    });
    // The outer `batch` is not counted against any method; its processing is what its
    // commands booked.
    let op = {
        let mut operating = lock(&shared.operating);
        OperatingStatus {
            operating: 0.0,
            booked: operating.limit.map(|_| booked),
            ..operating.status("batch")
        }
    };
    success(
        Output {
            result,
            total: None,
            next: None,
        },
        time_object(start, Some(op)),
    )
}

//! `GET /status` (JSON for `leadscore status`) and `GET /dashboard` (one server-rendered
//! HTML page, no JavaScript) served by the daemon.
//!
//! Both show lead scores and CRM error texts, so both are protected the same way: with
//! `server.dashboard_token` set, a request must carry it (`?token=` or
//! `Authorization: Bearer`, compared in constant time); without a token only loopback
//! clients are served, so a daemon listening on 0.0.0.0 for webhooks does not publish
//! its leads. Everything that came from a CRM is HTML-escaped, and every answer carries
//! headers that keep a browser from running, framing or sniffing it ([`routes`]).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::Utc;
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

use crate::config::Config;
use crate::intake::AppState;
use crate::status::{self, PortalSpec, StatusReport};

/// What the handlers need from the config; added to the router as an
/// `Extension(Arc<DashboardAccess>)`: the extension is copied into every request,
/// webhooks included, so it is shared rather than cloned (tiers and portals each time).
#[derive(Clone)]
pub struct DashboardAccess {
    /// `server.dashboard_token`: required when set; else loopback clients only.
    pub token: Option<SecretString>,
    /// The model's tiers `(id, label)`, in order.
    pub tiers: Vec<(String, String)>,
    /// The configured portals.
    pub portals: Vec<PortalSpec>,
}

impl std::fmt::Debug for DashboardAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DashboardAccess")
            .field("token", &self.token.as_ref().map(|_| "[redacted]"))
            .field("tiers", &self.tiers)
            .field("portals", &self.portals)
            .finish()
    }
}

impl DashboardAccess {
    /// From the loaded config.
    pub fn from_config(config: &Config) -> DashboardAccess {
        DashboardAccess {
            token: config.server.dashboard_token.clone(),
            tiers: config
                .model
                .tiers()
                .iter()
                .map(|t| (t.id.clone(), t.label.clone()))
                .collect(),
            portals: config
                .portals
                .iter()
                .map(|p| PortalSpec {
                    id: p.id.clone(),
                    crm: p.crm.to_string(),
                    capacity: p.task.capacity.clone(),
                    stages: p.stages.clone(),
                })
                .collect(),
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("a valid dashboard token is required")]
    Token,
    #[error("served to loopback clients only (set server.dashboard_token to allow others)")]
    NotLoopback,
    #[error("the dashboard is not configured in this router")]
    NotConfigured,
}

impl IntoResponse for Denied {
    fn into_response(self) -> Response {
        let status = match self {
            Denied::Token => StatusCode::UNAUTHORIZED,
            Denied::NotLoopback => StatusCode::FORBIDDEN,
            Denied::NotConfigured => StatusCode::NOT_FOUND,
        };
        let mut resp = (status, self.to_string()).into_response();
        if self == Denied::Token {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        resp
    }
}

fn query_token(query: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == "token").then(|| {
            percent_encoding::percent_decode_str(&v.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

/// The credentials of an `Authorization: Bearer …` header; the scheme is
/// case-insensitive (RFC 9110 §11.1), so `bearer` and `BEARER` work too.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Headers on every `/dashboard` and `/status` answer. The page is server-rendered with
/// no script, so the policy allows none; its one `<style>` block and the bars' computed
/// `style="width:…"` attributes need inline styles (a hash cannot cover attributes).
const SECURITY_HEADERS: [(&str, &str); 4] = [
    (
        "content-security-policy",
        "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
];

async fn security_headers(mut resp: Response) -> Response {
    for (name, value) in SECURITY_HEADERS {
        resp.headers_mut()
            .insert(name, HeaderValue::from_static(value));
    }
    resp
}

/// `/status` and `/dashboard`, with [`SECURITY_HEADERS`] on every answer (refusals too).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/status", get(status_json))
        .route("/dashboard", get(page))
        .route("/dashboard/model", get(crate::dashboard_model::page))
        .layer(axum::middleware::map_response(security_headers))
}

/// Decide whether `req` may see the dashboard or the status report.
pub fn authorize(req: &Request) -> Result<&DashboardAccess, Denied> {
    let access: &DashboardAccess = req
        .extensions()
        .get::<Arc<DashboardAccess>>()
        .ok_or(Denied::NotConfigured)?;
    match &access.token {
        Some(expected) => {
            let bearer = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(bearer_token)
                .map(str::to_string);
            let given = bearer
                .or_else(|| req.uri().query().and_then(query_token))
                .ok_or(Denied::Token)?;
            let ok: bool = given
                .as_bytes()
                .ct_eq(expected.expose_secret().as_bytes())
                .into();
            if ok {
                Ok(access)
            } else {
                Err(Denied::Token)
            }
        }
        None => {
            let peer = req
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip());
            match peer {
                Some(ip) if ip.is_loopback() => Ok(access),
                Some(std::net::IpAddr::V6(v6))
                    if v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()) =>
                {
                    Ok(access)
                }
                _ => Err(Denied::NotLoopback),
            }
        }
    }
}

fn report(state: &AppState, access: &DashboardAccess) -> Result<StatusReport, StoreUnreadable> {
    status::collect(
        &state.pipeline.store,
        &access.portals,
        &access.tiers,
        Some(&state.pipeline),
        Utc::now(),
    )
    .map_err(|e| {
        tracing::warn!(error = %e, "cannot read the store for the status report");
        StoreUnreadable
    })
}

/// The store failed while building a report (details are in the log, not the page).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("cannot read the store")]
pub struct StoreUnreadable;

impl IntoResponse for StoreUnreadable {
    fn into_response(self) -> Response {
        (StatusCode::INTERNAL_SERVER_ERROR, self.to_string()).into_response()
    }
}

/// `GET /status`: the status report as JSON.
pub async fn status_json(State(state): State<AppState>, req: Request) -> Response {
    let access = match authorize(&req) {
        Ok(a) => a,
        Err(d) => return d.into_response(),
    };
    match report(&state, access) {
        Ok(r) => Json(r).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `GET /dashboard`: the HTML page.
pub async fn page(State(state): State<AppState>, req: Request) -> Response {
    let access = match authorize(&req) {
        Ok(a) => a,
        Err(d) => return d.into_response(),
    };
    match report(&state, access) {
        Ok(r) => ([(header::CACHE_CONTROL, "no-store")], Html(render_html(&r))).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Escape text for HTML element content and quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;background:#fafafa}\
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:24px 0 8px}\
.muted{color:#777}.cards{display:flex;gap:12px;flex-wrap:wrap}\
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:10px 14px;min-width:110px}\
.card b{display:block;font-size:22px}.bad b{color:#b00020}\
.bars{background:#fff;border:1px solid #ddd;border-radius:6px;padding:10px 14px;max-width:720px}\
.bar{display:flex;align-items:center;gap:8px;margin:4px 0}.bar span.l{width:140px}\
.bar span.f{height:18px;background:#4a78c2;border-radius:3px;display:inline-block}\
.bar.t-hot span.f{background:#d9534f}.bar.t-warm span.f{background:#f0ad4e}.bar.t-cold span.f{background:#5bc0de}\
table{border-collapse:collapse;background:#fff;font-size:13px}\
td,th{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}\
td.why{max-width:520px}";

/// The page, from a report. Pure, so tests can check escaping without a server.
/// The weighted pipeline value: open deals' plain and weighted sums per rep and per
/// pipeline (ids from the CRM: escaped).
fn pipeline_value_table(h: &mut String, v: &crate::weighted::PipelineSums) {
    h.push_str(
        "<h2>Pipeline value <span class=\"muted\">(open deals: sum and weighted by stage)</span></h2>\
<table><tr><th>by</th><th>deals</th><th>sum</th><th>weighted</th></tr>",
    );
    for (title, map) in [("rep", &v.per_rep), ("pipeline", &v.per_pipeline)] {
        for (key, s) in map {
            let _ = write!(
                h,
                "<tr><td>{title} {}</td><td>{}</td><td>{:.2}</td><td>{:.2}</td></tr>",
                escape(key),
                s.deals,
                s.plain,
                s.weighted
            );
        }
    }
    h.push_str("</table>");
}

pub fn render_html(r: &StatusReport) -> String {
    let mut h = String::new();
    let now = r.generated_at;
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width\">\
<title>leadscore dashboard</title><style>{STYLE}</style></head><body>\
<h1>leadscore</h1><div class=\"muted\">as of {}</div>",
        now.format("%Y-%m-%d %H:%M:%S UTC")
    );
    let dlq_class = if r.dead_letters > 0 {
        "card bad"
    } else {
        "card"
    };
    let _ = write!(
        h,
        "<div class=\"cards\" style=\"margin-top:12px\">\
<div class=\"card\"><b>{}</b>in queue</div>\
<div class=\"{dlq_class}\"><b>{}</b>dead letters</div>\
<div class=\"card\"><b>{}</b>leads scored</div></div>",
        r.queue, r.dead_letters, r.leads_scored
    );
    for p in &r.portals {
        let _ = write!(
            h,
            "<h2>Portal {} <span class=\"muted\">({})</span></h2>",
            escape(&p.id),
            escape(&p.crm)
        );
        let crm = match &p.crm_health {
            None => "unknown".to_string(),
            Some(c) if c.healthy => "answering".to_string(),
            Some(c) => format!(
                "failing since {}",
                c.last_error
                    .map(|t| t.format("%H:%M:%S UTC").to_string())
                    .unwrap_or_default()
            ),
        };
        let crm_class = if p.crm_health.as_ref().is_some_and(|c| !c.healthy) {
            "card bad"
        } else {
            "card"
        };
        let retry_class = if p.retrying > 0 { "card bad" } else { "card" };
        let dlq_class = if p.dead_letters > 0 {
            "card bad"
        } else {
            "card"
        };
        let limiter = match &p.pacing {
            None => ("-".to_string(), "limiter unknown".to_string()),
            Some(l) if l.blocked => (l.requests.to_string(), "BLOCKED by the CRM".to_string()),
            Some(l) => (
                l.requests.to_string(),
                format!(
                    "{} rate-limited, {:.0} s waited",
                    l.limit_errors, l.wait_secs
                ),
            ),
        };
        let pause = p.pacing.as_ref().and_then(|l| l.pause_summary());
        let limit_class = if p
            .pacing
            .as_ref()
            .is_some_and(|l| l.blocked || l.limit_errors > 0 || pause.is_some())
        {
            "card bad"
        } else {
            "card"
        };
        let sweep = p
            .last_sweep
            .map(|t| t.format("%H:%M:%S UTC").to_string())
            .unwrap_or_else(|| "never".into());
        let _ = write!(
            h,
            "<div class=\"cards\">\
<div class=\"card\"><b>{}</b>queued</div>\
<div class=\"{retry_class}\"><b>{}</b>retrying after errors</div>\
<div class=\"{dlq_class}\"><b>{}</b>dead letters</div>\
<div class=\"card\"><b>{}</b>tasks today</div>\
<div class=\"{crm_class}\"><b>{}</b>CRM</div>\
<div class=\"card\"><b>{}</b>last sweep</div>\
<div class=\"{limit_class}\"><b>{}</b>CRM requests ({})</div></div>",
            p.queued,
            p.retrying,
            p.dead_letters,
            p.tasks_today,
            escape(&crm),
            escape(&sweep),
            limiter.0,
            escape(&limiter.1)
        );
        if let Some(pause) = &pause {
            let _ = write!(
                h,
                "<p class=\"card bad\" id=\"pause-{}\">CRM requests {}</p>",
                escape(&p.id),
                escape(pause)
            );
        }
        let budgets = p
            .pacing
            .as_ref()
            .map(|l| l.methods.as_slice())
            .unwrap_or(&[]);
        if !budgets.is_empty() {
            let _ = write!(
                h,
                "<h2>Operating time <span class=\"muted\">(per method, last 10 minutes)</span></h2><table><tr><th>method</th><th>used</th><th>limit</th><th>state</th></tr>"
            );
            for m in budgets {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{:.0} s</td><td>{:.0} s</td><td>{}</td></tr>",
                    escape(&m.method),
                    m.used_secs,
                    m.limit_secs,
                    if m.paused_until.is_some() {
                        "paused"
                    } else {
                        "running"
                    }
                );
            }
            h.push_str("</table>");
        }
        if let Some(v) = &p.pipeline_value {
            pipeline_value_table(&mut h, v);
        }
        let total: usize = p.tiers.iter().map(|t| t.leads).sum();
        let max = p.tiers.iter().map(|t| t.leads).max().unwrap_or(0).max(1);
        let _ = write!(
            h,
            "<h2>Score distribution <span class=\"muted\">({total} leads)</span></h2><div class=\"bars\">"
        );
        for t in &p.tiers {
            let width = t.leads * 400 / max;
            let _ = write!(
                h,
                "<div class=\"bar t-{}\"><span class=\"l\">{}</span>\
<span class=\"f\" style=\"width:{width}px\"></span><span>{}</span></div>",
                escape(&t.tier),
                escape(&t.label),
                t.leads
            );
        }
        h.push_str("</div>");
        let _ = write!(h, "<h2>Recent threshold crossings</h2>");
        if p.recent_crossings.is_empty() {
            h.push_str("<p class=\"muted\">none yet</p>");
        } else {
            h.push_str(
                "<table><tr><th>when</th><th>lead</th><th>score</th><th>tier</th>\
<th>task</th><th>why</th></tr>",
            );
            for c in &p.recent_crossings {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}{}</td><td class=\"why\">{}</td></tr>",
                    c.at.format("%Y-%m-%d %H:%M UTC"),
                    escape(&c.lead),
                    c.score.map(|s| s.to_string()).unwrap_or_default(),
                    escape(c.tier.as_deref().unwrap_or("")),
                    escape(&c.task),
                    if c.task_open { "" } else { " (done)" },
                    escape(c.breakdown.as_deref().unwrap_or(""))
                );
            }
            h.push_str("</table>");
        }
        if !p.recent_errors.is_empty() {
            h.push_str("<h2>Latest dead letters</h2><table><tr><th>id</th><th>when</th><th>error</th></tr>");
            for e in &p.recent_errors {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                    e.id,
                    e.at.format("%Y-%m-%d %H:%M UTC"),
                    escape(&e.error)
                );
            }
            h.push_str("</table>");
        }
    }
    h.push_str("</body></html>");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            escape(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
    }

    fn request(peer: Option<&str>, token: Option<&str>, auth: Option<&str>) -> Request {
        let uri = match auth {
            Some(q) => format!("/dashboard?{q}"),
            None => "/dashboard".to_string(),
        };
        let mut req = Request::builder()
            .uri(uri)
            .body(axum::body::Body::empty())
            .unwrap();
        if let Some(p) = peer {
            req.extensions_mut()
                .insert(ConnectInfo(p.parse::<SocketAddr>().unwrap()));
        }
        req.extensions_mut().insert(Arc::new(DashboardAccess {
            token: token.map(|t| SecretString::from(t.to_string())),
            tiers: Vec::new(),
            portals: Vec::new(),
        }));
        req
    }

    #[test]
    fn without_a_token_only_loopback_peers_pass() {
        assert!(authorize(&request(Some("127.0.0.1:5000"), None, None)).is_ok());
        assert!(authorize(&request(Some("[::1]:5000"), None, None)).is_ok());
        assert!(authorize(&request(Some("[::ffff:127.0.0.1]:5000"), None, None)).is_ok());
        assert_eq!(
            authorize(&request(Some("203.0.113.9:5000"), None, None)).unwrap_err(),
            Denied::NotLoopback
        );
        assert_eq!(
            authorize(&request(Some("[2001:db8::1]:5000"), None, None)).unwrap_err(),
            Denied::NotLoopback
        );
        // No peer address known (a router served without connect info): refused.
        assert_eq!(
            authorize(&request(None, None, None)).unwrap_err(),
            Denied::NotLoopback
        );
    }

    #[test]
    fn with_a_token_the_peer_address_does_not_matter() {
        let remote = Some("203.0.113.9:5000");
        assert!(authorize(&request(remote, Some("s3cret"), Some("token=s3cret"))).is_ok());
        assert_eq!(
            authorize(&request(Some("127.0.0.1:1"), Some("s3cret"), None)).unwrap_err(),
            Denied::Token
        );
        assert_eq!(
            authorize(&request(remote, Some("s3cret"), Some("token=s3cre"))).unwrap_err(),
            Denied::Token
        );
    }

    #[test]
    fn page_escapes_crm_text_in_every_field() {
        let now = Utc::now();
        let evil = "<script>x</script>";
        let report = StatusReport {
            source: "daemon".into(),
            generated_at: now,
            queue: 1,
            dead_letters: 1,
            leads_scored: 1,
            portals: vec![status::PortalStatus {
                id: evil.into(),
                crm: evil.into(),
                queued: 1,
                retrying: 0,
                dead_letters: 1,
                last_sweep: None,
                tiers: vec![status::TierCount {
                    tier: evil.into(),
                    label: evil.into(),
                    leads: 1,
                }],
                tasks_today: 1,
                crm_health: None,
                pacing: None,
                pipeline_value: None,
                recent_crossings: vec![status::RecentCrossing {
                    lead: evil.into(),
                    at: now,
                    task: evil.into(),
                    task_open: true,
                    score: Some(80),
                    tier: Some(evil.into()),
                    breakdown: Some(evil.into()),
                }],
                capacity: Vec::new(),
                recent_errors: vec![status::RecentError {
                    id: 1,
                    at: now,
                    error: evil.into(),
                }],
            }],
        };
        let html = render_html(&report);
        assert!(!html.contains("<script"), "{html}");
        assert_eq!(html.matches("&lt;script&gt;x&lt;/script&gt;").count(), 9);
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for value in [
            "Bearer s3cret",
            "bearer s3cret",
            "BEARER  s3cret ",
            " bEaReR s3cret",
        ] {
            assert_eq!(bearer_token(value), Some("s3cret"), "{value:?}");
            let mut req = request(Some("203.0.113.9:5000"), Some("s3cret"), None);
            req.headers_mut()
                .insert(header::AUTHORIZATION, value.parse().unwrap());
            assert!(authorize(&req).is_ok(), "{value:?}");
        }
        for value in [
            "Basic s3cret",
            "Bearers3cret",
            "Bearer",
            "Bearer  ",
            "s3cret",
        ] {
            assert_eq!(bearer_token(value), None, "{value:?}");
        }
    }

    #[test]
    fn token_from_the_query_is_percent_decoded() {
        assert_eq!(query_token("a=1&token=ab%2Bc").as_deref(), Some("ab+c"));
        assert_eq!(query_token("tokens=1"), None);
    }
}

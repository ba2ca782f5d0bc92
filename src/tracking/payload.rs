//! What a browser may send to `POST /track/<portal>`, parsed with hard limits. There is
//! deliberately no field for an e-mail, a phone or a lead: unknown fields are refused,
//! so a page (or anyone posting to the endpoint) cannot claim to be somebody.

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde::Deserialize;

use crate::config::tracking::is_token;
use crate::store::tracking::TrackedEvent;

/// Events per request at most (the snippet sends at most 10).
pub const MAX_EVENTS: usize = 20;
/// Longest URL kept.
pub const MAX_URL: usize = 2048;
/// Longest title kept (longer ones are cut).
pub const MAX_TITLE: usize = 200;
/// Body size limit of the endpoint.
pub const MAX_BODY: usize = 16 * 1024;

/// A parsed batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackBatch {
    pub site_key: String,
    pub visitor: String,
    pub events: Vec<TrackedEvent>,
    /// A signed link's token (`?ls=` of the landing page), checked by the route.
    pub link: Option<String>,
}

/// Why a body was refused (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("not a tracking batch: {0}")]
    Shape(String),
    #[error("site key or visitor id malformed")]
    Token,
    #[error("no events, or more than {MAX_EVENTS}")]
    Count,
    #[error("event {0}: unknown type (page_view, download or form)")]
    Kind(usize),
    #[error("event {0}: the url is not an http(s) URL of at most {MAX_URL} bytes")]
    Url(usize),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    k: String,
    v: String,
    e: Vec<WireEvent>,
    #[serde(default)]
    ls: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireEvent {
    t: String,
    u: String,
    #[serde(default)]
    ti: Option<String>,
    /// Milliseconds since the epoch, from the browser's clock (trusted only within a day).
    #[serde(default)]
    ts: Option<i64>,
}

/// Parse a body received at `now`. Times from the browser are kept when within the last
/// day and not ahead of `now`; otherwise the event is dated `now`.
pub fn parse(body: &[u8], now: DateTime<Utc>) -> Result<TrackBatch, PayloadError> {
    if body.len() > MAX_BODY {
        return Err(PayloadError::Shape("body too large".into()));
    }
    let wire: Wire = serde_json::from_slice(body).map_err(|e| {
        // serde's message names the field, never echoes a value.
        PayloadError::Shape(e.to_string().chars().take(120).collect())
    })?;
    if !is_token(&wire.k) || !is_token(&wire.v) {
        return Err(PayloadError::Token);
    }
    if wire.e.is_empty() || wire.e.len() > MAX_EVENTS {
        return Err(PayloadError::Count);
    }
    let mut events = Vec::with_capacity(wire.e.len());
    for (i, e) in wire.e.into_iter().enumerate() {
        let kind = match e.t.as_str() {
            "page_view" | "download" | "form" => e.t,
            _ => return Err(PayloadError::Kind(i)),
        };
        if e.u.len() > MAX_URL || !plausible_url(&e.u) {
            return Err(PayloadError::Url(i));
        }
        let at =
            e.ts.and_then(|ms| Utc.timestamp_millis_opt(ms).single())
                .filter(|t| *t <= now && *t > now - Duration::days(1))
                .unwrap_or(now);
        let title =
            e.ti.map(|t| {
                t.chars()
                    .filter(|c| !c.is_control())
                    .take(MAX_TITLE)
                    .collect::<String>()
            })
            .filter(|t| !t.trim().is_empty());
        events.push(TrackedEvent {
            kind,
            url: Some(e.u),
            title,
            at,
        });
    }
    let link = wire.ls.filter(|l| l.len() <= 64);
    Ok(TrackBatch {
        site_key: wire.k,
        visitor: wire.v,
        events,
        link,
    })
}

fn plausible_url(u: &str) -> bool {
    reqwest::Url::parse(u)
        .is_ok_and(|p| matches!(p.scheme(), "http" | "https") && p.host_str().is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0).unwrap()
    }

    #[test]
    fn a_batch_parses_with_browser_times_kept_only_when_plausible() {
        let n = now();
        let body = serde_json::json!({
            "k": "site-key-1234", "v": "visitor-abcdef12",
            "e": [
                {"t": "page_view", "u": "https://example.ru/pricing", "ti": "Цены\u{0007}", "ts": (n - Duration::minutes(3)).timestamp_millis()},
                {"t": "download", "u": "https://example.ru/price.pdf", "ts": (n + Duration::hours(2)).timestamp_millis()},
                {"t": "form", "u": "https://example.ru/demo"}
            ]
        });
        let b = parse(body.to_string().as_bytes(), n).unwrap();
        assert_eq!(b.visitor, "visitor-abcdef12");
        assert_eq!(b.events.len(), 3);
        assert_eq!(b.events[0].at, n - Duration::minutes(3));
        assert_eq!(
            b.events[0].title.as_deref(),
            Some("Цены"),
            "control characters dropped"
        );
        assert_eq!(
            b.events[1].at, n,
            "a time ahead of the server is not believed"
        );
        assert_eq!(b.events[2].at, n);
    }

    #[test]
    fn a_browser_cannot_claim_an_identity_or_send_junk() {
        let n = now();
        let refused = [
            r#"{"k":"site-key-1234","v":"visitor-abcdef12","email":"ceo@acme.ru","e":[{"t":"page_view","u":"https://x.ru/"}]}"#,
            r#"{"k":"site-key-1234","v":"visitor-abcdef12","e":[{"t":"page_view","u":"https://x.ru/","lead":"42"}]}"#,
            r#"{"k":"site-key-1234","v":"../../etc","e":[{"t":"page_view","u":"https://x.ru/"}]}"#,
            r#"{"k":"site-key-1234","v":"visitor-abcdef12","e":[]}"#,
            r#"{"k":"site-key-1234","v":"visitor-abcdef12","e":[{"t":"purchase","u":"https://x.ru/"}]}"#,
            r#"{"k":"site-key-1234","v":"visitor-abcdef12","e":[{"t":"page_view","u":"javascript:alert(1)"}]}"#,
            r#"{"k":"site-key-1234","v":"visitor-abcdef12","e":"#,
            "",
        ];
        for body in refused {
            assert!(parse(body.as_bytes(), n).is_err(), "{body}");
        }
        let many: Vec<_> = (0..=MAX_EVENTS)
            .map(|_| serde_json::json!({"t": "page_view", "u": "https://x.ru/"}))
            .collect();
        let body = serde_json::json!({"k": "site-key-1234", "v": "visitor-abcdef12", "e": many});
        assert_eq!(
            parse(body.to_string().as_bytes(), n),
            Err(PayloadError::Count)
        );
    }
}

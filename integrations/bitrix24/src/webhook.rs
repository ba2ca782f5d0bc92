//! Outgoing-webhook (event handler) bodies: authenticate, parse, then verify.
//!
//! Bitrix24 POSTs `application/x-www-form-urlencoded` with PHP bracket keys
//! (`data[FIELDS][ID]=365&auth[application_token]=…`). [`authenticate`] finds the
//! application token with one linear scan of the raw body and compares it before
//! anything else is decoded, so a stranger's body costs no more than reading it once.
//! [`parse`] then turns the body into an [`Unverified`] event; only
//! [`Unverified::verify`], which compares the token again (against the parsed tree) and
//! optionally checks `member_id` / `domain`, yields an [`Event`] that the rest of the
//! daemon accepts. There is no signature in Bitrix24 events: the shared application
//! token is the only proof of origin.

use std::fmt;

use phpform::{FormError, FormValue};
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

/// What kind of change an event reports, for routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    LeadAdd,
    LeadUpdate,
    LeadDelete,
    ActivityAdd,
    ActivityUpdate,
    ActivityDelete,
    /// `ONCRMDEALADD`.
    DealAdd,
    /// `ONCRMDEALUPDATE`.
    DealUpdate,
    /// `ONCRMDEALDELETE`.
    DealDelete,
    /// `ONAPPTEST`, fired by `event.test`.
    AppTest,
    /// Anything else (contacts, user fields…): acknowledged and ignored.
    Other,
}

impl EventKind {
    /// Classify an upper-cased event name.
    pub fn from_name(name: &str) -> EventKind {
        match name {
            "ONCRMLEADADD" => EventKind::LeadAdd,
            "ONCRMLEADUPDATE" => EventKind::LeadUpdate,
            "ONCRMLEADDELETE" => EventKind::LeadDelete,
            "ONCRMACTIVITYADD" => EventKind::ActivityAdd,
            "ONCRMACTIVITYUPDATE" => EventKind::ActivityUpdate,
            "ONCRMACTIVITYDELETE" => EventKind::ActivityDelete,
            "ONCRMDEALADD" => EventKind::DealAdd,
            "ONCRMDEALUPDATE" => EventKind::DealUpdate,
            "ONCRMDEALDELETE" => EventKind::DealDelete,
            "ONAPPTEST" => EventKind::AppTest,
            _ => EventKind::Other,
        }
    }

    /// Events about a lead itself (the id is a lead id).
    pub fn is_lead(self) -> bool {
        matches!(
            self,
            EventKind::LeadAdd | EventKind::LeadUpdate | EventKind::LeadDelete
        )
    }

    /// Events about a deal itself (the id is a deal id).
    pub fn is_deal(self) -> bool {
        matches!(
            self,
            EventKind::DealAdd | EventKind::DealUpdate | EventKind::DealDelete
        )
    }

    /// Events about an activity (the id is an activity id; its lead is found later).
    pub fn is_activity(self) -> bool {
        matches!(
            self,
            EventKind::ActivityAdd | EventKind::ActivityUpdate | EventKind::ActivityDelete
        )
    }
}

/// The `auth[...]` part. Tokens other than the application token are only present for
/// apps (not outgoing webhooks) and are kept secret.
#[derive(Clone)]
pub struct EventAuth {
    pub domain: String,
    pub client_endpoint: Option<String>,
    pub server_endpoint: Option<String>,
    pub member_id: String,
    pub application_token: SecretString,
    pub access_token: Option<SecretString>,
    pub refresh_token: Option<SecretString>,
    pub expires: Option<i64>,
    pub expires_in: Option<i64>,
    pub scope: Option<String>,
    pub status: Option<String>,
    pub user_id: Option<String>,
}

impl fmt::Debug for EventAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventAuth")
            .field("domain", &self.domain)
            .field("member_id", &self.member_id)
            .field("application_token", &"[REDACTED]")
            .field(
                "access_token",
                &self.access_token.as_ref().map(|_| "[REDACTED]"),
            )
            .field("scope", &self.scope)
            .field("user_id", &self.user_id)
            .finish_non_exhaustive()
    }
}

/// A verified event: trusted to come from the configured portal.
#[derive(Debug, Clone)]
pub struct Event {
    /// Upper-cased event name, e.g. `ONCRMLEADUPDATE`.
    pub name: String,
    pub kind: EventKind,
    pub handler_id: Option<String>,
    /// `data[FIELDS][ID]`: the lead or activity id (absent for `ONAPPTEST` and some
    /// other events).
    pub entity_id: Option<String>,
    /// `ts`: Unix seconds when the portal queued the event.
    pub ts: Option<i64>,
    pub auth: EventAuth,
}

/// A parsed but not yet trusted event. Its fields are readable for logging and
/// routing decisions (e.g. "which portal?"), but only `verify` produces an [`Event`].
#[derive(Debug, Clone)]
pub struct Unverified(Event);

impl Unverified {
    /// The event name (for metrics on rejected events).
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// The claimed portal domain.
    pub fn domain(&self) -> &str {
        &self.0.auth.domain
    }

    /// Check the application token (constant time) and, when configured, the portal's
    /// `member_id` and `domain` (case-insensitive).
    pub fn verify(
        self,
        expected_token: &SecretString,
        member_id: Option<&str>,
        domain: Option<&str>,
    ) -> Result<Event, WebhookError> {
        if !token_matches(
            self.0.auth.application_token.expose_secret(),
            expected_token,
        ) {
            return Err(WebhookError::BadToken);
        }
        if let Some(m) = member_id {
            if !m.eq_ignore_ascii_case(&self.0.auth.member_id) {
                return Err(WebhookError::WrongPortal("member_id"));
            }
        }
        if let Some(d) = domain {
            if !d.eq_ignore_ascii_case(&self.0.auth.domain) {
                return Err(WebhookError::WrongPortal("domain"));
            }
        }
        Ok(self.0)
    }
}

/// Constant-time comparison; an empty expected token never matches.
fn token_matches(given: &str, expected: &SecretString) -> bool {
    let want = expected.expose_secret().as_bytes();
    // `ct_eq` on slices of different length returns false without leaking contents.
    !want.is_empty() && bool::from(given.as_bytes().ct_eq(want))
}

/// The gate in front of [`parse`]: the body's `auth[application_token]`, found by a
/// bounded linear scan ([`phpform::find`]), must be `expected`. A body without it, with
/// it twice or badly encoded, or with another token is [`WebhookError::BadToken`], and
/// nothing else in the body has been decoded.
pub fn authenticate(body: &[u8], expected: &SecretString) -> Result<(), WebhookError> {
    match phpform::find(body, "auth[application_token]") {
        Ok(Some(given)) if token_matches(&given, expected) => Ok(()),
        _ => Err(WebhookError::BadToken),
    }
}

impl Event {
    /// Whether the event was queued by the portal at most `max_age_secs` before `now`
    /// (Unix seconds), or as far after it (clock skew). An event without `ts` is not.
    /// `ts` is not signed, so this stops verbatim replays (a body from a log, a proxy
    /// retrying hours later), not someone who holds the token and writes a new body.
    pub fn is_fresh(&self, now: i64, max_age_secs: u64) -> bool {
        self.ts.is_some_and(|ts| now.abs_diff(ts) <= max_age_secs)
    }
}

/// Why a webhook body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// Not a well-formed form body.
    #[error("malformed form body: {0}")]
    Form(#[from] FormError),
    /// A required key is absent or has the wrong shape (`data[FIELDS]` given as a value…).
    #[error("missing or malformed field {0}")]
    Field(&'static str),
    /// The application token does not match.
    #[error("wrong application token")]
    BadToken,
    /// The token matched but the event claims another portal.
    #[error("event is for another portal ({0} mismatch)")]
    WrongPortal(&'static str),
}

fn text<'a>(
    node: Option<&'a FormValue>,
    name: &'static str,
) -> Result<Option<&'a str>, WebhookError> {
    match node {
        None => Ok(None),
        Some(FormValue::Text(s)) => Ok(Some(s.as_str())),
        Some(FormValue::Map(_)) => Err(WebhookError::Field(name)),
    }
}

fn required<'a>(node: Option<&'a FormValue>, name: &'static str) -> Result<&'a str, WebhookError> {
    match text(node, name)? {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(WebhookError::Field(name)),
    }
}

fn number(node: Option<&FormValue>, name: &'static str) -> Result<Option<i64>, WebhookError> {
    text(node, name)?
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<i64>().map_err(|_| WebhookError::Field(name)))
        .transpose()
}

/// Parse a raw body (after [`authenticate`]: this decodes everything). Fails on
/// malformed encoding, missing `event` / `auth[domain]` / `auth[member_id]` /
/// `auth[application_token]`, a non-numeric `ts`, an entity id that is not a canonical
/// record id ([`phpform::is_record_id`]: digits, no leading zero, at most 18), and keys
/// with the wrong shape. `event_handler_id` is optional (absent in older portals).
pub fn parse(body: &[u8]) -> Result<Unverified, WebhookError> {
    let root = phpform::parse_bytes(body)?;
    let name = required(root.get("event"), "event")?
        .trim()
        .to_ascii_uppercase();
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(WebhookError::Field("event"));
    }
    let handler_id = text(root.get("event_handler_id"), "event_handler_id")?
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let ts = number(root.get("ts"), "ts")?;
    let entity_id = match root.get("data") {
        None => None,
        Some(FormValue::Text(s)) if s.is_empty() => None,
        Some(FormValue::Text(_)) => return Err(WebhookError::Field("data")),
        Some(data @ FormValue::Map(_)) => match data.get("FIELDS") {
            None => None,
            Some(FormValue::Text(_)) => return Err(WebhookError::Field("data[FIELDS]")),
            Some(fields) => {
                // Lead and activity ids are refused unless canonical (`0001` is not `1`:
                // 400, not a second queue entry for the same lead).
                let id = text(fields.get("ID"), "data[FIELDS][ID]")?;
                match id {
                    None => None,
                    Some(s) if phpform::is_record_id(s) => Some(s.to_string()),
                    Some(_) => return Err(WebhookError::Field("data[FIELDS][ID]")),
                }
            }
        },
    };
    let kind = EventKind::from_name(&name);
    if (kind.is_lead() || kind.is_deal() || kind.is_activity()) && entity_id.is_none() {
        return Err(WebhookError::Field("data[FIELDS][ID]"));
    }
    let auth = match root.get("auth") {
        Some(a @ FormValue::Map(_)) => a,
        _ => return Err(WebhookError::Field("auth")),
    };
    let opt = |key: &'static str| -> Result<Option<String>, WebhookError> {
        Ok(text(auth.get(key), key)?
            .filter(|s| !s.is_empty())
            .map(str::to_string))
    };
    let secret = |key: &'static str| -> Result<Option<SecretString>, WebhookError> {
        Ok(opt(key)?.map(SecretString::from))
    };
    let auth = EventAuth {
        domain: required(auth.get("domain"), "auth[domain]")?.to_string(),
        client_endpoint: opt("client_endpoint")?,
        server_endpoint: opt("server_endpoint")?,
        member_id: required(auth.get("member_id"), "auth[member_id]")?.to_string(),
        application_token: SecretString::from(
            required(auth.get("application_token"), "auth[application_token]")?.to_string(),
        ),
        access_token: secret("access_token")?,
        refresh_token: secret("refresh_token")?,
        expires: number(auth.get("expires"), "auth[expires]")?,
        expires_in: number(auth.get("expires_in"), "auth[expires_in]")?,
        scope: opt("scope")?,
        status: opt("status")?,
        user_id: opt("user_id")?,
    };
    Ok(Unverified(Event {
        name,
        kind,
        handler_id,
        entity_id,
        ts,
        auth,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2018 capture from an outgoing webhook (crm notes §1): no `event_handler_id`.
    const CAPTURE_2018: &str = "event=ONCRMLEADADD&data%5BFIELDS%5D%5BID%5D=365&ts=1545851621&auth%5Bdomain%5D=b24-46hovy.bitrix24.ru&auth%5Bclient_endpoint%5D=https%3A%2F%2Fb24-46hovy.bitrix24.ru%2Frest%2F&auth%5Bserver_endpoint%5D=https%3A%2F%2Foauth.bitrix.info%2Frest%2F&auth%5Bmember_id%5D=1b87798bc2d16c4b7f2a604e0c899a34&auth%5Bapplication_token%5D=o8kfcne3du24sfvoeahh43uf9oygu2x3";

    /// 2024 capture sent to an app (b24phpsdk test fixture); the SDK elides the token
    /// as `<token>`, kept verbatim here.
    const CAPTURE_2024_APP: &str = "event=ONCRMCONTACTADD&event_handler_id=58&data%5BFIELDS%5D%5BID%5D=134806&ts=1727018926&auth%5Baccess_token%5D=be45f0660071849a0058f18a000000010000077261ef50fc26f1357adbd86a052c9e48&auth%5Bexpires%5D=1727022526&auth%5Bexpires_in%5D=3600&auth%5Bscope%5D=crm%2Cplacement%2Cuser_brief&auth%5Bdomain%5D=bitrix24-php-sdk-playground.bitrix24.com&auth%5Bserver_endpoint%5D=https%3A%2F%2Foauth.bitrix.info%2Frest%2F&auth%5Bstatus%5D=L&auth%5Bclient_endpoint%5D=https%3A%2F%2Fbitrix24-php-sdk-playground.bitrix24.com%2Frest%2F&auth%5Bmember_id%5D=010b6886ebc205e43ae65000ee00addb&auth%5Buser_id%5D=1&auth%5Bapplication_token%5D=<token>";

    fn token(s: &str) -> SecretString {
        SecretString::from(s.to_string())
    }

    #[test]
    fn capture_2018_parses_and_verifies() {
        let u = parse(CAPTURE_2018.as_bytes()).unwrap();
        assert_eq!(u.domain(), "b24-46hovy.bitrix24.ru");
        let e = u
            .verify(
                &token("o8kfcne3du24sfvoeahh43uf9oygu2x3"),
                Some("1b87798bc2d16c4b7f2a604e0c899a34"),
                Some("B24-46HOVY.bitrix24.ru"),
            )
            .unwrap();
        assert_eq!(e.name, "ONCRMLEADADD");
        assert_eq!(e.kind, EventKind::LeadAdd);
        assert_eq!(e.entity_id.as_deref(), Some("365"));
        assert_eq!(e.handler_id, None);
        assert_eq!(e.ts, Some(1545851621));
        assert!(e.auth.access_token.is_none());
    }

    #[test]
    fn capture_2024_app_parses_with_secret_tokens() {
        let u = parse(CAPTURE_2024_APP.as_bytes()).unwrap();
        let e = u.verify(&token("<token>"), None, None).unwrap();
        assert_eq!(e.kind, EventKind::Other);
        assert_eq!(e.handler_id.as_deref(), Some("58"));
        assert_eq!(e.entity_id.as_deref(), Some("134806"));
        assert_eq!(e.auth.expires_in, Some(3600));
        assert_eq!(e.auth.scope.as_deref(), Some("crm,placement,user_brief"));
        assert_eq!(e.auth.user_id.as_deref(), Some("1"));
        let debug = format!("{e:?}");
        assert!(!debug.contains("be45f066"), "{debug}");
        assert!(!debug.contains("<token>"), "{debug}");
    }

    #[test]
    fn wrong_token_or_portal_is_rejected() {
        let bad = |t: &str| {
            parse(CAPTURE_2018.as_bytes())
                .unwrap()
                .verify(&token(t), None, None)
        };
        assert_eq!(
            bad("o8kfcne3du24sfvoeahh43uf9oygu2x4").unwrap_err(),
            WebhookError::BadToken
        );
        assert_eq!(
            bad("o8kfcne3du24sfvoeahh43uf9oygu2x").unwrap_err(),
            WebhookError::BadToken
        );
        assert_eq!(bad("").unwrap_err(), WebhookError::BadToken);
        let u = parse(CAPTURE_2018.as_bytes()).unwrap();
        let err = u
            .verify(
                &token("o8kfcne3du24sfvoeahh43uf9oygu2x3"),
                Some("other"),
                None,
            )
            .unwrap_err();
        assert_eq!(err, WebhookError::WrongPortal("member_id"));
        let u = parse(CAPTURE_2018.as_bytes()).unwrap();
        let err = u
            .verify(
                &token("o8kfcne3du24sfvoeahh43uf9oygu2x3"),
                None,
                Some("evil.bitrix24.ru"),
            )
            .unwrap_err();
        assert_eq!(err, WebhookError::WrongPortal("domain"));
    }

    #[test]
    fn event_names_are_upper_cased_and_classified() {
        let body = "event=onCrmActivityAdd&data[FIELDS][ID]=9&auth[domain]=d&auth[member_id]=m&auth[application_token]=t";
        let e = parse(body.as_bytes())
            .unwrap()
            .verify(&token("t"), None, None)
            .unwrap();
        assert_eq!(e.name, "ONCRMACTIVITYADD");
        assert!(e.kind.is_activity());
        let body = "event=ONAPPTEST&auth[domain]=d&auth[member_id]=m&auth[application_token]=t";
        let e = parse(body.as_bytes())
            .unwrap()
            .verify(&token("t"), None, None)
            .unwrap();
        assert_eq!((e.kind, e.entity_id), (EventKind::AppTest, None));
    }

    #[test]
    fn authenticate_checks_the_token_before_anything_is_decoded() {
        let right = token("o8kfcne3du24sfvoeahh43uf9oygu2x3");
        assert_eq!(authenticate(CAPTURE_2018.as_bytes(), &right), Ok(()));
        let wrong = token("o8kfcne3du24sfvoeahh43uf9oygu2x4");
        assert_eq!(
            authenticate(CAPTURE_2018.as_bytes(), &wrong),
            Err(WebhookError::BadToken)
        );
        assert_eq!(
            authenticate(CAPTURE_2018.as_bytes(), &token("")),
            Err(WebhookError::BadToken)
        );
        // The reproduction: no token, so nothing is parsed.
        let repro = vec!["a[]"; 10_000].join("&");
        assert_eq!(
            authenticate(repro.as_bytes(), &right),
            Err(WebhookError::BadToken)
        );
        // Garbage around the right token is the parser's business, after the gate.
        let body = b"\xff%zz&auth[application_token]=t&a[b=1";
        assert_eq!(authenticate(body, &token("t")), Ok(()));
        assert!(parse(body).is_err());
        // Two tokens: which one counts is ambiguous, so neither does.
        let twice = b"auth[application_token]=t&auth%5Bapplication_token%5D=t";
        assert_eq!(
            authenticate(twice, &token("t")),
            Err(WebhookError::BadToken)
        );
    }

    #[test]
    fn entity_ids_must_be_canonical() {
        let ok_auth = "auth[domain]=d&auth[member_id]=m&auth[application_token]=t";
        for id in [
            "0001",
            "0",
            "01",
            "+1",
            &"9".repeat(19),
            &"1".repeat(60_000),
        ] {
            let body = format!("event=ONCRMLEADADD&data[FIELDS][ID]={id}&{ok_auth}");
            assert_eq!(
                parse(body.as_bytes()).unwrap_err(),
                WebhookError::Field("data[FIELDS][ID]"),
                "{}",
                &id[..id.len().min(20)]
            );
        }
        let body = format!(
            "event=ONCRMLEADADD&data[FIELDS][ID]={}&{ok_auth}",
            "9".repeat(18)
        );
        assert!(parse(body.as_bytes()).is_ok());
    }

    #[test]
    fn freshness_needs_ts_within_the_window_either_way() {
        let e = parse(CAPTURE_2018.as_bytes())
            .unwrap()
            .verify(&token("o8kfcne3du24sfvoeahh43uf9oygu2x3"), None, None)
            .unwrap();
        let ts = 1545851621;
        assert!(e.is_fresh(ts + 300, 300));
        assert!(!e.is_fresh(ts + 301, 300));
        assert!(e.is_fresh(ts - 300, 300));
        assert!(!e.is_fresh(ts - 301, 300));
        assert!(e.is_fresh(i64::MIN, u64::MAX));
        let no_ts = Event { ts: None, ..e };
        assert!(!no_ts.is_fresh(ts, 300));
    }

    #[test]
    fn malformed_bodies_are_rejected() {
        let ok_auth = "auth[domain]=d&auth[member_id]=m&auth[application_token]=t";
        let cases: Vec<(String, WebhookError)> = vec![
            (
                format!("data[FIELDS][ID]=1&{ok_auth}"),
                WebhookError::Field("event"),
            ),
            (
                format!("event=ONCRMLEADADD&{ok_auth}"),
                WebhookError::Field("data[FIELDS][ID]"),
            ),
            (
                format!("event=ONCRMLEADADD&data[FIELDS][ID]=1x&{ok_auth}"),
                WebhookError::Field("data[FIELDS][ID]"),
            ),
            (
                format!("event=ONCRMLEADADD&data=1&{ok_auth}"),
                WebhookError::Field("data"),
            ),
            (
                format!("event=ONCRMLEADADD&data[FIELDS][ID]=1&ts=soon&{ok_auth}"),
                WebhookError::Field("ts"),
            ),
            (
                format!("event[x]=1&{ok_auth}"),
                WebhookError::Field("event"),
            ),
            (
                format!("event=ON CRM&{ok_auth}"),
                WebhookError::Field("event"),
            ),
            (
                "event=ONCRMLEADADD&data[FIELDS][ID]=1&auth[domain]=d&auth[member_id]=m".into(),
                WebhookError::Field("auth[application_token]"),
            ),
            (
                "event=ONCRMLEADADD&data[FIELDS][ID]=1&auth=x".into(),
                WebhookError::Field("auth"),
            ),
            (
                "event=ONCRMLEADADD&data[FIELDS][ID]=1".into(),
                WebhookError::Field("auth"),
            ),
        ];
        for (body, want) in cases {
            assert_eq!(parse(body.as_bytes()).unwrap_err(), want, "{body}");
        }
        assert!(matches!(parse(b"event=%ZZ"), Err(WebhookError::Form(_))));
        assert!(matches!(
            parse(b"event=A&event[b]=1"),
            Err(WebhookError::Form(_))
        ));
        assert!(matches!(parse(b"\xff\xfe"), Err(WebhookError::Form(_))));
        assert_eq!(
            parse(b"{\"event\":\"ONCRMLEADADD\"}").unwrap_err(),
            WebhookError::Field("event")
        );
    }
}

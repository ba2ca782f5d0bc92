//! `POST /identify/<portal>`: the site's backend (never a browser) says which lead a
//! visitor is, e.g. right after a form with an e-mail created or found the lead. The
//! call is signed with the portal's `identify_secret`: HMAC-SHA256 over
//! `"<timestamp>.<body>"`, sent as `X-Leadscore-Timestamp` (Unix seconds) and
//! `X-Leadscore-Signature: sha256=<hex>`. A stale timestamp, a wrong signature or a
//! signature already used is refused, and nothing is attached.
//!
//! The body names the visitor and exactly one of: the CRM `lead_id`, the person's
//! `email`, or their `phone` (resolved to the lead through the CRM, see `resolve`).

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::Sha256;

use super::contact::ContactPoint;
use crate::config::tracking::{is_record_id, is_token};

/// Header with the signing time (Unix seconds).
pub const TIMESTAMP_HEADER: &str = "x-leadscore-timestamp";
/// Header with `sha256=<hex of the HMAC>`.
pub const SIGNATURE_HEADER: &str = "x-leadscore-signature";

type HmacSha256 = Hmac<Sha256>;

/// The signed body as sent.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBody {
    visitor: String,
    #[serde(default)]
    lead_id: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    phone: Option<String>,
}

/// The signed body, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentifyBody {
    /// The visitor id the snippet keeps in the browser (`leadscore.visitor()`).
    pub visitor: String,
    /// Who the visitor is.
    pub who: Who,
}

/// Who an identify call says the visitor is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Who {
    /// The CRM lead, by id (the site's backend created or found it).
    Lead(String),
    /// A person's e-mail or phone, normalised; the CRM says which lead it is.
    Contact(ContactPoint),
}

/// Why an identify call was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentifyError {
    #[error("missing or malformed signature headers")]
    Headers,
    #[error("timestamp too far from now")]
    Stale,
    #[error("signature does not match")]
    Signature,
    #[error("signature already used")]
    Replayed,
    #[error("body: {0}")]
    Body(String),
}

/// The `X-Leadscore-Signature` value for `body` signed at `ts` (what the site's backend
/// computes; `leadscore` uses it in tests and docs).
pub fn sign(secret: &SecretString, ts: i64, body: &[u8]) -> String {
    let mut mac = mac(secret, ts);
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

fn mac(secret: &SecretString, ts: i64) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(secret.expose_secret().as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(ts.to_string().as_bytes());
    mac.update(b".");
    mac
}

/// Check the headers against `body`; the signature's bytes (the replay key) when good.
pub fn verify(
    secret: &SecretString,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: DateTime<Utc>,
    max_skew_secs: u64,
) -> Result<Vec<u8>, IdentifyError> {
    let ts: i64 = timestamp
        .and_then(|t| t.trim().parse().ok())
        .ok_or(IdentifyError::Headers)?;
    let given = signature
        .and_then(|s| s.trim().strip_prefix("sha256="))
        .and_then(decode_hex)
        .ok_or(IdentifyError::Headers)?;
    if now.timestamp().abs_diff(ts) > max_skew_secs {
        return Err(IdentifyError::Stale);
    }
    let mut mac = mac(secret, ts);
    mac.update(body);
    mac.verify_slice(&given)
        .map_err(|_| IdentifyError::Signature)?;
    Ok(given)
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Parse a verified body: a well-formed visitor id and exactly one of a canonical lead
/// id, an e-mail or a phone (normalised).
pub fn parse_body(body: &[u8]) -> Result<IdentifyBody, IdentifyError> {
    let b: RawBody =
        serde_json::from_slice(body).map_err(|e| IdentifyError::Body(e.to_string()))?;
    if !is_token(&b.visitor) {
        return Err(IdentifyError::Body("visitor id malformed".into()));
    }
    let bad = |m: &str| Err(IdentifyError::Body(m.into()));
    let who = match (b.lead_id, b.email, b.phone) {
        (Some(id), None, None) if is_record_id(&id) => Who::Lead(id),
        (Some(_), None, None) => return bad("lead_id must be a CRM record id"),
        (None, Some(e), None) => match ContactPoint::email(&e) {
            Some(p) => Who::Contact(p),
            None => return bad("email is not an e-mail address"),
        },
        (None, None, Some(p)) => match ContactPoint::phone(&p) {
            Some(p) => Who::Contact(p),
            None => return bad("phone is not a phone number"),
        },
        _ => return bad("name exactly one of lead_id, email and phone"),
    };
    Ok(IdentifyBody {
        visitor: b.visitor,
        who,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> SecretString {
        SecretString::from("0123456789abcdef0123456789abcdef")
    }

    #[test]
    fn a_signed_call_verifies_and_any_change_breaks_it() {
        let now = Utc::now();
        let ts = now.timestamp();
        let body = br#"{"visitor":"visitor-abcdef12","lead_id":"42"}"#;
        let sig = sign(&secret(), ts, body);
        let ok = verify(&secret(), Some(&ts.to_string()), Some(&sig), body, now, 300);
        assert!(ok.is_ok());
        // Another body, another time, another secret, a stale time, no headers.
        let other = br#"{"visitor":"visitor-abcdef12","lead_id":"43"}"#;
        assert_eq!(
            verify(
                &secret(),
                Some(&ts.to_string()),
                Some(&sig),
                other,
                now,
                300
            ),
            Err(IdentifyError::Signature)
        );
        assert_eq!(
            verify(
                &secret(),
                Some(&(ts + 1).to_string()),
                Some(&sig),
                body,
                now,
                300
            ),
            Err(IdentifyError::Signature)
        );
        let wrong = SecretString::from("another-secret-another-secret-00");
        assert_eq!(
            verify(&wrong, Some(&ts.to_string()), Some(&sig), body, now, 300),
            Err(IdentifyError::Signature)
        );
        let old = ts - 301;
        let old_sig = sign(&secret(), old, body);
        assert_eq!(
            verify(
                &secret(),
                Some(&old.to_string()),
                Some(&old_sig),
                body,
                now,
                300
            ),
            Err(IdentifyError::Stale)
        );
        assert_eq!(
            verify(&secret(), None, Some(&sig), body, now, 300),
            Err(IdentifyError::Headers)
        );
        assert_eq!(
            verify(
                &secret(),
                Some(&ts.to_string()),
                Some("sha256=zz"),
                body,
                now,
                300
            ),
            Err(IdentifyError::Headers)
        );
    }

    #[test]
    fn the_body_names_a_visitor_and_exactly_one_lead_email_or_phone() {
        let who = |b: &str| parse_body(b.as_bytes()).map(|b| b.who);
        assert_eq!(
            who(r#"{"visitor":"visitor-abcdef12","lead_id":"42"}"#),
            Ok(Who::Lead("42".into()))
        );
        assert_eq!(
            who(r#"{"visitor":"visitor-abcdef12","email":" A@B.ru"}"#),
            Ok(Who::Contact(ContactPoint::Email("a@b.ru".into())))
        );
        assert_eq!(
            who(r#"{"visitor":"visitor-abcdef12","phone":"8 (912) 345-67-89"}"#),
            Ok(Who::Contact(ContactPoint::Phone("79123456789".into())))
        );
        for bad in [
            r#"{"visitor":"visitor-abcdef12","lead_id":"042"}"#,
            r#"{"visitor":"visitor-abcdef12","lead_id":"4 2"}"#,
            r#"{"visitor":"v","lead_id":"42"}"#,
            r#"{"visitor":"visitor-abcdef12"}"#,
            r#"{"visitor":"visitor-abcdef12","lead_id":"42","email":"a@b.ru"}"#,
            r#"{"visitor":"visitor-abcdef12","email":"a@b.ru","phone":"79123456789"}"#,
            r#"{"visitor":"visitor-abcdef12","email":"not-an-email"}"#,
            r#"{"visitor":"visitor-abcdef12","phone":"12"}"#,
            r#"{"visitor":"visitor-abcdef12","name":"Ivan","lead_id":"42"}"#,
        ] {
            assert!(parse_body(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}

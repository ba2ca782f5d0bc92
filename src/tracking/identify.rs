//! `POST /identify/<portal>`: the site's backend (never a browser) says which lead a
//! visitor is, e.g. right after a form with an e-mail created or found the lead. The
//! call is signed with the portal's `identify_secret`: HMAC-SHA256 over
//! `"<timestamp>.<body>"`, sent as `X-Leadscore-Timestamp` (Unix seconds) and
//! `X-Leadscore-Signature: sha256=<hex>`. A stale timestamp, a wrong signature or a
//! signature already used is refused, and nothing is attached.

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::Sha256;

use crate::config::tracking::{is_record_id, is_token};

/// Header with the signing time (Unix seconds).
pub const TIMESTAMP_HEADER: &str = "x-leadscore-timestamp";
/// Header with `sha256=<hex of the HMAC>`.
pub const SIGNATURE_HEADER: &str = "x-leadscore-signature";

type HmacSha256 = Hmac<Sha256>;

/// The signed body.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentifyBody {
    /// The visitor id the snippet keeps in the browser (`leadscore.visitor()`).
    pub visitor: String,
    /// The CRM lead this visitor is.
    pub lead_id: String,
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

/// Parse a verified body: a well-formed visitor id and a canonical lead id.
pub fn parse_body(body: &[u8]) -> Result<IdentifyBody, IdentifyError> {
    let b: IdentifyBody =
        serde_json::from_slice(body).map_err(|e| IdentifyError::Body(e.to_string()))?;
    if !is_token(&b.visitor) {
        return Err(IdentifyError::Body("visitor id malformed".into()));
    }
    if !is_record_id(&b.lead_id) {
        return Err(IdentifyError::Body(
            "lead_id must be a CRM record id".into(),
        ));
    }
    Ok(b)
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
    fn the_body_names_a_visitor_and_a_canonical_lead() {
        assert!(parse_body(br#"{"visitor":"visitor-abcdef12","lead_id":"42"}"#).is_ok());
        for bad in [
            r#"{"visitor":"visitor-abcdef12","lead_id":"042"}"#,
            r#"{"visitor":"visitor-abcdef12","lead_id":"4 2"}"#,
            r#"{"visitor":"v","lead_id":"42"}"#,
            r#"{"visitor":"visitor-abcdef12","email":"a@b.ru"}"#,
        ] {
            assert!(parse_body(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}

//! Signed links (`?ls=<lead>.<signature>`) for e-mail campaigns: `leadscore link`
//! makes them with the portal's identify secret, so a visitor who opens one is that
//! lead (a trusted channel like `/identify`: only the holder of the secret can make
//! one). A forwarded link identifies whoever opens it, as with any tracked e-mail link.

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The query parameter the snippet reads (and then removes from the address bar).
pub const PARAM: &str = "ls";

fn tag(secret: &SecretString, lead: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose_secret().as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(b"link.");
    mac.update(lead.as_bytes());
    // 128 bits: short enough for a URL, far beyond guessing.
    mac.finalize().into_bytes()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `<lead>.<signature>` for a lead.
pub fn token(secret: &SecretString, lead: &str) -> String {
    format!("{lead}.{}", tag(secret, lead))
}

/// The lead a link token names, if its signature is right.
pub fn verify(secret: &SecretString, token: &str) -> Option<String> {
    let (lead, sig) = token.split_once('.')?;
    let good = crate::config::tracking::is_record_id(lead)
        && bool::from(tag(secret, lead).as_bytes().ct_eq(sig.as_bytes()));
    good.then(|| lead.to_string())
}

/// `url` with the link parameter for `lead` added.
pub fn signed_url(secret: &SecretString, lead: &str, url: &str) -> Result<String, String> {
    let mut u = reqwest::Url::parse(url).map_err(|e| format!("{url}: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(format!("{url}: not an http(s) URL"));
    }
    u.query_pairs_mut().append_pair(PARAM, &token(secret, lead));
    Ok(u.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_names_its_lead_and_nothing_else_verifies() {
        let s = SecretString::from("0123456789abcdef0123456789abcdef");
        let t = token(&s, "42");
        assert_eq!(verify(&s, &t).as_deref(), Some("42"));
        let other = SecretString::from("another-secret-another-secret-00");
        assert_eq!(verify(&other, &t), None);
        let sig = t.split_once('.').unwrap().1;
        assert_eq!(verify(&s, &format!("43.{sig}")), None, "the lead is signed");
        assert_eq!(verify(&s, "42"), None);
        assert_eq!(verify(&s, &format!("042.{sig}")), None);
        let url = signed_url(&s, "42", "https://shop.example.ru/offer?utm=mail").unwrap();
        assert!(
            url.starts_with("https://shop.example.ru/offer?utm=mail&ls=42."),
            "{url}"
        );
        assert!(signed_url(&s, "42", "javascript:alert(1)").is_err());
    }
}

//! `[portal.tracking]`: website tracking for one portal. The site key is public (it sits
//! in the page's snippet); the identify secret is a credential like the CRM's and signs
//! only the site's backend calls, so a browser can never attach events to a lead.

use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::load::Ctx;

/// `[portal.tracking]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackingSection {
    /// Public key the snippet sends with every batch (names the site, proves nothing).
    pub site_key: String,
    /// Pages allowed to send events: `scheme://host[:port]`, as browsers send `Origin`.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    pub identify_secret: Option<SecretString>,
    pub identify_secret_env: Option<String>,
    pub identify_secret_file: Option<PathBuf>,
    /// Days an anonymous visitor's events are kept waiting for an identification.
    #[serde(default = "default_anonymous_days")]
    pub anonymous_days: u32,
    /// Oldest (or furthest ahead) a signed identify call may be, in seconds.
    #[serde(default = "default_max_skew_secs")]
    pub max_skew_secs: u64,
    /// Tracking requests one address may send per minute.
    #[serde(default = "default_per_ip")]
    pub per_ip_per_minute: u32,
    /// Events one visitor id may send per minute.
    #[serde(default = "default_per_visitor")]
    pub per_visitor_per_minute: u32,
    /// Days the lead an identify call's e-mail or phone resolved to is remembered
    /// (hashed) before the CRM is asked again; 0 asks every time.
    #[serde(default = "default_resolution_days")]
    pub resolution_days: u32,
    /// A lead field (neutral name, mapped in `[portal.fields.map]`) where the CRM
    /// records the visitor id a site form sent in its hidden `leadscore_visitor` input:
    /// the CRM's own record of who filled in the form, a trusted channel like identify.
    #[serde(default)]
    pub visitor_field: Option<String>,
}

fn default_anonymous_days() -> u32 {
    30
}
fn default_max_skew_secs() -> u64 {
    300
}
fn default_per_ip() -> u32 {
    120
}
fn default_per_visitor() -> u32 {
    60
}
fn default_resolution_days() -> u32 {
    30
}

/// `[portal.tracking]` checked, with the secret resolved.
#[derive(Debug, Clone)]
pub struct Tracking {
    pub site_key: String,
    /// Lower-cased origins without a trailing slash.
    pub allowed_origins: Vec<String>,
    pub identify_secret: SecretString,
    pub anonymous_days: u32,
    pub max_skew_secs: u64,
    pub per_ip_per_minute: u32,
    pub per_visitor_per_minute: u32,
    pub resolution_days: u32,
    /// The lead field holding a visitor id the CRM recorded from a form, if any.
    pub visitor_field: Option<String>,
}

impl Tracking {
    /// Is `origin` (an `Origin` header) one of the site's pages?
    pub fn allows_origin(&self, origin: &str) -> bool {
        let o = origin.trim_end_matches('/').to_ascii_lowercase();
        self.allowed_origins.contains(&o)
    }
}

/// A site key or visitor id: 8 to 64 of `A-Z a-z 0-9 _ -` (safe in URLs, logs and keys).
pub fn is_token(s: &str) -> bool {
    (8..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A CRM record id as the tracking endpoints accept it: digits, no leading zero, at most
/// 18 (the same canonical form the webhook decoders require).
pub fn is_record_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 18 && !s.starts_with('0') && s.bytes().all(|b| b.is_ascii_digit())
}

impl Ctx<'_> {
    /// Check `[portal.tracking]`; `None` after recording each mistake at its key.
    pub(super) fn tracking(&mut self, base: &str, t: &TrackingSection) -> Option<Tracking> {
        let base = format!("{base}.tracking");
        let errors_before = self.errors.len();
        if !is_token(&t.site_key) {
            self.error(
                &format!("{base}.site_key"),
                "must be 8 to 64 of A-Z, a-z, 0-9, `_` and `-` (it is public: it names the site)",
            );
        }
        if t.allowed_origins.is_empty() {
            self.error(
                &format!("{base}.allowed_origins"),
                "is empty: name the site's origins, e.g. [\"https://example.ru\"] (nothing else may send events)",
            );
        }
        let mut origins = Vec::new();
        for (i, o) in t.allowed_origins.iter().enumerate() {
            let path = format!("{base}.allowed_origins[{i}]");
            match reqwest::Url::parse(o) {
                Ok(u)
                    if matches!(u.scheme(), "http" | "https")
                        && u.host_str().is_some()
                        && u.path() == "/"
                        && u.query().is_none() =>
                {
                    origins.push(u.origin().ascii_serialization().to_ascii_lowercase());
                }
                _ => self.error(
                    &path,
                    format!("`{o}` is not an origin: write scheme://host[:port], e.g. https://example.ru"),
                ),
            }
        }
        if t.per_ip_per_minute == 0 || t.per_visitor_per_minute == 0 {
            self.error(
                &base,
                "per_ip_per_minute and per_visitor_per_minute must be at least 1",
            );
        }
        let secret = self.credential(
            &base,
            "identify_secret",
            t.identify_secret.as_ref(),
            t.identify_secret_env.as_deref(),
            t.identify_secret_file.as_deref(),
        );
        if !secret.given() {
            self.error(
                &format!("{base}.identify_secret"),
                "missing: the site's backend signs identify calls with it (also as `identify_secret_env` / `identify_secret_file`)",
            );
        }
        let resolved = secret.is_resolved();
        let secret = secret.value();
        if resolved {
            if let Some(s) = &secret {
                if s.expose_secret().len() < 32 {
                    self.error(
                        &format!("{base}.identify_secret"),
                        "is shorter than 32 characters: use a random secret (e.g. `openssl rand -hex 32`)",
                    );
                }
            }
        }
        if self.errors.len() > errors_before {
            return None;
        }
        Some(Tracking {
            site_key: t.site_key.clone(),
            allowed_origins: origins,
            identify_secret: secret?,
            anonymous_days: t.anonymous_days,
            max_skew_secs: t.max_skew_secs,
            per_ip_per_minute: t.per_ip_per_minute,
            per_visitor_per_minute: t.per_visitor_per_minute,
            resolution_days: t.resolution_days,
            visitor_field: t.visitor_field.clone(),
        })
    }
}

//! Authentication as amoCRM does it: a long-lived token of a private integration, or
//! OAuth2 (`POST /oauth2/access_token`) where authorization codes and refresh tokens are
//! single-use and every refresh returns a new pair. Presenting a spent refresh token
//! answers 401 "Token has been revoked"; every presentation is logged so a test can
//! prove no token was ever spent twice.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use rand::distr::Alphanumeric;
use rand::Rng;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};
use subtle::ConstantTimeEq;
use tokio::time::Instant;

use super::query::Query;
use super::store::now_unix;
use super::{IssuedTokens, OAuthOptions, RefreshOutcome, RefreshUse};

/// The integration key requests authenticated with the long-lived token count under.
pub(crate) const PRIVATE_INTEGRATION: &str = "private-integration";

fn ct_eq(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

fn random_token(len: usize) -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

struct Code {
    code: String,
    issued: Instant,
    used: bool,
}

struct Access {
    token: String,
    expires: Instant,
}

struct Refresh {
    serial: u64,
    token: String,
    spent: bool,
}

/// OAuth bookkeeping for the one integration the sandbox knows.
struct OAuth {
    options: OAuthOptions,
    codes: Vec<Code>,
    access: Vec<Access>,
    refresh: Vec<Refresh>,
    serial: u64,
    uses: Vec<RefreshUse>,
}

/// Every credential the account accepts.
pub(crate) struct Auth {
    long_lived: Option<(SecretString, Option<Instant>)>,
    oauth: Option<OAuth>,
}

/// Why a bearer token was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    Missing,
    Unknown,
    Expired,
}

/// A token-endpoint answer: status and JSON body.
pub(crate) type TokenReply = (u16, Value);

fn oauth_problem(status: u16, hint: &str) -> TokenReply {
    (
        status,
        json!({
            "hint": hint,
            "title": "Некорректный запрос",
            "type": "https://developers.amocrm.ru/v3/errors/OAuthProblemJson",
            "status": status,
            "detail": "В запросе отсутствует ряд параметров или параметры невалидны",
        }),
    )
}

impl Auth {
    pub(crate) fn new(
        long_lived: Option<SecretString>,
        long_lived_ttl: Option<Duration>,
        oauth: Option<OAuthOptions>,
    ) -> Self {
        Self {
            long_lived: long_lived.map(|t| (t, long_lived_ttl.map(|d| Instant::now() + d))),
            oauth: oauth.map(|options| OAuth {
                options,
                codes: Vec::new(),
                access: Vec::new(),
                refresh: Vec::new(),
                serial: 0,
                uses: Vec::new(),
            }),
        }
    }

    /// Checks `Authorization: Bearer …`; returns the integration the request counts under.
    pub(crate) fn authorize(&self, bearer: Option<&str>) -> Result<String, Refused> {
        let token = bearer.filter(|t| !t.is_empty()).ok_or(Refused::Missing)?;
        let now = Instant::now();
        if let Some((t, expires)) = &self.long_lived {
            if ct_eq(t.expose_secret(), token) {
                return match expires {
                    Some(e) if now >= *e => Err(Refused::Expired),
                    _ => Ok(PRIVATE_INTEGRATION.to_owned()),
                };
            }
        }
        if let Some(o) = &self.oauth {
            if let Some(a) = o.access.iter().find(|a| ct_eq(&a.token, token)) {
                return if now >= a.expires {
                    Err(Refused::Expired)
                } else {
                    Ok(o.options.client_id.clone())
                };
            }
        }
        Err(Refused::Unknown)
    }

    /// The long-lived token, if the account has one.
    pub(crate) fn long_lived(&self) -> Option<SecretString> {
        self.long_lived.as_ref().map(|(t, _)| t.clone())
    }

    /// A fresh authorization code, as if an admin had just allowed the integration.
    pub(crate) fn new_code(&mut self) -> Option<SecretString> {
        let o = self.oauth.as_mut()?;
        let code = random_token(64);
        o.codes.push(Code {
            code: code.clone(),
            issued: Instant::now(),
            used: false,
        });
        Some(SecretString::from(code))
    }

    /// A new access/refresh pair without the HTTP round trip.
    pub(crate) fn issue(&mut self) -> Option<IssuedTokens> {
        let o = self.oauth.as_mut()?;
        let (access, refresh) = o.issue_pair();
        Some(IssuedTokens {
            access_token: SecretString::from(access),
            refresh_token: SecretString::from(refresh),
            expires_in: o.options.access_ttl.as_secs(),
        })
    }

    /// Makes every access token issued so far expire now.
    pub(crate) fn expire_access(&mut self) {
        if let Some(o) = self.oauth.as_mut() {
            let now = Instant::now();
            for a in &mut o.access {
                a.expires = now;
            }
        }
    }

    pub(crate) fn set_access_ttl(&mut self, ttl: Duration) {
        if let Some(o) = self.oauth.as_mut() {
            o.options.access_ttl = ttl;
        }
    }

    pub(crate) fn refresh_uses(&self) -> Vec<RefreshUse> {
        self.oauth
            .as_ref()
            .map(|o| o.uses.clone())
            .unwrap_or_default()
    }

    /// `POST /oauth2/access_token` with its parameters (from JSON or a form).
    pub(crate) fn token_endpoint(&mut self, params: &BTreeMap<String, String>) -> TokenReply {
        let Some(o) = self.oauth.as_mut() else {
            return oauth_problem(400, "OAuth is not enabled for this integration");
        };
        let get = |k: &str| params.get(k).map(String::as_str).unwrap_or("");
        let grant = get("grant_type");
        let client_ok = ct_eq(get("client_id"), &o.options.client_id)
            && ct_eq(
                get("client_secret"),
                o.options.client_secret.expose_secret(),
            );
        if grant == "refresh_token" {
            return o.refresh_grant(get("refresh_token"), client_ok, get("redirect_uri"));
        }
        if grant != "authorization_code" {
            return oauth_problem(
                400,
                "The authorization grant type is not supported by the authorization server.",
            );
        }
        if !client_ok {
            return oauth_problem(401, "Client authentication failed");
        }
        if get("redirect_uri") != o.options.redirect_uri {
            return oauth_problem(400, "Check the `redirect_uri` parameter");
        }
        let presented = get("code");
        if presented.is_empty() {
            return oauth_problem(400, "Check the `code` parameter");
        }
        let ttl = o.options.code_ttl;
        let Some(code) = o.codes.iter_mut().find(|c| ct_eq(&c.code, presented)) else {
            return oauth_problem(400, "Cannot decrypt the authorization code");
        };
        if code.used || code.issued.elapsed() >= ttl {
            return oauth_problem(400, "Authorization code has been revoked");
        }
        code.used = true;
        let (access, refresh) = o.issue_pair();
        o.reply(access, refresh)
    }
}

impl OAuth {
    fn issue_pair(&mut self) -> (String, String) {
        let access = random_token(96);
        let refresh = random_token(96);
        self.access.push(Access {
            token: access.clone(),
            expires: Instant::now() + self.options.access_ttl,
        });
        self.serial += 1;
        self.refresh.push(Refresh {
            serial: self.serial,
            token: refresh.clone(),
            spent: false,
        });
        (access, refresh)
    }

    fn reply(&self, access: String, refresh: String) -> TokenReply {
        (
            200,
            json!({
                "token_type": "Bearer",
                "expires_in": self.options.access_ttl.as_secs(),
                "server_time": now_unix(),
                "access_token": access,
                "refresh_token": refresh,
            }),
        )
    }

    fn log(&mut self, serial: Option<u64>, outcome: RefreshOutcome) {
        self.uses.push(RefreshUse {
            serial,
            outcome,
            at: SystemTime::now(),
        });
    }

    fn refresh_grant(
        &mut self,
        presented: &str,
        client_ok: bool,
        redirect_uri: &str,
    ) -> TokenReply {
        let serial = self
            .refresh
            .iter()
            .find(|r| !presented.is_empty() && ct_eq(&r.token, presented))
            .map(|r| r.serial);
        if !client_ok {
            self.log(serial, RefreshOutcome::BadClient);
            return oauth_problem(401, "Client authentication failed");
        }
        if redirect_uri != self.options.redirect_uri {
            self.log(serial, RefreshOutcome::BadRequest);
            return oauth_problem(400, "Check the `redirect_uri` parameter");
        }
        let Some(serial) = serial else {
            self.log(None, RefreshOutcome::Unknown);
            return oauth_problem(401, "Cannot decrypt the refresh token");
        };
        let spent = self.refresh.iter().any(|r| r.serial == serial && r.spent);
        if spent {
            self.log(Some(serial), RefreshOutcome::Revoked);
            return oauth_problem(401, "Token has been revoked");
        }
        if let Some(r) = self.refresh.iter_mut().find(|r| r.serial == serial) {
            r.spent = true;
        }
        self.log(Some(serial), RefreshOutcome::Rotated);
        let (access, refresh) = self.issue_pair();
        self.reply(access, refresh)
    }
}

/// Token-endpoint parameters from a JSON object or a form body.
pub(crate) fn token_params(content_type: &str, body: &[u8]) -> BTreeMap<String, String> {
    let text = String::from_utf8_lossy(body);
    let trimmed = text.trim_start();
    if content_type.contains("json") || trimmed.starts_with('{') {
        if let Ok(Value::Object(m)) = serde_json::from_str::<Value>(trimmed) {
            return m
                .into_iter()
                .map(|(k, v)| {
                    let s = match v {
                        Value::String(s) => s,
                        Value::Null => String::new(),
                        other => other.to_string(),
                    };
                    (k, s)
                })
                .collect();
        }
        return BTreeMap::new();
    }
    let q = Query::parse(&text);
    [
        "client_id",
        "client_secret",
        "grant_type",
        "code",
        "refresh_token",
        "redirect_uri",
    ]
    .iter()
    .filter_map(|k| q.get(k).map(|v| ((*k).to_owned(), v.to_owned())))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth {
        Auth::new(
            Some(SecretString::from("long-lived")),
            None,
            Some(OAuthOptions::new(
                "client",
                SecretString::from("secret"),
                "https://app.test/cb",
            )),
        )
    }

    fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[tokio::test]
    async fn refresh_tokens_are_single_use() {
        let mut a = auth();
        let pair = a.issue().unwrap();
        let rt = pair.refresh_token.expose_secret().to_owned();
        let req = params(&[
            ("client_id", "client"),
            ("client_secret", "secret"),
            ("grant_type", "refresh_token"),
            ("refresh_token", &rt),
            ("redirect_uri", "https://app.test/cb"),
        ]);
        let (status, body) = a.token_endpoint(&req);
        assert_eq!(status, 200);
        let new_access = body["access_token"].as_str().unwrap().to_owned();
        assert_eq!(a.authorize(Some(&new_access)), Ok("client".to_owned()));
        let (status, body) = a.token_endpoint(&req);
        assert_eq!(status, 401);
        assert_eq!(body["hint"], "Token has been revoked");
        let outcomes: Vec<_> = a.refresh_uses().iter().map(|u| u.outcome).collect();
        assert_eq!(
            outcomes,
            vec![RefreshOutcome::Rotated, RefreshOutcome::Revoked]
        );
    }

    #[tokio::test]
    async fn expired_and_unknown_tokens_are_refused() {
        let mut a = auth();
        let pair = a.issue().unwrap();
        let at = pair.access_token.expose_secret().to_owned();
        assert!(a.authorize(Some(&at)).is_ok());
        a.expire_access();
        assert_eq!(a.authorize(Some(&at)), Err(Refused::Expired));
        assert_eq!(a.authorize(Some("nope")), Err(Refused::Unknown));
        assert_eq!(a.authorize(None), Err(Refused::Missing));
        assert_eq!(
            a.authorize(Some("long-lived")),
            Ok(PRIVATE_INTEGRATION.to_owned())
        );
    }

    #[test]
    fn params_from_json_or_form() {
        let j = token_params(
            "application/json",
            br#"{"client_id":"c","grant_type":"refresh_token"}"#,
        );
        assert_eq!(j.get("client_id").map(String::as_str), Some("c"));
        let f = token_params(
            "application/x-www-form-urlencoded",
            b"client_id=c&redirect_uri=https%3A%2F%2Fa",
        );
        assert_eq!(f.get("redirect_uri").map(String::as_str), Some("https://a"));
    }
}

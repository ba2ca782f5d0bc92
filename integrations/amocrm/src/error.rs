//! Typed errors of the amoCRM client.
//!
//! Every failure is classified once, here, into what the retry policy and the daemon
//! act on: a rate limit (back off, pause the account), a block (stop the portal: amoCRM
//! answers 403 to everything after repeated limit violations and only support lifts it),
//! a revoked refresh token (an admin must re-authorize), a validation error (never
//! retried), or a transport failure. Messages never contain a token or the client
//! secret; reqwest errors are stripped of their URL before they are kept.

use std::time::Duration;

use serde::Deserialize;

/// One item of amoCRM's `validation-errors` list (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ValidationError {
    /// Index of the entity in the request array (`"0"`, `"1"`…), as amoCRM echoes it.
    #[serde(default)]
    pub request_id: String,
    #[serde(default)]
    pub errors: Vec<ValidationItem>,
}

/// One complaint about one value, e.g. `NotSupportedChoice` at
/// `custom_fields_values.0.field_id`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ValidationItem {
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub path: String,
    #[serde(default)]
    pub detail: String,
}

/// Why an amoCRM call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// HTTP 429: more than the allowed requests per second reached amoCRM.
    #[error("amoCRM rate limit exceeded (HTTP 429)")]
    RateLimited,
    /// HTTP 403: the account is blocked (after repeated limit violations), the IP is not
    /// allowed, or the integration lacks rights. All traffic to the portal stops until
    /// an admin acts, because more requests only prolong a block.
    #[error("amoCRM answered 403 Forbidden ({detail}); all traffic to this account is stopped: ask amoCRM support to unblock it, then restart leadscore")]
    Blocked { detail: String },
    /// HTTP 401 on an API call that a token refresh could not cure (or a long-lived
    /// token that expired or was revoked).
    #[error("amoCRM rejected the access token ({detail}); generate a new token or re-authorize the integration")]
    Unauthorized { detail: String },
    /// The refresh token was refused (spent, revoked or expired). The only cure is a new
    /// authorization by an admin; retrying would only repeat the refusal.
    #[error("amoCRM refused the OAuth refresh token ({detail}): an admin must re-authorize the integration in amoCRM and put the new refresh token into the config")]
    TokenRevoked { detail: String },
    /// A rotated token pair could not be persisted. The new pair is kept in memory and
    /// saved again before the next request, but nothing is sent until it is stored.
    #[error("cannot persist the rotated amoCRM tokens: {0}")]
    TokenStore(String),
    /// HTTP 400 with `validation-errors`: the request is wrong and will stay wrong.
    #[error("amoCRM validation failed: {}", summarize(.errors))]
    Validation { errors: Vec<ValidationError> },
    /// HTTP 504: amoCRM gave up on a request that was too big; send fewer entities.
    #[error("amoCRM gateway timeout (HTTP 504)")]
    GatewayTimeout,
    /// Any other error answer, from the problem+json body (`title`, `detail`, `hint`).
    #[error("amoCRM error HTTP {status}: {title}: {detail}")]
    Api {
        status: u16,
        title: String,
        detail: String,
    },
    /// An error answer that is not JSON (amoCRM serves HTML pages while blocking).
    #[error("amoCRM answered HTTP {status} with a non-JSON body ({content_type}): {snippet:?}")]
    NotJson {
        status: u16,
        content_type: String,
        snippet: String,
    },
    /// The request did not finish in time.
    #[error("amoCRM request timed out")]
    Timeout,
    /// No connection could be made: the request was surely not sent.
    #[error("amoCRM connection could not be made: {0}")]
    Connect(String),
    /// The connection broke after the request may have been sent.
    #[error("amoCRM connection failed: {0}")]
    Transport(String),
    /// A success answer that does not have the documented shape.
    #[error("unexpected amoCRM response for {what}: {detail}")]
    Decode { what: String, detail: String },
    /// The client was configured wrongly (e.g. a base URL that is not a URL).
    #[error("amoCRM client misconfigured: {0}")]
    Config(String),
}

fn summarize(errors: &[ValidationError]) -> String {
    let mut parts = Vec::new();
    for e in errors {
        for item in &e.errors {
            parts.push(format!(
                "#{} {} at {}: {}",
                e.request_id, item.code, item.path, item.detail
            ));
        }
    }
    if parts.is_empty() {
        "no details".to_string()
    } else {
        parts.join("; ")
    }
}

/// The problem+json error body amoCRM sends (`application/problem+json`).
#[derive(Debug, Default, Deserialize)]
struct Problem {
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    detail: Option<String>,
    #[serde(default)]
    hint: Option<String>,
    #[serde(default, rename = "validation-errors")]
    validation_errors: Option<Vec<ValidationError>>,
    /// OAuth endpoints answer in RFC 6749 style too.
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
}

/// Longest piece of a non-JSON body kept in an error.
const SNIPPET: usize = 200;

impl Error {
    /// Classify an error answer of an API call from its status, content type and body.
    pub fn from_response(status: u16, content_type: &str, body: &[u8]) -> Error {
        let problem = match serde_json::from_slice::<Problem>(body) {
            Ok(p) => p,
            Err(_) => {
                return match status {
                    429 => Error::RateLimited,
                    401 => Error::Unauthorized {
                        detail: format!("non-JSON body: {}", snippet(body)),
                    },
                    403 => Error::Blocked {
                        detail: format!("non-JSON body: {}", snippet(body)),
                    },
                    504 => Error::GatewayTimeout,
                    _ => Error::NotJson {
                        status,
                        content_type: content_type.to_string(),
                        snippet: snippet(body),
                    },
                }
            }
        };
        let detail = problem_detail(&problem);
        match status {
            429 => Error::RateLimited,
            403 => Error::Blocked { detail },
            401 => Error::Unauthorized { detail },
            504 => Error::GatewayTimeout,
            _ => match problem.validation_errors {
                Some(errors) if !errors.is_empty() => Error::Validation { errors },
                _ => Error::Api {
                    status,
                    title: problem.title.unwrap_or_default(),
                    detail,
                },
            },
        }
    }

    /// Classify an error answer of the token endpoint. 400/401 there mean the refresh
    /// token (or the client credentials) will never work again: re-authorize.
    pub fn from_token_response(status: u16, content_type: &str, body: &[u8]) -> Error {
        if matches!(status, 400 | 401) {
            let detail = match serde_json::from_slice::<Problem>(body) {
                Ok(p) => problem_detail(&p),
                Err(_) => snippet(body),
            };
            return Error::TokenRevoked { detail };
        }
        Error::from_response(status, content_type, body)
    }

    /// Worth trying again (after a wait): rate limits, 5xx, timeouts, resets.
    /// A block, auth failures and other 4xx are not.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::RateLimited
            | Error::GatewayTimeout
            | Error::Timeout
            | Error::Connect(_)
            | Error::Transport(_) => true,
            Error::Api { status, .. } | Error::NotJson { status, .. } => *status >= 500,
            Error::TokenStore(_) => true,
            Error::Blocked { .. }
            | Error::Unauthorized { .. }
            | Error::TokenRevoked { .. }
            | Error::Validation { .. }
            | Error::Decode { .. }
            | Error::Config(_) => false,
        }
    }

    /// Certain that amoCRM did not execute the request, so even a create (task, note)
    /// may be repeated without doubling it.
    pub fn surely_not_executed(&self) -> bool {
        matches!(
            self,
            Error::RateLimited
                | Error::Blocked { .. }
                | Error::Unauthorized { .. }
                | Error::Connect(_)
                | Error::Validation { .. }
        )
    }

    /// Needs a human (block, revoked or rejected credentials): alert, do not retry.
    pub fn needs_admin(&self) -> bool {
        matches!(
            self,
            Error::Blocked { .. } | Error::Unauthorized { .. } | Error::TokenRevoked { .. }
        )
    }

    /// A suggested wait before retrying, when the error implies one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::RateLimited => Some(Duration::from_secs(1)),
            _ => None,
        }
    }

    /// "Not found" (404): the entity is gone or never existed.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            Error::Api { status: 404, .. } | Error::NotJson { status: 404, .. }
        )
    }
}

fn problem_detail(p: &Problem) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for s in [&p.hint, &p.detail, &p.error, &p.error_description, &p.title]
        .into_iter()
        .flatten()
    {
        if !s.is_empty() && !parts.contains(&s.as_str()) {
            parts.push(s);
        }
    }
    if parts.is_empty() {
        "no details".to_string()
    } else {
        parts.join(": ")
    }
}

fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let squashed: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    squashed.chars().take(SNIPPET).collect()
}

impl From<reqwest::Error> for Error {
    fn from(e: reqwest::Error) -> Self {
        // The URL carries no secret here (tokens travel in headers), but strip it anyway
        // so errors stay short and uniform.
        let e = e.without_url();
        if e.is_timeout() {
            return Error::Timeout;
        }
        let connect = e.is_connect();
        let mut msg = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            msg.push_str(": ");
            msg.push_str(&s.to_string());
            src = s.source();
        }
        if connect {
            Error::Connect(msg)
        } else {
            Error::Transport(msg)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_errors_body_is_typed() {
        // Verbatim from the amo error docs (crm notes §4.6).
        let body = br#"{"validation-errors":[{"request_id":"0","errors":[{"code":"NotSupportedChoice","path":"custom_fields_values.0.field_id","detail":"The value you selected is not a valid choice."}]}],"title":"Bad Request","type":"https://httpstatus.es/400","status":400,"detail":"Request validation failed"}"#;
        let e = Error::from_response(400, "application/problem+json", body);
        let Error::Validation { errors } = &e else {
            panic!("{e:?}")
        };
        assert_eq!(errors[0].request_id, "0");
        assert_eq!(errors[0].errors[0].code, "NotSupportedChoice");
        assert_eq!(errors[0].errors[0].path, "custom_fields_values.0.field_id");
        assert!(!e.is_retryable());
        assert!(e.surely_not_executed());
        assert!(e.to_string().contains("NotSupportedChoice"));
    }

    #[test]
    fn revoked_refresh_token_is_loud() {
        // Verbatim body of issue #123 (crm notes §2).
        let body = r#"{"hint":"Token has been revoked","title":"Некорректный запрос","type":"https://developers.amocrm.ru/v3/errors/OAuthProblemJson","status":401,"detail":"В запросе отсутствует ряд параметров или параметры невалидны"}"#;
        let e = Error::from_token_response(401, "application/problem+json", body.as_bytes());
        assert!(matches!(e, Error::TokenRevoked { .. }));
        let msg = e.to_string();
        assert!(msg.contains("Token has been revoked"), "{msg}");
        assert!(msg.contains("re-authorize"), "{msg}");
        assert!(e.needs_admin() && !e.is_retryable());
        let e = Error::from_token_response(
            400,
            "application/json",
            br#"{"error":"invalid_grant","error_description":"refresh token is invalid"}"#,
        );
        assert!(
            matches!(e, Error::TokenRevoked { ref detail } if detail.contains("invalid_grant"))
        );
        // The token endpoint having a bad day is not a revocation.
        assert!(
            Error::from_token_response(502, "text/html", b"<html>bad gateway</html>")
                .is_retryable()
        );
    }

    #[test]
    fn html_bodies_and_status_classes() {
        let html =
            b"<html>\n<head><title>403 Forbidden</title></head>\n<body>blocked</body></html>";
        let e = Error::from_response(403, "text/html", html);
        assert!(matches!(e, Error::Blocked { ref detail } if detail.contains("403 Forbidden")));
        assert!(!e.is_retryable() && e.needs_admin());
        assert_eq!(
            Error::from_response(429, "text/html", b"<html>Too Many</html>"),
            Error::RateLimited
        );
        assert_eq!(
            Error::from_response(
                429,
                "application/problem+json",
                br#"{"title":"Too Many Requests","status":429}"#
            ),
            Error::RateLimited
        );
        assert_eq!(
            Error::from_response(504, "text/html", b"<html/>"),
            Error::GatewayTimeout
        );
        let e = Error::from_response(502, "text/html", b"<html>bad gateway</html>");
        assert!(matches!(e, Error::NotJson { status: 502, .. }) && e.is_retryable());
        let e = Error::from_response(
            404,
            "application/problem+json",
            br#"{"title":"Not Found","status":404,"detail":"Lead not found"}"#,
        );
        assert!(e.is_not_found() && !e.is_retryable());
        let e = Error::from_response(
            401,
            "application/problem+json",
            br#"{"title":"Unauthorized","status":401}"#,
        );
        assert!(matches!(e, Error::Unauthorized { .. }));
        let e = Error::from_response(401, "text/html", b"<html>401 Authorization Required</html>");
        assert!(matches!(e, Error::Unauthorized { .. }));
        let e = Error::from_response(
            402,
            "application/problem+json",
            br#"{"title":"Payment Required","status":402,"detail":"Account is not paid"}"#,
        );
        assert!(matches!(e, Error::Api { status: 402, .. }) && !e.is_retryable());
    }

    #[test]
    fn snippet_is_bounded() {
        let body = "x".repeat(10_000);
        let Error::NotJson { snippet, .. } =
            Error::from_response(500, "text/plain", body.as_bytes())
        else {
            panic!()
        };
        assert_eq!(snippet.len(), SNIPPET);
    }
}

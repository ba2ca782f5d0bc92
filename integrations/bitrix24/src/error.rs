//! Typed errors of the Bitrix24 client.
//!
//! Every failure is classified once, here, into the cases the retry policy and the
//! daemon care about (rate limit, operating limit, auth, transport, a rejection that
//! will never succeed). Messages never contain the webhook URL or any token: the URL
//! path of an inbound webhook *is* its password, and reqwest puts URLs into its errors,
//! so transport errors are stripped of their URL before they are stored.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// Why a Bitrix24 call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// `503 QUERY_LIMIT_EXCEEDED`: the portal's leaky bucket is full.
    #[error("Bitrix24 rate limit exceeded (QUERY_LIMIT_EXCEEDED)")]
    QueryLimitExceeded,
    /// `429 OPERATION_TIME_LIMIT`: this method used up its execution-time budget; the
    /// portal says when the budget resets (when it does).
    #[error("Bitrix24 operating-time limit reached for {method} (OPERATION_TIME_LIMIT)")]
    OperationTimeLimit {
        method: String,
        reset_at: Option<DateTime<Utc>>,
    },
    /// `503 OVERLOAD_LIMIT`: the portal was blocked by hand or is overloaded.
    #[error("Bitrix24 portal overloaded (OVERLOAD_LIMIT)")]
    Overload,
    /// Credentials rejected: `expired_token`, `invalid_token`, `NO_AUTH_FOUND`,
    /// `insufficient_scope`, an expired webhook, or a failed OAuth refresh.
    #[error("Bitrix24 authentication failed ({code}): {description}")]
    Auth { code: String, description: String },
    /// Any other error answer from the REST API (HTTP status plus Bitrix24's code and
    /// description; `code` is often `""` for CRM errors such as "Not found").
    #[error("Bitrix24 error HTTP {status} {code:?}: {description}")]
    Api {
        status: u16,
        code: String,
        description: String,
    },
    /// One command of a `batch` failed (the batch itself answered 200).
    #[error("Bitrix24 batch command failed {code:?}: {description}")]
    Command { code: String, description: String },
    /// The request did not finish in time (connect or total timeout).
    #[error("Bitrix24 request timed out")]
    Timeout,
    /// No connection could be made (refused, DNS, TLS): the request was not sent.
    #[error("Bitrix24 connection could not be made: {0}")]
    Connect(String),
    /// The connection broke after the request may have been sent (reset, broken body).
    #[error("Bitrix24 connection failed: {0}")]
    Transport(String),
    /// The answer was not JSON (an HTML error page from a proxy or the portal).
    #[error("Bitrix24 answered HTTP {status} with a non-JSON body ({content_type}): {snippet:?}")]
    NotJson {
        status: u16,
        content_type: String,
        snippet: String,
    },
    /// JSON that does not have the documented shape.
    #[error("unexpected Bitrix24 response for {method}: {detail}")]
    Decode { method: String, detail: String },
    /// The client was configured wrongly (e.g. a webhook URL that is not a URL).
    #[error("Bitrix24 client misconfigured: {0}")]
    Config(String),
}

/// Bitrix24 error codes that mean "the credentials are not good (now)".
const AUTH_CODES: &[&str] = &[
    "expired_token",
    "invalid_token",
    "no_auth_found",
    "invalid_credentials",
    "insufficient_scope",
    "invalid_grant",
    "invalid_client",
    "wrong_auth_type",
    "method_confirm_waiting",
    "user_access_error",
    "authorization_error",
];

impl Error {
    /// Build the error for an error answer, from HTTP status (None inside a batch) and
    /// Bitrix24's `error` / `error_description`.
    pub fn classify(status: Option<u16>, code: &str, description: &str, method: &str) -> Error {
        classify_at(status, code, description, method, None)
    }

    /// Worth trying again later: limits, 5xx, timeouts, resets. Other 4xx and auth
    /// failures are not (auth needs a refresh, which the client does itself, once).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::QueryLimitExceeded
            | Error::OperationTimeLimit { .. }
            | Error::Overload
            | Error::Timeout
            | Error::Connect(_)
            | Error::Transport(_) => true,
            Error::Api { status, code, .. } => {
                *status >= 500 || *status == 429 || retryable_code(code)
            }
            Error::Command { code, .. } => retryable_code(code),
            Error::NotJson { status, .. } => *status >= 500 || *status == 429,
            Error::Auth { .. } | Error::Decode { .. } | Error::Config(_) => false,
        }
    }

    /// The portal's own hint for how long to wait, when it gave one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::OperationTimeLimit {
                reset_at: Some(at), ..
            } => Some((*at - Utc::now()).to_std().unwrap_or(Duration::ZERO)),
            _ => None,
        }
    }

    /// Certain that the portal did not execute the request (limits, no connection),
    /// so even a non-idempotent call (`*.add`) may be repeated without doubling.
    pub fn surely_not_executed(&self) -> bool {
        matches!(
            self,
            Error::QueryLimitExceeded
                | Error::OperationTimeLimit { .. }
                | Error::Overload
                | Error::Connect(_)
                | Error::Auth { .. }
        )
    }

    /// Is this the portal's "expired or invalid access token" answer (refresh and retry)?
    pub fn is_expired_token(&self) -> bool {
        matches!(self, Error::Auth { code, .. }
            if code.eq_ignore_ascii_case("expired_token") || code.eq_ignore_ascii_case("invalid_token"))
    }

    /// "Not found" in its several spellings: the entity is gone (or never existed).
    pub fn is_not_found(&self) -> bool {
        let (code, description) = match self {
            Error::Api {
                code, description, ..
            }
            | Error::Command { code, description } => (code, description),
            _ => return false,
        };
        let d = description.to_ascii_lowercase();
        code.eq_ignore_ascii_case("NOT_FOUND")
            || code.eq_ignore_ascii_case("OWNER_NOT_FOUND")
            || d.contains("not found")
            || d.contains("is not defined or invalid")
    }
}

fn retryable_code(code: &str) -> bool {
    matches!(
        code.to_ascii_uppercase().as_str(),
        "QUERY_LIMIT_EXCEEDED"
            | "OPERATION_TIME_LIMIT"
            | "OVERLOAD_LIMIT"
            | "INTERNAL_SERVER_ERROR"
            | "ERROR_UNEXPECTED_ANSWER"
    )
}

/// [`Error::classify`] with the `operating_reset_at` of a 429 answer.
pub(crate) fn classify_at(
    status: Option<u16>,
    code: &str,
    description: &str,
    method: &str,
    reset_at: Option<DateTime<Utc>>,
) -> Error {
    let upper = code.to_ascii_uppercase();
    match upper.as_str() {
        "QUERY_LIMIT_EXCEEDED" => return Error::QueryLimitExceeded,
        "OPERATION_TIME_LIMIT" => {
            return Error::OperationTimeLimit {
                method: method.to_string(),
                reset_at,
            }
        }
        "OVERLOAD_LIMIT" => return Error::Overload,
        _ => {}
    }
    if AUTH_CODES.iter().any(|c| c.eq_ignore_ascii_case(code)) || status == Some(401) {
        return Error::Auth {
            code: code.to_string(),
            description: description.to_string(),
        };
    }
    match status {
        Some(s) => Error::Api {
            status: s,
            code: code.to_string(),
            description: description.to_string(),
        },
        None => Error::Command {
            code: code.to_string(),
            description: description.to_string(),
        },
    }
}

impl From<reqwest::Error> for Error {
    fn from(e: reqwest::Error) -> Self {
        // `without_url` is essential: the URL holds the webhook's secret code.
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
    fn classification_and_retry_predicate() {
        assert_eq!(
            Error::classify(Some(503), "QUERY_LIMIT_EXCEEDED", "Too many requests", "m"),
            Error::QueryLimitExceeded
        );
        assert!(Error::QueryLimitExceeded.is_retryable());
        let e = Error::classify(Some(429), "OPERATION_TIME_LIMIT", "", "crm.lead.list");
        assert!(
            matches!(e, Error::OperationTimeLimit { ref method, .. } if method == "crm.lead.list")
        );
        assert!(e.is_retryable());
        let e = Error::classify(
            Some(401),
            "expired_token",
            "The access token provided has expired.",
            "m",
        );
        assert!(e.is_expired_token() && !e.is_retryable());
        let e = Error::classify(Some(401), "NO_AUTH_FOUND", "Wrong authorization data", "m");
        assert!(matches!(e, Error::Auth { .. }) && !e.is_expired_token());
        let e = Error::classify(Some(400), "", "Not found", "m");
        assert!(!e.is_retryable() && e.is_not_found());
        assert!(Error::classify(Some(500), "INTERNAL_SERVER_ERROR", "", "m").is_retryable());
        assert!(Error::classify(Some(502), "", "", "m").is_retryable());
        assert!(!Error::classify(Some(403), "ACCESS_DENIED", "Access denied", "m").is_retryable());
        let e = Error::classify(None, "", "ID is not defined or invalid.", "m");
        assert!(matches!(e, Error::Command { .. }) && e.is_not_found());
        assert!(Error::classify(None, "QUERY_LIMIT_EXCEEDED", "", "m").is_retryable());
        assert!(Error::Timeout.is_retryable() && Error::Transport("reset".into()).is_retryable());
        assert!(Error::NotJson {
            status: 502,
            content_type: "text/html".into(),
            snippet: "<html>".into()
        }
        .is_retryable());
        assert!(!Error::NotJson {
            status: 404,
            content_type: "text/html".into(),
            snippet: "<html>".into()
        }
        .is_retryable());
    }

    #[test]
    fn retry_after_follows_reset_time() {
        let at = Utc::now() + chrono::Duration::seconds(30);
        let e = classify_at(Some(429), "OPERATION_TIME_LIMIT", "", "m", Some(at));
        let wait = e.retry_after().unwrap();
        assert!(wait <= Duration::from_secs(30) && wait >= Duration::from_secs(28));
        assert_eq!(Error::QueryLimitExceeded.retry_after(), None);
    }
}

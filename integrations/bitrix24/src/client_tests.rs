//! The client's own tests: retry policy, secrets in Debug, URL checks, helpers.

use super::*;
use chrono::DateTime;

#[test]
fn retry_policy_is_data() {
    let p = RetryPolicy {
        jitter: 0.0,
        ..RetryPolicy::default()
    };
    assert!(p.should_retry(&Error::QueryLimitExceeded, 1, true));
    assert!(!p.should_retry(&Error::QueryLimitExceeded, p.max_attempts, true));
    assert!(p.should_retry(&Error::Timeout, 1, true));
    assert!(
        !p.should_retry(&Error::Timeout, 1, false),
        "a timed-out *.add may have run"
    );
    assert!(p.should_retry(&Error::Connect("refused".into()), 1, false));
    let bad = Error::classify(
        Some(400),
        "ERROR_CORE",
        "Task title is not specified",
        "tasks.task.add",
    );
    assert!(!p.should_retry(&bad, 1, true));
    assert_eq!(p.delay(1, &Error::Timeout), Duration::from_millis(500));
    assert_eq!(p.delay(3, &Error::Timeout), Duration::from_secs(2));
    assert_eq!(p.delay(20, &Error::Timeout), Duration::from_secs(30));
    let e = Error::OperationTimeLimit {
        method: "m".into(),
        reset_at: Some(Utc::now() + chrono::Duration::seconds(120)),
    };
    assert!(p.delay(1, &e) >= Duration::from_secs(118));
    let far = Error::OperationTimeLimit {
        method: "m".into(),
        reset_at: Some(Utc::now() + chrono::Duration::seconds(3600)),
    };
    assert!(!p.should_retry(&far, 1, true));
    let jittery = RetryPolicy::default();
    for _ in 0..50 {
        let d = jittery.delay(2, &Error::Timeout).as_secs_f64();
        assert!((0.8..=1.2).contains(&d), "{d}");
    }
}

#[test]
fn debug_never_shows_secrets() {
    let c = Client::new(
        Auth::WebhookUrl(SecretString::from(
            "https://x.bitrix24.ru/rest/1/s3cr3tc0de/".to_string(),
        )),
        ClientConfig::default(),
    )
    .unwrap();
    let d = format!("{c:?}");
    assert!(!d.contains("s3cr3tc0de"), "{d}");
    let o = Auth::OAuth(OAuth {
        base_url: "https://x.bitrix24.ru".into(),
        client_id: "app.1".into(),
        client_secret: SecretString::from("cl1ents3cret".to_string()),
        tokens: OAuthTokens {
            access_token: Some(SecretString::from("acc3ss".to_string())),
            refresh_token: SecretString::from("refr3sh".to_string()),
            expires_at: None,
        },
        on_refresh: Arc::new(|_| {}),
        oauth_server: DEFAULT_OAUTH_SERVER.into(),
    });
    let d = format!("{o:?}");
    assert!(
        !d.contains("cl1ents3cret") && !d.contains("acc3ss") && !d.contains("refr3sh"),
        "{d}"
    );
    assert_eq!(
        redact("<a href=/rest/1/s3cr3tc0de/x>", &["s3cr3tc0de"]),
        "<a href=/rest/1/[REDACTED]/x>"
    );
}

#[test]
fn rejects_bad_webhook_urls() {
    for u in [
        "not a url",
        "ftp://x/rest/1/c/",
        "https://x.bitrix24.ru/1/c/",
    ] {
        let e = Client::new(
            Auth::WebhookUrl(SecretString::from(u.to_string())),
            ClientConfig::default(),
        )
        .unwrap_err();
        assert!(matches!(e, Error::Config(_)));
        assert!(!e.to_string().contains(u));
    }
}

#[test]
fn answer_helpers() {
    assert_eq!(id_of("m", &json!(999)).unwrap(), "999");
    assert_eq!(id_of("m", &json!({"id": 5})).unwrap(), "5");
    assert!(id_of("m", &json!(true)).is_err());
    assert!(expect_true("m", &json!(true)).is_ok());
    assert!(expect_true("m", &json!(false)).is_err());
    let f = task_fields(
        "42",
        "Call",
        "marker",
        Some("7"),
        DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
    );
    assert_eq!(f["UF_CRM_TASK"], json!(["L_42"]));
    assert_eq!(f["PRIORITY"], json!(2));
    assert_eq!(f["RESPONSIBLE_ID"], json!("7"));
    assert_eq!(f["DEADLINE"], json!("2027-01-15T08:00:00Z"));
}

//! OAuth over real HTTP: code exchange (form), refresh (JSON), single-use refresh tokens
//! with the real "Token has been revoked" body, concurrent refreshes, expiring access
//! tokens, and the long-lived token.

use std::time::Duration;

use crate::support::client;
use leadscore_amocrm_sandbox::{RefreshOutcome, Sandbox, SandboxOptions};
use secrecy::ExposeSecret;
use serde_json::{json, Value};

const CLIENT: &str = "sandbox-client-id";
const SECRET: &str = "sandbox-client-secret";
const REDIRECT: &str = "https://leadscore.test/oauth/amocrm";

async fn refresh(base: &str, token: &str) -> (u16, Value) {
    let resp = client()
        .post(format!("{base}/oauth2/access_token"))
        .json(&json!({
            "client_id": CLIENT, "client_secret": SECRET, "grant_type": "refresh_token",
            "refresh_token": token, "redirect_uri": REDIRECT,
        }))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

async fn leads_status(base: &str, access: &str) -> u16 {
    client()
        .get(format!("{base}/api/v4/leads"))
        .bearer_auth(access)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn code_exchange_then_single_use_refresh() {
    let amo = Sandbox::start(SandboxOptions::unlimited()).await.unwrap();
    let base = amo.base_url().to_owned();
    let code = amo.new_authorization_code().unwrap();
    let form = [
        ("client_id", CLIENT),
        ("client_secret", SECRET),
        ("grant_type", "authorization_code"),
        ("code", code.expose_secret()),
        ("redirect_uri", REDIRECT),
    ];
    let resp = client()
        .post(format!("{base}/oauth2/access_token"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let pair: Value = resp.json().await.unwrap();
    assert_eq!(pair["token_type"], "Bearer");
    assert_eq!(pair["expires_in"], 86_400);
    let access = pair["access_token"].as_str().unwrap().to_owned();
    let refresh_token = pair["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(
        leads_status(&base, &access).await,
        204,
        "authorized; the account is empty"
    );

    let again = client()
        .post(format!("{base}/oauth2/access_token"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 400, "authorization codes are single-use");

    let (status, rotated) = refresh(&base, &refresh_token).await;
    assert_eq!(status, 200);
    let new_refresh = rotated["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(new_refresh, refresh_token);
    assert_eq!(
        leads_status(&base, rotated["access_token"].as_str().unwrap()).await,
        204
    );

    let (status, body) = refresh(&base, &refresh_token).await;
    assert_eq!(status, 401, "a spent refresh token is revoked");
    assert_eq!(
        body,
        json!({"hint": "Token has been revoked", "title": "Некорректный запрос",
               "type": "https://developers.amocrm.ru/v3/errors/OAuthProblemJson", "status": 401,
               "detail": "В запросе отсутствует ряд параметров или параметры невалидны"})
    );
    let outcomes: Vec<_> = amo
        .refresh_uses()
        .iter()
        .map(|u| (u.serial, u.outcome))
        .collect();
    assert_eq!(
        outcomes,
        vec![
            (Some(1), RefreshOutcome::Rotated),
            (Some(1), RefreshOutcome::Revoked)
        ]
    );
    assert_eq!(amo.refresh_reuses(), 1);

    let (status, _) = refresh(&base, &new_refresh).await;
    assert_eq!(status, 200, "the newest token still works");
    amo.shutdown().await;
}

#[tokio::test]
async fn concurrent_refreshes_spend_a_token_once() {
    let amo = Sandbox::start(SandboxOptions::unlimited()).await.unwrap();
    let pair = amo.issue_tokens().unwrap();
    let rt = pair.refresh_token.expose_secret().to_owned();
    let base = amo.base_url().to_owned();
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let (base, rt) = (base.clone(), rt.clone());
        tasks.push(tokio::spawn(async move { refresh(&base, &rt).await.0 }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    statuses.sort_unstable();
    assert_eq!(statuses, vec![200, 401, 401, 401, 401]);
    assert_eq!(amo.refresh_reuses(), 4);
    amo.shutdown().await;
}

#[tokio::test]
async fn access_tokens_expire_and_bad_clients_are_refused() {
    let amo = Sandbox::start(SandboxOptions::unlimited()).await.unwrap();
    let base = amo.base_url().to_owned();
    amo.set_access_ttl(Duration::from_millis(1000));
    let pair = amo.issue_tokens().unwrap();
    assert_eq!(pair.expires_in, 1, "expires_in is whole seconds");
    let access = pair.access_token.expose_secret().to_owned();
    assert_eq!(leads_status(&base, &access).await, 204);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(leads_status(&base, &access).await, 401, "expired");

    amo.set_access_ttl(Duration::from_secs(3600));
    let fresh = amo.issue_tokens().unwrap();
    let token = fresh.access_token.expose_secret().to_owned();
    assert_eq!(leads_status(&base, &token).await, 204);
    amo.expire_access_tokens();
    assert_eq!(leads_status(&base, &token).await, 401, "forced expiry");

    let resp = client()
        .post(format!("{base}/oauth2/access_token"))
        .json(&json!({"client_id": CLIENT, "client_secret": "wrong", "grant_type": "refresh_token",
                      "refresh_token": fresh.refresh_token.expose_secret(), "redirect_uri": REDIRECT}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let (status, _) = refresh(&base, fresh.refresh_token.expose_secret()).await;
    assert_eq!(status, 200, "a refused client did not spend the token");
    let (status, _) = refresh(&base, "never-issued").await;
    assert_eq!(status, 401);

    let long_lived = amo.long_lived_token().unwrap();
    assert_eq!(leads_status(&base, long_lived.expose_secret()).await, 204);
    amo.shutdown().await;
}

#[tokio::test]
async fn long_lived_tokens_can_expire() {
    let options = SandboxOptions {
        long_lived_ttl: Some(Duration::from_millis(1000)),
        ..SandboxOptions::unlimited()
    };
    let amo = Sandbox::start(options).await.unwrap();
    let token = amo.long_lived_token().unwrap().expose_secret().to_owned();
    assert_eq!(leads_status(amo.base_url(), &token).await, 204);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(leads_status(amo.base_url(), &token).await, 401);
    amo.shutdown().await;
}

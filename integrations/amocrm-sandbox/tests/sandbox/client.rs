//! The client against the sandbox account over real HTTP on 127.0.0.1: OAuth rotation,
//! limits, blocks, 204, 504 halving and typed error bodies.

use std::sync::Arc;
use std::time::{Duration, Instant};

use leadscore_amocrm::auth::{Auth, MemoryTokenStore, OAuthSettings, TokenStore};
use leadscore_amocrm::client::{Client, ClientConfig};
use leadscore_amocrm::error::Error;
use leadscore_amocrm::types::{FieldWrite, LeadUpdate};
use leadscore_amocrm_sandbox::{
    BlockPolicy, ErrorBody, FaultConfig, FaultKind, FieldSpec, FieldType, MissingEntity, NewLead,
    RateLimit, Sandbox, SandboxHandle, SandboxOptions,
};
use secrecy::{ExposeSecret, SecretString};

fn oauth(sb: &SandboxHandle, store: Arc<MemoryTokenStore>, initial: &SecretString) -> Client {
    let settings = OAuthSettings {
        client_id: "sandbox-client-id".into(),
        client_secret: SecretString::from("sandbox-client-secret"),
        redirect_uri: "https://leadscore.test/oauth/amocrm".into(),
        initial_refresh_token: initial.clone(),
        refresh_ahead: Duration::from_secs(300),
    };
    Client::new(
        ClientConfig::new(sb.base_url()),
        Auth::OAuth {
            settings,
            store: store as Arc<dyn TokenStore>,
        },
    )
    .unwrap()
}

fn long_lived(sb: &SandboxHandle) -> Client {
    Client::new(
        ClientConfig::new(sb.base_url()),
        Auth::LongLived(sb.long_lived_token().unwrap()),
    )
    .unwrap()
}

#[tokio::test]
async fn refresh_rotation_is_persisted_and_survives_a_restart() {
    let sb = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let lead = sb.add_lead(NewLead::named("ACME")).unwrap();
    let initial = sb.issue_tokens().unwrap().refresh_token;
    let store = Arc::new(MemoryTokenStore::new());

    let a = oauth(&sb, store.clone(), &initial);
    assert_eq!(a.lead(lead).await.unwrap().unwrap().id, lead);
    assert_eq!(store.saves(), 1, "the first pair is persisted before use");
    let first = store.current().unwrap();
    assert_ne!(first.refresh_token.expose_secret(), initial.expose_secret());

    // The access token dies: a 401 triggers one refresh and the request is retried.
    sb.expire_access_tokens();
    assert!(a.lead(lead).await.unwrap().is_some());
    assert_eq!(store.saves(), 2);
    assert_eq!(a.refreshes(), 2);
    drop(a);

    // "Restart": a new client with the same store and the (now spent) config token.
    let b = oauth(&sb, store.clone(), &initial);
    assert!(b.lead(lead).await.unwrap().is_some());
    assert_eq!(b.refreshes(), 0, "the persisted access token is reused");
    sb.expire_access_tokens();
    assert!(b.lead(lead).await.unwrap().is_some());
    assert_eq!(b.refreshes(), 1);
    assert_eq!(
        sb.refresh_reuses(),
        0,
        "no refresh token was ever presented twice"
    );

    // Without the persisted pair the spent config token is refused, loudly and once.
    let c = oauth(&sb, Arc::new(MemoryTokenStore::new()), &initial);
    let err = c.lead(lead).await.unwrap_err();
    assert!(matches!(err, Error::TokenRevoked { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("re-authorize"), "{msg}");
    assert!(!msg.contains(initial.expose_secret()), "{msg}");
    let uses = sb.refresh_uses().len();
    assert!(matches!(
        c.lead(lead).await,
        Err(Error::TokenRevoked { .. })
    ));
    assert_eq!(
        sb.refresh_uses().len(),
        uses,
        "a revoked token is not presented again"
    );
    sb.shutdown().await;
}

#[tokio::test]
async fn concurrent_refreshes_never_spend_the_same_token() {
    let sb = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let lead = sb.add_lead(NewLead::named("ACME")).unwrap();
    let initial = sb.issue_tokens().unwrap().refresh_token;
    let store = Arc::new(MemoryTokenStore::new());
    let client = Arc::new(oauth(&sb, store.clone(), &initial));
    for round in 0..2 {
        if round == 1 {
            sb.expire_access_tokens();
        }
        let mut tasks = Vec::new();
        for _ in 0..12 {
            let c = client.clone();
            tasks.push(tokio::spawn(async move { c.lead(lead).await }));
        }
        for t in tasks {
            assert!(t.await.unwrap().unwrap().is_some());
        }
    }
    assert_eq!(
        client.refreshes(),
        2,
        "one refresh per expiry, not one per caller"
    );
    assert_eq!(sb.refresh_uses().len(), 2);
    assert_eq!(sb.refresh_reuses(), 0);
    assert_eq!(store.saves(), 2);
    assert_eq!(sb.count_status(429), 0);
    sb.shutdown().await;
}

#[tokio::test]
async fn a_burst_never_draws_a_429() {
    let sb = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let ids: Vec<u64> = (0..5)
        .map(|i| sb.add_lead(NewLead::named(&format!("L{i}"))).unwrap())
        .collect();
    let client = Arc::new(long_lived(&sb));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..6 {
        let c = client.clone();
        let ids = ids.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..6 {
                c.lead(ids[(w + i) % ids.len()]).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let took = started.elapsed();
    assert_eq!(sb.count_status(429), 0);
    assert!(!sb.blocked());
    let stats = client.stats();
    assert_eq!(stats.requests, 36);
    assert_eq!(stats.rate_limited, 0);
    // 36 requests at 7 per (1 s + margin): at least 5 windows.
    assert!(took >= Duration::from_secs(5), "{took:?}");
    assert!(took < Duration::from_secs(8), "{took:?}");
    sb.shutdown().await;
}

#[tokio::test]
async fn a_429_pauses_the_whole_account() {
    let sb = Sandbox::start(SandboxOptions {
        rate_limit: Some(RateLimit {
            requests: 2,
            per: Duration::from_secs(1),
        }),
        block: None,
        throttle_body: ErrorBody::Html,
        ..SandboxOptions::default()
    })
    .await
    .unwrap();
    let lead = sb.add_lead(NewLead::named("ACME")).unwrap();
    let client = Arc::new(long_lived(&sb));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..7 {
        let c = client.clone();
        tasks.push(tokio::spawn(async move { c.lead(lead).await }));
    }
    for t in tasks {
        assert!(t.await.unwrap().unwrap().is_some());
    }
    let stats = client.stats();
    assert!(stats.rate_limited >= 1);
    assert!(stats.total_wait >= Duration::from_secs(1));
    assert!(started.elapsed() >= Duration::from_secs(1));
    // The pause is shared: once a 429 came back, no request of the account started
    // within the following second (the base pause), whichever task it belonged to.
    let calls = sb.calls();
    let starts: Vec<std::time::SystemTime> = calls.iter().map(|c| c.at - c.elapsed).collect();
    for c in calls.iter().filter(|c| c.status == 429) {
        let from = c.at + Duration::from_millis(20);
        let to = c.at + Duration::from_millis(950);
        assert!(
            !starts.iter().any(|s| *s > from && *s < to),
            "a request started during the pause after a 429"
        );
    }
    // Waves are not escalated per response: 7 requests against 2/s need well under
    // the 1+2+4+8+16 s that per-response escalation would cost.
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "{:?}",
        started.elapsed()
    );
    sb.shutdown().await;
}

#[tokio::test]
async fn a_403_marks_the_account_blocked_and_stops_its_traffic() {
    let sb = Sandbox::start(SandboxOptions {
        block: Some(BlockPolicy {
            violations: 3,
            within: Duration::from_secs(60),
        }),
        blocked_body: ErrorBody::Html,
        ..SandboxOptions::default()
    })
    .await
    .unwrap();
    let lead = sb.add_lead(NewLead::named("ACME")).unwrap();
    // Someone else (a careless widget) hammers the account until amoCRM blocks it.
    let raw = reqwest::Client::new();
    let token = sb.long_lived_token().unwrap();
    for _ in 0..30 {
        let _ = raw
            .get(format!("{}/api/v4/leads/{lead}", sb.base_url()))
            .bearer_auth(token.expose_secret())
            .send()
            .await;
    }
    assert!(sb.blocked());
    let client = long_lived(&sb);
    let err = client.lead(lead).await.unwrap_err();
    assert!(matches!(err, Error::Blocked { .. }), "{err:?}");
    assert!(client.is_blocked() && client.stats().blocked);
    let calls = sb.calls().len();
    assert!(matches!(
        client.lead(lead).await,
        Err(Error::Blocked { .. })
    ));
    assert_eq!(sb.calls().len(), calls, "nothing more is sent once blocked");
    sb.shutdown().await;
}

#[tokio::test]
async fn no_content_is_an_empty_result() {
    let sb = Sandbox::start(SandboxOptions::unlimited()).await.unwrap();
    let client = long_lived(&sb);
    assert!(client.leads_by_ids(&[999_999]).await.unwrap().is_empty());
    assert!(client.lead(999_999).await.unwrap().is_none());
    assert!(client
        .lead_events(&[999_999], &[], None)
        .await
        .unwrap()
        .is_empty());
    assert!(client.lead_tasks(&[999_999]).await.unwrap().is_empty());
    assert!(sb.count_status(204) >= 3);
    sb.shutdown().await;
    let sb = Sandbox::start(SandboxOptions {
        missing_entity: MissingEntity::NotFound,
        ..SandboxOptions::unlimited()
    })
    .await
    .unwrap();
    assert!(long_lived(&sb).lead(999_999).await.unwrap().is_none());
    sb.shutdown().await;
}

#[tokio::test]
async fn a_504_halves_the_patch_until_it_fits() {
    let sb = Sandbox::start(SandboxOptions {
        timeout_batch_above: Some(10),
        ..SandboxOptions::unlimited()
    })
    .await
    .unwrap();
    let field = sb.create_lead_field(FieldSpec::new("Lead score", FieldType::Numeric).api_only());
    let ids: Vec<u64> = (0..50)
        .map(|i| sb.add_lead(NewLead::named(&format!("L{i}"))).unwrap())
        .collect();
    let client = long_lived(&sb);
    let updates: Vec<LeadUpdate> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| LeadUpdate {
            id: *id,
            fields: vec![(field.id, FieldWrite::Number(i as f64))],
        })
        .collect();
    let results = client.update_leads(&updates).await;
    assert!(results.iter().all(|(_, r)| r.is_ok()), "{results:?}");
    let written: usize = results.iter().map(|(ids, _)| ids.len()).sum();
    assert_eq!(written, 50);
    assert!(results.iter().all(|(ids, _)| ids.len() <= 10));
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(sb.lead(*id).unwrap().text(field.id), Some(i.to_string()));
    }
    // 50 -> 504, 25 -> 504 twice, 12/13 -> 504 four times, then eight batches of 6-7.
    assert_eq!(sb.count_status(504), 7);
    sb.shutdown().await;
}

#[tokio::test]
async fn validation_errors_and_html_5xx_are_typed() {
    let sb = Sandbox::start(SandboxOptions::unlimited()).await.unwrap();
    let tier = sb.create_lead_field(FieldSpec::select("Lead tier", &["cold", "warm", "hot"]));
    let lead = sb.add_lead(NewLead::named("ACME")).unwrap();
    let client = long_lived(&sb);
    let err = client
        .patch_leads_once(&[LeadUpdate {
            id: lead,
            fields: vec![(tier.id, FieldWrite::Enum(1))],
        }])
        .await
        .unwrap_err();
    let Error::Validation { errors } = &err else {
        panic!("{err:?}")
    };
    assert!(!errors.is_empty() && !errors[0].errors.is_empty());
    assert!(!err.is_retryable());
    // Every read fails once with a 502 HTML page or a 500: retried and answered.
    sb.set_faults(FaultConfig {
        rate: 0.5,
        mix: vec![
            (FaultKind::BadGatewayHtml, 1),
            (FaultKind::InternalServerError, 1),
        ],
        seed: 7,
        ..FaultConfig::default()
    });
    for _ in 0..6 {
        assert!(client.lead(lead).await.unwrap().is_some());
    }
    sb.set_faults(FaultConfig::only(FaultKind::BadGatewayHtml, 1.0, 1));
    let err = client.lead(lead).await.unwrap_err();
    assert!(matches!(err, Error::NotJson { status: 502, .. }), "{err:?}");
    sb.shutdown().await;
}

/// A store whose first `fail` saves fail (a full disk, a flaky database).
struct FlakyStore {
    inner: MemoryTokenStore,
    fail: std::sync::atomic::AtomicU32,
}

#[async_trait::async_trait]
impl TokenStore for FlakyStore {
    async fn load(&self) -> Result<Option<leadscore_amocrm::TokenPair>, String> {
        self.inner.load().await
    }

    async fn save(&self, pair: &leadscore_amocrm::TokenPair) -> Result<(), String> {
        use std::sync::atomic::Ordering;
        if self
            .fail
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err("disk full".into());
        }
        self.inner.save(pair).await
    }
}

#[tokio::test]
async fn a_failed_save_blocks_use_until_the_pair_is_stored() {
    let sb = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let lead = sb.add_lead(NewLead::named("ACME")).unwrap();
    let initial = sb.issue_tokens().unwrap().refresh_token;
    let store = Arc::new(FlakyStore {
        inner: MemoryTokenStore::new(),
        fail: std::sync::atomic::AtomicU32::new(1),
    });
    let client = Client::new(
        ClientConfig::new(sb.base_url()),
        Auth::OAuth {
            settings: OAuthSettings {
                client_id: "sandbox-client-id".into(),
                client_secret: SecretString::from("sandbox-client-secret"),
                redirect_uri: "https://leadscore.test/oauth/amocrm".into(),
                initial_refresh_token: initial,
                refresh_ahead: Duration::from_secs(300),
            },
            store: store.clone(),
        },
    )
    .unwrap();
    let err = client.lead(lead).await.unwrap_err();
    assert!(matches!(err, Error::TokenStore(_)), "{err:?}");
    assert_eq!(
        sb.calls()
            .iter()
            .filter(|c| c.path.starts_with("/api/"))
            .count(),
        0,
        "the new access token was not used before it was stored"
    );
    // Next call: the kept pair is saved first, then used; no second refresh.
    assert!(client.lead(lead).await.unwrap().is_some());
    assert_eq!(client.refreshes(), 1);
    assert_eq!(store.inner.saves(), 1);
    assert_eq!(sb.refresh_reuses(), 0);
    sb.shutdown().await;
}

#[tokio::test]
async fn tokens_are_refreshed_ahead_of_expiry_without_a_401() {
    let sb = Sandbox::start(SandboxOptions::default()).await.unwrap();
    sb.set_access_ttl(Duration::from_secs(301));
    let lead = sb.add_lead(NewLead::named("ACME")).unwrap();
    let initial = sb.issue_tokens().unwrap().refresh_token;
    let store = Arc::new(MemoryTokenStore::new());
    let client = oauth(&sb, store.clone(), &initial);
    assert!(client.lead(lead).await.unwrap().is_some());
    assert_eq!(client.refreshes(), 1);
    // 301 s of life minus the 300 s margin: after 2 s the token counts as expiring.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(client.lead(lead).await.unwrap().is_some());
    assert_eq!(client.refreshes(), 2);
    assert_eq!(
        sb.count_status(401),
        0,
        "refreshed before amoCRM refused it"
    );
    assert_eq!(sb.refresh_reuses(), 0);
    sb.shutdown().await;
}

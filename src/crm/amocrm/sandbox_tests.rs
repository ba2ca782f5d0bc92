//! The amoCRM adapter against the sandbox account over real HTTP on 127.0.0.1.

use std::time::Instant;

use leadscore_amocrm_sandbox::{
    FieldSpec, FieldValue, NewCompany, NewContact, NewEvent, NewLead, Sandbox, SandboxHandle,
    SandboxOptions,
};
use serde_json::json;

use chrono::Utc;
use secrecy::{ExposeSecret, SecretString};

use super::tests::portal;
use super::*;
use super::settings::{Auth as PortalAuth, Settings};
use crate::crm::vault::vault_key;
use crate::lead::ActivityKind;

fn tiers() -> Vec<(String, String)> {
    vec![
        ("cold".into(), "Холодный".into()),
        ("warm".into(), "Тёплый".into()),
        ("hot".into(), "Горячий".into()),
    ]
}

/// One client per account, as in the daemon: two limiters for one account could
/// together exceed its limit.
fn client_for(sb: &SandboxHandle) -> Arc<Client> {
    let p = portal(sb.base_url());
    Arc::new(
        Client::new(
            AmocrmCrm::client_config(&p, sb.base_url()),
            Auth::LongLived(sb.long_lived_token().unwrap()),
        )
        .unwrap(),
    )
}

fn crm_with(sb: &SandboxHandle, client: &Arc<Client>) -> AmocrmCrm {
    AmocrmCrm::with_client(&portal(sb.base_url()), client.clone())
}

/// Run setup and return the fields section it implies.
async fn configured(sb: &SandboxHandle, client: &Arc<Client>) -> (AmocrmCrm, FieldsSection) {
    let setup = crm_with(sb, client)
        .setup_fields(&FieldsSection::default(), &tiers())
        .await
        .unwrap();
    let fields = FieldsSection {
        score: Some(setup.score_field.clone()),
        tier: Some(setup.tier_field.clone()),
        breakdown: Some(setup.breakdown_field.clone()),
        tier_values: setup.tier_values.clone(),
        ..FieldsSection::default()
    };
    (crm_with(sb, client), fields)
}

#[tokio::test]
async fn setup_creates_api_only_fields_once() {
    let sb = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let crm = crm_with(&sb, &client_for(&sb));
    let none = FieldsSection::default();
    let first = crm.setup_fields(&none, &tiers()).await.unwrap();
    assert_eq!(first.created.len(), 3);
    assert_eq!(first.tier_values.len(), 3);
    let fields = sb.lead_fields();
    for id in [
        &first.score_field,
        &first.tier_field,
        &first.breakdown_field,
    ] {
        let f = fields.iter().find(|f| f.id.to_string() == *id).unwrap();
        assert!(f.is_api_only, "{}", f.name);
    }
    let again = crm.setup_fields(&none, &tiers()).await.unwrap();
    assert!(again.created.is_empty());
    assert_eq!(
        (again.score_field, again.tier_field, again.tier_values),
        (first.score_field, first.tier_field, first.tier_values)
    );
    sb.shutdown().await;
}

#[tokio::test]
async fn fetch_write_and_task_round_trip() {
    let sb = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let industry =
        sb.create_lead_field(FieldSpec::select("Отрасль", &["Производство", "Ритейл"]));
    let client = client_for(&sb);
    let (_, mut fields) = configured(&sb, &client).await;
    fields
        .map
        .insert("industry".into(), industry.id.to_string());
    let crm = crm_with(&sb, &client);
    let ts = TaskSection::default();
    let company = sb.add_company(NewCompany::named("ООО Ромашка"));
    let contact = sb
        .add_contact(
            NewContact::named("Иван Петров")
                .position("Генеральный директор")
                .email("ivan@romashka.ru")
                .phone("+7 900 000-00-00")
                .company(company),
        )
        .unwrap();
    let lead = sb
        .add_lead(
            NewLead::named("Поставка станков")
                .price(150_000)
                .field(industry.id, FieldValue::Enum(industry.enums[0].id)),
        )
        .unwrap();
    sb.link_contact(lead, contact, true).unwrap();
    sb.link_company(lead, company).unwrap();
    sb.add_event(NewEvent::lead(lead, "incoming_call")).unwrap();
    sb.add_event(
        NewEvent::lead(lead, "link_followed")
            .after(json!([{"link": {"url": "https://site.ru/pricing"}}])),
    )
    .unwrap();
    sb.add_note(lead, "common", json!({"text": "[demo] Заявка на демо"}))
        .unwrap();
    sb.add_note(lead, "common", json!({"text": "Перезвонить в пятницу"}))
        .unwrap();

    let id = lead.to_string();
    let fetched = crm
        .fetch(&fields, &[id.clone(), "424242".into(), "x".into()])
        .await
        .unwrap();
    assert_eq!(
        fetched.len(),
        1,
        "a missing and a non-numeric id are absent"
    );
    let f = &fetched[&id];
    assert_eq!(f.lead.position.as_deref(), Some("Генеральный директор"));
    assert_eq!(f.lead.emails, vec!["ivan@romashka.ru"]);
    assert_eq!(f.lead.company.as_deref(), Some("ООО Ромашка"));
    assert_eq!(f.lead.industry.as_deref(), Some("Производство"));
    assert_eq!(f.current_score, None);
    let kinds: Vec<&str> = f.activities.iter().map(|a| a.kind.as_str()).collect();
    for k in ["call", "page_view", "demo_request", "comment"] {
        assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
    }
    let pv = f
        .activities
        .iter()
        .find(|a| a.kind == ActivityKind::PageView)
        .unwrap();
    assert_eq!(pv.url.as_deref(), Some("https://site.ru/pricing"));

    let write = ScoreWrite {
        lead_id: id.clone(),
        score: 82,
        tier: "hot".into(),
        breakdown: "82 — горячий: +15 должность".into(),
        comment: true,
        extras: Default::default(),
    };
    let out = crm
        .write_scores(&fields, std::slice::from_ref(&write))
        .await
        .unwrap();
    assert!(matches!(out.get(&id), Some(Ok(Some(_)))), "{out:?}");
    let stored = sb.lead(lead).unwrap();
    let score_id: u64 = fields.score.as_deref().unwrap().parse().unwrap();
    let tier_id: u64 = fields.tier.as_deref().unwrap().parse().unwrap();
    assert_eq!(stored.text(score_id).as_deref(), Some("82"));
    assert_eq!(
        stored.enum_id(tier_id).map(|e| e.to_string()),
        fields.tier_values.get("hot").cloned()
    );
    assert!(sb.notes(lead).iter().any(|n| n.params["text"]
        .as_str()
        .is_some_and(|t| t.starts_with(OWN_NOTE_PREFIX))));
    // The score is read back, and our own note is not mistaken for activity.
    let again = crm.fetch(&fields, std::slice::from_ref(&id)).await.unwrap();
    assert_eq!(again[&id].current_score, Some(82));
    assert_eq!(again[&id].activities.len(), f.activities.len());

    let marker = "leadscore:amo:1".to_string();
    assert_eq!(crm.find_task(&ts, &id, &marker).await.unwrap(), None);
    let task = crm
        .create_task(
            &ts,
            &TaskRequest {
            lead_id: id.clone(),
            responsible_id: Some("3493061".into()),
            title: "Позвонить сейчас".into(),
            text: "Лид набрал 82".into(),
            deadline: Utc::now() + chrono::Duration::minutes(60),
            marker: marker.clone(),
        })
        .await
        .unwrap();
    let tasks = sb.tasks_of(lead);
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].task_type_id, 1);
    assert_eq!(tasks[0].responsible_user_id, 3_493_061);
    assert_eq!(
        crm.find_task(&ts, &id, &marker).await.unwrap(),
        Some(task.clone())
    );
    assert!(crm.task_open(&ts, &id, &task.id).await.unwrap());
    assert!(
        !crm.task_open(&ts, "424242", &task.id).await.unwrap(),
        "our task id seen from another lead is not open"
    );
    sb.complete_task(task.id.parse().unwrap()).unwrap();
    assert!(!crm.task_open(&ts, &id, &task.id).await.unwrap());
    assert!(!crm.task_open(&ts, &id, "987654").await.unwrap());

    let since = Utc::now() - chrono::Duration::minutes(5);
    assert!(crm
        .changed_since(since)
        .await
        .unwrap()
        .iter()
        .any(|c| c.id == id && c.stamp.is_some()));
    assert_eq!(sb.count_status(429), 0);
    sb.shutdown().await;
}

#[tokio::test]
async fn oauth_pair_rotates_into_sled_and_survives_a_restart() {
    let sb = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let lead = sb.add_lead(NewLead::named("ACME")).unwrap().to_string();
    let initial = sb.issue_tokens().unwrap().refresh_token;
    let dir = tempfile::tempdir().unwrap();
    let mut p = portal(sb.base_url());
    p.settings = Settings::with_auth(PortalAuth::OAuth {
        base_url: sb.base_url().into(),
        client_id: "sandbox-client-id".into(),
        client_secret: SecretString::from("sandbox-client-secret"),
        redirect_uri: "https://leadscore.test/oauth/amocrm".into(),
        refresh_token: initial.clone(),
    });
    {
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let crm = AmocrmCrm::new(&p, store.clone()).unwrap();
        assert_eq!(
            crm.fetch(&p.fields, std::slice::from_ref(&lead)).await.unwrap().len(),
            1
        );
        let raw = store.meta_get(&vault_key(NAME, "amo")).unwrap().unwrap();
        assert!(
            !raw.contains(initial.expose_secret()),
            "the spent token is not kept"
        );
        assert!(!format!("{crm:?}").contains(initial.expose_secret()));
    }
    // Restart with the same config (its refresh token is spent by now) and an
    // expired access token: the pair from sled is used and rotated again.
    sb.expire_access_tokens();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let crm = AmocrmCrm::new(&p, store).unwrap();
    assert_eq!(
        crm.fetch(&p.fields, std::slice::from_ref(&lead)).await.unwrap().len(),
        1
    );
    assert_eq!(sb.refresh_uses().len(), 2);
    assert_eq!(sb.refresh_reuses(), 0);
    sb.shutdown().await;
}

/// The 500-lead burst of issue 4: fetch and write 500 leads at 7 req/s with no 429.
/// Prints requests per lead and the drain time (BENCHMARKS.md quotes them).
#[tokio::test]
async fn a_500_lead_burst_draws_no_429() {
    let sb = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let (crm, fields) = configured(&sb, &client_for(&sb)).await;
    let mut ids = Vec::new();
    for i in 0..500u64 {
        let contact = sb
            .add_contact(NewContact::named(&format!("C{i}")).email(&format!("c{i}@corp.ru")))
            .unwrap();
        let lead = sb.add_lead(NewLead::named(&format!("L{i}"))).unwrap();
        sb.link_contact(lead, contact, true).unwrap();
        if i % 5 == 0 {
            sb.add_event(NewEvent::lead(lead, "incoming_call")).unwrap();
        }
        ids.push(lead.to_string());
    }
    let before = crm.client().stats().requests;
    let started = Instant::now();
    let fetched = crm.fetch(&fields, &ids).await.unwrap();
    let fetch_requests = crm.client().stats().requests - before;
    assert_eq!(fetched.len(), 500);
    let writes: Vec<ScoreWrite> = ids
        .iter()
        .map(|id| ScoreWrite {
            lead_id: id.clone(),
            score: 40,
            tier: "warm".into(),
            breakdown: "40 — тёплый".into(),
            comment: false,
            extras: Default::default(),
        })
        .collect();
    let out = crm.write_scores(&fields, &writes).await.unwrap();
    assert!(out.values().all(Result::is_ok));
    let took = started.elapsed();
    let total = crm.client().stats().requests - before;
    assert_eq!(sb.count_status(429), 0);
    assert!(!sb.blocked());
    let calls = fetched.values().filter(|f| !f.activities.is_empty()).count();
    assert_eq!(calls, 100, "every fifth lead's call is found");
    // 2 lead lists + 2 contact lists + the feed since the leads' creation (one page of
    // the 100 calls; 50 event lists of 10 ids before); 10 PATCHes of 50.
    assert_eq!(fetch_requests, 5);
    assert_eq!(total, 15);
    eprintln!(
        "amoCRM 500-lead burst: {total} requests ({:.3} per lead: fetch {fetch_requests}, write {}), drained in {:.1} s, 0 x 429",
        total as f64 / 500.0,
        total - fetch_requests,
        took.as_secs_f64()
    );
    sb.shutdown().await;
}

/// The account-wide feed reads on past the page cap from the oldest second it saw
/// (each event once, nothing lost), and one request tells whether it is longer than a
/// number of pages.
#[tokio::test]
async fn the_event_feed_reads_past_the_page_cap_and_probes_its_length() {
    let sb = Sandbox::start(SandboxOptions::unlimited()).await.unwrap();
    let lead = sb.add_lead(NewLead::named("busy")).unwrap();
    let t0 = 1_750_000_000;
    // 450 calls, 40 per second: the cap of 2 pages (200 events) ends mid-second.
    for i in 0..450 {
        let mut e = NewEvent::lead(lead, "incoming_call");
        e.created_at = Some(t0 + i / 40);
        sb.add_event(e).unwrap();
    }
    let mut e = NewEvent::lead(lead, "incoming_mail");
    e.created_at = Some(t0);
    sb.add_event(e).unwrap();
    let p = portal(sb.base_url());
    let mut config = AmocrmCrm::client_config(&p, sb.base_url());
    config.max_pages = 2;
    let client = Client::new(config, Auth::LongLived(sb.long_lived_token().unwrap())).unwrap();
    let calls = (&["lead"][..], &["incoming_call"][..]);
    let got = client.event_feed(calls, t0, t0 + 60).await.unwrap();
    assert_eq!(got.len(), 450);
    let ids: std::collections::HashSet<_> = got.iter().map(|e| e.id.clone()).collect();
    assert_eq!(ids.len(), 450, "each event once");
    assert!(got.windows(2).all(|w| w[0].created_at >= w[1].created_at));
    // 5 pages of 100 (the sandbox's most for events).
    assert!(client.event_feed_longer_than(calls, (t0, t0 + 60), 4).await.unwrap());
    assert!(!client.event_feed_longer_than(calls, (t0, t0 + 60), 5).await.unwrap());
    // More events in one second than the cap holds: an error, not a silent cut.
    for _ in 0..250 {
        let mut e = NewEvent::lead(lead, "incoming_call");
        e.created_at = Some(t0 + 100);
        sb.add_event(e).unwrap();
    }
    let err = client.event_feed(calls, t0 + 100, t0 + 100).await.unwrap_err();
    assert!(err.to_string().contains("more events in second"), "{err}");
}

/// New leads' events come from the account's feed since their creation (one request for
/// 30 leads instead of 3, or its pages when they are no more than the per-id lists);
/// when the feed is longer (a busy account), two requests find that out and the leads
/// are read 10 per request.
#[tokio::test]
async fn new_leads_read_their_events_from_the_feed_unless_it_is_longer() {
    let sb = Sandbox::start(SandboxOptions::unlimited()).await.unwrap();
    let (crm, fields) = configured(&sb, &client_for(&sb)).await;
    let mut ids = Vec::new();
    for i in 0..30u64 {
        let lead = sb.add_lead(NewLead::named(&format!("N{i}"))).unwrap();
        if i % 3 == 0 {
            sb.add_event(NewEvent::lead(lead, "incoming_call")).unwrap();
        }
        ids.push(lead.to_string());
    }
    let noted: u64 = ids[1].parse().unwrap();
    sb.add_note(noted, "common", json!({"text": "[demo] Заявка на демо"}))
        .unwrap();
    let kinds = |f: &BTreeMap<LeadId, Fetched>| -> Vec<Vec<String>> {
        ids.iter()
            .map(|id| f[id].activities.iter().map(|a| a.kind.as_str().to_string()).collect())
            .collect()
    };
    let events = || sb.count_route("GET", "/api/v4/events");
    let before = crm.client().stats().requests;
    let first = crm.fetch(&fields, &ids).await.unwrap();
    assert_eq!(crm.client().stats().requests - before, 3, "leads, feed, notes");
    assert_eq!(events(), 1);
    let seen = kinds(&first);
    assert_eq!(seen.iter().filter(|k| k.contains(&"call".to_string())).count(), 10);
    assert_eq!(seen[1], vec!["demo_request".to_string()]);

    // 150 calls on another lead since: two feed pages of 100, found to fit by asking
    // for page 3 (none), so three requests, as many as the ids would take.
    let busy = sb.add_lead(NewLead::named("busy")).unwrap();
    for _ in 0..150 {
        sb.add_event(NewEvent::lead(busy, "incoming_call")).unwrap();
    }
    let paged = crm.fetch(&fields, &ids).await.unwrap();
    assert_eq!(kinds(&paged), seen, "the same activities, from two feed pages");
    assert_eq!(events(), 1 + 3, "feed pages 1, 3 (none) and 2");

    // 1,000 calls: the feed takes 11 pages, the ids 3 requests.
    for _ in 0..850 {
        sb.add_event(NewEvent::lead(busy, "incoming_call")).unwrap();
    }
    let again = crm.fetch(&fields, &ids).await.unwrap();
    assert_eq!(kinds(&again), seen, "the same activities, read per id");
    assert_eq!(
        events(),
        4 + 2 + 3,
        "page 1 and page 3 of the feed, then 3 lists of 10 ids"
    );
    assert_eq!(sb.count_status(429), 0);
    sb.shutdown().await;
}

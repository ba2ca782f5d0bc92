//! Unit tests of the amoCRM adapter: mapping, events, notes, errors, token store.

use leadscore_amocrm::types::{Company, Contact, Event, Lead as AmoLead, Note};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use super::*;
use crate::crm::activity_map::ActivityMap;
use super::settings::{Auth as PortalAuth, Settings};
use crate::config::{RateLimitSection, TaskSection};
use crate::crm::vault::vault_key;
use crate::lead::{ActivityKind, Direction};

pub(crate) fn portal(base_url: &str) -> Portal {
    let mut fields = FieldsSection {
        score: Some("9001".into()),
        tier: Some("9002".into()),
        breakdown: Some("9003".into()),
        ..FieldsSection::default()
    };
    fields.tier_values.insert("cold".into(), "1".into());
    fields.tier_values.insert("warm".into(), "2".into());
    fields.tier_values.insert("hot".into(), "3".into());
    fields.map.insert("industry".into(), "501".into());
    fields.map.insert("employees".into(), "502".into());
    fields.map.insert("revenue".into(), "503".into());
    fields.map.insert("custom.budget".into(), "Budget".into());
    Portal {
        id: "amo".into(),
        crm: NAME,
        settings: Settings::with_auth(PortalAuth::LongLived {
            base_url: base_url.into(),
            token: SecretString::from("tok"),
        }),
        rate_limit: RateLimitSection {
            per_second: 7.0,
            burst: 7,
            operating_limit_secs: None,
            operating_window_secs: None,
        },
        fields,
        task: TaskSection::default(),
        threshold: 70,
        rearm_below: 60,
        model: None,
        tracking: None,
        reminder: None,
        stages: Default::default(),
    }
}

fn crm() -> AmocrmCrm {
    let p = portal("http://127.0.0.1:9");
    let client = Client::new(
        AmocrmCrm::client_config(&p, "http://127.0.0.1:9"),
        Auth::LongLived(SecretString::from("t")),
    )
    .unwrap();
    AmocrmCrm::with_client(&p, Arc::new(client))
}

#[test]
fn maps_lead_contact_company_and_mapping() {
    let lead: AmoLead = serde_json::from_value(json!({
        "id": 42, "name": "Поставка", "price": 150000, "responsible_user_id": 7, "status_id": 100,
        "created_at": 1_700_000_000, "updated_at": 1_700_000_500,
        "custom_fields_values": [
            {"field_id": 9001, "values": [{"value": "64"}]},
            {"field_id": 501, "field_type": "select", "values": [{"value": "Производство", "enum_id": 5}]}
        ],
        "_embedded": {"tags": [{"id": 1, "name": "выставка"}], "contacts": [{"id": 5, "is_main": true}], "companies": [{"id": 8}]}
    }))
    .unwrap();
    let contact: Contact = serde_json::from_value(json!({"id": 5, "name": "Иван", "custom_fields_values": [
        {"field_id": 1, "field_code": "POSITION", "values": [{"value": "Генеральный директор"}]},
        {"field_id": 2, "field_code": "EMAIL", "values": [{"value": "ivan@corp.ru", "enum_code": "WORK"}]},
        {"field_id": 3, "field_code": "PHONE", "values": [{"value": "+7 900 1"}]},
        {"field_id": 504, "field_name": "Budget", "values": [{"value": "yes"}]}
    ]}))
    .unwrap();
    let company: Company = serde_json::from_value(
        json!({"id": 8, "name": "ООО Ромашка", "custom_fields_values": [
            {"field_id": 502, "values": [{"value": "1 200"}]},
            {"field_id": 503, "values": [{"value": 5000000.5}]}
        ]}),
    )
    .unwrap();
    let p = portal("http://127.0.0.1:9");
let (l, current) = crm().lead_from(&p.fields, &lead, Some(&contact), Some(&company));
    assert_eq!(current, Some(64));
    assert_eq!(l.id, "42");
    assert_eq!(l.position.as_deref(), Some("Генеральный директор"));
    assert_eq!(l.emails, vec!["ivan@corp.ru"]);
    assert_eq!(l.phones, vec!["+7 900 1"]);
    assert_eq!(l.company.as_deref(), Some("ООО Ромашка"));
    assert_eq!(l.industry.as_deref(), Some("Производство"));
    assert_eq!(l.employees, Some(1200.0));
    assert_eq!(l.revenue, Some(5_000_000.5));
    assert_eq!(l.custom.get("budget").map(String::as_str), Some("yes"));
    assert_eq!(l.custom.get("tags").map(String::as_str), Some("выставка"));
    assert_eq!(l.custom.get("price").map(String::as_str), Some("150000"));
    assert_eq!(l.responsible_id.as_deref(), Some("7"));
    assert_eq!(l.status.as_deref(), Some("100"));
    assert_eq!(l.updated_at.unwrap().timestamp(), 1_700_000_500);
    // A thin lead stays thin: no contact, no company, no mapping hits.
    let bare: AmoLead = serde_json::from_value(json!({"id": 1})).unwrap();
    let (l, current) = crm().lead_from(&p.fields, &bare, None, None);
    assert_eq!((l.position, l.industry, current), (None, None, None));
}

#[test]
fn events_become_activities() {
    let a = event_activity(&ev("incoming_call", json!([])), Some("5"), &none()).unwrap();
    assert_eq!(
        (a.kind, a.direction),
        (ActivityKind::Call, Some(Direction::Incoming))
    );
    assert_eq!(a.contact_id.as_deref(), Some("5"));
    let a = event_activity(&ev("outgoing_mail", json!([])), None, &none()).unwrap();
    assert_eq!(
        (a.kind, a.direction),
        (ActivityKind::Email, Some(Direction::Outgoing))
    );
    let a = event_activity(&ev("incoming_chat_message", json!([])), None, &none()).unwrap();
    assert_eq!(
        (a.kind, a.subject.as_deref()),
        (ActivityKind::Email, Some("chat"))
    );
    let a = event_activity(
        &ev(
            "link_followed",
            json!([{"link": {"url": "https://x.ru/pricing"}}]),
        ),
        None,
        &none(),
    )
    .unwrap();
    assert_eq!(
        (a.kind, a.url.as_deref()),
        (ActivityKind::PageView, Some("https://x.ru/pricing"))
    );
    let a = event_activity(
        &ev(
            "lead_status_changed",
            json!([{"lead_status": {"id": 2, "pipeline_id": 9}}]),
        ),
        None,
        &none(),
    )
    .unwrap();
    assert_eq!(a.subject.as_deref(), Some("1->2"));
    assert!(event_activity(&ev("entity_tag_added", json!([])), None, &none()).is_none());
}

#[test]
fn tagged_notes_are_behaviour_and_own_notes_are_ignored() {
    let a = note_activity(&note("[Demo] Demo request from /pricing", "common"), None, &none()).unwrap();
    assert_eq!(a.kind, ActivityKind::DemoRequest);
    assert_eq!(a.subject.as_deref(), Some("Demo request from /pricing"));
    assert_eq!(a.url.as_deref(), Some("/pricing"));
    let a = note_activity(&note("[download] Прайс-лист 2026", "common"), None, &none()).unwrap();
    assert_eq!(
        (a.kind, a.subject.as_deref()),
        (ActivityKind::Download, Some("Прайс-лист 2026"))
    );
    let a = note_activity(&note("[page] https://site.ru/careers", "common"), None, &none()).unwrap();
    assert_eq!(
        (a.kind, a.url.as_deref()),
        (ActivityKind::PageView, Some("https://site.ru/careers"))
    );
    let a = note_activity(&note("Клиент просил перезвонить", "common"), None, &none()).unwrap();
    assert_eq!(a.kind, ActivityKind::Comment);
    assert!(note_activity(&note("[leadscore] 75 — горячий", "common"), None, &none()).is_none());
    assert!(note_activity(&note("{}", "call_in"), None, &none()).is_none());
}

#[test]
fn errors_map_to_pipeline_terms() {
    assert!(matches!(
        to_crm(Error::Blocked { detail: "x".into() }),
        CrmError::Blocked(_)
    ));
    assert!(matches!(
        to_crm(Error::TokenRevoked { detail: "x".into() }),
        CrmError::Auth(_)
    ));
    assert!(matches!(
        to_crm(Error::Unauthorized { detail: "x".into() }),
        CrmError::Auth(_)
    ));
    assert!(to_crm(Error::RateLimited).is_retryable());
    assert!(to_crm(Error::GatewayTimeout).is_retryable());
    assert!(matches!(
        to_crm(Error::Validation { errors: vec![] }),
        CrmError::Rejected(_)
    ));
}

#[tokio::test]
async fn token_pairs_go_through_the_vault_and_a_new_config_token_wins() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let seed = SecretString::from("r0");
    let ts = VaultTokenStore(TokenVault::new(store.clone(), NAME, "amo", &seed));
    assert!(ts.load().await.unwrap().is_none());
    let pair = TokenPair {
        access_token: SecretString::from("a1"),
        refresh_token: SecretString::from("r1"),
        expires_at: 99,
    };
    ts.save(&pair).await.unwrap();
    let raw = store.meta_get(&vault_key(NAME, "amo")).unwrap().unwrap();
    assert!(raw.contains("\"seed\""));
    let again = VaultTokenStore(TokenVault::new(store.clone(), NAME, "amo", &seed));
    let back = again.load().await.unwrap().unwrap();
    assert_eq!(back.refresh_token.expose_secret(), "r1");
    // The admin re-authorized and put a new token into the config: it wins.
    let reauth = VaultTokenStore(TokenVault::new(
        store,
        NAME,
        "amo",
        &SecretString::from("r0-new"),
    ));
    assert!(reauth.load().await.unwrap().is_none());
}

#[tokio::test]
async fn pairs_kept_before_the_vault_are_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let seed = SecretString::from("r0");
    let doc = serde_json::json!({
        "seed": crate::crm::vault::fingerprint("r0"),
        "pair": {"access_token": "a1", "refresh_token": "r1", "expires_at": 5}
    });
    store.meta_set("amocrm_tokens:amo", &doc.to_string()).unwrap();
    let ts = VaultTokenStore(
        TokenVault::new(store, NAME, "amo", &seed).with_legacy_key("amocrm_tokens:amo".into()),
    );
    let back = ts.load().await.unwrap().unwrap();
    assert_eq!(back.refresh_token.expose_secret(), "r1");
}

#[tokio::test]
async fn write_scores_needs_configured_fields() {
    let mut p = portal("http://127.0.0.1:9");
    p.fields.score = None;
    let client = Client::new(
        AmocrmCrm::client_config(&p, "http://127.0.0.1:9"),
        Auth::LongLived(SecretString::from("t")),
    )
    .unwrap();
    let crm = AmocrmCrm::with_client(&p, Arc::new(client));
    let w = ScoreWrite {
        lead_id: "1".into(),
        score: 5,
        tier: "cold".into(),
        breakdown: "x".into(),
        comment: false,
        extras: Default::default(),
    };
    assert!(matches!(
        crm.write_scores(&p.fields, std::slice::from_ref(&w)).await,
        Err(CrmError::Rejected(_))
    ));
    // A tier without an enum id and a non-numeric lead id are per-lead rejections,
    // decided before any request.
    let crm = self::crm();
    let mut bad_tier = w.clone();
    bad_tier.tier = "lukewarm".into();
    let mut bad_id = w;
    bad_id.lead_id = "L-1".into();
    let full = portal("http://127.0.0.1:9");
let out = crm
    .write_scores(&full.fields, &[bad_tier, bad_id])
    .await
    .unwrap();
    assert!(matches!(out.get("1"), Some(Err(CrmError::Rejected(_)))));
    assert!(matches!(out.get("L-1"), Some(Err(CrmError::Rejected(_)))));
    assert_eq!(crm.client().stats().requests, 0);
}

fn ev(kind: &str, after: serde_json::Value) -> Event {
    serde_json::from_value(json!({"id": "e1", "type": kind, "entity_id": 42, "entity_type": "lead", "created_at": 1_700_000_000, "value_after": after, "value_before": [{"lead_status": {"id": 1, "pipeline_id": 9}}]})).unwrap()
}

fn note(text: &str, kind: &str) -> Note {
    serde_json::from_value(json!({"id": 3, "entity_id": 42, "note_type": kind, "params": {"text": text}, "created_at": 1_700_000_000})).unwrap()
}

fn none() -> ActivityMap {
    ActivityMap::default()
}

/// A portal's own shapes, mapped in the config: a common note "Просмотр страницы: Цены
/// https://…" (the page name and address taken from named groups) and an event type
/// the built-in list does not read.
#[test]
fn the_portal_map_classifies_notes_and_events_first() {
    let text = r#"
        [[activity_map]]
        kind = "page_view"
        text = '^Просмотр страницы:\s*(?P<subject>.+?)\s+(?P<url>https?://\S+)'
        [[activity_map]]
        kind = "download"
        event = "common_note_added"
        text = '(?i)скачан прайс'
        [[activity_map]]
        kind = "form"
        event = "entity_linked"
        "#;
    let map = ActivityMap::from_toml(text, fetch::ACTIVITY_ATTRS).unwrap();
    let a = note_activity(
        &note("Просмотр страницы: Цены https://site.ru/price", "common"),
        None,
        &map,
    )
    .unwrap();
    assert_eq!(a.kind, ActivityKind::PageView);
    assert_eq!(a.subject.as_deref(), Some("Цены"));
    assert_eq!(a.url.as_deref(), Some("https://site.ru/price"));
    assert_eq!(a.mapped_by, Some(1));
    let a = note_activity(&note("Клиент: скачан Прайс-лист 2026", "common"), None, &map).unwrap();
    assert_eq!((a.kind, a.mapped_by), (ActivityKind::Download, Some(2)));
    // Unmapped notes keep the tag table and the comment default.
    let a = note_activity(&note("[demo] с сайта", "common"), None, &map).unwrap();
    assert_eq!((a.kind, a.mapped_by), (ActivityKind::DemoRequest, None));
    let a = event_activity(&ev("entity_linked", json!([])), None, &map).unwrap();
    assert_eq!((a.kind, a.mapped_by), (ActivityKind::Form, Some(3)));
    assert!(event_activity(&ev("entity_linked", json!([])), None, &none()).is_none());
}

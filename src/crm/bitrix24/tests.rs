//! Unit tests of the Bitrix24 adapter: mapping, classification, errors, token format.

use leadscore_bitrix24::types::ActivityRecord;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};

use super::entity::Entity;
use super::fetch::owner_of_activity;
use super::setup::enum_items;
use super::*;
use crate::crm::activity_map::ActivityMap;
use super::settings::{Auth as PortalAuth, Settings};
use crate::config::{RateLimitSection, TaskSection};
use crate::lead::{ActivityKind, Direction};

fn portal() -> Portal {
    let mut fields = FieldsSection {
        score: Some("UF_CRM_LEADSCORE".into()),
        tier: Some("UF_CRM_LEADSCORE_TIER".into()),
        breakdown: Some("UF_CRM_LEADSCORE_WHY".into()),
        ..FieldsSection::default()
    };
    fields.map.insert("revenue".into(), "UF_CRM_REVENUE".into());
    fields.map.insert("employees".into(), "UF_CRM_STAFF".into());
    fields
        .map
        .insert("industry".into(), "UF_CRM_INDUSTRY".into());
    fields
        .map
        .insert("custom.budget".into(), "UF_CRM_BUDGET".into());
    Portal {
        id: "p".into(),
        crm: NAME,
        settings: Settings::with_auth(PortalAuth::Webhook {
            url: SecretString::from("http://127.0.0.1:9/rest/1/code/".to_string()),
        }),
        rate_limit: RateLimitSection {
            per_second: 2.0,
            burst: 50,
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

fn crm() -> Bitrix24Crm {
    let p = portal();
    let client = Client::new(
        Auth::WebhookUrl(SecretString::from(
            "http://127.0.0.1:9/rest/1/code/".to_string(),
        )),
        Bitrix24Crm::client_config(&p),
    )
    .unwrap();
    Bitrix24Crm::with_client(&p, client)
}

#[test]
fn maps_a_lead_with_mapping_and_score() {
    let raw = json!({"ID": "42", "TITLE": "Лид с сайта", "NAME": "Иван", "LAST_NAME": "Петров",
        "POST": "Генеральный директор", "COMPANY_TITLE": "ООО Ромашка", "ASSIGNED_BY_ID": "7",
        "SOURCE_ID": "WEB", "STATUS_ID": "NEW", "DATE_CREATE": "2026-11-20T10:00:00+03:00",
        "EMAIL": [{"VALUE": "ivan@romashka.ru", "VALUE_TYPE": "WORK"}, {"VALUE": ""}],
        "PHONE": [{"VALUE": "+7 900 000-00-00"}],
        "UF_CRM_REVENUE": "12 000 000", "UF_CRM_STAFF": 150, "UF_CRM_INDUSTRY": "Retail",
        "UF_CRM_BUDGET": ["yes"], "UF_CRM_LEADSCORE": "64"});
    let p = portal();
let (lead, score) = crm().lead_from(&p.fields, raw.as_object().unwrap()).unwrap();
    assert_eq!(lead.name.as_deref(), Some("Иван Петров"));
    assert_eq!(lead.position.as_deref(), Some("Генеральный директор"));
    assert_eq!(lead.emails, vec!["ivan@romashka.ru"]);
    assert_eq!(lead.phones.len(), 1);
    assert_eq!(lead.company.as_deref(), Some("ООО Ромашка"));
    assert_eq!(lead.responsible_id.as_deref(), Some("7"));
    assert_eq!(lead.revenue, Some(12_000_000.0));
    assert_eq!(lead.employees, Some(150.0));
    assert_eq!(lead.industry.as_deref(), Some("Retail"));
    assert_eq!(lead.custom["budget"], "yes");
    assert_eq!(
        lead.created_at.unwrap().to_rfc3339(),
        "2026-11-20T07:00:00+00:00"
    );
    assert_eq!(score, Some(64));
    let (lead, score) = crm()
        .lead_from(&p.fields, json!({"ID": "1", "TITLE": "T"}).as_object().unwrap())
        .unwrap();
    assert_eq!((lead.name.as_deref(), score), (Some("T"), None));
}

fn act(v: Value) -> ActivityRecord {
    serde_json::from_value(v).unwrap()
}

#[test]
fn classifies_activities() {
    let c = ActivityClassifier::default();
    let t = "2026-11-20T10:00:00+03:00";
    let none = ActivityMap::default();
    let k = |v: Value| c.classify(&none, &act(v)).unwrap();
    assert_eq!(
        k(json!({"ID": "1", "TYPE_ID": "2", "DIRECTION": "1", "START_TIME": t})).kind,
        ActivityKind::Call
    );
    assert_eq!(
        k(json!({"ID": "1", "TYPE_ID": "2", "DIRECTION": "1", "START_TIME": t})).direction,
        Some(Direction::Incoming)
    );
    assert_eq!(
        k(json!({"ID": "1", "TYPE_ID": "4", "DIRECTION": "2", "CREATED": t})).direction,
        Some(Direction::Outgoing)
    );
    assert_eq!(
        k(json!({"ID": "1", "TYPE_ID": "1", "START_TIME": t})).kind,
        ActivityKind::Meeting
    );
    assert_eq!(k(json!({"ID": "1", "TYPE_ID": "6", "PROVIDER_ID": "CRM_WEBFORM", "SUBJECT": "Заявка", "START_TIME": t})).kind, ActivityKind::Form);
    assert_eq!(k(json!({"ID": "1", "TYPE_ID": "6", "PROVIDER_ID": "CRM_WEBFORM", "SUBJECT": "Запрос демо", "START_TIME": t})).kind, ActivityKind::DemoRequest);
    assert_eq!(k(json!({"ID": "1", "TYPE_ID": "6", "PROVIDER_ID": "IMOPENLINES_SESSION", "START_TIME": t})).kind, ActivityKind::Custom("imopenlines_session".into()));
    let d = k(
        json!({"ID": "9", "TYPE_ID": "6", "PROVIDER_ID": "REST_APP", "SUBJECT": "[Download] Price list 2026",
        "DESCRIPTION": "https://example.ru/price.pdf, from the site", "START_TIME": t}),
    );
    assert_eq!(d.kind, ActivityKind::Download);
    assert_eq!(d.subject.as_deref(), Some("Price list 2026"));
    assert_eq!(d.url.as_deref(), Some("https://example.ru/price.pdf"));
    assert_eq!(
        k(json!({"ID": "1", "SUBJECT": "[page] /pricing", "CREATED": t})).kind,
        ActivityKind::PageView
    );
    assert!(
        c.classify(&none, &act(json!({"ID": "1", "TYPE_ID": "2"})))
            .is_none(),
        "no time, no activity"
    );
}

#[test]
fn activity_owner_or_binding_gives_the_lead() {
    let leads = |e: Entity| e == Entity::Lead;
    assert_eq!(
        owner_of_activity(&json!({"OWNER_TYPE_ID": "1", "OWNER_ID": "5"}), leads),
        Some("5".into())
    );
    let deal_bound_to_lead = json!({"OWNER_TYPE_ID": "2", "OWNER_ID": "9",
        "BINDINGS": [{"OWNER_TYPE_ID": "2", "OWNER_ID": "9"}, {"OWNER_TYPE_ID": "1", "OWNER_ID": "7"}]});
    assert_eq!(owner_of_activity(&deal_bound_to_lead, leads), Some("7".into()));
    assert_eq!(
        owner_of_activity(&json!({"OWNER_TYPE_ID": 3, "OWNER_ID": 1}), leads),
        None
    );
    // A portal scoring deals finds the owning deal as `D_<id>`; one scoring deals
    // only never resolves to a lead.
    assert_eq!(
        owner_of_activity(&deal_bound_to_lead, |_| true),
        Some("D_9".into())
    );
    assert_eq!(
        owner_of_activity(&json!({"OWNER_TYPE_ID": "1", "OWNER_ID": "5"}), |e| e == Entity::Deal),
        None
    );
}

#[test]
fn errors_map_to_pipeline_terms() {
    assert!(to_crm(Error::QueryLimitExceeded).is_retryable());
    assert!(matches!(to_crm(Error::Overload), CrmError::Blocked(_)));
    assert!(matches!(
        to_crm(Error::Auth {
            code: "NO_AUTH_FOUND".into(),
            description: String::new()
        }),
        CrmError::Auth(_)
    ));
    assert!(matches!(
        to_crm(Error::classify(Some(400), "", "Not found", "m")),
        CrmError::Rejected(_)
    ));
}

#[test]
fn tokens_round_trip_through_the_store_format() {
    let t = OAuthTokens {
        access_token: Some(SecretString::from("a".to_string())),
        refresh_token: SecretString::from("r".to_string()),
        expires_at: Some(DateTime::from_timestamp(1_800_000_000, 0).unwrap()),
    };
    let back = tokens_from_json(&tokens_to_json(&t)).unwrap();
    assert_eq!(back.refresh_token.expose_secret(), "r");
    assert_eq!(back.expires_at, t.expires_at);
    assert!(tokens_from_json(&json!({})).is_none());
}

#[test]
fn enum_items_keep_existing_and_add_missing() {
    let existing: Vec<leadscore_bitrix24::types::EnumItem> =
        serde_json::from_value(json!([{"ID": "5", "VALUE": "Cold", "XML_ID": "cold"}]))
            .unwrap();
    let tiers = vec![
        ("cold".to_string(), "Cold".to_string()),
        ("hot".to_string(), "Hot".to_string()),
    ];
    let items = enum_items(&tiers, &existing);
    assert_eq!(items[0]["ID"], json!("5"));
    assert_eq!(items[1]["XML_ID"], json!("hot"));
    assert_eq!(items.as_array().unwrap().len(), 2);
}

/// The shapes real portals use, mapped in the config: an incoming e-mail whose subject
/// is "Запрос демо", and a REST_APP activity "Скачан прайс-лист".
#[test]
fn the_portal_map_classifies_before_tags_and_types() {
    let text = r#"
        [[activity_map]]
        kind = "demo_request"
        type_id = 4
        direction = "incoming"
        subject = '(?i)запрос\s+демо'
        [[activity_map]]
        kind = "download"
        provider_id = "rest_app"
        subject = '(?i)^скачан\s+(?P<subject>.+)$'
        description = '(?P<url>https?://\S+)'
        "#;
    let map = ActivityMap::from_toml(text, classify::ACTIVITY_ATTRS).unwrap();
    let c = ActivityClassifier::default();
    let t = "2026-11-20T10:00:00+03:00";
    let k = |v: Value| c.classify(&map, &act(v)).unwrap();
    let a = k(json!({"ID": "1", "TYPE_ID": "4", "DIRECTION": "1", "SUBJECT": "Re: Запрос демо", "START_TIME": t}));
    assert_eq!((a.kind, a.mapped_by), (ActivityKind::DemoRequest, Some(1)));
    // An outgoing e-mail with the same subject is the rep's, not the buyer's.
    let a = k(json!({"ID": "2", "TYPE_ID": "4", "DIRECTION": "2", "SUBJECT": "Запрос демо", "START_TIME": t}));
    assert_eq!((a.kind, a.mapped_by), (ActivityKind::Email, None));
    let a = k(json!({"ID": "3", "TYPE_ID": "6", "PROVIDER_ID": "REST_APP", "SUBJECT": "Скачан прайс-лист",
        "DESCRIPTION": "файл: https://site.ru/price.pdf", "START_TIME": t}));
    assert_eq!((a.kind.clone(), a.mapped_by), (ActivityKind::Download, Some(2)));
    assert_eq!(a.subject.as_deref(), Some("прайс-лист"));
    assert_eq!(a.url.as_deref(), Some("https://site.ru/price.pdf"));
    // Tags still work where no entry matches.
    let a = k(json!({"ID": "4", "SUBJECT": "[page] /pricing", "CREATED": t}));
    assert_eq!((a.kind, a.mapped_by), (ActivityKind::PageView, None));
}

/// Deal events queue `D_<id>` only where deals are scored; lead events only where
/// leads are; the others are acknowledged and ignored.
#[test]
fn deal_and_lead_events_follow_the_portal_entities() {
    use super::settings::{Entities, OutcomeMap, WebhookCheck};
    use crate::crm::Subject;
    let token = "app-token-0123456789";
    let with = |lead: bool, deal: bool| {
        let mut p = portal();
        p.settings = std::sync::Arc::new(Settings {
            auth: PortalAuth::Webhook {
                url: SecretString::from("http://127.0.0.1:9/rest/1/code/".to_string()),
            },
            webhook: WebhookCheck {
                secret: Some(SecretString::from(token.to_string())),
                ..WebhookCheck::default()
            },
            outcomes: OutcomeMap::default(),
            entities: Entities { lead, deal },
        });
        p
    };
    let body = |event: &str| {
        format!(
            "event={event}&data%5BFIELDS%5D%5BID%5D=42&ts=1&auth%5Bdomain%5D=x.bitrix24.test\
             &auth%5Bmember_id%5D=m1&auth%5Bapplication_token%5D={token}"
        )
    };
    let subjects = |p: &Portal, event: &str| {
        super::webhook::decode(p, None, body(event).as_bytes())
            .unwrap()
            .subjects
    };
    let leads = with(true, false);
    let deals = with(false, true);
    let both = with(true, true);
    assert_eq!(subjects(&leads, "ONCRMDEALUPDATE"), Vec::<Subject>::new());
    assert_eq!(subjects(&leads, "ONCRMLEADADD"), [Subject::Lead("42".into())]);
    assert_eq!(subjects(&deals, "ONCRMDEALADD"), [Subject::Lead("D_42".into())]);
    assert_eq!(subjects(&deals, "ONCRMLEADUPDATE"), Vec::<Subject>::new());
    assert_eq!(subjects(&both, "ONCRMDEALUPDATE"), [Subject::Lead("D_42".into())]);
    assert_eq!(subjects(&both, "ONCRMACTIVITYADD"), [Subject::Activity("42".into())]);
    assert_eq!(leads.settings.scope_label(), "lead");
    assert_eq!(both.settings.scope_label(), "lead, deal");
}

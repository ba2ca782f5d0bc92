//! Every real amoCRM webhook capture in the research notes parses, verifies and yields
//! the right leads and values (fixtures under tests/fixtures, see its README).

use leadscore_amocrm::webhook::{self, Action, Entity, Webhook, WebhookError};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use secrecy::SecretString;

const SECRET: &str = "hook-secret-1";

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Form-encode a capture printed as a key → value (or key → [value]) map.
fn encode_map(json: &str) -> String {
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(json).unwrap();
    map.iter()
        .map(|(k, v)| {
            let v = match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Array(a) => a[0].as_str().unwrap().to_string(),
                other => panic!("unexpected {other}"),
            };
            format!(
                "{}={}",
                utf8_percent_encode(k, NON_ALPHANUMERIC),
                utf8_percent_encode(&v, NON_ALPHANUMERIC)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn verified(body: &str, account_id: Option<&str>, subdomain: Option<&str>) -> Webhook {
    webhook::parse(body.as_bytes())
        .unwrap_or_else(|e| panic!("{e}: {body}"))
        .verify(
            Some(SECRET),
            &SecretString::from(SECRET),
            account_id,
            subdomain,
        )
        .unwrap()
}

#[test]
fn add_lead_2016_raw_wire_body() {
    let hook = verified(&fixture("add_lead_2016.form"), None, Some("test000002"));
    assert_eq!(hook.account.subdomain.as_deref(), Some("test000002"));
    assert_eq!(hook.account.id, None);
    assert_eq!(hook.lead_ids(), vec!["31926529"]);
    let item = &hook.items[0];
    assert_eq!((&item.entity, &item.action), (&Entity::Leads, &Action::Add));
    assert_eq!(item.get("price"), Some("24234"));
    let cf = item.custom_field("1119321").unwrap();
    assert_eq!(cf.name.as_deref(), Some("Some text field"));
    assert_eq!(cf.values[0].value, "asdfdsf");
    // Old captures have no account[id]: a portal that requires one refuses them.
    let err = webhook::parse(fixture("add_lead_2016.form").as_bytes())
        .unwrap()
        .verify(
            Some(SECRET),
            &SecretString::from(SECRET),
            Some("10216991"),
            None,
        )
        .unwrap_err();
    assert_eq!(err, WebhookError::WrongAccount("account[id]"));
}

#[test]
fn status_lead_captures() {
    let hook = verified(
        &encode_map(&fixture("status_lead_elbrus.json")),
        Some("11111111"),
        Some("elbrusbootcamp"),
    );
    assert_eq!(hook.lead_ids(), vec!["11111111"]);
    assert_eq!(hook.items[0].action, Action::Status);
    assert_eq!(
        hook.account.self_link.as_deref(),
        Some("https://elbrusbootcamp.amocrm.ru")
    );
    let hook = verified(
        &encode_map(&fixture("status_lead_impactcapital.json")),
        Some("23681254"),
        Some("impactcapital"),
    );
    assert_eq!(hook.lead_ids(), vec!["25431551"]);
    assert_eq!(hook.items[0].get("old_status_id"), Some("35108005"));
    assert_eq!(hook.items[0].get("old_pipeline_id"), Some("3273697"));
}

#[test]
fn update_lead_with_cyrillic_and_custom_fields() {
    let body: String = fixture("update_lead_ablaser.lines")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("&");
    let hook = verified(&body, Some("29715442"), Some("ablaser"));
    assert_eq!(hook.lead_ids(), vec!["5685933"]);
    let item = &hook.items[0];
    assert_eq!(
        item.get("name"),
        Some("Альфия Ханитова1 (YCLIENTS 339030120)1")
    );
    assert_eq!(item.get("updated_at"), Some("1635139016"));
    assert_eq!(item.custom_fields.len(), 2);
    assert_eq!(
        item.custom_field("629165").unwrap().name.as_deref(),
        Some("ID записи, Yclients")
    );
    assert_eq!(item.custom_field("629233").unwrap().values[0].value, "1234");
}

#[test]
fn enum_and_date_custom_field_variants() {
    let fragment = fixture("update_lead_enum_date.fragment");
    let body = format!(
        "leads[update][0][id]=77{}leads[update][0][custom_fields][0][id]=555&account[id]=1&account[subdomain]=x",
        fragment
    );
    let hook = verified(&body, Some("1"), None);
    let item = &hook.items[0];
    let select = item.custom_field("555").unwrap();
    assert_eq!(select.values[0].value, "Сайт");
    assert_eq!(select.values[0].enum_id.as_deref(), Some("139517"));
    let date = item.custom_field("72417").unwrap();
    assert_eq!(date.name.as_deref(), Some("Начало программы"));
    assert_eq!(date.values[0].value, "1537920000");
    assert_eq!(date.values[0].enum_id, None);
}

#[test]
fn tags() {
    let body = format!(
        "leads[update][0][id]=9&{}&account[id]=1",
        encode_map(&fixture("update_lead_tags.json"))
    );
    let hook = verified(&body, None, None);
    let tag = &hook.items[0].tags[0];
    assert_eq!(tag.id.as_deref(), Some("6172"));
    assert_eq!(tag.name, "взято");
}

#[test]
fn note_on_a_lead_queues_that_lead() {
    let hook = verified(
        &encode_map(&fixture("note_lead_makeprofit.json")),
        Some("15109720"),
        Some("makeprofit"),
    );
    assert_eq!(hook.lead_ids(), vec!["22060555"]);
    let note = hook.items[0].note.as_ref().unwrap();
    assert_eq!(note.note_type.as_deref(), Some("4"));
    assert_eq!(note.id.as_deref(), Some("213313359"));
    assert_eq!(hook.items[0].action, Action::Note);
}

#[test]
fn chat_message_bound_to_a_lead() {
    let hook = verified(
        &encode_map(&fixture("message_add_appgpt.json")),
        Some("31257294"),
        Some("appgpt"),
    );
    assert_eq!(hook.items[0].entity, Entity::Message);
    assert_eq!(hook.lead_ids(), vec!["28455849"]);
}

#[test]
fn every_capture_refuses_a_wrong_secret() {
    for name in [
        "status_lead_elbrus.json",
        "status_lead_impactcapital.json",
        "note_lead_makeprofit.json",
        "message_add_appgpt.json",
    ] {
        let body = encode_map(&fixture(name));
        let err = webhook::parse(body.as_bytes())
            .unwrap()
            .verify(Some("nope"), &SecretString::from(SECRET), None, None)
            .unwrap_err();
        assert_eq!(err, WebhookError::WrongSecret, "{name}");
    }
}

//! The API v4 records leadscore reads and writes, decoded leniently.
//!
//! amoCRM returns HAL+JSON (`_embedded`, `_links`) and is loose with types: ids are
//! numbers, but a custom field value may be a number, a string or a bool, and many
//! fields are `null` rather than absent. Every field here is optional or defaulted so
//! one odd record does not fail a whole page.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// One value of a custom field (`values[]` item).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FieldValue {
    /// Text, number or bool, as amoCRM stores it.
    #[serde(default)]
    pub value: Value,
    /// The chosen item of a select / multiselect / radiobutton field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enum_id: Option<u64>,
    /// For system multitext fields: `WORK`, `MOB`, `PRIV`…
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enum_code: Option<String>,
}

impl FieldValue {
    /// The value as text (numbers without a trailing `.0`; `None` when empty or null).
    pub fn text(&self) -> Option<String> {
        let s = match &self.value {
            Value::String(s) => s.trim().to_string(),
            Value::Number(n) => match n.as_i64() {
                Some(i) => i.to_string(),
                None => n.to_string(),
            },
            Value::Bool(b) => b.to_string(),
            _ => return None,
        };
        (!s.is_empty()).then_some(s)
    }
}

/// One custom field on an entity (`custom_fields_values[]` item).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CustomFieldValues {
    pub field_id: u64,
    #[serde(default)]
    pub field_name: Option<String>,
    /// System fields carry a code: `PHONE`, `EMAIL`, `POSITION`, `WEB`, `ADDRESS`, `IM`.
    #[serde(default)]
    pub field_code: Option<String>,
    #[serde(default)]
    pub field_type: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub values: Vec<FieldValue>,
}

/// Find a field by id in an entity's `custom_fields_values`.
pub fn field_by_id(fields: &[CustomFieldValues], id: u64) -> Option<&CustomFieldValues> {
    fields.iter().find(|f| f.field_id == id)
}

/// Find a system field by its code (`EMAIL`, `PHONE`, `POSITION`…), case-insensitively.
pub fn field_by_code<'a>(
    fields: &'a [CustomFieldValues],
    code: &str,
) -> Option<&'a CustomFieldValues> {
    fields.iter().find(|f| {
        f.field_code
            .as_deref()
            .is_some_and(|c| c.eq_ignore_ascii_case(code))
    })
}

/// All non-empty values of a field, as text.
pub fn texts(field: Option<&CustomFieldValues>) -> Vec<String> {
    field
        .map(|f| f.values.iter().filter_map(FieldValue::text).collect())
        .unwrap_or_default()
}

/// A reference to a linked entity inside `_embedded`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EntityRef {
    pub id: u64,
    /// For a lead's contacts: the main contact.
    #[serde(default)]
    pub is_main: Option<bool>,
}

/// A tag on a lead, contact or company.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tag {
    #[serde(default)]
    pub id: Option<u64>,
    #[serde(default)]
    pub name: String,
}

/// `_embedded` of a lead, contact or company.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Embedded {
    #[serde(default, deserialize_with = "null_as_default")]
    pub contacts: Vec<EntityRef>,
    /// A contact's leads (with `with=leads`).
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub leads: Vec<EntityRef>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub companies: Vec<EntityRef>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub tags: Vec<Tag>,
    /// A lost lead's loss reason (with `with=loss_reason`).
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub loss_reason: Vec<LossReason>,
}

/// A loss reason of the account (`GET /api/v4/leads/loss_reasons`, or a lead's
/// `_embedded.loss_reason`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LossReason {
    pub id: u64,
    #[serde(default)]
    pub name: String,
}

/// A pipeline with its stages (`GET /api/v4/leads/pipelines`); outcome reads list the
/// closing stages pipeline by pipeline.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Pipeline {
    pub id: u64,
    #[serde(default)]
    pub name: String,
    #[serde(default, rename = "_embedded")]
    pub embedded: PipelineEmbedded,
}

/// `_embedded` of a pipeline.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PipelineEmbedded {
    #[serde(default, deserialize_with = "null_as_default")]
    pub statuses: Vec<PipelineStatus>,
}

/// A stage of a pipeline (142 won and 143 lost exist in every pipeline).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PipelineStatus {
    pub id: u64,
    #[serde(default)]
    pub name: String,
}

/// One lead of a `PATCH /api/v4/leads` answer: its modification time after the write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Updated {
    pub id: u64,
    /// Unix seconds.
    #[serde(default)]
    pub updated_at: Option<i64>,
}

/// A lead (`GET /api/v4/leads`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Lead {
    pub id: u64,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub price: Option<f64>,
    #[serde(default)]
    pub responsible_user_id: Option<u64>,
    #[serde(default)]
    pub status_id: Option<u64>,
    #[serde(default)]
    pub pipeline_id: Option<u64>,
    /// Unix seconds.
    #[serde(default)]
    pub created_at: Option<i64>,
    /// Unix seconds.
    #[serde(default)]
    pub updated_at: Option<i64>,
    /// The user who made the last change (0 or absent: the API did not say).
    #[serde(default)]
    pub updated_by: Option<u64>,
    #[serde(default)]
    pub is_deleted: Option<bool>,
    /// Unix seconds; set when the lead reached a closing stage (142 won, 143 lost).
    #[serde(default)]
    pub closed_at: Option<i64>,
    /// Why a lost lead was lost (its name comes with `with=loss_reason`).
    #[serde(default)]
    pub loss_reason_id: Option<u64>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub custom_fields_values: Vec<CustomFieldValues>,
    #[serde(default, rename = "_embedded")]
    pub embedded: Embedded,
}

impl Lead {
    /// The main contact's id (or the first linked contact's).
    pub fn main_contact_id(&self) -> Option<u64> {
        let contacts = &self.embedded.contacts;
        contacts
            .iter()
            .find(|c| c.is_main == Some(true))
            .or_else(|| contacts.first())
            .map(|c| c.id)
    }

    /// The first linked company's id.
    pub fn company_id(&self) -> Option<u64> {
        self.embedded.companies.first().map(|c| c.id)
    }
}

/// A contact (`GET /api/v4/contacts`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Contact {
    pub id: u64,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub first_name: Option<String>,
    #[serde(default)]
    pub last_name: Option<String>,
    #[serde(default)]
    pub responsible_user_id: Option<u64>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub custom_fields_values: Vec<CustomFieldValues>,
    #[serde(default, rename = "_embedded")]
    pub embedded: Embedded,
}

impl Contact {
    /// Job title (system field `POSITION`).
    pub fn position(&self) -> Option<String> {
        texts(field_by_code(&self.custom_fields_values, "POSITION"))
            .into_iter()
            .next()
    }

    /// All e-mail addresses (system field `EMAIL`).
    pub fn emails(&self) -> Vec<String> {
        texts(field_by_code(&self.custom_fields_values, "EMAIL"))
    }

    /// All phone numbers (system field `PHONE`).
    pub fn phones(&self) -> Vec<String> {
        texts(field_by_code(&self.custom_fields_values, "PHONE"))
    }
}

/// A company (`GET /api/v4/companies`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Company {
    pub id: u64,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub custom_fields_values: Vec<CustomFieldValues>,
}

/// An entry of the activity feed (`GET /api/v4/events`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Event ids are strings (`"01g…"`) in API v4; numbers are accepted too.
    #[serde(default, deserialize_with = "id_as_string")]
    pub id: String,
    #[serde(default, rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub entity_id: Option<u64>,
    #[serde(default)]
    pub entity_type: Option<String>,
    #[serde(default)]
    pub created_by: Option<u64>,
    /// Unix seconds.
    #[serde(default)]
    pub created_at: Option<i64>,
    #[serde(default)]
    pub value_after: Value,
    #[serde(default)]
    pub value_before: Value,
}

impl Event {
    /// The first `url` string anywhere in `value_after` (link_followed and similar
    /// events nest it differently by event type).
    pub fn url(&self) -> Option<String> {
        fn find(v: &Value) -> Option<String> {
            match v {
                Value::Object(m) => {
                    if let Some(Value::String(s)) = m.get("url") {
                        return Some(s.clone());
                    }
                    m.values().find_map(find)
                }
                Value::Array(a) => a.iter().find_map(find),
                _ => None,
            }
        }
        find(&self.value_after)
    }
}

impl Event {
    /// The note an `*_note_added` event refers to (`value_after[0].note.id`).
    pub fn note_id(&self) -> Option<u64> {
        self.value_after
            .pointer("/0/note/id")
            .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()))
    }
}

fn id_as_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => s,
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    })
}

/// A note (`GET /api/v4/leads/notes`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Note {
    pub id: u64,
    #[serde(default)]
    pub entity_id: Option<u64>,
    /// `common`, `call_in`, `call_out`, `service_message`…
    #[serde(default)]
    pub note_type: String,
    #[serde(default)]
    pub params: Value,
    #[serde(default)]
    pub created_by: Option<u64>,
    /// Unix seconds.
    #[serde(default)]
    pub created_at: Option<i64>,
}

impl Note {
    /// `params.text` (the body of a common note).
    pub fn text(&self) -> Option<&str> {
        self.params.get("text").and_then(Value::as_str)
    }
}

/// A task (`GET /api/v4/tasks`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub id: u64,
    #[serde(default)]
    pub entity_id: Option<u64>,
    #[serde(default)]
    pub entity_type: Option<String>,
    #[serde(default)]
    pub text: String,
    #[serde(default)]
    pub is_completed: bool,
    #[serde(default)]
    pub complete_till: Option<i64>,
    #[serde(default)]
    pub task_type_id: Option<u64>,
    #[serde(default)]
    pub responsible_user_id: Option<u64>,
}

/// A task to create (`POST /api/v4/tasks`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NewTask {
    pub text: String,
    /// Unix seconds.
    pub complete_till: i64,
    pub entity_id: u64,
    /// `leads`.
    pub entity_type: String,
    /// 1 = follow-up («Связаться»), 2 = meeting.
    pub task_type_id: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub responsible_user_id: Option<u64>,
    /// Echoed back by amoCRM: correlates created ids with the request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// A note to add to a lead (`POST /api/v4/leads/notes`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NewNote {
    pub entity_id: u64,
    /// `common`.
    pub note_type: String,
    pub params: Value,
}

impl NewNote {
    /// A plain text note.
    pub fn common(entity_id: u64, text: &str) -> NewNote {
        NewNote {
            entity_id,
            note_type: "common".into(),
            params: serde_json::json!({ "text": text }),
        }
    }
}

/// One value to write into a custom field.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldWrite {
    /// Numeric field: `{"value": 87}`.
    Number(f64),
    /// Text or textarea field: `{"value": "…"}`.
    Text(String),
    /// Select field: `{"enum_id": 333}`.
    Enum(u64),
}

/// Custom field values to write on one lead (`PATCH /api/v4/leads` item).
#[derive(Debug, Clone, PartialEq)]
pub struct LeadUpdate {
    pub id: u64,
    /// (field id, value).
    pub fields: Vec<(u64, FieldWrite)>,
}

impl LeadUpdate {
    /// The JSON object amoCRM expects for this lead.
    pub fn to_json(&self) -> Value {
        let cfv: Vec<Value> = self
            .fields
            .iter()
            .map(|(field_id, w)| {
                let v = match w {
                    FieldWrite::Number(n) if n.fract() == 0.0 && n.abs() < 1e15 => {
                        serde_json::json!({ "value": *n as i64 })
                    }
                    FieldWrite::Number(n) => serde_json::json!({ "value": n }),
                    FieldWrite::Text(s) => serde_json::json!({ "value": s }),
                    FieldWrite::Enum(id) => serde_json::json!({ "enum_id": id }),
                };
                serde_json::json!({ "field_id": field_id, "values": [v] })
            })
            .collect();
        serde_json::json!({ "id": self.id, "custom_fields_values": cfv })
    }
}

/// An item of a select field.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FieldEnum {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    pub value: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sort: Option<i64>,
}

/// A custom field definition (`GET/POST /api/v4/leads/custom_fields`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CustomField {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    pub name: String,
    /// `numeric`, `select`, `textarea`, `text`…
    #[serde(rename = "type")]
    pub field_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sort: Option<i64>,
    /// Only the API may change the value: reps cannot edit the score by hand.
    #[serde(default)]
    pub is_api_only: bool,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub enums: Vec<FieldEnum>,
}

/// A HAL list page: `{"_page":…, "_links":{"next":…}, "_embedded":{"<key>":[…]}}`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Page {
    #[serde(default, rename = "_links")]
    pub links: Links,
    #[serde(default, rename = "_embedded")]
    pub embedded: serde_json::Map<String, Value>,
}

/// `_links` of a page.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Links {
    #[serde(default)]
    pub next: Option<Link>,
}

/// One HAL link.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Link {
    #[serde(default)]
    pub href: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lead_with_nulls_and_embedded_contacts() {
        let j = r#"{"id":123,"name":"Deal","price":50000,"responsible_user_id":9,"status_id":456,
            "pipeline_id":789,"created_at":1609459200,"updated_at":1609459300,"closed_at":null,
            "custom_fields_values":null,"score":null,"account_id":1,
            "_embedded":{"tags":[],"contacts":[{"id":5,"is_main":false},{"id":6,"is_main":true}],
            "companies":[{"id":77}]}}"#;
        let lead: Lead = serde_json::from_str(j).unwrap();
        assert_eq!(lead.main_contact_id(), Some(6));
        assert_eq!(lead.company_id(), Some(77));
        assert!(lead.custom_fields_values.is_empty());
    }

    #[test]
    fn contact_system_fields_by_code() {
        let j = r#"{"id":6,"name":"Иван","custom_fields_values":[
            {"field_id":1,"field_name":"Должность","field_code":"POSITION","field_type":"text","values":[{"value":"Генеральный директор"}]},
            {"field_id":2,"field_name":"Email","field_code":"EMAIL","field_type":"multitext","values":[{"value":"ivan@corp.ru","enum_id":11,"enum_code":"WORK"},{"value":"ivan@gmail.com","enum_id":12,"enum_code":"PRIV"}]},
            {"field_id":3,"field_name":"Телефон","field_code":"PHONE","field_type":"multitext","values":[{"value":"+7 900 000-00-00","enum_id":13,"enum_code":"MOB"}]}]}"#;
        let c: Contact = serde_json::from_str(j).unwrap();
        assert_eq!(c.position().as_deref(), Some("Генеральный директор"));
        assert_eq!(c.emails(), vec!["ivan@corp.ru", "ivan@gmail.com"]);
        assert_eq!(c.phones(), vec!["+7 900 000-00-00"]);
    }

    #[test]
    fn lead_update_json_shapes() {
        let u = LeadUpdate {
            id: 123,
            fields: vec![
                (111, FieldWrite::Number(87.0)),
                (222, FieldWrite::Enum(333)),
                (444, FieldWrite::Text("why".into())),
            ],
        };
        assert_eq!(
            u.to_json(),
            serde_json::json!({"id":123,"custom_fields_values":[
                {"field_id":111,"values":[{"value":87}]},
                {"field_id":222,"values":[{"enum_id":333}]},
                {"field_id":444,"values":[{"value":"why"}]}]})
        );
    }

    #[test]
    fn event_ids_and_urls() {
        let e: Event = serde_json::from_str(
            r#"{"id":"01abc","type":"link_followed","entity_id":5,"entity_type":"lead","created_at":1,
               "value_after":[{"link":{"url":"https://site.ru/pricing"}}],"value_before":[]}"#,
        )
        .unwrap();
        assert_eq!(e.url().as_deref(), Some("https://site.ru/pricing"));
        let e: Event = serde_json::from_str(r#"{"id":42,"type":"incoming_call"}"#).unwrap();
        assert_eq!(e.id, "42");
        assert_eq!(e.url(), None);
    }

    #[test]
    fn created_select_field_response() {
        // Verbatim 201 response from the Kommo errors page (crm notes §4.1).
        let j = r#"{"id":1016236,"name":"Client Type","type":"select","account_id":34389139,"code":null,"sort":500,"is_api_only":false,"enums":[{"id":867968,"value":"New","sort":500},{"id":867970,"value":"Regular","sort":500},{"id":867972,"value":"VIP","sort":500}],"group_id":null,"required_statuses":[],"is_deletable":true,"is_predefined":false,"entity_type":"leads","tracking_callback":null,"remind":null,"triggers":[],"currency":null,"hidden_statuses":[],"chained_lists":null,"_links":{"self":{"href":"https://subdomain.kommo.com/api/v4/leads/custom_fields/1016236"}}}"#;
        let f: CustomField = serde_json::from_str(j).unwrap();
        assert_eq!(f.id, Some(1016236));
        assert_eq!(f.enums.len(), 3);
        assert_eq!(f.enums[2].id, Some(867972));
    }
}

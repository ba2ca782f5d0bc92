//! Response shapes of the Bitrix24 methods the daemon uses, parsed leniently.
//!
//! Bitrix24 is a PHP application and its JSON shows it: numbers arrive as strings
//! (`"ID":"123"`, everything in `crm.activity.list`), empty maps arrive as `[]`, a map
//! with sequential keys arrives as a list, error codes may be `""`, and `time` fields
//! change type between versions. Every type here accepts all of those so a harmless
//! quirk never turns into a failed lead.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use serde::de::{self, Deserializer};
use serde::Deserialize;
use serde_json::Value;

/// Text from a string, number or bool; `null` and `""` become `None`.
pub fn value_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if s.is_empty() => None,
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(if *b { "Y" } else { "N" }.to_string()),
        _ => None,
    }
}

/// A number from a JSON number or a numeric string (`"12.50"`, `" 7 "`).
pub fn value_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().replace(' ', "").replace(',', ".").parse().ok(),
        _ => None,
    }
}

/// An integer from a JSON number or a numeric string.
pub fn value_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Parse Bitrix24's date-times: RFC 3339 (`2024-05-23T18:18:25+02:00`), or a bare
/// `YYYY-MM-DD HH:MM:SS` / `YYYY-MM-DDTHH:MM:SS` taken as UTC, or Unix seconds.
pub fn parse_datetime(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(d) = DateTime::parse_from_rfc3339(s) {
        return Some(d.with_timezone(&Utc));
    }
    for fmt in ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S"] {
        if let Ok(n) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(Utc.from_utc_datetime(&n));
        }
    }
    s.parse::<f64>()
        .ok()
        .and_then(|secs| DateTime::from_timestamp_millis((secs * 1000.0) as i64))
}

fn de_opt_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(value_text(&Value::deserialize(d)?))
}

fn de_opt_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    Ok(value_f64(&Value::deserialize(d)?))
}

fn de_opt_time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Number(n) => n
            .as_f64()
            .and_then(|s| DateTime::from_timestamp_millis((s * 1000.0) as i64)),
        Value::String(s) => parse_datetime(&s),
        _ => None,
    })
}

fn de_id<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    value_text(&Value::deserialize(d)?).ok_or_else(|| de::Error::custom("missing id"))
}

/// A list that PHP may have sent as `false`, `null` or `{}` when empty.
fn de_list<'de, D: Deserializer<'de>, T: serde::de::DeserializeOwned>(
    d: D,
) -> Result<Vec<T>, D::Error> {
    match Value::deserialize(d)? {
        Value::Array(items) => items
            .into_iter()
            .map(|v| serde_json::from_value(v).map_err(de::Error::custom))
            .collect(),
        Value::Object(m) => m
            .into_iter()
            .map(|(_, v)| serde_json::from_value(v).map_err(de::Error::custom))
            .collect(),
        _ => Ok(Vec::new()),
    }
}

/// The `time` object every answer carries. `operating` is the method's accumulated
/// execution time in the portal's window; `operating_reset_at` is when it resets
/// (a Unix timestamp in current portals, an ISO string in some older ones).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Time {
    #[serde(default, deserialize_with = "de_opt_f64")]
    pub start: Option<f64>,
    #[serde(default, deserialize_with = "de_opt_f64")]
    pub finish: Option<f64>,
    #[serde(default, deserialize_with = "de_opt_f64")]
    pub duration: Option<f64>,
    #[serde(default, deserialize_with = "de_opt_f64")]
    pub processing: Option<f64>,
    #[serde(default, deserialize_with = "de_opt_f64")]
    pub operating: Option<f64>,
    #[serde(default, deserialize_with = "de_opt_time")]
    pub operating_reset_at: Option<DateTime<Utc>>,
}

impl Time {
    /// Parse leniently from any JSON value (missing or odd → defaults).
    pub fn from_value(v: &Value) -> Time {
        serde_json::from_value(v.clone()).unwrap_or_default()
    }
}

/// A map PHP may have serialised as a JSON list (sequential keys, or empty: `[]`).
/// List entries get their index as key.
#[derive(Debug, Clone, PartialEq)]
pub struct PhpMap<T>(pub BTreeMap<String, T>);

impl<T> Default for PhpMap<T> {
    fn default() -> Self {
        PhpMap(BTreeMap::new())
    }
}

impl<'de, T: serde::de::DeserializeOwned> Deserialize<'de> for PhpMap<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = match Value::deserialize(d)? {
            Value::Object(m) => m
                .into_iter()
                .map(|(k, v)| Ok((k, serde_json::from_value(v).map_err(de::Error::custom)?)))
                .collect::<Result<_, D::Error>>()?,
            Value::Array(items) => items
                .into_iter()
                .enumerate()
                .map(|(i, v)| {
                    Ok((
                        i.to_string(),
                        serde_json::from_value(v).map_err(de::Error::custom)?,
                    ))
                })
                .collect::<Result<_, D::Error>>()?,
            Value::Null | Value::Bool(false) => BTreeMap::new(),
            other => {
                return Err(de::Error::custom(format!(
                    "expected map or list, got {other}"
                )))
            }
        };
        Ok(PhpMap(map))
    }
}

/// `{"error": "...", "error_description": "..."}`; the code may be `""`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ApiErrorBody {
    #[serde(default, deserialize_with = "de_opt_text")]
    pub error: Option<String>,
    #[serde(default, deserialize_with = "de_opt_text")]
    pub error_description: Option<String>,
}

/// The `result` of `batch`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct BatchResult {
    pub result: PhpMap<Value>,
    pub result_error: PhpMap<ApiErrorBody>,
    pub result_total: PhpMap<Value>,
    pub result_next: PhpMap<Value>,
    pub result_time: PhpMap<Time>,
}

/// One e-mail or phone of a lead (`crm.lead.list` with `select: ["EMAIL","PHONE"]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct MultiField {
    #[serde(rename = "VALUE", default, deserialize_with = "de_opt_text")]
    pub value: Option<String>,
    #[serde(rename = "VALUE_TYPE", default, deserialize_with = "de_opt_text")]
    pub value_type: Option<String>,
}

/// A lead as `crm.lead.list` / `crm.lead.get` return it: UPPER_CASE keys, scalars as
/// strings, user fields under their original `UF_CRM_*` names (kept in `extra`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct LeadRecord {
    #[serde(rename = "ID", deserialize_with = "de_id")]
    pub id: String,
    #[serde(rename = "TITLE", default, deserialize_with = "de_opt_text")]
    pub title: Option<String>,
    #[serde(rename = "NAME", default, deserialize_with = "de_opt_text")]
    pub name: Option<String>,
    #[serde(rename = "LAST_NAME", default, deserialize_with = "de_opt_text")]
    pub last_name: Option<String>,
    #[serde(rename = "POST", default, deserialize_with = "de_opt_text")]
    pub post: Option<String>,
    #[serde(rename = "COMPANY_TITLE", default, deserialize_with = "de_opt_text")]
    pub company_title: Option<String>,
    #[serde(rename = "ASSIGNED_BY_ID", default, deserialize_with = "de_opt_text")]
    pub assigned_by_id: Option<String>,
    #[serde(rename = "SOURCE_ID", default, deserialize_with = "de_opt_text")]
    pub source_id: Option<String>,
    #[serde(rename = "STATUS_ID", default, deserialize_with = "de_opt_text")]
    pub status_id: Option<String>,
    #[serde(rename = "DATE_CREATE", default, deserialize_with = "de_opt_time")]
    pub date_create: Option<DateTime<Utc>>,
    #[serde(rename = "DATE_MODIFY", default, deserialize_with = "de_opt_time")]
    pub date_modify: Option<DateTime<Utc>>,
    #[serde(rename = "EMAIL", default, deserialize_with = "de_list")]
    pub email: Vec<MultiField>,
    #[serde(rename = "PHONE", default, deserialize_with = "de_list")]
    pub phone: Vec<MultiField>,
    /// Every other field, notably `UF_CRM_*`.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl LeadRecord {
    /// A field by its Bitrix24 name, as text (`UF_CRM_*` or any standard field kept in
    /// `extra`; arrays of a multiple field are joined with ", ").
    pub fn field_text(&self, name: &str) -> Option<String> {
        match self.extra.get(name)? {
            Value::Array(items) => {
                let parts: Vec<String> = items.iter().filter_map(value_text).collect();
                (!parts.is_empty()).then(|| parts.join(", "))
            }
            v => value_text(v),
        }
    }
}

/// A `crm.item.*` item: camelCase keys, typed values (numbers may still be strings on
/// older portals). Only what the daemon reads is named; the rest is in `extra`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Item {
    #[serde(deserialize_with = "de_id")]
    pub id: String,
    #[serde(default, deserialize_with = "de_opt_text")]
    pub title: Option<String>,
    #[serde(default, deserialize_with = "de_opt_text")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "de_opt_text")]
    pub last_name: Option<String>,
    #[serde(default, deserialize_with = "de_opt_text")]
    pub post: Option<String>,
    #[serde(default, deserialize_with = "de_opt_text")]
    pub company_title: Option<String>,
    #[serde(default, deserialize_with = "de_opt_text")]
    pub assigned_by_id: Option<String>,
    #[serde(default, deserialize_with = "de_opt_text")]
    pub source_id: Option<String>,
    #[serde(default, deserialize_with = "de_opt_text")]
    pub stage_id: Option<String>,
    #[serde(default, deserialize_with = "de_opt_time")]
    pub created_time: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "de_opt_time")]
    pub updated_time: Option<DateTime<Utc>>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// A CRM activity as `crm.activity.list` / `.get` return it (every value a string).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ActivityRecord {
    #[serde(rename = "ID", deserialize_with = "de_id")]
    pub id: String,
    #[serde(rename = "OWNER_ID", default, deserialize_with = "de_opt_text")]
    pub owner_id: Option<String>,
    #[serde(rename = "OWNER_TYPE_ID", default, deserialize_with = "de_opt_text")]
    pub owner_type_id: Option<String>,
    #[serde(rename = "TYPE_ID", default, deserialize_with = "de_opt_text")]
    pub type_id: Option<String>,
    #[serde(rename = "PROVIDER_ID", default, deserialize_with = "de_opt_text")]
    pub provider_id: Option<String>,
    #[serde(rename = "PROVIDER_TYPE_ID", default, deserialize_with = "de_opt_text")]
    pub provider_type_id: Option<String>,
    #[serde(rename = "SUBJECT", default, deserialize_with = "de_opt_text")]
    pub subject: Option<String>,
    #[serde(rename = "DESCRIPTION", default, deserialize_with = "de_opt_text")]
    pub description: Option<String>,
    #[serde(rename = "DIRECTION", default, deserialize_with = "de_opt_text")]
    pub direction: Option<String>,
    #[serde(rename = "COMPLETED", default, deserialize_with = "de_opt_text")]
    pub completed: Option<String>,
    #[serde(rename = "START_TIME", default, deserialize_with = "de_opt_time")]
    pub start_time: Option<DateTime<Utc>>,
    #[serde(rename = "CREATED", default, deserialize_with = "de_opt_time")]
    pub created: Option<DateTime<Utc>>,
    #[serde(rename = "RESPONSIBLE_ID", default, deserialize_with = "de_opt_text")]
    pub responsible_id: Option<String>,
}

/// One item of an enumeration user field.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct EnumItem {
    #[serde(rename = "ID", deserialize_with = "de_id")]
    pub id: String,
    #[serde(rename = "VALUE", default, deserialize_with = "de_opt_text")]
    pub value: Option<String>,
    #[serde(rename = "XML_ID", default, deserialize_with = "de_opt_text")]
    pub xml_id: Option<String>,
    #[serde(rename = "SORT", default, deserialize_with = "de_opt_text")]
    pub sort: Option<String>,
    #[serde(rename = "DEF", default, deserialize_with = "de_opt_text")]
    pub def: Option<String>,
}

/// A lead user field (`crm.lead.userfield.list`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct UserField {
    #[serde(rename = "ID", deserialize_with = "de_id")]
    pub id: String,
    #[serde(rename = "FIELD_NAME", deserialize_with = "de_id")]
    pub field_name: String,
    #[serde(rename = "USER_TYPE_ID", default, deserialize_with = "de_opt_text")]
    pub user_type_id: Option<String>,
    #[serde(rename = "XML_ID", default, deserialize_with = "de_opt_text")]
    pub xml_id: Option<String>,
    #[serde(rename = "MULTIPLE", default, deserialize_with = "de_opt_text")]
    pub multiple: Option<String>,
    #[serde(rename = "LIST", default, deserialize_with = "de_list")]
    pub list: Vec<EnumItem>,
}

/// A task (`tasks.task.add` → `result.task`, `tasks.task.list` → `result.tasks[]`);
/// camelCase, values may be strings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskRecord {
    #[serde(deserialize_with = "de_id")]
    pub id: String,
    #[serde(default, deserialize_with = "de_opt_text")]
    pub title: Option<String>,
    #[serde(default, deserialize_with = "de_opt_text")]
    pub description: Option<String>,
    #[serde(default, deserialize_with = "de_opt_text")]
    pub status: Option<String>,
    #[serde(default, deserialize_with = "de_opt_text")]
    pub responsible_id: Option<String>,
}

impl TaskRecord {
    /// Open unless completed (5), "supposedly completed" awaiting the creator's check (4)
    /// or declined (7): in all three the rep is no longer expected to act on it.
    pub fn is_open(&self) -> bool {
        !matches!(self.status.as_deref(), Some("4" | "5" | "7"))
    }
}

/// Page information of a list answer (`next` is absent on the last page; `total` is
/// absent when the call used `start: -1`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PageInfo {
    pub next: Option<u64>,
    pub total: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn time_is_lenient() {
        let t = Time::from_value(
            &json!({"start":1721724354.2,"finish":"1721724354.8","duration":0.59,
            "processing":0.24,"date_start":"2024-07-23T10:45:54+02:00","operating":0,"operating_reset_at":1721725000}),
        );
        assert_eq!(t.operating, Some(0.0));
        assert_eq!(t.finish, Some(1721724354.8));
        assert_eq!(t.operating_reset_at.unwrap().timestamp(), 1721725000);
        let t = Time::from_value(&json!({"operating_reset_at":"2024-07-23T10:45:54+02:00"}));
        assert_eq!(t.operating_reset_at.unwrap().timestamp(), 1721724354);
        assert_eq!(t.operating, None);
        assert_eq!(Time::from_value(&json!([])), Time::default());
    }

    #[test]
    fn batch_result_php_quirks() {
        // fast_bitrix24 real capture: result is [] and result_error is a keyless list.
        let b: BatchResult = serde_json::from_value(json!({"result": [], "result_error":
            [{"error": "", "error_description": "ID is not defined or invalid."}],
            "result_total": [], "result_next": [], "result_time": []}))
        .unwrap();
        assert!(b.result.0.is_empty());
        assert_eq!(b.result_error.0["0"].error, None);
        assert_eq!(
            b.result_error.0["0"].error_description.as_deref(),
            Some("ID is not defined or invalid.")
        );
        let b: BatchResult = serde_json::from_value(json!({"result": {"c0": true, "c1": [{"ID":"1"}]},
            "result_error": {"c2": {"error":"NOT_FOUND","error_description":"Not found"}},
            "result_total": {"c1": 1}, "result_next": [], "result_time": {"c0": {"operating": 1.5}}})).unwrap();
        assert_eq!(b.result.0["c0"], json!(true));
        assert_eq!(b.result_error.0["c2"].error.as_deref(), Some("NOT_FOUND"));
        assert_eq!(b.result_time.0["c0"].operating, Some(1.5));
    }

    #[test]
    fn lead_record_from_docs_shape() {
        let r: LeadRecord = serde_json::from_value(json!({"ID":"123","TITLE":"Lead #1591","STATUS_ID":"IN_PROCESS",
            "SOURCE_ID":"1","OPPORTUNITY":"0.00","ASSIGNED_BY_ID":"1","DATE_CREATE":"2024-05-23T18:18:25+02:00",
            "DATE_MODIFY":"","HAS_EMAIL":"N","UTM_SOURCE":null,"UF_CRM_REVENUE":"1 500 000",
            "UF_CRM_TAGS":["a","b"],
            "PHONE":[{"ID":"11658","VALUE_TYPE":"OTHER","VALUE":"+15454777777","TYPE_ID":"PHONE"}]})).unwrap();
        assert_eq!(r.id, "123");
        assert_eq!(r.assigned_by_id.as_deref(), Some("1"));
        assert_eq!(
            r.date_create.unwrap().to_rfc3339(),
            "2024-05-23T16:18:25+00:00"
        );
        assert_eq!(r.date_modify, None);
        assert!(r.email.is_empty());
        assert_eq!(r.phone[0].value.as_deref(), Some("+15454777777"));
        assert_eq!(value_f64(&r.extra["UF_CRM_REVENUE"]), Some(1_500_000.0));
        assert_eq!(r.field_text("UF_CRM_TAGS").as_deref(), Some("a, b"));
        assert_eq!(r.field_text("UTM_SOURCE"), None);
        // Numeric id and numbers instead of strings are accepted too.
        let r: LeadRecord =
            serde_json::from_value(json!({"ID": 5, "ASSIGNED_BY_ID": 7, "EMAIL": false})).unwrap();
        assert_eq!(
            (r.id.as_str(), r.assigned_by_id.as_deref()),
            ("5", Some("7"))
        );
    }

    #[test]
    fn item_activity_userfield_task_shapes() {
        let i: Item = serde_json::from_value(json!({"id":250,"title":"t","stageId":"IN_PROCESS","assignedById":1,
            "opportunity":999.9,"ufCrm_1720019876534":"321","createdTime":"2024-07-23T10:45:54+02:00"})).unwrap();
        assert_eq!(
            (i.id.as_str(), i.assigned_by_id.as_deref()),
            ("250", Some("1"))
        );
        assert_eq!(i.extra["ufCrm_1720019876534"], json!("321"));
        let a: ActivityRecord =
            serde_json::from_value(json!({"ID":"7","OWNER_ID":"102","OWNER_TYPE_ID":"1",
            "TYPE_ID":"2","PROVIDER_ID":"VOXIMPLANT_CALL","PROVIDER_TYPE_ID":"CALL","DIRECTION":"1",
            "START_TIME":"2024-05-23T18:18:25+03:00","COMPLETED":"Y"}))
            .unwrap();
        assert_eq!(a.owner_id.as_deref(), Some("102"));
        assert_eq!(a.start_time.unwrap().timestamp(), 1716477505);
        let u: UserField = serde_json::from_value(json!({"ID":"41","ENTITY_ID":"CRM_LEAD","FIELD_NAME":"UF_CRM_1724077760",
            "USER_TYPE_ID":"enumeration","LIST":[{"ID":"3157","SORT":"10","VALUE":"hot","DEF":"N","XML_ID":"hot"}]})).unwrap();
        assert_eq!(u.list[0].id, "3157");
        let u: UserField = serde_json::from_value(
            json!({"ID":42,"FIELD_NAME":"UF_CRM_X","USER_TYPE_ID":"integer","LIST":false}),
        )
        .unwrap();
        assert!(u.list.is_empty());
        let t: TaskRecord = serde_json::from_value(
            json!({"id":"3711","title":"Call","responsibleId":"1","deadline":null,"status":"2"}),
        )
        .unwrap();
        assert!(t.is_open());
        let t: TaskRecord = serde_json::from_value(json!({"id":3711,"status":5})).unwrap();
        assert!(!t.is_open());
    }

    #[test]
    fn datetimes_in_several_shapes() {
        assert_eq!(
            parse_datetime("2024-05-23 18:18:25").unwrap().timestamp(),
            1716488305
        );
        assert_eq!(
            parse_datetime("1716488305").unwrap().timestamp(),
            1716488305
        );
        assert!(parse_datetime("yesterday").is_none());
    }
}

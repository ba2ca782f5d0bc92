//! The portal's records and how they look on the wire: leads (crm.lead UPPER_CASE strings
//! and crm.item camelCase typed values), activities, lead user fields with enumeration
//! items, tasks and timeline comments. Everything here is synchronous and lives behind
//! one mutex; the HTTP layer and the seed API both go through it, so a change made by a
//! test and a change made by the daemon look the same to the portal (and fire the same
//! events).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, Offset, TimeZone, Utc};
use serde_json::{json, Map, Value};

use super::php::{as_f64, as_flag, as_i64, as_list, scalar_string};

/// The portal's time zone: Bitrix24 prints local times with an offset (`+03:00`).
pub(crate) const PORTAL_OFFSET_SECS: i32 = 3 * 3600;

/// Lead owner type id in CRM bindings.
pub(crate) const OWNER_LEAD: u64 = 1;

/// Owner type id of deals.
pub(crate) const OWNER_DEAL: u64 = 2;

/// `ENTITY_ID` of lead user fields.
pub(crate) const ENTITY_LEAD: &str = "CRM_LEAD";

/// `ENTITY_ID` of deal user fields.
pub(crate) const ENTITY_DEAL: &str = "CRM_DEAL";

/// The current time in the portal's zone.
pub(crate) fn now() -> DateTime<FixedOffset> {
    Utc::now().with_timezone(&offset())
}

/// The portal's fixed UTC offset.
pub(crate) fn offset() -> FixedOffset {
    FixedOffset::east_opt(PORTAL_OFFSET_SECS).unwrap_or(Utc.fix())
}

/// Bitrix24's date-time format: `2026-11-20T12:00:00+03:00`.
pub(crate) fn fmt_date(dt: DateTime<FixedOffset>) -> String {
    dt.format("%Y-%m-%dT%H:%M:%S%:z").to_string()
}

/// Accepts the forms clients send: RFC 3339 with offset or `Z`, a naive date-time (portal
/// zone, `T` or space separated) or a bare date.
pub(crate) fn parse_date(raw: &str) -> Option<DateTime<FixedOffset>> {
    let s = raw.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Some(dt.with_timezone(&offset()));
    }
    for pattern in ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M"] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(s, pattern) {
            return offset().from_local_datetime(&naive).single();
        }
    }
    if let Ok(date) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return offset()
            .from_local_datetime(&date.and_hms_opt(0, 0, 0)?)
            .single();
    }
    if let Ok(date) = NaiveDate::parse_from_str(s, "%d.%m.%Y") {
        return offset()
            .from_local_datetime(&date.and_hms_opt(0, 0, 0)?)
            .single();
    }
    None
}

/// How a field's value is typed, for filters, ordering and crm.item output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Str,
    Int,
    Float,
    Date,
    Flag,
}

/// A standard (non-user) lead field: its crm.lead name, its crm.item name, its type, and
/// whether clients may write it.
pub(crate) struct StdField {
    pub upper: &'static str,
    pub camel: &'static str,
    pub kind: Kind,
    pub writable: bool,
}

const fn f(upper: &'static str, camel: &'static str, kind: Kind, writable: bool) -> StdField {
    StdField {
        upper,
        camel,
        kind,
        writable,
    }
}

/// Lead fields as crm.lead.get lists them, mapped to crm.item names.
pub(crate) const LEAD_FIELDS: &[StdField] = &[
    f("ID", "id", Kind::Int, false),
    f("TITLE", "title", Kind::Str, true),
    f("HONORIFIC", "honorific", Kind::Str, true),
    f("NAME", "name", Kind::Str, true),
    f("SECOND_NAME", "secondName", Kind::Str, true),
    f("LAST_NAME", "lastName", Kind::Str, true),
    f("COMPANY_TITLE", "companyTitle", Kind::Str, true),
    f("COMPANY_ID", "companyId", Kind::Int, true),
    f("CONTACT_ID", "contactId", Kind::Int, true),
    f("IS_RETURN_CUSTOMER", "isReturnCustomer", Kind::Flag, true),
    f("BIRTHDATE", "birthdate", Kind::Date, true),
    f("SOURCE_ID", "sourceId", Kind::Str, true),
    f("SOURCE_DESCRIPTION", "sourceDescription", Kind::Str, true),
    f("STATUS_ID", "stageId", Kind::Str, true),
    f("STATUS_DESCRIPTION", "statusDescription", Kind::Str, true),
    f("POST", "post", Kind::Str, true),
    f("COMMENTS", "comments", Kind::Str, true),
    f("CURRENCY_ID", "currencyId", Kind::Str, true),
    f("OPPORTUNITY", "opportunity", Kind::Float, true),
    f(
        "IS_MANUAL_OPPORTUNITY",
        "isManualOpportunity",
        Kind::Flag,
        true,
    ),
    f("HAS_PHONE", "hasPhone", Kind::Flag, false),
    f("HAS_EMAIL", "hasEmail", Kind::Flag, false),
    f("HAS_IMOL", "hasImol", Kind::Flag, false),
    f("ASSIGNED_BY_ID", "assignedById", Kind::Int, true),
    f("CREATED_BY_ID", "createdBy", Kind::Int, false),
    f("MODIFY_BY_ID", "updatedBy", Kind::Int, false),
    f("MOVED_BY_ID", "movedBy", Kind::Int, false),
    f("DATE_CREATE", "createdTime", Kind::Date, false),
    f("DATE_MODIFY", "updatedTime", Kind::Date, false),
    f("MOVED_TIME", "movedTime", Kind::Date, false),
    f("DATE_CLOSED", "dateClosed", Kind::Date, false),
    f("OPENED", "opened", Kind::Flag, true),
    f("STATUS_SEMANTIC_ID", "stageSemanticId", Kind::Str, false),
    f("ORIGINATOR_ID", "originatorId", Kind::Str, true),
    f("ORIGIN_ID", "originId", Kind::Str, true),
    f("ADDRESS", "address", Kind::Str, true),
    f("UTM_SOURCE", "utmSource", Kind::Str, true),
    f("UTM_MEDIUM", "utmMedium", Kind::Str, true),
    f("UTM_CAMPAIGN", "utmCampaign", Kind::Str, true),
    f("UTM_CONTENT", "utmContent", Kind::Str, true),
    f("UTM_TERM", "utmTerm", Kind::Str, true),
    f("LAST_ACTIVITY_TIME", "lastActivityTime", Kind::Date, false),
    f("LAST_ACTIVITY_BY", "lastActivityBy", Kind::Int, false),
];

/// Multi-field types (crm.lead `PHONE: [{ID, VALUE_TYPE, VALUE, TYPE_ID}]`).
pub(crate) const MULTI_TYPES: &[&str] = &["PHONE", "EMAIL", "WEB", "IM"];

/// Looks a standard lead field up by its crm.lead name.
pub(crate) fn lead_field(upper: &str) -> Option<&'static StdField> {
    LEAD_FIELDS.iter().find(|fd| fd.upper == upper)
}

/// Looks a standard lead field up by its crm.item name.
pub(crate) fn lead_field_camel(camel: &str) -> Option<&'static StdField> {
    LEAD_FIELDS.iter().find(|fd| fd.camel == camel)
}

/// `UF_CRM_SCORE` → `ufCrm_SCORE` (crm.item spelling for lead user fields).
pub(crate) fn uf_to_camel(upper: &str) -> String {
    match upper.strip_prefix("UF_CRM_") {
        Some(rest) => format!("ufCrm_{rest}"),
        None => upper.to_owned(),
    }
}

/// `ufCrm_SCORE` → `UF_CRM_SCORE`.
pub(crate) fn uf_from_camel(camel: &str) -> Option<String> {
    camel
        .strip_prefix("ufCrm_")
        .map(|rest| format!("UF_CRM_{rest}"))
}

/// One value of a lead multi-field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MultiValue {
    pub id: u64,
    pub type_id: String,
    pub value_type: String,
    pub value: String,
}

/// A lead as the portal stores it: standard fields as their crm.lead strings.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Lead {
    pub id: u64,
    pub std: BTreeMap<String, Option<String>>,
    pub multi: Vec<MultiValue>,
    pub uf: BTreeMap<String, Value>,
}

/// One item of an enumeration user field.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct EnumItem {
    pub id: u64,
    pub value: String,
    pub sort: i64,
    pub def: bool,
    pub xml_id: String,
}

/// A lead or deal user field (`crm.lead.userfield.*`, `crm.deal.userfield.*`).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct UserField {
    pub id: u64,
    /// `CRM_LEAD` or `CRM_DEAL`: the two entities keep separate field lists, so the
    /// same `FIELD_NAME` may exist on both.
    pub entity: &'static str,
    pub field_name: String,
    pub user_type_id: String,
    pub xml_id: Option<String>,
    pub sort: i64,
    pub multiple: bool,
    pub mandatory: bool,
    pub show_filter: String,
    pub settings: Value,
    pub labels: Map<String, Value>,
    pub list: Vec<EnumItem>,
}

/// A CRM activity; fields kept as crm.activity.get strings.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Activity {
    pub id: u64,
    pub fields: BTreeMap<String, Option<String>>,
    pub bindings: Vec<(u64, u64)>,
    pub communications: Value,
}

/// Activity fields and their types (filters compare numbers as numbers, dates as dates).
pub(crate) const ACTIVITY_FIELDS: &[(&str, Kind)] = &[
    ("ID", Kind::Int),
    ("OWNER_ID", Kind::Int),
    ("OWNER_TYPE_ID", Kind::Int),
    ("TYPE_ID", Kind::Int),
    ("PROVIDER_ID", Kind::Str),
    ("PROVIDER_TYPE_ID", Kind::Str),
    ("PROVIDER_GROUP_ID", Kind::Str),
    ("ASSOCIATED_ENTITY_ID", Kind::Int),
    ("SUBJECT", Kind::Str),
    ("CREATED", Kind::Date),
    ("LAST_UPDATED", Kind::Date),
    ("START_TIME", Kind::Date),
    ("END_TIME", Kind::Date),
    ("DEADLINE", Kind::Date),
    ("COMPLETED", Kind::Flag),
    ("STATUS", Kind::Int),
    ("RESPONSIBLE_ID", Kind::Int),
    ("PRIORITY", Kind::Int),
    ("NOTIFY_TYPE", Kind::Int),
    ("NOTIFY_VALUE", Kind::Int),
    ("DESCRIPTION", Kind::Str),
    ("DESCRIPTION_TYPE", Kind::Int),
    ("DIRECTION", Kind::Int),
    ("LOCATION", Kind::Str),
    ("ORIGINATOR_ID", Kind::Str),
    ("ORIGIN_ID", Kind::Str),
    ("AUTHOR_ID", Kind::Int),
    ("EDITOR_ID", Kind::Int),
];

/// Activity fields a client may not set.
const ACTIVITY_READONLY: &[&str] = &["ID", "CREATED", "LAST_UPDATED", "AUTHOR_ID", "EDITOR_ID"];

/// Looks an activity field's type up.
pub(crate) fn activity_kind(name: &str) -> Option<Kind> {
    ACTIVITY_FIELDS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, k)| *k)
}

/// A task (`tasks.task.*`).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Task {
    pub id: u64,
    pub title: String,
    pub description: String,
    pub responsible_id: u64,
    pub created_by: u64,
    pub deadline: Option<String>,
    pub priority: i64,
    pub status: i64,
    pub uf_crm_task: Vec<String>,
    pub created_date: String,
    pub changed_date: String,
    pub closed_date: Option<String>,
}

/// Task fields in filter/select spelling → crm type.
pub(crate) const TASK_FIELDS: &[(&str, &str, Kind)] = &[
    ("ID", "id", Kind::Int),
    ("TITLE", "title", Kind::Str),
    ("DESCRIPTION", "description", Kind::Str),
    ("RESPONSIBLE_ID", "responsibleId", Kind::Int),
    ("CREATED_BY", "createdBy", Kind::Int),
    ("DEADLINE", "deadline", Kind::Date),
    ("PRIORITY", "priority", Kind::Int),
    ("STATUS", "status", Kind::Int),
    ("REAL_STATUS", "status", Kind::Int),
    ("CREATED_DATE", "createdDate", Kind::Date),
    ("CHANGED_DATE", "changedDate", Kind::Date),
    ("CLOSED_DATE", "closedDate", Kind::Date),
    ("UF_CRM_TASK", "ufCrmTask", Kind::Str),
];

/// Task status: pending.
pub(crate) const TASK_PENDING: i64 = 2;
/// Task status: completed.
pub(crate) const TASK_COMPLETED: i64 = 5;

/// A timeline comment (`crm.timeline.comment.add`).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Comment {
    pub id: u64,
    pub entity_id: u64,
    pub entity_type: String,
    pub comment: String,
    pub author_id: u64,
    pub created: String,
}

/// An error a method returns: HTTP status, `error`, `error_description`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub status: u16,
    pub code: String,
    pub description: String,
}

impl ApiError {
    pub(crate) fn new(status: u16, code: &str, description: impl Into<String>) -> Self {
        Self {
            status,
            code: code.to_owned(),
            description: description.into(),
        }
    }

    /// The body shape every Bitrix24 error shares.
    pub(crate) fn body(&self) -> Value {
        json!({"error": self.code, "error_description": self.description})
    }
}

/// Something that happened to a record, for outgoing webhooks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Fired {
    pub event: &'static str,
    pub id: u64,
}

/// Who makes a change: the REST caller (read-only fields protected) or the test harness
/// (may set `DATE_CREATE`/`DATE_MODIFY` to age records).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Actor {
    Rest { user_id: u64 },
    Seed,
}

impl Actor {
    pub(crate) fn user_id(self) -> u64 {
        match self {
            Actor::Rest { user_id } => user_id,
            Actor::Seed => 1,
        }
    }
}

/// All portal state.
#[derive(Debug)]
pub(crate) struct State {
    pub leads: BTreeMap<u64, Lead>,
    pub activities: BTreeMap<u64, Activity>,
    /// Activity ids by the id of every entity they are bound to (owner included), so
    /// that per-lead activity lists do not scan the whole portal.
    pub activities_by_entity: BTreeMap<u64, BTreeSet<u64>>,
    pub userfields: Vec<UserField>,
    pub tasks: BTreeMap<u64, Task>,
    pub comments: Vec<Comment>,
    /// Deals (bound to leads by `LEAD_ID`), for outcome reads.
    pub deals: super::deals::Deals,
    /// Whether tasks bound to a lead also create a task activity on it, as the portal does.
    pub task_activities: bool,
    /// The portal's CRM mode is "simple" (`crm.settings.mode.get` = 2): no leads.
    pub simple_mode: bool,
    next_lead: u64,
    next_activity: u64,
    next_multi: u64,
    next_userfield: u64,
    next_enum: u64,
    next_task: u64,
    next_comment: u64,
}

impl State {
    /// An empty portal.
    pub(crate) fn new(task_activities: bool) -> Self {
        Self {
            leads: BTreeMap::new(),
            activities: BTreeMap::new(),
            activities_by_entity: BTreeMap::new(),
            userfields: Vec::new(),
            tasks: BTreeMap::new(),
            comments: Vec::new(),
            deals: super::deals::Deals::default(),
            task_activities,
            simple_mode: false,
            next_lead: 1,
            next_activity: 1,
            next_multi: 1001,
            next_userfield: 201,
            next_enum: 3101,
            next_task: 501,
            next_comment: 9001,
        }
    }

    /// The user field definition for `UF_CRM_*`, if it exists.
    pub(crate) fn userfield(&self, name: &str) -> Option<&UserField> {
        self.entity_userfield(ENTITY_LEAD, name)
    }

    /// The user field `name` of `entity` (`CRM_LEAD` or `CRM_DEAL`), if it exists.
    pub(crate) fn entity_userfield(&self, entity: &str, name: &str) -> Option<&UserField> {
        self.userfields
            .iter()
            .find(|u| u.entity == entity && u.field_name == name)
    }

    // ---------------------------------------------------------------- leads

    /// Creates a lead from crm.lead-shaped fields.
    pub(crate) fn add_lead(
        &mut self,
        fields: &Map<String, Value>,
        actor: Actor,
        fired: &mut Vec<Fired>,
    ) -> Result<u64, ApiError> {
        let id = self.next_lead;
        let stamp = fmt_date(now());
        let user = actor.user_id().to_string();
        let mut std = BTreeMap::new();
        for fd in LEAD_FIELDS {
            std.insert(fd.upper.to_owned(), None);
        }
        let defaults = [
            ("ID", id.to_string()),
            ("STATUS_ID", "NEW".to_owned()),
            ("STATUS_SEMANTIC_ID", "P".to_owned()),
            ("OPENED", "Y".to_owned()),
            ("CURRENCY_ID", "USD".to_owned()),
            ("OPPORTUNITY", "0.00".to_owned()),
            ("IS_MANUAL_OPPORTUNITY", "N".to_owned()),
            ("IS_RETURN_CUSTOMER", "N".to_owned()),
            ("HAS_PHONE", "N".to_owned()),
            ("HAS_EMAIL", "N".to_owned()),
            ("HAS_IMOL", "N".to_owned()),
            ("ASSIGNED_BY_ID", user.clone()),
            ("CREATED_BY_ID", user.clone()),
            ("MODIFY_BY_ID", user.clone()),
            ("MOVED_BY_ID", user),
            ("DATE_CREATE", stamp.clone()),
            ("DATE_MODIFY", stamp.clone()),
            ("MOVED_TIME", stamp),
        ];
        for (k, v) in defaults {
            std.insert(k.to_owned(), Some(v));
        }
        let mut lead = Lead {
            id,
            std,
            multi: Vec::new(),
            uf: BTreeMap::new(),
        };
        for uf in &self.userfields {
            lead.uf.insert(uf.field_name.clone(), Value::Null);
        }
        self.apply_lead_fields(&mut lead, fields, actor)?;
        if lead.std.get("TITLE").cloned().flatten().is_none() {
            lead.std.insert("TITLE".into(), Some(format!("Lead #{id}")));
        }
        self.next_lead += 1;
        self.leads.insert(id, lead);
        fired.push(Fired {
            event: "ONCRMLEADADD",
            id,
        });
        Ok(id)
    }

    /// Applies a partial update; returns whether anything actually changed. An update that
    /// changes nothing is not saved and fires nothing, as crm.item.update documents.
    pub(crate) fn update_lead(
        &mut self,
        id: u64,
        fields: &Map<String, Value>,
        actor: Actor,
        fired: &mut Vec<Fired>,
    ) -> Result<bool, ApiError> {
        let Some(current) = self.leads.get(&id).cloned() else {
            return Err(ApiError::new(400, "", "Not found"));
        };
        let mut next = current.clone();
        self.apply_lead_fields(&mut next, fields, actor)?;
        let mut changed = next.clone();
        let mut before = current.clone();
        for probe in [&mut changed, &mut before] {
            probe.std.remove("DATE_MODIFY");
            probe.std.remove("MODIFY_BY_ID");
        }
        let explicit_modify = actor == Actor::Seed && fields.contains_key("DATE_MODIFY");
        if changed == before && !explicit_modify {
            return Ok(false);
        }
        if !explicit_modify {
            next.std.insert("DATE_MODIFY".into(), Some(fmt_date(now())));
        }
        next.std
            .insert("MODIFY_BY_ID".into(), Some(actor.user_id().to_string()));
        self.leads.insert(id, next);
        fired.push(Fired {
            event: "ONCRMLEADUPDATE",
            id,
        });
        Ok(true)
    }

    /// Deletes a lead and its activities' bindings to it.
    pub(crate) fn delete_lead(&mut self, id: u64, fired: &mut Vec<Fired>) -> Result<(), ApiError> {
        if self.leads.remove(&id).is_none() {
            return Err(ApiError::new(400, "", "Not found"));
        }
        fired.push(Fired {
            event: "ONCRMLEADDELETE",
            id,
        });
        Ok(())
    }

    fn apply_lead_fields(
        &mut self,
        lead: &mut Lead,
        fields: &Map<String, Value>,
        actor: Actor,
    ) -> Result<(), ApiError> {
        for (key, value) in fields {
            let key_upper = key.to_ascii_uppercase();
            if MULTI_TYPES.contains(&key_upper.as_str()) {
                self.merge_multi(lead, &key_upper, value);
                continue;
            }
            if key_upper.starts_with("UF_") {
                self.apply_uf(lead, key, value, actor);
                continue;
            }
            let Some(fd) = lead_field(&key_upper) else {
                continue; // unknown fields are silently ignored, as the portal does
            };
            let seed_date = actor == Actor::Seed
                && matches!(fd.upper, "DATE_CREATE" | "DATE_MODIFY" | "CREATED_BY_ID");
            if !fd.writable && !seed_date {
                continue;
            }
            let normalized = normalize(fd.kind, value);
            if fd.upper == "STATUS_ID" {
                let semantic = match normalized.as_deref() {
                    Some("CONVERTED") => "S",
                    Some("JUNK") => "F",
                    _ => "P",
                };
                lead.std
                    .insert("STATUS_SEMANTIC_ID".into(), Some(semantic.to_owned()));
            }
            lead.std.insert(fd.upper.to_owned(), normalized);
        }
        let has = |t: &str| lead.multi.iter().any(|m| m.type_id == t);
        let has_phone = if has("PHONE") { "Y" } else { "N" };
        let has_email = if has("EMAIL") { "Y" } else { "N" };
        lead.std.insert("HAS_PHONE".into(), Some(has_phone.into()));
        lead.std.insert("HAS_EMAIL".into(), Some(has_email.into()));
        Ok(())
    }

    /// crm.lead multi-field semantics: entries without `ID` are added, entries with `ID`
    /// replace that value, and an `ID` with an empty `VALUE` (or `DELETE: Y`) removes it.
    fn merge_multi(&mut self, lead: &mut Lead, type_id: &str, value: &Value) {
        for entry in as_list(value) {
            let Value::Object(entry) = entry else {
                continue;
            };
            let get = |names: &[&str]| {
                names
                    .iter()
                    .find_map(|n| entry.get(*n))
                    .and_then(scalar_string)
            };
            let text = get(&["VALUE", "value"]).unwrap_or_default();
            let value_type = get(&["VALUE_TYPE", "valueType"]).unwrap_or_else(|| "WORK".into());
            let delete = get(&["DELETE"]).is_some_and(|d| d == "Y");
            let existing = entry
                .get("ID")
                .or_else(|| entry.get("id"))
                .and_then(as_i64)
                .and_then(|id| u64::try_from(id).ok());
            match existing {
                Some(mid) => {
                    if delete || text.is_empty() {
                        lead.multi.retain(|m| m.id != mid);
                    } else if let Some(slot) = lead.multi.iter_mut().find(|m| m.id == mid) {
                        slot.value = text;
                        slot.value_type = value_type;
                    }
                }
                None if !text.is_empty() => {
                    // Like the portal: a value without ID is always a new entry, even
                    // if the same value is already there.
                    lead.multi.push(MultiValue {
                        id: self.next_multi,
                        type_id: type_id.to_owned(),
                        value_type,
                        value: text,
                    });
                    self.next_multi += 1;
                }
                None => {}
            }
        }
    }

    /// Writes a user-field value. Through REST an undefined field is ignored (the portal
    /// ignores unknown fields) and an enumeration value must be one of the item ids; the
    /// seed API may store anything.
    fn apply_uf(&self, lead: &mut Lead, key: &str, value: &Value, actor: Actor) {
        let name = uf_from_camel(key).unwrap_or_else(|| key.to_ascii_uppercase());
        match self.userfield(&name) {
            Some(def) => {
                let normalized = if def.multiple {
                    let items: Vec<Value> = as_list(value)
                        .iter()
                        .filter_map(|v| normalize_uf(def, v))
                        .collect();
                    Some(Value::Array(items))
                } else if value.is_null() || value == &Value::String(String::new()) {
                    Some(Value::Null)
                } else {
                    normalize_uf(def, value)
                };
                if let Some(v) = normalized {
                    lead.uf.insert(name, v);
                }
            }
            None if actor == Actor::Seed => {
                lead.uf.insert(name, value.clone());
            }
            None => {}
        }
    }

    /// crm.lead shape: every scalar a string, multi-fields as lists, user fields by their
    /// original names. `select` (already expanded) limits the keys; `None` means all.
    pub(crate) fn lead_upper(
        &self,
        lead: &Lead,
        select: Option<&LeadSelect>,
    ) -> Map<String, Value> {
        let mut out = Map::new();
        for fd in LEAD_FIELDS {
            if select.is_none_or(|s| s.wants_std(fd.upper)) {
                let v = lead.std.get(fd.upper).cloned().flatten();
                out.insert(fd.upper.to_owned(), v.map_or(Value::Null, Value::String));
            }
        }
        for (name, v) in &lead.uf {
            if select.is_none_or(|s| s.wants_uf(name)) {
                out.insert(name.clone(), uf_upper_value(v));
            }
        }
        for t in MULTI_TYPES {
            if select.is_none_or(|s| s.multi.iter().any(|m| m == t)) {
                let items: Vec<Value> = lead
                    .multi
                    .iter()
                    .filter(|m| m.type_id == *t)
                    .map(|m| {
                        json!({"ID": m.id.to_string(), "VALUE_TYPE": m.value_type,
                               "VALUE": m.value, "TYPE_ID": m.type_id})
                    })
                    .collect();
                if !items.is_empty() {
                    out.insert((*t).to_owned(), Value::Array(items));
                }
            }
        }
        out
    }

    /// crm.item shape: camelCase keys, typed values, `fm` plus `email`/`phone` aliases,
    /// user fields as `ufCrm_*` unless `original_uf` (useOriginalUfNames=Y).
    pub(crate) fn lead_camel(
        &self,
        lead: &Lead,
        original_uf: bool,
        select: Option<&LeadSelect>,
    ) -> Map<String, Value> {
        let mut out = Map::new();
        for fd in LEAD_FIELDS {
            if select.is_none_or(|s| s.wants_std(fd.upper)) {
                let v = lead.std.get(fd.upper).cloned().flatten();
                out.insert(fd.camel.to_owned(), typed(fd.kind, v));
            }
        }
        let want_multi = select.is_none_or(|s| !s.multi.is_empty());
        if want_multi {
            let first = |t: &str| {
                lead.multi
                    .iter()
                    .find(|m| m.type_id == t)
                    .map_or(Value::String(String::new()), |m| {
                        Value::String(m.value.clone())
                    })
            };
            out.insert("email".into(), first("EMAIL"));
            out.insert("phone".into(), first("PHONE"));
            let fm: Vec<Value> = lead
                .multi
                .iter()
                .map(|m| {
                    json!({"id": m.id, "valueType": m.value_type, "value": m.value, "typeId": m.type_id})
                })
                .collect();
            out.insert("fm".into(), Value::Array(fm));
        }
        for (name, v) in &lead.uf {
            if select.is_none_or(|s| s.wants_uf(name)) {
                let key = if original_uf {
                    name.clone()
                } else {
                    uf_to_camel(name)
                };
                out.insert(key, self.uf_typed_value(name, v));
            }
        }
        if select.is_none() {
            out.insert("observers".into(), Value::Array(Vec::new()));
            out.insert("contactIds".into(), Value::Array(Vec::new()));
            out.insert("entityTypeId".into(), json!(1));
        }
        out
    }

    fn uf_typed_value(&self, name: &str, v: &Value) -> Value {
        let kind = self.userfield(name).map(|d| d.user_type_id.as_str());
        let one = |x: &Value| -> Value {
            let Some(s) = scalar_string(x) else {
                return x.clone();
            };
            match kind {
                Some("integer" | "enumeration" | "employee") => {
                    s.parse::<i64>().map_or(Value::String(s), |n| json!(n))
                }
                Some("double") => s.parse::<f64>().map_or(Value::String(s), |n| json!(n)),
                Some("boolean") => Value::String(if s == "1" { "Y".into() } else { "N".into() }),
                _ => Value::String(s),
            }
        };
        match v {
            Value::Array(items) => Value::Array(items.iter().map(one).collect()),
            other => one(other),
        }
    }

    /// A lead field's values for filtering: its type and its values (several for
    /// multi-fields). `None` for a field the portal does not know.
    pub(crate) fn lead_values(&self, lead: &Lead, field: &str) -> Option<(Kind, Vec<String>)> {
        if let Some(fd) = lead_field(field) {
            let v = lead.std.get(fd.upper).cloned().flatten();
            return Some((fd.kind, v.into_iter().collect()));
        }
        if MULTI_TYPES.contains(&field) {
            let vals = lead
                .multi
                .iter()
                .filter(|m| m.type_id == field)
                .map(|m| m.value.clone())
                .collect();
            return Some((Kind::Str, vals));
        }
        if field.starts_with("UF_") {
            let def = self.userfield(field);
            if def.is_none() && !lead.uf.contains_key(field) {
                return None;
            }
            let kind = match def.map(|d| d.user_type_id.as_str()) {
                Some("integer" | "enumeration" | "employee") => Kind::Int,
                Some("double") => Kind::Float,
                Some("datetime" | "date") => Kind::Date,
                _ => Kind::Str,
            };
            let vals = match lead.uf.get(field) {
                Some(Value::Array(items)) => items.iter().filter_map(scalar_string).collect(),
                Some(v) => scalar_string(v).into_iter().collect(),
                None => Vec::new(),
            };
            return Some((kind, vals));
        }
        None
    }

    // ---------------------------------------------------------------- user fields

    /// crm.lead.userfield.add: `FIELD_NAME` always gets the `UF_CRM_` prefix; enumeration
    /// items get ids.
    pub(crate) fn add_userfield(
        &mut self,
        fields: &Map<String, Value>,
        fired: &mut Vec<Fired>,
    ) -> Result<u64, ApiError> {
        self.add_entity_userfield(ENTITY_LEAD, fields, fired)
    }

    /// crm.lead.userfield.add or crm.deal.userfield.add, by `entity`.
    pub(crate) fn add_entity_userfield(
        &mut self,
        entity: &'static str,
        fields: &Map<String, Value>,
        fired: &mut Vec<Fired>,
    ) -> Result<u64, ApiError> {
        let raw_name = fields
            .get("FIELD_NAME")
            .and_then(scalar_string)
            .unwrap_or_default();
        let code = raw_name
            .strip_prefix("UF_CRM_")
            .or_else(|| raw_name.strip_prefix("UF_"))
            .unwrap_or(&raw_name)
            .to_owned();
        let name = format!("UF_CRM_{code}");
        if code.is_empty()
            || name.len() > 50
            || !code
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(ApiError::new(
                400,
                "ERROR_CORE",
                "Invalid field name: only A-Z, 0-9 and _ are allowed, 50 characters at most",
            ));
        }
        if self.entity_userfield(entity, &name).is_some() {
            return Err(ApiError::new(
                400,
                "ERROR_CORE",
                format!("Field {name} already exists"),
            ));
        }
        let user_type_id = fields
            .get("USER_TYPE_ID")
            .and_then(scalar_string)
            .unwrap_or_default();
        const TYPES: &[&str] = &[
            "string",
            "integer",
            "double",
            "boolean",
            "datetime",
            "date",
            "money",
            "url",
            "address",
            "enumeration",
            "file",
            "employee",
            "crm_status",
            "iblock_section",
            "iblock_element",
            "crm",
        ];
        if !TYPES.contains(&user_type_id.as_str()) {
            return Err(ApiError::new(
                400,
                "ERROR_CORE",
                "Invalid user field type (USER_TYPE_ID)",
            ));
        }
        let mut labels = Map::new();
        for key in [
            "LABEL",
            "EDIT_FORM_LABEL",
            "LIST_COLUMN_LABEL",
            "LIST_FILTER_LABEL",
        ] {
            if let Some(v) = fields.get(key) {
                labels.insert(key.to_owned(), v.clone());
            }
        }
        let mut list = Vec::new();
        if user_type_id == "enumeration" {
            for (i, item) in fields
                .get("LIST")
                .map(as_list)
                .unwrap_or_default()
                .iter()
                .enumerate()
            {
                let Value::Object(item) = item else { continue };
                let value = item
                    .get("VALUE")
                    .and_then(scalar_string)
                    .unwrap_or_default();
                if value.is_empty() {
                    continue;
                }
                let id = self.next_enum;
                self.next_enum += 1;
                list.push(EnumItem {
                    id,
                    value,
                    sort: item
                        .get("SORT")
                        .and_then(as_i64)
                        .unwrap_or(((i as i64) + 1) * 10),
                    def: item.get("DEF").is_some_and(as_flag),
                    xml_id: item
                        .get("XML_ID")
                        .and_then(scalar_string)
                        .unwrap_or_else(|| format!("{id:x}")),
                });
            }
        }
        let id = self.next_userfield;
        self.next_userfield += 1;
        self.userfields.push(UserField {
            id,
            entity,
            field_name: name.clone(),
            user_type_id,
            xml_id: fields.get("XML_ID").and_then(scalar_string),
            sort: fields.get("SORT").and_then(as_i64).unwrap_or(100),
            multiple: fields.get("MULTIPLE").is_some_and(as_flag),
            mandatory: fields.get("MANDATORY").is_some_and(as_flag),
            show_filter: fields
                .get("SHOW_FILTER")
                .and_then(scalar_string)
                .unwrap_or_else(|| "N".into()),
            settings: fields.get("SETTINGS").cloned().unwrap_or_else(|| json!({})),
            labels,
            list,
        });
        if entity == ENTITY_LEAD {
            for lead in self.leads.values_mut() {
                lead.uf.entry(name.clone()).or_insert(Value::Null);
            }
        }
        fired.push(Fired {
            event: if entity == ENTITY_LEAD {
                "ONCRMLEADUSERFIELDADD"
            } else {
                "ONCRMDEALUSERFIELDADD"
            },
            id,
        });
        Ok(id)
    }

    /// crm.lead.userfield.list/get item shape.
    pub(crate) fn userfield_json(uf: &UserField) -> Map<String, Value> {
        let mut out = Map::new();
        out.insert("ID".into(), json!(uf.id.to_string()));
        out.insert("ENTITY_ID".into(), json!(uf.entity));
        out.insert("FIELD_NAME".into(), json!(uf.field_name));
        out.insert("USER_TYPE_ID".into(), json!(uf.user_type_id));
        out.insert(
            "XML_ID".into(),
            uf.xml_id.clone().map_or(Value::Null, Value::String),
        );
        out.insert("SORT".into(), json!(uf.sort.to_string()));
        out.insert("MULTIPLE".into(), json!(yn(uf.multiple)));
        out.insert("MANDATORY".into(), json!(yn(uf.mandatory)));
        out.insert("SHOW_FILTER".into(), json!(uf.show_filter));
        out.insert("SHOW_IN_LIST".into(), json!("Y"));
        out.insert("EDIT_IN_LIST".into(), json!("Y"));
        out.insert("IS_SEARCHABLE".into(), json!("N"));
        out.insert("SETTINGS".into(), uf.settings.clone());
        for (k, v) in &uf.labels {
            out.insert(k.clone(), v.clone());
        }
        if uf.user_type_id == "enumeration" {
            let items: Vec<Value> = uf
                .list
                .iter()
                .map(|e| {
                    json!({"ID": e.id.to_string(), "SORT": e.sort.to_string(), "VALUE": e.value,
                           "DEF": yn(e.def), "XML_ID": e.xml_id})
                })
                .collect();
            out.insert("LIST".into(), Value::Array(items));
        }
        out
    }

    // ---------------------------------------------------------------- activities

    /// crm.activity.add: requires an owner (which must exist when it is a lead) and a type.
    pub(crate) fn add_activity(
        &mut self,
        fields: &Map<String, Value>,
        actor: Actor,
        fired: &mut Vec<Fired>,
    ) -> Result<u64, ApiError> {
        let owner_type = fields.get("OWNER_TYPE_ID").and_then(as_i64);
        let owner_id = fields.get("OWNER_ID").and_then(as_i64);
        let bindings_given: Vec<(u64, u64)> = fields
            .get("BINDINGS")
            .map(as_list)
            .unwrap_or_default()
            .iter()
            .filter_map(|b| {
                let t = b.get("OWNER_TYPE_ID").and_then(as_i64)?;
                let i = b.get("OWNER_ID").and_then(as_i64)?;
                Some((u64::try_from(t).ok()?, u64::try_from(i).ok()?))
            })
            .collect();
        let (owner_type, owner_id) = match (owner_type, owner_id) {
            (Some(t), Some(i)) if t > 0 && i > 0 => (t as u64, i as u64),
            _ => match bindings_given.first() {
                Some(first) => *first,
                None => {
                    return Err(ApiError::new(
                        400,
                        "",
                        "OWNER_ID is not defined or invalid.",
                    ))
                }
            },
        };
        if (owner_type == OWNER_LEAD && !self.leads.contains_key(&owner_id))
            || (owner_type == OWNER_DEAL && !self.deals.rows.contains_key(&owner_id))
        {
            return Err(ApiError::new(400, "", "Owner was not found"));
        }
        let type_id = fields.get("TYPE_ID").and_then(as_i64).unwrap_or(0);
        if !(1..=6).contains(&type_id) {
            return Err(ApiError::new(400, "", "TYPE_ID is not defined or invalid."));
        }
        let id = self.next_activity;
        self.next_activity += 1;
        let stamp = fmt_date(now());
        let user = actor.user_id().to_string();
        let (provider, provider_type) = match type_id {
            1 => ("CRM_MEETING", "MEETING"),
            2 => ("VOXIMPLANT_CALL", "CALL"),
            3 => ("TASKS_TASK", "TASK"),
            4 => ("CRM_EMAIL", "EMAIL"),
            5 => ("CRM_EXTERNAL_CALENDAR", "CALENDAR"),
            _ => ("REST_APP", "REST"),
        };
        let mut acts = BTreeMap::new();
        for (name, _) in ACTIVITY_FIELDS {
            acts.insert((*name).to_owned(), None);
        }
        let defaults = [
            ("ID", id.to_string()),
            ("OWNER_ID", owner_id.to_string()),
            ("OWNER_TYPE_ID", owner_type.to_string()),
            ("TYPE_ID", type_id.to_string()),
            ("PROVIDER_ID", provider.to_owned()),
            ("PROVIDER_TYPE_ID", provider_type.to_owned()),
            ("ASSOCIATED_ENTITY_ID", "0".to_owned()),
            ("SUBJECT", String::new()),
            ("CREATED", stamp.clone()),
            ("LAST_UPDATED", stamp.clone()),
            ("START_TIME", stamp.clone()),
            ("END_TIME", stamp),
            ("COMPLETED", "N".to_owned()),
            ("STATUS", "1".to_owned()),
            ("RESPONSIBLE_ID", user.clone()),
            ("PRIORITY", "2".to_owned()),
            ("NOTIFY_TYPE", "0".to_owned()),
            ("DESCRIPTION", String::new()),
            ("DESCRIPTION_TYPE", "1".to_owned()),
            ("DIRECTION", "0".to_owned()),
            ("AUTHOR_ID", user.clone()),
            ("EDITOR_ID", user),
        ];
        for (k, v) in defaults {
            acts.insert(k.to_owned(), Some(v));
        }
        let mut activity = Activity {
            id,
            fields: acts,
            bindings: Vec::new(),
            communications: fields
                .get("COMMUNICATIONS")
                .map_or(Value::Array(Vec::new()), |c| Value::Array(as_list(c))),
        };
        apply_activity_fields(&mut activity, fields, actor);
        activity
            .fields
            .insert("OWNER_ID".into(), Some(owner_id.to_string()));
        activity
            .fields
            .insert("OWNER_TYPE_ID".into(), Some(owner_type.to_string()));
        let mut bindings = vec![(owner_type, owner_id)];
        for b in bindings_given {
            if !bindings.contains(&b) {
                bindings.push(b);
            }
        }
        activity.bindings = bindings;
        for (_, entity) in &activity.bindings {
            self.activities_by_entity
                .entry(*entity)
                .or_default()
                .insert(id);
        }
        self.activities.insert(id, activity);
        fired.push(Fired {
            event: "ONCRMACTIVITYADD",
            id,
        });
        Ok(id)
    }

    /// crm.activity.update: saves and fires only on a real change.
    pub(crate) fn update_activity(
        &mut self,
        id: u64,
        fields: &Map<String, Value>,
        actor: Actor,
        fired: &mut Vec<Fired>,
    ) -> Result<bool, ApiError> {
        let Some(current) = self.activities.get(&id) else {
            return Err(ApiError::new(400, "", "Not found"));
        };
        let mut next = current.clone();
        apply_activity_fields(&mut next, fields, actor);
        if &next == current {
            return Ok(false);
        }
        next.fields
            .insert("LAST_UPDATED".into(), Some(fmt_date(now())));
        next.fields
            .insert("EDITOR_ID".into(), Some(actor.user_id().to_string()));
        self.activities.insert(id, next);
        fired.push(Fired {
            event: "ONCRMACTIVITYUPDATE",
            id,
        });
        Ok(true)
    }

    /// crm.activity.delete.
    pub(crate) fn delete_activity(
        &mut self,
        id: u64,
        fired: &mut Vec<Fired>,
    ) -> Result<(), ApiError> {
        let Some(removed) = self.activities.remove(&id) else {
            return Err(ApiError::new(400, "", "Not found"));
        };
        for (_, entity) in &removed.bindings {
            if let Some(set) = self.activities_by_entity.get_mut(entity) {
                set.remove(&id);
            }
        }
        fired.push(Fired {
            event: "ONCRMACTIVITYDELETE",
            id,
        });
        Ok(())
    }

    /// crm.activity.get/list item shape; `COMMUNICATIONS` and `BINDINGS` only on request.
    pub(crate) fn activity_json(a: &Activity, select: &[String]) -> Map<String, Value> {
        let all = select.is_empty() || select.iter().any(|s| s == "*");
        let mut out = Map::new();
        for (name, _) in ACTIVITY_FIELDS {
            if all || select.iter().any(|s| s == name) || *name == "ID" {
                let v = a.fields.get(*name).cloned().flatten();
                out.insert((*name).to_owned(), v.map_or(Value::Null, Value::String));
            }
        }
        if all {
            out.insert("SETTINGS".into(), Value::Array(Vec::new()));
        }
        if select.iter().any(|s| s == "COMMUNICATIONS") {
            out.insert("COMMUNICATIONS".into(), a.communications.clone());
        }
        if select.iter().any(|s| s == "BINDINGS") {
            let b: Vec<Value> = a
                .bindings
                .iter()
                .map(|(t, i)| json!({"OWNER_TYPE_ID": t.to_string(), "OWNER_ID": i.to_string()}))
                .collect();
            out.insert("BINDINGS".into(), Value::Array(b));
        }
        out
    }

    // ---------------------------------------------------------------- tasks

    /// tasks.task.add; a task bound to a lead (`UF_CRM_TASK: ["L_5"]`) also puts a task
    /// activity on that lead's timeline, which fires ONCRMACTIVITYADD.
    pub(crate) fn add_task(
        &mut self,
        fields: &Map<String, Value>,
        actor: Actor,
        fired: &mut Vec<Fired>,
    ) -> Result<u64, ApiError> {
        let title = fields
            .get("TITLE")
            .and_then(scalar_string)
            .unwrap_or_default();
        if title.trim().is_empty() {
            return Err(ApiError::new(
                400,
                "ERROR_CORE",
                "Task title is not specified<br>",
            ));
        }
        let responsible = fields
            .get("RESPONSIBLE_ID")
            .and_then(as_i64)
            .filter(|r| *r > 0)
            .ok_or_else(|| {
                ApiError::new(400, "ERROR_CORE", "Responsible person not specified<br>")
            })?;
        let deadline = match fields.get("DEADLINE").and_then(scalar_string) {
            Some(raw) if !raw.is_empty() => Some(fmt_date(parse_date(&raw).ok_or_else(|| {
                ApiError::new(400, "ERROR_CORE", "Wrong deadline date format<br>")
            })?)),
            _ => None,
        };
        let stamp = fmt_date(now());
        let id = self.next_task;
        self.next_task += 1;
        let task = Task {
            id,
            title: title.clone(),
            description: fields
                .get("DESCRIPTION")
                .and_then(scalar_string)
                .unwrap_or_default(),
            responsible_id: responsible as u64,
            created_by: fields
                .get("CREATED_BY")
                .and_then(as_i64)
                .map_or(actor.user_id(), |c| c as u64),
            deadline: deadline.clone(),
            priority: fields.get("PRIORITY").and_then(as_i64).unwrap_or(1),
            status: TASK_PENDING,
            uf_crm_task: fields
                .get("UF_CRM_TASK")
                .map(as_list)
                .unwrap_or_default()
                .iter()
                .filter_map(scalar_string)
                .collect(),
            created_date: stamp.clone(),
            changed_date: stamp,
            closed_date: None,
        };
        // Bindings `L_<id>` and `D_<id>`: the task shows on each bound lead's or
        // deal's timeline as a task activity.
        let owners: Vec<(u64, u64)> = task
            .uf_crm_task
            .iter()
            .filter_map(|b| {
                let (t, n) = match b.split_once('_')? {
                    ("L", n) => (OWNER_LEAD, n),
                    ("D", n) => (OWNER_DEAL, n),
                    _ => return None,
                };
                Some((t, n.parse().ok()?))
            })
            .filter(|(t, i)| match *t {
                OWNER_LEAD => self.leads.contains_key(i),
                _ => self.deals.rows.contains_key(i),
            })
            .collect();
        self.tasks.insert(id, task);
        fired.push(Fired {
            event: "ONTASKADD",
            id,
        });
        if self.task_activities {
            for (owner_type, owner) in owners {
                let mut af = Map::new();
                af.insert("OWNER_TYPE_ID".into(), json!(owner_type));
                af.insert("OWNER_ID".into(), json!(owner));
                af.insert("TYPE_ID".into(), json!(3));
                af.insert("SUBJECT".into(), json!(title));
                af.insert("ASSOCIATED_ENTITY_ID".into(), json!(id));
                af.insert("RESPONSIBLE_ID".into(), json!(responsible));
                if let Some(d) = &deadline {
                    af.insert("DEADLINE".into(), json!(d));
                    af.insert("END_TIME".into(), json!(d));
                }
                self.add_activity(&af, actor, fired)?;
            }
        }
        Ok(id)
    }

    /// tasks.task.update / tasks.task.complete.
    pub(crate) fn update_task(
        &mut self,
        id: u64,
        fields: &Map<String, Value>,
        actor: Actor,
        fired: &mut Vec<Fired>,
    ) -> Result<(), ApiError> {
        let Some(task) = self.tasks.get_mut(&id) else {
            return Err(task_not_found());
        };
        let before = task.clone();
        if let Some(t) = fields.get("TITLE").and_then(scalar_string) {
            task.title = t;
        }
        if let Some(d) = fields.get("DESCRIPTION").and_then(scalar_string) {
            task.description = d;
        }
        if let Some(r) = fields.get("RESPONSIBLE_ID").and_then(as_i64) {
            task.responsible_id = r as u64;
        }
        if let Some(p) = fields.get("PRIORITY").and_then(as_i64) {
            task.priority = p;
        }
        if let Some(d) = fields.get("DEADLINE").and_then(scalar_string) {
            task.deadline = parse_date(&d).map(fmt_date);
        }
        if let Some(s) = fields.get("STATUS").and_then(as_i64) {
            task.status = s;
        }
        if let Some(u) = fields.get("UF_CRM_TASK") {
            task.uf_crm_task = as_list(u).iter().filter_map(scalar_string).collect();
        }
        if task.status == TASK_COMPLETED && task.closed_date.is_none() {
            task.closed_date = Some(fmt_date(now()));
        }
        if *task == before {
            return Ok(());
        }
        task.changed_date = fmt_date(now());
        let completed_now = task.status == TASK_COMPLETED && before.status != TASK_COMPLETED;
        fired.push(Fired {
            event: "ONTASKUPDATE",
            id,
        });
        if completed_now {
            let linked: Vec<u64> = self
                .activities
                .values()
                .filter(|a| {
                    a.fields.get("TYPE_ID").cloned().flatten().as_deref() == Some("3")
                        && a.fields.get("ASSOCIATED_ENTITY_ID").cloned().flatten()
                            == Some(id.to_string())
                })
                .map(|a| a.id)
                .collect();
            let mut done = Map::new();
            done.insert("COMPLETED".into(), json!("Y"));
            done.insert("STATUS".into(), json!(2));
            for aid in linked {
                self.update_activity(aid, &done, actor, fired)?;
            }
        }
        Ok(())
    }

    /// A task field's values for filtering.
    pub(crate) fn task_values(task: &Task, field: &str) -> Option<(Kind, Vec<String>)> {
        let kind = TASK_FIELDS.iter().find(|(u, _, _)| *u == field)?.2;
        let vals = match field {
            "ID" => vec![task.id.to_string()],
            "TITLE" => vec![task.title.clone()],
            "DESCRIPTION" => vec![task.description.clone()],
            "RESPONSIBLE_ID" => vec![task.responsible_id.to_string()],
            "CREATED_BY" => vec![task.created_by.to_string()],
            "DEADLINE" => task.deadline.iter().cloned().collect(),
            "PRIORITY" => vec![task.priority.to_string()],
            "STATUS" | "REAL_STATUS" => vec![task.status.to_string()],
            "CREATED_DATE" => vec![task.created_date.clone()],
            "CHANGED_DATE" => vec![task.changed_date.clone()],
            "CLOSED_DATE" => task.closed_date.iter().cloned().collect(),
            "UF_CRM_TASK" => task.uf_crm_task.clone(),
            _ => return None,
        };
        Some((kind, vals))
    }

    /// tasks.task.* item shape (camelCase, numbers as strings); `ufCrmTask` only when
    /// selected, as the portal does.
    pub(crate) fn task_json(task: &Task, select: &[String]) -> Map<String, Value> {
        let all = select.is_empty() || select.iter().any(|s| s == "*");
        let wants = |upper: &str| all || select.iter().any(|s| s.eq_ignore_ascii_case(upper));
        let mut out = Map::new();
        let opt = |v: &Option<String>| v.clone().map_or(Value::Null, Value::String);
        let entries: [(&str, &str, Value); 12] = [
            ("ID", "id", json!(task.id.to_string())),
            ("TITLE", "title", json!(task.title)),
            ("DESCRIPTION", "description", json!(task.description)),
            (
                "RESPONSIBLE_ID",
                "responsibleId",
                json!(task.responsible_id.to_string()),
            ),
            (
                "CREATED_BY",
                "createdBy",
                json!(task.created_by.to_string()),
            ),
            ("DEADLINE", "deadline", opt(&task.deadline)),
            ("PRIORITY", "priority", json!(task.priority.to_string())),
            ("STATUS", "status", json!(task.status.to_string())),
            ("CREATED_DATE", "createdDate", json!(task.created_date)),
            ("CHANGED_DATE", "changedDate", json!(task.changed_date)),
            ("CLOSED_DATE", "closedDate", opt(&task.closed_date)),
            ("SUB_STATUS", "subStatus", json!(task.status.to_string())),
        ];
        for (upper, camel, v) in entries {
            if wants(upper) || upper == "ID" {
                out.insert(camel.to_owned(), v);
            }
        }
        if select.iter().any(|s| s.eq_ignore_ascii_case("UF_CRM_TASK")) {
            let v: Vec<Value> = task.uf_crm_task.iter().map(|s| json!(s)).collect();
            out.insert("ufCrmTask".into(), Value::Array(v));
        }
        out
    }

    // ---------------------------------------------------------------- comments

    /// crm.timeline.comment.add.
    pub(crate) fn add_comment(
        &mut self,
        fields: &Map<String, Value>,
        actor: Actor,
        fired: &mut Vec<Fired>,
    ) -> Result<u64, ApiError> {
        let missing =
            |n: &str| ApiError::new(400, "100", format!("Required fields not provided: {n}"));
        let entity_id = fields
            .get("ENTITY_ID")
            .and_then(as_i64)
            .filter(|i| *i > 0)
            .ok_or_else(|| missing("ENTITY_ID"))?;
        let entity_type = fields
            .get("ENTITY_TYPE")
            .and_then(scalar_string)
            .map(|s| s.to_ascii_lowercase())
            .ok_or_else(|| missing("ENTITY_TYPE"))?;
        let comment = fields
            .get("COMMENT")
            .and_then(scalar_string)
            .unwrap_or_default();
        if comment.trim().is_empty() {
            return Err(ApiError::new(400, "INVALID_ARG_VALUE", "Empty comment"));
        }
        if entity_type == "lead" && !self.leads.contains_key(&(entity_id as u64)) {
            return Err(ApiError::new(
                400,
                "OWNER_NOT_FOUND",
                "Owner of the element not found",
            ));
        }
        let id = self.next_comment;
        self.next_comment += 1;
        self.comments.push(Comment {
            id,
            entity_id: entity_id as u64,
            entity_type,
            comment,
            author_id: actor.user_id(),
            created: fmt_date(now()),
        });
        fired.push(Fired {
            event: "ONCRMTIMELINECOMMENTADD",
            id,
        });
        Ok(id)
    }
}

fn task_not_found() -> ApiError {
    ApiError::new(400, "ERROR_CORE", "Task not found or not accessible")
}

/// The error tasks.task.get returns for an unknown task.
pub(crate) fn missing_task() -> ApiError {
    task_not_found()
}

fn apply_activity_fields(a: &mut Activity, fields: &Map<String, Value>, actor: Actor) {
    for (key, value) in fields {
        let key = key.to_ascii_uppercase();
        let Some(kind) = activity_kind(&key) else {
            continue;
        };
        if ACTIVITY_READONLY.contains(&key.as_str()) && !(actor == Actor::Seed && key == "CREATED")
        {
            continue;
        }
        if matches!(key.as_str(), "OWNER_ID" | "OWNER_TYPE_ID") {
            // Set once on add from the checked owner; an existing activity keeps its owner.
            continue;
        }
        a.fields.insert(key, normalize(kind, value));
    }
}

fn yn(b: bool) -> &'static str {
    if b {
        "Y"
    } else {
        "N"
    }
}

/// Normalises a written value into the crm.lead string form for its type. Values that do
/// not parse are kept as the client sent them (the portal is lenient too).
pub(crate) fn normalize(kind: Kind, value: &Value) -> Option<String> {
    let s = scalar_string(value)?;
    if s.is_empty() {
        return match kind {
            Kind::Str => Some(s),
            _ => None,
        };
    }
    Some(match kind {
        Kind::Str => s,
        Kind::Int => as_i64(value).map_or(s, |n| n.to_string()),
        Kind::Float => as_f64(value).map_or(s, |n| format!("{n:.2}")),
        Kind::Date => parse_date(&s).map_or(s, fmt_date),
        Kind::Flag => yn(as_flag(value)).to_owned(),
    })
}

pub(crate) fn normalize_uf(def: &UserField, value: &Value) -> Option<Value> {
    let s = scalar_string(value)?;
    match def.user_type_id.as_str() {
        "integer" | "employee" => as_i64(value).map(|n| Value::String(n.to_string())),
        "double" => as_f64(value).map(|n| Value::String(n.to_string())),
        "boolean" => Some(Value::String(if as_flag(value) { "1" } else { "0" }.into())),
        "enumeration" => {
            let id = as_i64(value)?;
            def.list
                .iter()
                .any(|e| e.id as i64 == id)
                .then(|| Value::String(id.to_string()))
        }
        "datetime" | "date" => Some(Value::String(parse_date(&s).map_or(s, fmt_date))),
        _ => Some(Value::String(s)),
    }
}

pub(crate) fn uf_upper_value(v: &Value) -> Value {
    match v {
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|x| scalar_string(x).map_or(Value::Null, Value::String))
                .collect(),
        ),
        other => scalar_string(other).map_or(Value::Null, Value::String),
    }
}

/// crm.item typing of a crm.lead string.
fn typed(kind: Kind, v: Option<String>) -> Value {
    let Some(s) = v else { return Value::Null };
    match kind {
        Kind::Int => s.parse::<i64>().map_or(Value::String(s), |n| json!(n)),
        Kind::Float => s.parse::<f64>().map_or(Value::String(s), |n| json!(n)),
        _ => Value::String(s),
    }
}

/// An expanded lead `select`: which standard fields, whether all user fields or some,
/// and which multi-field types.
#[derive(Clone, Debug, Default)]
pub(crate) struct LeadSelect {
    pub std: Vec<String>,
    pub all_std: bool,
    pub all_uf: bool,
    pub uf: Vec<String>,
    pub multi: Vec<String>,
}

impl LeadSelect {
    fn wants_std(&self, upper: &str) -> bool {
        upper == "ID" || self.all_std || self.std.iter().any(|s| s == upper)
    }

    fn wants_uf(&self, name: &str) -> bool {
        self.all_uf || self.uf.iter().any(|s| s == name)
    }
}

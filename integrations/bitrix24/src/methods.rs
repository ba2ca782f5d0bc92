//! Typed helpers over [`Client::call`] for the methods the daemon uses, and the decoding
//! of their answers (PHP's list/map quirks, id answers, `result: true`). Kept apart from
//! the client's transport, pacing and retry logic.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::client::Client;
use crate::error::Error;
use crate::types::{value_text, ActivityRecord, Item, LeadRecord, PageInfo, TaskRecord, UserField};

impl Client {
    /// `crm.lead.list`: one page (50) of leads. Pass `start: -1` style paging via
    /// `start` (`None` = -1, no total count).
    pub async fn lead_list(
        &self,
        filter: Value,
        select: &[&str],
        order: Value,
        start: Option<u64>,
    ) -> Result<(Vec<LeadRecord>, PageInfo), Error> {
        let start = start.map_or(json!(-1), |s| json!(s));
        let resp = self
            .call(
                "crm.lead.list",
                json!({"filter": filter, "select": select, "order": order, "start": start}),
            )
            .await?;
        Ok((decode_list("crm.lead.list", &resp.result)?, resp.page))
    }

    /// `crm.lead.update` without a live-feed event (no notification spam for reps).
    pub async fn lead_update(&self, id: &str, fields: Value) -> Result<(), Error> {
        let resp = self
            .call("crm.lead.update", lead_update_params(id, fields))
            .await?;
        expect_true("crm.lead.update", &resp.result)
    }

    /// `crm.item.get` (camelCase item).
    pub async fn item_get(&self, entity_type_id: u32, id: &str) -> Result<Item, Error> {
        let resp = self
            .call(
                "crm.item.get",
                json!({"entityTypeId": entity_type_id, "id": id}),
            )
            .await?;
        decode(
            "crm.item.get",
            resp.result.get("item").unwrap_or(&Value::Null),
        )
    }

    /// `crm.item.list`: one page of items.
    pub async fn item_list(
        &self,
        entity_type_id: u32,
        select: &[&str],
        filter: Value,
        order: Value,
        start: Option<u64>,
    ) -> Result<(Vec<Item>, PageInfo), Error> {
        let start = start.map_or(json!(-1), |s| json!(s));
        let resp = self
            .call(
                "crm.item.list",
                json!({"entityTypeId": entity_type_id, "select": select, "filter": filter, "order": order, "start": start}),
            )
            .await?;
        let items = resp
            .result
            .get("items")
            .cloned()
            .unwrap_or(Value::Array(Vec::new()));
        Ok((decode_list("crm.item.list", &items)?, resp.page))
    }

    /// `crm.item.update`; returns the updated item.
    pub async fn item_update(
        &self,
        entity_type_id: u32,
        id: &str,
        fields: Value,
    ) -> Result<Item, Error> {
        let resp = self
            .call(
                "crm.item.update",
                json!({"entityTypeId": entity_type_id, "id": id, "fields": fields}),
            )
            .await?;
        decode(
            "crm.item.update",
            resp.result.get("item").unwrap_or(&Value::Null),
        )
    }

    /// `crm.activity.list`: one page.
    pub async fn activity_list(
        &self,
        filter: Value,
        select: &[&str],
        order: Value,
        start: Option<u64>,
    ) -> Result<(Vec<ActivityRecord>, PageInfo), Error> {
        let start = start.map_or(json!(-1), |s| json!(s));
        let resp = self
            .call(
                "crm.activity.list",
                json!({"filter": filter, "select": select, "order": order, "start": start}),
            )
            .await?;
        Ok((decode_list("crm.activity.list", &resp.result)?, resp.page))
    }

    /// `crm.activity.get`.
    pub async fn activity_get(&self, id: &str) -> Result<ActivityRecord, Error> {
        let resp = self.call("crm.activity.get", json!({"id": id})).await?;
        decode("crm.activity.get", &resp.result)
    }

    /// `crm.timeline.comment.add` on an entity (`"lead"`); returns the comment id.
    pub async fn timeline_comment_add(
        &self,
        entity_type: &str,
        entity_id: &str,
        comment: &str,
    ) -> Result<String, Error> {
        let resp = self
            .call(
                "crm.timeline.comment.add",
                comment_params(entity_type, entity_id, comment),
            )
            .await?;
        id_of("crm.timeline.comment.add", &resp.result)
    }

    /// `tasks.task.add`; `fields` as documented (`TITLE`, `RESPONSIBLE_ID`,
    /// `UF_CRM_TASK`, …). See [`task_fields`].
    pub async fn task_add(&self, fields: Value) -> Result<TaskRecord, Error> {
        let resp = self
            .call("tasks.task.add", json!({ "fields": fields }))
            .await?;
        decode(
            "tasks.task.add",
            resp.result.get("task").unwrap_or(&Value::Null),
        )
    }

    /// `tasks.task.list` (first page) with a filter and select (camel- or upper-case).
    pub async fn task_list(
        &self,
        filter: Value,
        select: &[&str],
    ) -> Result<Vec<TaskRecord>, Error> {
        let resp = self
            .call(
                "tasks.task.list",
                json!({"filter": filter, "select": select}),
            )
            .await?;
        let tasks = resp
            .result
            .get("tasks")
            .cloned()
            .unwrap_or(Value::Array(Vec::new()));
        decode_list("tasks.task.list", &tasks)
    }

    /// `crm.activity.todo.add`; returns the to-do's activity id.
    pub async fn todo_add(&self, params: Value) -> Result<String, Error> {
        let resp = self.call("crm.activity.todo.add", params).await?;
        id_of("crm.activity.todo.add", &resp.result)
    }

    /// `crm.lead.userfield.list`.
    pub async fn lead_userfield_list(&self, filter: Value) -> Result<Vec<UserField>, Error> {
        self.userfield_list("crm.lead", filter).await
    }

    /// `crm.lead.userfield.add`; returns the new field's id.
    pub async fn lead_userfield_add(&self, fields: Value) -> Result<String, Error> {
        self.userfield_add("crm.lead", fields).await
    }

    /// `crm.lead.userfield.update` (used to add missing enumeration items).
    pub async fn lead_userfield_update(&self, id: &str, fields: Value) -> Result<(), Error> {
        self.userfield_update("crm.lead", id, fields).await
    }

    /// `<family>.userfield.list`, `family` being `crm.lead` or `crm.deal` (the two
    /// entities keep separate user fields).
    pub async fn userfield_list(
        &self,
        family: &str,
        filter: Value,
    ) -> Result<Vec<UserField>, Error> {
        let method = format!("{family}.userfield.list");
        let resp = self
            .call(&method, json!({"filter": filter, "order": {"ID": "ASC"}}))
            .await?;
        decode_list(&method, &resp.result)
    }

    /// `<family>.userfield.add`; returns the new field's id.
    pub async fn userfield_add(&self, family: &str, fields: Value) -> Result<String, Error> {
        let method = format!("{family}.userfield.add");
        let resp = self.call(&method, json!({ "fields": fields })).await?;
        id_of(&method, &resp.result)
    }

    /// `<family>.userfield.update` (used to add missing enumeration items).
    pub async fn userfield_update(
        &self,
        family: &str,
        id: &str,
        fields: Value,
    ) -> Result<(), Error> {
        let method = format!("{family}.userfield.update");
        let resp = self
            .call(&method, json!({"id": id, "fields": fields}))
            .await?;
        expect_true(&method, &resp.result)
    }
}

/// Parameters of `crm.lead.update` (also used inside batches).
pub fn lead_update_params(id: &str, fields: Value) -> Value {
    json!({"id": id, "fields": fields, "params": {"REGISTER_SONET_EVENT": "N"}})
}

/// Parameters of `crm.timeline.comment.add` (lowercase `fields`, as required since crm 23.100).
pub fn comment_params(entity_type: &str, entity_id: &str, comment: &str) -> Value {
    json!({"fields": {"ENTITY_ID": entity_id, "ENTITY_TYPE": entity_type, "COMMENT": comment}})
}

/// `tasks.task.add` fields for a high-priority task bound to a lead.
pub fn task_fields(
    lead_id: &str,
    title: &str,
    description: &str,
    responsible_id: Option<&str>,
    deadline: DateTime<Utc>,
) -> Value {
    let mut f = json!({
        "TITLE": title,
        "DESCRIPTION": description,
        "DEADLINE": deadline.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "PRIORITY": 2,
        "UF_CRM_TASK": [format!("L_{lead_id}")],
    });
    if let Some(r) = responsible_id {
        f["RESPONSIBLE_ID"] = json!(r);
    }
    f
}

/// Decode one value into a type, with the method name in the error.
pub fn decode<T: serde::de::DeserializeOwned>(method: &str, v: &Value) -> Result<T, Error> {
    serde_json::from_value(v.clone()).map_err(|e| Error::Decode {
        method: method.into(),
        detail: e.to_string(),
    })
}

/// Decode a list that PHP may have sent as a map or as `[]`/`false`.
pub fn decode_list<T: serde::de::DeserializeOwned>(
    method: &str,
    v: &Value,
) -> Result<Vec<T>, Error> {
    match v {
        Value::Array(items) => items.iter().map(|i| decode(method, i)).collect(),
        Value::Object(m) => m.values().map(|i| decode(method, i)).collect(),
        Value::Null | Value::Bool(false) => Ok(Vec::new()),
        other => Err(Error::Decode {
            method: method.into(),
            detail: format!("expected a list, got {other}"),
        }),
    }
}

/// An id answer: a bare number/string, or `{"id": …}` (to-dos), or `{"ID": …}`.
pub fn id_of(method: &str, v: &Value) -> Result<String, Error> {
    value_text(v)
        .filter(|s| s != "N" && s != "Y")
        .or_else(|| v.get("id").and_then(value_text))
        .or_else(|| v.get("ID").and_then(value_text))
        .ok_or_else(|| Error::Decode {
            method: method.into(),
            detail: "no id in the answer".into(),
        })
}

/// `result: true` answers; `false` means the portal refused without saying why.
pub fn expect_true(method: &str, v: &Value) -> Result<(), Error> {
    match v {
        Value::Bool(true) => Ok(()),
        Value::String(s) if s == "1" || s.eq_ignore_ascii_case("true") => Ok(()),
        Value::Number(n) if n.as_i64() == Some(1) => Ok(()),
        _ => Err(Error::Command {
            code: "UPDATE_REFUSED".into(),
            description: format!("{method} answered {v} instead of true"),
        }),
    }
}

//! HAL+JSON shapes of API v4: records with `_links.self`, `_embedded` relations, and list
//! pages with `_page` and `_links.self|next|first|prev`.

use serde_json::{json, Map, Value};

use super::model::{
    Company, Contact, CustomField, EntityType, Event, FieldValues, Lead, LossReason, Note,
    Pipeline, Task, User,
};
use super::query::Query;
use super::store::State;

/// `{"self": {"href": base + path}}`.
pub(crate) fn links(st: &State, path: &str) -> Value {
    json!({"self": {"href": format!("{}{}", st.base_url, path)}})
}

/// `custom_fields_values`: `null` when the record has none, as amoCRM sends.
pub(crate) fn cfv(st: &State, fields: &[FieldValues]) -> Value {
    if fields.is_empty() {
        return Value::Null;
    }
    Value::Array(
        fields
            .iter()
            .filter_map(|fv| {
                let f = st.fields.get(&fv.field_id)?;
                let values: Vec<Value> = fv
                    .values
                    .iter()
                    .map(|v| {
                        let mut o = Map::new();
                        o.insert("value".into(), v.value.clone());
                        if let Some(e) = v.enum_id {
                            o.insert("enum_id".into(), json!(e));
                            o.insert("enum_code".into(), json!(v.enum_code));
                        }
                        Value::Object(o)
                    })
                    .collect();
                Some(json!({
                    "field_id": f.id,
                    "field_name": f.name,
                    "field_code": f.code,
                    "field_type": f.field_type.as_str(),
                    "values": values,
                }))
            })
            .collect(),
    )
}

fn tags(t: &[super::model::Tag]) -> Value {
    Value::Array(
        t.iter()
            .map(|t| json!({"id": t.id, "name": t.name, "color": null}))
            .collect(),
    )
}

fn ref_list(st: &State, entity: &str, ids: impl Iterator<Item = u64>) -> Value {
    Value::Array(
        ids.map(|id| json!({"id": id, "_links": links(st, &format!("/api/v4/{entity}/{id}"))}))
            .collect(),
    )
}

/// One lead; `_embedded.contacts` only with `with=contacts`.
pub(crate) fn lead(st: &State, l: &Lead, with: &[String]) -> Value {
    let mut embedded = Map::new();
    embedded.insert("tags".into(), tags(&l.tags));
    embedded.insert(
        "companies".into(),
        ref_list(st, "companies", l.companies.iter().copied()),
    );
    if with.iter().any(|w| w == "contacts") {
        embedded.insert(
            "contacts".into(),
            Value::Array(
                l.contacts
                    .iter()
                    .map(|c| {
                        json!({"id": c.id, "is_main": c.is_main,
                               "_links": links(st, &format!("/api/v4/contacts/{}", c.id))})
                    })
                    .collect(),
            ),
        );
    }
    if with.iter().any(|w| w == "loss_reason") {
        let reasons: Vec<Value> = l
            .loss_reason_id
            .and_then(|id| st.loss_reasons.iter().find(|r| r.id == id))
            .map(|r| loss_reason(st, r))
            .into_iter()
            .collect();
        embedded.insert("loss_reason".into(), Value::Array(reasons));
    }
    json!({
        "id": l.id,
        "name": l.name,
        "price": l.price,
        "responsible_user_id": l.responsible_user_id,
        "group_id": l.group_id,
        "status_id": l.status_id,
        "pipeline_id": l.pipeline_id,
        "loss_reason_id": l.loss_reason_id,
        "created_by": l.created_by,
        "updated_by": l.updated_by,
        "created_at": l.created_at,
        "updated_at": l.updated_at,
        "closed_at": l.closed_at,
        "closest_task_at": st.closest_task_at(EntityType::Lead, l.id),
        "is_deleted": false,
        "custom_fields_values": cfv(st, &l.fields),
        "score": null,
        "account_id": st.account_id,
        "labor_cost": null,
        "_links": links(st, &format!("/api/v4/leads/{}", l.id)),
        "_embedded": Value::Object(embedded),
    })
}

/// One loss reason, as `GET /api/v4/leads/loss_reasons` and `with=loss_reason` show it.
pub(crate) fn loss_reason(st: &State, r: &LossReason) -> Value {
    json!({
        "id": r.id,
        "name": r.name,
        "sort": r.sort,
        "created_at": st.created_at,
        "updated_at": st.created_at,
        "_links": links(st, &format!("/api/v4/leads/loss_reasons/{}", r.id)),
    })
}

fn leads_of_contact(st: &State, contact_id: u64) -> impl Iterator<Item = u64> + '_ {
    st.leads
        .values()
        .filter(move |l| l.contacts.iter().any(|c| c.id == contact_id))
        .map(|l| l.id)
}

/// One contact; `_embedded.leads` only with `with=leads`.
pub(crate) fn contact(st: &State, c: &Contact, with: &[String]) -> Value {
    let mut embedded = Map::new();
    embedded.insert("tags".into(), tags(&c.tags));
    embedded.insert(
        "companies".into(),
        ref_list(st, "companies", c.companies.iter().copied()),
    );
    if with.iter().any(|w| w == "leads") {
        embedded.insert(
            "leads".into(),
            ref_list(st, "leads", leads_of_contact(st, c.id)),
        );
    }
    json!({
        "id": c.id,
        "name": c.name,
        "first_name": c.first_name,
        "last_name": c.last_name,
        "responsible_user_id": c.responsible_user_id,
        "group_id": 0,
        "created_by": c.created_by,
        "updated_by": c.updated_by,
        "created_at": c.created_at,
        "updated_at": c.updated_at,
        "closest_task_at": st.closest_task_at(EntityType::Contact, c.id),
        "is_deleted": false,
        "is_unsorted": false,
        "custom_fields_values": cfv(st, &c.fields),
        "account_id": st.account_id,
        "_links": links(st, &format!("/api/v4/contacts/{}", c.id)),
        "_embedded": Value::Object(embedded),
    })
}

/// One company; `_embedded.contacts` / `leads` only when asked for.
pub(crate) fn company(st: &State, c: &Company, with: &[String]) -> Value {
    let mut embedded = Map::new();
    embedded.insert("tags".into(), tags(&c.tags));
    if with.iter().any(|w| w == "contacts") {
        let ids = st
            .contacts
            .values()
            .filter(|x| x.companies.contains(&c.id))
            .map(|x| x.id);
        embedded.insert("contacts".into(), ref_list(st, "contacts", ids));
    }
    if with.iter().any(|w| w == "leads") {
        let ids = st
            .leads
            .values()
            .filter(|l| l.companies.contains(&c.id))
            .map(|l| l.id);
        embedded.insert("leads".into(), ref_list(st, "leads", ids));
    }
    json!({
        "id": c.id,
        "name": c.name,
        "responsible_user_id": c.responsible_user_id,
        "group_id": 0,
        "created_by": c.created_by,
        "updated_by": c.updated_by,
        "created_at": c.created_at,
        "updated_at": c.updated_at,
        "closest_task_at": st.closest_task_at(EntityType::Company, c.id),
        "is_deleted": false,
        "custom_fields_values": cfv(st, &c.fields),
        "account_id": st.account_id,
        "_links": links(st, &format!("/api/v4/companies/{}", c.id)),
        "_embedded": Value::Object(embedded),
    })
}

/// One custom field definition.
pub(crate) fn field(st: &State, f: &CustomField) -> Value {
    let enums = if f.field_type.has_enums() {
        Value::Array(
            f.enums
                .iter()
                .map(|e| {
                    let mut o = json!({"id": e.id, "value": e.value, "sort": e.sort});
                    if let (Some(code), Value::Object(m)) = (&e.code, &mut o) {
                        m.insert("code".into(), json!(code));
                    }
                    o
                })
                .collect(),
        )
    } else {
        Value::Null
    };
    let entity = f.entity_type.plural();
    json!({
        "id": f.id,
        "name": f.name,
        "type": f.field_type.as_str(),
        "account_id": st.account_id,
        "code": f.code,
        "sort": f.sort,
        "is_api_only": f.is_api_only,
        "enums": enums,
        "group_id": null,
        "required_statuses": [],
        "is_deletable": f.code.as_deref().is_none_or(|c| !matches!(c, "PHONE" | "EMAIL" | "POSITION" | "WEB" | "ADDRESS")),
        "is_predefined": false,
        "entity_type": entity,
        "tracking_callback": null,
        "remind": null,
        "triggers": [],
        "currency": null,
        "hidden_statuses": [],
        "chained_lists": null,
        "_links": links(st, &format!("/api/v4/{entity}/custom_fields/{}", f.id)),
    })
}

/// One event.
pub(crate) fn event(st: &State, e: &Event) -> Value {
    let plural = e.entity_type.plural();
    json!({
        "id": e.id,
        "type": e.event_type,
        "entity_id": e.entity_id,
        "entity_type": e.entity_type.event_name(),
        "created_by": e.created_by,
        "created_at": e.created_at,
        "value_after": e.value_after,
        "value_before": e.value_before,
        "account_id": st.account_id,
        "_links": links(st, &format!("/api/v4/events/{}", e.id)),
        "_embedded": {"entity": {"id": e.entity_id, "_links": links(st, &format!("/api/v4/{plural}/{}", e.entity_id))}},
    })
}

/// One note.
pub(crate) fn note(st: &State, n: &Note) -> Value {
    json!({
        "id": n.id,
        "entity_id": n.entity_id,
        "created_by": n.created_by,
        "updated_by": n.created_by,
        "created_at": n.created_at,
        "updated_at": n.updated_at,
        "responsible_user_id": n.responsible_user_id,
        "group_id": 0,
        "note_type": n.note_type,
        "params": n.params,
        "account_id": st.account_id,
        "_links": links(st, &format!("/api/v4/{}/{}/notes/{}", n.entity_type.plural(), n.entity_id, n.id)),
    })
}

/// One task.
pub(crate) fn task(st: &State, t: &Task) -> Value {
    let result = match &t.result_text {
        Some(text) => json!({"text": text}),
        None => json!([]),
    };
    json!({
        "id": t.id,
        "created_by": t.created_by,
        "updated_by": t.updated_by,
        "created_at": t.created_at,
        "updated_at": t.updated_at,
        "responsible_user_id": t.responsible_user_id,
        "group_id": 0,
        "entity_id": t.entity_id,
        "entity_type": t.entity_type.map(EntityType::plural),
        "duration": t.duration,
        "is_completed": t.is_completed,
        "task_type_id": t.task_type_id,
        "text": t.text,
        "result": result,
        "complete_till": t.complete_till,
        "account_id": st.account_id,
        "_links": links(st, &format!("/api/v4/tasks/{}", t.id)),
    })
}

/// One user.
pub(crate) fn user(st: &State, u: &User) -> Value {
    let all = if u.is_admin { "A" } else { "M" };
    json!({
        "id": u.id,
        "name": u.name,
        "email": u.email,
        "lang": "ru",
        "rights": {
            "leads": {"view": all, "edit": all, "add": all, "delete": all, "export": all},
            "contacts": {"view": all, "edit": all, "add": all, "delete": all, "export": all},
            "companies": {"view": all, "edit": all, "add": all, "delete": all, "export": all},
            "tasks": {"edit": all, "delete": all},
            "mail_access": true,
            "catalog_access": true,
            "is_admin": u.is_admin,
            "is_free": false,
            "is_active": true,
            "group_id": null,
            "role_id": null,
            "status_rights": [],
        },
        "_links": links(st, &format!("/api/v4/users/{}", u.id)),
    })
}

/// One pipeline with its stages.
pub(crate) fn pipeline(st: &State, p: &Pipeline) -> Value {
    let statuses: Vec<Value> = p
        .stages
        .iter()
        .map(|s| {
            json!({
                "id": s.id,
                "name": s.name,
                "sort": s.sort,
                "is_editable": s.id != 142 && s.id != 143,
                "pipeline_id": p.id,
                "color": "#99ccff",
                "type": s.kind,
                "account_id": st.account_id,
                "_links": links(st, &format!("/api/v4/leads/pipelines/{}/statuses/{}", p.id, s.id)),
            })
        })
        .collect();
    json!({
        "id": p.id,
        "name": p.name,
        "sort": 1,
        "is_main": p.is_main,
        "is_unsorted_on": true,
        "is_archive": false,
        "account_id": st.account_id,
        "_links": links(st, &format!("/api/v4/leads/pipelines/{}", p.id)),
        "_embedded": {"statuses": statuses},
    })
}

/// The account, with `task_types`, `users_groups` and `amojo_id` when asked for.
pub(crate) fn account(st: &State, with: &[String]) -> Value {
    let mut o = json!({
        "id": st.account_id,
        "name": st.account_name,
        "subdomain": st.subdomain,
        "created_at": st.created_at,
        "created_by": st.current_user_id(),
        "updated_at": st.created_at,
        "updated_by": st.current_user_id(),
        "current_user_id": st.current_user_id(),
        "country": "RU",
        "currency": "RUB",
        "currency_symbol": "₽",
        "customers_mode": "disabled",
        "is_unsorted_on": true,
        "mobile_feature_version": 0,
        "is_loss_reason_enabled": true,
        "is_helpbot_enabled": false,
        "is_technical_account": false,
        "contact_name_display_order": 1,
        "_links": links(st, "/api/v4/account"),
    });
    let Value::Object(m) = &mut o else {
        return o;
    };
    let mut embedded = Map::new();
    if with.iter().any(|w| w == "amojo_id") {
        m.insert(
            "amojo_id".into(),
            json!(format!(
                "{:08x}-sand-box0-0000-{:012x}",
                st.account_id, st.account_id
            )),
        );
    }
    if with.iter().any(|w| w == "task_types") {
        embedded.insert(
            "task_types".into(),
            json!([
                {"id": 1, "name": "Связаться", "color": null, "icon_id": null, "code": "FOLLOW_UP"},
                {"id": 2, "name": "Встреча", "color": null, "icon_id": null, "code": "MEETING"},
            ]),
        );
    }
    if with.iter().any(|w| w == "users_groups") {
        embedded.insert(
            "users_groups".into(),
            json!([{"id": 0, "name": "Отдел продаж", "uuid": null}]),
        );
    }
    if !embedded.is_empty() {
        m.insert("_embedded".into(), Value::Object(embedded));
    }
    o
}

/// A list page: `_page`, `_links` (self, next when there is more, first/prev after
/// page 1) and `_embedded.{key}`.
pub(crate) fn page(
    st: &State,
    path: &str,
    q: &Query,
    page: usize,
    has_next: bool,
    key: &str,
    items: Vec<Value>,
) -> Value {
    let href = |n: usize| {
        let mut parts = q.encode_without(&["page"]);
        parts.push(format!("page={n}"));
        json!({"href": format!("{}{}?{}", st.base_url, path, parts.join("&"))})
    };
    let mut l = Map::new();
    l.insert("self".into(), href(page));
    if has_next {
        l.insert("next".into(), href(page + 1));
    }
    if page > 1 {
        l.insert("first".into(), href(1));
        l.insert("prev".into(), href(page - 1));
    }
    json!({
        "_page": page,
        "_links": Value::Object(l),
        "_embedded": {key: items},
    })
}

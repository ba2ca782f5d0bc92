//! The API v4 endpoints: routing, parameters, filters and paging, validation, and the
//! answers (200/201 HAL, 204 for empty lists, `validation-errors` 400s, problem+json).
//! Each call runs against the locked account state and collects the webhook items its
//! changes fire, so the caller can queue them once the lock is gone.

use axum::http::Method;
use serde_json::{json, Value};

use super::model::{EntityType, FieldSpec, FieldType};
use super::query::Query;
use super::render;
use super::store::{json_u64, Invalid, State};
use super::webhooks::{HookItem, Hooks};
use super::MissingEntity;

/// Most entities one write may carry.
pub(crate) const MAX_WRITE_BATCH: usize = 250;

/// A successful answer.
#[derive(Debug)]
pub(crate) enum Reply {
    /// 200 or 201 with a HAL body.
    Json(u16, Value),
    /// 204 with an empty body.
    NoContent,
}

/// A failed answer.
#[derive(Debug)]
pub(crate) enum ApiError {
    /// `application/problem+json` with a title and detail.
    Problem {
        status: u16,
        title: &'static str,
        detail: String,
    },
    /// 400 with `validation-errors`, one entry per failing entity of the request.
    Validation(Vec<(String, Vec<Invalid>)>),
}

impl ApiError {
    pub(crate) fn status(&self) -> u16 {
        match self {
            ApiError::Problem { status, .. } => *status,
            ApiError::Validation(_) => 400,
        }
    }

    /// The body amoCRM sends.
    pub(crate) fn body(&self) -> Value {
        match self {
            ApiError::Problem {
                status,
                title,
                detail,
            } => json!({
                "title": title,
                "type": format!("https://httpstatus.es/{status}"),
                "status": status,
                "detail": detail,
            }),
            ApiError::Validation(entries) => json!({
                "validation-errors": entries.iter().map(|(rid, errs)| json!({
                    "request_id": rid,
                    "errors": errs.iter().map(|e| json!({"code": e.code, "path": e.path, "detail": e.detail})).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
                "title": "Bad Request",
                "type": "https://httpstatus.es/400",
                "status": 400,
                "detail": "Request validation failed",
            }),
        }
    }

    fn bad_request(detail: impl Into<String>) -> Self {
        ApiError::Problem {
            status: 400,
            title: "Bad Request",
            detail: detail.into(),
        }
    }

    pub(crate) fn not_found(detail: impl Into<String>) -> Self {
        ApiError::Problem {
            status: 404,
            title: "Not Found",
            detail: detail.into(),
        }
    }

    fn method_not_allowed() -> Self {
        ApiError::Problem {
            status: 405,
            title: "Method Not Allowed",
            detail: "Method not allowed".into(),
        }
    }

    fn single(code: &'static str, path: &str, detail: &str) -> Self {
        ApiError::Validation(vec![("0".into(), vec![Invalid::new(code, path, detail)])])
    }
}

/// Everything one call needs besides the state.
pub(crate) struct Call<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub query: &'a Query,
    pub body: &'a [u8],
    pub user: u64,
    pub now: i64,
    pub missing: MissingEntity,
}

impl Call<'_> {
    fn json_body(&self) -> Result<Value, ApiError> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::bad_request("Request body is empty"));
        }
        serde_json::from_slice(self.body)
            .map_err(|_| ApiError::bad_request("Request body is not valid JSON"))
    }

    fn array_body(&self) -> Result<Vec<Value>, ApiError> {
        match self.json_body()? {
            Value::Array(items) if items.is_empty() => {
                Err(ApiError::bad_request("Request body is empty"))
            }
            Value::Array(items) if items.len() > MAX_WRITE_BATCH => {
                Err(ApiError::bad_request(format!(
                    "Too many entities in one request: {}, at most {MAX_WRITE_BATCH}",
                    items.len()
                )))
            }
            Value::Array(items) => Ok(items),
            _ => Err(ApiError::single(
                "InvalidType",
                "",
                "This value should be of type array.",
            )),
        }
    }

    fn missing(&self, what: &str) -> Result<Reply, ApiError> {
        match self.missing {
            MissingEntity::NoContent => Ok(Reply::NoContent),
            MissingEntity::NotFound => Err(ApiError::not_found(format!("{what} not found"))),
        }
    }
}

/// Whether a request changes data (for the 504 fault and the batch timeout).
pub(crate) fn is_write(method: &Method) -> bool {
    *method == Method::POST || *method == Method::PATCH
}

/// Routes one API call.
pub(crate) fn dispatch(
    st: &mut State,
    c: &Call<'_>,
    hooks: &mut Vec<HookItem>,
) -> Result<Reply, ApiError> {
    let segs: Vec<&str> = c
        .path
        .trim_start_matches("/api/v4/")
        .trim_end_matches('/')
        .split('/')
        .collect();
    let get = *c.method == Method::GET;
    let post = *c.method == Method::POST;
    let patch = *c.method == Method::PATCH;
    let id = |s: &str| s.parse::<u64>().ok();
    match segs.as_slice() {
        ["account"] if get => Ok(ok(render::account(st, &c.query.with()))),
        ["users"] if get => list_users(st, c),
        ["users", uid] if get => match id(uid).and_then(|u| st.users.iter().find(|x| x.id == u)) {
            Some(u) => Ok(ok(render::user(st, u))),
            None => c.missing("User"),
        },
        ["leads", "pipelines"] if get => {
            let items: Vec<Value> = st
                .pipelines
                .iter()
                .map(|p| render::pipeline(st, p))
                .collect();
            Ok(ok(json!({
                "_total_items": items.len(),
                "_links": render::links(st, "/api/v4/leads/pipelines"),
                "_embedded": {"pipelines": items},
            })))
        }
        ["leads", "loss_reasons"] if get => {
            let items: Vec<Value> = st
                .loss_reasons
                .iter()
                .map(|r| render::loss_reason(st, r))
                .collect();
            Ok(ok(json!({
                "_total_items": items.len(),
                "_links": render::links(st, "/api/v4/leads/loss_reasons"),
                "_embedded": {"loss_reasons": items},
            })))
        }
        ["leads", "pipelines", pid] if get => {
            match id(pid).and_then(|p| st.pipelines.iter().find(|x| x.id == p)) {
                Some(p) => Ok(ok(render::pipeline(st, p))),
                None => Err(ApiError::not_found("Pipeline not found")),
            }
        }
        [entity @ ("leads" | "contacts" | "companies"), "custom_fields"] => {
            let ty = EntityType::from_name(entity).unwrap_or(EntityType::Lead);
            if get {
                list_fields(st, c, ty)
            } else if post {
                create_fields(st, c, ty)
            } else {
                Err(ApiError::method_not_allowed())
            }
        }
        [entity @ ("leads" | "contacts" | "companies"), "custom_fields", fid] if get => {
            let ty = EntityType::from_name(entity).unwrap_or(EntityType::Lead);
            match id(fid)
                .and_then(|f| st.fields.get(&f))
                .filter(|f| f.entity_type == ty)
            {
                Some(f) => Ok(ok(render::field(st, f))),
                None => Err(ApiError::not_found("Custom field not found")),
            }
        }
        ["leads", "notes"] if get => list_notes(st, c, None),
        ["leads", "notes"] if post => create_notes(st, c, None, hooks),
        ["leads"] if get => list_leads(st, c),
        ["leads"] if post => create_leads(st, c, hooks),
        ["leads"] if patch => patch_leads(st, c, hooks),
        ["leads", lid] if get => match id(lid).and_then(|l| st.leads.get(&l)) {
            Some(l) => Ok(ok(render::lead(st, l, &c.query.with()))),
            None => c.missing("Lead"),
        },
        ["leads", lid] if patch => {
            let Some(lid) = id(lid) else {
                return Err(ApiError::not_found("Lead not found"));
            };
            patch_one_lead(st, c, lid, hooks)
        }
        ["leads", lid, "notes"] => {
            let Some(lid) = id(lid).filter(|l| st.leads.contains_key(l)) else {
                return Err(ApiError::not_found("Lead not found"));
            };
            if get {
                list_notes(st, c, Some(lid))
            } else if post {
                create_notes(st, c, Some(lid), hooks)
            } else {
                Err(ApiError::method_not_allowed())
            }
        }
        ["leads", lid, "notes", nid] if get => {
            let note = id(nid)
                .and_then(|n| st.notes.get(&n))
                .filter(|n| n.entity_type == EntityType::Lead && Some(n.entity_id) == id(lid));
            match note {
                Some(n) => Ok(ok(render::note(st, n))),
                None => c.missing("Note"),
            }
        }
        ["contacts"] if get => list_contacts(st, c),
        ["contacts", cid] if get => match id(cid).and_then(|x| st.contacts.get(&x)) {
            Some(x) => Ok(ok(render::contact(st, x, &c.query.with()))),
            None => c.missing("Contact"),
        },
        ["companies"] if get => list_companies(st, c),
        ["companies", cid] if get => match id(cid).and_then(|x| st.companies.get(&x)) {
            Some(x) => Ok(ok(render::company(st, x, &c.query.with()))),
            None => c.missing("Company"),
        },
        ["events"] if get => list_events(st, c),
        ["events", eid] if get => match st.events.iter().find(|e| e.id == *eid) {
            Some(e) => Ok(ok(render::event(st, e))),
            None => c.missing("Event"),
        },
        ["tasks"] if get => list_tasks(st, c),
        ["tasks"] if post => create_tasks(st, c),
        ["tasks"] if patch => patch_tasks(st, c),
        ["tasks", tid] if get => match id(tid).and_then(|t| st.tasks.get(&t)) {
            Some(t) => Ok(ok(render::task(st, t))),
            None => c.missing("Task"),
        },
        ["tasks", tid] if patch => {
            let Some(tid) = id(tid).filter(|t| st.tasks.contains_key(t)) else {
                return Err(ApiError::not_found("Task not found"));
            };
            let mut obj = c.json_body()?;
            if let Value::Object(m) = &mut obj {
                m.insert("id".into(), json!(tid));
            }
            let input = st
                .parse_task(&obj, false)
                .map_err(|e| ApiError::Validation(vec![("0".into(), e)]))?;
            st.patch_task(input, c.user, c.now);
            let t = &st.tasks[&tid];
            Ok(ok(
                json!({"id": t.id, "updated_at": t.updated_at, "_links": render::links(st, &format!("/api/v4/tasks/{tid}"))}),
            ))
        }
        [known, ..]
            if matches!(
                *known,
                "account" | "users" | "leads" | "contacts" | "companies" | "events" | "tasks"
            ) =>
        {
            // A known resource with a method it does not take.
            if get || post || patch {
                Err(ApiError::not_found("Not Found"))
            } else {
                Err(ApiError::method_not_allowed())
            }
        }
        _ => Err(ApiError::not_found("Not Found")),
    }
}

fn ok(v: Value) -> Reply {
    Reply::Json(200, v)
}

// ---------------------------------------------------------------------- webhooks

/// Actions and entities of subscription codes (`{action}_{entity}`).
const HOOK_ACTIONS: &[&str] = &[
    "add",
    "update",
    "delete",
    "restore",
    "status",
    "responsible",
    "note",
];
const HOOK_ENTITIES: &[&str] = &[
    "lead", "contact", "company", "customer", "task", "unsorted", "talk",
];

fn known_setting(s: &str) -> bool {
    s.split_once('_')
        .is_some_and(|(a, e)| HOOK_ACTIONS.contains(&a) && HOOK_ENTITIES.contains(&e))
}

/// `/api/v4/webhooks`: list, subscribe (or update by destination), unsubscribe.
pub(crate) fn webhooks(hooks: &Hooks, c: &Call<'_>) -> Result<Reply, ApiError> {
    if c.path.trim_end_matches('/') != "/api/v4/webhooks" {
        return Err(ApiError::not_found("Not Found"));
    }
    match *c.method {
        Method::GET => {
            let items = hooks.views(c.query.get("filter[destination]"));
            if items.is_empty() {
                return Ok(Reply::NoContent);
            }
            Ok(ok(json!({
                "_total_items": items.len(),
                "_links": {"self": {"href": format!("{}/api/v4/webhooks", hooks.base_url())}},
                "_embedded": {"webhooks": items},
            })))
        }
        Method::POST => {
            let body = c.json_body()?;
            let mut errs = Vec::new();
            let destination = body
                .get("destination")
                .and_then(Value::as_str)
                .unwrap_or("");
            if !(destination.starts_with("https://") || destination.starts_with("http://")) {
                errs.push(Invalid::new(
                    "InvalidUrl",
                    "destination",
                    "This value is not a valid URL.",
                ));
            }
            let mut settings = Vec::new();
            match body.get("settings") {
                Some(Value::Array(list)) if !list.is_empty() => {
                    for (i, s) in list.iter().enumerate() {
                        match s.as_str().filter(|s| known_setting(s)) {
                            Some(s) => settings.push(s.to_owned()),
                            None => errs.push(Invalid::new(
                                "NotSupportedChoice",
                                format!("settings.{i}"),
                                "The value you selected is not a valid choice.",
                            )),
                        }
                    }
                }
                _ => errs.push(Invalid::new(
                    "NotBlank",
                    "settings",
                    "This value should not be blank.",
                )),
            }
            if !errs.is_empty() {
                return Err(ApiError::Validation(vec![("0".into(), errs)]));
            }
            let sort = body.get("sort").and_then(Value::as_i64).unwrap_or(10);
            Ok(Reply::Json(
                201,
                hooks.upsert(destination, settings, sort, c.user),
            ))
        }
        Method::DELETE => {
            let body = c.json_body()?;
            let destination = body
                .get("destination")
                .and_then(Value::as_str)
                .unwrap_or("");
            if hooks.delete_destination(destination) {
                Ok(Reply::NoContent)
            } else {
                Err(ApiError::single(
                    "NotFound",
                    "destination",
                    "Webhook not found",
                ))
            }
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

// ---------------------------------------------------------------------- parameters

/// `page` (from 1) and `limit` (default `default`, silently capped at `max`).
fn paging(q: &Query, default: usize, max: usize) -> Result<(usize, usize), ApiError> {
    let page = match q.get("page") {
        None | Some("") => 1,
        Some(p) => p.parse::<usize>().ok().filter(|p| *p >= 1).ok_or_else(|| {
            ApiError::single("InvalidType", "page", "This value should be of type int.")
        })?,
    };
    let limit = match q.get("limit") {
        None | Some("") => default,
        Some(l) => l.parse::<usize>().ok().filter(|l| *l >= 1).ok_or_else(|| {
            ApiError::single("InvalidType", "limit", "This value should be of type int.")
        })?,
    };
    Ok((page, limit.min(max)))
}

/// Slices one page; `None` (→ 204) when the page is empty.
fn slice<T: Clone>(all: Vec<T>, page: usize, limit: usize) -> Option<(Vec<T>, bool)> {
    let start = (page - 1).saturating_mul(limit);
    if start >= all.len() {
        return None;
    }
    let end = (start + limit).min(all.len());
    Some((all[start..end].to_vec(), end < all.len()))
}

fn ids(q: &Query, key: &str) -> Result<Vec<u64>, ApiError> {
    q.list_split(key)
        .iter()
        .map(|v| {
            v.parse::<u64>().map_err(|_| {
                ApiError::single(
                    "InvalidType",
                    &key.replace(['[', ']'], "."),
                    "This value should be of type int.",
                )
            })
        })
        .collect()
}

/// `filter[{key}]` as an exact value or a `[from]`/`[to]` range, inclusive.
fn range(q: &Query, key: &str) -> Result<Option<(i64, i64)>, ApiError> {
    let base = format!("filter[{key}]");
    let parse = |v: &str| {
        v.trim().parse::<i64>().map_err(|_| {
            ApiError::single(
                "InvalidType",
                &format!("filter.{key}"),
                "This value should be of type int.",
            )
        })
    };
    if let Some(v) = q.get(&base).filter(|v| !v.is_empty()) {
        let t = parse(v)?;
        return Ok(Some((t, t)));
    }
    let from = q
        .get(&format!("{base}[from]"))
        .filter(|v| !v.is_empty())
        .map(parse)
        .transpose()?;
    let to = q
        .get(&format!("{base}[to]"))
        .filter(|v| !v.is_empty())
        .map(parse)
        .transpose()?;
    Ok(match (from, to) {
        (None, None) => None,
        (f, t) => Some((f.unwrap_or(i64::MIN), t.unwrap_or(i64::MAX))),
    })
}

fn in_range(r: Option<(i64, i64)>, t: i64) -> bool {
    r.is_none_or(|(a, b)| a <= t && t <= b)
}

/// `order[field]=asc|desc` among `allowed`; `None` when not given.
fn order(q: &Query, allowed: &[&str]) -> Option<(String, bool)> {
    allowed.iter().find_map(|f| {
        q.get(&format!("order[{f}]"))
            .map(|dir| ((*f).to_owned(), dir.eq_ignore_ascii_case("desc")))
    })
}

fn list_reply(
    st: &State,
    c: &Call<'_>,
    page: usize,
    key: &str,
    items: Vec<Value>,
    all_len_next: bool,
) -> Reply {
    ok(render::page(
        st,
        c.path,
        c.query,
        page,
        all_len_next,
        key,
        items,
    ))
}

// ---------------------------------------------------------------------- leads

fn list_leads(st: &State, c: &Call<'_>) -> Result<Reply, ApiError> {
    let q = c.query;
    let (page, limit) = paging(q, 50, 250)?;
    let want_ids = ids(q, "filter[id]")?;
    let responsible = ids(q, "filter[responsible_user_id]")?;
    let pipelines = ids(q, "filter[pipeline_id]")?;
    let updated = range(q, "updated_at")?;
    let created = range(q, "created_at")?;
    let closed = range(q, "closed_at")?;
    let mut statuses = Vec::new();
    for i in 0..50 {
        let s = q
            .get(&format!("filter[statuses][{i}][status_id]"))
            .and_then(|v| v.parse::<u64>().ok());
        let p = q
            .get(&format!("filter[statuses][{i}][pipeline_id]"))
            .and_then(|v| v.parse::<u64>().ok());
        if let (Some(s), Some(p)) = (s, p) {
            statuses.push((p, s));
        }
    }
    let search = q
        .get("query")
        .map(str::to_lowercase)
        .filter(|s| !s.is_empty());
    let mut found: Vec<&super::model::Lead> = st
        .leads
        .values()
        .filter(|l| want_ids.is_empty() || want_ids.contains(&l.id))
        .filter(|l| responsible.is_empty() || responsible.contains(&l.responsible_user_id))
        .filter(|l| pipelines.is_empty() || pipelines.contains(&l.pipeline_id))
        .filter(|l| statuses.is_empty() || statuses.contains(&(l.pipeline_id, l.status_id)))
        .filter(|l| in_range(updated, l.updated_at) && in_range(created, l.created_at))
        .filter(|l| closed.is_none() || l.closed_at.is_some_and(|t| in_range(closed, t)))
        .filter(|l| {
            search.as_ref().is_none_or(|s| {
                l.name.to_lowercase().contains(s)
                    || l.fields
                        .iter()
                        .flat_map(|f| &f.values)
                        .any(|v| v.text().to_lowercase().contains(s))
            })
        })
        .collect();
    if let Some((field, desc)) = order(q, &["created_at", "updated_at", "id"]) {
        found.sort_by_key(|l| match field.as_str() {
            "created_at" => (l.created_at, l.id),
            "updated_at" => (l.updated_at, l.id),
            _ => (l.id as i64, l.id),
        });
        if desc {
            found.reverse();
        }
    }
    let Some((items, next)) = slice(found, page, limit) else {
        return Ok(Reply::NoContent);
    };
    let with = q.with();
    let items = items.iter().map(|l| render::lead(st, l, &with)).collect();
    Ok(list_reply(st, c, page, "leads", items, next))
}

fn request_id(given: Option<&String>, i: usize) -> String {
    given.cloned().unwrap_or_else(|| i.to_string())
}

fn create_leads(
    st: &mut State,
    c: &Call<'_>,
    hooks: &mut Vec<HookItem>,
) -> Result<Reply, ApiError> {
    let items = c.array_body()?;
    let mut inputs = Vec::new();
    let mut errors = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match st.parse_lead(item, true) {
            Ok(input) => inputs.push((i, input)),
            Err(e) => errors.push((i.to_string(), e)),
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let mut out = Vec::new();
    for (i, input) in inputs {
        let rid = request_id(input.request_id.as_ref(), i);
        let id = st.create_lead(input, c.user, c.now, hooks);
        out.push(json!({"id": id, "request_id": rid, "_links": render::links(st, &format!("/api/v4/leads/{id}"))}));
    }
    Ok(ok(json!({
        "_links": render::links(st, "/api/v4/leads"),
        "_embedded": {"leads": out},
    })))
}

fn patch_leads(st: &mut State, c: &Call<'_>, hooks: &mut Vec<HookItem>) -> Result<Reply, ApiError> {
    let items = c.array_body()?;
    let mut inputs = Vec::new();
    let mut errors = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match st.parse_lead(item, false) {
            Ok(input) => inputs.push(input),
            Err(e) => errors.push((i.to_string(), e)),
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let mut out = Vec::new();
    for input in inputs {
        let Some(id) = input.id else {
            continue;
        };
        st.patch_lead(input, c.user, c.now, hooks);
        let updated = st.leads.get(&id).map_or(0, |l| l.updated_at);
        out.push(json!({"id": id, "updated_at": updated, "_links": render::links(st, &format!("/api/v4/leads/{id}"))}));
    }
    Ok(ok(json!({
        "_links": render::links(st, "/api/v4/leads"),
        "_embedded": {"leads": out},
    })))
}

fn patch_one_lead(
    st: &mut State,
    c: &Call<'_>,
    id: u64,
    hooks: &mut Vec<HookItem>,
) -> Result<Reply, ApiError> {
    if !st.leads.contains_key(&id) {
        return Err(ApiError::not_found("Lead not found"));
    }
    let mut obj = c.json_body()?;
    match &mut obj {
        Value::Object(m) => {
            m.insert("id".into(), json!(id));
        }
        _ => {
            return Err(ApiError::single(
                "InvalidType",
                "",
                "This value should be of type object.",
            ))
        }
    }
    let input = st
        .parse_lead(&obj, false)
        .map_err(|e| ApiError::Validation(vec![("0".into(), e)]))?;
    st.patch_lead(input, c.user, c.now, hooks);
    let updated = st.leads.get(&id).map_or(0, |l| l.updated_at);
    Ok(ok(
        json!({"id": id, "updated_at": updated, "_links": render::links(st, &format!("/api/v4/leads/{id}"))}),
    ))
}

// ---------------------------------------------------------------------- contacts, companies

fn list_contacts(st: &State, c: &Call<'_>) -> Result<Reply, ApiError> {
    let (page, limit) = paging(c.query, 50, 250)?;
    let want = ids(c.query, "filter[id]")?;
    let updated = range(c.query, "updated_at")?;
    let search = c.query.get("query").unwrap_or_default();
    let found: Vec<_> = st
        .contacts
        .values()
        .filter(|x| want.is_empty() || want.contains(&x.id))
        .filter(|x| in_range(updated, x.updated_at))
        .filter(|x| super::query::contact_hits(search, x))
        .collect();
    let Some((items, next)) = slice(found, page, limit) else {
        return Ok(Reply::NoContent);
    };
    let with = c.query.with();
    let items = items
        .iter()
        .map(|x| render::contact(st, x, &with))
        .collect();
    Ok(list_reply(st, c, page, "contacts", items, next))
}

fn list_companies(st: &State, c: &Call<'_>) -> Result<Reply, ApiError> {
    let (page, limit) = paging(c.query, 50, 250)?;
    let want = ids(c.query, "filter[id]")?;
    let found: Vec<_> = st
        .companies
        .values()
        .filter(|x| want.is_empty() || want.contains(&x.id))
        .collect();
    let Some((items, next)) = slice(found, page, limit) else {
        return Ok(Reply::NoContent);
    };
    let with = c.query.with();
    let items = items
        .iter()
        .map(|x| render::company(st, x, &with))
        .collect();
    Ok(list_reply(st, c, page, "companies", items, next))
}

fn list_users(st: &State, c: &Call<'_>) -> Result<Reply, ApiError> {
    let (page, limit) = paging(c.query, 50, 250)?;
    let total = st.users.len();
    let Some((items, next)) = slice(st.users.clone(), page, limit) else {
        return Ok(Reply::NoContent);
    };
    let items = items.iter().map(|u| render::user(st, u)).collect();
    let mut body = render::page(st, c.path, c.query, page, next, "users", items);
    if let Value::Object(m) = &mut body {
        m.insert("_total_items".into(), json!(total));
        m.insert("_page_count".into(), json!(total.div_ceil(limit)));
    }
    Ok(ok(body))
}

// ---------------------------------------------------------------------- custom fields

fn list_fields(st: &State, c: &Call<'_>, ty: EntityType) -> Result<Reply, ApiError> {
    let (page, limit) = paging(c.query, 50, 50)?;
    let all: Vec<_> = st.fields_of(ty).into_iter().cloned().collect();
    let total = all.len();
    let Some((items, next)) = slice(all, page, limit) else {
        return Ok(Reply::NoContent);
    };
    let items = items.iter().map(|f| render::field(st, f)).collect();
    let mut body = render::page(st, c.path, c.query, page, next, "custom_fields", items);
    if let Value::Object(m) = &mut body {
        m.insert("_total_items".into(), json!(total));
        m.insert("_page_count".into(), json!(total.div_ceil(limit)));
    }
    Ok(ok(body))
}

fn create_fields(st: &mut State, c: &Call<'_>, ty: EntityType) -> Result<Reply, ApiError> {
    let items = c.array_body()?;
    let mut specs = Vec::new();
    let mut errors = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let mut errs = Vec::new();
        let name = item
            .get("name")
            .and_then(Value::as_str)
            .map(str::trim)
            .unwrap_or("");
        if name.is_empty() {
            errs.push(Invalid::new(
                "NotBlank",
                "name",
                "This value should not be blank.",
            ));
        }
        let field_type = item
            .get("type")
            .and_then(Value::as_str)
            .and_then(FieldType::parse);
        match field_type {
            None => errs.push(Invalid::new(
                "NotSupportedChoice",
                "type",
                "The value you selected is not a valid choice.",
            )),
            Some(FieldType::Multitext) if ty != EntityType::Contact => {
                errs.push(Invalid::new(
                    "NotSupportedChoice",
                    "type",
                    "The value you selected is not a valid choice.",
                ));
            }
            Some(_) => {}
        }
        let code = item.get("code").and_then(Value::as_str).map(str::to_owned);
        if let Some(code) = &code {
            if st
                .fields_of(ty)
                .iter()
                .any(|f| f.code.as_deref() == Some(code.as_str()))
            {
                errs.push(Invalid::new(
                    "NotUnique",
                    "code",
                    "This value is already used.",
                ));
            }
        }
        let mut enums = Vec::new();
        if let Some(Value::Array(list)) = item.get("enums") {
            for (j, e) in list.iter().enumerate() {
                match e
                    .get("value")
                    .and_then(Value::as_str)
                    .filter(|v| !v.is_empty())
                {
                    Some(v) => enums.push(v.to_owned()),
                    None => errs.push(Invalid::new(
                        "NotBlank",
                        format!("enums.{j}.value"),
                        "This value should not be blank.",
                    )),
                }
            }
        }
        if field_type.is_some_and(|t| t.has_enums() && t != FieldType::Multitext)
            && enums.is_empty()
        {
            errs.push(Invalid::new(
                "NotBlank",
                "enums",
                "This value should not be blank.",
            ));
        }
        if errs.is_empty() {
            if let Some(field_type) = field_type {
                let spec = FieldSpec {
                    name: name.to_owned(),
                    field_type,
                    code,
                    is_api_only: item
                        .get("is_api_only")
                        .and_then(Value::as_bool)
                        .unwrap_or(false),
                    enums,
                };
                specs.push((spec, item.get("sort").and_then(Value::as_i64)));
            }
        } else {
            errors.push((i.to_string(), errs));
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let created: Vec<Value> = specs
        .iter()
        .map(|(spec, sort)| {
            let f = st.add_field(ty, spec, *sort);
            render::field(st, &f)
        })
        .collect();
    Ok(ok(json!({
        "_total_items": created.len(),
        "_embedded": {"custom_fields": created},
    })))
}

// ---------------------------------------------------------------------- events

fn is_field_change(event_type: &str) -> bool {
    event_type
        .strip_prefix("custom_field_")
        .and_then(|r| r.strip_suffix("_value_changed"))
        .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
}

/// `{key}[i][pipeline_id]` / `{key}[i][status_id]` pairs as (pipeline, status).
fn status_pairs(q: &Query, key: &str) -> Vec<(u64, u64)> {
    (0..50)
        .filter_map(|i| {
            let p = q.get(&format!("{key}[{i}][pipeline_id]"))?.parse().ok()?;
            let s = q.get(&format!("{key}[{i}][status_id]"))?.parse().ok()?;
            Some((p, s))
        })
        .collect()
}

fn list_events(st: &State, c: &Call<'_>) -> Result<Reply, ApiError> {
    let q = c.query;
    let (page, limit) = paging(q, 100, 100)?;
    let entities: Vec<String> = q.list_split("filter[entity]");
    let mut kinds = Vec::new();
    for e in &entities {
        match EntityType::from_name(e) {
            Some(k) => kinds.push(k),
            None => {
                return Err(ApiError::single(
                    "NotSupportedChoice",
                    "filter.entity",
                    "The value you selected is not a valid choice.",
                ))
            }
        }
    }
    let entity_ids = ids(q, "filter[entity_id]")?;
    if entity_ids.len() > 10 {
        return Err(ApiError::single(
            "TooManyElements",
            "filter.entity_id",
            "This collection should contain 10 elements or less.",
        ));
    }
    if !entity_ids.is_empty() && kinds.len() != 1 {
        return Err(ApiError::single(
            "NotBlank",
            "filter.entity",
            "filter[entity_id] requires exactly one filter[entity].",
        ));
    }
    let creators = ids(q, "filter[created_by]")?;
    if creators.len() > 10 {
        return Err(ApiError::single(
            "TooManyElements",
            "filter.created_by",
            "This collection should contain 10 elements or less.",
        ));
    }
    let types = q.list_split("filter[type]");
    let wanted_ids: Vec<&str> = q.list("filter[id]");
    let created = range(q, "created_at")?;
    // `custom_field_value_changed` stands for every `custom_field_{ID}_value_changed`.
    let type_matches = |e: &super::model::Event| {
        types.is_empty()
            || types.iter().any(|t| {
                t == &e.event_type
                    || (t == "custom_field_value_changed" && is_field_change(&e.event_type))
            })
    };
    let statuses_after = status_pairs(q, "filter[value_after][leads_statuses]");
    let statuses_before = status_pairs(q, "filter[value_before][leads_statuses]");
    let status_matches = |wanted: &[(u64, u64)], v: &Value| {
        wanted.is_empty()
            || v.as_array().is_some_and(|items| {
                items.iter().any(|i| {
                    let s = i.pointer("/lead_status/id").and_then(json_u64);
                    let p = i.pointer("/lead_status/pipeline_id").and_then(json_u64);
                    wanted
                        .iter()
                        .any(|(wp, ws)| Some(*wp) == p && Some(*ws) == s)
                })
            })
    };
    let mut found: Vec<(usize, &super::model::Event)> = st
        .events
        .iter()
        .enumerate()
        .filter(|(_, e)| kinds.is_empty() || kinds.contains(&e.entity_type))
        .filter(|(_, e)| entity_ids.is_empty() || entity_ids.contains(&e.entity_id))
        .filter(|(_, e)| creators.is_empty() || creators.contains(&e.created_by))
        .filter(|(_, e)| wanted_ids.is_empty() || wanted_ids.contains(&e.id.as_str()))
        .filter(|(_, e)| in_range(created, e.created_at))
        .filter(|(_, e)| type_matches(e))
        .filter(|(_, e)| status_matches(&statuses_after, &e.value_after))
        .filter(|(_, e)| status_matches(&statuses_before, &e.value_before))
        .collect();
    // Newest first, as the feed is shown.
    found.sort_by(|(ia, a), (ib, b)| b.created_at.cmp(&a.created_at).then(ib.cmp(ia)));
    let Some((items, next)) = slice(found, page, limit) else {
        return Ok(Reply::NoContent);
    };
    let items = items.iter().map(|(_, e)| render::event(st, e)).collect();
    Ok(list_reply(st, c, page, "events", items, next))
}

// ---------------------------------------------------------------------- notes

const NOTE_TYPES: &[&str] = &[
    "common",
    "call_in",
    "call_out",
    "service_message",
    "extended_service_message",
    "message_cashier",
    "invoice_paid",
    "geolocation",
    "sms_in",
    "sms_out",
    "attachment",
];

fn list_notes(st: &State, c: &Call<'_>, lead: Option<u64>) -> Result<Reply, ApiError> {
    let (page, limit) = paging(c.query, 50, 250)?;
    let types = c.query.list_split("filter[note_type]");
    let want = ids(c.query, "filter[id]")?;
    let updated = range(c.query, "updated_at")?;
    let found: Vec<_> = st
        .notes
        .values()
        .filter(|n| n.entity_type == EntityType::Lead && lead.is_none_or(|l| n.entity_id == l))
        .filter(|n| types.is_empty() || types.contains(&n.note_type))
        .filter(|n| want.is_empty() || want.contains(&n.id))
        .filter(|n| in_range(updated, n.updated_at))
        .collect();
    let Some((items, next)) = slice(found, page, limit) else {
        return Ok(Reply::NoContent);
    };
    let items = items.iter().map(|n| render::note(st, n)).collect();
    Ok(list_reply(st, c, page, "notes", items, next))
}

fn create_notes(
    st: &mut State,
    c: &Call<'_>,
    lead: Option<u64>,
    hooks: &mut Vec<HookItem>,
) -> Result<Reply, ApiError> {
    let items = c.array_body()?;
    let mut valid = Vec::new();
    let mut errors = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let mut errs = Vec::new();
        let entity_id = match lead {
            Some(l) => Some(l),
            None => match item.get("entity_id").and_then(json_u64) {
                Some(id) if st.leads.contains_key(&id) => Some(id),
                Some(_) => {
                    errs.push(Invalid::new("NotFound", "entity_id", "Entity not found"));
                    None
                }
                None => {
                    errs.push(Invalid::new(
                        "NotBlank",
                        "entity_id",
                        "This value should not be blank.",
                    ));
                    None
                }
            },
        };
        let note_type = item.get("note_type").and_then(Value::as_str).unwrap_or("");
        if !NOTE_TYPES.contains(&note_type) {
            errs.push(Invalid::new(
                "NotSupportedChoice",
                "note_type",
                "The value you selected is not a valid choice.",
            ));
        }
        let params = item.get("params").cloned().unwrap_or(Value::Null);
        if !params.is_object() {
            errs.push(Invalid::new(
                "InvalidType",
                "params",
                "This value should be of type object.",
            ));
        } else if note_type == "common"
            && params
                .get("text")
                .and_then(Value::as_str)
                .is_none_or(|t| t.trim().is_empty())
        {
            errs.push(Invalid::new(
                "NotBlank",
                "params.text",
                "This value should not be blank.",
            ));
        }
        let rid = item.get("request_id").map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        });
        match (errs.is_empty(), entity_id) {
            (true, Some(eid)) => valid.push((i, eid, note_type.to_owned(), params, rid)),
            _ => errors.push((i.to_string(), errs)),
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let mut out = Vec::new();
    for (i, eid, note_type, params, rid) in valid {
        let id = st.add_note(
            EntityType::Lead,
            eid,
            &note_type,
            params,
            c.user,
            c.now,
            hooks,
        );
        out.push(json!({
            "id": id,
            "entity_id": eid,
            "request_id": request_id(rid.as_ref(), i),
            "_links": render::links(st, &format!("/api/v4/leads/{eid}/notes/{id}")),
        }));
    }
    let path = match lead {
        Some(l) => format!("/api/v4/leads/{l}/notes"),
        None => "/api/v4/leads/notes".into(),
    };
    Ok(ok(
        json!({"_links": render::links(st, &path), "_embedded": {"notes": out}}),
    ))
}

// ---------------------------------------------------------------------- tasks

fn list_tasks(st: &State, c: &Call<'_>) -> Result<Reply, ApiError> {
    let q = c.query;
    let (page, limit) = paging(q, 50, 250)?;
    let mut kinds = Vec::new();
    for e in q.list_split("filter[entity_type]") {
        match EntityType::from_name(&e) {
            Some(k) => kinds.push(k),
            None => {
                return Err(ApiError::single(
                    "NotSupportedChoice",
                    "filter.entity_type",
                    "The value you selected is not a valid choice.",
                ))
            }
        }
    }
    let entity_ids = ids(q, "filter[entity_id]")?;
    let task_types = ids(q, "filter[task_type]")?;
    let responsible = ids(q, "filter[responsible_user_id]")?;
    let want = ids(q, "filter[id]")?;
    let updated = range(q, "updated_at")?;
    let completed = match q.get("filter[is_completed]") {
        None | Some("") => None,
        Some("1" | "true") => Some(true),
        Some("0" | "false") => Some(false),
        Some(_) => {
            return Err(ApiError::single(
                "InvalidType",
                "filter.is_completed",
                "This value should be of type bool.",
            ));
        }
    };
    let mut found: Vec<_> = st
        .tasks
        .values()
        .filter(|t| kinds.is_empty() || t.entity_type.is_some_and(|k| kinds.contains(&k)))
        .filter(|t| entity_ids.is_empty() || t.entity_id.is_some_and(|id| entity_ids.contains(&id)))
        .filter(|t| task_types.is_empty() || task_types.contains(&t.task_type_id))
        .filter(|t| responsible.is_empty() || responsible.contains(&t.responsible_user_id))
        .filter(|t| want.is_empty() || want.contains(&t.id))
        .filter(|t| completed.is_none_or(|b| t.is_completed == b))
        .filter(|t| in_range(updated, t.updated_at))
        .collect();
    if let Some((field, desc)) = order(q, &["created_at", "complete_till", "id"]) {
        found.sort_by_key(|t| match field.as_str() {
            "created_at" => (t.created_at, t.id),
            "complete_till" => (t.complete_till, t.id),
            _ => (t.id as i64, t.id),
        });
        if desc {
            found.reverse();
        }
    }
    let Some((items, next)) = slice(found, page, limit) else {
        return Ok(Reply::NoContent);
    };
    let items = items.iter().map(|t| render::task(st, t)).collect();
    Ok(list_reply(st, c, page, "tasks", items, next))
}

fn create_tasks(st: &mut State, c: &Call<'_>) -> Result<Reply, ApiError> {
    let items = c.array_body()?;
    let mut inputs = Vec::new();
    let mut errors = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match st.parse_task(item, true) {
            Ok(t)
                if t.entity
                    .is_some_and(|(_, id)| st.refuse_tasks_on.contains(&id)) =>
            {
                errors.push((
                    i.to_string(),
                    vec![Invalid::new("NotFound", "entity_id", "Entity not found")],
                ))
            }
            Ok(t) => inputs.push((i, t)),
            Err(e) => errors.push((i.to_string(), e)),
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let mut out = Vec::new();
    for (i, t) in inputs {
        let rid = request_id(t.request_id.as_ref(), i);
        let id = st.create_task(t, c.user, c.now);
        out.push(json!({"id": id, "request_id": rid, "_links": render::links(st, &format!("/api/v4/tasks/{id}"))}));
    }
    Ok(ok(
        json!({"_links": render::links(st, "/api/v4/tasks"), "_embedded": {"tasks": out}}),
    ))
}

fn patch_tasks(st: &mut State, c: &Call<'_>) -> Result<Reply, ApiError> {
    let items = c.array_body()?;
    let mut inputs = Vec::new();
    let mut errors = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match st.parse_task(item, false) {
            Ok(t) => inputs.push(t),
            Err(e) => errors.push((i.to_string(), e)),
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let mut out = Vec::new();
    for t in inputs {
        let Some(id) = t.id else {
            continue;
        };
        st.patch_task(t, c.user, c.now);
        let updated = st.tasks.get(&id).map_or(0, |x| x.updated_at);
        out.push(json!({"id": id, "updated_at": updated, "_links": render::links(st, &format!("/api/v4/tasks/{id}"))}));
    }
    Ok(ok(
        json!({"_links": render::links(st, "/api/v4/tasks"), "_embedded": {"tasks": out}}),
    ))
}

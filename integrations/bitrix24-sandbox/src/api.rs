//! REST methods: parameter reading, validation and response shapes, one function per
//! method family. Each call runs against the locked portal state and reports the
//! records it changed so the caller can fire outgoing webhooks once the lock is gone.

use serde_json::{json, Map, Value};

use super::php::{as_i64, as_list, param, scalar_string};
use super::query::{page, parse_order, sort_records, Filter, PAGE};
use super::store::{
    activity_kind, lead_field, lead_field_camel, missing_task, uf_from_camel, Actor, ApiError,
    Fired, Kind, LeadSelect, State, Task, ENTITY_DEAL, ENTITY_LEAD, MULTI_TYPES, OWNER_DEAL,
    OWNER_LEAD, TASK_FIELDS,
};

/// A method's successful answer: `result`, and `total`/`next` for list methods.
#[derive(Debug)]
pub(crate) struct Output {
    pub result: Value,
    pub total: Option<u64>,
    pub next: Option<u64>,
}

impl Output {
    pub(crate) fn plain(result: Value) -> Self {
        Self {
            result,
            total: None,
            next: None,
        }
    }
}

/// Every method the sandbox serves (besides `batch`).
pub(crate) const METHODS: &[&str] = &[
    "crm.lead.get",
    "crm.lead.list",
    "crm.lead.add",
    "crm.lead.update",
    "crm.lead.delete",
    "crm.item.get",
    "crm.item.list",
    "crm.item.add",
    "crm.item.update",
    "crm.item.delete",
    "crm.deal.add",
    "crm.deal.get",
    "crm.deal.list",
    "crm.deal.update",
    "crm.deal.userfield.list",
    "crm.deal.userfield.get",
    "crm.deal.userfield.add",
    "crm.settings.mode.get",
    "crm.duplicate.findbycomm",
    "crm.activity.get",
    "crm.activity.list",
    "crm.activity.add",
    "crm.activity.update",
    "crm.activity.delete",
    "crm.activity.todo.add",
    "crm.timeline.comment.add",
    "tasks.task.add",
    "tasks.task.get",
    "tasks.task.list",
    "tasks.task.update",
    "tasks.task.complete",
    "crm.lead.userfield.list",
    "crm.lead.userfield.get",
    "crm.lead.userfield.add",
];

/// Whether the portal knows `method` (case-insensitive, as the portal is).
pub(crate) fn known(method: &str) -> bool {
    METHODS.contains(&method)
}

/// Runs one method.
pub(crate) fn dispatch(
    st: &mut State,
    method: &str,
    p: &Map<String, Value>,
    actor: Actor,
    fired: &mut Vec<Fired>,
) -> Result<Output, ApiError> {
    if st.simple_mode {
        if let Some(out) = simple_mode_lead(method) {
            return out;
        }
    }
    match method {
        "crm.settings.mode.get" => Ok(Output::plain(json!(if st.simple_mode { 2 } else { 1 }))),
        "crm.duplicate.findbycomm" => super::duplicates::find_by_comm(st, p),
        "crm.lead.get" => lead_get(st, p),
        "crm.lead.list" => lead_list(st, p),
        "crm.lead.add" => {
            let fields = fields_param(p, &["fields", "FIELDS"])?;
            let id = st.add_lead(&fields, actor, fired)?;
            Ok(Output::plain(json!(id)))
        }
        "crm.lead.update" => {
            let id = id_param(p, &["id", "ID"], "ID is not defined or invalid.")?;
            let fields = fields_param(p, &["fields", "FIELDS"])?;
            st.update_lead(id, &fields, actor, fired)?;
            Ok(Output::plain(json!(true)))
        }
        "crm.lead.delete" => {
            let id = id_param(p, &["id", "ID"], "ID is not defined or invalid.")?;
            st.delete_lead(id, fired)?;
            Ok(Output::plain(json!(true)))
        }
        "crm.item.get" | "crm.item.list" | "crm.item.add" | "crm.item.update"
        | "crm.item.delete" => item_method(st, method, p, actor, fired),
        "crm.deal.add" => {
            let fields = fields_param(p, &["fields", "FIELDS"])?;
            let id = st.deals.add(&fields, actor, &st.userfields, fired)?;
            Ok(Output::plain(json!(id)))
        }
        "crm.deal.get" => {
            let id = id_param(p, &["id", "ID"], "ID is not defined or invalid.")?;
            Ok(Output::plain(st.deals.get(id)?))
        }
        "crm.deal.update" => {
            let id = id_param(p, &["id", "ID"], "ID is not defined or invalid.")?;
            let fields = fields_param(p, &["fields", "FIELDS"])?;
            st.deals.update(id, &fields, actor, &st.userfields, fired)?;
            Ok(Output::plain(json!(true)))
        }
        "crm.deal.userfield.add" => {
            let fields = fields_param(p, &["fields", "FIELDS"])?;
            let id = st.add_entity_userfield(ENTITY_DEAL, &fields, fired)?;
            Ok(Output::plain(json!(id)))
        }
        "crm.deal.userfield.get" => userfield_get(st, ENTITY_DEAL, p),
        "crm.deal.userfield.list" => userfield_list(st, ENTITY_DEAL, p),
        "crm.deal.list" => {
            let (result, total, next) = st.deals.list(p)?;
            Ok(with_page(result, total, next))
        }
        "crm.activity.get" => {
            let id = id_param(p, &["id", "ID"], "ID is not defined or invalid.")?;
            let a = st
                .activities
                .get(&id)
                .ok_or_else(|| ApiError::new(400, "", "Not found"))?;
            Ok(Output::plain(Value::Object(State::activity_json(a, &[]))))
        }
        "crm.activity.list" => activity_list(st, p),
        "crm.activity.add" => {
            let fields = fields_param(p, &["fields", "FIELDS"])?;
            let id = st.add_activity(&fields, actor, fired)?;
            Ok(Output::plain(json!(id)))
        }
        "crm.activity.update" => {
            let id = id_param(p, &["id", "ID"], "ID is not defined or invalid.")?;
            let fields = fields_param(p, &["fields", "FIELDS"])?;
            st.update_activity(id, &fields, actor, fired)?;
            Ok(Output::plain(json!(true)))
        }
        "crm.activity.delete" => {
            let id = id_param(p, &["id", "ID"], "ID is not defined or invalid.")?;
            st.delete_activity(id, fired)?;
            Ok(Output::plain(json!(true)))
        }
        "crm.activity.todo.add" => todo_add(st, p, actor, fired),
        "crm.timeline.comment.add" => {
            // Since crm 23.100.0 only the lowercase key is read.
            let fields = match p.get("fields") {
                Some(Value::Object(m)) => m.clone(),
                _ => {
                    // FIELDS, Fields and arFields are not accepted (docs' warning).
                    return Err(ApiError::new(
                        400,
                        "100",
                        "Required fields not provided: fields",
                    ));
                }
            };
            let id = st.add_comment(&fields, actor, fired)?;
            Ok(Output::plain(json!(id)))
        }
        "tasks.task.add" => {
            let fields = fields_param(p, &["fields", "FIELDS"])?;
            let id = st.add_task(&fields, actor, fired)?;
            task_output(st, id, &[])
        }
        "tasks.task.get" => {
            let id = id_param(
                p,
                &["taskId", "TASKID", "id"],
                "Task not found or not accessible",
            )?;
            let select = select_list(p);
            task_output(st, id, &select)
        }
        "tasks.task.list" => task_list(st, p),
        "tasks.task.update" => {
            let id = id_param(
                p,
                &["taskId", "TASKID", "id"],
                "Task not found or not accessible",
            )?;
            let fields = fields_param(p, &["fields", "FIELDS"])?;
            st.update_task(id, &fields, actor, fired)?;
            task_output(st, id, &[])
        }
        "tasks.task.complete" => {
            let id = id_param(
                p,
                &["taskId", "TASKID", "id"],
                "Task not found or not accessible",
            )?;
            let mut done = Map::new();
            done.insert("STATUS".into(), json!(super::store::TASK_COMPLETED));
            st.update_task(id, &done, actor, fired)?;
            task_output(st, id, &[])
        }
        "crm.lead.userfield.add" => {
            let fields = fields_param(p, &["fields", "FIELDS"])?;
            let id = st.add_userfield(&fields, fired)?;
            Ok(Output::plain(json!(id)))
        }
        "crm.lead.userfield.get" => userfield_get(st, ENTITY_LEAD, p),
        "crm.lead.userfield.list" => userfield_list(st, ENTITY_LEAD, p),
        _ => Err(method_not_found()),
    }
}

/// How a simple-mode portal (no leads) answers a lead method; `None`: as usual. The
/// docs only say that mode 2 works "without leads" (`crm.settings.mode.get`); the
/// sandbox's choice: lead lists are empty (every lead was converted when the mode was
/// switched), reading, writing or creating one lead is refused as access denied, and
/// the user-field methods keep working (the fields survive a switch back).
fn simple_mode_lead(method: &str) -> Option<Result<Output, ApiError>> {
    match method {
        "crm.lead.list" => Some(Ok(with_page(json!([]), Some(0), None))),
        "crm.lead.get" | "crm.lead.add" | "crm.lead.update" | "crm.lead.delete" => {
            Some(Err(ApiError::new(403, "ACCESS_DENIED", "Access denied.")))
        }
        _ => None,
    }
}

/// The error an unknown method gets.
pub(crate) fn method_not_found() -> ApiError {
    ApiError::new(404, "ERROR_METHOD_NOT_FOUND", "Method not found!")
}

fn id_param(p: &Map<String, Value>, names: &[&str], msg: &str) -> Result<u64, ApiError> {
    param(p, names)
        .and_then(as_i64)
        .filter(|i| *i > 0)
        .map(|i| i as u64)
        .ok_or_else(|| ApiError::new(400, "", msg))
}

fn fields_param(p: &Map<String, Value>, names: &[&str]) -> Result<Map<String, Value>, ApiError> {
    match param(p, names) {
        Some(Value::Object(m)) => Ok(m.clone()),
        Some(Value::Array(a)) if a.is_empty() => Ok(Map::new()),
        _ => Err(ApiError::new(400, "", "Parameter 'fields' must be array.")),
    }
}

fn select_list(p: &Map<String, Value>) -> Vec<String> {
    param(p, &["select", "SELECT"])
        .map(as_list)
        .unwrap_or_default()
        .iter()
        .filter_map(scalar_string)
        .collect()
}

fn with_page(result: Value, total: Option<u64>, next: Option<u64>) -> Output {
    Output {
        result,
        total,
        next,
    }
}

// ------------------------------------------------------------------ leads (crm.lead.*)

fn lead_get(st: &State, p: &Map<String, Value>) -> Result<Output, ApiError> {
    let id = id_param(p, &["id", "ID"], "ID is not defined or invalid.")?;
    let lead = st
        .leads
        .get(&id)
        .ok_or_else(|| ApiError::new(400, "", "Not found"))?;
    Ok(Output::plain(Value::Object(st.lead_upper(lead, None))))
}

fn upper_field(st: &State) -> impl Fn(&str) -> Option<String> + '_ {
    move |name: &str| {
        let upper = name.to_ascii_uppercase();
        let known = lead_field(&upper).is_some()
            || MULTI_TYPES.contains(&upper.as_str())
            || (upper.starts_with("UF_") && st.userfield(&upper).is_some());
        known.then_some(upper)
    }
}

fn lead_select_upper(select: &[String]) -> LeadSelect {
    let mut s = LeadSelect::default();
    if select.is_empty() {
        s.all_std = true;
    }
    for item in select {
        let u = item.to_ascii_uppercase();
        match u.as_str() {
            "*" => s.all_std = true,
            "UF_*" => s.all_uf = true,
            m if MULTI_TYPES.contains(&m) => s.multi.push(u.clone()),
            uf if uf.starts_with("UF_") => s.uf.push(u.clone()),
            _ => s.std.push(u.clone()),
        }
    }
    s
}

fn lead_list(st: &State, p: &Map<String, Value>) -> Result<Output, ApiError> {
    let map = upper_field(st);
    let filter = Filter::parse(param(p, &["filter", "FILTER"]), &map)?;
    let order = parse_order(param(p, &["order", "ORDER"]), &map)?;
    let select = lead_select_upper(&select_list(p));
    let start = param(p, &["start", "START"]);
    let leads = filtered_leads(st, &filter, &order, start);
    let pg = page(leads, start);
    let items: Vec<Value> = pg
        .items
        .iter()
        .map(|l| Value::Object(st.lead_upper(l, Some(&select))))
        .collect();
    Ok(with_page(Value::Array(items), pg.total, pg.next))
}

/// Leads passing `filter`, ordered. Only ids the filter admits are looked at, and with
/// `start=-1` in id order the scan stops after one page, so that walking a large portal
/// with `>ID` stays cheap (the real portal's point of `start=-1`).
fn filtered_leads<'a>(
    st: &'a State,
    filter: &Filter,
    order: &[(String, bool)],
    start: Option<&Value>,
) -> Vec<&'a super::store::Lead> {
    let hint = filter.id_hint("ID");
    let id_order = order.is_empty() || order == [("ID".to_owned(), false)];
    let no_count = start.and_then(as_i64).is_some_and(|s| s < 0);
    let limit = if id_order && no_count {
        PAGE
    } else {
        usize::MAX
    };
    let candidates: Box<dyn Iterator<Item = &super::store::Lead>> = match (&hint.set, hint.empty) {
        (_, true) => Box::new(std::iter::empty()),
        (Some(ids), false) => Box::new(ids.iter().filter_map(|id| st.leads.get(id))),
        (None, false) => Box::new(st.leads.range(hint.lo..).map(|(_, l)| l)),
    };
    let mut leads: Vec<&super::store::Lead> = candidates
        .take_while(|l| hint.hi.is_none_or(|h| l.id <= h))
        .filter(|l| hint.admits(l.id) && filter.matches(&|f| st.lead_values(l, f)))
        .take(limit)
        .collect();
    sort_records(&mut leads, order, &|l, f| st.lead_values(l, f), &|l| l.id);
    leads
}

// ------------------------------------------------------------------ leads (crm.item.*)

fn camel_field(st: &State) -> impl Fn(&str) -> Option<String> + '_ {
    move |name: &str| {
        if let Some(fd) = lead_field_camel(name) {
            return Some(fd.upper.to_owned());
        }
        if let Some(uf) = uf_from_camel(name) {
            return st.userfield(&uf).is_some().then_some(uf);
        }
        if name.starts_with("UF_CRM_") && st.userfield(name).is_some() {
            return Some(name.to_owned());
        }
        None
    }
}

fn lead_select_camel(st: &State, select: &[String]) -> Option<LeadSelect> {
    if select.is_empty() || select.iter().any(|s| s == "*") {
        return None;
    }
    let mut s = LeadSelect::default();
    for item in select {
        match item.as_str() {
            "fm" | "email" | "phone" => {
                s.multi = MULTI_TYPES.iter().map(|t| (*t).to_owned()).collect();
            }
            "uf*" | "ufCrm*" | "ufCrm_*" | "UF_*" => s.all_uf = true,
            other => {
                if let Some(upper) = camel_field(st)(other) {
                    if upper.starts_with("UF_") {
                        s.uf.push(upper);
                    } else {
                        s.std.push(upper);
                    }
                }
            }
        }
    }
    Some(s)
}

/// crm.item.update/add field names → crm.lead names (unknown names are dropped, as the
/// portal ignores them); `fm` entries are regrouped per multi-field type.
fn camel_fields_to_upper(fields: &Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    for (k, v) in fields {
        if k == "fm" {
            for entry in as_list(v) {
                let Some(t) = entry
                    .get("typeId")
                    .or_else(|| entry.get("TYPE_ID"))
                    .and_then(scalar_string)
                else {
                    continue;
                };
                let t = t.to_ascii_uppercase();
                let mut e = Map::new();
                for (from, to) in [
                    ("id", "ID"),
                    ("value", "VALUE"),
                    ("valueType", "VALUE_TYPE"),
                ] {
                    if let Some(x) = entry.get(from).or_else(|| entry.get(to)) {
                        e.insert(to.to_owned(), x.clone());
                    }
                }
                let slot = out.entry(t).or_insert_with(|| Value::Array(Vec::new()));
                if let Value::Array(items) = slot {
                    items.push(Value::Object(e));
                }
            }
        } else if let Some(fd) = lead_field_camel(k) {
            out.insert(fd.upper.to_owned(), v.clone());
        } else if let Some(uf) = uf_from_camel(k) {
            out.insert(uf, v.clone());
        } else if k.starts_with("UF_CRM_") {
            out.insert(k.clone(), v.clone());
        }
    }
    out
}

fn item_method(
    st: &mut State,
    method: &str,
    p: &Map<String, Value>,
    actor: Actor,
    fired: &mut Vec<Fired>,
) -> Result<Output, ApiError> {
    let entity_type = param(p, &["entityTypeId", "ENTITY_TYPE_ID"]).and_then(as_i64);
    match entity_type {
        Some(1) => {}
        Some(_) => {
            return Err(ApiError::new(
                400,
                "NOT_FOUND",
                "Smart process not found (the sandbox serves leads only, entityTypeId 1)",
            ))
        }
        None => {
            return Err(ApiError::new(
                400,
                "",
                "Required parameter \"entityTypeId\" is missing",
            ))
        }
    }
    let original_uf = param(p, &["useOriginalUfNames"]).is_some_and(super::php::as_flag);
    let not_found = || ApiError::new(400, "NOT_FOUND", "Element not found");
    let item_out = |st: &State, id: u64| -> Result<Output, ApiError> {
        let lead = st.leads.get(&id).ok_or_else(not_found)?;
        Ok(Output::plain(
            json!({"item": Value::Object(st.lead_camel(lead, original_uf, None))}),
        ))
    };
    match method {
        "crm.item.get" => {
            let id = param(p, &["id"]).and_then(as_i64).unwrap_or(0) as u64;
            item_out(st, id)
        }
        "crm.item.add" => {
            let fields = camel_fields_to_upper(&fields_param(p, &["fields"])?);
            let id = st.add_lead(&fields, actor, fired)?;
            item_out(st, id)
        }
        "crm.item.update" => {
            let id = param(p, &["id"]).and_then(as_i64).unwrap_or(0) as u64;
            if !st.leads.contains_key(&id) {
                return Err(not_found());
            }
            let fields = camel_fields_to_upper(&fields_param(p, &["fields"])?);
            st.update_lead(id, &fields, actor, fired)
                .map_err(|_| not_found())?;
            item_out(st, id)
        }
        "crm.item.delete" => {
            let id = param(p, &["id"]).and_then(as_i64).unwrap_or(0) as u64;
            st.delete_lead(id, fired).map_err(|_| not_found())?;
            Ok(Output::plain(Value::Array(Vec::new())))
        }
        _ => {
            let map = camel_field(st);
            let filter = Filter::parse(param(p, &["filter"]), &map)?;
            let order = parse_order(param(p, &["order"]), &map)?;
            let select = lead_select_camel(st, &select_list(p));
            let start = param(p, &["start"]);
            let leads = filtered_leads(st, &filter, &order, start);
            let pg = page(leads, start);
            let items: Vec<Value> = pg
                .items
                .iter()
                .map(|l| Value::Object(st.lead_camel(l, original_uf, select.as_ref())))
                .collect();
            Ok(with_page(json!({"items": items}), pg.total, pg.next))
        }
    }
}

// ------------------------------------------------------------------ activities

fn activity_values(a: &super::store::Activity, field: &str) -> Option<(Kind, Vec<String>)> {
    if field == "BINDINGS" {
        let vals = a.bindings.iter().map(|(t, i)| format!("{t}:{i}")).collect();
        return Some((Kind::Str, vals));
    }
    let kind = activity_kind(field)?;
    Some((
        kind,
        a.fields.get(field).cloned().flatten().into_iter().collect(),
    ))
}

fn activity_list(st: &State, p: &Map<String, Value>) -> Result<Output, ApiError> {
    let map = |name: &str| {
        let u = name.to_ascii_uppercase();
        (activity_kind(&u).is_some() || u == "BINDINGS").then_some(u)
    };
    // BINDINGS filters carry {OWNER_TYPE_ID, OWNER_ID} objects: flatten them to the
    // "type:id" strings the record exposes.
    let filter_raw = param(p, &["filter", "FILTER"]).cloned().map(|f| match f {
        Value::Object(mut m) => {
            for key in ["BINDINGS", "bindings"] {
                if let Some(b) = m.remove(key) {
                    let flat: Vec<Value> = as_list(&b)
                        .iter()
                        .filter_map(|x| {
                            let t = x.get("OWNER_TYPE_ID").and_then(as_i64)?;
                            let i = x.get("OWNER_ID").and_then(as_i64)?;
                            Some(json!(format!("{t}:{i}")))
                        })
                        .collect();
                    m.insert("BINDINGS".into(), Value::Array(flat));
                }
            }
            Value::Object(m)
        }
        other => other,
    });
    let filter = Filter::parse(filter_raw.as_ref(), &map)?;
    let mut order = parse_order(param(p, &["order", "ORDER"]), &map)?;
    if order.is_empty() {
        order.push(("START_TIME".into(), false));
    }
    let select = select_list(p);
    // An OWNER_ID condition narrows the candidates through the binding index (a
    // superset: every owner is also a binding); the full filter still decides.
    let owners = filter.id_hint("OWNER_ID").set;
    let candidates: Box<dyn Iterator<Item = &super::store::Activity>> = match &owners {
        Some(ids) => {
            let act_ids: std::collections::BTreeSet<u64> = ids
                .iter()
                .filter_map(|o| st.activities_by_entity.get(o))
                .flatten()
                .copied()
                .collect();
            Box::new(
                act_ids
                    .into_iter()
                    .filter_map(|id| st.activities.get(&id))
                    .collect::<Vec<_>>()
                    .into_iter(),
            )
        }
        None => Box::new(st.activities.values()),
    };
    let mut acts: Vec<&super::store::Activity> = candidates
        .filter(|a| filter.matches(&|f| activity_values(a, f)))
        .collect();
    sort_records(&mut acts, &order, &|a, f| activity_values(a, f), &|a| a.id);
    let pg = page(acts, param(p, &["start", "START"]));
    let items: Vec<Value> = pg
        .items
        .iter()
        .map(|a| Value::Object(State::activity_json(a, &select)))
        .collect();
    Ok(with_page(Value::Array(items), pg.total, pg.next))
}

fn todo_add(
    st: &mut State,
    p: &Map<String, Value>,
    actor: Actor,
    fired: &mut Vec<Fired>,
) -> Result<Output, ApiError> {
    let missing = |n: &str| ApiError::new(400, "100", format!("Expected required argument: {n}"));
    let owner_type = param(p, &["ownerTypeId"])
        .and_then(as_i64)
        .ok_or_else(|| missing("ownerTypeId"))?;
    let owner_id = param(p, &["ownerId"])
        .and_then(as_i64)
        .ok_or_else(|| missing("ownerId"))?;
    let deadline_raw = param(p, &["deadline"])
        .and_then(scalar_string)
        .ok_or_else(|| missing("deadline"))?;
    let deadline = super::store::parse_date(&deadline_raw)
        .ok_or_else(|| ApiError::new(400, "WRONG_DATETIME_FORMAT", "Wrong datetime format"))?;
    let missing_owner = match owner_type as u64 {
        OWNER_LEAD => !st.leads.contains_key(&(owner_id as u64)),
        OWNER_DEAL => !st.deals.rows.contains_key(&(owner_id as u64)),
        _ => false,
    };
    if missing_owner {
        return Err(ApiError::new(400, "OWNER_NOT_FOUND", "Owner not found"));
    }
    let deadline = super::store::fmt_date(deadline);
    let mut f = Map::new();
    f.insert("OWNER_TYPE_ID".into(), json!(owner_type));
    f.insert("OWNER_ID".into(), json!(owner_id));
    f.insert("TYPE_ID".into(), json!(6));
    f.insert("PROVIDER_ID".into(), json!("CRM_TODO"));
    f.insert("PROVIDER_TYPE_ID".into(), json!("TODO"));
    f.insert(
        "SUBJECT".into(),
        param(p, &["title"]).cloned().unwrap_or(json!("")),
    );
    f.insert(
        "DESCRIPTION".into(),
        param(p, &["description"]).cloned().unwrap_or(json!("")),
    );
    f.insert("DEADLINE".into(), json!(deadline));
    f.insert("START_TIME".into(), json!(deadline));
    f.insert("END_TIME".into(), json!(deadline));
    if let Some(r) = param(p, &["responsibleId"]) {
        f.insert("RESPONSIBLE_ID".into(), r.clone());
    }
    let id = st.add_activity(&f, actor, fired)?;
    Ok(Output::plain(json!({"id": id})))
}

// ------------------------------------------------------------------ tasks

fn task_output(st: &State, id: u64, select: &[String]) -> Result<Output, ApiError> {
    let task = st.tasks.get(&id).ok_or_else(missing_task)?;
    Ok(Output::plain(
        json!({"task": State::task_json(task, select)}),
    ))
}

fn task_list(st: &State, p: &Map<String, Value>) -> Result<Output, ApiError> {
    let map = |name: &str| {
        TASK_FIELDS
            .iter()
            .find(|(u, c, _)| u.eq_ignore_ascii_case(name) || *c == name)
            .map(|(u, _, _)| (*u).to_owned())
    };
    let filter = Filter::parse(param(p, &["filter", "FILTER"]), &map)?;
    let order = parse_order(param(p, &["order", "ORDER"]), &map)
        .map_err(|_| ApiError::new(400, "0", "Invalid sorting key (internal error)"))?;
    let select = select_list(p);
    let mut tasks: Vec<&Task> = st
        .tasks
        .values()
        .filter(|t| filter.matches(&|f| State::task_values(t, f)))
        .collect();
    sort_records(&mut tasks, &order, &|t, f| State::task_values(t, f), &|t| {
        t.id
    });
    let pg = page(tasks, param(p, &["start", "START"]));
    let items: Vec<Value> = pg
        .items
        .iter()
        .map(|t| Value::Object(State::task_json(t, &select)))
        .collect();
    Ok(with_page(json!({"tasks": items}), pg.total, pg.next))
}

// ------------------------------------------------------------------ user fields

fn userfield_get(st: &State, entity: &str, p: &Map<String, Value>) -> Result<Output, ApiError> {
    let id = id_param(p, &["id", "ID"], "ID is not defined or invalid.")?;
    let uf = st
        .userfields
        .iter()
        .find(|u| u.id == id && u.entity == entity)
        .ok_or_else(|| ApiError::new(400, "", "Not found"))?;
    Ok(Output::plain(Value::Object(State::userfield_json(uf))))
}

fn userfield_list(st: &State, entity: &str, p: &Map<String, Value>) -> Result<Output, ApiError> {
    let items: Vec<Map<String, Value>> = st
        .userfields
        .iter()
        .filter(|u| u.entity == entity)
        .map(State::userfield_json)
        .collect();
    let map = |name: &str| Some(name.to_ascii_uppercase());
    let filter = Filter::parse(param(p, &["filter", "FILTER"]), &map)?;
    let kept: Vec<Value> = items
        .into_iter()
        .filter(|uf| {
            filter.matches(&|f| {
                let v = uf.get(f)?;
                let kind = if f == "ID" || f == "SORT" {
                    Kind::Int
                } else {
                    Kind::Str
                };
                Some((kind, scalar_string(v).into_iter().collect()))
            })
        })
        .map(Value::Object)
        .collect();
    let total = kept.len() as u64;
    Ok(with_page(Value::Array(kept), Some(total), None))
}

//! The account state and every change to it. Input from the REST API and from the seed
//! API goes through the same validation (the seed API builds the JSON a client would
//! send), so both paths behave alike: a change that changes nothing bumps nothing, adds
//! no event and fires no webhook.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

use super::model::{
    Company, Contact, CustomField, EntityType, EnumOption, Event, FieldSpec, FieldType, FieldValue,
    FieldValues, Lead, LinkedContact, LossReason, Note, Pipeline, Stage, StoredValue, Tag, Task,
    User,
};
use super::webhooks::{self, HookItem};

/// One validation failure, as it appears in a `validation-errors` entry.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Invalid {
    pub code: &'static str,
    pub path: String,
    pub detail: String,
}

impl Invalid {
    pub(crate) fn new(
        code: &'static str,
        path: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            code,
            path: path.into(),
            detail: detail.into(),
        }
    }

    fn choice(path: impl Into<String>) -> Self {
        Self::new(
            "NotSupportedChoice",
            path,
            "The value you selected is not a valid choice.",
        )
    }

    fn blank(path: impl Into<String>) -> Self {
        Self::new("NotBlank", path, "This value should not be blank.")
    }

    fn of_type(path: impl Into<String>, ty: &str) -> Self {
        Self::new(
            "InvalidType",
            path,
            format!("This value should be of type {ty}."),
        )
    }
}

/// The current time in unix seconds.
pub(crate) fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Won and lost stages exist in every pipeline with these ids.
pub(crate) const STATUS_WON: u64 = 142;
/// See [`STATUS_WON`].
pub(crate) const STATUS_LOST: u64 = 143;

/// Account identity and defaults the state is built from.
#[derive(Clone, Debug)]
pub(crate) struct AccountSeed {
    pub id: u64,
    pub subdomain: String,
    pub name: String,
    pub users: Vec<User>,
    pub pipelines: Vec<Pipeline>,
}

#[derive(Debug, Default)]
struct Seq {
    lead: u64,
    contact: u64,
    company: u64,
    field: u64,
    enum_: u64,
    note: u64,
    task: u64,
    tag: u64,
    event: u64,
}

/// Field changes after validation: values to set, or `None` to clear.
pub(crate) type FieldChanges = Vec<(u64, Option<Vec<StoredValue>>)>;

/// A lead write after validation: `None` means "not given".
#[derive(Clone, Debug, Default)]
pub(crate) struct LeadInput {
    pub id: Option<u64>,
    pub name: Option<String>,
    pub price: Option<i64>,
    pub status_id: Option<u64>,
    pub pipeline_id: Option<u64>,
    pub responsible_user_id: Option<u64>,
    pub fields: FieldChanges,
    pub tags: Option<Vec<String>>,
    pub contacts: Vec<LinkedContact>,
    pub companies: Vec<u64>,
    pub created_by: Option<u64>,
    pub created_at: Option<i64>,
    pub updated_at: Option<i64>,
    pub closed_at: Option<i64>,
    pub loss_reason_id: Option<u64>,
    pub request_id: Option<String>,
}

/// A task write after validation.
#[derive(Clone, Debug, Default)]
pub(crate) struct TaskInput {
    pub id: Option<u64>,
    pub text: Option<String>,
    pub complete_till: Option<i64>,
    pub entity: Option<(EntityType, u64)>,
    pub task_type_id: Option<u64>,
    pub responsible_user_id: Option<u64>,
    pub is_completed: Option<bool>,
    pub duration: Option<i64>,
    pub result_text: Option<String>,
    pub request_id: Option<String>,
}

/// The whole account.
#[derive(Debug)]
pub(crate) struct State {
    pub account_id: u64,
    pub subdomain: String,
    pub account_name: String,
    pub created_at: i64,
    pub base_url: String,
    pub users: Vec<User>,
    pub pipelines: Vec<Pipeline>,
    pub fields: BTreeMap<u64, CustomField>,
    pub leads: BTreeMap<u64, Lead>,
    pub contacts: BTreeMap<u64, Contact>,
    pub companies: BTreeMap<u64, Company>,
    pub events: Vec<Event>,
    pub notes: BTreeMap<u64, Note>,
    pub tasks: BTreeMap<u64, Task>,
    pub tags: Vec<Tag>,
    /// Leads whose new tasks are refused (fault injection, see
    /// `SandboxHandle::refuse_tasks_on`).
    pub refuse_tasks_on: std::collections::BTreeSet<u64>,
    pub loss_reasons: Vec<LossReason>,
    seq: Seq,
}

impl State {
    pub(crate) fn new(seed: AccountSeed, base_url: String) -> Self {
        let mut st = Self {
            account_id: seed.id,
            subdomain: seed.subdomain,
            account_name: seed.name,
            created_at: now_unix() - 86_400 * 400,
            base_url,
            users: seed.users,
            pipelines: seed.pipelines,
            fields: BTreeMap::new(),
            leads: BTreeMap::new(),
            refuse_tasks_on: Default::default(),
            contacts: BTreeMap::new(),
            companies: BTreeMap::new(),
            events: Vec::new(),
            notes: BTreeMap::new(),
            tasks: BTreeMap::new(),
            tags: Vec::new(),
            loss_reasons: Vec::new(),
            seq: Seq {
                lead: 20_000_000,
                contact: 30_000_000,
                company: 40_000_000,
                field: 600_000,
                enum_: 900_000,
                note: 100_000_000,
                task: 7_000_000,
                tag: 10_000,
                event: 0,
            },
        };
        st.add_system_fields();
        st
    }

    /// The user the integration's token belongs to (the first user, an admin).
    pub(crate) fn current_user_id(&self) -> u64 {
        self.users.first().map_or(0, |u| u.id)
    }

    fn add_system_fields(&mut self) {
        let phone = [
            ("WORK", "Рабочий"),
            ("WORKDD", "Рабочий прямой"),
            ("MOB", "Мобильный"),
            ("FAX", "Факс"),
            ("HOME", "Домашний"),
            ("OTHER", "Другой"),
        ];
        let email = [("WORK", "Рабочий"), ("PRIV", "Личный"), ("OTHER", "Другой")];
        for entity in [EntityType::Contact, EntityType::Company] {
            self.add_coded(entity, "Телефон", FieldType::Multitext, "PHONE", &phone);
            self.add_coded(entity, "Email", FieldType::Multitext, "EMAIL", &email);
        }
        self.add_coded(
            EntityType::Contact,
            "Должность",
            FieldType::Text,
            "POSITION",
            &[],
        );
        self.add_coded(EntityType::Company, "Web", FieldType::Url, "WEB", &[]);
        self.add_coded(
            EntityType::Company,
            "Адрес",
            FieldType::Textarea,
            "ADDRESS",
            &[],
        );
    }

    fn add_coded(
        &mut self,
        entity: EntityType,
        name: &str,
        ty: FieldType,
        code: &str,
        enums: &[(&str, &str)],
    ) {
        self.seq.field += 1;
        let id = self.seq.field;
        let enums = enums
            .iter()
            .enumerate()
            .map(|(i, (c, v))| {
                self.seq.enum_ += 1;
                EnumOption {
                    id: self.seq.enum_,
                    value: (*v).to_owned(),
                    sort: 2 * (i as i64 + 1),
                    code: Some((*c).to_owned()),
                }
            })
            .collect();
        self.fields.insert(
            id,
            CustomField {
                id,
                name: name.to_owned(),
                field_type: ty,
                code: Some(code.to_owned()),
                sort: id as i64 % 1000,
                is_api_only: false,
                enums,
                entity_type: entity,
            },
        );
    }

    /// Creates a custom field of `entity`.
    pub(crate) fn add_field(
        &mut self,
        entity: EntityType,
        spec: &FieldSpec,
        sort: Option<i64>,
    ) -> CustomField {
        self.seq.field += 1;
        let id = self.seq.field;
        let enums = spec
            .enums
            .iter()
            .enumerate()
            .map(|(i, v)| {
                self.seq.enum_ += 1;
                EnumOption {
                    id: self.seq.enum_,
                    value: v.clone(),
                    sort: 500 + i as i64,
                    code: None,
                }
            })
            .collect();
        let field = CustomField {
            id,
            name: spec.name.clone(),
            field_type: spec.field_type,
            code: spec.code.clone(),
            sort: sort.unwrap_or(500),
            is_api_only: spec.is_api_only,
            enums,
            entity_type: entity,
        };
        self.fields.insert(id, field.clone());
        field
    }

    /// Fields of one entity type, by id.
    pub(crate) fn fields_of(&self, entity: EntityType) -> Vec<&CustomField> {
        self.fields
            .values()
            .filter(|f| f.entity_type == entity)
            .collect()
    }

    pub(crate) fn user_exists(&self, id: u64) -> bool {
        self.users.iter().any(|u| u.id == id)
    }

    fn main_pipeline(&self) -> Option<&Pipeline> {
        self.pipelines
            .iter()
            .find(|p| p.is_main)
            .or_else(|| self.pipelines.first())
    }

    fn stage_in(&self, pipeline_id: u64, status_id: u64) -> bool {
        self.pipelines
            .iter()
            .any(|p| p.id == pipeline_id && p.stages.iter().any(|s| s.id == status_id))
    }

    fn first_stage(p: &Pipeline) -> u64 {
        p.stages
            .iter()
            .find(|s| s.kind == 0)
            .map_or(STATUS_WON, |s| s.id)
    }

    pub(crate) fn next_event_id(&mut self) -> String {
        self.seq.event += 1;
        event_id(self.account_id, self.seq.event)
    }

    fn tag_named(&mut self, name: &str) -> Tag {
        if let Some(t) = self.tags.iter().find(|t| t.name == name) {
            return t.clone();
        }
        self.seq.tag += 1;
        let tag = Tag {
            id: self.seq.tag,
            name: name.to_owned(),
        };
        self.tags.push(tag.clone());
        tag
    }

    // ------------------------------------------------------------------ custom fields

    fn find_field(
        &self,
        entity: EntityType,
        id: Option<u64>,
        code: Option<&str>,
    ) -> Option<&CustomField> {
        self.fields.values().find(|f| {
            f.entity_type == entity
                && match (id, code) {
                    (Some(id), _) => f.id == id,
                    (None, Some(code)) => f.code.as_deref() == Some(code),
                    (None, None) => false,
                }
        })
    }

    /// Validates a `custom_fields_values` array for `entity`.
    pub(crate) fn parse_cfv(
        &self,
        entity: EntityType,
        cfv: &Value,
        prefix: &str,
    ) -> Result<FieldChanges, Vec<Invalid>> {
        let Value::Array(items) = cfv else {
            if cfv.is_null() {
                return Ok(Vec::new());
            }
            return Err(vec![Invalid::of_type(
                prefix.trim_end_matches('.'),
                "array",
            )]);
        };
        let mut out = Vec::new();
        let mut errors = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let base = format!("{prefix}{i}");
            let id = item.get("field_id").and_then(json_u64);
            let code = item.get("field_code").and_then(Value::as_str);
            let Some(field) = self.find_field(entity, id, code) else {
                let path = if id.is_some() || code.is_none() {
                    format!("{base}.field_id")
                } else {
                    format!("{base}.field_code")
                };
                errors.push(Invalid::choice(path));
                continue;
            };
            match resolve_values(
                field,
                item.get("values").unwrap_or(&Value::Null),
                &format!("{base}.values"),
            ) {
                Ok(values) => out.push((field.id, values)),
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(errors)
        }
    }

    // ------------------------------------------------------------------ leads

    /// Validates one lead object of a POST (`creating`) or PATCH body.
    pub(crate) fn parse_lead(
        &self,
        obj: &Value,
        creating: bool,
    ) -> Result<LeadInput, Vec<Invalid>> {
        let Value::Object(map) = obj else {
            return Err(vec![Invalid::of_type("", "object")]);
        };
        let mut errors = Vec::new();
        let mut input = LeadInput::default();
        if let Some(v) = map.get("id") {
            match json_u64(v) {
                Some(id) => input.id = Some(id),
                None => errors.push(Invalid::of_type("id", "int")),
            }
        }
        if let Some(v) = map.get("name") {
            match v {
                Value::String(s) => input.name = Some(s.clone()),
                Value::Number(n) => input.name = Some(n.to_string()),
                _ => errors.push(Invalid::of_type("name", "string")),
            }
        }
        if let Some(v) = map.get("price") {
            match v.as_i64() {
                Some(p) if p >= 0 => input.price = Some(p),
                _ => errors.push(Invalid::of_type("price", "int")),
            }
        }
        for (key, slot) in [
            ("status_id", &mut input.status_id),
            ("pipeline_id", &mut input.pipeline_id),
            ("responsible_user_id", &mut input.responsible_user_id),
            ("created_by", &mut input.created_by),
            ("loss_reason_id", &mut input.loss_reason_id),
        ] {
            if let Some(v) = map.get(key) {
                match json_u64(v) {
                    Some(x) => *slot = Some(x),
                    None => errors.push(Invalid::of_type(key, "int")),
                }
            }
        }
        for (key, slot) in [
            ("created_at", &mut input.created_at),
            ("updated_at", &mut input.updated_at),
            ("closed_at", &mut input.closed_at),
        ] {
            if let Some(v) = map.get(key) {
                match v.as_i64() {
                    Some(x) => *slot = Some(x),
                    None => errors.push(Invalid::of_type(key, "int")),
                }
            }
        }
        if let Some(v) = map.get("request_id") {
            input.request_id = Some(match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            });
        }
        if let Some(uid) = input.responsible_user_id {
            if !self.user_exists(uid) {
                errors.push(Invalid::choice("responsible_user_id"));
            }
        }
        if let Some(r) = input.loss_reason_id {
            if r != 0 && !self.loss_reasons.iter().any(|x| x.id == r) {
                errors.push(Invalid::choice("loss_reason_id"));
            }
        }
        if let Some(pid) = input.pipeline_id {
            if !self.pipelines.iter().any(|p| p.id == pid) {
                errors.push(Invalid::choice("pipeline_id"));
            }
        }
        if let Some(sid) = input.status_id {
            let known = match input.pipeline_id {
                Some(pid) => self.stage_in(pid, sid),
                None if creating => self
                    .pipelines
                    .iter()
                    .any(|p| p.stages.iter().any(|s| s.id == sid)),
                None => {
                    let current = input
                        .id
                        .and_then(|id| self.leads.get(&id))
                        .map(|l| l.pipeline_id);
                    current.is_none_or(|pid| self.stage_in(pid, sid))
                }
            };
            if !known {
                errors.push(Invalid::choice("status_id"));
            }
        }
        if let Some(cfv) = map.get("custom_fields_values") {
            match self.parse_cfv(EntityType::Lead, cfv, "custom_fields_values.") {
                Ok(f) => input.fields = f,
                Err(e) => errors.extend(e),
            }
        }
        if let Some(emb) = map.get("_embedded") {
            if let Some(tags) = emb.get("tags") {
                match tags {
                    Value::Array(items) => {
                        let mut names = Vec::new();
                        for (i, t) in items.iter().enumerate() {
                            let by_name = t.get("name").and_then(Value::as_str).map(str::to_owned);
                            let by_id = t
                                .get("id")
                                .and_then(json_u64)
                                .and_then(|id| self.tags.iter().find(|x| x.id == id))
                                .map(|x| x.name.clone());
                            match by_name.or(by_id) {
                                Some(n) => names.push(n),
                                None => errors.push(Invalid::choice(format!("_embedded.tags.{i}"))),
                            }
                        }
                        input.tags = Some(names);
                    }
                    Value::Null => input.tags = Some(Vec::new()),
                    _ => errors.push(Invalid::of_type("_embedded.tags", "array")),
                }
            }
            if creating {
                if let Some(Value::Array(items)) = emb.get("contacts") {
                    for (i, c) in items.iter().enumerate() {
                        match c
                            .get("id")
                            .and_then(json_u64)
                            .filter(|id| self.contacts.contains_key(id))
                        {
                            Some(id) => input.contacts.push(LinkedContact {
                                id,
                                is_main: c
                                    .get("is_main")
                                    .and_then(Value::as_bool)
                                    .unwrap_or(input.contacts.is_empty()),
                            }),
                            None => {
                                errors.push(Invalid::choice(format!("_embedded.contacts.{i}.id")))
                            }
                        }
                    }
                }
                if let Some(Value::Array(items)) = emb.get("companies") {
                    for (i, c) in items.iter().enumerate() {
                        match c
                            .get("id")
                            .and_then(json_u64)
                            .filter(|id| self.companies.contains_key(id))
                        {
                            Some(id) => input.companies.push(id),
                            None => {
                                errors.push(Invalid::choice(format!("_embedded.companies.{i}.id")))
                            }
                        }
                    }
                }
            }
        }
        if !creating {
            match input.id {
                None => errors.push(Invalid::blank("id")),
                Some(id) if !self.leads.contains_key(&id) => {
                    errors.push(Invalid::new("NotFound", "id", "Entity not found"));
                }
                Some(_) => {}
            }
        }
        if errors.is_empty() {
            Ok(input)
        } else {
            Err(errors)
        }
    }

    /// Creates a validated lead; queues `add_lead`.
    pub(crate) fn create_lead(
        &mut self,
        input: LeadInput,
        actor: u64,
        now: i64,
        hooks: &mut Vec<HookItem>,
    ) -> u64 {
        self.seq.lead += 1;
        let id = self.seq.lead;
        let (pipeline_id, status_id) = match (input.pipeline_id, input.status_id) {
            (Some(p), Some(s)) => (p, s),
            (Some(p), None) => {
                let first = self
                    .pipelines
                    .iter()
                    .find(|x| x.id == p)
                    .map_or(STATUS_WON, Self::first_stage);
                (p, first)
            }
            (None, Some(s)) => {
                let main = self
                    .main_pipeline()
                    .filter(|m| m.stages.iter().any(|x| x.id == s));
                let owner = main.or_else(|| {
                    self.pipelines
                        .iter()
                        .find(|p| p.stages.iter().any(|x| x.id == s))
                });
                (owner.map_or(0, |p| p.id), s)
            }
            (None, None) => {
                let main = self.main_pipeline();
                (
                    main.map_or(0, |p| p.id),
                    main.map_or(STATUS_WON, Self::first_stage),
                )
            }
        };
        let created_at = input.created_at.unwrap_or(now);
        let tags = input
            .tags
            .unwrap_or_default()
            .iter()
            .map(|n| self.tag_named(n))
            .collect();
        let mut lead = Lead {
            id,
            name: input.name.unwrap_or_default(),
            price: input.price.unwrap_or(0),
            responsible_user_id: input.responsible_user_id.unwrap_or(actor),
            group_id: 0,
            status_id,
            pipeline_id,
            created_by: input.created_by.unwrap_or(actor),
            updated_by: input.created_by.unwrap_or(actor),
            created_at,
            updated_at: input.updated_at.unwrap_or(created_at),
            closed_at: None,
            loss_reason_id: input.loss_reason_id.filter(|r| *r != 0),
            fields: Vec::new(),
            tags,
            contacts: input.contacts,
            companies: input.companies,
        };
        if lead.name.is_empty() {
            lead.name = format!("Сделка #{id}");
        }
        if status_id == STATUS_WON || status_id == STATUS_LOST {
            lead.closed_at = Some(input.closed_at.unwrap_or(lead.updated_at));
        }
        apply_fields(&mut lead.fields, input.fields);
        self.leads.insert(id, lead);
        let ev = self.next_event_id();
        self.events.push(Event {
            id: ev,
            event_type: "lead_added".into(),
            entity_type: EntityType::Lead,
            entity_id: id,
            created_by: actor,
            created_at,
            value_after: json!([{"lead_status": {"id": status_id, "pipeline_id": pipeline_id}}]),
            value_before: json!([]),
        });
        if let Some(lead) = self.leads.get(&id) {
            hooks.push(webhooks::lead_item(self, lead, "add", None));
        }
        id
    }

    /// Applies a validated change to lead `input.id`; returns whether anything changed.
    /// Queues `update_lead`, and `status_lead` / `responsible_lead` when those moved.
    pub(crate) fn patch_lead(
        &mut self,
        input: LeadInput,
        actor: u64,
        now: i64,
        hooks: &mut Vec<HookItem>,
    ) -> bool {
        let Some(id) = input.id else {
            return false;
        };
        let Some(before) = self.leads.get(&id).cloned() else {
            return false;
        };
        let mut after = before.clone();
        if let Some(n) = input.name {
            after.name = n;
        }
        if let Some(p) = input.price {
            after.price = p;
        }
        if let Some(p) = input.pipeline_id {
            after.pipeline_id = p;
            if input.status_id.is_none() && !self.stage_in(p, after.status_id) {
                after.status_id = self
                    .pipelines
                    .iter()
                    .find(|x| x.id == p)
                    .map_or(after.status_id, Self::first_stage);
            }
        }
        if let Some(s) = input.status_id {
            after.status_id = s;
        }
        if let Some(u) = input.responsible_user_id {
            after.responsible_user_id = u;
        }
        if let Some(r) = input.loss_reason_id {
            after.loss_reason_id = (r != 0).then_some(r);
        }
        apply_fields(&mut after.fields, input.fields);
        if let Some(names) = input.tags {
            after.tags = names.iter().map(|n| self.tag_named(n)).collect();
        }
        if after == before {
            return false;
        }
        let at = input.updated_at.unwrap_or(now).max(before.updated_at);
        after.updated_at = at;
        after.updated_by = actor;
        let status_moved =
            before.status_id != after.status_id || before.pipeline_id != after.pipeline_id;
        if status_moved {
            after.closed_at =
                (after.status_id == STATUS_WON || after.status_id == STATUS_LOST).then_some(at);
        }
        self.lead_events(&before, &after, actor, at);
        self.leads.insert(id, after);
        let Some(lead) = self.leads.get(&id) else {
            return false;
        };
        let old_status = status_moved.then_some((before.status_id, before.pipeline_id));
        hooks.push(webhooks::lead_item(self, lead, "update", old_status));
        if status_moved {
            hooks.push(webhooks::lead_item(self, lead, "status", old_status));
        }
        if before.responsible_user_id != lead.responsible_user_id {
            hooks.push(webhooks::lead_item(self, lead, "responsible", None));
        }
        true
    }

    fn lead_events(&mut self, before: &Lead, after: &Lead, actor: u64, at: i64) {
        let mut new: Vec<(String, Value, Value)> = Vec::new();
        if before.status_id != after.status_id || before.pipeline_id != after.pipeline_id {
            new.push((
                "lead_status_changed".to_owned(),
                json!([{"lead_status": {"id": after.status_id, "pipeline_id": after.pipeline_id}}]),
                json!([{"lead_status": {"id": before.status_id, "pipeline_id": before.pipeline_id}}]),
            ));
        }
        if before.responsible_user_id != after.responsible_user_id {
            new.push((
                "entity_responsible_changed".to_owned(),
                json!([{"responsible_user": {"id": after.responsible_user_id}}]),
                json!([{"responsible_user": {"id": before.responsible_user_id}}]),
            ));
        }
        if before.price != after.price {
            new.push((
                "sale_field_changed".to_owned(),
                json!([{"sale_field_value": {"sale": after.price}}]),
                json!([{"sale_field_value": {"sale": before.price}}]),
            ));
        }
        if before.name != after.name {
            new.push((
                "name_field_changed".to_owned(),
                json!([{"name_field_value": {"name": after.name}}]),
                json!([{"name_field_value": {"name": before.name}}]),
            ));
        }
        let mut ids: Vec<u64> = before
            .fields
            .iter()
            .chain(&after.fields)
            .map(|f| f.field_id)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        for fid in ids {
            let (b, a) = (before.values(fid), after.values(fid));
            if b != a {
                let ty = self
                    .fields
                    .get(&fid)
                    .map_or("text", |f| f.field_type.as_str());
                new.push((
                    format!("custom_field_{fid}_value_changed"),
                    cf_event_value(fid, ty, a),
                    cf_event_value(fid, ty, b),
                ));
            }
        }
        for (ty, value_after, value_before) in new {
            let id = self.next_event_id();
            self.events.push(Event {
                id,
                event_type: ty,
                entity_type: EntityType::Lead,
                entity_id: after.id,
                created_by: actor,
                created_at: at,
                value_after,
                value_before,
            });
        }
    }

    // ------------------------------------------------------------------ contacts, companies

    /// Adds a contact with POSITION/EMAIL/PHONE values.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn add_contact(
        &mut self,
        name: &str,
        position: Option<&str>,
        emails: &[String],
        phones: &[String],
        responsible: u64,
        company: Option<u64>,
        now: i64,
    ) -> u64 {
        self.seq.contact += 1;
        let id = self.seq.contact;
        let mut fields = Vec::new();
        if let Some(p) = position {
            self.push_coded(
                &mut fields,
                EntityType::Contact,
                "POSITION",
                &[p.to_owned()],
            );
        }
        self.push_coded(&mut fields, EntityType::Contact, "EMAIL", emails);
        self.push_coded(&mut fields, EntityType::Contact, "PHONE", phones);
        let (first, last) = match name.split_once(' ') {
            Some((f, l)) => (f.to_owned(), l.to_owned()),
            None => (name.to_owned(), String::new()),
        };
        self.contacts.insert(
            id,
            Contact {
                id,
                name: name.to_owned(),
                first_name: first,
                last_name: last,
                responsible_user_id: responsible,
                created_by: responsible,
                updated_by: responsible,
                created_at: now,
                updated_at: now,
                fields,
                companies: company.into_iter().collect(),
                tags: Vec::new(),
            },
        );
        id
    }

    /// Adds a company with PHONE/EMAIL/WEB/ADDRESS values.
    pub(crate) fn add_company(
        &mut self,
        name: &str,
        phones: &[String],
        emails: &[String],
        web: Option<&str>,
        address: Option<&str>,
        now: i64,
    ) -> u64 {
        self.seq.company += 1;
        let id = self.seq.company;
        let mut fields = Vec::new();
        self.push_coded(&mut fields, EntityType::Company, "PHONE", phones);
        self.push_coded(&mut fields, EntityType::Company, "EMAIL", emails);
        if let Some(w) = web {
            self.push_coded(&mut fields, EntityType::Company, "WEB", &[w.to_owned()]);
        }
        if let Some(a) = address {
            self.push_coded(&mut fields, EntityType::Company, "ADDRESS", &[a.to_owned()]);
        }
        let user = self.current_user_id();
        self.companies.insert(
            id,
            Company {
                id,
                name: name.to_owned(),
                responsible_user_id: user,
                created_by: user,
                updated_by: user,
                created_at: now,
                updated_at: now,
                fields,
                tags: Vec::new(),
            },
        );
        id
    }

    /// Sets a contact's coded field (`POSITION`, `EMAIL`, `PHONE`) to `values` (none
    /// clears it) as a user would in the card, and logs the change as amoCRM does:
    /// `custom_field_{ID}_value_changed` of the contact. Returns whether it changed.
    pub(crate) fn set_contact_field(
        &mut self,
        contact_id: u64,
        code: &str,
        values: &[String],
        actor: u64,
        now: i64,
    ) -> bool {
        let Some(field) = self.find_field(EntityType::Contact, None, Some(code)) else {
            return false;
        };
        let (fid, ty) = (field.id, field.field_type.as_str());
        let Some(contact) = self.contacts.get(&contact_id) else {
            return false;
        };
        let of = |fields: &[FieldValues]| {
            fields
                .iter()
                .find(|f| f.field_id == fid)
                .map(|f| f.values.clone())
        };
        let before = of(&contact.fields);
        let mut fields: Vec<FieldValues> = contact
            .fields
            .iter()
            .filter(|f| f.field_id != fid)
            .cloned()
            .collect();
        self.push_coded(&mut fields, EntityType::Contact, code, values);
        let after = of(&fields);
        if before == after {
            return false;
        }
        let event = Event {
            id: String::new(),
            event_type: format!("custom_field_{fid}_value_changed"),
            entity_type: EntityType::Contact,
            entity_id: contact_id,
            created_by: actor,
            created_at: now,
            value_after: cf_event_value(fid, ty, after.as_deref()),
            value_before: cf_event_value(fid, ty, before.as_deref()),
        };
        let id = self.next_event_id();
        self.events.push(Event { id, ..event });
        if let Some(c) = self.contacts.get_mut(&contact_id) {
            c.fields = fields;
            c.updated_at = now;
            c.updated_by = actor;
        }
        true
    }

    fn push_coded(
        &self,
        fields: &mut Vec<FieldValues>,
        entity: EntityType,
        code: &str,
        values: &[String],
    ) {
        if values.is_empty() {
            return;
        }
        let Some(field) = self.find_field(entity, None, Some(code)) else {
            return;
        };
        let work = field.enums.first();
        let values = values
            .iter()
            .map(|v| StoredValue {
                value: Value::String(v.clone()),
                enum_id: work.map(|e| e.id),
                enum_code: work.and_then(|e| e.code.clone()),
            })
            .collect();
        fields.push(FieldValues {
            field_id: field.id,
            values,
        });
    }

    // ------------------------------------------------------------------ notes

    /// Adds a note; queues `note_lead` for lead notes.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn add_note(
        &mut self,
        entity: EntityType,
        entity_id: u64,
        note_type: &str,
        params: Value,
        actor: u64,
        now: i64,
        hooks: &mut Vec<HookItem>,
    ) -> u64 {
        self.seq.note += 1;
        let id = self.seq.note;
        let note = Note {
            id,
            entity_type: entity,
            entity_id,
            note_type: note_type.to_owned(),
            params,
            created_by: actor,
            created_at: now,
            updated_at: now,
            responsible_user_id: actor,
        };
        let event = match note_type {
            "common" => Some("common_note_added"),
            "call_in" => Some("incoming_call"),
            "call_out" => Some("outgoing_call"),
            "sms_in" => Some("incoming_sms"),
            "sms_out" => Some("outgoing_sms"),
            "attachment" => Some("attachment_note_added"),
            "geolocation" => Some("geo_note_added"),
            "service_message" | "extended_service_message" => Some("service_note_added"),
            _ => None,
        };
        if let Some(ty) = event {
            let eid = self.next_event_id();
            self.events.push(Event {
                id: eid,
                event_type: ty.to_owned(),
                entity_type: entity,
                entity_id,
                created_by: actor,
                created_at: now,
                value_after: json!([{"note": {"id": id}}]),
                value_before: json!([]),
            });
        }
        if entity == EntityType::Lead {
            hooks.push(webhooks::note_item(self, &note));
        }
        self.notes.insert(id, note);
        id
    }

    // ------------------------------------------------------------------ tasks

    /// Validates one task object of a POST (`creating`) or PATCH body.
    pub(crate) fn parse_task(
        &self,
        obj: &Value,
        creating: bool,
    ) -> Result<TaskInput, Vec<Invalid>> {
        let Value::Object(map) = obj else {
            return Err(vec![Invalid::of_type("", "object")]);
        };
        let mut errors = Vec::new();
        let mut t = TaskInput::default();
        if let Some(v) = map.get("id") {
            match json_u64(v) {
                Some(id) => t.id = Some(id),
                None => errors.push(Invalid::of_type("id", "int")),
            }
        }
        match map.get("text") {
            Some(Value::String(s)) if !s.trim().is_empty() => t.text = Some(s.clone()),
            Some(Value::String(_)) => errors.push(Invalid::blank("text")),
            Some(Value::Null) | None if creating => errors.push(Invalid::blank("text")),
            Some(Value::Null) | None => {}
            Some(_) => errors.push(Invalid::of_type("text", "string")),
        }
        match map.get("complete_till") {
            Some(v) => match v.as_i64() {
                Some(x) => t.complete_till = Some(x),
                None => errors.push(Invalid::of_type("complete_till", "int")),
            },
            None if creating => errors.push(Invalid::blank("complete_till")),
            None => {}
        }
        let entity_type = map
            .get("entity_type")
            .map(|v| v.as_str().and_then(EntityType::from_name));
        let entity_id = map.get("entity_id").map(json_u64);
        match (entity_type, entity_id) {
            (None, None) => {}
            (Some(Some(ty)), Some(Some(id))) => {
                let exists = match ty {
                    EntityType::Lead => self.leads.contains_key(&id),
                    EntityType::Contact => self.contacts.contains_key(&id),
                    EntityType::Company => self.companies.contains_key(&id),
                };
                if exists {
                    t.entity = Some((ty, id));
                } else {
                    errors.push(Invalid::new("NotFound", "entity_id", "Entity not found"));
                }
            }
            (Some(None), _) => errors.push(Invalid::choice("entity_type")),
            (_, Some(None)) => errors.push(Invalid::of_type("entity_id", "int")),
            (None, Some(_)) => errors.push(Invalid::blank("entity_type")),
            (Some(_), None) => errors.push(Invalid::blank("entity_id")),
        }
        if let Some(v) = map.get("task_type_id") {
            match json_u64(v) {
                Some(x @ (1 | 2)) => t.task_type_id = Some(x),
                Some(_) => errors.push(Invalid::choice("task_type_id")),
                None => errors.push(Invalid::of_type("task_type_id", "int")),
            }
        }
        if let Some(v) = map.get("responsible_user_id") {
            match json_u64(v) {
                Some(u) if self.user_exists(u) => t.responsible_user_id = Some(u),
                Some(_) => errors.push(Invalid::choice("responsible_user_id")),
                None => errors.push(Invalid::of_type("responsible_user_id", "int")),
            }
        }
        if let Some(v) = map.get("is_completed") {
            match v.as_bool() {
                Some(b) => t.is_completed = Some(b),
                None => errors.push(Invalid::of_type("is_completed", "bool")),
            }
        }
        if let Some(v) = map.get("duration") {
            match v.as_i64() {
                Some(d) if d >= 0 => t.duration = Some(d),
                _ => errors.push(Invalid::of_type("duration", "int")),
            }
        }
        if let Some(r) = map.get("result") {
            match r.get("text") {
                Some(Value::String(s)) => t.result_text = Some(s.clone()),
                None | Some(Value::Null) => {}
                Some(_) => errors.push(Invalid::of_type("result.text", "string")),
            }
        }
        if let Some(v) = map.get("request_id") {
            t.request_id = Some(match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            });
        }
        if !creating {
            match t.id {
                None => errors.push(Invalid::blank("id")),
                Some(id) if !self.tasks.contains_key(&id) => {
                    errors.push(Invalid::new("NotFound", "id", "Entity not found"));
                }
                Some(_) => {}
            }
        }
        if errors.is_empty() {
            Ok(t)
        } else {
            Err(errors)
        }
    }

    /// Creates a validated task.
    pub(crate) fn create_task(&mut self, t: TaskInput, actor: u64, now: i64) -> u64 {
        self.seq.task += 1;
        let id = self.seq.task;
        let (entity_type, entity_id) = match t.entity {
            Some((ty, eid)) => (Some(ty), Some(eid)),
            None => (None, None),
        };
        self.tasks.insert(
            id,
            Task {
                id,
                text: t.text.unwrap_or_default(),
                complete_till: t.complete_till.unwrap_or(now),
                entity_type,
                entity_id,
                task_type_id: t.task_type_id.unwrap_or(1),
                responsible_user_id: t.responsible_user_id.unwrap_or(actor),
                is_completed: t.is_completed.unwrap_or(false),
                duration: t.duration.unwrap_or(0),
                result_text: t.result_text,
                created_by: actor,
                updated_by: actor,
                created_at: now,
                updated_at: now,
            },
        );
        id
    }

    /// Applies a validated task change; returns whether anything changed.
    pub(crate) fn patch_task(&mut self, t: TaskInput, actor: u64, now: i64) -> bool {
        let Some(task) = t.id.and_then(|id| self.tasks.get_mut(&id)) else {
            return false;
        };
        let before = task.clone();
        if let Some(x) = t.text {
            task.text = x;
        }
        if let Some(x) = t.complete_till {
            task.complete_till = x;
        }
        if let Some((ty, id)) = t.entity {
            task.entity_type = Some(ty);
            task.entity_id = Some(id);
        }
        if let Some(x) = t.task_type_id {
            task.task_type_id = x;
        }
        if let Some(x) = t.responsible_user_id {
            task.responsible_user_id = x;
        }
        if let Some(x) = t.is_completed {
            task.is_completed = x;
        }
        if let Some(x) = t.duration {
            task.duration = x;
        }
        if let Some(x) = t.result_text {
            task.result_text = Some(x);
        }
        if *task == before {
            return false;
        }
        task.updated_at = now.max(before.updated_at);
        task.updated_by = actor;
        true
    }

    /// The earliest deadline of the open tasks on a record.
    pub(crate) fn closest_task_at(&self, entity: EntityType, id: u64) -> Option<i64> {
        self.tasks
            .values()
            .filter(|t| !t.is_completed && t.entity_type == Some(entity) && t.entity_id == Some(id))
            .map(|t| t.complete_till)
            .min()
    }
}

/// Replaces, adds or clears field values in place (first-write order is kept).
fn apply_fields(fields: &mut Vec<FieldValues>, changes: FieldChanges) {
    for (fid, values) in changes {
        match values.filter(|v| !v.is_empty()) {
            Some(values) => match fields.iter_mut().find(|f| f.field_id == fid) {
                Some(slot) => slot.values = values,
                None => fields.push(FieldValues {
                    field_id: fid,
                    values,
                }),
            },
            None => fields.retain(|f| f.field_id != fid),
        }
    }
}

fn cf_event_value(field_id: u64, ty: &str, values: Option<&[StoredValue]>) -> Value {
    let Some(values) = values else {
        return json!([]);
    };
    Value::Array(
        values
            .iter()
            .map(|v| {
                json!({"custom_field_value": {
                    "field_id": field_id,
                    "field_type": ty,
                    "enum_id": v.enum_id,
                    "text": v.text(),
                }})
            })
            .collect(),
    )
}

/// Turns a `values` array into stored values for `field`; `None` clears the field.
pub(crate) fn resolve_values(
    field: &CustomField,
    values: &Value,
    path: &str,
) -> Result<Option<Vec<StoredValue>>, Invalid> {
    let items = match values {
        Value::Null => return Ok(None),
        Value::Array(items) => items,
        _ => return Err(Invalid::of_type(path, "array")),
    };
    if items.is_empty() {
        return Ok(None);
    }
    let single = !matches!(
        field.field_type,
        FieldType::Multiselect | FieldType::Multitext
    );
    if single && items.len() > 1 {
        return Err(Invalid::new(
            "TooManyValues",
            path,
            "This field accepts a single value.",
        ));
    }
    let mut out = Vec::with_capacity(items.len());
    for (j, item) in items.iter().enumerate() {
        let vpath = format!("{path}.{j}");
        let Value::Object(obj) = item else {
            return Err(Invalid::of_type(vpath, "object"));
        };
        out.push(resolve_one(field, obj, &vpath)?);
    }
    Ok(Some(out))
}

fn resolve_one(
    field: &CustomField,
    obj: &Map<String, Value>,
    vpath: &str,
) -> Result<StoredValue, Invalid> {
    let value = obj.get("value").filter(|v| !v.is_null());
    let plain = |v: Value| StoredValue {
        value: v,
        enum_id: None,
        enum_code: None,
    };
    match field.field_type {
        FieldType::Text | FieldType::Textarea | FieldType::Url => match value {
            Some(Value::String(s)) => Ok(plain(Value::String(s.clone()))),
            Some(Value::Number(n)) => Ok(plain(Value::String(n.to_string()))),
            Some(_) => Err(Invalid::of_type(format!("{vpath}.value"), "string")),
            None => Err(Invalid::blank(format!("{vpath}.value"))),
        },
        FieldType::Numeric => {
            let n = match value {
                Some(Value::Number(n)) => n.as_f64(),
                Some(Value::String(s)) => s.trim().replace(',', ".").parse::<f64>().ok(),
                _ => None,
            };
            match n.filter(|x| x.is_finite()) {
                Some(x) => Ok(plain(Value::String(fmt_number(x)))),
                None => Err(Invalid::of_type(format!("{vpath}.value"), "numeric")),
            }
        }
        FieldType::Date => {
            let ts = match value {
                Some(Value::Number(n)) => n.as_i64(),
                Some(Value::String(s)) => s.trim().parse::<i64>().ok(),
                _ => None,
            };
            match ts {
                Some(t) => Ok(plain(json!(t))),
                None => Err(Invalid::of_type(format!("{vpath}.value"), "date")),
            }
        }
        FieldType::Checkbox => match value {
            Some(Value::Bool(b)) => Ok(plain(Value::Bool(*b))),
            Some(v) if v.as_i64() == Some(0) || v.as_i64() == Some(1) => {
                Ok(plain(Value::Bool(v.as_i64() == Some(1))))
            }
            _ => Err(Invalid::of_type(format!("{vpath}.value"), "bool")),
        },
        FieldType::Select | FieldType::Radiobutton | FieldType::Multiselect => {
            let by_id = obj.get("enum_id").filter(|v| !v.is_null());
            let by_code = obj.get("enum_code").and_then(Value::as_str);
            let found = if let Some(v) = by_id {
                let id = json_u64(v);
                field.enums.iter().find(|e| Some(e.id) == id)
            } else if let Some(code) = by_code {
                field.enums.iter().find(|e| e.code.as_deref() == Some(code))
            } else if let Some(Value::String(text)) = value {
                field.enums.iter().find(|e| &e.value == text)
            } else {
                return Err(Invalid::blank(format!("{vpath}.enum_id")));
            };
            match found {
                Some(e) => Ok(StoredValue {
                    value: Value::String(e.value.clone()),
                    enum_id: Some(e.id),
                    enum_code: e.code.clone(),
                }),
                None => {
                    let which = if by_id.is_some() {
                        "enum_id"
                    } else if by_code.is_some() {
                        "enum_code"
                    } else {
                        "value"
                    };
                    Err(Invalid::choice(format!("{vpath}.{which}")))
                }
            }
        }
        FieldType::Multitext => {
            let text = match value {
                Some(Value::String(s)) if !s.is_empty() => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                _ => return Err(Invalid::blank(format!("{vpath}.value"))),
            };
            let by_id = obj.get("enum_id").and_then(json_u64);
            let by_code = obj.get("enum_code").and_then(Value::as_str);
            let e = match (by_id, by_code) {
                (Some(id), _) => field.enums.iter().find(|e| e.id == id),
                (None, Some(code)) => field.enums.iter().find(|e| e.code.as_deref() == Some(code)),
                (None, None) => field.enums.first(),
            };
            match e {
                Some(e) => Ok(StoredValue {
                    value: Value::String(text),
                    enum_id: Some(e.id),
                    enum_code: e.code.clone(),
                }),
                None => Err(Invalid::choice(format!("{vpath}.enum_code"))),
            }
        }
    }
}

/// Formats a number the way amoCRM returns numeric field values ("87", "87.5").
pub(crate) fn fmt_number(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        let s = format!("{x}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

/// A non-negative integer from a JSON number or numeric string.
pub(crate) fn json_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The JSON a client would send for a seed-API field value.
pub(crate) fn seed_value_json(field_id: u64, value: Option<&FieldValue>) -> Value {
    let values = match value {
        None => Value::Null,
        Some(FieldValue::Text(s)) => json!([{"value": s}]),
        Some(FieldValue::Number(n)) => json!([{"value": n}]),
        Some(FieldValue::Enum(id)) => json!([{"enum_id": id}]),
        Some(FieldValue::Enums(ids)) => {
            Value::Array(ids.iter().map(|id| json!({"enum_id": id})).collect())
        }
        Some(FieldValue::Date(t)) => json!([{"value": t}]),
        Some(FieldValue::Flag(b)) => json!([{"value": b}]),
    };
    json!({"field_id": field_id, "values": values})
}

/// A 26-character lowercase id shaped like amoCRM's event ids.
fn event_id(account: u64, seq: u64) -> String {
    const ALPHABET: &[u8] = b"0123456789abcdefghjkmnpqrstvwxyz";
    let mut n: u128 = (u128::from(account) << 64) | u128::from(seq);
    let mut out = [b'0'; 26];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(n % 32) as usize];
        n /= 32;
    }
    out[0] = b'0';
    out[1] = b'1';
    String::from_utf8_lossy(&out).into_owned()
}

/// The default account: two users, one pipeline with four stages plus won/lost.
pub(crate) fn default_pipelines() -> Vec<Pipeline> {
    let stage = |id: u64, name: &str, sort: i64, kind: u8| Stage {
        id,
        name: name.to_owned(),
        sort,
        kind,
    };
    vec![Pipeline {
        id: 4_740_529,
        name: "Воронка".into(),
        is_main: true,
        stages: vec![
            stage(43_315_789, "Неразобранное", 10, 1),
            stage(43_315_792, "Первичный контакт", 20, 0),
            stage(43_315_795, "Переговоры", 30, 0),
            stage(43_315_798, "Принимают решение", 40, 0),
            stage(43_315_801, "Согласование договора", 50, 0),
            stage(STATUS_WON, "Успешно реализовано", 10_000, 0),
            stage(STATUS_LOST, "Закрыто и не реализовано", 11_000, 0),
        ],
    }]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> State {
        State::new(
            AccountSeed {
                id: 29_715_442,
                subdomain: "test".into(),
                name: "Test".into(),
                users: vec![User {
                    id: 1,
                    name: "Admin".into(),
                    email: "a@x.test".into(),
                    is_admin: true,
                }],
                pipelines: default_pipelines(),
            },
            "http://127.0.0.1:1".into(),
        )
    }

    #[test]
    fn numbers_are_formatted_like_amocrm() {
        assert_eq!(fmt_number(87.0), "87");
        assert_eq!(fmt_number(87.5), "87.5");
        assert_eq!(fmt_number(-3.25), "-3.25");
    }

    #[test]
    fn event_ids_are_unique_and_shaped() {
        let a = event_id(29_715_442, 1);
        let b = event_id(29_715_442, 2);
        assert_ne!(a, b);
        assert_eq!(a.len(), 26);
        assert!(a.starts_with("01"));
    }

    #[test]
    fn noop_patch_changes_nothing() {
        let mut st = state();
        let score = st.add_field(
            EntityType::Lead,
            &FieldSpec::new("Score", FieldType::Numeric),
            None,
        );
        let mut hooks = Vec::new();
        let input = st.parse_lead(&json!({"name": "A", "custom_fields_values": [{"field_id": score.id, "values": [{"value": 50}]}], "updated_at": 1000, "created_at": 1000}), true).unwrap();
        let id = st.create_lead(input, 1, 1000, &mut hooks);
        let events = st.events.len();
        let same = st.parse_lead(&json!({"id": id, "custom_fields_values": [{"field_id": score.id, "values": [{"value": "50"}]}]}), false).unwrap();
        assert!(!st.patch_lead(same, 1, 2000, &mut hooks));
        assert_eq!(st.leads[&id].updated_at, 1000);
        assert_eq!(st.events.len(), events);
        let changed = st.parse_lead(&json!({"id": id, "custom_fields_values": [{"field_id": score.id, "values": [{"value": 51}]}]}), false).unwrap();
        assert!(st.patch_lead(changed, 1, 2000, &mut hooks));
        assert_eq!(st.leads[&id].updated_at, 2000);
        assert_eq!(st.leads[&id].text(score.id).as_deref(), Some("51"));
    }

    #[test]
    fn select_accepts_id_code_or_text_and_rejects_unknown() {
        let mut st = state();
        let tier = st.add_field(
            EntityType::Lead,
            &FieldSpec::select("Tier", &["A", "B"]),
            None,
        );
        let b = tier.enums[1].id;
        let ok = st
            .parse_cfv(
                EntityType::Lead,
                &json!([{"field_id": tier.id, "values": [{"value": "B"}]}]),
                "custom_fields_values.",
            )
            .unwrap();
        assert_eq!(ok[0].1.as_ref().unwrap()[0].enum_id, Some(b));
        let err = st
            .parse_cfv(
                EntityType::Lead,
                &json!([{"field_id": tier.id, "values": [{"enum_id": 1}]}]),
                "custom_fields_values.",
            )
            .unwrap_err();
        assert_eq!(err[0].path, "custom_fields_values.0.values.0.enum_id");
        let err = st
            .parse_cfv(
                EntityType::Lead,
                &json!([{"field_id": 1, "values": [{"value": 1}]}]),
                "custom_fields_values.",
            )
            .unwrap_err();
        assert_eq!(err[0].code, "NotSupportedChoice");
        assert_eq!(err[0].path, "custom_fields_values.0.field_id");
    }
}

//! The call-now task: a Bitrix24 task bound to the lead (`UF_CRM_TASK = L_<id>`) or
//! deal (`D_<id>`), or the CRM-native to-do on its card, as `[portal.task] kind` says. The recovery
//! marker is put into the description so a task created just before a crash is found.

use std::collections::BTreeMap;

use chrono::SecondsFormat;
use leadscore_bitrix24::batch::BatchCommand;
use leadscore_bitrix24::client::{decode, decode_list, id_of, task_fields};
use leadscore_bitrix24::types::{ActivityRecord, TaskRecord};
use serde_json::{json, Value};

use super::entity::Entity;
use super::{is_numeric_id, to_crm, Bitrix24Crm, ACTIVITY_SELECT};
use crate::config::{TaskKind, TaskSection};
use crate::crm::{prepare_tasks, task_results, CrmError, LeadId, TaskRef, TaskRequest};

impl Bitrix24Crm {
    /// Our task (or to-do) on a lead, found by its marker.
    pub(super) async fn find(
        &self,
        settings: &TaskSection,
        lead_id: &str,
        marker: &str,
    ) -> Result<Option<TaskRef>, CrmError> {
        let wanted = [(lead_id.to_string(), marker.to_string())];
        let mut found = self.find_many(settings, &wanted).await?;
        Ok(found.remove(lead_id).flatten())
    }

    /// [`Self::find`] for many leads, 50 look-ups to a `batch` request: a turn whose
    /// tasks were intended before a crash or a failed task batch checks them all in one
    /// request, not one each. Each look-up lists the tasks bound to the lead (or its
    /// `CRM_TODO` activities, newest first) and picks ours by its marker.
    pub(super) async fn find_many(
        &self,
        settings: &TaskSection,
        wanted: &[(LeadId, String)],
    ) -> Result<BTreeMap<LeadId, Option<TaskRef>>, CrmError> {
        let mut out = BTreeMap::new();
        let mut commands = Vec::new();
        let mut keys = Vec::new();
        for (i, (lead, marker)) in wanted.iter().enumerate() {
            let Some((entity, raw)) = Entity::of(lead) else {
                out.insert(lead.clone(), None);
                continue;
            };
            let key = format!("f{i}");
            commands.push(match settings.kind {
                TaskKind::Todo => BatchCommand::new(
                    key.clone(),
                    "crm.activity.list",
                    json!({"filter": {"OWNER_TYPE_ID": entity.owner_type(), "OWNER_ID": raw, "PROVIDER_ID": "CRM_TODO"},
                           "select": ACTIVITY_SELECT, "order": {"ID": "DESC"}, "start": 0}),
                ),
                TaskKind::Task => BatchCommand::new(
                    key.clone(),
                    "tasks.task.list",
                    json!({"filter": {"UF_CRM_TASK": entity.binding(raw)},
                           "select": ["ID", "TITLE", "DESCRIPTION", "STATUS", "RESPONSIBLE_ID"]}),
                ),
            });
            keys.push((key, lead, marker));
        }
        if commands.is_empty() {
            return Ok(out);
        }
        let mut answers = self.client.batch_all(commands).await.map_err(to_crm)?;
        for (key, lead, marker) in keys {
            let answer = answers.remove(&key).ok_or_else(|| CrmError::Transient {
                message: "the batch answer lacks a task look-up".into(),
                retry_after: None,
            })?;
            let rows = answer.result.map_err(to_crm)?;
            out.insert(lead.clone(), pick(settings.kind, &rows, marker)?);
        }
        Ok(out)
    }

    /// Create the call-now task (`tasks.task.add`) or to-do (`crm.activity.todo.add`).
    pub(super) async fn create(
        &self,
        settings: &TaskSection,
        task: &TaskRequest,
    ) -> Result<TaskRef, CrmError> {
        let (method, params) = add_command(settings, task)?;
        let resp = self.client.call(method, params).await.map_err(to_crm)?;
        created(method, &resp.result)
    }

    /// Create many call-now tasks or to-dos, 50 commands per `batch` request; each
    /// command's own error stays with its task (one refused or failed command does not
    /// fail the others). A batch without an answer gives each of its tasks that error
    /// (ambiguous: the markers let recovery find what was created).
    pub(super) async fn create_many(
        &self,
        settings: &TaskSection,
        requests: &[TaskRequest],
    ) -> Vec<Result<TaskRef, CrmError>> {
        let (mut out, todo) = prepare_tasks(requests, |r| add_command(settings, r));
        let mut commands = Vec::new();
        // (request index, command key, method) of every command sent.
        let mut keys = Vec::new();
        for (i, (method, params)) in todo {
            keys.push((i, format!("t{i}"), method));
            commands.push(BatchCommand::new(format!("t{i}"), method, params));
        }
        if !commands.is_empty() {
            match self.client.batch_all(commands).await {
                Ok(mut answers) => {
                    for (i, key, method) in &keys {
                        let res = match answers.remove(key) {
                            Some(a) => a
                                .result
                                .map_err(to_crm)
                                .and_then(|v| created(method, &v)),
                            None => Err(CrmError::Transient {
                                message: "the batch answer lacks a task command".into(),
                                retry_after: None,
                            }),
                        };
                        if let Some(slot) = out.get_mut(*i) {
                            *slot = Some(res);
                        }
                    }
                }
                Err(e) => {
                    let e = to_crm(e);
                    for (i, _, _) in &keys {
                        if let Some(slot) = out.get_mut(*i) {
                            *slot = Some(Err(e.clone()));
                        }
                    }
                }
            }
        }
        task_results(out)
    }

    /// Is our task still open? Only a task bound to `lead_id` counts: a task id that
    /// now belongs to another lead or deal (or to none) is not this one's open task.
    pub(super) async fn open(
        &self,
        settings: &TaskSection,
        lead_id: &str,
        task_id: &str,
    ) -> Result<bool, CrmError> {
        let Some((entity, raw)) = Entity::of(lead_id) else {
            return Ok(false);
        };
        if !is_numeric_id(task_id) {
            return Ok(false);
        }
        match settings.kind {
            TaskKind::Task => {
                let tasks = self
                    .client
                    .task_list(
                        json!({ "ID": task_id, "UF_CRM_TASK": entity.binding(raw) }),
                        &["ID", "STATUS"],
                    )
                    .await
                    .map_err(to_crm)?;
                Ok(tasks.iter().any(|t| t.id == task_id && t.is_open()))
            }
            TaskKind::Todo => match self.client.activity_get(task_id).await {
                Ok(a) => Ok(a.owner_id.as_deref() == Some(raw)
                    && a.owner_type_id.as_deref() == Some(&entity.owner_type().to_string())
                    && a.completed.as_deref() != Some("Y")),
                Err(e) if e.is_not_found() => Ok(false),
                Err(e) => Err(to_crm(e)),
            },
        }
    }
}

/// Ours among a look-up's rows (by the marker in the description): a task of
/// `tasks.task.list` (`{"tasks": [...]}`) or a to-do of `crm.activity.list`.
fn pick(kind: TaskKind, rows: &Value, marker: &str) -> Result<Option<TaskRef>, CrmError> {
    let ours = |d: Option<&str>| d.is_some_and(|d| d.contains(marker));
    Ok(match kind {
        TaskKind::Task => {
            let tasks = rows.get("tasks").cloned().unwrap_or(Value::Array(Vec::new()));
            decode_list::<TaskRecord>("tasks.task.list", &tasks)
                .map_err(to_crm)?
                .into_iter()
                .find(|t| ours(t.description.as_deref()))
                .map(|t| TaskRef {
                    open: t.is_open(),
                    id: t.id,
                })
        }
        TaskKind::Todo => decode_list::<ActivityRecord>("crm.activity.list", rows)
            .map_err(to_crm)?
            .into_iter()
            .find(|a| ours(a.description.as_deref()))
            .map(|a| TaskRef {
                open: a.completed.as_deref() != Some("Y"),
                id: a.id,
            }),
    })
}

/// The method and parameters that create one call-now task (`tasks.task.add`) or to-do
/// (`crm.activity.todo.add`), the recovery marker at the end of the description.
fn add_command(
    settings: &TaskSection,
    task: &TaskRequest,
) -> Result<(&'static str, Value), CrmError> {
    let Some((entity, raw)) = Entity::of(&task.lead_id) else {
        return Err(CrmError::Rejected(format!(
            "{:?} is not a lead or deal id",
            task.lead_id
        )));
    };
    let responsible = task
        .responsible_id
        .clone()
        .or_else(|| settings.fallback_responsible_id.clone());
    let description = format!("{}\n\n{}", task.text, task.marker);
    Ok(match settings.kind {
        TaskKind::Task => {
            let mut fields = task_fields(
                raw,
                &task.title,
                &description,
                responsible.as_deref(),
                task.deadline,
            );
            fields["UF_CRM_TASK"] = json!([entity.binding(raw)]);
            ("tasks.task.add", json!({ "fields": fields }))
        }
        TaskKind::Todo => {
            let mut params = json!({
                "ownerTypeId": entity.owner_type(),
                "ownerId": raw,
                "deadline": task.deadline.to_rfc3339_opts(SecondsFormat::Secs, true),
                "title": task.title,
                "description": description,
            });
            if let Some(r) = responsible {
                params["responsibleId"] = json!(r);
            }
            ("crm.activity.todo.add", params)
        }
    })
}

/// The created task's (or to-do's) id from its method's answer.
fn created(method: &str, result: &Value) -> Result<TaskRef, CrmError> {
    let id = if method == "tasks.task.add" {
        let t: TaskRecord = decode(method, result.get("task").unwrap_or(&Value::Null))
            .map_err(to_crm)?;
        t.id
    } else {
        id_of(method, result).map_err(to_crm)?
    };
    Ok(TaskRef { id, open: true })
}

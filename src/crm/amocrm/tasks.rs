//! The call-now task: an amoCRM task on the lead ("call" type), with the recovery
//! marker in its text and as its `request_id`.

use std::collections::BTreeSet;

use leadscore_amocrm::error::Error;
use leadscore_amocrm::types::NewTask;

use super::{parse_id, to_crm, AmocrmCrm};
use crate::config::TaskSection;
use crate::crm::{prepare_tasks, task_results, CrmError, TaskRef, TaskRequest};

impl AmocrmCrm {
    /// Our task on a lead, found by its marker.
    pub(super) async fn find(
        &self,
        _settings: &TaskSection,
        lead_id: &str,
        marker: &str,
    ) -> Result<Option<TaskRef>, CrmError> {
        let Some(id) = parse_id(lead_id) else {
            return Ok(None);
        };
        let tasks = self.client.lead_tasks(&[id]).await.map_err(to_crm)?;
        Ok(tasks
            .into_iter()
            .find(|t| t.entity_id == Some(id) && t.text.contains(marker))
            .map(|t| TaskRef {
                id: t.id.to_string(),
                open: !t.is_completed,
            }))
    }

    /// Create the call-now task on the lead (its marker is also the request id).
    pub(super) async fn create(
        &self,
        settings: &TaskSection,
        task: &TaskRequest,
    ) -> Result<TaskRef, CrmError> {
        let new = new_task(settings, task)?;
        let created = self.client.create_tasks(&[new]).await.map_err(to_crm)?;
        let c = created.first().ok_or_else(|| CrmError::Transient {
            message: "amoCRM answered the task creation without an id".into(),
            retry_after: None,
        })?;
        Ok(TaskRef {
            id: c.id.to_string(),
            open: true,
        })
    }

    /// Create many call-now tasks, 50 per `POST /api/v4/tasks`. amoCRM refuses a whole
    /// request when one task is invalid and names it in `validation-errors`: that task
    /// is refused and the others are sent again without it.
    pub(super) async fn create_many(
        &self,
        settings: &TaskSection,
        requests: &[TaskRequest],
    ) -> Vec<Result<TaskRef, CrmError>> {
        let (mut out, todo) = prepare_tasks(requests, |r| new_task(settings, r));
        for chunk in todo.chunks(MAX_TASKS) {
            self.create_chunk(chunk.to_vec(), &mut out).await;
        }
        task_results(out)
    }

    /// One request of at most 50 tasks, again without the ones a validation error
    /// names, until amoCRM accepts the rest (or names none it can be matched to).
    async fn create_chunk(
        &self,
        mut batch: Vec<(usize, NewTask)>,
        out: &mut [Option<Result<TaskRef, CrmError>>],
    ) {
        while !batch.is_empty() {
            let tasks: Vec<NewTask> = batch.iter().map(|(_, t)| t.clone()).collect();
            match self.client.create_tasks(&tasks).await {
                Ok(created) => {
                    for (pos, (i, t)) in batch.iter().enumerate() {
                        let c = created
                            .iter()
                            .find(|c| c.request_id.is_some() && c.request_id == t.request_id)
                            .or_else(|| created.get(pos).filter(|c| c.request_id.is_none()));
                        out[*i] = Some(match c {
                            Some(c) => Ok(TaskRef {
                                id: c.id.to_string(),
                                open: true,
                            }),
                            None => Err(CrmError::Transient {
                                message: "amoCRM answered the task creation without its id"
                                    .into(),
                                retry_after: None,
                            }),
                        });
                    }
                    return;
                }
                Err(Error::Validation { errors }) => {
                    let bad: BTreeSet<usize> = errors
                        .iter()
                        .filter_map(|v| {
                            batch
                                .iter()
                                .position(|(_, t)| t.request_id.as_deref() == Some(&v.request_id))
                                .or_else(|| v.request_id.parse().ok().filter(|p| *p < batch.len()))
                        })
                        .collect();
                    let e = to_crm(Error::Validation { errors });
                    if bad.is_empty() {
                        for (i, _) in &batch {
                            out[*i] = Some(Err(e.clone()));
                        }
                        return;
                    }
                    tracing::warn!(error = %e, refused = bad.len(), size = batch.len(), "amoCRM refused tasks in a batch; sending the others again");
                    let mut pos = 0;
                    batch.retain(|(i, _)| {
                        let keep = !bad.contains(&pos);
                        if !keep {
                            out[*i] = Some(Err(e.clone()));
                        }
                        pos += 1;
                        keep
                    });
                }
                Err(e) => {
                    let e = to_crm(e);
                    for (i, _) in &batch {
                        out[*i] = Some(Err(e.clone()));
                    }
                    return;
                }
            }
        }
    }

    /// Is our task still open? Only a task bound to `lead_id` counts.
    pub(super) async fn open(
        &self,
        _settings: &TaskSection,
        lead_id: &str,
        task_id: &str,
    ) -> Result<bool, CrmError> {
        let (Some(id), Some(lead)) = (parse_id(task_id), parse_id(lead_id)) else {
            return Ok(false);
        };
        Ok(self
            .client
            .task(id)
            .await
            .map_err(to_crm)?
            .is_some_and(|t| t.entity_id == Some(lead) && !t.is_completed))
    }
}

/// Most tasks per `POST /api/v4/tasks` (amoCRM recommends at most 50 per write).
const MAX_TASKS: usize = 50;

/// The amoCRM task for a call-now request; its marker is the text's last line and the
/// request id.
fn new_task(settings: &TaskSection, task: &TaskRequest) -> Result<NewTask, CrmError> {
    let id = parse_id(&task.lead_id)
        .ok_or_else(|| CrmError::Rejected(format!("{:?} is not a lead id", task.lead_id)))?;
    let responsible = task
        .responsible_id
        .as_deref()
        .or(settings.fallback_responsible_id.as_deref())
        .and_then(parse_id);
    // amoCRM tasks have no title: title, body and the recovery marker share the text.
    let text = format!("{}\n{}\n{}", task.title, task.text, task.marker);
    Ok(NewTask {
        text,
        complete_till: task.deadline.timestamp(),
        entity_id: id,
        entity_type: "leads".into(),
        task_type_id: 1,
        responsible_user_id: responsible,
        request_id: Some(task.marker.clone()),
    })
}

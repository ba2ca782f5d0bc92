//! The call-now task: an amoCRM task on the lead ("call" type), with the recovery
//! marker in its text and as its `request_id`.

use leadscore_amocrm::types::NewTask;

use super::{parse_id, to_crm, AmocrmCrm};
use crate::config::TaskSection;
use crate::crm::{CrmError, TaskRef, TaskRequest};

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
        let id = parse_id(&task.lead_id)
            .ok_or_else(|| CrmError::Rejected(format!("{:?} is not a lead id", task.lead_id)))?;
        let responsible = task
            .responsible_id
            .as_deref()
            .or(settings.fallback_responsible_id.as_deref())
            .and_then(parse_id);
        // amoCRM tasks have no title: title, body and the recovery marker share the text.
        let text = format!("{}\n{}\n{}", task.title, task.text, task.marker);
        let new = NewTask {
            text,
            complete_till: task.deadline.timestamp(),
            entity_id: id,
            entity_type: "leads".into(),
            task_type_id: 1,
            responsible_user_id: responsible,
            request_id: Some(task.marker.clone()),
        };
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

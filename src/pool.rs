//! Setting up the work pool: type `northflank`, with this worker's base job template.

use serde_json::{Value, json};

use crate::prefect::{PrefectClient, PrefectError};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PoolAction {
    Created,
    AlreadyExists,
}

/// The base job template, with a default project when one is given.
pub fn template(project_id: Option<&str>) -> Value {
    let mut template = crate::render::base_job_template();
    if let Some(project) = project_id {
        template["variables"]["properties"]["project_id"]["default"] = json!(project);
    }
    template
}

/// Creates the pool; an existing pool is left as it is.
pub async fn create(
    prefect: &PrefectClient,
    name: &str,
    project_id: Option<&str>,
    description: Option<&str>,
) -> Result<PoolAction, PrefectError> {
    let body = json!({
        "name": name,
        "type": crate::WORKER_TYPE,
        "description": description,
        "base_job_template": template(project_id),
    });
    match prefect.create_work_pool(&body).await {
        Ok(_) => Ok(PoolAction::Created),
        Err(e) if e.status() == Some(409) => Ok(PoolAction::AlreadyExists),
        Err(e) => Err(e),
    }
}

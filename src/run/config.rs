//! A flow run's job configuration, resolved once, exactly as Prefect's worker resolves it: the
//! pool's base job template, the deployment's and the flow run's job variables, then blocks and
//! variables. Launching renders it into Northflank's bodies; settling a run that chose its own
//! Northflank credentials resolves it again to find them.

use serde_json::{Map, Value};

use crate::northflank::{NorthflankClient, NorthflankError};
use crate::prefect::models::{FlowRun, WorkPool};
use crate::render::{self, RenderError, RunCredentials};
use crate::worker::Worker;

/// The resolved job configuration of `flow_run`, given its pool and its deployment's job
/// variables.
pub async fn resolve(
    worker: &Worker,
    pool: &WorkPool,
    deployment_variables: &Map<String, Value>,
    flow_run: &FlowRun,
) -> Result<Map<String, Value>, RenderError> {
    render::resolve_configuration(
        &pool.base_job_template,
        deployment_variables,
        &flow_run.job_variables,
        &worker.prefect,
        &process_env,
    )
    .await
}

/// `{{ $NAME }}` placeholders read the worker process's environment, as in Prefect.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// The Northflank client for a configuration's credentials: the worker's own, or the run's.
pub fn northflank_client(
    worker: &Worker,
    credentials: Option<&RunCredentials>,
) -> Result<NorthflankClient, NorthflankError> {
    match credentials {
        None => Ok(worker.northflank.clone()),
        Some(c) => worker
            .northflank
            .with_token(c.base_url.as_deref(), c.api_token.clone()),
    }
}

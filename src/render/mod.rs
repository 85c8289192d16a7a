//! Job rendering: a pool's base job template plus the deployment's and the flow run's job
//! variables become the exact Northflank create-job and start-run bodies.
//!
//! Two stages, both used by dispatch and by the `render` dry run:
//! 1. [`resolve_configuration`]: Prefect's own templating (merge, placeholders, blocks,
//!    variables), giving the resolved job configuration;
//! 2. [`job::to_northflank`]: that configuration plus the run's facts → request bodies.

pub mod dry_run;
mod fields;
pub mod job;
pub mod rules;

use serde_json::{Map, Value};
use uuid::Uuid;

use crate::config::{PrefectAuth, Secret};
use crate::ids::{FlowRunId, JobName};

pub use job::to_northflank;

/// The base job template of a `northflank` work pool, compatible with prefect-northflank 1.0.1.
pub const BASE_JOB_TEMPLATE: &str = include_str!("../../infra/base-job-template.json");

pub fn base_job_template() -> Value {
    serde_json::from_str(BASE_JOB_TEMPLATE)
        .expect("the checked-in base job template is valid JSON (tested)")
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("job variable `{variable}` = {value} is invalid: {rule}")]
    Invalid {
        variable: String,
        value: String,
        rule: String,
    },
    #[error("the work pool's base job template is invalid: {0}")]
    BadTemplate(String),
    #[error("{0}")]
    Template(#[from] prefect_templating::TemplateError),
}

/// What the run's container needs to know beyond the job configuration
/// (Prefect's `prepare_for_flow_run`).
#[derive(Clone, Debug)]
pub struct RunFacts {
    pub flow_run_id: FlowRunId,
    pub flow_run_name: String,
    pub flow_id: Uuid,
    pub flow_name: String,
    pub deployment_id: Option<Uuid>,
    pub deployment_name: Option<String>,
    pub worker_name: String,
    pub api_url: String,
    pub auth: PrefectAuth,
    /// This installation's ownership marker, appended to the job's description; `None` only in
    /// a dry run without a work pool.
    pub marker: Option<crate::ownership::Marker>,
}

/// Northflank credentials chosen by a run's job variables (a `credentials` block).
#[derive(Clone, Debug)]
pub struct RunCredentials {
    pub api_token: Secret,
    pub base_url: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Rendered {
    pub project_id: String,
    pub job_name: JobName,
    pub create_job: Value,
    pub start_run: Value,
    pub cleanup_job: bool,
    pub credentials: Option<RunCredentials>,
    /// Things changed or ignored on the way (an invalid tag dropped, …), for the run's logs.
    pub warnings: Vec<String>,
}

impl Rendered {
    /// The two bodies with every secret replaced, for printing.
    pub fn redacted(&self) -> Value {
        let mut run = self.start_run.clone();
        if let Some(env) = run
            .get_mut("runtimeEnvironment")
            .and_then(Value::as_object_mut)
        {
            for v in env.values_mut() {
                *v = Value::String(dry_run::REDACTED.into());
            }
        }
        serde_json::json!({
            "projectId": self.project_id,
            "createJob": self.create_job,
            "startRun": run,
            "cleanupJob": self.cleanup_job,
            "credentials": self.credentials.as_ref().map(|c| serde_json::json!({"api_token": dry_run::REDACTED, "base_url": c.base_url})),
            "warnings": self.warnings,
        })
    }
}

/// Stage 1: Prefect's templating, exactly as the Python worker does it.
pub async fn resolve_configuration(
    base_job_template: &Value,
    deployment_variables: &Map<String, Value>,
    flow_run_variables: &Map<String, Value>,
    lookup: &impl prefect_templating::Lookup,
    env: &(dyn Fn(&str) -> Option<String> + Sync),
) -> Result<Map<String, Value>, RenderError> {
    if !base_job_template
        .get("job_configuration")
        .is_some_and(Value::is_object)
    {
        return Err(RenderError::BadTemplate(
            "it has no job_configuration object".into(),
        ));
    }
    let variables =
        prefect_templating::merge_job_variables(deployment_variables, flow_run_variables)?;
    let config = prefect_templating::render_job_configuration(base_job_template, &variables, env)?;
    match prefect_templating::resolve_references(Value::Object(config), lookup).await? {
        Value::Object(map) => Ok(map),
        other => Err(RenderError::BadTemplate(format!(
            "the job configuration rendered to {other}, not an object"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_job_template_declares_every_placeholder() {
        let t = base_job_template();
        let props = t["variables"]["properties"].as_object().unwrap();
        let config = t["job_configuration"].as_object().unwrap();
        for (key, value) in config {
            assert_eq!(value, &Value::String(format!("{{{{ {key} }}}}")), "{key}");
            assert!(props.contains_key(key), "{key} is not declared");
        }
        assert_eq!(config.len(), props.len());
    }
}

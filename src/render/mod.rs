//! Job rendering: a pool's base job template plus the deployment's and the flow run's job
//! variables become the exact Northflank create-job and start-run bodies.
//!
//! Two stages, both used by dispatch and by the `render` dry run ([`render`] runs both):
//! 1. [`resolve_configuration`]: Prefect's own templating (merge, placeholders, blocks,
//!    variables), giving the resolved job configuration;
//! 2. [`job::to_northflank`]: that configuration plus the run's facts → request bodies.
//!
//! Between them, what Prefect's `prepare_for_flow_run` adds ([`prepare_name`]), and a check that
//! no job variable the user set was silently dropped by an older pool template ([`gaps`]).

pub mod dry_run;
mod fields;
pub mod gaps;
pub mod job;
pub mod rules;

use std::collections::BTreeMap;

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
    /// The worker's own Prefect settings, first in the container's environment
    /// ([`crate::config::PrefectSettings::flow_run_env`]).
    pub settings_env: BTreeMap<String, String>,
    /// `{"flow": …, "flow_run": …}` as the API returns them: what `{{ ctx.flow.* }}` and
    /// `{{ ctx.flow_run.* }}` in the `name` variable refer to.
    pub ctx: Value,
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

/// What a flow run's job is made from.
pub struct RenderInput<'a> {
    pub template: &'a Value,
    pub deployment_variables: &'a Map<String, Value>,
    pub flow_run_variables: &'a Map<String, Value>,
    pub facts: &'a RunFacts,
}

/// Both stages, as dispatch runs them and the dry run shows them: the bodies, with a warning for
/// every job variable the pool's template dropped, and an error that says so when the rendering
/// failed for want of one.
pub async fn render(
    input: &RenderInput<'_>,
    lookup: &impl prefect_templating::Lookup,
    env: &(dyn Fn(&str) -> Option<String> + Sync),
) -> Result<Rendered, RenderError> {
    let dropped = gaps::dropped(
        input.template,
        input.deployment_variables,
        input.flow_run_variables,
    );
    let mut config = resolve_configuration(
        input.template,
        input.deployment_variables,
        input.flow_run_variables,
        lookup,
        env,
    )
    .await?;
    prepare_name(&mut config, &input.facts.ctx, env);
    let mut rendered =
        to_northflank(&config, input.facts).map_err(|e| gaps::explain(e, &dropped))?;
    let mut warnings: Vec<String> = dropped.iter().map(gaps::warning).collect();
    warnings.append(&mut rendered.warnings);
    rendered.warnings = warnings;
    Ok(rendered)
}

/// Prefect's `prepare_for_flow_run` renders `{{ ctx.flow.* }}` and `{{ ctx.flow_run.* }}` in
/// the `name` job variable (`apply_values` with `remove_notset`): a name that is one missing
/// placeholder stays as written, a missing placeholder inside text becomes "".
pub fn prepare_name(
    config: &mut Map<String, Value>,
    ctx: &Value,
    env: &(dyn Fn(&str) -> Option<String> + Sync),
) {
    let Some(name @ Value::String(_)) = config.get("name") else {
        return;
    };
    let mut values = Map::new();
    values.insert("ctx".into(), ctx.clone());
    if let Some(rendered) = prefect_templating::apply_values(name, &values, &|k| env(k)) {
        config.insert("name".into(), rendered);
    }
}

impl RunFacts {
    /// The `ctx` of [`RunFacts::ctx`] from the flow run's and the flow's API representations.
    pub fn ctx_of(flow_run: Value, flow: Value) -> Value {
        serde_json::json!({"flow": flow, "flow_run": flow_run})
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

//! The `render` dry run: the two stages dispatch uses, printed instead of sent, with secrets
//! redacted.

use serde_json::{Map, Value};

use super::{
    RenderError, RenderInput, RunFacts, job::SECRET_ENV, prepare_name, render,
    resolve_configuration,
};
use prefect_templating::{Lookup, LookupError};

pub const REDACTED: &str = "********";

/// Where to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// The resolved job configuration: after Prefect's templating, before the mapping.
    Config,
    /// The Northflank create-job and start-run bodies.
    Northflank,
}

pub struct DryRun {
    pub template: Value,
    pub deployment_variables: Map<String, Value>,
    pub flow_run_variables: Map<String, Value>,
    pub facts: RunFacts,
}

pub async fn dry_run(
    input: &DryRun,
    stage: Stage,
    lookup: &impl Lookup,
) -> Result<Value, RenderError> {
    let env = |name: &str| std::env::var(name).ok();
    Ok(match stage {
        Stage::Config => {
            let mut config = resolve_configuration(
                &input.template,
                &input.deployment_variables,
                &input.flow_run_variables,
                lookup,
                &env,
            )
            .await?;
            prepare_name(&mut config, &input.facts.ctx, &env);
            redact_config(config)
        }
        Stage::Northflank => {
            let render_input = RenderInput {
                template: &input.template,
                deployment_variables: &input.deployment_variables,
                flow_run_variables: &input.flow_run_variables,
                facts: &input.facts,
            };
            render(&render_input, lookup, &env).await?.redacted()
        }
    })
}

/// Hides the values we know are secret: the credentials block's token and Prefect credentials
/// in the environment.
fn redact_config(mut config: Map<String, Value>) -> Value {
    if let Some(Value::Object(credentials)) = config.get_mut("credentials")
        && let Some(token) = credentials.get_mut("api_token")
    {
        *token = Value::String(REDACTED.into());
    }
    for key in ["env", "runtime_environment"] {
        if let Some(Value::Object(env)) = config.get_mut(key) {
            for secret in SECRET_ENV {
                if let Some(v) = env.get_mut(*secret) {
                    *v = Value::String(REDACTED.into());
                }
            }
        }
    }
    Value::Object(config)
}

/// A lookup for dry runs without a Prefect API: placeholders that need one fail clearly.
pub struct Offline;

fn needs_api(what: String) -> LookupError {
    LookupError::new(format!(
        "resolving {what} needs the Prefect API: set PREFECT_API_URL"
    ))
}

impl Lookup for Offline {
    async fn block_document_by_id(&self, id: &str) -> Result<Option<Value>, LookupError> {
        Err(needs_api(format!("block document {id}")))
    }

    async fn block_document_by_name(
        &self,
        slug: &str,
        name: &str,
    ) -> Result<Option<Value>, LookupError> {
        Err(needs_api(format!("block {slug}/{name}")))
    }

    async fn variable(&self, name: &str) -> Result<Option<Value>, LookupError> {
        Err(needs_api(format!("variable {name}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{PrefectAuth, Secret};
    use serde_json::json;

    fn input(deployment: Value) -> DryRun {
        let mut template = crate::render::base_job_template();
        template["variables"]["properties"]["project_id"]["default"] = json!("proj");
        DryRun {
            template,
            deployment_variables: deployment.as_object().cloned().unwrap_or_default(),
            flow_run_variables: Map::new(),
            facts: RunFacts {
                flow_run_id: "0b9f6a2e-1c3d-4e5f-8a9b-0c1d2e3f4a5b".parse().unwrap(),
                flow_run_name: "dry-run".into(),
                flow_id: uuid::Uuid::nil(),
                flow_name: "flow".into(),
                deployment_id: None,
                deployment_name: None,
                worker_name: "w".into(),
                api_url: "http://127.0.0.1:4200/api".into(),
                auth: PrefectAuth::ApiKey(Secret::new("pnu_secret")),
                settings_env: Default::default(),
                ctx: json!({"flow": {"name": "flow"}, "flow_run": {"name": "dry-run"}}),
                marker: None,
            },
        }
    }

    #[tokio::test]
    async fn both_stages_redact_secrets() {
        let deployment = json!({"credentials": {"api_token": "nf-secret", "base_url": "https://api.northflank.com"},
                                "env": {"PREFECT_API_KEY": "pnu_other", "PLAIN": "visible"}});
        let config = dry_run(&input(deployment.clone()), Stage::Config, &Offline)
            .await
            .unwrap();
        assert_eq!(config["credentials"]["api_token"], REDACTED);
        assert_eq!(config["env"]["PREFECT_API_KEY"], REDACTED);
        assert_eq!(config["env"]["PLAIN"], "visible");
        let bodies = dry_run(&input(deployment), Stage::Northflank, &Offline)
            .await
            .unwrap();
        let text = bodies.to_string();
        assert!(
            !text.contains("nf-secret") && !text.contains("pnu_"),
            "{text}"
        );
        assert_eq!(
            bodies["createJob"]["name"],
            "pf-0b9f6a2e-1c3d-4e5f-8a9b-0c1d2e3f4a5b"
        );
        assert_eq!(
            bodies["startRun"]["runtimeEnvironment"]["PREFECT_API_KEY"],
            REDACTED
        );
    }

    #[tokio::test]
    async fn placeholders_that_need_the_api_fail_clearly_offline() {
        let err = dry_run(
            &input(json!({"project_id": "{{ prefect.variables.nf_project }}"})),
            Stage::Config,
            &Offline,
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("needs the Prefect API"), "{err}");
    }
}

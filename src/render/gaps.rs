//! Job variables a pool's template drops.
//!
//! Prefect only passes on the variables its base job template's `job_configuration` refers to.
//! A pool created by prefect-northflank (or by an older version of this worker) keeps that
//! worker's template, so variables added since — the Git build, build settings, the custom
//! entrypoint — would reach nothing, silently. This module finds them, so the run's logs and
//! the dry run name each one with the fix: `prefect-nf work-pool update`.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::RenderError;

/// The command that installs the current template, keeping the pool's defaults.
pub const FIX: &str = "run `prefect-nf work-pool update --name <pool>` to install the current template (the pool's defaults are kept)";

/// The variables a template's `job_configuration` refers to, by their top-level name
/// (`{{ env.FOO }}` and `{{ tags[0] }}` count as `env` and `tags`).
pub fn referenced(template: &Value) -> BTreeSet<String> {
    prefect_templating::find_placeholders_in(&template["job_configuration"])
        .into_iter()
        .filter(|p| p.kind == prefect_templating::PlaceholderKind::Standard)
        .map(|p| {
            let end = p.name.find(['.', '[']).unwrap_or(p.name.len());
            p.name[..end].to_string()
        })
        .collect()
}

/// The variables this worker understands that `template` does not pass on: what
/// `work-pool update` would add.
pub fn missing(template: &Value) -> Vec<String> {
    let have = referenced(template);
    referenced(&super::base_job_template())
        .into_iter()
        .filter(|name| !have.contains(name))
        .collect()
}

/// Of [`missing`], those the deployment or the flow run set to a value.
pub fn dropped(
    template: &Value,
    deployment_variables: &Map<String, Value>,
    flow_run_variables: &Map<String, Value>,
) -> Vec<String> {
    let set = |name: &String| {
        [deployment_variables, flow_run_variables]
            .iter()
            .any(|vars| vars.get(name).is_some_and(|v| !v.is_null()))
    };
    missing(template).into_iter().filter(set).collect()
}

/// The line for the run's logs (and the dry run) about one dropped variable.
pub fn warning(name: &String) -> String {
    format!(
        "job variable `{name}` is set but was ignored: this work pool's base job template predates it and does not pass it on; {FIX}"
    )
}

/// A rendering error caused by a dropped variable ("… is required" while the user did set it)
/// says what really happened.
pub fn explain(error: RenderError, dropped: &[String]) -> RenderError {
    match error {
        RenderError::Invalid { variable, .. } if dropped.contains(&variable) => {
            RenderError::Invalid {
                rule: format!(
                    "is set, but this work pool's base job template predates it and does not pass it on; {FIX}"
                ),
                value: "(dropped by the template)".into(),
                variable,
            }
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The job configuration of prefect-northflank 1.0.1's template (its keys; each value is
    /// the whole-string placeholder of the same name).
    fn python_worker_template() -> Value {
        let keys = [
            "billing_deployment_plan",
            "billing_gpu_count",
            "billing_gpu_enabled",
            "billing_gpu_timesliced",
            "billing_gpu_type",
            "cleanup_job",
            "command",
            "credentials",
            "deployment_docker_config_type",
            "deployment_docker_custom_command",
            "deployment_external_credentials",
            "deployment_external_image_path",
            "deployment_internal_branch",
            "deployment_internal_build_id",
            "deployment_internal_build_sha",
            "deployment_internal_id",
            "description",
            "env",
            "infrastructure_architecture",
            "labels",
            "name",
            "project_id",
            "runtime_environment",
            "settings_active_deadline_seconds",
            "settings_backoff_limit",
            "settings_run_on_source_change",
            "tags",
        ];
        let config: Map<String, Value> = keys
            .iter()
            .map(|k| (k.to_string(), json!(format!("{{{{ {k} }}}}"))))
            .collect();
        json!({"variables": {"properties": {}}, "job_configuration": config})
    }

    #[test]
    fn the_python_workers_template_misses_what_came_since() {
        assert_eq!(
            missing(&python_worker_template()),
            [
                "billing_build_plan",
                "build_buildpack_builder",
                "build_configuration_docker_credentials",
                "build_docker_work_dir",
                "build_dockerfile_path",
                "deployment_docker_custom_entrypoint",
                "deployment_vcs_account_login",
                "deployment_vcs_project_branch",
                "deployment_vcs_project_type",
                "deployment_vcs_project_url",
                "deployment_vcs_self_hosted_vcs_id",
                "deployment_vcs_vcs_link_id",
            ]
        );
        assert!(missing(&super::super::base_job_template()).is_empty());
    }

    #[test]
    fn only_variables_set_to_a_value_are_dropped() {
        let t = python_worker_template();
        let deployment = json!({"deployment_vcs_project_url": "https://github.com/a/b", "build_dockerfile_path": null, "project_id": "p"});
        let run = json!({"deployment_docker_custom_entrypoint": "/bin/sh"});
        assert_eq!(
            dropped(
                &t,
                deployment.as_object().unwrap(),
                run.as_object().unwrap()
            ),
            [
                "deployment_docker_custom_entrypoint",
                "deployment_vcs_project_url"
            ]
        );
    }

    #[test]
    fn nested_and_embedded_references_count() {
        let t = json!({"job_configuration": {"a": "x-{{ deployment_vcs_project_url }}", "b": {"c": ["{{ build_dockerfile_path.x }}"]}}});
        let r = referenced(&t);
        assert!(r.contains("deployment_vcs_project_url"));
        assert!(r.contains("build_dockerfile_path"));
    }
}

//! `resolve_for_flow_run` / `from_template_and_values` examples of the protocol reference (§6.1, §6.2).

mod common;

use std::collections::HashMap;

use common::{block_on, no_env, obj};
use prefect_templating::{
    Lookup, LookupError, TemplateError, coerce_env, merge_job_variables, render_job_configuration,
    resolve_references,
};
use serde_json::{Map, Value, json};

/// A base job template whose job configuration is `"{{ <name> }}"` for every variable.
fn template_with(properties: Value) -> Value {
    let job_configuration: Map<String, Value> = obj(properties.clone())
        .keys()
        .map(|k| (k.clone(), Value::String(format!("{{{{ {k} }}}}"))))
        .collect();
    json!({"job_configuration": job_configuration, "variables": {"type": "object", "properties": properties}})
}

fn render(template: &Value, job_variables: Value) -> Map<String, Value> {
    render_job_configuration(template, &obj(job_variables), &no_env).expect("renders")
}

#[test]
fn explicit_null_job_variable_overrides_a_default() {
    let template = template_with(
        json!({"image": {"type": "string", "default": "prefecthq/prefect:3-latest"}}),
    );
    assert_eq!(
        render(&template, json!({"image": null})),
        obj(json!({"image": null}))
    );
    assert_eq!(
        render(&template, json!({})),
        obj(json!({"image": "prefecthq/prefect:3-latest"}))
    );
}

#[test]
fn null_default_counts_as_missing() {
    let template = template_with(
        json!({"name": {"type": "string", "default": null}, "cpu": {"type": "number"}}),
    );
    assert_eq!(render(&template, json!({})), Map::new());
}

#[test]
fn dotted_env_key_and_env_object_both_merge_over_pool_defaults() {
    let template =
        template_with(json!({"env": {"type": "object", "default": {"POOL": "1", "FOO": "pool"}}}));
    let rendered = render(&template, json!({"env.FOO": "bar", "env": {"BAZ": "q"}}));
    assert_eq!(
        rendered,
        obj(json!({"env": {"POOL": "1", "FOO": "bar", "BAZ": "q"}}))
    );
}

#[test]
fn env_object_in_job_configuration_is_merged_not_replaced() {
    let template = json!({
        "job_configuration": {"env": {"FIXED": "x", "FROM_VAR": "{{ region }}"}},
        "variables": {"properties": {
            "env": {"type": "object", "default": {"POOL": "1"}},
            "region": {"type": "string", "default": "eu"},
        }},
    });
    let rendered = render(&template, json!({"env": {"RUN": "r"}}));
    assert_eq!(
        rendered,
        obj(json!({"env": {"FIXED": "x", "FROM_VAR": "eu", "POOL": "1", "RUN": "r"}}))
    );
}

#[test]
fn env_values_are_not_coerced_by_rendering_but_by_coerce_env() {
    let template = template_with(json!({"env": {"type": "object"}}));
    let rendered = render(
        &template,
        json!({"env": {"N": 1, "B": true, "NONE": null, "F": 0.5, "S": "s"}}),
    );
    let env = rendered.get("env").expect("env rendered");
    assert_eq!(
        env,
        &json!({"N": 1, "B": true, "NONE": null, "F": 0.5, "S": "s"})
    );
    assert_eq!(
        coerce_env(env).ok(),
        Some(obj(
            json!({"N": "1", "B": "True", "NONE": null, "F": "0.5", "S": "s"})
        ))
    );
    assert!(matches!(
        coerce_env(&json!("A=1")),
        Err(TemplateError::EnvNotObject { .. })
    ));
}

#[test]
fn non_object_env_where_an_object_must_be_merged_is_an_error() {
    let template = template_with(json!({"env": {"type": "object", "default": {"POOL": "1"}}}));
    let err = render_job_configuration(&template, &obj(json!({"env": "A=1"})), &no_env).err();
    assert!(
        matches!(
            err,
            Some(TemplateError::EnvNotObject { found: "a str", .. })
        ),
        "{err:?}"
    );
}

#[test]
fn malformed_base_job_templates_are_errors() {
    for bad in [
        json!([]),
        json!({"variables": {}}),
        json!({"job_configuration": {}}),
        json!({"job_configuration": {}, "variables": {"properties": []}}),
        json!({"job_configuration": {}, "variables": {"properties": {"x": "string"}}}),
    ] {
        let err = render_job_configuration(&bad, &Map::new(), &no_env).err();
        assert!(
            matches!(err, Some(TemplateError::InvalidBaseJobTemplate { .. })),
            "{bad}: {err:?}"
        );
    }
    let no_properties = json!({"job_configuration": {"a": 1}, "variables": {}});
    assert_eq!(render(&no_properties, json!({})), obj(json!({"a": 1})));
}

/// In-memory block documents and variables for the live example.
struct LiveApi;

impl Lookup for LiveApi {
    async fn block_document_by_id(&self, id: &str) -> Result<Option<Value>, LookupError> {
        Ok((id == "3e10471b-0000").then(|| json!({"region": "eu-west", "size": 3})))
    }
    async fn block_document_by_name(
        &self,
        slug: &str,
        name: &str,
    ) -> Result<Option<Value>, LookupError> {
        Ok((slug == "secret" && name == "nf-token").then(|| json!({"value": "s3cr3t-token"})))
    }
    async fn variable(&self, name: &str) -> Result<Option<Value>, LookupError> {
        Ok((name == "nf_registry").then(|| json!("registry.example.com/team")))
    }
}

/// The live pool of §6.1: pool defaults, deployment and flow-run job variables, through every pass this crate
/// owns. The Prefect base environment (`PREFECT_*`), the `prefect.io/*` labels, the default name and command
/// and the model's `cpu: float` (2 → 2.0) are added afterwards by the caller's `prepare_for_flow_run`.
#[test]
fn live_pool_example() {
    let base_job_template = json!({
        "job_configuration": {
            "command": "{{ command }}",
            "env": "{{ env }}",
            "labels": "{{ labels }}",
            "name": "{{ name }}",
            "image": "{{ image }}",
            "cpu": "{{ cpu }}",
            "service_name": "svc-{{ name }}-{{ cpu }}",
            "project": "{{ project }}",
            "registry": "{{ registry }}",
            "api_token": "{{ api_token }}",
            "nf_config": "{{ nf_config }}",
            "extra": {"region": "{{ region }}", "list": ["{{ image }}", "{{ missing_var }}"], "literal": 42},
        },
        "variables": {"type": "object", "properties": {
            "command": {"type": "string"},
            "env": {"type": "object", "default": {"FROM_POOL_DEFAULT": "1"}},
            "labels": {"type": "object"},
            "name": {"type": "string", "default": null},
            "image": {"type": "string", "default": "prefecthq/prefect:3-latest"},
            "cpu": {"type": "number", "default": 0.5},
            "project": {"type": "string"},
            "region": {"type": "string"},
            "registry": {"type": "string", "default": "{{ prefect.variables.nf_registry }}"},
            "api_token": {"type": "string", "default": "{{ prefect.blocks.secret.nf-token }}"},
            "nf_config": {"type": "object", "default": {"$ref": {"block_document_id": "3e10471b-0000"}}},
        }},
    });
    let deployment = obj(json!({
        "image": "ghcr.io/acme/etl:1.2", "env": {"DEPLOY_ENV": "prod"}, "project": "proj-1", "cpu": 1,
    }));
    let flow_run = obj(json!({
        "env": {"RUN_ENV": "r1"}, "cpu": 2, "region": "eu-west-1", "labels": {"team": "data"},
    }));

    let job_variables = merge_job_variables(&deployment, &flow_run).expect("merges");
    let rendered =
        render_job_configuration(&base_job_template, &job_variables, &no_env).expect("renders");
    let resolved =
        block_on(resolve_references(Value::Object(rendered), &LiveApi)).expect("resolves");
    let resolved = obj(resolved);

    let expected: &[(&str, Value)] = &[
        (
            "env",
            json!({"FROM_POOL_DEFAULT": "1", "DEPLOY_ENV": "prod", "RUN_ENV": "r1"}),
        ),
        ("labels", json!({"team": "data"})),
        ("image", json!("ghcr.io/acme/etl:1.2")),
        ("cpu", json!(2)),
        // name is missing → "", cpu → "2".
        ("service_name", json!("svc--2")),
        ("project", json!("proj-1")),
        ("registry", json!("registry.example.com/team")),
        ("api_token", json!("s3cr3t-token")),
        ("nf_config", json!({"region": "eu-west", "size": 3})),
        // The "{{ missing_var }}" list item is dropped.
        (
            "extra",
            json!({"region": "eu-west-1", "list": ["ghcr.io/acme/etl:1.2"], "literal": 42}),
        ),
    ];
    let expected_map: HashMap<&str, &Value> = expected.iter().map(|(k, v)| (*k, v)).collect();
    for (key, value) in &expected_map {
        assert_eq!(resolved.get(*key), Some(*value), "key {key}");
    }
    // command and name are NotSet (dropped); the caller fills in Prefect's defaults.
    let extra_keys: Vec<&String> = resolved
        .keys()
        .filter(|k| !expected_map.contains_key(k.as_str()))
        .collect();
    assert!(extra_keys.is_empty(), "unexpected keys {extra_keys:?}");
}

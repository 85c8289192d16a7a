//! `BaseJobConfiguration.from_template_and_values` up to and including `apply_values`, and the `str()`
//! coercion its pydantic model applies to `env`.

use serde_json::{Map, Value};

use crate::apply::apply_values;
use crate::error::TemplateError;
use crate::merge::expand_dotted_keys;
use crate::pyrepr::py_str;
use crate::pytype::{is_truthy, py_type_name};

/// Renders a work pool's base job template (`{"job_configuration": …, "variables": {"properties": …}}`) with
/// the merged job variables (see [`crate::merge_job_variables`]):
///
/// 1. `values` starts from every non-null `default` of `variables.properties`: null defaults are skipped so
///    that their placeholders count as missing.
/// 2. A truthy default `env` is merged key by key into `job_configuration.env` when that is an object, and
///    otherwise replaces it (typically the `"{{ env }}"` template).
/// 3. Dotted job-variable keys (`"env.FOO"`) are expanded, plain keys deep-merged on top, and the result
///    overwrites the defaults key by key: an explicit `null` job variable beats a default.
/// 4. A truthy `values.env` is merged key by key into `job_configuration.env` when that is an object, so the
///    pool default env, the deployment's env and the flow run's env all add up.
/// 5. [`apply_values`] renders `job_configuration` with `values`.
///
/// Not done here: block and variable placeholders ([`crate::resolve_references`], run next, as Prefect does)
/// and the worker model's coercions, e.g. env values to strings ([`coerce_env`]) or `cpu: float`.
pub fn render_job_configuration(
    base_job_template: &Value,
    job_variables: &Map<String, Value>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Map<String, Value>, TemplateError> {
    let Value::Object(template) = base_job_template else {
        return Err(invalid(format!(
            "it must be an object, but it is {}",
            py_type_name(base_job_template)
        )));
    };
    let Some(Value::Object(job_configuration)) = template.get("job_configuration") else {
        return Err(invalid(
            "'job_configuration' is missing or not an object".to_owned(),
        ));
    };
    let mut config = job_configuration.clone();
    let mut values = variable_defaults(template.get("variables"))?;

    if let Some(default_env) = values.get("env").filter(|v| is_truthy(v)) {
        let merged = match config.get("env") {
            Some(Value::Object(base_env)) => Value::Object(merge_env(
                base_env,
                default_env,
                "the default of variable 'env'",
            )?),
            _ => default_env.clone(),
        };
        config.insert("env".to_owned(), merged);
    }

    values.extend(expand_dotted_keys(job_variables)?);

    if let (Some(Value::Object(base_env)), Some(values_env)) = (
        config.get("env"),
        values.get("env").filter(|v| is_truthy(v)),
    ) {
        let merged = merge_env(base_env, values_env, "job variable 'env'")?;
        config.insert("env".to_owned(), Value::Object(merged));
    }

    match apply_values(&Value::Object(config), &values, env) {
        Some(Value::Object(rendered)) => Ok(rendered),
        // apply_values maps an object to an object; kept total rather than trusted.
        _ => Ok(Map::new()),
    }
}

/// `BaseJobConfiguration`'s env validator: every value becomes `str(value)`, `null` stays `null`
/// (and is later dropped by the caller's `prepare_for_flow_run`, which unsets inherited variables).
///
/// Kept separate from [`render_job_configuration`] because Prefect applies it in the worker's model, after
/// the block and variable passes: run it on the `env` of the fully resolved configuration.
pub fn coerce_env(env: &Value) -> Result<Map<String, Value>, TemplateError> {
    let Value::Object(map) = env else {
        return Err(TemplateError::EnvNotObject {
            what: "the rendered 'env'",
            into: "the job's environment",
            found: py_type_name(env),
        });
    };
    Ok(map
        .iter()
        .map(|(k, v)| {
            let coerced = match v {
                Value::Null => Value::Null,
                other => Value::String(py_str(other)),
            };
            (k.clone(), coerced)
        })
        .collect())
}

/// Non-null `default`s of `variables.properties` (`_get_base_config_defaults`).
fn variable_defaults(variables: Option<&Value>) -> Result<Map<String, Value>, TemplateError> {
    let Some(Value::Object(variables)) = variables else {
        return Err(invalid(
            "'variables' is missing or not an object".to_owned(),
        ));
    };
    let properties = match variables.get("properties") {
        None => return Ok(Map::new()),
        Some(Value::Object(properties)) => properties,
        Some(other) => {
            return Err(invalid(format!(
                "'variables.properties' must be an object, but it is {}",
                py_type_name(other)
            )));
        }
    };
    let mut defaults = Map::new();
    for (name, schema) in properties {
        let Value::Object(schema) = schema else {
            return Err(invalid(format!(
                "the schema of variable '{name}' must be an object, but it is {}",
                py_type_name(schema)
            )));
        };
        if let Some(default) = schema.get("default").filter(|d| !d.is_null()) {
            defaults.insert(name.clone(), default.clone());
        }
    }
    Ok(defaults)
}

/// Python's `base_env | overlay`; `overlay` must be an object (a dict `|` anything else raises).
fn merge_env(
    base_env: &Map<String, Value>,
    overlay: &Value,
    what: &'static str,
) -> Result<Map<String, Value>, TemplateError> {
    let Value::Object(overlay) = overlay else {
        return Err(TemplateError::EnvNotObject {
            what,
            into: "job_configuration.env",
            found: py_type_name(overlay),
        });
    };
    let mut merged = base_env.clone();
    merged.extend(overlay.iter().map(|(k, v)| (k.clone(), v.clone())));
    Ok(merged)
}

fn invalid(reason: String) -> TemplateError {
    TemplateError::InvalidBaseJobTemplate { reason }
}

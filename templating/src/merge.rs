//! Merging job variables: deployment + flow run (`resolve_for_flow_run`), dotted keys and deep merges
//! (`from_template_and_values`, `set_in_dict`, `deep_merge`).

use serde_json::{Map, Value};

use crate::error::TemplateError;
use crate::pytype::py_type_name;

/// The job variables a flow run is rendered with: the deployment's, then the flow run's on top.
///
/// When the deployment's `env` is an object, the flow run's `env` is merged into it key by key (`dict.update`);
/// every other key, and `env` when the deployment has no object `env`, is overwritten as a whole.
///
/// Errors when the deployment's `env` is an object and the flow run's `env` is present but not an object:
/// Python's `dict.update` fails on `null`, strings and numbers alike. (Python would accept a list of
/// key/value pairs there; a JSON job variable never means that, so it is rejected too.)
pub fn merge_job_variables(
    deployment: &Map<String, Value>,
    flow_run: &Map<String, Value>,
) -> Result<Map<String, Value>, TemplateError> {
    let mut merged = deployment.clone();
    let mut run = flow_run.clone();
    if let Some(Value::Object(env)) = merged.get_mut("env")
        && let Some(run_env) = run.remove("env")
    {
        let Value::Object(run_env) = run_env else {
            return Err(TemplateError::EnvNotObject {
                what: "the flow run's job variable 'env'",
                into: "the deployment's env",
                found: py_type_name(&run_env),
            });
        };
        env.extend(run_env);
    }
    merged.extend(run);
    Ok(merged)
}

/// Job variables with dotted keys expanded: `{"env.FOO": "bar"}` becomes `{"env": {"FOO": "bar"}}`.
///
/// Dotted keys are expanded first (in map order), then plain keys go on top: an object is deep-merged over
/// the expansion and wins, anything else replaces it.
pub(crate) fn expand_dotted_keys(
    values: &Map<String, Value>,
) -> Result<Map<String, Value>, TemplateError> {
    let mut expanded = Map::new();
    for (key, value) in values.iter().filter(|(k, _)| k.contains('.')) {
        set_in_dict(&mut expanded, key, value.clone())?;
    }
    for (key, value) in values.iter().filter(|(k, _)| !k.contains('.')) {
        let merged = match (expanded.get(key), value) {
            (Some(Value::Object(existing)), Value::Object(overlay)) => {
                Value::Object(deep_merge(existing, overlay))
            }
            _ => value.clone(),
        };
        expanded.insert(key.clone(), merged);
    }
    Ok(expanded)
}

/// Prefect's `set_in_dict` on a dotted path (`[` read as `.`, `]` dropped): creates missing objects on the
/// way and fails when the path runs through a non-object.
fn set_in_dict(
    root: &mut Map<String, Value>,
    path: &str,
    value: Value,
) -> Result<(), TemplateError> {
    let normalized = path.replace('[', ".").replace(']', "");
    let keys: Vec<&str> = normalized.split('.').collect();
    let Some((last, parents)) = keys.split_last() else {
        return Ok(());
    };
    let mut current = root;
    for (depth, key) in parents.iter().enumerate() {
        let slot = current
            .entry((*key).to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        let Value::Object(next) = slot else {
            return Err(TemplateError::DottedKeyConflict {
                key: path.to_owned(),
                at: keys[..=depth].join("."),
            });
        };
        current = next;
    }
    current.insert((*last).to_owned(), value);
    Ok(())
}

/// Prefect's `deep_merge`: objects merge recursively, anything else in `overlay` wins.
pub(crate) fn deep_merge(
    base: &Map<String, Value>,
    overlay: &Map<String, Value>,
) -> Map<String, Value> {
    let mut result = base.clone();
    for (key, value) in overlay {
        let merged = match (result.get(key), value) {
            (Some(Value::Object(existing)), Value::Object(inner)) => {
                Value::Object(deep_merge(existing, inner))
            }
            _ => value.clone(),
        };
        result.insert(key.clone(), merged);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn expands_and_merges() {
        let got = expand_dotted_keys(&obj(json!({
            "env.FOO": "bar",
            "env": {"BAZ": "q"},
            "a.b[0]": 1,
            "image": "x",
        })))
        .ok();
        assert_eq!(
            got,
            Some(obj(
                json!({"env": {"FOO": "bar", "BAZ": "q"}, "a": {"b": {"0": 1}}, "image": "x"})
            ))
        );
    }

    #[test]
    fn plain_non_object_key_replaces_expansion() {
        let got = expand_dotted_keys(&obj(json!({"env.FOO": "bar", "env": "plain"}))).ok();
        assert_eq!(got, Some(obj(json!({"env": "plain"}))));
    }

    #[test]
    fn nested_object_wins_in_deep_merge() {
        let got = expand_dotted_keys(&obj(
            json!({"a.b.c": 1, "a.b.d": 2, "a": {"b": {"c": 9}, "e": 3}}),
        ))
        .ok();
        assert_eq!(
            got,
            Some(obj(json!({"a": {"b": {"c": 9, "d": 2}, "e": 3}})))
        );
    }

    #[test]
    fn dotted_key_through_scalar_is_an_error() {
        let err = expand_dotted_keys(&obj(json!({"a.b": 1, "a.b.c": 2}))).err();
        assert!(
            matches!(&err, Some(TemplateError::DottedKeyConflict { key, at }) if key == "a.b.c" && at == "a.b"),
            "{err:?}"
        );
        let err = expand_dotted_keys(&obj(json!({"a.b": null, "a.b.c": 2}))).err();
        assert!(matches!(err, Some(TemplateError::DottedKeyConflict { .. })));
    }

    #[test]
    fn merges_env_key_by_key_and_overwrites_the_rest() {
        let deployment =
            obj(json!({"image": "d", "env": {"A": "1", "B": "2"}, "labels": {"x": "1"}}));
        let run = obj(json!({"env": {"B": "run", "C": "3"}, "labels": {"y": "2"}, "cpu": 2}));
        let merged = merge_job_variables(&deployment, &run).ok();
        assert_eq!(
            merged,
            Some(obj(json!({
                "image": "d",
                "env": {"A": "1", "B": "run", "C": "3"},
                "labels": {"y": "2"},
                "cpu": 2,
            })))
        );
    }

    #[test]
    fn env_replaced_when_deployment_env_is_not_an_object() {
        let run = obj(json!({"env": {"C": "3"}}));
        for deployment in [json!({}), json!({"env": null}), json!({"env": "{{ x }}"})] {
            let merged = merge_job_variables(&obj(deployment), &run).ok();
            assert_eq!(merged, Some(obj(json!({"env": {"C": "3"}}))));
        }
        let merged = merge_job_variables(&obj(json!({"env": {"A": "1"}})), &Map::new()).ok();
        assert_eq!(merged, Some(obj(json!({"env": {"A": "1"}}))));
    }

    #[test]
    fn non_object_run_env_over_object_env_is_an_error() {
        for run_env in [json!(null), json!("A=1"), json!(1)] {
            let err = merge_job_variables(
                &obj(json!({"env": {"A": "1"}})),
                &obj(json!({"env": run_env})),
            )
            .err();
            assert!(
                matches!(err, Some(TemplateError::EnvNotObject { .. })),
                "{err:?}"
            );
        }
    }
}

//! Python dicts keep insertion order, and Prefect's output depends on it: `str()` of an embedded
//! dict, and dotted-key expansion followed by the merge of plain keys. These cases come from
//! running Prefect 3.9.1's own functions.

use prefect_templating::{apply_values, merge_job_variables, render_job_configuration};
use serde_json::{Map, Value, json};

fn no_env(_: &str) -> Option<String> {
    None
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => unreachable!(),
    }
}

#[test]
fn embedded_dicts_print_in_insertion_order() {
    let values = obj(serde_json::from_str(r#"{"d": {"z": 1, "a": 2}}"#).unwrap());
    let out = apply_values(&json!("x-{{ d }}"), &values, &no_env);
    assert_eq!(out, Some(json!("x-{'z': 1, 'a': 2}")));
}

#[test]
fn plain_keys_merge_over_dotted_keys_in_order() {
    let template = json!({"job_configuration": {"a": "{{ a }}"}, "variables": {"properties": {"a": {"type": "object"}}}});
    let variables: Map<String, Value> =
        serde_json::from_str(r#"{"a.b.d": 2, "a.b": {"c": 1}}"#).unwrap();
    let merged = merge_job_variables(&variables, &Map::new()).unwrap();
    let config = render_job_configuration(&template, &merged, &no_env).unwrap();
    assert_eq!(Value::Object(config), json!({"a": {"b": {"c": 1}}}));
}

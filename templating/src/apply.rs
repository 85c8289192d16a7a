//! Prefect's `apply_values(template, values, remove_notset=True)`.

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::path::get_from_map;
use crate::placeholder::{ENV_VAR_PREFIX, PlaceholderKind, find_placeholders, substitute};
use crate::pyrepr::py_str;

/// Fills the placeholders of `template` from `values`; `None` is Prefect's `NotSet` (the value is dropped).
///
/// * A string that is exactly one standard placeholder becomes the value itself, type preserved; if the
///   value is missing the string is `NotSet`, and an object key or array item holding it is removed.
/// * Any other string with placeholders gets `str(value)` for standard ones and the process environment
///   (through `env`) for `{{ $NAME }}`; missing ones become `""`. Block and variable placeholders are left for
///   [`crate::resolve_references`]. Substitution is one pass, so inserted text is never re-templated.
/// * Objects and arrays are processed recursively; numbers, bools and null pass through.
///
/// `env` stands for `os.environ.get`, so tests and callers decide what the "process environment" is.
pub fn apply_values(
    template: &Value,
    values: &Map<String, Value>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<Value> {
    match template {
        Value::Null | Value::Bool(_) | Value::Number(_) => Some(template.clone()),
        Value::String(s) => apply_to_string(s, values, env),
        Value::Array(items) => Some(Value::Array(
            items
                .iter()
                .filter_map(|item| apply_values(item, values, env))
                .collect(),
        )),
        Value::Object(map) => Some(Value::Object(
            map.iter()
                .filter_map(|(k, v)| apply_values(v, values, env).map(|v| (k.clone(), v)))
                .collect(),
        )),
    }
}

fn apply_to_string(
    template: &str,
    values: &Map<String, Value>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<Value> {
    let placeholders = find_placeholders(template);
    if let [only] = placeholders.as_slice()
        && only.full_match == template
        && only.kind == PlaceholderKind::Standard
    {
        return get_from_map(values, &only.name);
    }
    if placeholders.is_empty() {
        return Some(Value::String(template.to_owned()));
    }

    let mut replacements = HashMap::new();
    for p in placeholders {
        let value = match p.kind {
            PlaceholderKind::Standard => get_from_map(values, &p.name).map(|v| py_str(&v)),
            // Python's `name.lstrip("$")` strips every leading `$`.
            PlaceholderKind::EnvVar => env(p.name.trim_start_matches(ENV_VAR_PREFIX)),
            PlaceholderKind::BlockDocument | PlaceholderKind::Variable => continue,
        };
        replacements.insert(p.full_match, value.unwrap_or_default());
    }
    Some(Value::String(substitute(template, &replacements)))
}

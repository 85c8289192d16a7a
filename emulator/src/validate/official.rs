//! The official client's types, as JSON Schemas derived from `@northflank/js-client`
//! (`emulator/schema/northflank.json`, written by `scripts/nf-schema/generate.mjs`). They drive
//! what the hand-written rules cannot keep in step with by hand: which fields and query
//! parameters exist, and where `null` is allowed. So the emulator refuses a misspelled field
//! exactly where the official types have no such field, and the two cannot drift apart.

use std::sync::OnceLock;

use serde_json::{Map, Value};

use super::join;
use crate::error::Issues;

const DOCUMENT: &str = include_str!("../../schema/northflank.json");

fn document() -> &'static Value {
    static PARSED: OnceLock<Value> = OnceLock::new();
    // The file is generated and checked by the tests; a broken one is a build defect.
    PARSED.get_or_init(|| serde_json::from_str(DOCUMENT).expect("emulator/schema/northflank.json"))
}

/// `@northflank/js-client <version>`: where the schemas come from, for messages.
pub fn source() -> String {
    let d = document();
    format!(
        "{} {}",
        d["package"].as_str().unwrap_or_default(),
        d["version"].as_str().unwrap_or_default()
    )
}

fn endpoint(key: &str) -> Option<&'static Value> {
    document()["endpoints"].get(key)
}

/// The request type of an endpoint: its client type name and schema.
pub fn request(key: &str) -> Option<(&'static str, &'static Value)> {
    let r = endpoint(key)?.get("request")?;
    Some((r["type"].as_str()?, &r["schema"]))
}

/// Reports every field of `body` that the endpoint's request type does not have, and every
/// `null` where the type allows none. Types, required fields and value rules are left to the
/// hand-written checks, which word them better.
pub fn check_request(key: &str, body: &Value, issues: &mut Issues) {
    if let Some((name, schema)) = request(key) {
        walk(&[schema], body, "", name, issues);
    }
}

/// The query parameters the official client sends to an endpoint.
pub struct Query {
    pub known: Vec<&'static str>,
    /// Those it always sends with a fixed value (`queryType=range` on logs).
    pub fixed: Vec<(&'static str, &'static str)>,
}

/// `None` for an endpoint outside the types.
pub fn query(key: &str) -> Option<Query> {
    let q = endpoint(key)?.get("query");
    let known = q
        .and_then(|q| q["parameters"].as_array())
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let fixed = q
        .and_then(|q| q["required"].as_object())
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.as_str(), v.as_str()?)))
                .collect()
        })
        .unwrap_or_default();
    Some(Query { known, fixed })
}

/// The alternatives a schema stands for: the branches of an `anyOf`, else itself.
fn alternatives<'s>(schemas: &[&'s Value]) -> Vec<&'s Value> {
    schemas
        .iter()
        .flat_map(|s| match s.get("anyOf").and_then(Value::as_array) {
            Some(branches) => branches.iter().collect(),
            None => vec![*s],
        })
        .collect()
}

fn allows_null(schema: &Value) -> bool {
    let Some(map) = schema.as_object() else {
        return true;
    };
    let typed = map.contains_key("type") || map.contains_key("enum") || map.contains_key("const");
    !typed
        || map.get("type").is_some_and(|t| match t {
            Value::String(s) => s == "null",
            Value::Array(a) => a.iter().any(|t| t == "null"),
            _ => false,
        })
        || map
            .get("enum")
            .and_then(Value::as_array)
            .is_some_and(|e| e.contains(&Value::Null))
}

fn walk(schemas: &[&Value], value: &Value, path: &str, type_name: &str, issues: &mut Issues) {
    let alts = alternatives(schemas);
    let shown = if path.is_empty() { "(body)" } else { path };
    if value.is_null() {
        if !alts.iter().any(|s| allows_null(s)) {
            issues.push(
                shown,
                format!("must not be null: {type_name} has no null here (leave the field out)"),
            );
        }
        return;
    }
    match value {
        Value::Object(map) => walk_object(&alts, map, path, type_name, issues),
        Value::Array(items) => {
            let item_schemas: Vec<&Value> = alts.iter().filter_map(|s| s.get("items")).collect();
            if item_schemas.is_empty() {
                return;
            }
            for (i, item) in items.iter().enumerate() {
                walk(
                    &item_schemas,
                    item,
                    &format!("{path}[{i}]"),
                    type_name,
                    issues,
                );
            }
        }
        _ => {}
    }
}

fn walk_object(
    alts: &[&Value],
    map: &Map<String, Value>,
    path: &str,
    type_name: &str,
    issues: &mut Issues,
) {
    let objects: Vec<&Map<String, Value>> = alts
        .iter()
        .filter_map(|s| s.get("properties")?.as_object())
        .collect();
    // An untyped alternative (`any`) or an object without declared fields accepts any key.
    if objects.is_empty()
        || alts
            .iter()
            .any(|s| s.as_object().is_some_and(Map::is_empty))
    {
        return;
    }
    for (key, child) in map {
        let declared: Vec<&Value> = objects.iter().filter_map(|o| o.get(key)).collect();
        if declared.is_empty() {
            let mut known: Vec<&str> = objects
                .iter()
                .flat_map(|o| o.keys().map(String::as_str))
                .collect();
            known.sort_unstable();
            known.dedup();
            issues.push(
                &join(path, key),
                format!(
                    "is not a field of {type_name} in {} (known here: {})",
                    source(),
                    known.join(", ")
                ),
            );
        } else {
            walk(&declared, child, &join(path, key), type_name, issues);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn issues(key: &str, body: Value) -> Vec<String> {
        let mut found = Issues::default();
        check_request(key, &body, &mut found);
        found.list().map(|(p, r)| format!("{p}: {r}")).collect()
    }

    const PUT: &str = "PUT /v1/projects/{projectId}/jobs";

    /// Bumping the pin without regenerating would leave the emulator on the old types.
    #[test]
    fn the_schema_comes_from_the_pinned_client() {
        let lock = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../scripts/nf-schema/package-lock.json"
        );
        let lock: Value = serde_json::from_str(&std::fs::read_to_string(lock).unwrap()).unwrap();
        let pinned = &lock["packages"]["node_modules/@northflank/js-client"];
        let d = document();
        assert_eq!(
            (&d["version"], &d["integrity"]),
            (&pinned["version"], &pinned["integrity"]),
            "regenerate: cd scripts/nf-schema && npm ci --ignore-scripts && node generate.mjs"
        );
        assert_eq!(source(), "@northflank/js-client 0.9.5");
    }

    #[test]
    fn unknown_fields_and_nulls_are_named_by_path() {
        let body = json!({
            "name": "pf-x",
            "description": null,
            "billing": {"deploymentPlan": "nf-compute-20"},
            "deployment": {"external": {"imagePath": "a:b"},
                           "docker": {"configType": "customCommand", "customComand": "x"}},
            "settings": {"backofflimit": 1, "activeDeadlineSeconds": null},
            "healthChecks": [{"protocol": "HTTP", "typo": 1}],
            "runtimeEnvironment": {"ANY_KEY": "fine"},
        });
        let found = issues(PUT, body);
        assert_eq!(found.len(), 4, "{found:#?}");
        assert!(found[0].starts_with("description: must not be null: PutJobData"));
        assert!(found[1].starts_with(
            "deployment.docker.customComand: is not a field of PutJobData in @northflank/js-client 0.9.5 (known here: configType, customCommand, customEntrypoint)"
        ));
        assert!(found[2].starts_with("settings.backofflimit: is not a field"));
        assert!(found[3].starts_with("healthChecks[0].typo: is not a field"));
    }

    #[test]
    fn every_source_branch_is_known_and_the_update_has_no_type() {
        for source in ["external", "internal", "vcs"] {
            let body = json!({"name": "ab c", "billing": {"deploymentPlan": "p-1"},
                              "deployment": {source: {}}});
            assert_eq!(issues(PUT, body), Vec::<String>::new(), "{source}");
        }
        let update = "POST /v1/integrations/notifications/{notificationId}";
        let found = issues(update, json!({"type": "RAW_WEBHOOK", "secret": "s"}));
        assert_eq!(found.len(), 1);
        assert!(found[0].starts_with("type: is not a field of UpdateNotificationData"));
        let logs = query("GET /v1/projects/{projectId}/jobs/{jobId}/logs").unwrap();
        assert!(logs.known.contains(&"runId") && logs.known.contains(&"lineLimit"));
        assert_eq!(logs.fixed, [("queryType", "range")]);
    }
}

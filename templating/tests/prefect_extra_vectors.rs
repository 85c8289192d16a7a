//! Edge cases run through Prefect 3.9.1's own code by `fixtures/generate_extra_vectors.py`: `apply_values`,
//! `get_from_dict`, `resolve_for_flow_run` up to the model, and the block and variable passes.

mod common;

use common::{block_on, env_of, obj};
use prefect_templating::{
    Lookup, LookupError, TemplateError, apply_values, get_from_dict, merge_job_variables,
    render_job_configuration, resolve_references,
};
use serde_json::{Map, Value, json};

const FIXTURE: &str = include_str!("fixtures/prefect-3.9.1-extra-vectors.json");

fn fixture() -> Value {
    serde_json::from_str(FIXTURE).expect("fixture is JSON")
}

fn cases<'a>(doc: &'a Value, section: &str) -> &'a Vec<Value> {
    doc[section]
        .as_array()
        .unwrap_or_else(|| panic!("fixture has a {section} array"))
}

fn dropped() -> Value {
    json!({"$dropped": true})
}

/// The fixture's in-memory Prefect API.
struct FixtureApi(Value);

impl Lookup for FixtureApi {
    async fn block_document_by_id(&self, id: &str) -> Result<Option<Value>, LookupError> {
        Ok(self.0["blocks_by_id"].get(id).cloned())
    }
    async fn block_document_by_name(
        &self,
        slug: &str,
        name: &str,
    ) -> Result<Option<Value>, LookupError> {
        let blocks = self.0["blocks_by_name"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        Ok(blocks
            .into_iter()
            .find(|b| b["slug"] == slug && b["name"] == name)
            .map(|b| b["data"].clone()))
    }
    async fn variable(&self, name: &str) -> Result<Option<Value>, LookupError> {
        Ok(self.0["variables"].get(name).cloned())
    }
}

/// Which of our errors stands for a Python exception class.
fn matches_python_error(err: &TemplateError, python: &str) -> bool {
    use TemplateError::*;
    let class = python.split(':').next().unwrap_or_default();
    match class {
        "TypeError" => matches!(err, EnvNotObject { .. } | DottedKeyConflict { .. }),
        "AttributeError" => matches!(
            err,
            InvalidBlockReference { .. } | InvalidBaseJobTemplate { .. }
        ),
        "ObjectNotFound" => matches!(err, BlockNotFound { .. } | BlockDocumentNotFound { .. }),
        "ValueError" => matches!(
            err,
            InvalidBlockPlaceholder { .. }
                | BlockKeyPathNotFound { .. }
                | BlockValueNotEmbeddable { .. }
        ),
        _ => false,
    }
}

#[test]
fn apply_values_edge_cases() {
    let doc = fixture();
    let values = doc["values"].as_object().expect("values");
    let env = env_of(&[("NF_TEST_ENV", "from-env")]);
    let vectors = cases(&doc, "apply_values");
    for vector in vectors {
        let got = apply_values(&vector["template"], values, &env).unwrap_or_else(dropped);
        assert_eq!(got, vector["expected"], "template {}", vector["template"]);
    }
    assert!(vectors.len() > 30, "only {} vectors", vectors.len());
}

#[test]
fn get_from_dict_edge_cases() {
    let doc = fixture();
    for case in cases(&doc, "get_from_dict") {
        let path = case["path"].as_str().expect("path");
        let got = get_from_dict(&case["data"], path).unwrap_or_else(dropped);
        assert_eq!(got, case["expected"], "path {path:?}");
    }
}

async fn resolve_for_flow_run(case: &Value, api: &FixtureApi) -> Result<Value, TemplateError> {
    let deployment = obj(case["deployment"].clone());
    let flow_run = obj(case["flow_run"].clone());
    let job_variables = merge_job_variables(&deployment, &flow_run)?;
    let rendered = render_job_configuration(&case["base_job_template"], &job_variables, &|_| None)?;
    resolve_references(Value::Object(rendered), api).await
}

#[test]
fn job_configuration_cases() {
    let doc = fixture();
    let api = FixtureApi(doc["api"].clone());
    let vectors = cases(&doc, "job_configuration");
    for case in vectors {
        let name = &case["name"];
        let got = block_on(resolve_for_flow_run(case, &api));
        match (case.get("expected"), case["error"].as_str(), got) {
            (Some(expected), _, Ok(got)) => assert_eq!(&got, expected, "{name}"),
            (None, Some(python), Err(err)) => {
                assert!(
                    matches_python_error(&err, python),
                    "{name}: Prefect raised {python}, we gave {err:?}"
                );
            }
            (_, _, got) => panic!("{name}: expected {case}, got {got:?}"),
        }
    }
    assert!(vectors.len() >= 15);
}

#[test]
fn resolve_cases() {
    let doc = fixture();
    let api = FixtureApi(doc["api"].clone());
    for case in cases(&doc, "resolve") {
        let template = &case["template"];
        let got = block_on(resolve_references(template.clone(), &api));
        match (case.get("expected"), case["error"].as_str(), got) {
            (Some(expected), _, Ok(got)) => assert_eq!(&got, expected, "{template}"),
            (None, Some(python), Err(err)) => {
                assert!(
                    matches_python_error(&err, python),
                    "{template}: Prefect raised {python}, we gave {err:?}"
                );
            }
            (_, _, got) => panic!("{template}: expected {case}, got {got:?}"),
        }
    }
}

#[test]
fn fixture_sections_are_not_empty() {
    let doc = fixture();
    for section in [
        "apply_values",
        "get_from_dict",
        "job_configuration",
        "resolve",
    ] {
        assert!(!cases(&doc, section).is_empty(), "{section}");
    }
    assert!(
        doc["values"]
            .as_object()
            .is_some_and(|m: &Map<String, Value>| !m.is_empty())
    );
}

//! The hand-written rules agree with the official types: for rich valid bodies of every request
//! type, each field the types require is reported missing when removed, each field they make
//! optional may be left out, each enum lists exactly the types' values, and each field of a
//! plain type is refused when it has another type. (The
//! schema-driven check covers unknown fields and nulls; the hand-written rules add what the
//! types cannot say: patterns, lengths, conditional requirements, exactly one source.)

use serde_json::{Value, json};

use super::official;
use super::{Purpose, validate_integration, validate_job, validate_run};
use crate::error::{ApiError, Issues};

const PUT: &str = "PUT /v1/projects/{projectId}/jobs";
const POST: &str = "POST /v1/projects/{projectId}/jobs";
const RUN: &str = "POST /v1/projects/{projectId}/jobs/{jobId}/runs";

fn job_bodies() -> Vec<Value> {
    let shared = json!({
        "name": "rich job", "description": "A job (all fields)", "stageId": "stage-1",
        "tags": ["prefect"], "infrastructure": {"architecture": "arm"}, "disabledCI": false,
        "billing": {"deploymentPlan": "nf-gpu-h100-80-1g", "buildPlan": "nf-compute-400-16",
                    "gpu": {"enabled": true, "configuration": {"gpuType": "h100-80", "gpuCount": 1, "timesliced": false}}},
        "settings": {"backoffLimit": 1, "activeDeadlineSeconds": 60, "runOnSourceChange": "never",
                     "cron": {"schedule": "0 * * * *", "suspended": false, "concurrencyPolicy": "forbid"}},
        "buildConfiguration": {"pathIgnoreRules": ["README.md"], "isAllowList": false, "ciIgnoreFlagsEnabled": true,
                               "ciIgnoreFlags": ["[skip ci]"], "dockerCredentials": ["creds"], "includeGitFolder": false,
                               "fullGitClone": false, "enableGitLfs": false,
                               "storage": {"ephemeralStorage": {"storageSize": 16384}}},
        "runtimeEnvironment": {"A_B": "1"}, "buildArguments": {"X": "y"},
        "runtimeFiles": {"/f": {"data": "ZA==", "encoding": "utf-8"}},
    });
    let deployment = json!({
        "docker": {"configType": "customEntrypointCustomCommand", "customEntrypoint": "/bin/sh", "customCommand": "-c true"},
        "buildpack": {"configType": "customProcess", "customProcess": "web"},
        "storage": {"useHdbStorage": false, "usePdSsdStorage": false, "ephemeralStorage": {"storageSize": 1024}, "shmSize": 64},
        "gpu": {"enabled": true, "configuration": {"gpuType": "h100-80", "gpuCount": 1}},
        "gracePeriodSeconds": 5,
    });
    let sources = [
        json!({"external": {"imagePath": "nginx:latest", "credentials": "creds"}}),
        json!({"internal": {"id": "builder", "branch": "main", "buildSHA": "latest", "buildId": "b-1"}}),
        json!({"vcs": {"projectUrl": "https://github.com/northflank/gatsby-with-northflank", "projectType": "github",
                       "projectBranch": "main", "accountLogin": "me", "vcsLinkId": "abcdefabcdefabcdefabcdef"}}),
    ];
    let builds = [
        json!({"dockerfile": {"dockerFilePath": "/Dockerfile", "dockerWorkDir": "/", "buildEngine": "buildkit"}}),
        json!({"buildpack": {"builder": "HEROKU_24", "buildpackLocators": ["a"], "useCache": true}}),
    ];
    let mut bodies = Vec::new();
    for (i, source) in sources.into_iter().enumerate() {
        let mut body = shared.clone();
        let mut d = deployment.clone();
        d.as_object_mut()
            .unwrap()
            .extend(source.as_object().unwrap().clone());
        body["deployment"] = d;
        body["buildSettings"] = builds[i % 2].clone();
        bodies.push(body);
    }
    bodies
}

fn run_bodies() -> Vec<Value> {
    let shared = json!({"runtimeEnvironment": {"A": "1"}, "runtimeFiles": {"/f": {"data": "ZA=="}},
                        "billing": {"deploymentPlan": "nf-compute-20"}});
    ["external", "internal"]
        .into_iter()
        .map(|source| {
            let mut body = shared.clone();
            body["deployment"] = json!({
                "docker": {"configType": "customCommand", "customCommand": "true"},
                "buildpack": {"configType": "default"},
                "storage": {"ephemeralStorage": {"storageSize": 1024}},
            });
            body["deployment"][source] = if source == "external" {
                json!({"imagePath": "nginx:latest"})
            } else {
                json!({"id": "builder", "buildSHA": "latest"})
            };
            body
        })
        .collect()
}

fn integration_body() -> Value {
    json!({"name": "Prefect runs", "type": "RAW_WEBHOOK", "webhook": "https://example.com/hook",
           "secret": "s", "restricted": true, "projects": ["p"],
           "restrictions": {"tags": {"enabled": true, "items": ["a-b"], "matchCondition": "or"}},
           "events": {"trigger:job-run:start": true}})
}

/// Each request type with its valid bodies and the hand-written validation of it.
type Validate = fn(&Value) -> Result<(), ApiError>;

fn cases() -> Vec<(&'static str, Vec<Value>, Validate)> {
    let mut update = integration_body();
    update.as_object_mut().unwrap().remove("type");
    vec![
        (PUT, job_bodies(), |b| validate_job(b, 52, PUT, false)),
        (POST, job_bodies(), |b| validate_job(b, 52, POST, false)),
        (RUN, run_bodies(), |b| validate_run(b, false)),
        (Purpose::Create.endpoint(), vec![integration_body()], |b| {
            validate_integration(b, Purpose::Create, false)
        }),
        (Purpose::Update.endpoint(), vec![update], |b| {
            validate_integration(b, Purpose::Update, false)
        }),
    ]
}

fn issues(result: Result<(), ApiError>) -> Vec<(String, String)> {
    match result {
        Ok(()) => Vec::new(),
        Err(ApiError::Validation(issues)) => owned(&issues),
        Err(other) => vec![("?".into(), other.to_string())],
    }
}

fn owned(issues: &Issues) -> Vec<(String, String)> {
    issues
        .list()
        .map(|(p, r)| (p.to_owned(), r.to_owned()))
        .collect()
}

/// Every (path, schema) pair the body's values answer to; inside a union, the branch that
/// declares most of the object's fields (the one its source picks).
fn leaves<'s>(schema: &'s Value, body: &Value, path: String, out: &mut Vec<(String, &'s Value)>) {
    let branch = match schema.get("anyOf").and_then(Value::as_array) {
        Some(branches) => {
            let fit = |b: &&Value| {
                let props = b.get("properties").and_then(Value::as_object);
                let keys = body.as_object().into_iter().flat_map(|m| m.keys());
                keys.filter(|k| props.is_some_and(|p| p.contains_key(*k)))
                    .count()
            };
            let best = branches.iter().max_by_key(fit);
            match best {
                Some(b) => b,
                None => return,
            }
        }
        None => schema,
    };
    out.push((path.clone(), branch));
    let (Some(props), Some(map)) = (branch.get("properties"), body.as_object()) else {
        return;
    };
    for (key, value) in map {
        if let Some(child) = props.get(key) {
            let child_path = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            leaves(child, value, child_path, out);
        }
    }
}

fn pointer(path: &str) -> String {
    format!("/{}", path.replace('.', "/"))
}

fn without(body: &Value, path: &str, key: &str) -> Value {
    let mut body = body.clone();
    let parent = if path.is_empty() {
        Some(&mut body)
    } else {
        body.pointer_mut(&pointer(path))
    };
    if let Some(map) = parent.and_then(Value::as_object_mut) {
        map.remove(key);
    }
    body
}

fn replaced(body: &Value, path: &str, value: Value) -> Value {
    let mut body = body.clone();
    if let Some(slot) = body.pointer_mut(&pointer(path)) {
        *slot = value;
    }
    body
}

#[test]
fn the_rich_bodies_are_valid_both_ways() {
    for (endpoint, bodies, validate) in cases() {
        for body in bodies {
            assert_eq!(issues(validate(&body)), [], "{endpoint}: {body}");
            let mut strict = Issues::default();
            official::check_request(endpoint, &body, &mut strict);
            assert_eq!(owned(&strict), [], "{endpoint}");
        }
    }
}

/// One field of one valid body, and the hand-written validation of its request type.
struct Probe<'a> {
    endpoint: &'a str,
    body: &'a Value,
    validate: Validate,
    path: &'a str,
    schema: &'a Value,
}

impl Probe<'_> {
    fn issues_with(&self, body: Value) -> Vec<(String, String)> {
        issues((self.validate)(&body))
    }

    fn required(&self) -> Vec<&str> {
        self.schema
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    }

    /// Each field the types require is reported missing when removed. A union's source
    /// (`deployment.external`, `buildSettings.dockerfile`) is reported at the union, naming it.
    fn required_gaps(&self, gaps: &mut Vec<String>) {
        let path = self.path;
        for key in self.required() {
            let full = if path.is_empty() {
                key.to_owned()
            } else {
                format!("{path}.{key}")
            };
            let got = self.issues_with(without(self.body, path, key));
            let reported = |(p, r): &(String, String)| {
                (*p == full && r == "is required") || (p == path && r.contains(key))
            };
            if !got.iter().any(reported) {
                gaps.push(format!("{}: removing {full} gives {got:?}", self.endpoint));
            }
        }
    }

    /// What the types make optional may be left out (unless a rule the types cannot state,
    /// such as `customCommand` for `configType: customCommand`, wants it).
    fn optional_gaps(&self, gaps: &mut Vec<String>) {
        let path = self.path;
        let object = if path.is_empty() {
            Some(self.body)
        } else {
            self.body.pointer(&pointer(path))
        };
        let required = self.required();
        for key in object
            .and_then(Value::as_object)
            .into_iter()
            .flat_map(|m| m.keys())
        {
            if required.contains(&key.as_str()) {
                continue;
            }
            let got = self.issues_with(without(self.body, path, key));
            if !got.iter().all(|(_, r)| r.contains("is required when")) {
                gaps.push(format!(
                    "{}: leaving out optional {path}.{key} gives {got:?}",
                    self.endpoint
                ));
            }
        }
    }

    /// An enum lists exactly the types' values; a field of a plain type refuses another type.
    fn value_gaps(&self, gaps: &mut Vec<String>) {
        let path = self.path;
        if let Some(values) = self.schema.get("enum").and_then(Value::as_array) {
            let got = self.issues_with(replaced(self.body, path, json!("not-a-value")));
            let listed: Vec<&str> = values.iter().filter_map(Value::as_str).collect();
            let rule = format!("must be one of {}", listed.join(", "));
            if !got.contains(&(path.to_owned(), rule.clone())) {
                gaps.push(format!("{} {path}: {got:?} lacks {rule}", self.endpoint));
            }
        }
        if let Some(kind) = self.schema.get("type").and_then(Value::as_str)
            && matches!(kind, "string" | "number" | "boolean" | "object" | "array")
        {
            let wrong = if kind == "boolean" {
                json!("yes")
            } else {
                json!(true)
            };
            let got = self.issues_with(replaced(self.body, path, wrong));
            if !got.iter().any(|(p, _)| p == path) {
                gaps.push(format!(
                    "{}: a {kind} {path} of another type passes: {got:?}",
                    self.endpoint
                ));
            }
        }
    }
}

#[test]
fn required_fields_enums_and_types_agree_with_the_official_types() {
    let mut gaps = Vec::new();
    for (endpoint, bodies, validate) in cases() {
        let (_, schema) = official::request(endpoint).unwrap();
        for body in &bodies {
            let mut found = Vec::new();
            leaves(schema, body, String::new(), &mut found);
            for (path, schema) in &found {
                let probe = Probe {
                    endpoint,
                    body,
                    validate,
                    path,
                    schema,
                };
                probe.required_gaps(&mut gaps);
                probe.optional_gaps(&mut gaps);
                if !path.is_empty() {
                    probe.value_gaps(&mut gaps);
                }
            }
        }
    }
    gaps.dedup();
    assert!(gaps.is_empty(), "{}", gaps.join("\n"));
}

//! Jobs (§2): create, put (upsert), get, list, delete.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use super::pagination::{page_of, paginate};
use super::{ApiResult, Params, check_project, ok, ok_page, param, parse_body};
use crate::config::Config;
use crate::error::{ApiError, Issues};
use crate::model::JobRecord;
use crate::runner::lifecycle;
use crate::state::{App, JobEntry, derive_id, now_ms};
use crate::validate::validate_job;

/// Fields that carry secrets: echoed on create (the caller sent them) but not served by GET,
/// which has its own runtime-environment endpoints in the real API.
const SECRET_FIELDS: &[&str] = &[
    "runtimeEnvironment",
    "runtimeFiles",
    "buildFiles",
    "buildArguments",
    "dockerSecretMounts",
];

#[derive(PartialEq)]
enum Upsert {
    CreateOnly,
    CreateOrUpdate,
}

pub(crate) async fn create(
    State(app): State<App>,
    Path(p): Path<Params>,
    body: Bytes,
) -> ApiResult {
    save(&app, &p, &body, Upsert::CreateOnly)
}

pub(crate) async fn put(State(app): State<App>, Path(p): Path<Params>, body: Bytes) -> ApiResult {
    save(&app, &p, &body, Upsert::CreateOrUpdate)
}

fn save(app: &App, p: &Params, body: &Bytes, mode: Upsert) -> ApiResult {
    let project = param(p, "projectId");
    check_project(app, project)?;
    let body = parse_body(body, None)?;
    validate_job(&body, app.config.name_max_len)?;
    check_known_tags(app, &body)?;
    let name = body["name"].as_str().unwrap_or_default();
    let id = derive_id(name);
    let team = p.get("teamId").unwrap_or(&app.config.team);
    let job_type = if body.pointer("/settings/cron").is_some_and(|c| !c.is_null()) {
        "cron"
    } else {
        "manual"
    };
    let now = now_ms();
    let mut guard = app.state();
    let state = &mut *guard;
    let key = (project.to_owned(), id.clone());
    let record = match state.jobs.get_mut(&key) {
        Some(_) if mode == Upsert::CreateOnly => {
            let status = StatusCode::from_u16(app.config.duplicate_job_status)
                .unwrap_or(StatusCode::CONFLICT);
            let message = "There is already a job with the same derived identifier".to_owned();
            return Err(ApiError::Other { status, message });
        }
        Some(existing) => {
            existing.record.spec = body.clone();
            existing.record.job_type = job_type.to_owned();
            existing.record.updated_at = now;
            state.counters.jobs_updated += 1;
            existing.record.clone()
        }
        None => {
            let record = JobRecord {
                project_id: project.to_owned(),
                app_id: format!("/{team}/{project}/{id}"),
                id,
                job_type: job_type.to_owned(),
                spec: body.clone(),
                created_at: now.clone(),
                updated_at: now,
            };
            let seq = state.next_seq();
            state.jobs.insert(
                key,
                JobEntry {
                    record: record.clone(),
                    seq,
                },
            );
            state.counters.jobs_created += 1;
            record
        }
    };
    drop(guard);
    let mut echo = body.as_object().cloned().unwrap_or_default();
    echo.insert("id".into(), json!(record.id));
    echo.insert("appId".into(), json!(record.app_id));
    echo.insert("jobType".into(), json!(record.job_type));
    echo.insert("createdAt".into(), json!(record.created_at));
    echo.insert("updatedAt".into(), json!(record.updated_at));
    Ok(ok(Value::Object(echo)))
}

pub(crate) async fn get(State(app): State<App>, Path(p): Path<Params>) -> ApiResult {
    let project = param(&p, "projectId");
    check_project(&app, project)?;
    let key = (project.to_owned(), param(&p, "jobId").to_owned());
    let state = app.state();
    let job = state
        .jobs
        .get(&key)
        .ok_or_else(|| ApiError::not_found("Job"))?;
    Ok(ok(detail_view(&job.record, &app.config)))
}

pub(crate) async fn list(
    State(app): State<App>,
    Path(p): Path<Params>,
    Query(q): Query<Params>,
) -> ApiResult {
    let project = param(&p, "projectId");
    check_project(&app, project)?;
    let page = page_of(&q)?;
    let mut jobs: Vec<(u64, Value)> = {
        let state = app.state();
        state
            .jobs
            .values()
            .filter(|j| j.record.project_id == project)
            .map(|j| (j.seq, list_view(&j.record)))
            .collect()
    };
    jobs.sort_by_key(|(seq, _)| *seq);
    let (items, pagination) = paginate(jobs.into_iter().map(|(_, v)| v).collect(), &page);
    Ok(ok_page(json!({ "jobs": items }), pagination))
}

pub(crate) async fn delete(State(app): State<App>, Path(p): Path<Params>) -> ApiResult {
    let project = param(&p, "projectId");
    check_project(&app, project)?;
    lifecycle::delete_job(&app, project, param(&p, "jobId"))?;
    Ok(ok(json!({})))
}

fn check_known_tags(app: &App, body: &Value) -> Result<(), ApiError> {
    let (Some(known), Some(tags)) = (
        &app.config.known_tags,
        body.get("tags").and_then(Value::as_array),
    ) else {
        return Ok(());
    };
    let mut issues = Issues::default();
    for (i, tag) in tags.iter().enumerate() {
        if let Some(tag) = tag.as_str()
            && !known.iter().any(|k| k == tag)
        {
            issues.push(
                &format!("tags[{i}]"),
                format!("unknown tag {tag:?}: tags must be defined first"),
            );
        }
    }
    issues.into_result()
}

fn spec_object(record: &JobRecord) -> Map<String, Value> {
    record.spec.as_object().cloned().unwrap_or_default()
}

/// `GET .../jobs/{j}` (§2.3): the stored body minus secrets, plus the always-present fields.
fn detail_view(record: &JobRecord, config: &Config) -> Value {
    let mut v = spec_object(record);
    for key in SECRET_FIELDS {
        v.remove(*key);
    }
    v.insert("id".into(), json!(record.id));
    v.insert("appId".into(), json!(record.app_id));
    v.insert("projectId".into(), json!(record.project_id));
    v.insert("jobType".into(), json!(record.job_type));
    v.insert("createdAt".into(), json!(record.created_at));
    v.insert("updatedAt".into(), json!(record.updated_at));
    let disabled_ci = v
        .get("disabledCI")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    v.insert("disabledCI".into(), json!(disabled_ci));
    v.insert("disabledCD".into(), json!(false));
    v.entry("tags").or_insert_with(|| json!([]));
    let settings = v.entry("settings").or_insert_with(|| json!({}));
    if let Some(s) = settings.as_object_mut() {
        s.entry("backoffLimit")
            .or_insert(json!(config.default_backoff_limit));
        s.entry("activeDeadlineSeconds").or_insert(Value::Null);
        if let Some(suspended) = s.get("cron").and_then(|c| c.get("suspended")).cloned() {
            v.insert("suspended".into(), suspended);
        }
    }
    if let Some(vcs) = record.spec.pointer("/deployment/vcs") {
        let dockerfile = record.spec.pointer("/buildSettings/dockerfile");
        let pick = |src: Option<&Value>, key: &str| {
            src.and_then(|s| s.get(key)).cloned().unwrap_or(Value::Null)
        };
        v.insert(
            "vcsData".into(),
            json!({
                "projectUrl": pick(Some(vcs), "projectUrl"),
                "projectType": pick(Some(vcs), "projectType"),
                "selfHostedVcsId": pick(Some(vcs), "selfHostedVcsId"),
                "projectBranch": pick(Some(vcs), "projectBranch"),
                "publicRepo": false,
                "dockerWorkDir": pick(dockerfile, "dockerWorkDir"),
                "dockerFilePath": pick(dockerfile, "dockerFilePath"),
            }),
        );
    }
    Value::Object(v)
}

/// An item of `GET .../jobs` (§2.3).
fn list_view(record: &JobRecord) -> Value {
    let spec = &record.spec;
    let mut v = json!({
        "id": record.id,
        "projectId": record.project_id,
        "appId": record.app_id,
        "name": spec.get("name").cloned().unwrap_or(Value::Null),
        "tags": spec.get("tags").cloned().filter(|t| t.is_array()).unwrap_or(json!([])),
        "jobType": record.job_type,
        "disabledCI": spec.get("disabledCI").and_then(Value::as_bool).unwrap_or(false),
        "disabledCD": false,
    });
    if let Some(d) = spec.get("description").filter(|d| d.is_string()) {
        v["description"] = d.clone();
    }
    if let Some(s) = spec.pointer("/settings/cron/suspended") {
        v["suspended"] = s.clone();
    }
    v
}

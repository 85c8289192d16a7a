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
    let endpoint = match mode {
        Upsert::CreateOnly => "POST /v1/projects/{projectId}/jobs",
        Upsert::CreateOrUpdate => "PUT /v1/projects/{projectId}/jobs",
    };
    validate_job(
        &body,
        app.config.name_max_len,
        endpoint,
        !app.config.lenient,
    )?;
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
    // Required by `CreateJobResult`/`PutJobResult`; no builds are emulated, so no `build`.
    echo.insert("status".into(), json!({}));
    echo.insert("cluster".into(), cluster());
    Ok(ok(Value::Object(echo)))
}

/// The cluster every job is on (`cluster` is required in job answers; one cluster here).
fn cluster() -> Value {
    json!({"id": "nf-emulator", "name": "nf-emulator"})
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

/// `GET .../jobs/{j}` (§2.3): the fields of `GetJobResult`, no others. Secrets and the image
/// are not among them (the real API serves those elsewhere).
fn detail_view(record: &JobRecord, config: &Config) -> Value {
    let spec = &record.spec;
    let get = |pointer: &str| spec.pointer(pointer).filter(|v| !v.is_null()).cloned();
    let mut v = Map::new();
    v.insert("id".into(), json!(record.id));
    v.insert("appId".into(), json!(record.app_id));
    v.insert("name".into(), get("/name").unwrap_or(Value::Null));
    v.insert("tags".into(), get("/tags").unwrap_or(json!([])));
    if let Some(d) = get("/description") {
        v.insert("description".into(), d);
    }
    v.insert("projectId".into(), json!(record.project_id));
    v.insert("jobType".into(), json!(record.job_type));
    v.insert("createdAt".into(), json!(record.created_at));
    if let Some(vcs) = vcs_data(spec) {
        v.insert("vcsData".into(), vcs);
    }
    if let Some(c) = get("/buildConfiguration") {
        v.insert("buildConfiguration".into(), c);
    }
    let disabled_ci = get("/disabledCI")
        .and_then(|d| d.as_bool())
        .unwrap_or(false);
    v.insert("disabledCI".into(), json!(disabled_ci));
    v.insert("disabledCD".into(), json!(false));
    let mut deployment = Map::new();
    for key in ["docker", "buildpack"] {
        if let Some(d) = get(&format!("/deployment/{key}")) {
            deployment.insert(key.into(), d);
        }
    }
    let mut storage = Map::new();
    if let Some(size) = get("/deployment/storage/ephemeralStorage/storageSize") {
        storage.insert("ephemeralStorage".into(), json!({"storageSize": size}));
    }
    if let Some(shm) = get("/deployment/storage/shmSize") {
        storage.insert("shmSize".into(), shm);
    }
    if !storage.is_empty() {
        deployment.insert("storage".into(), Value::Object(storage));
    }
    if !deployment.is_empty() {
        v.insert("deployment".into(), Value::Object(deployment));
    }
    let plan = get("/billing/deploymentPlan").unwrap_or(Value::Null);
    v.insert("billing".into(), json!({ "deploymentPlan": plan }));
    if let Some(s) = get("/settings/cron/suspended") {
        v.insert("suspended".into(), s);
    }
    v.insert("settings".into(), settings_view(spec, config));
    v.insert("cluster".into(), cluster());
    Value::Object(v)
}

/// `settings` of a job as GET shows it: the cron policy capitalised, as the GET type has it.
/// `activeDeadlineSeconds` is left out when the job has none: the type requires a number, and
/// what Northflank reports then is unknown; a null is what the type certainly forbids.
fn settings_view(spec: &Value, config: &Config) -> Value {
    let get = |pointer: &str| spec.pointer(pointer).filter(|v| !v.is_null()).cloned();
    let mut s = Map::new();
    if spec.pointer("/settings/cron").is_some_and(Value::is_object) {
        let mut cron = Map::new();
        if let Some(schedule) = get("/settings/cron/schedule") {
            cron.insert("schedule".into(), schedule);
        }
        if let Some(policy) = get("/settings/cron/concurrencyPolicy").and_then(|p| {
            let p = p.as_str()?.to_owned();
            Some(p[..1].to_uppercase() + &p[1..])
        }) {
            cron.insert("concurrencyPolicy".into(), json!(policy));
        }
        s.insert("cron".into(), Value::Object(cron));
    }
    let limit = get("/settings/backoffLimit").unwrap_or(json!(config.default_backoff_limit));
    s.insert("backoffLimit".into(), limit);
    if let Some(deadline) = get("/settings/activeDeadlineSeconds") {
        s.insert("activeDeadlineSeconds".into(), deadline);
    }
    Value::Object(s)
}

/// `vcsData` of a VCS job: what it builds from, without the fields it does not have.
fn vcs_data(spec: &Value) -> Option<Value> {
    let vcs = spec.pointer("/deployment/vcs")?.as_object()?;
    let dockerfile = spec
        .pointer("/buildSettings/dockerfile")
        .and_then(Value::as_object);
    let mut v = Map::new();
    for key in [
        "projectUrl",
        "projectType",
        "selfHostedVcsId",
        "projectBranch",
    ] {
        if let Some(x) = vcs.get(key).filter(|x| !x.is_null()) {
            v.insert(key.into(), x.clone());
        }
    }
    v.insert("publicRepo".into(), json!(false));
    for key in ["dockerWorkDir", "dockerFilePath"] {
        if let Some(x) = dockerfile.and_then(|d| d.get(key)).filter(|x| !x.is_null()) {
            v.insert(key.into(), x.clone());
        }
    }
    Some(Value::Object(v))
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

//! Job runs (§3): start, get, list (newest first), abort.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use serde_json::{Value, json};

use super::pagination::{page_of, paginate};
use super::{ApiResult, Params, check_project, ok, ok_page, param, parse_body};
use crate::config::AbortConcluded;
use crate::error::ApiError;
use crate::model::RunEnd;
use crate::runner::lifecycle::{self, ConcludeError, run_json};
use crate::runner::{Stream, note};
use crate::state::App;
use crate::validate::validate_run;

pub(crate) async fn start(
    State(app): State<App>,
    Path(p): Path<Params>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> ApiResult {
    if app.config.faults.stall_run_starts_token.is_some()
        && app.config.faults.stall_run_starts_token == super::gate::bearer(&headers)
    {
        // The caller is meant to die waiting; the answer only comes at shutdown.
        let mut stop = app.shutdown.subscribe();
        let _ = stop.wait_for(|s| *s).await;
        return Err(ApiError::Other {
            status: axum::http::StatusCode::SERVICE_UNAVAILABLE,
            message: "emulator shutting down".into(),
        });
    }
    let project = param(&p, "projectId");
    check_project(&app, project)?;
    let body = parse_body(&body, Some(json!({})))?;
    validate_run(&body, !app.config.lenient)?;
    let run = lifecycle::start_run(&app, project, param(&p, "jobId"), body)?;
    Ok(ok(json!({ "id": run.id, "runName": run.run_name })))
}

/// Checks project, job and that the run belongs to the job; returns the run's JSON.
fn find_run(app: &App, p: &Params) -> Result<Value, ApiError> {
    let project = param(p, "projectId");
    check_project(app, project)?;
    let job_id = param(p, "jobId");
    let state = app.state();
    if !state
        .jobs
        .contains_key(&(project.to_owned(), job_id.to_owned()))
    {
        return Err(ApiError::not_found("Job"));
    }
    state
        .runs
        .get(param(p, "runId"))
        .filter(|r| r.record.project_id == project && r.record.job_id == job_id)
        .map(|r| run_json(&r.record.run, &app.config))
        .ok_or_else(|| ApiError::not_found("Job run"))
}

pub(crate) async fn get(State(app): State<App>, Path(p): Path<Params>) -> ApiResult {
    Ok(ok(find_run(&app, &p)?))
}

pub(crate) async fn list(
    State(app): State<App>,
    Path(p): Path<Params>,
    Query(q): Query<Params>,
) -> ApiResult {
    let project = param(&p, "projectId");
    check_project(&app, project)?;
    let page = page_of(&q)?;
    let job_id = param(&p, "jobId");
    let mut runs: Vec<(u64, Value)> = {
        let state = app.state();
        if !state
            .jobs
            .contains_key(&(project.to_owned(), job_id.to_owned()))
        {
            return Err(ApiError::not_found("Job"));
        }
        state
            .runs
            .values()
            .filter(|r| r.record.project_id == project && r.record.job_id == job_id)
            .map(|r| (r.seq, run_json(&r.record.run, &app.config)))
            .collect()
    };
    runs.sort_by_key(|(seq, _)| *seq);
    if app.config.runs_newest_first {
        runs.reverse();
    }
    let (items, pagination) = paginate(runs.into_iter().map(|(_, v)| v).collect(), &page);
    Ok(ok_page(json!({ "runs": items }), pagination))
}

/// `DELETE .../runs/{r}` (§3.4): an active run ends FAILED and fires `job-run:abort`.
pub(crate) async fn abort(State(app): State<App>, Path(p): Path<Params>) -> ApiResult {
    find_run(&app, &p)?;
    let run_id = param(&p, "runId");
    match lifecycle::conclude(&app, run_id, RunEnd::Abort) {
        Ok(()) => {
            note(&app, run_id, Stream::Stderr, "run aborted through the API");
            Ok(ok(json!({})))
        }
        Err(ConcludeError::AlreadyConcluded) => match app.config.abort_concluded {
            AbortConcluded::Conflict => Err(ApiError::Conflict(
                ConcludeError::AlreadyConcluded.to_string(),
            )),
            AbortConcluded::Noop => Ok(ok(json!({}))),
        },
        Err(ConcludeError::NotFound) => Err(ApiError::not_found("Job run")),
    }
}

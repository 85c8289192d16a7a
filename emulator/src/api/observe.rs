//! Logs (§3.5) and containers (§3.2) of a job's runs.

use axum::extract::{Path, Query, State};
use serde_json::{Value, json};

use super::pagination::{page_of, paginate};
use super::{ApiResult, Params, check_project, ok, ok_page, param};
use crate::error::ApiError;
use crate::model::LogLine;
use crate::state::{App, RunEntry, State as Store};

/// The runs of the job selected by the optional `runId`, oldest first.
fn selected_runs<'s>(
    state: &'s Store,
    p: &Params,
    q: &Params,
) -> Result<Vec<&'s RunEntry>, ApiError> {
    let (project, job_id) = (param(p, "projectId"), param(p, "jobId"));
    if !state
        .jobs
        .contains_key(&(project.to_owned(), job_id.to_owned()))
    {
        return Err(ApiError::not_found("Job"));
    }
    let run_id = q.get("runId").filter(|r| !r.is_empty());
    let mut runs: Vec<&RunEntry> = state
        .runs
        .values()
        .filter(|r| r.record.project_id == project && r.record.job_id == job_id)
        .filter(|r| run_id.is_none_or(|id| *id == r.record.run.id))
        .collect();
    if run_id.is_some() && runs.is_empty() {
        return Err(ApiError::not_found("Job run"));
    }
    runs.sort_by_key(|r| r.seq);
    Ok(runs)
}

pub(crate) async fn logs(
    State(app): State<App>,
    Path(p): Path<Params>,
    Query(q): Query<Params>,
) -> ApiResult {
    check_project(&app, param(&p, "projectId"))?;
    let limit = match q.get("lineLimit") {
        None => usize::MAX,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| ApiError::invalid("lineLimit", "must be a positive integer"))?,
    };
    let backward = match q.get("direction").map(String::as_str) {
        None | Some("forward") => false,
        Some("backward") => true,
        Some(_) => {
            return Err(ApiError::invalid(
                "direction",
                "must be one of backward, forward",
            ));
        }
    };
    let includes = q.get("textIncludes");
    let excludes = q.get("textNotIncludes");
    let mut lines: Vec<LogLine> = {
        let state = app.state();
        selected_runs(&state, &p, &q)?
            .into_iter()
            .flat_map(|r| r.record.logs.iter().cloned())
            .filter(|l| includes.is_none_or(|t| l.log.contains(t.as_str())))
            .filter(|l| excludes.is_none_or(|t| !l.log.contains(t.as_str())))
            .collect()
    };
    // ISO-8601 timestamps of one format sort lexically; the sort is stable within a run.
    lines.sort_by(|a, b| a.ts.cmp(&b.ts));
    if backward {
        lines.reverse();
    }
    lines.truncate(limit);
    Ok(ok(serde_json::to_value(lines).unwrap_or(Value::Null)))
}

pub(crate) async fn containers(
    State(app): State<App>,
    Path(p): Path<Params>,
    Query(q): Query<Params>,
) -> ApiResult {
    check_project(&app, param(&p, "projectId"))?;
    let page = page_of(&q)?;
    let (containers, newest) = {
        let state = app.state();
        let runs = selected_runs(&state, &p, &q)?;
        let newest = runs.last().map(|r| r.record.run.id.clone());
        let containers: Vec<Value> = runs
            .into_iter()
            .map(|r| {
                json!({
                    "name": format!("{}-main", r.record.run.run_name),
                    "status": r.record.container_status,
                    "createdAt": r.record.container_created_at,
                    "updatedAt": r.record.container_updated_at,
                })
            })
            .collect();
        (containers, newest)
    };
    let (items, pagination) = paginate(containers, &page);
    let mut data = json!({ "containers": items });
    // `runId` is required by `GetJobContainersResult`: the run asked for, else the newest one
    // (a job without runs has none to name, and leaves it out).
    if let Some(run_id) = q.get("runId").cloned().or(newest) {
        data["runId"] = json!(run_id);
    }
    Ok(ok_page(data, pagination))
}

//! `/_emulator/*`: inspection and test hooks for tests that run the emulator as a process.
//! Never authenticated, rate limited, faulted or recorded.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::{ApiResult, ok, parse_body};
use crate::error::ApiError;
use crate::model::{Outcome, RunEnd};
use crate::runner::lifecycle::{self, ConcludeError};
use crate::state::App;

pub(crate) fn routes() -> Router<App> {
    Router::new()
        .route(
            "/_emulator/health",
            get(|| async { ok(json!({"status": "ok"})) }),
        )
        .route("/_emulator/state", get(state))
        .route("/_emulator/counters", get(counters))
        .route("/_emulator/requests", get(requests))
        .route("/_emulator/runs/{runId}/finish", post(finish))
        .route("/_emulator/reset", post(reset))
}

async fn state(State(app): State<App>) -> impl IntoResponse {
    axum::Json(app.state().snapshot())
}

async fn counters(State(app): State<App>) -> impl IntoResponse {
    axum::Json(app.state().counters.clone())
}

async fn requests(State(app): State<App>) -> impl IntoResponse {
    let requests: Vec<_> = app.state().requests.iter().cloned().collect();
    axum::Json(requests)
}

/// `{"outcome": "success" | "failure"}` concludes an active run now.
async fn finish(State(app): State<App>, Path(run_id): Path<String>, body: Bytes) -> ApiResult {
    let body = parse_body(&body, None)?;
    let outcome: Outcome = body
        .get("outcome")
        .cloned()
        .and_then(|o| serde_json::from_value(o).ok())
        .ok_or_else(|| ApiError::invalid("outcome", "must be \"success\" or \"failure\""))?;
    match finish_run(&app, &run_id, outcome) {
        Ok(()) => Ok(ok(json!({}))),
        Err(ConcludeError::NotFound) => Err(ApiError::not_found("Job run")),
        Err(e @ ConcludeError::AlreadyConcluded) => Err(ApiError::Conflict(e.to_string())),
    }
}

pub(crate) fn finish_run(app: &App, run_id: &str, outcome: Outcome) -> Result<(), ConcludeError> {
    let end = match outcome {
        Outcome::Success => RunEnd::Success,
        Outcome::Failure => RunEnd::Failure,
    };
    lifecycle::conclude(app, run_id, end)
}

/// Clears the rate-limit windows only; jobs, runs and records stay.
async fn reset(State(app): State<App>) -> impl IntoResponse {
    app.state().windows.clear();
    ok(Value::Object(Default::default()))
}

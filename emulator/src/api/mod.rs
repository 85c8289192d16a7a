//! HTTP surface: the Northflank routes (behind the gate: auth, rate limit, faults, recording)
//! and the `/_emulator` control API (never gated).

mod control;
mod gate;
mod integrations;
mod jobs;
mod observe;
mod pagination;
mod record;
mod runs;

use std::collections::HashMap;

use axum::Router;
use axum::body::Bytes;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::state::App;
use crate::validate::patterns::RESOURCE_ID;

pub(crate) use control::finish_run;

pub(crate) type ApiResult = Result<Response, ApiError>;
pub(crate) type Params = HashMap<String, String>;

/// Registers a route under `/v1` and its team-scoped twin `/v1/teams/{teamId}` (§1.1).
fn twin(router: Router<App>, path: &str, methods: MethodRouter<App>) -> Router<App> {
    router
        .route(&format!("/v1{path}"), methods.clone())
        .route(&format!("/v1/teams/{{teamId}}{path}"), methods)
}

pub(crate) fn router(app: App) -> Router {
    let mut api = Router::new();
    let p = "/projects/{projectId}/jobs";
    api = twin(api, p, post(jobs::create).put(jobs::put).get(jobs::list));
    api = twin(
        api,
        &format!("{p}/{{jobId}}"),
        get(jobs::get).delete(jobs::delete),
    );
    api = twin(
        api,
        &format!("{p}/{{jobId}}/runs"),
        post(runs::start).get(runs::list),
    );
    api = twin(
        api,
        &format!("{p}/{{jobId}}/runs/{{runId}}"),
        get(runs::get).delete(runs::abort),
    );
    api = twin(api, &format!("{p}/{{jobId}}/logs"), get(observe::logs));
    api = twin(
        api,
        &format!("{p}/{{jobId}}/containers"),
        get(observe::containers),
    );
    let n = "/integrations/notifications";
    api = twin(api, n, post(integrations::create).get(integrations::list));
    api = twin(
        api,
        &format!("{n}/{{notificationId}}"),
        get(integrations::get)
            .post(integrations::update)
            .delete(integrations::delete),
    );
    let api = api
        .fallback(|| async { ApiError::NotFound("Not found".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(middleware::from_fn_with_state(app.clone(), gate::gate));
    api.merge(control::routes()).with_state(app)
}

/// `200 {"data": …}` (§1.1–1.2: success is always 200).
pub(crate) fn ok(data: Value) -> Response {
    axum::Json(json!({ "data": data })).into_response()
}

pub(crate) fn ok_page(data: Value, pagination: Value) -> Response {
    axum::Json(json!({ "data": data, "pagination": pagination })).into_response()
}

pub(crate) fn param<'p>(params: &'p Params, key: &str) -> &'p str {
    params.get(key).map(String::as_str).unwrap_or_default()
}

/// Parses a JSON body; an empty body becomes `empty` when given (the SDK sends `{}` anyway).
pub(crate) fn parse_body(bytes: &Bytes, empty: Option<Value>) -> Result<Value, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return empty.ok_or_else(|| ApiError::invalid("(body)", "is required: send a JSON object"));
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::BadRequest(format!("Request body is not valid JSON: {e}")))
}

/// Any well-formed project ID exists unless `Config::projects` restricts them.
pub(crate) fn check_project(app: &App, project: &str) -> Result<(), ApiError> {
    let known = match &app.config.projects {
        Some(list) => list.iter().any(|p| p == project),
        None => RESOURCE_ID.is_match(project),
    };
    if known {
        Ok(())
    } else {
        Err(ApiError::not_found("Project"))
    }
}

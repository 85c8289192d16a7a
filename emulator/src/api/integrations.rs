//! Notification integrations (§5.1). The ID is the name's slug; the secret is stored and used
//! for deliveries but never returned.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use serde_json::{Value, json};

use super::pagination::{page_of, paginate};
use super::{ApiResult, Params, ok, ok_page, param, parse_body};
use crate::error::ApiError;
use crate::model::{IntegrationStatus, IntegrationView};
use crate::state::{App, IntegrationEntry, derive_id, now_ms};
use crate::validate::validate_integration;

/// The validated body as a view; `id`, timestamps and status are filled by the caller.
fn view_from(
    body: &Value,
    id: String,
    created_at: String,
    status: IntegrationStatus,
) -> IntegrationView {
    let str_of = |k: &str| {
        body.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let events: BTreeMap<String, bool> = body
        .get("events")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_bool()?)))
                .collect()
        })
        .unwrap_or_default();
    let projects = body
        .get("projects")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|p| Some(p.as_str()?.to_owned()))
                .collect()
        })
        .unwrap_or_default();
    IntegrationView {
        id,
        name: str_of("name"),
        kind: str_of("type"),
        webhook: str_of("webhook"),
        restricted: body
            .get("restricted")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        projects,
        events,
        restrictions: body.get("restrictions").filter(|r| !r.is_null()).cloned(),
        created_at,
        updated_at: now_ms(),
        status,
    }
}

fn secret_of(body: &Value) -> Option<String> {
    body.get("secret")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

fn view_json(view: &IntegrationView) -> Value {
    serde_json::to_value(view).unwrap_or(Value::Null)
}

pub(crate) async fn create(State(app): State<App>, body: Bytes) -> ApiResult {
    let body = parse_body(&body, None)?;
    validate_integration(&body)?;
    let id = derive_id(body["name"].as_str().unwrap_or_default());
    let mut state = app.state();
    if state.integrations.contains_key(&id) {
        return Err(ApiError::Conflict(
            "There is already a notification integration with the same derived identifier".into(),
        ));
    }
    let view = view_from(&body, id.clone(), now_ms(), IntegrationStatus::default());
    let response = view_json(&view);
    let seq = state.next_seq();
    let entry = IntegrationEntry {
        view,
        secret: secret_of(&body),
        consecutive_failed_events: 0,
        seq,
    };
    state.integrations.insert(id, entry);
    Ok(ok(response))
}

pub(crate) async fn list(State(app): State<App>, Query(q): Query<Params>) -> ApiResult {
    let page = page_of(&q)?;
    let mut items: Vec<(u64, Value)> = {
        let state = app.state();
        state
            .integrations
            .values()
            .map(|i| (i.seq, view_json(&i.view)))
            .collect()
    };
    items.sort_by_key(|(seq, _)| *seq);
    let (items, pagination) = paginate(items.into_iter().map(|(_, v)| v).collect(), &page);
    Ok(ok_page(
        json!({ "notificationIntegrations": items }),
        pagination,
    ))
}

pub(crate) async fn get(State(app): State<App>, Path(p): Path<Params>) -> ApiResult {
    let state = app.state();
    let entry = state
        .integrations
        .get(param(&p, "notificationId"))
        .ok_or_else(|| ApiError::not_found("Notification integration"))?;
    Ok(ok(view_json(&entry.view)))
}

/// `POST .../{id}`: takes the full create body. The ID stays; an omitted secret keeps the
/// stored one; saving clears a failure-disabled status, as re-saving in the UI would.
pub(crate) async fn update(
    State(app): State<App>,
    Path(p): Path<Params>,
    body: Bytes,
) -> ApiResult {
    let body = parse_body(&body, None)?;
    validate_integration(&body)?;
    let mut state = app.state();
    let entry = state
        .integrations
        .get_mut(param(&p, "notificationId"))
        .ok_or_else(|| ApiError::not_found("Notification integration"))?;
    entry.view = view_from(
        &body,
        entry.view.id.clone(),
        entry.view.created_at.clone(),
        IntegrationStatus::default(),
    );
    entry.consecutive_failed_events = 0;
    if let Some(secret) = secret_of(&body) {
        entry.secret = Some(secret);
    }
    Ok(ok(view_json(&entry.view)))
}

pub(crate) async fn delete(State(app): State<App>, Path(p): Path<Params>) -> ApiResult {
    let mut state = app.state();
    state
        .integrations
        .remove(param(&p, "notificationId"))
        .ok_or_else(|| ApiError::not_found("Notification integration"))?;
    Ok(ok(json!({})))
}

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
use crate::validate::{Purpose, validate_integration};

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

/// `CreateNotificationResult` / `GetNotificationResult`: the view without `restrictions`.
fn view_json(view: &IntegrationView) -> Value {
    let mut v = serde_json::to_value(view).unwrap_or(Value::Null);
    if let Some(m) = v.as_object_mut() {
        m.remove("restrictions");
    }
    v
}

/// An item of `ListNotificationsResult`, which has fewer fields and only `disabled` and
/// `reason` of the status.
fn list_item(view: &IntegrationView) -> Value {
    let mut status = json!({ "disabled": view.status.disabled });
    if let Some(reason) = view.status.reason {
        status["reason"] = json!(reason);
    }
    json!({
        "name": view.name,
        "id": view.id,
        "type": view.kind,
        "webhook": view.webhook,
        "status": status,
        "createdAt": view.created_at,
        "updatedAt": view.updated_at,
    })
}

/// The stored integration as an update body, to lay a partial update over.
fn editable(view: &IntegrationView) -> Value {
    let mut body = json!({
        "name": view.name,
        "type": view.kind,
        "webhook": view.webhook,
        "restricted": view.restricted,
        "projects": view.projects,
        "events": view.events,
    });
    if let Some(r) = &view.restrictions {
        body["restrictions"] = r.clone();
    }
    body
}

pub(crate) async fn create(State(app): State<App>, body: Bytes) -> ApiResult {
    let body = parse_body(&body, None)?;
    validate_integration(&body, Purpose::Create, !app.config.lenient)?;
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
        disabled_reason: None,
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
            .map(|i| (i.seq, list_item(&i.view)))
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

/// `POST .../{id}`: every field of `UpdateNotificationData` is optional; those sent replace the
/// stored ones, the others stay (the secret too). The ID stays; saving clears a
/// failure-disabled status, as re-saving in the UI would.
pub(crate) async fn update(
    State(app): State<App>,
    Path(p): Path<Params>,
    body: Bytes,
) -> ApiResult {
    let body = parse_body(&body, None)?;
    validate_integration(&body, Purpose::Update, !app.config.lenient)?;
    let mut state = app.state();
    let entry = state
        .integrations
        .get_mut(param(&p, "notificationId"))
        .ok_or_else(|| ApiError::not_found("Notification integration"))?;
    let mut merged = editable(&entry.view);
    for (key, value) in body.as_object().into_iter().flatten() {
        // The secret is kept apart; `type` is no update field (lenient mode ignores it).
        if !value.is_null() && key != "secret" && key != "type" {
            merged[key] = value.clone();
        }
    }
    entry.view = view_from(
        &merged,
        entry.view.id.clone(),
        entry.view.created_at.clone(),
        IntegrationStatus::default(),
    );
    entry.consecutive_failed_events = 0;
    entry.disabled_reason = None;
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

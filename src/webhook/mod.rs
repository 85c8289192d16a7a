//! The webhook step: a Northflank job-run notification in, a Prefect state and a job cleanup out.
//!
//! The notification is only a hint. Its token is checked in constant time before anything else
//! happens; then one GET of the run (and one read of the flow run) decide. Events for jobs that
//! are not `pf-<uuid>` are acknowledged and ignored, so a shared integration does no harm.

pub mod decide;
pub mod event;
pub mod settle;

use std::time::Duration;

use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use crate::ids::JobName;
use crate::worker::Worker;

pub const TOKEN_HEADER: &str = "x-northflank-notification-integration-token";
pub const EVENT_TYPE_HEADER: &str = "x-northflank-notification-integration-event-type";
pub const EVENT_ID_HEADER: &str = "x-northflank-notification-integration-event-id";

/// Northflank's delivery timeout is undocumented: answer well within a few seconds, and let its
/// retries (on a 503) cover an outage of Prefect or Northflank.
pub const BUDGET: Duration = Duration::from_secs(8);

#[derive(Clone, Debug, PartialEq)]
pub struct Response {
    pub status: u16,
    pub body: Value,
}

impl Response {
    pub(crate) fn new(status: u16, body: Value) -> Self {
        Response { status, body }
    }
}

/// Whether the request carries Northflank's shared token.
pub fn authorized(headers: &HeaderMap, token: &str) -> bool {
    header_matches(headers, TOKEN_HEADER, token)
}

/// Whether header `name` holds `token`, compared in constant time; an empty token never
/// matches.
pub fn header_matches(headers: &HeaderMap, name: &str, token: &str) -> bool {
    let given = headers.get(name).map(|v| v.as_bytes()).unwrap_or_default();
    !token.is_empty() && bool::from(given.ct_eq(token.as_bytes()))
}

pub async fn handle(worker: &Worker, headers: &HeaderMap, body: &[u8]) -> Response {
    if body.len() > worker.settings.webhook_max_body {
        return Response::new(
            413,
            json!({"error": format!("body larger than {} bytes", worker.settings.webhook_max_body)}),
        );
    }
    if !authorized(headers, worker.credentials.webhook_token.expose()) {
        tracing::warn!("webhook refused: missing or wrong notification token");
        return Response::new(401, json!({"error": "unauthorized"}));
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let notification = match event::parse(body, header(EVENT_TYPE_HEADER), header(EVENT_ID_HEADER))
    {
        Ok(n) => n,
        Err(e) => return Response::new(400, json!({"error": e.to_string()})),
    };
    if !notification.is_job_run() {
        return Response::new(
            200,
            json!({"ignored": format!("event type {}", notification.event)}),
        );
    }
    let Some(job) = notification.job_id.as_deref().and_then(JobName::parse) else {
        return Response::new(200, json!({"ignored": "not a job of this worker"}));
    };
    let hint = settle::Hint {
        project: notification.project_id.clone(),
        run: notification.run_id.clone(),
        event: Some(notification.event.clone()),
    };
    let worker = worker.until(tokio::time::Instant::now() + BUDGET);
    match settle::settle(&worker, job.flow_run_id(), &hint).await {
        Ok(settled) => Response::new(200, json!(settled)),
        Err(e) => {
            tracing::error!(flow_run_id = %job.flow_run_id(), error = %e, event_id = ?notification.event_id, "could not settle; Northflank will retry");
            Response::new(503, json!({"error": e.to_string()}))
        }
    }
}

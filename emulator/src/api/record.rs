//! The exchange record (`Config::record`): every API request and its answer appended to a file
//! as one JSON line, for `scripts/nf-schema/check.py` to hold against the official types.

use std::io::Write;

use axum::body::Body;
use axum::response::Response;
use serde_json::{Value, json};

use crate::model::RecordedRequest;
use crate::state::{App, lock};

/// Appends the exchange when recording, and hands the answer on unchanged.
pub(crate) async fn append(
    app: &App,
    request: &RecordedRequest,
    user_agent: Option<String>,
    response: Response,
) -> Response {
    let Some(file) = &app.recorder else {
        return response;
    };
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let answer: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let line = json!({
        "method": request.method,
        "path": request.path,
        "query": request.query,
        "endpoint": request.endpoint,
        "userAgent": user_agent,
        "status": request.status,
        "body": request.body,
        "response": answer,
        "at": request.at,
    });
    // One write per line: appends from several emulators in one run do not interleave.
    let mut text = line.to_string();
    text.push('\n');
    if let Err(e) = lock(file).write_all(text.as_bytes()) {
        tracing::warn!(error = %e, "could not record the exchange");
    }
    Response::from_parts(parts, Body::from(bytes))
}

//! The glue between the AWS Lambda runtimes and the two steps. The binaries in `src/bin` only
//! build a [`Worker`] and hand these handlers to the runtime.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lambda_events::eventbridge::EventBridgeEvent;
use lambda_http::{Body, Request, Response};
use lambda_runtime::LambdaEvent;
use serde_json::Value;
use tokio::time::Instant;

use crate::dispatch::{self, Summary};
use crate::worker::Worker;

pub type Error = lambda_runtime::Error;

/// Time kept back from the Lambda deadline for logging and returning the summary.
const DEADLINE_MARGIN: Duration = Duration::from_secs(2);

/// The invocation's deadline on tokio's clock.
fn deadline(context_deadline_ms: u64) -> Instant {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    let left = Duration::from_millis(context_deadline_ms.saturating_sub(now_ms));
    Instant::now() + left.saturating_sub(DEADLINE_MARGIN)
}

/// The worker both functions run, from the environment.
pub fn worker_from_env() -> Result<Worker, Error> {
    let settings = crate::config::Settings::from_env()?;
    let credentials = crate::config::Credentials::from_env()?;
    Ok(Worker::new(settings, credentials)?)
}

/// The scheduled dispatch function.
pub async fn dispatch(
    worker: &Worker,
    event: LambdaEvent<EventBridgeEvent<Value>>,
) -> Result<Summary, Error> {
    let request_id = event.context.request_id.clone();
    let span = tracing::info_span!("dispatch", request_id = %request_id, schedule = ?event.payload.resources);
    let _enter = span.enter();
    let summary = dispatch::invoke(worker, deadline(event.context.deadline)).await?;
    Ok(summary)
}

/// The webhook function, behind a Function URL (payload format 2.0).
pub async fn webhook(worker: &Worker, request: Request) -> Result<Response<Body>, Error> {
    let response = crate::webhook::handle(worker, request.headers(), request.body().as_ref()).await;
    Ok(Response::builder()
        .status(response.status)
        .header("content-type", "application/json")
        .body(Body::from(response.body.to_string()))?)
}

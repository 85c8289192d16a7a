//! The long-running local worker: dispatch invocations back to back, and the webhook served on
//! an HTTP port. The same library code as the Lambdas, without AWS.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio::time::Instant;

use crate::dispatch::{self, SUBMIT_RESERVE};
use crate::worker::Worker;

/// The path Northflank's notification integration posts to.
pub const WEBHOOK_PATH: &str = "/northflank/webhook";

pub fn router(worker: Arc<Worker>) -> Router {
    let limit = worker.settings.webhook_max_body;
    Router::new()
        .route(WEBHOOK_PATH, post(webhook))
        .route(crate::instant::PATH, post(instant))
        .route("/health", get(|| async { "ok" }))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(worker)
}

async fn webhook(
    State(worker): State<Arc<Worker>>,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    reply(crate::webhook::handle(&worker, &headers, &body).await)
}

/// Answers at once and dispatches after. Prefect 3.9's `webhook` block sends every call of
/// the server through one shared connection pool and closes that pool when any call ends, so a
/// call still waiting for its answer then fails with `ReadError('')` and is not retried: the
/// shorter each call, the fewer calls lost.
async fn instant(State(worker): State<Arc<Worker>>, headers: HeaderMap) -> impl IntoResponse {
    if let Err(refused) = crate::instant::authorize(&worker, &headers) {
        return reply(refused);
    }
    let deadline = Instant::now() + crate::instant::BUDGET;
    tokio::spawn(async move { crate::instant::run(&worker, deadline).await });
    reply(crate::webhook::Response::new(
        202,
        serde_json::json!({"accepted": true}),
    ))
}

fn reply(response: crate::webhook::Response) -> impl IntoResponse {
    let status = StatusCode::from_u16(response.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(response.body))
}

/// Serves the webhook on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    worker: Arc<Worker>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(worker))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Runs dispatch invocations one after another until `shutdown` completes. Each invocation
/// heartbeats, so the heartbeat period is about one poll window.
pub async fn dispatch_forever(worker: Arc<Worker>, shutdown: impl Future<Output = ()>) {
    let s = &worker.settings;
    let margin = Duration::from_secs(20);
    let looping = async {
        loop {
            let started = Instant::now();
            let deadline = started + s.poll_window + s.poll_interval + SUBMIT_RESERVE + margin;
            match dispatch::invoke(&worker, deadline).await {
                Ok(summary) => tracing::info!(?summary, "dispatch tick"),
                Err(e) => tracing::error!(error = %e, "dispatch tick failed"),
            }
            // An invocation's last poll is at most one interval before it returns; with a zero
            // window it returns at once, so wait out the interval to keep the poll cadence.
            tokio::time::sleep_until(started + s.poll_interval).await;
        }
    };
    tokio::select! {
        _ = looping => {}
        _ = shutdown => {}
    }
}

/// The whole local worker: webhook server and dispatch loop, both stopped by `shutdown`.
pub async fn run(
    worker: Worker,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let worker = Arc::new(worker);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut server_stop = stop_rx.clone();
    let server = tokio::spawn(serve(listener, worker.clone(), async move {
        let _ = server_stop.wait_for(|stop| *stop).await;
    }));
    let mut loop_stop = stop_rx;
    tokio::select! {
        _ = dispatch_forever(worker, async move { let _ = loop_stop.wait_for(|stop| *stop).await; }) => {}
        _ = shutdown => {}
    }
    let _ = stop_tx.send(true);
    server.await.map_err(std::io::Error::other)?
}

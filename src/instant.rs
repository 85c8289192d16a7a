//! Instant dispatch: a Prefect automation calls the webhook function when a flow run of the
//! pool enters Scheduled, and a quick dispatch (one poll, no reconciliation) submits it at once
//! instead of at the next scheduled tick. Optional: without a dispatch token the endpoint
//! answers 404 and nothing changes.
//!
//! The automation's `call-webhook` action posts through a `webhook` block document that holds
//! the URL and the token header; Prefect stores both as secrets. Every Scheduled event calls
//! the endpoint, including runs scheduled for later by a deployment's schedule: those polls find
//! nothing due and cost no Northflank request. However many calls arrive, one quick dispatch
//! runs at a time (the worker's `Gate`). Setting the automation up is `setup::automation`'s.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::Instrument;

use crate::dispatch::{self, DispatchError, Summary};
use crate::worker::Worker;

/// The most a quick dispatch takes: a poll, and submissions, which dispatch only starts with
/// `SUBMIT_RESERVE` left.
pub const BUDGET: Duration = Duration::from_secs(25);

/// Quick dispatches, one after another, while calls keep asking for one (the local worker,
/// started by the call that found the gate idle).
pub async fn dispatch_loop(worker: Arc<Worker>) {
    loop {
        let w = worker.clone();
        let one = tokio::spawn(
            async move { dispatch_once(&w, Instant::now() + BUDGET).await }
                .instrument(tracing::Span::current()),
        );
        // A panicking dispatch must not leave the gate closed for good.
        if let Err(e) = one.await {
            tracing::error!(error = %e, "an instant dispatch ended abnormally");
        }
        if !worker.gate().finished() {
            return;
        }
    }
}

/// One quick dispatch: heartbeat and one poll, no reconciliation (the scheduled invocations
/// keep doing it).
pub async fn dispatch_once(worker: &Worker, deadline: Instant) -> Result<Summary, DispatchError> {
    let polled = dispatch::invoke_instant(worker, deadline).await;
    if let Err(e) = &polled {
        tracing::error!(error = %e, "instant dispatch failed");
    }
    polled
}

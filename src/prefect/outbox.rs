//! What the worker tells Prefect on the side: flow-run log lines and worker events, kept across
//! every flow run this process handles and sent in batches (one `POST /logs/` and one
//! `POST /events` every couple of seconds, as Prefect's own handlers batch), so a busy dispatch
//! costs a few such requests, not one or two per run. Both are best-effort: a batch that cannot
//! be sent is dropped with a warning (its lines are in the worker's own log as well).
//!
//! Worker labels that Prefect refused when a run was launched go out with the same sends, one
//! at a time: Prefect updates labels by reading then writing the flow run, which a busy server
//! refuses (SQLite answers 503) when other writes land in between, so retrying each at once
//! made a storm of refused writes during a burst of submissions.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use serde_json::{Map, Value};

use super::PrefectClient;
use super::logs::{LogEntry, RunLog};
use crate::ids::FlowRunId;
use crate::retry::RetryPolicy;

/// Sends of one run's labels before they are given up (labels are informational).
pub const LABEL_TRIES: u32 = 3;

#[derive(Debug)]
struct Labels {
    flow_run: FlowRunId,
    labels: Map<String, Value>,
    tries: u32,
}

/// Lines or events per request: a few hundred kilobytes at most.
pub const BATCH: usize = 500;

#[derive(Debug, Default)]
pub struct Outbox {
    logs: Mutex<Vec<LogEntry>>,
    events: Mutex<Vec<Value>>,
    labels: Mutex<Vec<Labels>>,
    /// Set by a long-running process: what a notification keeps is sent at most this much
    /// later, together with whatever else arrived meanwhile. Unset (Lambda, whose container
    /// may be frozen the moment it answers), everything is sent before answering.
    batching: OnceLock<Duration>,
    /// A batched send is scheduled.
    scheduled: AtomicBool,
}

impl Outbox {
    /// Sends what is kept in batches, at most `every` after it was kept.
    pub fn batch_every(&self, every: Duration) {
        let _ = self.batching.set(every);
    }

    pub fn batching(&self) -> Option<Duration> {
        self.batching.get().copied()
    }

    /// Whether the caller should schedule the next batched send: true once until
    /// [`Outbox::unschedule`].
    pub fn schedule(&self) -> bool {
        !self.scheduled.swap(true, Ordering::AcqRel)
    }

    /// The scheduled send is about to take what is kept; anything kept from now on needs the
    /// next one.
    pub fn unschedule(&self) {
        self.scheduled.store(false, Ordering::Release);
    }

    pub fn keep_logs(&self, log: &mut RunLog) {
        let mut taken = log.take();
        lock(&self.logs).append(&mut taken);
    }

    pub fn keep_event(&self, event: Value) {
        lock(&self.events).push(event);
    }

    /// Keeps a flow run's labels, refused once already, for the next send.
    pub fn keep_labels(&self, flow_run: FlowRunId, labels: Map<String, Value>) {
        lock(&self.labels).push(Labels {
            flow_run,
            labels,
            tries: 1,
        });
    }

    /// Sends everything kept so far.
    pub async fn send(&self, prefect: &PrefectClient) {
        let logs = std::mem::take(&mut *lock(&self.logs));
        for batch in logs.chunks(BATCH) {
            if let Err(e) = prefect.send_logs(batch).await {
                tracing::warn!(error = %e, lines = batch.len(), "could not send worker logs to Prefect");
            }
        }
        let events = std::mem::take(&mut *lock(&self.events));
        for batch in events.chunks(BATCH) {
            if let Err(e) = prefect.emit_events(batch).await {
                tracing::warn!(error = %e, events = batch.len(), "could not send worker events to Prefect");
            }
        }
        self.send_labels(prefect).await;
    }

    /// One write per run, one at a time, none retried at once.
    async fn send_labels(&self, prefect: &PrefectClient) {
        let pending = std::mem::take(&mut *lock(&self.labels));
        let once = prefect.with_retries(RetryPolicy::none());
        for mut entry in pending {
            let Err(e) = once.update_labels(entry.flow_run, &entry.labels).await else {
                continue;
            };
            entry.tries += 1;
            if entry.tries < LABEL_TRIES && e.status() != Some(404) {
                tracing::debug!(error = %e, flow_run_id = %entry.flow_run, "labels refused; sent again with the next batch");
                lock(&self.labels).push(entry);
            } else {
                tracing::warn!(error = %e, flow_run_id = %entry.flow_run, "could not set the worker labels on the flow run");
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

//! What the worker tells Prefect on the side: flow-run log lines and worker events, kept across
//! every flow run this process handles and sent in batches (one `POST /logs/` and one
//! `POST /events` every couple of seconds, as Prefect's own handlers batch), so a busy dispatch
//! costs a few such requests, not one or two per run. Both are best-effort: a batch that cannot
//! be sent is dropped with a warning (its lines are in the worker's own log as well).

use std::sync::Mutex;

use serde_json::Value;

use super::PrefectClient;
use super::logs::{LogEntry, RunLog};

/// Lines or events per request: a few hundred kilobytes at most.
pub const BATCH: usize = 500;

#[derive(Debug, Default)]
pub struct Outbox {
    logs: Mutex<Vec<LogEntry>>,
    events: Mutex<Vec<Value>>,
}

impl Outbox {
    pub fn keep_logs(&self, log: &mut RunLog) {
        let mut taken = log.take();
        lock(&self.logs).append(&mut taken);
    }

    pub fn keep_event(&self, event: Value) {
        lock(&self.events).push(event);
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
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

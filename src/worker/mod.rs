//! The context every step runs in: settings, credentials, the two API clients, and the state
//! one process keeps between invocations (caches, reconciliation's memory, the outbox, instant
//! dispatch's gate). It imports only the base layer; the steps above it own no state of their
//! own.

mod activity;
mod current;
mod gate;
mod lookups;
mod memory;

use std::sync::{Arc, Mutex, MutexGuard};

use crate::config::{Credentials, Settings};
use crate::northflank::{NorthflankClient, NorthflankError};
use crate::ownership::{Installation, ServerId};
use crate::prefect::logs::RunLog;
use crate::prefect::outbox::Outbox;
use crate::prefect::{PrefectClient, PrefectError};

pub use activity::{Activity, Running};
pub use current::Current;
pub use gate::Gate;
pub use lookups::Lookups;
pub use memory::{KnownRun, Memory};

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Prefect(#[from] PrefectError),
    #[error(transparent)]
    Northflank(#[from] NorthflankError),
}

/// The longest a batched send of logs and events may take.
const BATCH_SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// What one process keeps between invocations, shared by every clone of its worker.
#[derive(Default)]
pub struct Kept {
    /// What reconciliation remembers.
    pub memory: Mutex<Memory>,
    /// Deployments and flows read recently.
    pub lookups: Lookups,
    /// Flow-run log lines and worker events waiting to be sent.
    pub outbox: Outbox,
    /// Instant dispatch: at most one at a time, and at most one more pending.
    pub gate: Gate,
    /// The dispatch invocations running now, and the most there have been.
    pub activity: Arc<Activity>,
}

#[derive(Clone)]
pub struct Worker {
    pub settings: Settings,
    pub credentials: Credentials,
    pub prefect: PrefectClient,
    pub northflank: NorthflankClient,
    pub kept: Arc<Kept>,
    /// The Prefect server's id in ownership markers, hashed once from its API URL.
    server: ServerId,
}

impl Worker {
    pub fn new(settings: Settings, credentials: Credentials) -> Result<Self, WorkerError> {
        let prefect = PrefectClient::new(
            &settings.prefect.api_url,
            credentials.prefect.clone(),
            &settings.prefect.worker_name,
            settings.northflank.retry_base,
        )?;
        let northflank = NorthflankClient::new(
            &settings.northflank.api_url,
            credentials.northflank_token.clone(),
            settings.northflank.retry_base,
        )?;
        Ok(Worker {
            server: ServerId::of_api_url(&settings.prefect.api_url),
            settings,
            credentials,
            prefect,
            northflank,
            kept: Arc::default(),
        })
    }

    /// The same worker, with what it keeps, using other credentials (they were rotated).
    pub fn with_credentials(&self, credentials: Credentials) -> Result<Self, WorkerError> {
        let fresh = Worker::new(self.settings.clone(), credentials)?;
        Ok(Worker {
            kept: self.kept.clone(),
            ..fresh
        })
    }

    /// The same worker with both clients bounded by `deadline`.
    pub fn until(&self, deadline: tokio::time::Instant) -> Self {
        Worker {
            settings: self.settings.clone(),
            credentials: self.credentials.clone(),
            prefect: self.prefect.with_deadline(deadline),
            northflank: self.northflank.with_deadline(deadline),
            kept: self.kept.clone(),
            server: self.server,
        }
    }

    /// This installation: the worker's pool (its id once read) on its Prefect server.
    pub fn installation(&self, pool_id: Option<uuid::Uuid>) -> Installation {
        Installation {
            pool_name: self.settings.prefect.work_pool.clone(),
            pool_id,
            server: self.server,
        }
    }

    /// Reconciliation's memory. A poisoned lock still holds valid data (every update is one
    /// statement), so it is used anyway.
    pub fn memory(&self) -> MutexGuard<'_, Memory> {
        self.kept.memory.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn lookups(&self) -> &Lookups {
        &self.kept.lookups
    }

    pub fn gate(&self) -> &Gate {
        &self.kept.gate
    }

    pub fn activity(&self) -> &Arc<Activity> {
        &self.kept.activity
    }

    /// Keeps a flow run's messages for the next [`Worker::send_pending`].
    pub fn keep_logs(&self, log: &mut RunLog) {
        self.kept.outbox.keep_logs(log);
    }

    /// Keeps a flow run's worker labels for the next [`Worker::send_pending`].
    pub fn keep_labels(
        &self,
        flow_run: crate::ids::FlowRunId,
        labels: serde_json::Map<String, serde_json::Value>,
    ) {
        self.kept.outbox.keep_labels(flow_run, labels);
    }

    /// Keeps a worker event for the next [`Worker::send_pending`].
    pub fn keep_event(&self, event: serde_json::Value) {
        self.kept.outbox.keep_event(event);
    }

    /// Sends the kept log lines and events.
    pub async fn send_pending(&self) {
        self.kept.outbox.send(&self.prefect).await;
    }

    /// Sends the kept log lines, events and labels for the last time in this process: labels
    /// refused again are retried here rather than left to a batch that will not come.
    pub async fn send_last(&self) {
        self.kept.outbox.send_last(&self.prefect).await;
    }

    /// Sends what is kept at the end of a dispatch invocation: the last send of a process
    /// that ends with it (Lambda's), just another batch in one that stays and batches
    /// ([`Worker::batch_sends`]), whose next tick goes on trying refused labels without
    /// holding this one up.
    pub async fn send_at_invocation_end(&self) {
        if self.batching().is_some() {
            self.send_pending().await;
        } else {
            self.send_last().await;
        }
    }

    /// Sends the kept log lines and events now, or, in a process that batches them
    /// ([`Worker::batch_sends`]), with the next batch: one `POST /logs/` and one
    /// `POST /events` for every notification of the last couple of seconds, instead of one
    /// of each per notification.
    pub async fn send_soon(&self) {
        let outbox = &self.kept.outbox;
        let Some(every) = outbox.batching() else {
            return self.send_pending().await;
        };
        if outbox.schedule() {
            // The batch outlives the notification that scheduled it, so it gets its own
            // deadline rather than the notification's.
            let prefect = (self.prefect)
                .with_deadline(tokio::time::Instant::now() + every + BATCH_SEND_TIMEOUT);
            let kept = self.kept.clone();
            tokio::spawn(async move {
                tokio::time::sleep(every).await;
                kept.outbox.unschedule();
                kept.outbox.send(&prefect).await;
            });
        }
    }

    /// Makes [`Worker::send_soon`] batch: for a long-running process, which is still there to
    /// send the batch.
    pub fn batch_sends(&self, every: std::time::Duration) {
        self.kept.outbox.batch_every(every);
    }

    /// How far apart batched sends are, if this worker (or a clone of it) batches them.
    pub fn batching(&self) -> Option<std::time::Duration> {
        self.kept.outbox.batching()
    }
}

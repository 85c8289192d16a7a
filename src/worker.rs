//! What both steps share: settings, credentials and the two API clients.

use std::sync::{Arc, Mutex};

use crate::config::{Credentials, Settings};
use crate::dispatch::lookups::Lookups;
use crate::northflank::{NorthflankClient, NorthflankError};
use crate::prefect::logs::{LogBuffer, RunLog};
use crate::prefect::{PrefectClient, PrefectError};

/// Lines per `POST /logs/`: a few hundred kilobytes at most.
pub const LOG_BATCH: usize = 500;
use crate::reconcile::Memory;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Prefect(#[from] PrefectError),
    #[error(transparent)]
    Northflank(#[from] NorthflankError),
}

#[derive(Clone)]
pub struct Worker {
    pub settings: Settings,
    pub credentials: Credentials,
    pub prefect: PrefectClient,
    pub northflank: NorthflankClient,
    /// What reconciliation remembers between invocations of this process.
    pub memory: Arc<Mutex<Memory>>,
    /// Deployments and flows read recently by this process.
    pub lookups: Arc<Lookups>,
    /// Flow-run log lines waiting to be sent.
    pub logs: Arc<LogBuffer>,
}

impl Worker {
    pub fn new(settings: Settings, credentials: Credentials) -> Result<Self, WorkerError> {
        let prefect = PrefectClient::new(
            &settings.prefect_api_url,
            credentials.prefect.clone(),
            &settings.worker_name,
            settings.retry_base,
        )?;
        let northflank = NorthflankClient::new(
            &settings.northflank_api_url,
            credentials.northflank_token.clone(),
            settings.retry_base,
        )?;
        Ok(Worker {
            settings,
            credentials,
            prefect,
            northflank,
            memory: Arc::default(),
            lookups: Arc::default(),
            logs: Arc::default(),
        })
    }

    /// The same worker with both clients bounded by `deadline`.
    pub fn until(&self, deadline: tokio::time::Instant) -> Self {
        Worker {
            settings: self.settings.clone(),
            credentials: self.credentials.clone(),
            prefect: self.prefect.with_deadline(deadline),
            northflank: self.northflank.with_deadline(deadline),
            memory: self.memory.clone(),
            lookups: self.lookups.clone(),
            logs: self.logs.clone(),
        }
    }

    /// Keeps a flow run's messages for the next [`Worker::send_logs`].
    pub fn keep_logs(&self, log: &mut RunLog) {
        self.logs.keep(log);
    }

    /// Sends every kept message, in batches of at most [`LOG_BATCH`] lines. Messages a failed
    /// request carried are dropped with a warning: they are in the worker's own log as well.
    pub async fn send_logs(&self) {
        let entries = self.logs.take();
        for batch in entries.chunks(LOG_BATCH) {
            if let Err(e) = self.prefect.send_logs(batch).await {
                tracing::warn!(error = %e, lines = batch.len(), "could not send worker logs to Prefect");
            }
        }
    }
}

//! What both steps share: settings, credentials and the two API clients.

use std::sync::{Arc, Mutex};

use crate::config::{Credentials, Settings};
use crate::dispatch::lookups::Lookups;
use crate::northflank::{NorthflankClient, NorthflankError};
use crate::prefect::logs::RunLog;
use crate::prefect::outbox::Outbox;
use crate::prefect::{PrefectClient, PrefectError};
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
    /// Flow-run log lines and worker events waiting to be sent.
    pub outbox: Arc<Outbox>,
    /// Folds instant-dispatch calls that arrive together into one poll.
    pub instant: Arc<crate::instant::Gate>,
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
            outbox: Arc::default(),
            instant: Arc::default(),
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
            outbox: self.outbox.clone(),
            instant: self.instant.clone(),
        }
    }

    /// Keeps a flow run's messages for the next [`Worker::send_pending`].
    pub fn keep_logs(&self, log: &mut RunLog) {
        self.outbox.keep_logs(log);
    }

    /// Keeps a worker event for the next [`Worker::send_pending`].
    pub fn keep_event(&self, event: serde_json::Value) {
        self.outbox.keep_event(event);
    }

    /// Sends the kept log lines and events.
    pub async fn send_pending(&self) {
        self.outbox.send(&self.prefect).await;
    }
}

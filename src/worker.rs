//! What both steps share: settings, credentials and the two API clients.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::RwLock;

use crate::config::{Credentials, Settings};
use crate::dispatch::lookups::Lookups;
use crate::northflank::{NorthflankClient, NorthflankError};
use crate::ownership::{Installation, ServerId};
use crate::prefect::logs::RunLog;
use crate::prefect::outbox::Outbox;
use crate::prefect::{PrefectClient, PrefectError};
use crate::reconcile::Memory;
use crate::secrets::Source;

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
    /// Instant dispatch: at most one at a time, and at most one more pending.
    pub instant: Arc<crate::instant::Gate>,
    /// The dispatch invocations of this process running now, and the most there have been.
    pub activity: Arc<Activity>,
}

/// Dispatch invocations running in this process: a busy Prefect server must not be asked by
/// many at once.
#[derive(Debug, Default)]
pub struct Activity {
    running: AtomicUsize,
    peak: AtomicUsize,
    started: AtomicU64,
}

impl Activity {
    /// Counts one invocation until the returned guard is dropped.
    pub fn enter(self: &Arc<Self>) -> Running {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        self.started.fetch_add(1, Ordering::SeqCst);
        Running(self.clone())
    }

    /// Invocations started so far.
    pub fn started(&self) -> u64 {
        self.started.load(Ordering::SeqCst)
    }

    /// The most invocations that ran at once.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }
}

/// One running invocation, counted by [`Activity`] until dropped.
#[derive(Debug)]
pub struct Running(Arc<Activity>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The worker the Lambda functions and the local endpoint use: built once per process, and
/// built again with fresh credentials when Prefect or Northflank refused them (a rotated token).
pub struct Current {
    source: Option<Source>,
    worker: RwLock<Arc<Worker>>,
}

impl Current {
    /// `source`: where to read the credentials again; `None` keeps them.
    pub fn new(worker: Worker, source: Option<Source>) -> Self {
        Current {
            source,
            worker: RwLock::new(Arc::new(worker)),
        }
    }

    pub async fn worker(&self) -> Arc<Worker> {
        self.worker.read().await.clone()
    }

    /// Runs `work`; when it met a refused credential, reads the credentials again and, if the
    /// work `failed`, runs it once more with them.
    pub async fn run<T, F, Fut>(&self, failed: fn(&T) -> bool, work: F) -> T
    where
        F: Fn(Arc<Worker>) -> Fut,
        Fut: Future<Output = T>,
    {
        let worker = self.worker().await;
        let refusals = |w: &Worker| w.prefect.auth_failures() + w.northflank.auth_failures();
        let before = refusals(&worker);
        let out = work(worker.clone()).await;
        let Some(source) = self.source.as_ref().filter(|_| refusals(&worker) != before) else {
            return out;
        };
        tracing::warn!("credentials were refused; reading them again");
        let fresh = match source.load().await {
            Ok(credentials) => worker
                .with_credentials(credentials)
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match fresh {
            Ok(fresh) => {
                let fresh = Arc::new(fresh);
                *self.worker.write().await = fresh.clone();
                if failed(&out) { work(fresh).await } else { out }
            }
            Err(e) => {
                tracing::error!(error = %e, "could not read the credentials again");
                out
            }
        }
    }
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
            activity: Arc::default(),
        })
    }

    /// The same worker, with its state, using other credentials (they were rotated).
    pub fn with_credentials(&self, credentials: Credentials) -> Result<Self, WorkerError> {
        let fresh = Worker::new(self.settings.clone(), credentials)?;
        Ok(Worker {
            memory: self.memory.clone(),
            lookups: self.lookups.clone(),
            outbox: self.outbox.clone(),
            instant: self.instant.clone(),
            activity: self.activity.clone(),
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
            memory: self.memory.clone(),
            lookups: self.lookups.clone(),
            outbox: self.outbox.clone(),
            instant: self.instant.clone(),
            activity: self.activity.clone(),
        }
    }

    /// This installation: the worker's pool (its id once read) on its Prefect server.
    pub fn installation(&self, pool_id: Option<uuid::Uuid>) -> Installation {
        Installation {
            pool_name: self.settings.work_pool.clone(),
            pool_id,
            server: ServerId::of_api_url(&self.settings.prefect_api_url),
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

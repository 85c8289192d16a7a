//! The worker a Lambda container or the local endpoint holds: built once per process, and
//! built again with fresh credentials when Prefect or Northflank refused them (a rotated
//! token).

use std::future::Future;
use std::sync::Arc;

use tokio::sync::RwLock;

use super::Worker;
use crate::config::{Settings, Source};

pub struct Current {
    source: Option<Source>,
    /// The settings, which never change (only the credentials are read again).
    settings: Settings,
    worker: RwLock<Arc<Worker>>,
}

impl Current {
    /// `source`: where to read the credentials again; `None` keeps them.
    pub fn new(worker: Worker, source: Option<Source>) -> Self {
        Current {
            source,
            settings: worker.settings.clone(),
            worker: RwLock::new(Arc::new(worker)),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
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

//! Deployments and flows, read once and reused for one poll interval by the submissions of this
//! process. A burst of runs of one deployment costs one read instead of one per run (a
//! deployment read is among Prefect's slower calls); a change to a deployment reaches the next
//! submission within one interval.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;
use uuid::Uuid;

use crate::prefect::models::{Deployment, Flow};
use crate::prefect::{PrefectClient, PrefectError};

#[derive(Default)]
pub struct Lookups {
    /// `None`: the deployment no longer exists.
    deployments: Cache<Option<Deployment>>,
    flows: Cache<Flow>,
}

/// Values by id, each kept for a while. One lock: concurrent submissions wait for one read
/// instead of all reading.
struct Cache<V>(Mutex<HashMap<Uuid, (Instant, V)>>);

impl<V> Default for Cache<V> {
    fn default() -> Self {
        Cache(Mutex::default())
    }
}

impl<V: Clone> Cache<V> {
    async fn get<F>(&self, id: Uuid, ttl: Duration, read: F) -> Result<V, PrefectError>
    where
        F: Future<Output = Result<V, PrefectError>>,
    {
        let mut cache = self.0.lock().await;
        if let Some((at, v)) = cache.get(&id)
            && at.elapsed() < ttl
        {
            return Ok(v.clone());
        }
        let v = read.await?;
        cache.insert(id, (Instant::now(), v.clone()));
        Ok(v)
    }
}

impl Lookups {
    /// The deployment, or `None` when it no longer exists.
    pub async fn deployment(
        &self,
        prefect: &PrefectClient,
        id: Uuid,
        ttl: Duration,
    ) -> Result<Option<Deployment>, PrefectError> {
        self.deployments
            .get(id, ttl, prefect.read_deployment(id))
            .await
    }

    pub async fn flow(
        &self,
        prefect: &PrefectClient,
        id: Uuid,
        ttl: Duration,
    ) -> Result<Flow, PrefectError> {
        self.flows.get(id, ttl, prefect.read_flow(id)).await
    }
}

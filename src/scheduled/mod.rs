//! The scheduled invocation (the EventBridge schedule in Lambda, each turn of the local
//! worker's loop): a dispatch window and, beside it so the polls stay on time, reconciliation.

pub mod metrics;

use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;
use tracing::Instrument;

use crate::dispatch::{self, DispatchError, Mode, Start};
use crate::reconcile::{self, Report};
use crate::worker::Worker;

/// Reconciliation ends this long before the invocation, so that its summary is in.
const RECONCILE_MARGIN: Duration = Duration::from_secs(3);

/// What one scheduled invocation did: the dispatch's figures, and reconciliation's report.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    #[serde(flatten)]
    pub dispatch: dispatch::Summary,
    pub reconcile: Report,
}

/// One scheduled invocation, ending before `deadline`.
pub async fn invoke(worker: &Worker, deadline: Instant) -> Result<Summary, DispatchError> {
    let start = Start::now(worker);
    let pool = dispatch::read_pool(&worker.until(deadline)).await?;
    let reconciling = {
        let (worker, pool) = (worker.clone(), pool.clone());
        let until = deadline.checked_sub(RECONCILE_MARGIN).unwrap_or(deadline);
        tokio::spawn(
            async move { reconcile::reconcile(&worker, &pool, until).await }
                .instrument(tracing::Span::current()),
        )
    };
    let dispatch = dispatch::run(worker, pool, deadline, Mode::Scheduled, start).await;
    let reconcile = match tokio::time::timeout_at(deadline, reconciling).await {
        Ok(Ok(report)) => report,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "reconciliation ended abnormally");
            Report::default()
        }
        Err(_) => {
            tracing::warn!("reconciliation did not finish before the deadline");
            Report::default()
        }
    };
    Ok(Summary {
        dispatch,
        reconcile,
    })
}

//! Dispatch: heartbeat the pool, poll it for scheduled flow runs, and submit each one. A
//! scheduled invocation polls every `poll_interval` for `poll_window` (see `scheduled`); an
//! instant one polls once.
//!
//! Polling several times per invocation is what keeps the pool's queues and deployments READY:
//! Prefect marks them NOT_READY 60 s after the last poll, and a schedule fires at most once a
//! minute.

mod invocation;
mod submit;

use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::prefect::PrefectError;
use crate::prefect::models::{WorkPool, WorkerFlowRun};
use crate::retry::RetryPolicy;
use crate::worker::Worker;
pub use invocation::{Mode, Start, run};
pub use submit::{SubmitOutcome, submit};

/// Time kept back at the end of an invocation so that every submission started can finish.
pub const SUBMIT_RESERVE: Duration = Duration::from_secs(10);

/// How often worker messages are sent to the flow runs' logs (Prefect's own batch interval).
pub const LOG_FLUSH_EVERY: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("work pool '{0}' does not exist; create it with `prefect-nf work-pool create`")]
    PoolMissing(String),
    #[error("could not read work pool: {0}")]
    ReadPool(#[source] PrefectError),
}

/// What one dispatch did, logged and asserted on by tests.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    pub heartbeat_errors: u32,
    pub polls: u32,
    pub poll_errors: u32,
    /// Runs the server offered.
    pub found: u32,
    /// Runs this invocation won the claim for.
    pub claimed: u32,
    pub submitted: u32,
    /// Claimed and crashed, or failed before the claim.
    pub failed: u32,
    /// Of `failed`, those claimed and then crashed.
    pub crashed: u32,
    /// Left alone: claimed by someone else, already in flight, or no time left.
    pub skipped: u32,
    /// Cancelled because their deployment is gone.
    pub cancelled: u32,
    /// Sent back to Scheduled because Northflank rate-limited us.
    pub rescheduled: u32,
    pub prefect_requests: u64,
    pub northflank_requests: u64,
    /// Northflank answers 429 among `northflank_requests`.
    pub northflank_throttled: u64,
    pub duration_ms: u64,
}

impl Summary {
    fn record(&mut self, outcome: &SubmitOutcome) {
        match outcome {
            SubmitOutcome::Submitted { .. } => {
                self.claimed += 1;
                self.submitted += 1;
            }
            SubmitOutcome::Crashed { .. } => {
                self.claimed += 1;
                self.failed += 1;
                self.crashed += 1;
            }
            SubmitOutcome::Rescheduled { .. } => {
                self.claimed += 1;
                self.rescheduled += 1;
            }
            SubmitOutcome::Failed { .. } => self.failed += 1,
            SubmitOutcome::NotClaimed { .. } => self.skipped += 1,
            SubmitOutcome::Cancelled { .. } => self.cancelled += 1,
        }
    }
}

/// Reads the pool. A missing pool is a configuration error, reported as such.
pub async fn read_pool(worker: &Worker) -> Result<WorkPool, DispatchError> {
    let pool = &worker.settings.prefect.work_pool;
    worker
        .prefect
        .read_work_pool(pool)
        .await
        .map_err(DispatchError::ReadPool)?
        .ok_or_else(|| DispatchError::PoolMissing(pool.clone()))
}

/// Sends the heartbeat, trying again until it goes through or the worker's deadline: it is
/// what makes the pool READY, and a busy server may refuse it for a while (Prefect's heartbeat
/// reads then writes, which SQLite refuses while other writes commit).
pub async fn send_heartbeat(worker: &Worker) -> bool {
    let s = &worker.settings;
    let deadline = worker.prefect.deadline();
    let policy =
        RetryPolicy::until_deadline(deadline, Duration::from_secs(1), Duration::from_secs(10));
    let beat = || async {
        let sent = worker
            .prefect
            .heartbeat(&s.prefect.work_pool, s.polling.heartbeat_interval)
            .await;
        if let Err(e) = &sent {
            tracing::warn!(error = %e, "heartbeat failed");
        }
        sent
    };
    policy.run_if(deadline, |_| true, beat).await.is_ok()
}

/// The pool, and whether the heartbeat went through.
pub async fn heartbeat(worker: &Worker) -> Result<(WorkPool, bool), DispatchError> {
    let pool = read_pool(worker).await?;
    Ok((pool, send_heartbeat(worker).await))
}

/// One poll: at most `limit` runs due within the prefetch window. Ask only for what can be
/// claimed at once: a run claimed long after the poll may have moved on meanwhile. A limit of 0
/// still marks the pool's queues and deployments READY.
pub async fn poll(worker: &Worker, limit: u32) -> Result<Vec<WorkerFlowRun>, PrefectError> {
    let s = &worker.settings;
    let prefetch = chrono::Duration::from_std(s.polling.prefetch).unwrap_or_default();
    let before = chrono::Utc::now() + prefetch;
    worker
        .prefect
        .scheduled_flow_runs(&s.prefect.work_pool, &s.prefect.work_queues, before, limit)
        .await
}

/// A quick dispatch for instant dispatch: heartbeat and one poll, no reconciliation (the
/// scheduled invocations keep doing it).
pub async fn invoke_instant(worker: &Worker, deadline: Instant) -> Result<Summary, DispatchError> {
    let start = Start::now(worker);
    let pool = read_pool(&worker.until(deadline)).await?;
    Ok(run(worker, pool, deadline, Mode::Instant, start).await)
}

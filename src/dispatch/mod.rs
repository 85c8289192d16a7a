//! One dispatch invocation: heartbeat, then poll every `poll_interval` for `poll_window`,
//! submitting what each poll returns with bounded concurrency.
//!
//! Polling several times per invocation is what keeps the pool's queues and deployments READY:
//! Prefect marks them NOT_READY 60 s after the last poll, and a schedule fires at most once a
//! minute.

pub mod submit;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::Instrument;

use crate::ids::FlowRunId;
use crate::prefect::PrefectError;
use crate::prefect::models::{WorkPool, WorkerFlowRun};
use crate::worker::Worker;
pub use submit::{SubmitOutcome, submit};

/// Time kept back at the end of an invocation so that every submission started can finish.
pub const SUBMIT_RESERVE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("work pool '{0}' does not exist; create it with `prefect-nf work-pool create`")]
    PoolMissing(String),
    #[error("could not read work pool: {0}")]
    ReadPool(#[source] PrefectError),
}

/// What one invocation did, logged by the Lambda and asserted on by tests.
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
    /// Left alone: claimed by someone else, already in flight, or no time left.
    pub skipped: u32,
    /// Cancelled because their deployment is gone.
    pub cancelled: u32,
    /// Sent back to Scheduled because Northflank rate-limited us.
    pub rescheduled: u32,
    pub prefect_requests: u64,
    pub northflank_requests: u64,
    pub duration_ms: u64,
    /// What reconciliation did in this invocation.
    pub reconcile: crate::reconcile::Report,
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

/// Sends the heartbeat and reads the pool. A missing pool is a configuration error, reported
/// as such instead of as an HTTP 404; any other heartbeat failure only costs the pool's READY
/// status, so polling goes on (the `bool` says whether the heartbeat went through).
pub async fn heartbeat(worker: &Worker) -> Result<(WorkPool, bool), DispatchError> {
    let pool = &worker.settings.work_pool;
    let sent = match worker
        .prefect
        .heartbeat(pool, worker.settings.heartbeat_interval)
        .await
    {
        Err(e) if e.status() == Some(404) => return Err(DispatchError::PoolMissing(pool.clone())),
        Err(e) => {
            tracing::warn!(error = %e, "heartbeat failed; polling anyway");
            false
        }
        Ok(()) => true,
    };
    worker
        .prefect
        .read_work_pool(pool)
        .await
        .map_err(DispatchError::ReadPool)?
        .ok_or_else(|| DispatchError::PoolMissing(pool.clone()))
        .map(|p| (p, sent))
}

/// One poll: at most `limit` runs due within the prefetch window. Ask only for what can be
/// claimed at once: a run claimed long after the poll may have moved on meanwhile. A limit of 0
/// still marks the pool's queues and deployments READY.
pub async fn poll(worker: &Worker, limit: u32) -> Result<Vec<WorkerFlowRun>, PrefectError> {
    let s = &worker.settings;
    let before = chrono::Utc::now() + chrono::Duration::from_std(s.prefetch).unwrap_or_default();
    worker
        .prefect
        .scheduled_flow_runs(&s.work_pool, &s.work_queues, before, limit)
        .await
}

/// A whole invocation, ending before `deadline`.
pub async fn invoke(worker: &Worker, deadline: Instant) -> Result<Summary, DispatchError> {
    let started = Instant::now();
    let worker = Arc::new(worker.until(deadline));
    let (p0, n0) = (
        worker.prefect.requests_sent(),
        worker.northflank.requests_sent(),
    );
    let mut summary = Summary::default();
    let (first_pool, sent) = heartbeat(&worker).await?;
    summary.heartbeat_errors += u32::from(!sent);
    let mut pool = Arc::new(first_pool);
    let mut last_heartbeat = Instant::now();
    let s = &worker.settings;
    let window_end =
        (started + s.poll_window).min(deadline.checked_sub(SUBMIT_RESERVE).unwrap_or(started));
    let permits = Arc::new(Semaphore::new(s.max_concurrency));
    let in_flight: Arc<Mutex<HashSet<FlowRunId>>> = Arc::default();
    let mut tasks: JoinSet<SubmitOutcome> = JoinSet::new();
    // Reconciliation runs beside the polls, so the polls stay on time.
    let reconciling = {
        let (worker, pool) = (worker.clone(), pool.clone());
        let until = deadline
            .checked_sub(Duration::from_secs(3))
            .unwrap_or(deadline);
        tokio::spawn(
            async move { crate::reconcile::reconcile(&worker, &pool, until).await }
                .instrument(tracing::Span::current()),
        )
    };

    loop {
        let tick = Instant::now();
        if tick.duration_since(last_heartbeat) >= s.heartbeat_interval {
            match heartbeat(&worker).await {
                Ok((p, sent)) => {
                    summary.heartbeat_errors += u32::from(!sent);
                    pool = Arc::new(p);
                }
                Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
            }
            last_heartbeat = Instant::now();
        }
        summary.polls += 1;
        let busy = in_flight.lock().unwrap_or_else(|e| e.into_inner()).len();
        let free = s
            .max_concurrency
            .saturating_sub(busy)
            .min(s.poll_limit as usize) as u32;
        match poll(&worker, free).await {
            Ok(runs) => {
                summary.found += runs.len() as u32;
                for entry in runs {
                    let id = entry.flow_run.id;
                    if !in_flight
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(id)
                    {
                        summary.skipped += 1;
                        continue;
                    }
                    let (worker, pool, permits, in_flight) = (
                        worker.clone(),
                        pool.clone(),
                        permits.clone(),
                        in_flight.clone(),
                    );
                    tasks.spawn(
                        async move {
                            let outcome = match permits.acquire().await {
                                Ok(_permit) if Instant::now() + SUBMIT_RESERVE <= deadline => {
                                    submit(&worker, &pool, &entry).await
                                }
                                _ => SubmitOutcome::NotClaimed {
                                    reason: "no time left in this invocation".into(),
                                },
                            };
                            in_flight
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .remove(&id);
                            outcome
                        }
                        .instrument(tracing::Span::current()),
                    );
                }
            }
            Err(e) => {
                summary.poll_errors += 1;
                tracing::warn!(error = %e, "poll failed");
            }
        }
        let next = tick + s.poll_interval;
        if next > window_end {
            break;
        }
        // Collect finished submissions while waiting for the next tick.
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(next) => break,
                Some(done) = tasks.join_next() => record(&mut summary, done),
            }
        }
    }
    while let Ok(Some(done)) = tokio::time::timeout_at(deadline, tasks.join_next()).await {
        record(&mut summary, done);
    }
    match tokio::time::timeout_at(deadline, reconciling).await {
        Ok(Ok(report)) => summary.reconcile = report,
        Ok(Err(e)) => tracing::error!(error = %e, "reconciliation ended abnormally"),
        Err(_) => tracing::warn!("reconciliation did not finish before the deadline"),
    }
    // Anything still running past the deadline is abandoned here; reconciliation finishes it.
    summary.skipped += tasks.len() as u32;
    tasks.abort_all();
    summary.prefect_requests = worker.prefect.requests_sent() - p0;
    summary.northflank_requests = worker.northflank.requests_sent() - n0;
    summary.duration_ms = started.elapsed().as_millis() as u64;
    tracing::info!(
        polls = summary.polls,
        found = summary.found,
        claimed = summary.claimed,
        submitted = summary.submitted,
        failed = summary.failed,
        skipped = summary.skipped,
        cancelled = summary.cancelled,
        rescheduled = summary.rescheduled,
        heartbeat_errors = summary.heartbeat_errors,
        poll_errors = summary.poll_errors,
        prefect_requests = summary.prefect_requests,
        northflank_requests = summary.northflank_requests,
        duration_ms = summary.duration_ms,
        "dispatch invocation finished"
    );
    Ok(summary)
}

fn record(summary: &mut Summary, done: Result<SubmitOutcome, tokio::task::JoinError>) {
    match done {
        Ok(outcome) => summary.record(&outcome),
        Err(e) => {
            summary.failed += 1;
            tracing::error!(error = %e, "a submission task ended abnormally");
        }
    }
}

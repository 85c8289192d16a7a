//! One dispatch invocation: heartbeat, then poll every `poll_interval` for `poll_window`,
//! submitting what each poll returns with bounded concurrency.
//!
//! Polling several times per invocation is what keeps the pool's queues and deployments READY:
//! Prefect marks them NOT_READY 60 s after the last poll, and a schedule fires at most once a
//! minute.

pub mod lookups;
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

/// How often worker messages are sent to the flow runs' logs (Prefect's own batch interval).
pub const LOG_FLUSH_EVERY: Duration = Duration::from_secs(2);

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
    let pool = &worker.settings.work_pool;
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
    let mut pause = Duration::from_secs(1);
    loop {
        match worker
            .prefect
            .heartbeat(&s.work_pool, s.heartbeat_interval)
            .await
        {
            Ok(()) => return true,
            Err(e) => {
                let out_of_time = worker
                    .prefect
                    .deadline()
                    .is_none_or(|d| Instant::now() + pause >= d);
                tracing::warn!(error = %e, retrying = !out_of_time, "heartbeat failed");
                if out_of_time {
                    return false;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(10));
            }
        }
    }
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
    let before = chrono::Utc::now() + chrono::Duration::from_std(s.prefetch).unwrap_or_default();
    worker
        .prefect
        .scheduled_flow_runs(&s.work_pool, &s.work_queues, before, limit)
        .await
}

/// A scheduled invocation, ending before `deadline`: heartbeat, polls for the poll window,
/// reconciliation beside them.
pub async fn invoke(worker: &Worker, deadline: Instant) -> Result<Summary, DispatchError> {
    run(worker, deadline, worker.settings.poll_window, true, &|| ()).await
}

/// A quick invocation for instant dispatch: heartbeat and one poll, no reconciliation (the
/// scheduled invocations keep doing it). `polling` is called just before the poll is sent.
pub async fn invoke_instant(
    worker: &Worker,
    deadline: Instant,
    polling: &(dyn Fn() + Sync),
) -> Result<Summary, DispatchError> {
    run(worker, deadline, Duration::ZERO, false, polling).await
}

async fn run(
    worker: &Worker,
    deadline: Instant,
    poll_window: Duration,
    reconcile: bool,
    polling: &(dyn Fn() + Sync),
) -> Result<Summary, DispatchError> {
    let started = Instant::now();
    let _running = worker.activity.enter();
    let worker = Arc::new(worker.until(deadline));
    let (p0, n0, t0) = (
        worker.prefect.requests_sent(),
        worker.northflank.requests_sent(),
        worker.northflank.throttled(),
    );
    let mut summary = Summary::default();
    let mut pool = Arc::new(read_pool(&worker).await?);
    // Heartbeats go beside the polls: a busy server must not delay them.
    let mut heartbeats: JoinSet<bool> = JoinSet::new();
    let beat = |set: &mut JoinSet<bool>| {
        let worker = worker.clone();
        set.spawn(
            async move { send_heartbeat(&worker).await }.instrument(tracing::Span::current()),
        );
    };
    beat(&mut heartbeats);
    let mut last_heartbeat = Instant::now();
    let s = &worker.settings;
    let window_end =
        (started + poll_window).min(deadline.checked_sub(SUBMIT_RESERVE).unwrap_or(started));
    let permits = Arc::new(Semaphore::new(s.max_concurrency));
    let in_flight: Arc<Mutex<HashSet<FlowRunId>>> = Arc::default();
    let mut tasks: JoinSet<SubmitOutcome> = JoinSet::new();
    // Reconciliation runs beside the polls, so the polls stay on time.
    let reconciling = reconcile.then(|| {
        let (worker, pool) = (worker.clone(), pool.clone());
        let until = deadline
            .checked_sub(Duration::from_secs(3))
            .unwrap_or(deadline);
        tokio::spawn(
            async move { crate::reconcile::reconcile(&worker, &pool, until).await }
                .instrument(tracing::Span::current()),
        )
    });

    // Worker messages go out in batches while the invocation runs, and once more at its end.
    let (stop_logs, mut logs_stopped) = tokio::sync::oneshot::channel::<()>();
    let sending_logs = {
        let worker = worker.clone();
        tokio::spawn(async move {
            loop {
                let last = tokio::select! {
                    _ = tokio::time::sleep(LOG_FLUSH_EVERY) => false,
                    _ = &mut logs_stopped => true,
                };
                worker.send_pending().await;
                if last {
                    break;
                }
            }
        })
    };

    let mut full;
    loop {
        let tick = Instant::now();
        if tick.duration_since(last_heartbeat) >= s.heartbeat_interval {
            beat(&mut heartbeats);
            if let Ok(p) = read_pool(&worker).await {
                pool = Arc::new(p);
            }
            last_heartbeat = Instant::now();
        }
        summary.polls += 1;
        let busy = in_flight.lock().unwrap_or_else(|e| e.into_inner()).len();
        let free = s
            .max_concurrency
            .saturating_sub(busy)
            .min(s.poll_limit as usize) as u32;
        polling();
        match poll(&worker, (free * 2).min(s.poll_limit)).await {
            Ok(runs) => {
                // Saturated (no free slot) counts as full: a slot freeing means there may be room.
                full = runs.len() as u32 >= free;
                let runs = pick(runs, free as usize, &mut fastrand::Rng::new());
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
                full = false;
                summary.poll_errors += 1;
                tracing::warn!(error = %e, "poll failed");
            }
        }
        let next = tick + s.poll_interval;
        if next > window_end {
            break;
        }
        // Collect finished submissions while waiting for the next tick. After a full poll there
        // may be more waiting: poll again as soon as a slot frees, so a backlog drains at the
        // speed of submission rather than one batch per tick.
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(next) => break,
                Some(done) = tasks.join_next() => {
                    record(&mut summary, done);
                    if full {
                        break;
                    }
                }
            }
        }
    }
    while let Ok(Some(done)) = tokio::time::timeout_at(deadline, tasks.join_next()).await {
        record(&mut summary, done);
    }
    while let Ok(Some(sent)) = tokio::time::timeout_at(deadline, heartbeats.join_next()).await {
        summary.heartbeat_errors += u32::from(!sent.unwrap_or(false));
    }
    if let Some(reconciling) = reconciling {
        match tokio::time::timeout_at(deadline, reconciling).await {
            Ok(Ok(report)) => summary.reconcile = report,
            Ok(Err(e)) => tracing::error!(error = %e, "reconciliation ended abnormally"),
            Err(_) => tracing::warn!("reconciliation did not finish before the deadline"),
        }
    }
    // Anything still running past the deadline is abandoned here; reconciliation finishes it.
    summary.skipped += tasks.len() as u32;
    tasks.abort_all();
    let _ = stop_logs.send(());
    let _ = tokio::time::timeout_at(deadline, sending_logs).await;
    summary.prefect_requests = worker.prefect.requests_sent() - p0;
    summary.northflank_requests = worker.northflank.requests_sent() - n0;
    summary.northflank_throttled = worker.northflank.throttled() - t0;
    summary.duration_ms = started.elapsed().as_millis() as u64;
    tracing::info!(
        polls = summary.polls,
        found = summary.found,
        claimed = summary.claimed,
        submitted = summary.submitted,
        failed = summary.failed,
        crashed = summary.crashed,
        skipped = summary.skipped,
        cancelled = summary.cancelled,
        rescheduled = summary.rescheduled,
        heartbeat_errors = summary.heartbeat_errors,
        poll_errors = summary.poll_errors,
        prefect_requests = summary.prefect_requests,
        northflank_requests = summary.northflank_requests,
        northflank_throttled = summary.northflank_throttled,
        duration_ms = summary.duration_ms,
        reconcile = ?summary.reconcile,
        "dispatch invocation finished"
    );
    Ok(summary)
}

/// `n` of the polled runs, chosen at random. Dispatchers polling at the same moment get the
/// same runs, oldest first; asking for twice what fits and choosing at random keeps them from
/// all proposing PENDING for the same few (the losers' proposals are wasted writes on the
/// server). Runs not chosen are offered again by the next poll, moments later.
fn pick<T>(mut runs: Vec<T>, n: usize, rng: &mut fastrand::Rng) -> Vec<T> {
    if runs.len() > n {
        rng.shuffle(&mut runs);
        runs.truncate(n);
    }
    runs
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

#[cfg(test)]
mod tests {
    use super::pick;

    #[test]
    fn pick_chooses_distinct_runs_and_varies() {
        let mut rng = fastrand::Rng::with_seed(7);
        assert_eq!(pick(vec![1, 2, 3], 8, &mut rng), vec![1, 2, 3]);
        let mut firsts = std::collections::HashSet::new();
        for _ in 0..20 {
            let mut chosen = pick((0..16).collect(), 8, &mut rng);
            firsts.insert(chosen.clone());
            chosen.sort();
            chosen.dedup();
            assert_eq!(chosen.len(), 8);
        }
        assert!(
            firsts.len() > 1,
            "two dispatchers must not always choose the same runs"
        );
    }
}

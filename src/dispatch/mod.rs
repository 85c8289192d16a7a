//! Dispatch: heartbeat the pool, poll it for scheduled flow runs, and submit each one. A
//! scheduled invocation polls every `poll_interval` for `poll_window` (see `scheduled`); an
//! instant one polls once.
//!
//! Polling several times per invocation is what keeps the pool's queues and deployments READY:
//! Prefect marks them NOT_READY 60 s after the last poll, and a schedule fires at most once a
//! minute.
//!
//! While Prefect's rate limit pauses the worker's calls, nothing is claimed ([`claim_gate`]): a
//! run claimed then would wait in PENDING, and might not be submitted before the deadline. The
//! runs stay SCHEDULED for the next poll or invocation.

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
    /// Sent back to Scheduled because Northflank or Prefect rate-limited us.
    pub rescheduled: u32,
    /// Left Scheduled, unclaimed, because Prefect's rate limit paused the worker's calls.
    pub deferred: u32,
    /// Claimed, then left PENDING without infrastructure because Prefect's rate limit outlasted
    /// the invocation; reconciliation resumes them.
    pub interrupted: u32,
    pub prefect_requests: u64,
    pub northflank_requests: u64,
    /// Northflank answers 429 among `northflank_requests`.
    pub northflank_throttled: u64,
    /// Prefect answers 429 among `prefect_requests`.
    pub prefect_throttled: u64,
    /// How long Prefect's rate limit paused the worker's API calls.
    pub prefect_paused_ms: u64,
    /// How long it paused the worker's log lines and events (a bucket of their own).
    pub prefect_logs_paused_ms: u64,
    /// Log lines and events Prefect's rate limit refused, kept for a later send.
    pub logs_held: u64,
    /// Log lines and events dropped because too many were waiting.
    pub logs_dropped: u64,
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
            SubmitOutcome::Interrupted { .. } => {
                self.claimed += 1;
                self.interrupted += 1;
            }
            SubmitOutcome::Deferred { .. } => self.deferred += 1,
            SubmitOutcome::Failed { .. } => self.failed += 1,
            SubmitOutcome::NotClaimed { .. } => self.skipped += 1,
            SubmitOutcome::Cancelled { .. } => self.cancelled += 1,
        }
    }
}

/// Whether a claim may start now.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ClaimGate {
    Open,
    /// Prefect's rate limit pauses the worker's calls until then.
    Paused(chrono::DateTime<chrono::Utc>),
    /// Less than [`SUBMIT_RESERVE`] is left.
    NoTime,
}

/// Claims stop while Prefect's rate limit pauses the worker (`paused_until`), and when what is
/// left before `deadline` cannot hold a submission.
pub fn claim_gate(
    now: Instant,
    deadline: Instant,
    paused_until: Option<(Instant, chrono::DateTime<chrono::Utc>)>,
) -> ClaimGate {
    match paused_until {
        Some((until, wall)) if until > now => ClaimGate::Paused(wall),
        _ if now + SUBMIT_RESERVE > deadline => ClaimGate::NoTime,
        _ => ClaimGate::Open,
    }
}

/// Whether polling is worth it: not when a pause leaves no time to submit what it finds after
/// it lifts.
pub fn worth_polling(
    now: Instant,
    deadline: Instant,
    paused_until: Option<(Instant, chrono::DateTime<chrono::Utc>)>,
) -> bool {
    let resume = paused_until.map_or(now, |(until, _)| until.max(now));
    resume + SUBMIT_RESERVE <= deadline
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
    // A pause past the deadline refuses every attempt at once: nothing to wait for.
    let retry_when = |e: &PrefectError| !matches!(e, PrefectError::Throttled { .. });
    policy.run_if(deadline, retry_when, beat).await.is_ok()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_stop_while_paused_and_when_no_submission_fits() {
        let now = Instant::now();
        let wall = chrono::Utc::now();
        let deadline = now + Duration::from_secs(60);
        assert_eq!(claim_gate(now, deadline, None), ClaimGate::Open);
        let lifted = Some((now - Duration::from_secs(1), wall));
        assert_eq!(claim_gate(now, deadline, lifted), ClaimGate::Open);
        let paused = Some((now + Duration::from_secs(5), wall));
        assert_eq!(claim_gate(now, deadline, paused), ClaimGate::Paused(wall));
        let late = deadline - SUBMIT_RESERVE + Duration::from_millis(1);
        assert_eq!(claim_gate(late, deadline, None), ClaimGate::NoTime);

        assert!(worth_polling(now, deadline, None));
        assert!(worth_polling(now, deadline, paused));
        let long = Some((deadline - SUBMIT_RESERVE + Duration::from_secs(1), wall));
        assert!(
            !worth_polling(now, deadline, long),
            "no time left after the pause"
        );
        assert!(!worth_polling(late, deadline, None));
    }
}

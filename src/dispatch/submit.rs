//! Submitting one polled flow run: its deployment, the claim, the launch. No claim is made while
//! Prefect's rate limit pauses the worker. After a won claim, every failure ends in a state
//! (Crashed, or back to Scheduled when an API is only rate limiting, or still PENDING for
//! reconciliation when Prefect's rate limit refuses even that), and a job that was written for
//! an abandoned run is deleted (`run::abandon`).

use serde::Serialize;
use tracing::Instrument;

use super::{ClaimGate, claim_gate};
use crate::prefect::logs::RunLog;
use crate::prefect::models::{FlowRun, WorkPool, WorkerFlowRun};
use crate::run::{self, Abandoned, Claimed, Launch, LaunchError, NotClaimed};
use crate::worker::Worker;

/// How a flow run's submission ended.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum SubmitOutcome {
    /// A Northflank job run exists for it (`adopted`: it already existed and was reused).
    Submitted { pid: String, adopted: bool },
    /// Another worker owns it, or the server substituted another state.
    NotClaimed { reason: String },
    /// Its deployment is gone; the run was cancelled as the Python worker does.
    Cancelled { reason: String },
    /// Claimed, then failed: proposed Crashed.
    Crashed { reason: String },
    /// Claimed, then a rate limit ran past the deadline: back to Scheduled.
    Rescheduled { reason: String },
    /// Not claimed because Prefect's rate limit paused the worker: still Scheduled.
    Deferred { reason: String },
    /// Claimed, then Prefect's rate limit outlasted the invocation: still PENDING, for
    /// reconciliation to resume.
    Interrupted { reason: String },
    /// Failed before the claim; nothing changed and the next poll tries again.
    Failed { error: String },
}

/// Submits one polled flow run. Every log line it causes carries the flow run's id, and, once
/// known, the Northflank job and run (a `flow_run` span).
pub async fn submit(worker: &Worker, pool: &WorkPool, entry: &WorkerFlowRun) -> SubmitOutcome {
    let flow_run = &entry.flow_run;
    let span = tracing::info_span!("flow_run", flow_run_id = %flow_run.id, job = tracing::field::Empty, run = tracing::field::Empty);
    async {
        let mut log = RunLog::new(flow_run.id);
        log.info(format!(
            "Worker '{}' submitting flow run '{}'",
            worker.settings.prefect.worker_name, flow_run.id
        ));
        let outcome = claim_and_launch(worker, pool, flow_run, &mut log).await;
        trace(&outcome);
        // A run left alone for the rate limit is not the worker's yet: nothing in its logs, and
        // nothing more for the limit to count.
        if !matches!(outcome, SubmitOutcome::Deferred { .. }) {
            worker.keep_logs(&mut log);
        }
        outcome
    }
    .instrument(span)
    .await
}

fn trace(outcome: &SubmitOutcome) {
    match outcome {
        SubmitOutcome::Submitted { pid, adopted } => {
            tracing::info!(decision = "submitted", pid = %pid, adopted, "flow run submitted")
        }
        SubmitOutcome::NotClaimed { reason } => {
            tracing::info!(decision = "not_claimed", reason = %reason, "flow run left alone")
        }
        SubmitOutcome::Cancelled { reason } => {
            tracing::info!(decision = "cancelled", reason = %reason, "flow run cancelled")
        }
        SubmitOutcome::Crashed { reason } => {
            tracing::warn!(decision = "crashed", reason = %reason, "flow run crashed")
        }
        SubmitOutcome::Rescheduled { reason } => {
            tracing::warn!(decision = "rescheduled", reason = %reason, "flow run rescheduled")
        }
        SubmitOutcome::Deferred { reason } => {
            tracing::info!(decision = "deferred", reason = %reason, "flow run left for the next poll")
        }
        SubmitOutcome::Interrupted { reason } => {
            tracing::warn!(decision = "interrupted", reason = %reason, "flow run left PENDING")
        }
        SubmitOutcome::Failed { error } => {
            tracing::warn!(decision = "failed", error = %error, "flow run not claimed: error")
        }
    }
}

async fn claim_and_launch(
    worker: &Worker,
    pool: &WorkPool,
    flow_run: &FlowRun,
    log: &mut RunLog,
) -> SubmitOutcome {
    let Some(deployment_id) = flow_run.deployment_id else {
        return SubmitOutcome::NotClaimed {
            reason: "the flow run has no deployment".into(),
        };
    };
    let ttl = worker.settings.polling.interval;
    let deployment = match worker
        .lookups()
        .deployment(&worker.prefect, deployment_id, ttl)
        .await
    {
        Ok(Some(d)) => d,
        Ok(None) => {
            let reason = format!("Deployment {deployment_id} no longer exists, cancelled run.");
            return match run::cancel_orphan(worker, flow_run, &reason, log).await {
                Ok(()) => SubmitOutcome::Cancelled { reason },
                Err(e) => SubmitOutcome::Failed {
                    error: e.to_string(),
                },
            };
        }
        Err(e) if e.is_throttled() => return deferred(e.to_string()),
        Err(e) => {
            return SubmitOutcome::Failed {
                error: e.to_string(),
            };
        }
    };
    if let Some(outcome) = gate(worker) {
        return outcome;
    }
    let claimed_at = match run::claim(worker, flow_run, log).await {
        Ok(at) => at,
        Err(NotClaimed::Refused(reason)) => return SubmitOutcome::NotClaimed { reason },
        Err(NotClaimed::Failed(error)) => return SubmitOutcome::Failed { error },
        Err(NotClaimed::Throttled(error)) => return deferred(error),
    };
    let claimed = Claimed {
        pool,
        flow_run,
        deployment: &deployment,
        at: claimed_at,
    };
    let launched = run::launch(worker, &claimed, Launch::Fresh, log).await;
    match launched {
        Ok(l) => SubmitOutcome::Submitted {
            pid: l.pid.to_string(),
            adopted: l.adopted,
        },
        Err(e @ LaunchError::LeftPending { .. }) => {
            log.info(e.to_string());
            SubmitOutcome::NotClaimed {
                reason: e.to_string(),
            }
        }
        Err(e) => match run::abandon(worker, flow_run, e, log).await {
            Abandoned::Rescheduled(reason) => SubmitOutcome::Rescheduled { reason },
            Abandoned::Crashed(reason) => SubmitOutcome::Crashed { reason },
            Abandoned::LeftPending(reason) => SubmitOutcome::Interrupted { reason },
        },
    }
}

/// The last look before a claim: none while Prefect's rate limit pauses the worker, none
/// without the time to submit.
pub(super) fn gate(worker: &Worker) -> Option<SubmitOutcome> {
    let deadline = worker.prefect.deadline()?;
    let now = tokio::time::Instant::now();
    match claim_gate(now, deadline, worker.prefect.paused_until()) {
        ClaimGate::Open => None,
        ClaimGate::Paused(until) => Some(deferred(format!(
            "Prefect rate-limited this worker until {}",
            until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ))),
        ClaimGate::NoTime => Some(SubmitOutcome::NotClaimed {
            reason: "no time left in this invocation".into(),
        }),
    }
}

fn deferred(why: String) -> SubmitOutcome {
    SubmitOutcome::Deferred {
        reason: format!("{why}; the flow run stays Scheduled for the next poll"),
    }
}

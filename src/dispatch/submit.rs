//! Submitting one polled flow run: its deployment, the claim, the launch. After a won claim,
//! every failure ends in a state (Crashed, or back to Scheduled when Northflank is only rate
//! limiting), and a job that was written for an abandoned run is deleted (`run::abandon`).

use serde::Serialize;
use tracing::Instrument;

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
    /// Claimed, then Northflank's rate limit ran past the deadline: back to Scheduled.
    Rescheduled { reason: String },
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
        worker.keep_logs(&mut log);
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
        Err(e) => {
            return SubmitOutcome::Failed {
                error: e.to_string(),
            };
        }
    };
    let claimed_at = match run::claim(worker, flow_run, log).await {
        Ok(at) => at,
        Err(NotClaimed::Refused(reason)) => return SubmitOutcome::NotClaimed { reason },
        Err(NotClaimed::Failed(error)) => return SubmitOutcome::Failed { error },
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
        },
    }
}

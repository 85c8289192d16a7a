//! Claiming a flow run: Prefect's PENDING proposal is the lock. A claim that landed on a run
//! which had already finished is undone at once (`prefect::stale`), and a run whose
//! deployment is gone is cancelled as the Python worker cancels it.

use chrono::{DateTime, Utc};

use crate::prefect::logs::RunLog;
use crate::prefect::models::{FlowRun, State};
use crate::prefect::stale;
use crate::prefect::states::{Claim, Proposal, interpret_claim};
use crate::worker::Worker;

/// How many times a WAIT answer is waited out before the run is left to the next poll.
const WAITS: usize = 3;

/// Why a flow run was not claimed.
#[derive(Clone, Debug, PartialEq)]
pub enum NotClaimed {
    /// Someone else holds it, or the server kept another state: leave it alone.
    Refused(String),
    /// The proposal could not be sent: nothing changed, the next poll tries again.
    Failed(String),
    /// Prefect's rate limit held the proposal back: nothing changed, the next poll tries again.
    Throttled(String),
}

/// Proposes PENDING until the server answers something other than WAIT (bounded), returning
/// the claim's time on the server's clock.
pub async fn claim(
    worker: &Worker,
    flow_run: &FlowRun,
    log: &mut RunLog,
) -> Result<DateTime<Utc>, NotClaimed> {
    let id = flow_run.id;
    for _ in 0..WAITS {
        let proposal = Proposal::pending();
        let result = worker.prefect.set_state(id, &proposal).await.map_err(|e| {
            let message = format!("Failed to update state of flow run '{id}': {e}");
            match e.is_throttled() {
                true => NotClaimed::Throttled(message),
                false => NotClaimed::Failed(message),
            }
        })?;
        match interpret_claim(&result, proposal.transition_id, &id.to_string()) {
            Claim::Stale(ours) => {
                return Err(undo_stale_claim(worker, flow_run, &ours, log).await);
            }
            Claim::Won => {
                return Ok(result
                    .state
                    .and_then(|s| s.timestamp)
                    .unwrap_or_else(Utc::now));
            }
            Claim::Lost(reason) => {
                log.info(reason.clone());
                return Err(NotClaimed::Refused(reason));
            }
            Claim::Wait(delay) => tokio::time::sleep(delay).await,
        }
    }
    Err(NotClaimed::Refused("the server kept asking to wait".into()))
}

/// Puts back the state our PENDING replaced, so that a run that had already finished is
/// neither regressed nor executed twice.
async fn undo_stale_claim(
    worker: &Worker,
    flow_run: &FlowRun,
    ours: &State,
    log: &mut RunLog,
) -> NotClaimed {
    let id = flow_run.id;
    let reason = match stale::undo(&worker.prefect, id, ours).await {
        Ok(Some(previous)) => format!(
            "Flow run '{id}' had already left Scheduled (it was {:?}) when this worker claimed it; that state was restored and the run was not submitted again",
            previous.kind
        ),
        Ok(None) => format!(
            "Flow run '{id}' had already left Scheduled when this worker claimed it; it has moved on since (or another step restored it), so there was nothing to undo"
        ),
        Err(e) => format!(
            "Flow run '{id}' had already left Scheduled when this worker claimed it, and restoring its state failed: {e}"
        ),
    };
    log.warn(reason.clone());
    NotClaimed::Refused(reason)
}

/// Cancels a flow run whose deployment is gone (forced, copying its state), with `reason` in
/// its logs. An error means the proposal could not be sent.
pub async fn cancel_orphan(
    worker: &Worker,
    flow_run: &FlowRun,
    reason: &str,
    log: &mut RunLog,
) -> Result<(), crate::prefect::PrefectError> {
    log.warn(reason.to_string());
    worker
        .prefect
        .set_state(
            flow_run.id,
            &Proposal::cancelled_from(flow_run.state.as_ref(), reason, true),
        )
        .await
        .map(|_| ())
}

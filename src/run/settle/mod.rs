//! Settling one flow run of ours against its Northflank job run: gather what is needed (one
//! Northflank GET, and the stale-claim check), [`decide`] (pure), then act: the Prefect state
//! first, the job cleanup second, so a failed cleanup never leaves a wrong state behind.

mod act;
mod decide;
mod gather;

use serde::Serialize;

pub use decide::{Decision, JobRunView, Observation, Transition, decide};
pub use gather::client_for;

use crate::ids::FlowRunId;
use crate::northflank::NorthflankError;
use crate::prefect::PrefectError;
use crate::prefect::models::FlowRun;
use crate::worker::{KnownRun, Worker};

/// What a notification (or reconciliation) knows besides the flow run.
#[derive(Clone, Debug, Default)]
pub struct Hint {
    pub project: Option<String>,
    /// The Northflank job run.
    pub job_run: Option<String>,
    pub event: Option<String>,
}

/// The state a settlement wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    None,
    Crashed,
    Cancelled,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::None => "none",
            Action::Crashed => "crashed",
            Action::Cancelled => "cancelled",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Settled {
    pub flow_run_id: FlowRunId,
    pub action: Action,
    pub job_deleted: bool,
    pub detail: String,
}

impl Settled {
    /// Nothing was done, for `detail`'s reason.
    pub fn nothing(flow_run_id: FlowRunId, detail: impl Into<String>) -> Self {
        Settled {
            flow_run_id,
            action: Action::None,
            job_deleted: false,
            detail: detail.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SettleError {
    #[error(transparent)]
    Prefect(#[from] PrefectError),
    #[error(transparent)]
    Northflank(#[from] NorthflankError),
    #[error("could not find the run's own Northflank credentials again: {0}")]
    Credentials(String),
}

/// Settles a flow run of ours (the caller has judged it so).
pub async fn settle(
    worker: &Worker,
    flow_run: FlowRun,
    hint: &Hint,
) -> Result<Settled, SettleError> {
    let Some(gathered) = gather::gather(worker, &flow_run, hint).await? else {
        return Ok(Settled::nothing(
            flow_run.id,
            "no Northflank project is known for this flow run yet",
        ));
    };
    let decision = decide(&gathered.observation(hint.event.as_deref()));
    act::act(worker, &act::Subject::of(&flow_run), &gathered, decision).await
}

/// Settles a run this process launched whose job run reports success, from what the process
/// remembers: no Prefect read. The flow reported its own final state; if it did not (it exited
/// without one), reconciliation's batched check of active runs finds it and crashes it.
/// `None`: the job run did not conclude successfully (or the run has its own Northflank
/// credentials), so the flow run must be read and [`settle`]d.
pub async fn settle_known_success(
    worker: &Worker,
    id: FlowRunId,
    known: &KnownRun,
    hint: &Hint,
) -> Result<Option<Settled>, SettleError> {
    let Some(gathered) = gather::known(worker, known, hint).await? else {
        return Ok(None);
    };
    let decision = decide(&gathered.observation(hint.event.as_deref()));
    let subject = act::Subject {
        id,
        infrastructure_pid: Some(known.pid.to_string()),
        related: known.related.clone(),
    };
    Ok(Some(act::act(worker, &subject, &gathered, decision).await?))
}

//! Stale claims. Prefect accepts PENDING from COMPLETED, FAILED and CRASHED, so a claim that
//! reaches the server late (a stale poll, or a request that waited on a busy server) can land
//! on a run that has already finished. Such a state is recognisable: a plain `Pending` without
//! the `scheduled_time` the server copies into a PENDING that comes from SCHEDULED (rule
//! `CopyScheduledTime`). Whoever sees one first undoes it (the claimant, the webhook, or
//! reconciliation), so a finished run is neither regressed nor run twice.

use super::models::{State, StateType};
use super::states::Proposal;
use super::{PrefectClient, PrefectError};
use crate::ids::FlowRunId;

/// Whether a state is a claim that landed on a run which had already left SCHEDULED.
pub fn is_stale_claim(state: &State) -> bool {
    state.kind == StateType::Pending
        && state.name.as_deref().unwrap_or("Pending") == "Pending"
        && state.state_details["scheduled_time"].is_null()
}

/// The state a stale claim replaced: the newest state that is not a stale claim. The server
/// stamps a state when its request arrives, not when it commits, so a claim that waited on a
/// busy server sorts before states committed ahead of it.
pub fn replaced_by(history: &[State]) -> Option<&State> {
    history
        .iter()
        .filter(|s| !is_stale_claim(s))
        .max_by_key(|s| s.timestamp)
}

/// Undoes `stale` if it is still the run's current state: restores (forced) the state it
/// replaced, and returns that. `None`: the run has moved on, or has no other state.
pub async fn undo(
    prefect: &PrefectClient,
    id: FlowRunId,
    stale: &State,
) -> Result<Option<State>, PrefectError> {
    let current = prefect.read_flow_run(id).await?.and_then(|r| r.state);
    let same = |c: &State| match (c.id, stale.id) {
        (Some(a), Some(b)) => a == b,
        _ => c.transition_id().is_some() && c.transition_id() == stale.transition_id(),
    };
    let still = current.as_ref().is_some_and(same);
    if !still {
        return Ok(None);
    }
    let history = prefect.flow_run_states(id).await?;
    let Some(previous) = replaced_by(&history).cloned() else {
        return Ok(None);
    };
    prefect.set_state(id, &Proposal::restore(&previous)).await?;
    Ok(Some(previous))
}

/// The flow-run log line for an undone claim (by the webhook or reconciliation).
pub fn undone_message(id: FlowRunId, previous: &State) -> String {
    format!(
        "Undid a late claim on flow run '{id}': it had already finished, and its {:?} state was restored",
        previous.kind
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn state(kind: &str, name: &str, at: &str, scheduled: Option<&str>) -> State {
        serde_json::from_value(json!({"type": kind, "name": name, "timestamp": at,
            "state_details": {"transition_id": uuid::Uuid::new_v4(), "scheduled_time": scheduled}}))
        .unwrap()
    }

    #[test]
    fn recognises_stale_claims_only() {
        let t = "2026-11-27T11:23:40Z";
        assert!(is_stale_claim(&state("PENDING", "Pending", t, None)));
        assert!(!is_stale_claim(&state("PENDING", "Pending", t, Some(t))));
        assert!(!is_stale_claim(&state("PENDING", "Submitting", t, None)));
        assert!(!is_stale_claim(&state("COMPLETED", "Completed", t, None)));
    }

    #[test]
    fn a_late_claim_replaced_the_newest_other_state() {
        let s = "2026-11-27T11:23:40Z";
        // Two stale claims arrived at :53 and committed after the engine's COMPLETED at :59.
        let history = vec![
            state("SCHEDULED", "Scheduled", s, Some(s)),
            state("PENDING", "Pending", "2026-11-27T11:23:53.6Z", Some(s)),
            state("PENDING", "Pending", "2026-11-27T11:23:53.7Z", None),
            state("PENDING", "Submitting", "2026-11-27T11:23:54Z", None),
            state("RUNNING", "Running", "2026-11-27T11:23:57Z", None),
            state("COMPLETED", "Completed", "2026-11-27T11:23:59Z", None),
            state("PENDING", "Pending", "2026-11-27T11:23:55Z", None),
        ];
        assert_eq!(replaced_by(&history).unwrap().kind, StateType::Completed);
        assert!(replaced_by(&history[2..3]).is_none());
    }
}

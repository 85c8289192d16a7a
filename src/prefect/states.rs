//! State proposals the worker sends, and what their answers mean.

use std::time::Duration;

use serde_json::{Value, json};
use uuid::Uuid;

use super::models::{OrchestrationResult, SetStateStatus, State, StateType};

/// A `set_state` body with its own fresh `transition_id`, which makes a retried request
/// idempotent: the server answers a replay with REJECT and the current state.
#[derive(Clone, Debug)]
pub struct Proposal {
    pub body: Value,
    pub transition_id: Uuid,
}

impl Proposal {
    /// A proposal in the exact shape the 3.9 Python worker sends (every detail explicit).
    pub fn new(kind: StateType, name: &str, message: Option<&str>, force: bool) -> Self {
        let transition_id = Uuid::new_v4();
        let details = json!({
            "flow_run_id": null, "task_run_id": null, "child_flow_run_id": null,
            "scheduled_time": null, "cache_key": null, "cache_expiration": null, "deferred": null,
            "untrackable_result": false, "pause_timeout": null, "pause_reschedule": false,
            "pause_key": null, "run_input_keyset": null, "refresh_cache": null, "retriable": null,
            "transition_id": transition_id, "task_parameters_id": null, "traceparent": null,
            "deployment_concurrency_lease_id": null,
        });
        Self::with_details(kind, name, message, details, transition_id, force)
    }

    fn with_details(
        kind: StateType,
        name: &str,
        message: Option<&str>,
        state_details: Value,
        transition_id: Uuid,
        force: bool,
    ) -> Self {
        Proposal {
            body: json!({
                "state": {"type": kind, "name": name, "message": message,
                          "state_details": state_details, "data": null},
                "force": force,
            }),
            transition_id,
        }
    }

    pub fn pending() -> Self {
        Self::new(StateType::Pending, "Pending", None, false)
    }

    /// The 3.9 sub-state between the claim and the infrastructure.
    pub fn submitting() -> Self {
        Self::new(StateType::Pending, "Submitting", None, false)
    }

    pub fn crashed(message: &str) -> Self {
        Self::new(StateType::Crashed, "Crashed", Some(message), false)
    }

    /// Cancelled, as the Python worker and runner send it: the current state copied (keeping
    /// the deployment concurrency lease) with a fresh `transition_id`. `force` is for runs the
    /// worker cancels outright (a deleted deployment); without it, a run that already reached a
    /// terminal state is left alone (the server answers ABORT), so a late or duplicate decision
    /// never overwrites a settled run. CANCELLING → CANCELLED needs no force.
    pub fn cancelled_from(current: Option<&State>, message: &str, force: bool) -> Self {
        let transition_id = Uuid::new_v4();
        let mut details = current
            .map(|s| s.state_details.clone())
            .filter(Value::is_object)
            .unwrap_or_else(|| json!({}));
        details["transition_id"] = json!(transition_id);
        Self::with_details(
            StateType::Cancelled,
            "Cancelled",
            Some(message),
            details,
            transition_id,
            force,
        )
    }

    /// `previous` again, forced: undoes a state this worker set by mistake.
    pub fn restore(previous: &State) -> Self {
        let transition_id = Uuid::new_v4();
        let mut details = previous.state_details.clone();
        if !details.is_object() {
            details = json!({});
        }
        details["transition_id"] = json!(transition_id);
        let mut p = Self::with_details(
            previous.kind,
            previous.name.as_deref().unwrap_or_default(),
            previous.message.as_deref(),
            details,
            transition_id,
            true,
        );
        p.body["state"]["data"] = previous.data.clone();
        p
    }

    /// Back to SCHEDULED (`AwaitingRetry`) at `at`, for a claimed run whose submission hit a
    /// temporary limit; the next poll after `at` claims it again.
    pub fn awaiting_retry(at: chrono::DateTime<chrono::Utc>, message: &str) -> Self {
        let mut p = Self::new(StateType::Scheduled, "AwaitingRetry", Some(message), false);
        p.body["state"]["state_details"]["scheduled_time"] = json!(at.to_rfc3339());
        p
    }
}

/// What a PENDING proposal achieved.
#[derive(Clone, Debug, PartialEq)]
pub enum Claim {
    /// This worker owns the run now.
    Won,
    /// The server accepted, but the run had already left SCHEDULED (Prefect lets a finished run
    /// go back to PENDING): a stale poll or a retried claim. The previous state must be restored;
    /// this is our PENDING.
    Stale(Box<State>),
    /// Someone else owns it, or the server substituted another state; the message says which.
    Lost(String),
    /// The server asked to propose again later.
    Wait(Duration),
}

/// Reads a claim's answer. ACCEPT into PENDING wins; so does a REJECT that returns our own
/// transition (our first request was applied and its answer lost, then the retry was refused).
/// A win counts only if the server copied a `scheduled_time` into the new state, which it does
/// exactly when the run came from SCHEDULED (rule `CopyScheduledTime`).
pub fn interpret_claim(result: &OrchestrationResult, ours: Uuid, run: &str) -> Claim {
    let state = result.state.as_ref();
    let kind = state.map(|s| s.kind);
    let mine = state.and_then(State::transition_id) == Some(ours.to_string().as_str());
    let from_scheduled = state.is_some_and(|s| !s.state_details["scheduled_time"].is_null());
    let won = match result.status {
        SetStateStatus::Accept => kind == Some(StateType::Pending),
        SetStateStatus::Reject => mine && kind == Some(StateType::Pending),
        _ => false,
    };
    if let (true, Some(ours)) = (won && !from_scheduled, state) {
        return Claim::Stale(Box::new(ours.clone()));
    }
    match result.status {
        _ if won => Claim::Won,
        SetStateStatus::Accept | SetStateStatus::Reject => Claim::Lost(format!(
            "Aborted submission of flow run '{run}': Server returned a non-pending state '{}'",
            kind.map(|k| format!("{k:?}").to_uppercase())
                .unwrap_or_else(|| "none".into())
        )),
        SetStateStatus::Abort => Claim::Lost(format!(
            "Aborted submission of flow run '{run}'. Server sent an abort signal: {}",
            result.reason().unwrap_or("no reason given")
        )),
        SetStateStatus::Wait => Claim::Wait(Duration::from_secs_f64(
            result.delay_seconds().unwrap_or(1.0).clamp(0.0, 60.0),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(raw: Value) -> OrchestrationResult {
        serde_json::from_value(raw).unwrap()
    }

    fn stale(details: Value) -> Claim {
        Claim::Stale(Box::new(
            serde_json::from_value(json!({"type": "PENDING", "state_details": details})).unwrap(),
        ))
    }

    #[test]
    fn claim_table() {
        let ours = Uuid::new_v4();
        let cases = [
            (
                json!({"status":"ACCEPT","state":{"type":"PENDING","state_details":{"scheduled_time":"2026-11-27T07:20:31Z"}}}),
                Claim::Won,
            ),
            (
                json!({"status":"REJECT","state":{"type":"PENDING","state_details":{"transition_id": ours, "scheduled_time":"2026-11-27T07:20:31Z"}}}),
                Claim::Won,
            ),
            (json!({"status":"ACCEPT","state":{"type":"PENDING","state_details":{"scheduled_time":null}}}), stale(json!({"scheduled_time":null}))),
            (json!({"status":"ACCEPT","state":{"type":"PENDING"}}), stale(Value::Null)),
            (
                json!({"status":"REJECT","state":{"type":"SCHEDULED","name":"AwaitingConcurrencySlot"}}),
                Claim::Lost("Aborted submission of flow run 'r': Server returned a non-pending state 'SCHEDULED'".into()),
            ),
            (
                json!({"status":"REJECT","state":{"type":"PENDING","state_details":{"transition_id": Uuid::new_v4()}}}),
                Claim::Lost("Aborted submission of flow run 'r': Server returned a non-pending state 'PENDING'".into()),
            ),
            (
                json!({"status":"ABORT","details":{"type":"abort_details","reason":"This run is in a PENDING state and cannot transition to a PENDING state."},"state":null}),
                Claim::Lost("Aborted submission of flow run 'r'. Server sent an abort signal: This run is in a PENDING state and cannot transition to a PENDING state.".into()),
            ),
            (
                json!({"status":"WAIT","details":{"delay_seconds":3}}),
                Claim::Wait(Duration::from_secs(3)),
            ),
        ];
        for (raw, want) in cases {
            assert_eq!(
                interpret_claim(&result(raw.clone()), ours, "r"),
                want,
                "{raw}"
            );
        }
    }

    #[test]
    fn cancelled_copies_details_with_a_fresh_transition() {
        let current: State = serde_json::from_value(json!({"type":"CANCELLING","state_details":
            {"transition_id":"old","deployment_concurrency_lease_id":"lease-1"}}))
        .unwrap();
        let p = Proposal::cancelled_from(Some(&current), "bye", true);
        let details = &p.body["state"]["state_details"];
        assert_eq!(details["deployment_concurrency_lease_id"], "lease-1");
        assert_eq!(details["transition_id"], json!(p.transition_id));
        assert_eq!(p.body["force"], true);
        assert_eq!(p.body["state"]["type"], "CANCELLED");
    }
}

//! The parts of Prefect's API objects the worker reads. Unknown fields are ignored and most
//! fields are optional, so a newer server does not break an older worker.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::ids::FlowRunId;

/// `null` and a missing field both become the type's default.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StateType {
    Scheduled,
    Pending,
    Running,
    Completed,
    Failed,
    Cancelled,
    Crashed,
    Paused,
    Cancelling,
    #[serde(other)]
    Unknown,
}

impl StateType {
    /// Terminal states are final: the server aborts any later proposal except a forced one.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            StateType::Completed | StateType::Failed | StateType::Cancelled | StateType::Crashed
        )
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct State {
    #[serde(default)]
    pub id: Option<Uuid>,
    #[serde(rename = "type")]
    pub kind: StateType,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub timestamp: Option<DateTime<Utc>>,
    /// Kept whole: a Cancelled proposal copies it (with the deployment concurrency lease).
    #[serde(default)]
    pub state_details: Value,
    #[serde(default)]
    pub data: Value,
}

impl State {
    /// A state that was not read: its type is `Unknown`, which no decision acts on.
    pub fn unread() -> Self {
        State {
            id: None,
            kind: StateType::Unknown,
            name: None,
            message: None,
            timestamp: None,
            state_details: Value::Null,
            data: Value::Null,
        }
    }

    pub fn transition_id(&self) -> Option<&str> {
        self.state_details.get("transition_id")?.as_str()
    }
}

/// A flow run. The fields the worker reads are typed; the rest is kept as the API sent it,
/// for `{{ ctx.flow_run.* }}` in a job's name ([`FlowRun::to_json`]).
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct FlowRun {
    pub id: FlowRunId,
    #[serde(default)]
    pub name: String,
    pub flow_id: Uuid,
    #[serde(default)]
    pub deployment_id: Option<Uuid>,
    #[serde(default)]
    pub state: Option<State>,
    #[serde(default)]
    pub infrastructure_pid: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub job_variables: Map<String, Value>,
    #[serde(default)]
    pub start_time: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub labels: Map<String, Value>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub tags: Vec<String>,
    #[serde(default)]
    pub work_pool_id: Option<Uuid>,
    #[serde(default)]
    pub work_pool_name: Option<String>,
    #[serde(default)]
    pub work_queue_name: Option<String>,
    #[serde(default)]
    pub expected_start_time: Option<DateTime<Utc>>,
    #[serde(default)]
    pub next_scheduled_start_time: Option<DateTime<Utc>>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

impl FlowRun {
    /// The flow run as the API represents it.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    pub fn state_type(&self) -> Option<StateType> {
        self.state.as_ref().map(|s| s.kind)
    }

    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key)?.as_str()
    }
}

/// One entry of `get_scheduled_flow_runs`. Inside it `flow_run.work_queue_name` is null; the
/// wrapper's ids are the reliable ones.
#[derive(Clone, Debug, Deserialize)]
pub struct WorkerFlowRun {
    pub work_pool_id: Uuid,
    #[serde(default)]
    pub work_queue_id: Option<Uuid>,
    pub flow_run: FlowRun,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Deployment {
    pub id: Uuid,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub flow_id: Option<Uuid>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub job_variables: Map<String, Value>,
    #[serde(default)]
    pub updated: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub tags: Vec<String>,
}

/// A flow; like [`FlowRun`], it keeps what it does not type, for `{{ ctx.flow.* }}`.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Flow {
    pub id: Uuid,
    #[serde(default)]
    pub name: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub tags: Vec<String>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

impl Flow {
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// An automation, as far as setup and `doctor` read it.
#[derive(Clone, Debug, Deserialize)]
pub struct Automation {
    pub id: Uuid,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub trigger: Value,
    #[serde(default, deserialize_with = "null_as_default")]
    pub actions: Vec<Value>,
}

/// A block document, a block type or a block schema: setup needs their ids (and a schema's
/// fields).
#[derive(Clone, Debug, Deserialize)]
pub struct BlockDocument {
    pub id: Uuid,
}

#[derive(Clone, Debug, Deserialize)]
pub struct BlockType {
    pub id: Uuid,
}

#[derive(Clone, Debug, Deserialize)]
pub struct BlockSchema {
    pub id: Uuid,
    #[serde(default)]
    pub fields: Value,
}

#[derive(Clone, Debug, Deserialize)]
pub struct WorkPool {
    pub id: Uuid,
    pub name: String,
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub base_job_template: Value,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub is_paused: bool,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Worker {
    pub name: String,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub heartbeat_interval_seconds: Option<f64>,
    #[serde(default)]
    pub last_heartbeat_time: Option<DateTime<Utc>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SetStateStatus {
    Accept,
    Reject,
    Abort,
    Wait,
}

/// The answer to `POST /flow_runs/{id}/set_state`. The HTTP status says nothing about the
/// outcome (a REJECT that substitutes a state is also a 201); only this body does.
#[derive(Clone, Debug, Deserialize)]
pub struct OrchestrationResult {
    pub status: SetStateStatus,
    #[serde(default)]
    pub details: Value,
    #[serde(default)]
    pub state: Option<State>,
}

impl OrchestrationResult {
    pub fn reason(&self) -> Option<&str> {
        self.details.get("reason")?.as_str()
    }

    pub fn delay_seconds(&self) -> Option<f64> {
        self.details.get("delay_seconds")?.as_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_captured_scheduled_run() {
        let raw = r#"{"work_pool_id":"1224b564-0000-4000-8000-000000000000","work_queue_id":"2d44b2f7-0000-4000-8000-000000000000",
          "flow_run":{"id":"ec0bbc68-0000-4000-8000-000000000000","name":"run-1","flow_id":"92d81b9a-0000-4000-8000-000000000000",
          "deployment_id":"2133e966-0000-4000-8000-000000000000","work_queue_name":null,"job_variables":null,
          "labels":{"prefect.flow.id":"x"},"infrastructure_pid":null,"start_time":null,"tags":["nightly"],
          "state":{"id":"5b7e6c1a-0000-4000-8000-000000000000","type":"SCHEDULED","name":"Scheduled","timestamp":"2026-11-27T07:20:31.763154Z",
          "message":null,"data":null,"state_details":{"scheduled_time":"2026-11-27T07:20:31Z","transition_id":null}},"brand_new_field":1}}"#;
        let run: WorkerFlowRun = serde_json::from_str(raw).unwrap();
        assert_eq!(run.flow_run.state_type(), Some(StateType::Scheduled));
        assert!(run.flow_run.job_variables.is_empty());
        assert_eq!(run.flow_run.label("prefect.flow.id"), Some("x"));
    }

    #[test]
    fn unknown_state_types_do_not_fail_parsing() {
        let s: State = serde_json::from_str(r#"{"type":"SOMETHING_NEW"}"#).unwrap();
        assert_eq!(s.kind, StateType::Unknown);
        assert!(!s.kind.is_terminal());
    }
}

//! Public data types: what `Emulator::snapshot()` returns and `/_emulator/*` serves.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How a test hook concludes a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Success,
    Failure,
}

/// Run status: the only three values any source documents (§3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum RunStatus {
    Running,
    Success,
    Failed,
}

/// Why a run ended; the API cannot tell these apart except through the webhook event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RunEnd {
    Success,
    Failure,
    /// `DELETE .../runs/{r}`.
    Abort,
    /// `settings.activeDeadlineSeconds` passed.
    Deadline,
    /// The job was deleted while the run was active.
    JobDeleted,
}

/// The run object exactly as `GET .../runs/{r}` returns it (§3.2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunView {
    pub id: String,
    pub run_name: String,
    pub status: RunStatus,
    pub active: u32,
    pub succeeded: u32,
    pub failed: u32,
    pub completions: u32,
    pub concluded: bool,
    pub backoff_limit: i64,
    pub started_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concluded_at: Option<String>,
}

/// Container status of `GET .../containers` (§3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[allow(clippy::enum_variant_names)]
pub enum ContainerStatus {
    #[serde(rename = "TASK_RUNNING")]
    TaskRunning,
    #[serde(rename = "TASK_FINISHED")]
    TaskFinished,
    #[serde(rename = "TASK_FAILED")]
    TaskFailed,
    #[serde(rename = "TASK_KILLED")]
    TaskKilled,
}

/// One captured output line, as `GET .../logs` returns it (§3.5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogLine {
    pub container_id: String,
    pub log: String,
    pub ts: String,
}

/// A job as stored: the body as sent plus what the emulator derived.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobRecord {
    pub project_id: String,
    pub id: String,
    pub app_id: String,
    pub job_type: String,
    /// The last create/put body, verbatim (including `runtimeEnvironment`).
    pub spec: Value,
    pub created_at: String,
    pub updated_at: String,
}

/// A run as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    pub project_id: String,
    pub job_id: String,
    pub run: RunView,
    /// Job environment merged with the run's overrides.
    pub environment: BTreeMap<String, String>,
    /// The command a container would run, if the deployment has one.
    pub command: Option<String>,
    /// The start-run body, verbatim.
    pub request: Value,
    pub end: Option<RunEnd>,
    pub container_status: ContainerStatus,
    /// Epoch seconds of the container's creation and last change.
    pub container_created_at: i64,
    pub container_updated_at: i64,
    pub logs: Vec<LogLine>,
}

/// `status` of a notification integration, as the official types have it (§5.1): fields without
/// a value are left out rather than sent as `null`, which the types do not allow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct IntegrationStatus {
    pub disabled: bool,
    /// Typed `boolean` in `@northflank/js-client` ("why the webhook was disabled"): `true` once
    /// failures disabled the integration. The words are in [`IntegrationRecord::disabled_reason`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_of_first_failed_request: Option<String>,
    pub number_of_failed_requests: u64,
}

/// A notification integration as stored and as the API returns it, never with the secret.
/// `restrictions` is kept for the delivery filter but not answered: the official result types
/// do not carry it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IntegrationView {
    pub id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub webhook: String,
    pub restricted: bool,
    pub projects: Vec<String>,
    pub events: BTreeMap<String, bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restrictions: Option<Value>,
    pub created_at: String,
    pub updated_at: String,
    pub status: IntegrationStatus,
}

/// An integration in the snapshot: the API view plus what the API hides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IntegrationRecord {
    pub integration: IntegrationView,
    pub has_secret: bool,
    pub consecutive_failed_events: u32,
    /// Why failures disabled it, in words.
    pub disabled_reason: Option<String>,
}

/// One webhook delivery attempt (or a dropped delivery, which has `attempt` 0).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// e.g. `job-run:success`.
    pub event: String,
    pub event_id: String,
    pub integration_id: String,
    pub run_id: String,
    pub url: String,
    pub attempt: u32,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub dropped: bool,
    /// The second copy sent by the duplicate fault.
    pub duplicate: bool,
    /// Held back by the reorder fault.
    pub reordered: bool,
    pub at: String,
}

impl Delivery {
    pub fn succeeded(&self) -> bool {
        self.status_code.is_some_and(|c| (200..300).contains(&c))
    }
}

/// Counters since start. `requests` is keyed by `"METHOD /v1/path/{param}"` with team-scoped
/// twins folded into the plain route.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub requests: BTreeMap<String, u64>,
    pub jobs_created: u64,
    pub jobs_updated: u64,
    pub jobs_deleted: u64,
    pub runs_started: u64,
    /// Runs started per job id, kept after the job is deleted (for exactly-once checks).
    pub runs_started_by_job: BTreeMap<String, u64>,
    pub runs_succeeded: u64,
    pub runs_failed: u64,
    pub runs_aborted: u64,
    pub runs_terminated: u64,
    pub responses_401: u64,
    pub responses_429: u64,
    pub responses_5xx: u64,
    pub faults_injected: u64,
    /// HTTP attempts made, including retries and duplicates.
    pub webhooks_sent: u64,
    /// Attempts answered with 2xx.
    pub webhooks_delivered: u64,
    /// Attempts that failed (non-2xx, timeout, connection error).
    pub webhooks_failed: u64,
    /// Deliveries suppressed by the drop fault.
    pub webhooks_dropped: u64,
    pub webhooks_duplicated: u64,
    pub webhooks_reordered: u64,
    /// Events whose every attempt failed.
    pub webhook_events_abandoned: u64,
    /// `set_state` calls made by the engine emulation.
    pub prefect_state_proposals: u64,
}

/// One API request as answered (control API requests are not recorded).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// The endpoint key used in `Counters::requests`.
    pub endpoint: String,
    /// The JSON body, or null when empty or not JSON.
    pub body: Value,
    pub status: u16,
    pub at: String,
}

/// Everything the emulator holds, for assertions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    pub jobs: Vec<JobRecord>,
    pub runs: Vec<RunRecord>,
    pub integrations: Vec<IntegrationRecord>,
    pub deliveries: Vec<Delivery>,
    pub counters: Counters,
}

//! Emulator configuration. Every behaviour the reference marks \[INF\] (inferred) is a knob here,
//! defaulting to the reference's best guess, so tests can flip to the alternatives.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How runs are executed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// `NF_EMULATOR_SCRIPT` in the run environment decides the outcome; nothing is executed.
    #[default]
    Scripted,
    /// The job's command really runs as a local `sh -c` child process.
    Process,
}

/// Key of the run object inside a webhook's `data` (§5.3: undocumented, \[INF\]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum RunKey {
    #[default]
    #[serde(rename = "jobRun")]
    JobRun,
    #[serde(rename = "run")]
    Run,
    #[serde(rename = "job_run")]
    JobRunSnake,
}

impl RunKey {
    pub fn as_str(self) -> &'static str {
        match self {
            RunKey::JobRun => "jobRun",
            RunKey::Run => "run",
            RunKey::JobRunSnake => "job_run",
        }
    }
}

/// Answer to `DELETE .../runs/{r}` when the run already concluded (§3.4: undocumented, \[INF\]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AbortConcluded {
    /// 409 with the error envelope.
    #[default]
    Conflict,
    /// 200 `{"data":{}}` and nothing changes.
    Noop,
}

/// The integration token header when no secret is configured (§5.4: undocumented, \[INF\]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenHeader {
    /// The header is not sent.
    #[default]
    Absent,
    /// The header is sent with an empty value.
    Empty,
}

/// Shape of a captured output line in `GET .../logs` (`log` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `stdout F <line>`, the CRI format of the docs example.
    #[default]
    Cri,
    /// Just the line.
    Plain,
}

/// Webhook delivery policy (§5.4: retry count, backoff and timeout are undocumented, \[INF\]).
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Per-attempt timeout; a slower receiver counts as a failed attempt.
    pub delivery_timeout: Duration,
    /// Extra attempts after the first failed one.
    pub retries: u32,
    /// Wait before the first retry; doubles for each further retry.
    pub backoff: Duration,
    /// Consecutive failed events (all attempts failed) before the integration is disabled.
    pub disable_after_failures: u32,
    /// Sent when the integration has no secret.
    pub token_header_without_secret: TokenHeader,
    /// Key of the run object in the payload's `data`.
    pub run_key: RunKey,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            delivery_timeout: Duration::from_secs(10),
            retries: 3,
            backoff: Duration::from_millis(500),
            disable_after_failures: 20,
            token_header_without_secret: TokenHeader::Absent,
            run_key: RunKey::JobRun,
        }
    }
}

/// Fault injection. Percentages are 0–100; all default to off. Decisions come from RNGs seeded
/// with `seed` (one for the API, one for webhooks), so a sequence of requests is reproducible.
#[derive(Debug, Clone)]
pub struct Faults {
    pub seed: u64,
    /// The delivery is recorded as dropped and never sent.
    pub webhook_drop_pct: f64,
    /// The delivery is sent twice with the same Event-Id.
    pub webhook_duplicate_pct: f64,
    /// The delivery is held back until the next event of the same run has been sent to the
    /// same integration, or until `webhook_reorder_hold` if no further event comes.
    pub webhook_reorder_pct: f64,
    pub webhook_reorder_hold: Duration,
    /// Upper bound of a uniformly random extra delay before each delivery.
    pub webhook_delay_ms: u64,
    /// 503 before the handler runs (nothing changes).
    pub api_5xx_pct: f64,
    /// 429 before the handler runs, with `Retry-After: retry_after_secs`.
    pub api_429_pct: f64,
    /// The handler runs and changes state, but the answer is a 502 (a lost response).
    pub api_5xx_after_pct: f64,
    pub retry_after_secs: u64,
    /// Starting a run (`POST …/runs`) with this bearer token never gets an answer: models a
    /// worker that dies between writing a job and starting its run.
    pub stall_run_starts_token: Option<String>,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            seed: 0,
            webhook_drop_pct: 0.0,
            webhook_duplicate_pct: 0.0,
            webhook_reorder_pct: 0.0,
            webhook_reorder_hold: Duration::from_secs(1),
            webhook_delay_ms: 0,
            api_5xx_pct: 0.0,
            api_429_pct: 0.0,
            api_5xx_after_pct: 0.0,
            retry_after_secs: 1,
            stall_run_starts_token: None,
        }
    }
}

/// Everything the emulator can be told. `Config::default()` is the reference's best guess.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listen address; port 0 picks a free port.
    pub bind: SocketAddr,
    /// Accepted `Authorization: Bearer` tokens.
    pub api_tokens: Vec<String>,
    /// Team name used in `appId` for routes without `/teams/{teamId}`.
    pub team: String,
    /// When set, only these project IDs exist (others → 404).
    pub projects: Option<Vec<String>>,
    /// Requests per token per window (§4.2: 1000/hour, fixed window from the first request).
    pub rate_limit_per_hour: u32,
    pub rate_limit_window_secs: u64,
    /// Maximum job name length (§2.4: 52 now, 39 and 20 historically).
    pub name_max_len: usize,
    /// Answer status of `POST /jobs` when the derived ID exists (§2.3: 409 is \[INF\]).
    pub duplicate_job_status: u16,
    /// When set, job `tags` must be among these ("previously defined tags", §2.2, \[INF\]).
    pub known_tags: Option<Vec<String>>,
    /// `GET .../runs` order (§3.3: undocumented, \[INF\] newest first).
    pub runs_newest_first: bool,
    /// Send `Retry-After` with an over-budget 429 (§4.2: \[INF\]).
    pub retry_after_on_limit: bool,
    /// `settings.backoffLimit` when a job is created without `settings` (§9.8, \[INF\]).
    pub default_backoff_limit: i64,
    pub abort_concluded: AbortConcluded,
    /// Emit `"concludedAt": null` on unconcluded runs instead of omitting it (§3.2, \[INF\]).
    pub concluded_at_null: bool,
    /// Deleting a job with active runs fires `job-run:terminate` for them (§2.3, \[INF\]).
    pub delete_job_fires_terminate: bool,
    pub webhooks: WebhookConfig,
    pub faults: Faults,
    pub mode: Mode,
    /// Script used when the run environment has no `NF_EMULATOR_SCRIPT`.
    pub default_script: String,
    /// Scripted mode only: act like `prefect flow-run execute` against the run's Prefect API.
    pub report_to_prefect: bool,
    /// How often the engine emulation polls the flow run for CANCELLING.
    pub engine_poll: Duration,
    /// Extra variables for process-mode children (below the run environment).
    pub process_env: BTreeMap<String, String>,
    /// Working directory of process-mode children; `None` = the system temp dir.
    pub process_workdir: Option<PathBuf>,
    /// SIGTERM → SIGKILL grace when a job has no `deployment.gracePeriodSeconds`.
    pub grace: Duration,
    pub log_format: LogFormat,
    /// Ring sizes of the request and delivery records.
    pub request_log_capacity: usize,
    pub delivery_log_capacity: usize,
    /// Captured log lines kept per run.
    pub log_lines_per_run: usize,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Accept what the official types refuse: fields they do not have, `null` where they allow
    /// none (counted as absent), query parameters the official client never sends, and a logs
    /// query without `queryType=range`. Off by default: Northflank's API is generated from
    /// the same spec as the types, and a misspelled field must fail a test, not pass silently.
    pub lenient: bool,
    /// Append every API exchange to this file as one JSON line (see `scripts/nf-schema`).
    /// When unset, [`crate::start`] reads `NF_EMULATOR_RECORD`.
    pub record: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            api_tokens: vec!["nf-test-token".to_owned()],
            team: "emulator-team".to_owned(),
            projects: None,
            rate_limit_per_hour: 1000,
            rate_limit_window_secs: 3600,
            name_max_len: 52,
            duplicate_job_status: 409,
            known_tags: None,
            runs_newest_first: true,
            retry_after_on_limit: true,
            default_backoff_limit: 0,
            abort_concluded: AbortConcluded::Conflict,
            concluded_at_null: false,
            delete_job_fires_terminate: true,
            webhooks: WebhookConfig::default(),
            faults: Faults::default(),
            mode: Mode::Scripted,
            default_script: "succeed:1".to_owned(),
            report_to_prefect: false,
            engine_poll: Duration::from_secs(2),
            process_env: BTreeMap::new(),
            process_workdir: None,
            grace: Duration::from_secs(5),
            log_format: LogFormat::Cri,
            request_log_capacity: 20_000,
            delivery_log_capacity: 20_000,
            log_lines_per_run: 10_000,
            max_body_bytes: 2 * 1024 * 1024,
            lenient: false,
            record: None,
        }
    }
}

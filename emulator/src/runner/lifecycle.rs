//! The run state machine: start, conclude (first conclusion wins), and the job-delete sweep.
//! Every transition emits its webhook event after the state lock is released.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::sync::watch;

use super::{RunCtx, Stop, docker_command};
use crate::config::Config;
use crate::error::ApiError;
use crate::model::{ContainerStatus, RunEnd, RunRecord, RunStatus, RunView};
use crate::state::{App, JobEntry, RunEntry, State, epoch_secs, now_secs};
use crate::webhook::{self, RunEvent};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum ConcludeError {
    #[error("Job run not found")]
    NotFound,
    #[error("Job run has already concluded")]
    AlreadyConcluded,
}

/// The run object as the API serves it; `concluded_at_null` decides how "not yet" looks.
pub(crate) fn run_json(view: &RunView, config: &Config) -> Value {
    let mut value = serde_json::to_value(view).unwrap_or(Value::Null);
    if config.concluded_at_null && view.concluded_at.is_none() {
        value["concludedAt"] = Value::Null;
    }
    value
}

fn string_map(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

fn docker_of(v: &Value) -> Option<&Map<String, Value>> {
    v.pointer("/deployment/docker").and_then(Value::as_object)
}

fn event(state: &State, config: &Config, record: &RunRecord, kind: &'static str) -> RunEvent {
    let key = (record.project_id.clone(), record.job_id.clone());
    let spec = state.jobs.get(&key).map(|j| &j.record.spec);
    let job_name = spec
        .and_then(|s| s.get("name"))
        .and_then(Value::as_str)
        .unwrap_or(&record.job_id)
        .to_owned();
    let job_tags = spec
        .and_then(|s| s.get("tags"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|t| Some(t.as_str()?.to_owned()))
                .collect()
        })
        .unwrap_or_default();
    RunEvent {
        kind,
        run_id: record.run.id.clone(),
        project_id: record.project_id.clone(),
        job_id: record.job_id.clone(),
        job_name,
        job_tags,
        run: run_json(&record.run, config),
    }
}

/// What a run takes from its job and its start request; the request wins where both say.
struct Launch {
    environment: BTreeMap<String, String>,
    command: Option<String>,
    backoff_limit: i64,
    deadline: Option<Duration>,
    grace: Duration,
}

impl Launch {
    fn new(spec: &Value, body: &Value, config: &Config) -> Self {
        let mut environment = string_map(spec.get("runtimeEnvironment"));
        environment.extend(string_map(body.get("runtimeEnvironment")));
        let command = docker_command(docker_of(body)).or_else(|| docker_command(docker_of(spec)));
        let backoff_limit = spec
            .pointer("/settings/backoffLimit")
            .and_then(Value::as_i64)
            .unwrap_or(config.default_backoff_limit);
        let deadline = spec
            .pointer("/settings/activeDeadlineSeconds")
            .and_then(Value::as_u64)
            .filter(|s| *s > 0)
            .map(Duration::from_secs);
        let grace = body
            .pointer("/deployment/gracePeriodSeconds")
            .or_else(|| spec.pointer("/deployment/gracePeriodSeconds"))
            .and_then(Value::as_u64)
            .map(Duration::from_secs)
            .unwrap_or(config.grace);
        Self {
            environment,
            command,
            backoff_limit,
            deadline,
            grace,
        }
    }
}

fn new_view(job_id: &str, backoff_limit: i64) -> RunView {
    let id = uuid::Uuid::new_v4().to_string();
    let suffix: String = uuid::Uuid::new_v4()
        .simple()
        .to_string()
        .chars()
        .take(24)
        .collect();
    RunView {
        id,
        run_name: format!("{job_id}-{suffix}"),
        status: RunStatus::Running,
        active: 1,
        succeeded: 0,
        failed: 0,
        completions: 0,
        concluded: false,
        backoff_limit,
        started_at: now_secs(),
        concluded_at: None,
    }
}

fn new_record(
    project: &str,
    job_id: &str,
    view: &RunView,
    launch: &Launch,
    body: Value,
) -> RunRecord {
    let now = epoch_secs();
    RunRecord {
        project_id: project.to_owned(),
        job_id: job_id.to_owned(),
        run: view.clone(),
        environment: launch.environment.clone(),
        command: launch.command.clone(),
        request: body,
        end: None,
        container_status: ContainerStatus::TaskRunning,
        container_created_at: now,
        container_updated_at: now,
        logs: Vec::new(),
    }
}

/// Stores and counts a new run; returns the receiving end of its stop signal.
fn insert_run(state: &mut State, record: RunRecord) -> watch::Receiver<bool> {
    let (stop, stop_rx) = watch::channel(false);
    let seq = state.next_seq();
    let (id, job_id) = (record.run.id.clone(), record.job_id.clone());
    state.runs.insert(id, RunEntry { record, seq, stop });
    state.counters.runs_started += 1;
    *state
        .counters
        .runs_started_by_job
        .entry(job_id)
        .or_default() += 1;
    stop_rx
}

/// `POST .../jobs/{j}/runs` after validation.
pub(crate) fn start_run(
    app: &App,
    project: &str,
    job_id: &str,
    body: Value,
) -> Result<RunView, ApiError> {
    let config = &app.config;
    let (view, ctx, start_event) = {
        let mut guard = app.state();
        let state = &mut *guard;
        let key = (project.to_owned(), job_id.to_owned());
        let job: &JobEntry = state
            .jobs
            .get(&key)
            .ok_or_else(|| ApiError::not_found("Job"))?;
        let launch = Launch::new(&job.record.spec, &body, config);
        let view = new_view(job_id, launch.backoff_limit);
        let record = new_record(project, job_id, &view, &launch, body);
        let start_event = event(state, config, &record, "start");
        let stop_rx = insert_run(state, record);
        let ctx = RunCtx {
            run_id: view.id.clone(),
            env: launch.environment,
            command: launch.command,
            deadline: launch.deadline,
            grace: launch.grace,
            stop: Stop::new(stop_rx, app.shutdown.subscribe()),
        };
        (view, ctx, start_event)
    };
    tracing::info!(run = %view.id, job = job_id, project, "run started");
    webhook::emit(app, start_event);
    super::spawn(app, ctx);
    Ok(view)
}

/// Ends an active run. The first caller wins; later ones get `AlreadyConcluded`.
pub(crate) fn conclude(app: &App, run_id: &str, end: RunEnd) -> Result<(), ConcludeError> {
    let config = &app.config;
    let ev = {
        let mut guard = app.state();
        let state = &mut *guard;
        let entry = state.runs.get_mut(run_id).ok_or(ConcludeError::NotFound)?;
        let record = &mut entry.record;
        if record.run.concluded {
            return Err(ConcludeError::AlreadyConcluded);
        }
        let run = &mut record.run;
        let success = end == RunEnd::Success;
        run.status = if success {
            RunStatus::Success
        } else {
            RunStatus::Failed
        };
        run.active = 0;
        run.succeeded = u32::from(success);
        run.failed = u32::from(!success);
        run.completions = 1;
        run.concluded = true;
        run.concluded_at = Some(now_secs());
        record.end = Some(end);
        record.container_status = match end {
            RunEnd::Success => ContainerStatus::TaskFinished,
            RunEnd::Failure => ContainerStatus::TaskFailed,
            RunEnd::Abort | RunEnd::Deadline | RunEnd::JobDeleted => ContainerStatus::TaskKilled,
        };
        record.container_updated_at = epoch_secs();
        entry.stop.send_replace(true);
        let counters = &mut state.counters;
        let kind = match end {
            RunEnd::Success => {
                counters.runs_succeeded += 1;
                Some("success")
            }
            RunEnd::Failure => {
                counters.runs_failed += 1;
                Some("failure")
            }
            RunEnd::Abort => {
                counters.runs_aborted += 1;
                Some("abort")
            }
            RunEnd::Deadline => {
                counters.runs_terminated += 1;
                Some("terminate")
            }
            RunEnd::JobDeleted => {
                counters.runs_terminated += 1;
                config.delete_job_fires_terminate.then_some("terminate")
            }
        };
        let record = state.runs[run_id].record.clone();
        kind.map(|kind| event(state, config, &record, kind))
    };
    tracing::info!(run = run_id, ?end, "run concluded");
    if let Some(ev) = ev {
        webhook::emit(app, ev);
    }
    Ok(())
}

/// `DELETE .../jobs/{j}`: active runs are killed (and fire `terminate`), then the job and its
/// run history disappear.
pub(crate) fn delete_job(app: &App, project: &str, job_id: &str) -> Result<(), ApiError> {
    let key = (project.to_owned(), job_id.to_owned());
    let active: Vec<String> = {
        let state = app.state();
        if !state.jobs.contains_key(&key) {
            return Err(ApiError::not_found("Job"));
        }
        state
            .runs
            .values()
            .filter(|r| {
                r.record.project_id == project
                    && r.record.job_id == job_id
                    && !r.record.run.concluded
            })
            .map(|r| r.record.run.id.clone())
            .collect()
    };
    for run_id in active {
        let _ = conclude(app, &run_id, RunEnd::JobDeleted);
    }
    let mut state = app.state();
    if state.jobs.remove(&key).is_some() {
        state.counters.jobs_deleted += 1;
    }
    state
        .runs
        .retain(|_, r| !(r.record.project_id == project && r.record.job_id == job_id));
    Ok(())
}

//! The webhook step: a Northflank job-run notification in, a Prefect state and a job cleanup out.
//!
//! The notification is only a hint. Its token has been checked (by `endpoint`); then one read
//! of the flow run tells whether it is ours (`ownership`), and `run::settle` decides from one
//! GET of the job run. Events for jobs that are not ours are acknowledged and left alone, so a
//! shared project and a shared integration do no harm.

pub mod event;

use std::time::Duration;

use reqwest::header::HeaderMap;
use tracing::Instrument;

use crate::ids::{FlowRunId, JobName};
use crate::ownership::{self, JobSeen, NotOurs};
use crate::prefect::logs::RunLog;
use crate::prefect::models::FlowRun;
pub use crate::run::SettleError;
use crate::run::{self, Hint, Settled};
use crate::worker::Worker;

pub const EVENT_TYPE_HEADER: &str = "x-northflank-notification-integration-event-type";
pub const EVENT_ID_HEADER: &str = "x-northflank-notification-integration-event-id";

/// Northflank's delivery timeout is undocumented: answer well within a few seconds, and let its
/// retries (on a 503) cover an outage of Prefect or Northflank.
pub const BUDGET: Duration = Duration::from_secs(8);

/// The notification of a job run's start.
const START_EVENT: &str = "job-run:start";
/// The notification of a job run's successful end.
const SUCCESS_EVENT: &str = "job-run:success";

/// Reads of a concluded run's flow run while its submission has not recorded it yet, and the
/// pause before the first (each later one waits once more as long): 0.25 + 0.5 + 0.75 s,
/// well inside [`BUDGET`].
const RECORD_READS: u32 = 3;
const RECORD_PAUSE: Duration = Duration::from_millis(250);

/// What became of a notification whose token was right.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The body could not be read as a notification.
    Malformed(String),
    /// Not about a job run of ours by its shape: another event type, another job name.
    Ignored(String),
    /// About a flow run or job that is not ours (see `ownership`): left alone.
    NotOurs(NotOurs),
    Settled(Settled),
}

/// A notification in (its token already checked), a Prefect state and a job cleanup out. An
/// error means Prefect or Northflank could not be asked: Northflank delivers it again.
pub async fn handle(
    worker: &Worker,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Outcome, SettleError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let notification = match event::parse(body, header(EVENT_TYPE_HEADER), header(EVENT_ID_HEADER))
    {
        Ok(n) => n,
        Err(e) => return Ok(Outcome::Malformed(e.to_string())),
    };
    if !notification.is_job_run() {
        return Ok(Outcome::Ignored(format!(
            "event type {}",
            notification.event
        )));
    }
    let Some(job) = notification.job_id.as_deref().and_then(JobName::parse) else {
        return Ok(Outcome::Ignored("not a job of this worker".into()));
    };
    let hint = Hint {
        project: notification.project_id.clone(),
        job_run: notification.run_id.clone(),
        event: Some(notification.event.clone()),
    };
    let worker = worker.until(tokio::time::Instant::now() + BUDGET);
    notified(&worker, job.flow_run_id(), &hint)
        .await
        .inspect_err(|e| {
            tracing::error!(flow_run_id = %job.flow_run_id(), error = %e, event_id = ?notification.event_id, "could not settle; Northflank will retry");
        })
}

/// The flow run a notification names, settled if it is ours; every log line it causes carries
/// the flow run, job and job run.
async fn notified(worker: &Worker, id: FlowRunId, hint: &Hint) -> Result<Outcome, SettleError> {
    let job = JobName::for_flow_run(id).to_string();
    let span =
        tracing::info_span!("flow_run", flow_run_id = %id, job = %job, run = tracing::field::Empty);
    async {
        if let Some(settled) = remembered(worker, id, hint).await? {
            return Ok(Outcome::Settled(settled));
        }
        let flow_run = match ours(worker, id, &job, hint).await? {
            Ok(flow_run) => flow_run,
            Err(why) => {
                tracing::debug!(reason = %why, event = ?hint.event, "not ours: left alone");
                return Ok(Outcome::NotOurs(why));
            }
        };
        let settled = if hint.event.as_deref() == Some(START_EVENT) {
            started(worker, &flow_run, &job, hint.job_run.as_deref()).await
        } else {
            run::settle(worker, recorded(worker, flow_run).await?, hint).await?
        };
        Ok(Outcome::Settled(settled))
    }
    .instrument(span)
    .await
}

/// A notification about a run this process launched (it remembers the job and project it
/// created, so the run is provably ours) is answered without reading the flow run: a start
/// adds its line, a success settles from the job run alone. `None`: not remembered, from
/// another project, or not settled that way; the flow run is read.
async fn remembered(
    worker: &Worker,
    id: FlowRunId,
    hint: &Hint,
) -> Result<Option<Settled>, SettleError> {
    let Some(known) = worker.memory().launched(id).cloned() else {
        return Ok(None);
    };
    if hint
        .project
        .as_deref()
        .is_some_and(|p| p != known.pid.project)
    {
        return Ok(None);
    }
    match hint.event.as_deref() {
        Some(START_EVENT) if worker.memory().note_start(id) => Ok(Some(
            note_start(worker, id, &known.pid.job, hint.job_run.as_deref()).await,
        )),
        Some(SUCCESS_EVENT) => run::settle_known_success(worker, id, &known, hint).await,
        _ => Ok(None),
    }
}

/// The flow run, if it and the notified job are ours. A notification carries no marker, so a
/// job whose flow run is gone is never provably ours here; the sweep, which reads markers,
/// removes it.
async fn ours(
    worker: &Worker,
    id: FlowRunId,
    job: &str,
    hint: &Hint,
) -> Result<Result<FlowRun, NotOurs>, SettleError> {
    let flow_run = worker.prefect.read_flow_run(id).await?;
    let seen = JobSeen {
        project: hint.project.as_deref(),
        job,
        marker: None,
    };
    let us = worker.installation(None);
    Ok(
        match (
            ownership::judge(&us, flow_run.as_ref(), Some(seen)),
            flow_run,
        ) {
            (Ok(()), Some(flow_run)) => Ok(flow_run),
            (Ok(()), None) => Err(NotOurs::UnknownFlowRun),
            (Err(why), _) => Err(why),
        },
    )
}

/// The flow run once its submission has recorded the job run (`infrastructure_pid`): a run
/// that ends within moments of its start can be notified before the worker that launched it
/// has recorded it, and only the record says whether the run asked to keep its job. Read again
/// after short pauses (a round trip is what the record waits for), at most [`RECORD_READS`]
/// times; a run still unrecorded is settled as it is, and its job left to the sweep.
async fn recorded(worker: &Worker, mut flow_run: FlowRun) -> Result<FlowRun, SettleError> {
    for read in 1..=RECORD_READS {
        if flow_run.infrastructure_pid.is_some() {
            break;
        }
        tokio::time::sleep(RECORD_PAUSE * read).await;
        match worker.prefect.read_flow_run(flow_run.id).await? {
            Some(again) => flow_run = again,
            None => break,
        }
    }
    Ok(flow_run)
}

/// A start notification only adds a line to the logs of a flow run that has not finished. The
/// job run is not read: nothing would be decided from a running run, and its end brings its own
/// notification (or reconciliation), read then. This keeps every flow run at four Northflank
/// requests: create the job, start the run, read the concluded run, delete the job.
async fn started(worker: &Worker, flow_run: &FlowRun, job: &str, job_run: Option<&str>) -> Settled {
    if flow_run.state_type().is_none_or(|k| k.is_terminal()) {
        return Settled::nothing(flow_run.id, "the flow run has already finished");
    }
    note_start(worker, flow_run.id, job, job_run).await
}

/// The start line in the flow run's logs.
async fn note_start(worker: &Worker, id: FlowRunId, job: &str, job_run: Option<&str>) -> Settled {
    let note = match job_run {
        Some(job_run) => format!("Northflank run '{job_run}' of job '{job}' started"),
        None => format!("Northflank job '{job}' started a run"),
    };
    let mut log = RunLog::new(id);
    log.info(note.clone());
    worker.keep_logs(&mut log);
    worker.send_soon().await;
    tracing::info!(decision = "none", "run started");
    Settled::nothing(id, note)
}

//! The webhook step: a Northflank job-run notification in, a Prefect state and a job cleanup out.
//!
//! The notification is only a hint. Its token has been checked (by `endpoint`); then one read
//! of the flow run tells whether it is ours (`ownership`), and one GET of the Northflank run
//! decides. Events for jobs that are not ours are acknowledged and left alone, so a shared
//! project and a shared integration do no harm.

pub mod decide;
pub mod event;
pub mod settle;

use std::time::Duration;

use reqwest::header::HeaderMap;

use crate::ids::JobName;
use crate::ownership::NotOurs;
use crate::worker::Worker;
pub use settle::{SettleError, Settled};

pub const EVENT_TYPE_HEADER: &str = "x-northflank-notification-integration-event-type";
pub const EVENT_ID_HEADER: &str = "x-northflank-notification-integration-event-id";

/// Northflank's delivery timeout is undocumented: answer well within a few seconds, and let its
/// retries (on a 503) cover an outage of Prefect or Northflank.
pub const BUDGET: Duration = Duration::from_secs(8);

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
    let hint = settle::Hint {
        project: notification.project_id.clone(),
        run: notification.run_id.clone(),
        event: Some(notification.event.clone()),
    };
    let worker = worker.until(tokio::time::Instant::now() + BUDGET);
    settle::settle(&worker, job.flow_run_id(), &hint)
        .await
        .inspect_err(|e| {
            tracing::error!(flow_run_id = %job.flow_run_id(), error = %e, event_id = ?notification.event_id, "could not settle; Northflank will retry");
        })
}

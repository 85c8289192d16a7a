//! Ending a claimed flow run whose launch failed: what was written for it is removed, and it
//! goes back to Scheduled when the failure says nothing about the run (either API's rate limit,
//! the worker's rotated token), or is Crashed with the reason. When Prefect's rate limit refuses
//! even that, the run is left PENDING for reconciliation to resume: never Crashed for it.

use std::time::Duration;

use chrono::Utc;

use super::launch::LaunchError;
use crate::prefect::PrefectError;
use crate::prefect::logs::RunLog;
use crate::prefect::models::{FlowRun, StateType};
use crate::prefect::states::Proposal;
use crate::retry::Transient;
use crate::worker::Worker;

/// How an abandoned flow run ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Abandoned {
    /// Back to Scheduled (`AwaitingRetry`), to be submitted again.
    Rescheduled(String),
    /// Crashed was proposed (the server may have kept another state).
    Crashed(String),
    /// Prefect's rate limit outlasted the invocation: still PENDING, without infrastructure,
    /// for reconciliation to resume.
    LeftPending(String),
}

/// Ends a claimed run whose launch failed, and removes what was written for it.
pub async fn abandon(
    worker: &Worker,
    flow_run: &FlowRun,
    error: LaunchError,
    log: &mut RunLog,
) -> Abandoned {
    remove_written_job(&error, log).await;
    if let Some((reason, wait)) = temporary(&error) {
        log.warn(reason.clone());
        let at =
            Utc::now() + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::seconds(60));
        match worker
            .prefect
            .set_state(flow_run.id, &Proposal::awaiting_retry(at, &reason))
            .await
        {
            Ok(_) => return Abandoned::Rescheduled(reason),
            // Crashed would be refused just the same, and the run did nothing wrong.
            Err(e) if e.is_throttled() => {
                let reason = format!(
                    "{reason}; it could not be sent back to Scheduled ({e}), so it stays PENDING and reconciliation resumes its submission"
                );
                log.warn(reason.clone());
                return Abandoned::LeftPending(reason);
            }
            Err(_) => {}
        }
    }
    let message = format!("Failed to submit flow run to infrastructure: {error}");
    log.error(format!(
        "Failed to submit flow run '{}' to infrastructure.",
        flow_run.name
    ));
    crash(worker, flow_run, &message, log).await;
    Abandoned::Crashed(message)
}

async fn remove_written_job(error: &LaunchError, log: &mut RunLog) {
    let LaunchError::Northflank {
        written: Some(w), ..
    } = error
    else {
        return;
    };
    match w.client.delete_job(&w.project, &w.job).await {
        Ok(false) => {}
        Ok(true) => log.info(format!(
            "Deleted Northflank job '{}', which was written for this submission",
            w.job
        )),
        Err(e) => log.warn(format!("Could not delete Northflank job '{}': {e}", w.job)),
    }
}

/// Failures that say nothing about the run itself, with when to try again: either API's rate
/// limit, and Northflank refusing the worker's own token (rotated; the next invocation reads the
/// secret again). A run's own token being refused is its configuration's fault: not temporary.
fn temporary(error: &LaunchError) -> Option<(String, Duration)> {
    if let Some(e) = prefect_cause(error).filter(|e| e.is_throttled()) {
        let wait = match e {
            PrefectError::Throttled { until, .. } => (*until - Utc::now()).to_std().ok(),
            PrefectError::Status { retry_after, .. } => *retry_after,
            _ => None,
        };
        let wait = wait.unwrap_or(Duration::from_secs(60));
        let reason = format!(
            "Prefect's API rate limit is exhausted ({e}); the flow run will be submitted again after {}s",
            wait.as_secs()
        );
        return Some((reason, wait));
    }
    let LaunchError::Northflank {
        error,
        own_credentials,
        ..
    } = error
    else {
        return None;
    };
    if error.is_rate_limited() {
        let wait = error.retry_after().unwrap_or(Duration::from_secs(60));
        let reason = format!(
            "Northflank's API rate limit is exhausted; the flow run will be submitted again after {}s",
            wait.as_secs()
        );
        return Some((reason, wait));
    }
    if error.is_auth() && !own_credentials {
        let reason = format!(
            "Northflank refused the worker's API token ({}); the flow run will be submitted again after the worker reads its credentials again",
            error.user_message()
        );
        return Some((reason, Duration::from_secs(60)));
    }
    None
}

/// The Prefect error a launch failed with, also when it failed reading a block or variable for
/// the job's template (the templating crate passes the lookup's own error through).
fn prefect_cause(error: &LaunchError) -> Option<&PrefectError> {
    match error {
        LaunchError::Prefect(e) => Some(e),
        LaunchError::Render(crate::render::RenderError::Template(
            prefect_templating::TemplateError::Lookup { source, .. },
        )) => source.inner().downcast_ref(),
        _ => None,
    }
}

/// Proposes Crashed with `message`, and says in the run's logs what the server answered.
pub async fn crash(worker: &Worker, flow_run: &FlowRun, message: &str, log: &mut RunLog) {
    let id = flow_run.id;
    match worker
        .prefect
        .set_state(id, &Proposal::crashed(message))
        .await
    {
        Ok(r)
            if r.state
                .as_ref()
                .is_some_and(|s| s.kind == StateType::Crashed) =>
        {
            log.info(format!("Reported flow run '{id}' as crashed: {message}"));
        }
        Ok(r) => log.info(format!(
            "Flow run '{id}' was not marked Crashed: the server answered {:?} ({})",
            r.status,
            r.reason().unwrap_or("no reason given")
        )),
        Err(e) => log.error(format!("Could not report flow run '{id}' as crashed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::RenderError;
    use prefect_templating::{LookupError, TemplateError};
    use reqwest::Method;

    fn status(code: u16, retry_after: Option<Duration>) -> PrefectError {
        PrefectError::Status {
            method: Method::GET,
            path: "/api/flows/x".into(),
            status: code,
            detail: String::new(),
            retry_after,
        }
    }

    #[test]
    fn prefects_rate_limit_is_temporary_also_behind_a_template_lookup() {
        let until = Utc::now() + chrono::Duration::seconds(40);
        let paused = LaunchError::Prefect(PrefectError::Throttled {
            method: Method::GET,
            path: "/api/flows/x".into(),
            until,
        });
        let (reason, wait) = temporary(&paused).expect("temporary");
        assert!(
            reason.contains("Prefect rate-limited this worker until"),
            "{reason}"
        );
        assert!((38..=40).contains(&wait.as_secs()), "{wait:?}");

        let in_lookup = LaunchError::Render(RenderError::Template(TemplateError::Lookup {
            target: "variable 'registry'".into(),
            source: LookupError::new(status(429, Some(Duration::from_secs(7)))),
        }));
        let (_, wait) = temporary(&in_lookup).expect("a refused block read is temporary");
        assert_eq!(wait, Duration::from_secs(7));

        assert_eq!(temporary(&LaunchError::Prefect(status(500, None))), None);
        let other_lookup = LaunchError::Render(RenderError::Template(TemplateError::Lookup {
            target: "variable 'registry'".into(),
            source: LookupError::new(status(503, None)),
        }));
        assert_eq!(temporary(&other_lookup), None);
    }
}

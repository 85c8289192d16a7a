//! Claiming and submitting one flow run, in the Python worker's order
//! (prefect-worker-protocol.md §14.3): deployment, PENDING claim, flow, render, `Submitting`,
//! Northflank job and run, `infrastructure_pid`, except that the worker labels come last (they
//! are informational and must not delay the run). After a won claim, every failure
//! ends in a state (Crashed, or back to Scheduled when Northflank is only rate limiting), and a
//! job that was written for an abandoned run is deleted.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value, json};
use tracing::Instrument;

use crate::ids::InfrastructurePid;
use crate::northflank::launch::{Launch, launch};
use crate::northflank::{NorthflankClient, NorthflankError};
use crate::prefect::PrefectError;
use crate::prefect::events;
use crate::prefect::logs::RunLog;
use crate::prefect::models::{Deployment, FlowRun, State, StateType, WorkPool, WorkerFlowRun};
use crate::prefect::stale;
use crate::prefect::states::{Claim, Proposal, interpret_claim};
use crate::render::{RenderError, Rendered, RunFacts};
use crate::worker::Worker;

/// How a flow run's submission ended.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum SubmitOutcome {
    /// A Northflank job run exists for it (`adopted`: it already existed and was reused).
    Submitted { pid: String, adopted: bool },
    /// Another worker owns it, or the server substituted another state.
    NotClaimed { reason: String },
    /// Its deployment is gone; the run was cancelled as the Python worker does.
    Cancelled { reason: String },
    /// Claimed, then failed: proposed Crashed.
    Crashed { reason: String },
    /// Claimed, then Northflank's rate limit ran past the deadline: back to Scheduled.
    Rescheduled { reason: String },
    /// Failed before the claim; nothing changed and the next poll tries again.
    Failed { error: String },
}

/// What went wrong after the claim.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error(transparent)]
    Prefect(#[from] PrefectError),
    #[error("the flow run left PENDING during its submission (it is {state}); nothing was created")]
    LeftPending { state: String },
    #[error("{}", .error.user_message())]
    Northflank {
        error: NorthflankError,
        /// The job written for this run, to delete if the run is abandoned.
        written: Option<Box<WrittenJob>>,
        /// The run used its own credentials rather than the worker's.
        own_credentials: bool,
    },
}

/// A job written for a submission, with the client that can delete it.
#[derive(Debug)]
pub struct WrittenJob {
    pub client: NorthflankClient,
    pub project: String,
    pub job: String,
}

/// Submits one polled flow run. Every log line it causes carries the flow run's id, and, once
/// known, the Northflank job and run (a `flow_run` span).
pub async fn submit(worker: &Worker, pool: &WorkPool, entry: &WorkerFlowRun) -> SubmitOutcome {
    let run = &entry.flow_run;
    let span = tracing::info_span!("flow_run", flow_run_id = %run.id, job = tracing::field::Empty, run = tracing::field::Empty);
    async {
        let mut log = RunLog::new(run.id);
        log.info(format!(
            "Worker '{}' submitting flow run '{}'",
            worker.settings.worker_name, run.id
        ));
        let outcome = claim_and_launch(worker, pool, run, &mut log).await;
        match &outcome {
            SubmitOutcome::Submitted { pid, adopted } => {
                tracing::info!(decision = "submitted", pid = %pid, adopted, "flow run submitted")
            }
            SubmitOutcome::NotClaimed { reason } => {
                tracing::info!(decision = "not_claimed", reason = %reason, "flow run left alone")
            }
            SubmitOutcome::Cancelled { reason } => {
                tracing::info!(decision = "cancelled", reason = %reason, "flow run cancelled")
            }
            SubmitOutcome::Crashed { reason } => {
                tracing::warn!(decision = "crashed", reason = %reason, "flow run crashed")
            }
            SubmitOutcome::Rescheduled { reason } => {
                tracing::warn!(decision = "rescheduled", reason = %reason, "flow run rescheduled")
            }
            SubmitOutcome::Failed { error } => {
                tracing::warn!(decision = "failed", error = %error, "flow run not claimed: error")
            }
        }
        worker.keep_logs(&mut log);
        outcome
    }
    .instrument(span)
    .await
}

async fn claim_and_launch(
    worker: &Worker,
    pool: &WorkPool,
    run: &FlowRun,
    log: &mut RunLog,
) -> SubmitOutcome {
    let Some(deployment_id) = run.deployment_id else {
        return SubmitOutcome::NotClaimed {
            reason: "the flow run has no deployment".into(),
        };
    };
    let ttl = worker.settings.poll_interval;
    let deployment = match worker
        .lookups
        .deployment(&worker.prefect, deployment_id, ttl)
        .await
    {
        Ok(Some(d)) => d,
        Ok(None) => return cancel_orphan(worker, run, deployment_id, log).await,
        Err(e) => {
            return SubmitOutcome::Failed {
                error: e.to_string(),
            };
        }
    };
    let claimed_at = match claim(worker, run, log).await {
        Ok(at) => at,
        Err(outcome) => return outcome,
    };
    match launch_claimed(worker, pool, run, &deployment, claimed_at, false, log).await {
        Ok((pid, adopted)) => SubmitOutcome::Submitted {
            pid: pid.to_string(),
            adopted,
        },
        Err(e @ SubmitError::LeftPending { .. }) => {
            log.info(e.to_string());
            SubmitOutcome::NotClaimed {
                reason: e.to_string(),
            }
        }
        Err(e) => abandon(worker, run, e, log).await,
    }
}

async fn cancel_orphan(
    worker: &Worker,
    run: &FlowRun,
    deployment: uuid::Uuid,
    log: &mut RunLog,
) -> SubmitOutcome {
    let reason = format!("Deployment {deployment} no longer exists, cancelled run.");
    log.warn(reason.clone());
    match worker
        .prefect
        .set_state(
            run.id,
            &Proposal::cancelled_from(run.state.as_ref(), &reason, true),
        )
        .await
    {
        Ok(_) => SubmitOutcome::Cancelled { reason },
        Err(e) => SubmitOutcome::Failed {
            error: e.to_string(),
        },
    }
}

/// Proposes PENDING until the server answers something other than WAIT (bounded), returning
/// the claim's time on the server's clock.
async fn claim(
    worker: &Worker,
    run: &FlowRun,
    log: &mut RunLog,
) -> Result<DateTime<Utc>, SubmitOutcome> {
    for _ in 0..3 {
        let proposal = Proposal::pending();
        let result = worker
            .prefect
            .set_state(run.id, &proposal)
            .await
            .map_err(|e| SubmitOutcome::Failed {
                error: format!("Failed to update state of flow run '{}': {e}", run.id),
            })?;
        match interpret_claim(&result, proposal.transition_id, &run.id.to_string()) {
            Claim::Stale(ours) => {
                return Err(undo_stale_claim(worker, run, &ours, log).await);
            }
            Claim::Won => {
                return Ok(result
                    .state
                    .and_then(|s| s.timestamp)
                    .unwrap_or_else(Utc::now));
            }
            Claim::Lost(reason) => {
                log.info(reason.clone());
                return Err(SubmitOutcome::NotClaimed { reason });
            }
            Claim::Wait(delay) => tokio::time::sleep(delay).await,
        }
    }
    Err(SubmitOutcome::NotClaimed {
        reason: "the server kept asking to wait".into(),
    })
}

/// Puts back the state our PENDING replaced, so that a run that had already finished is
/// neither regressed nor executed twice.
async fn undo_stale_claim(
    worker: &Worker,
    run: &FlowRun,
    ours: &State,
    log: &mut RunLog,
) -> SubmitOutcome {
    let restored = stale::undo(&worker.prefect, run.id, ours);
    let reason = match restored.await {
        Ok(Some(previous)) => format!(
            "Flow run '{}' had already left Scheduled (it was {:?}) when this worker claimed it; that state was restored and the run was not submitted again",
            run.id, previous.kind
        ),
        Ok(None) => format!(
            "Flow run '{}' had already left Scheduled when this worker claimed it; it has moved on since (or another step restored it), so there was nothing to undo",
            run.id
        ),
        Err(e) => format!(
            "Flow run '{}' had already left Scheduled when this worker claimed it, and restoring its state failed: {e}",
            run.id
        ),
    };
    log.warn(reason.clone());
    SubmitOutcome::NotClaimed { reason }
}

/// Everything after the claim. `look_first` resumes a submission that may have started a run.
pub async fn launch_claimed(
    worker: &Worker,
    pool: &WorkPool,
    run: &FlowRun,
    deployment: &Deployment,
    claimed_at: DateTime<Utc>,
    look_first: bool,
    log: &mut RunLog,
) -> Result<(InfrastructurePid, bool), SubmitError> {
    let prefect = &worker.prefect;
    let flow = worker
        .lookups
        .flow(prefect, run.flow_id, worker.settings.poll_interval)
        .await?;
    let config = crate::render::resolve_configuration(
        &pool.base_job_template,
        &deployment.job_variables,
        &run.job_variables,
        prefect,
        &|name| std::env::var(name).ok(),
    )
    .await?;
    let facts = RunFacts {
        flow_run_id: run.id,
        flow_run_name: run.name.clone(),
        flow_id: flow.id,
        flow_name: flow.name.clone(),
        deployment_id: Some(deployment.id),
        deployment_name: Some(deployment.name.clone()),
        worker_name: worker.settings.worker_name.clone(),
        api_url: worker.settings.prefect_api_url.clone(),
        auth: worker.credentials.prefect.clone(),
        marker: worker.installation(Some(pool.id)).marker(),
    };
    let rendered = crate::render::to_northflank(&config, &facts)?;
    for warning in &rendered.warnings {
        log.warn(warning.clone());
    }
    // The 3.9 sub-state; older servers abort it, which changes nothing for us. An answer that
    // shows the run has left PENDING (cancelled meanwhile) ends the submission before any job.
    let submitting = prefect.set_state(run.id, &Proposal::submitting()).await;
    match submitting {
        Ok(r)
            if r.state
                .as_ref()
                .is_some_and(|s| s.kind != StateType::Pending) =>
        {
            let state = r
                .state
                .map(|s| format!("{:?}", s.kind).to_uppercase())
                .unwrap_or_default();
            return Err(SubmitError::LeftPending { state });
        }
        Ok(_) => {}
        Err(e) => tracing::debug!(error = %e, "could not propose Submitting"),
    }
    worker
        .memory
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .projects
        .insert(rendered.project_id.clone());
    let nf = northflank_for(worker, &rendered)?;
    let launched = launch(
        &nf,
        &Launch {
            project: &rendered.project_id,
            job_name: rendered.job_name,
            create_job: &rendered.create_job,
            start_run: &rendered.start_run,
            claimed_at,
            look_first,
        },
    )
    .await
    .map_err(|e| SubmitError::Northflank {
        own_credentials: rendered.credentials.is_some(),
        written: e.job_written.then(|| {
            Box::new(WrittenJob {
                client: nf.clone(),
                project: rendered.project_id.clone(),
                job: rendered.job_name.to_string(),
            })
        }),
        error: e.source,
    })?;
    tracing::Span::current()
        .record("job", launched.job.as_str())
        .record("run", launched.run.as_str());
    let pid = InfrastructurePid {
        project: rendered.project_id.clone(),
        job: launched.job.clone(),
        run: launched.run.clone(),
        keep_job: !rendered.cleanup_job,
        own_credentials: rendered.credentials.is_some(),
    };
    if let Err(e) = prefect
        .set_infrastructure_pid(run.id, &pid.to_string())
        .await
    {
        log.warn(format!(
            "An error occurred while setting the `infrastructure_pid` on flow run '{}': {e}. The webhook will rely on the job name.",
            run.id
        ));
    }
    // Labels are informational, so a failure is only logged, and they come after the
    // Northflank run so that they never delay it: Prefect updates labels by reading then
    // writing the flow run, which a busy SQLite backend refuses (503) whenever another write
    // commits in between. A short retry policy keeps a busy server from being asked again
    // and again.
    let few_retries = crate::retry::RetryPolicy {
        max_retries: 3,
        first_delay: std::time::Duration::from_millis(300),
        jitter: 0.5,
    };
    let labelled = prefect
        .with_retries(few_retries)
        .update_labels(run.id, &labels(worker, pool))
        .await;
    if let Err(e) = labelled {
        tracing::warn!(error = %e, "could not set the worker labels on the flow run");
    }
    log.info(format!(
        "Flow run '{}' submitted to infrastructure",
        run.name
    ));
    log.info(format!(
        "Northflank job '{}' in project '{}' {} run '{}': {}",
        launched.job,
        rendered.project_id,
        if launched.adopted {
            "resumed its existing"
        } else {
            "started"
        },
        launched.run,
        worker
            .settings
            .job_link(&rendered.project_id, launched.job.as_str())
    ));
    let mut tags = deployment.tags.clone();
    tags.extend(flow.tags.iter().cloned());
    tags.extend(run.tags.iter().cloned());
    let related = events::Related {
        flow_run: (run.id, run.name.clone()),
        flow: (flow.id, Some(flow.name.clone())),
        deployment: Some((deployment.id, Some(deployment.name.clone()))),
        tags,
        work_pool: (Some(pool.id), pool.name.clone()),
    };
    worker.keep_event(events::submitted(
        &worker.settings.worker_name,
        &related,
        &launched.run,
    ));
    Ok((pid, launched.adopted))
}

fn labels(worker: &Worker, pool: &WorkPool) -> Map<String, Value> {
    let mut labels = Map::new();
    labels.insert(
        "prefect.worker.name".into(),
        json!(worker.settings.worker_name),
    );
    labels.insert("prefect.worker.type".into(), json!(crate::WORKER_TYPE));
    labels.insert("prefect.work-pool.name".into(), json!(pool.name));
    labels.insert("prefect.work-pool.id".into(), json!(pool.id));
    labels
}

fn northflank_for(worker: &Worker, rendered: &Rendered) -> Result<NorthflankClient, SubmitError> {
    match &rendered.credentials {
        None => Ok(worker.northflank.clone()),
        Some(c) => worker
            .northflank
            .with_token(c.base_url.as_deref(), c.api_token.clone())
            .map_err(|error| SubmitError::Northflank {
                error,
                written: None,
                own_credentials: true,
            }),
    }
}

/// Ends a claimed run whose submission failed, and removes what was written for it.
pub(crate) async fn abandon(
    worker: &Worker,
    run: &FlowRun,
    error: SubmitError,
    log: &mut RunLog,
) -> SubmitOutcome {
    if let SubmitError::Northflank {
        written: Some(w), ..
    } = &error
    {
        match w.client.delete_job(&w.project, &w.job).await {
            Ok(false) => {}
            Ok(true) => log.info(format!(
                "Deleted Northflank job '{}', which was written for this submission",
                w.job
            )),
            Err(e) => log.warn(format!("Could not delete Northflank job '{}': {e}", w.job)),
        }
    }
    if let Some((reason, wait)) = temporary(&error) {
        log.warn(reason.clone());
        let at =
            Utc::now() + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::seconds(60));
        if worker
            .prefect
            .set_state(run.id, &Proposal::awaiting_retry(at, &reason))
            .await
            .is_ok()
        {
            return SubmitOutcome::Rescheduled { reason };
        }
    }
    let message = format!("Failed to submit flow run to infrastructure: {error}");
    log.error(format!(
        "Failed to submit flow run '{}' to infrastructure.",
        run.name
    ));
    crash(worker, run, &message, log).await;
    SubmitOutcome::Crashed { reason: message }
}

/// Failures that say nothing about the run itself, with when to try again: Northflank's rate
/// limit, and Northflank refusing the worker's own token (rotated; the next invocation reads the
/// secret again). A run's own token being refused is its configuration's fault: not temporary.
fn temporary(error: &SubmitError) -> Option<(String, std::time::Duration)> {
    let SubmitError::Northflank {
        error,
        own_credentials,
        ..
    } = error
    else {
        return None;
    };
    if error.is_rate_limited() {
        let wait = crate::retry::Transient::retry_after(error)
            .unwrap_or(std::time::Duration::from_secs(60));
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
        return Some((reason, std::time::Duration::from_secs(60)));
    }
    None
}

pub(crate) async fn crash(worker: &Worker, run: &FlowRun, message: &str, log: &mut RunLog) {
    match worker
        .prefect
        .set_state(run.id, &Proposal::crashed(message))
        .await
    {
        Ok(r)
            if r.state
                .as_ref()
                .is_some_and(|s| s.kind == crate::prefect::models::StateType::Crashed) =>
        {
            log.info(format!(
                "Reported flow run '{}' as crashed: {message}",
                run.id
            ));
        }
        Ok(r) => log.info(format!(
            "Flow run '{}' was not marked Crashed: the server answered {:?} ({})",
            run.id,
            r.status,
            r.reason().unwrap_or("no reason given")
        )),
        Err(e) => log.error(format!(
            "Could not report flow run '{}' as crashed: {e}",
            run.id
        )),
    }
}

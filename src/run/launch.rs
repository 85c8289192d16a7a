//! Everything after the claim, in the Python worker's order (prefect-worker-protocol.md §14.3):
//! flow, render, `Submitting`, Northflank job and run, `infrastructure_pid`, except that the
//! worker labels come last (they are informational and must not delay the run).

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::config;
use crate::ids::InfrastructurePid;
use crate::northflank::launch::{self as job_run, JobAndRun, Started};
use crate::northflank::{NorthflankClient, NorthflankError};
use crate::prefect::PrefectError;
use crate::prefect::events;
use crate::prefect::logs::RunLog;
use crate::prefect::models::{Deployment, Flow, FlowRun, StateType, WorkPool};
use crate::prefect::states::Proposal;
use crate::render::{self, RenderError, RenderInput, Rendered, RunFacts};
use crate::retry::RetryPolicy;
use crate::worker::{KnownRun, Worker};

/// A fresh submission, or the resumption of one whose submitter died.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Launch {
    Fresh,
    /// An earlier attempt may already have started a run: look for it before starting one.
    Resume,
}

/// The launched flow run's infrastructure, and whether its Northflank run already existed.
#[derive(Clone, Debug, PartialEq)]
pub struct Launched {
    pub pid: InfrastructurePid,
    pub adopted: bool,
}

/// What went wrong after the claim.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
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

/// How long a flow read is reused. A flow's name and tags (all a launch reads of it) change
/// rarely, unlike a deployment's job variables, which are read again every poll interval.
const FLOW_TTL: std::time::Duration = std::time::Duration::from_secs(600);

/// A flow run this worker holds the claim of, with what its launch reads.
#[derive(Clone, Copy, Debug)]
pub struct Claimed<'a> {
    pub pool: &'a WorkPool,
    pub flow_run: &'a FlowRun,
    pub deployment: &'a Deployment,
    /// When the claim was made, on the server's clock: job runs started since are its own.
    pub at: DateTime<Utc>,
}

/// Launches a claimed flow run: its Northflank job and exactly one run of it.
pub async fn launch(
    worker: &Worker,
    claimed: &Claimed<'_>,
    how: Launch,
    log: &mut RunLog,
) -> Result<Launched, LaunchError> {
    let &Claimed {
        pool,
        flow_run,
        deployment,
        at: claimed_at,
    } = claimed;
    let flow = worker
        .lookups()
        .flow(&worker.prefect, flow_run.flow_id, FLOW_TTL)
        .await?;
    let rendered = render_job(worker, pool, flow_run, deployment, &flow).await?;
    for warning in &rendered.warnings {
        log.warn(warning.clone());
    }
    propose_submitting(worker, flow_run).await?;
    label(worker, pool, flow_run).await;
    worker.memory().note_project(&rendered.project_id);
    let related = related(pool, flow_run, deployment, &flow);
    // Remembered before the run starts: its start notification may arrive before the start
    // request has been answered.
    let mut pid = InfrastructurePid {
        project: rendered.project_id.clone(),
        job: rendered.job_name.to_string(),
        run: String::new(),
        keep_job: !rendered.cleanup_job,
        own_credentials: rendered.credentials.is_some(),
    };
    worker.memory().note_launched(
        flow_run.id,
        KnownRun {
            pid: pid.clone(),
            related: related.clone(),
            start_noted: false,
        },
    );
    let started = start(worker, &rendered, claimed_at, how)
        .await
        .inspect_err(|_| worker.memory().forget_launched(flow_run.id))?;
    pid.job = started.job.clone();
    pid.run = started.run.clone();
    worker.memory().note_run(flow_run.id, &pid);
    tracing::Span::current()
        .record("job", started.job.as_str())
        .record("run", started.run.as_str());
    worker.keep_event(events::submitted(
        &worker.settings.prefect.worker_name,
        &related,
        &started.run,
    ));
    record(worker, flow_run, &rendered, &started, &pid, log).await;
    Ok(Launched {
        pid,
        adopted: started.adopted,
    })
}

/// The Northflank request bodies for the flow run.
async fn render_job(
    worker: &Worker,
    pool: &WorkPool,
    flow_run: &FlowRun,
    deployment: &Deployment,
    flow: &Flow,
) -> Result<Rendered, LaunchError> {
    let facts = RunFacts {
        flow_run_id: flow_run.id,
        flow_run_name: flow_run.name.clone(),
        flow_id: flow.id,
        flow_name: flow.name.clone(),
        deployment_id: Some(deployment.id),
        deployment_name: Some(deployment.name.clone()),
        worker_name: worker.settings.prefect.worker_name.clone(),
        api_url: worker.settings.prefect.api_url.clone(),
        auth: worker.credentials.prefect.clone(),
        settings_env: worker.settings.prefect.flow_run_env.clone(),
        ctx: RunFacts::ctx_of(flow_run.to_json(), flow.to_json()),
        marker: worker.installation(Some(pool.id)).marker(),
    };
    let input = RenderInput {
        template: &pool.base_job_template,
        deployment_variables: &deployment.job_variables,
        flow_run_variables: &flow_run.job_variables,
        facts: &facts,
    };
    Ok(render::render(&input, &worker.prefect, &config::process_env).await?)
}

/// The 3.9 sub-state; older servers abort it, which changes nothing for us. An answer that
/// shows the run has left PENDING (cancelled meanwhile) ends the submission before any job.
async fn propose_submitting(worker: &Worker, flow_run: &FlowRun) -> Result<(), LaunchError> {
    match worker
        .prefect
        .set_state(flow_run.id, &Proposal::submitting())
        .await
    {
        Ok(r) => match r.state.filter(|s| s.kind != StateType::Pending) {
            Some(moved) => Err(LaunchError::LeftPending {
                state: format!("{:?}", moved.kind).to_uppercase(),
            }),
            None => Ok(()),
        },
        Err(e) => {
            tracing::debug!(error = %e, "could not propose Submitting");
            Ok(())
        }
    }
}

/// The job and its one run, with the client the run's credentials choose.
async fn start(
    worker: &Worker,
    rendered: &Rendered,
    claimed_at: DateTime<Utc>,
    how: Launch,
) -> Result<Started, LaunchError> {
    let own_credentials = rendered.credentials.is_some();
    let nf = config::northflank_client(worker, rendered.credentials.as_ref()).map_err(|error| {
        LaunchError::Northflank {
            error,
            written: None,
            own_credentials,
        }
    })?;
    let spec = JobAndRun {
        project: &rendered.project_id,
        job_name: rendered.job_name,
        create_job: &rendered.create_job,
        start_run: &rendered.start_run,
        claimed_at,
        look_first: how == Launch::Resume,
    };
    job_run::launch(&nf, &spec)
        .await
        .map_err(|e| LaunchError::Northflank {
            own_credentials,
            written: e.job_written.then(|| {
                Box::new(WrittenJob {
                    client: nf.clone(),
                    project: rendered.project_id.clone(),
                    job: rendered.job_name.to_string(),
                })
            }),
            error: e.source,
        })
}

/// Writes what Prefect keeps about the launch: the `infrastructure_pid` and the flow run's log
/// lines.
async fn record(
    worker: &Worker,
    flow_run: &FlowRun,
    rendered: &Rendered,
    started: &Started,
    pid: &InfrastructurePid,
    log: &mut RunLog,
) {
    let prefect = &worker.prefect;
    if let Err(e) = prefect
        .set_infrastructure_pid(flow_run.id, &pid.to_string())
        .await
    {
        log.warn(format!(
            "An error occurred while setting the `infrastructure_pid` on flow run '{}': {e}. The webhook will rely on the job name.",
            flow_run.id
        ));
    }
    log.info(format!(
        "Flow run '{}' submitted to infrastructure",
        flow_run.name
    ));
    log.info(format!(
        "Northflank job '{}' in project '{}' {} run '{}': {}",
        started.job,
        rendered.project_id,
        if started.adopted {
            "resumed its existing"
        } else {
            "started"
        },
        started.run,
        worker
            .settings
            .northflank
            .job_link(&rendered.project_id, started.job.as_str())
    ));
}

/// The worker labels, written once before the job exists, as the Python worker writes them
/// (before its container runs, so no state write of the flow's own competes with it). Prefect
/// updates labels by reading then writing the flow run, which a busy SQLite server refuses
/// (503) whenever another write lands in between: a refused write is not retried at once, it
/// waits for the next batch of logs (`Outbox`). Labels are informational; nothing waits for them.
async fn label(worker: &Worker, pool: &WorkPool, flow_run: &FlowRun) {
    let labels = labels(worker, pool);
    let once = worker.prefect.with_retries(RetryPolicy::none());
    if let Err(e) = once.update_labels(flow_run.id, &labels).await {
        tracing::debug!(error = %e, "labels refused; sent again with the next batch");
        worker.keep_labels(flow_run.id, labels);
    }
}

fn labels(worker: &Worker, pool: &WorkPool) -> Map<String, Value> {
    let mut labels = Map::new();
    labels.insert(
        "prefect.worker.name".into(),
        json!(worker.settings.prefect.worker_name),
    );
    labels.insert("prefect.worker.type".into(), json!(crate::WORKER_TYPE));
    labels.insert("prefect.work-pool.name".into(), json!(pool.name));
    labels.insert("prefect.work-pool.id".into(), json!(pool.id));
    labels
}

/// What the worker's events about the flow run relate to, as the Python worker names them.
fn related(
    pool: &WorkPool,
    flow_run: &FlowRun,
    deployment: &Deployment,
    flow: &Flow,
) -> events::Related {
    let mut tags = deployment.tags.clone();
    tags.extend(flow.tags.iter().cloned());
    tags.extend(flow_run.tags.iter().cloned());
    events::Related {
        flow_run: (flow_run.id, flow_run.name.clone()),
        flow: (flow.id, Some(flow.name.clone())),
        deployment: Some((deployment.id, Some(deployment.name.clone()))),
        tags,
        work_pool: (Some(pool.id), pool.name.clone()),
    }
}

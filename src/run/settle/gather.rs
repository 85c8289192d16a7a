//! What settling needs to know, read once: where the job is, which Northflank client may read
//! it, the job run as one GET sees it, and the flow run's state once a stale claim on it is
//! undone.

use super::decide::{JobRunView, Observation};
use super::{Hint, SettleError};
use crate::ids::{InfrastructurePid, JobName};
use crate::northflank::NorthflankClient;
use crate::northflank::models::{JobRun, RunStatus};
use crate::prefect::models::{FlowRun, State};
use crate::prefect::stale;
use crate::render;
use crate::run::config;
use crate::worker::{KnownRun, Worker};

pub(super) struct Gathered {
    pub project: String,
    pub job: String,
    pub nf: NorthflankClient,
    /// The Northflank job run's id, when one is known.
    pub job_run_id: Option<String>,
    /// The job run as read; `None`: the job or the run is gone.
    pub job_run: Option<JobRun>,
    /// The flow run's state, after any stale claim on it was undone.
    pub state: Option<State>,
    /// The log line for an undone stale claim.
    pub undone: Option<String>,
    pub cleanup_job: bool,
    /// Whether the flow run records its infrastructure.
    pub recorded: bool,
}

impl Gathered {
    pub fn observation<'a>(&'a self, event: Option<&'a str>) -> Observation<'a> {
        Observation {
            state: self.state.as_ref().map(|s| s.kind),
            job_run: self
                .job_run
                .as_ref()
                .map_or(JobRunView::Gone, JobRunView::Found),
            project: &self.project,
            job: &self.job,
            cleanup_job: self.cleanup_job,
            recorded: self.recorded,
            event,
        }
    }
}

/// `None`: no Northflank project is known for the flow run yet (no pid, no hint).
pub(super) async fn gather(
    worker: &Worker,
    flow_run: &FlowRun,
    hint: &Hint,
) -> Result<Option<Gathered>, SettleError> {
    let job = JobName::for_flow_run(flow_run.id).to_string();
    let pid = flow_run
        .infrastructure_pid
        .as_deref()
        .and_then(|p| p.parse::<InfrastructurePid>().ok());
    let Some(project) = pid
        .as_ref()
        .map(|p| p.project.clone())
        .or_else(|| hint.project.clone())
    else {
        return Ok(None);
    };
    let nf = client_for(worker, flow_run).await?;
    let job_run_id = match pid
        .as_ref()
        .map(|p| p.run.clone())
        .or_else(|| hint.job_run.clone())
    {
        Some(id) => Some(id),
        None => latest_job_run(&nf, &project, &job).await?,
    };
    if let Some(id) = &job_run_id {
        tracing::Span::current().record("run", id.as_str());
    }
    let job_run = match &job_run_id {
        Some(id) => nf.get_run(&project, &job, id).await?,
        None => None,
    };
    let (state, undone) = current_state(worker, flow_run).await?;
    Ok(Some(Gathered {
        project,
        job,
        nf,
        job_run_id,
        job_run,
        state,
        undone,
        cleanup_job: pid.as_ref().is_none_or(|p| !p.keep_job),
        recorded: pid.is_some(),
    }))
}

/// What settling a remembered run needs, when its job run concluded successfully: the flow
/// run's state is not read (`Unknown`), so no transition is decided from it.
pub(super) async fn known(
    worker: &Worker,
    known: &KnownRun,
    hint: &Hint,
) -> Result<Option<Gathered>, SettleError> {
    let pid = &known.pid;
    if pid.own_credentials {
        return Ok(None);
    }
    let nf = worker.northflank.clone();
    // The pid's run is empty while the start request is being answered.
    let Some(job_run_id) = hint
        .job_run
        .clone()
        .or_else(|| Some(pid.run.clone()).filter(|r| !r.is_empty()))
    else {
        return Ok(None);
    };
    tracing::Span::current().record("run", job_run_id.as_str());
    let Some(job_run) = nf.get_run(&pid.project, &pid.job, &job_run_id).await? else {
        return Ok(None);
    };
    if !(job_run.concluded && job_run.status == RunStatus::Success) {
        return Ok(None);
    }
    Ok(Some(Gathered {
        project: pid.project.clone(),
        job: pid.job.clone(),
        nf,
        job_run_id: Some(job_run_id),
        job_run: Some(job_run),
        state: Some(State::unread()),
        undone: None,
        cleanup_job: !pid.keep_job,
        recorded: true,
    }))
}

async fn latest_job_run(
    nf: &NorthflankClient,
    project: &str,
    job: &str,
) -> Result<Option<String>, SettleError> {
    Ok(nf
        .list_runs(project, job)
        .await?
        .into_iter()
        .max_by_key(|r| r.started_at)
        .map(|r| r.id))
}

/// The flow run's state to decide from: a claim that landed on a finished run is undone first,
/// and the state it replaced is the one that counts.
async fn current_state(
    worker: &Worker,
    flow_run: &FlowRun,
) -> Result<(Option<State>, Option<String>), SettleError> {
    let id = flow_run.id;
    let Some(claim) = flow_run.state.clone().filter(stale::is_stale_claim) else {
        return Ok((flow_run.state.clone(), None));
    };
    Ok(match stale::undo(&worker.prefect, id, &claim).await? {
        Some(previous) => {
            let note = stale::undone_message(id, &previous);
            (Some(previous), Some(note))
        }
        None => {
            let now = worker.prefect.read_flow_run(id).await?;
            (now.and_then(|r| r.state), None)
        }
    })
}

/// The Northflank client for a flow run: the worker's own, unless the run's pid says its job
/// variables named their own credentials, which are then found again by resolving its job
/// configuration exactly as dispatch resolved it.
pub async fn client_for(
    worker: &Worker,
    flow_run: &FlowRun,
) -> Result<NorthflankClient, SettleError> {
    let own = flow_run
        .infrastructure_pid
        .as_deref()
        .and_then(|p| p.parse::<InfrastructurePid>().ok())
        .is_some_and(|p| p.own_credentials);
    if !own {
        return Ok(worker.northflank.clone());
    }
    let fail = |e: &dyn std::fmt::Display| SettleError::Credentials(e.to_string());
    let prefect = &worker.prefect;
    let pool_name = flow_run
        .work_pool_name
        .as_deref()
        .unwrap_or(&worker.settings.prefect.work_pool);
    let pool = prefect
        .read_work_pool(pool_name)
        .await?
        .ok_or_else(|| fail(&format!("work pool '{pool_name}' is gone")))?;
    let deployment = match flow_run.deployment_id {
        Some(id) => prefect.read_deployment(id).await?,
        None => None,
    };
    let deployment_variables = deployment.map(|d| d.job_variables).unwrap_or_default();
    let configuration = config::resolve(worker, &pool, &deployment_variables, flow_run)
        .await
        .map_err(|e| fail(&e))?;
    let credentials = render::job::run_credentials(&configuration).map_err(|e| fail(&e))?;
    Ok(config::northflank_client(worker, credentials.as_ref())?)
}

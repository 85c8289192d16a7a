//! Settling one flow run against its Northflank run: gather the facts (the flow run from Prefect,
//! the run from one Northflank GET), decide, then act: the Prefect state first, the job cleanup
//! second, so a failed cleanup never leaves a wrong state behind.

use serde::Serialize;
use tracing::Instrument;

use super::Outcome;
use super::decide::{Facts, RunView, Transition, decide};
use crate::ids::{FlowRunId, InfrastructurePid, JobName};
use crate::northflank::NorthflankClient;
use crate::northflank::NorthflankError;
use crate::ownership::{self, JobSeen, NotOurs};
use crate::prefect::PrefectError;
use crate::prefect::events;
use crate::prefect::logs::RunLog;
use crate::prefect::models::FlowRun;
use crate::prefect::models::SetStateStatus;
use crate::prefect::stale;
use crate::prefect::states::Proposal;
use crate::worker::Worker;

/// The notification of a run's start.
const START_EVENT: &str = "job-run:start";

/// What a notification (or reconciliation) knows besides the flow run.
#[derive(Clone, Debug, Default)]
pub struct Hint {
    pub project: Option<String>,
    pub run: Option<String>,
    pub event: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Settled {
    pub flow_run_id: FlowRunId,
    /// `none`, `crashed` or `cancelled`.
    pub action: &'static str,
    pub job_deleted: bool,
    pub detail: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SettleError {
    #[error(transparent)]
    Prefect(#[from] PrefectError),
    #[error(transparent)]
    Northflank(#[from] NorthflankError),
    #[error("could not find the run's own Northflank credentials again: {0}")]
    Credentials(String),
}

/// Settles the flow run a notification names, if it is ours; every log line it causes carries
/// the flow run, job and run.
pub async fn settle(worker: &Worker, id: FlowRunId, hint: &Hint) -> Result<Outcome, SettleError> {
    let job = JobName::for_flow_run(id).to_string();
    let span =
        tracing::info_span!("flow_run", flow_run_id = %id, job = %job, run = tracing::field::Empty);
    async {
        let flow_run = worker.prefect.read_flow_run(id).await?;
        let seen = JobSeen {
            project: hint.project.as_deref(),
            job: &job,
            marker: None,
        };
        let us = worker.installation(None);
        let flow_run = match (
            ownership::judge(&us, flow_run.as_ref(), Some(seen)),
            flow_run,
        ) {
            (Ok(()), Some(run)) => run,
            // A notification carries no marker, so a job whose flow run is gone is never
            // provably ours here; the sweep, which reads markers, removes it.
            (Ok(()), None) => return Ok(not_ours(hint, NotOurs::UnknownFlowRun)),
            (Err(why), _) => return Ok(not_ours(hint, why)),
        };
        if hint.event.as_deref() == Some(START_EVENT) {
            return Ok(Outcome::Settled(
                started(worker, &flow_run, &job, hint.run.as_deref()).await,
            ));
        }
        settle_read(worker, flow_run, hint)
            .await
            .map(Outcome::Settled)
    }
    .instrument(span)
    .await
}

fn not_ours(hint: &Hint, why: NotOurs) -> Outcome {
    tracing::debug!(reason = %why, event = ?hint.event, "not ours: left alone");
    Outcome::NotOurs(why)
}

/// [`settle`] for a flow run of ours already read.
pub async fn settle_read(
    worker: &Worker,
    flow_run: FlowRun,
    hint: &Hint,
) -> Result<Settled, SettleError> {
    let id = flow_run.id;
    let job = JobName::for_flow_run(id).to_string();
    let pid = flow_run
        .infrastructure_pid
        .as_deref()
        .and_then(|p| p.parse::<InfrastructurePid>().ok());
    let cleanup_job = pid.as_ref().is_none_or(|p| !p.keep_job);
    let recorded = pid.is_some();
    let settled = |action, job_deleted, detail: String| Settled {
        flow_run_id: id,
        action,
        job_deleted,
        detail,
    };
    let Some(project) = pid
        .as_ref()
        .map(|p| p.project.clone())
        .or_else(|| hint.project.clone())
    else {
        return Ok(settled(
            "none",
            false,
            "no Northflank project is known for this flow run yet".into(),
        ));
    };
    let nf = &client_for(worker, &flow_run).await?;
    let run_id = match pid.map(|p| p.run).or_else(|| hint.run.clone()) {
        Some(run) => Some(run),
        None => nf
            .list_runs(&project, &job)
            .await?
            .into_iter()
            .max_by_key(|r| r.started_at)
            .map(|r| r.id),
    };
    if let Some(run) = &run_id {
        tracing::Span::current().record("run", run.as_str());
    }
    let run = match &run_id {
        Some(run) => nf.get_run(&project, &job, run).await?,
        None => None,
    };
    let mut state = flow_run.state.clone();
    // A claim that landed on a finished run is undone before anything is decided from it.
    let mut undone = None;
    if let Some(claim) = state.clone().filter(stale::is_stale_claim) {
        state = match stale::undo(&worker.prefect, id, &claim).await? {
            Some(previous) => {
                undone = Some(stale::undone_message(id, &previous));
                Some(previous)
            }
            None => worker
                .prefect
                .read_flow_run(id)
                .await?
                .and_then(|r| r.state),
        };
    }
    let decision = decide(&Facts {
        state: state.as_ref().map(|s| s.kind),
        run: run.as_ref().map_or(RunView::Gone, RunView::Found),
        project: &project,
        job: &job,
        cleanup_job,
        recorded,
        event: hint.event.as_deref(),
    });

    let mut log = RunLog::new(id);
    if let Some(note) = undone {
        log.warn(note);
    }
    if let Some(note) = &decision.note {
        log.info(note.clone());
    }
    let mut action = "none";
    {
        let (proposal, name) = match &decision.transition {
            Some(Transition::Crash(message)) => (Some(Proposal::crashed(message)), "crashed"),
            Some(Transition::Cancel(message)) => (
                Some(Proposal::cancelled_from(state.as_ref(), message, false)),
                "cancelled",
            ),
            None => (None, "none"),
        };
        if let Some(proposal) = proposal {
            let result = worker.prefect.set_state(id, &proposal).await?;
            // ABORT (already terminal) and REJECT (cancelling) mean the server kept its state.
            if result.status == SetStateStatus::Accept {
                action = name;
                let message = proposal.body["state"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                log.info(format!("Reported flow run '{id}' as {name}: {message}"));
            }
        }
    }
    if let (Some(run), true) = (&run_id, decision.forward_logs) {
        forward_logs(worker, nf, (&project, &job, run), &mut log).await;
    }
    if let (Some(run), Some(code)) = (&run_id, decision.status_code) {
        let pid = (flow_run.infrastructure_pid.clone())
            .unwrap_or_else(|| format!("{project}:{job}:{run}"));
        worker.keep_event(events::executed(
            &worker.settings.worker_name,
            &events::Related::of_flow_run(&flow_run),
            run,
            &pid,
            code,
        ));
    }
    let job_deleted = decision.delete_job && nf.delete_job(&project, &job).await?;
    if job_deleted {
        log.info(format!(
            "Deleted Northflank job '{job}' in project '{project}'"
        ));
    }
    worker.keep_logs(&mut log);
    worker.send_pending().await;
    tracing::info!(decision = action, job_deleted, "settled");
    Ok(settled(
        action,
        job_deleted,
        decision.note.unwrap_or_default(),
    ))
}

/// A start notification only adds a line to the logs of a flow run that has not finished. The
/// Northflank run is not read: nothing would be decided from a running run, and the run's end
/// brings its own notification (or reconciliation), read then. This keeps every flow run at four
/// Northflank requests: create the job, start the run, read the concluded run, delete the job.
async fn started(worker: &Worker, flow_run: &FlowRun, job: &str, run: Option<&str>) -> Settled {
    let id = flow_run.id;
    if flow_run.state_type().is_none_or(|k| k.is_terminal()) {
        return Settled {
            flow_run_id: id,
            action: "none",
            job_deleted: false,
            detail: "the flow run has already finished".into(),
        };
    }
    let note = match run {
        Some(run) => format!("Northflank run '{run}' of job '{job}' started"),
        None => format!("Northflank job '{job}' started a run"),
    };
    let mut log = RunLog::new(id);
    log.info(note.clone());
    worker.keep_logs(&mut log);
    worker.send_pending().await;
    tracing::info!(decision = "none", "run started");
    Settled {
        flow_run_id: id,
        action: "none",
        job_deleted: false,
        detail: note,
    }
}

/// Copies a failed container's last log lines to the flow run's logs, where a Prefect user
/// looks first; its job (and so its logs) may be deleted right after. Best effort: the state is
/// already set.
async fn forward_logs(
    worker: &Worker,
    nf: &NorthflankClient,
    (project, job, run): (&str, &str, &str),
    log: &mut RunLog,
) {
    let lines = worker.settings.forward_log_lines;
    if lines == 0 {
        return;
    }
    match nf.run_logs(project, job, run, lines).await {
        Ok(lines) if lines.is_empty() => {
            log.info(format!(
                "Northflank run '{run}' of job '{job}' logged nothing"
            ));
        }
        Ok(lines) => log.info(format!(
            "Last {} log lines of Northflank run '{run}' of job '{job}':\n{}",
            lines.len(),
            lines.join("\n")
        )),
        Err(e) => log.warn(format!(
            "Could not read the logs of Northflank run '{run}' of job '{job}': {e}"
        )),
    }
}

/// The Northflank client for a flow run: the worker's own, unless the run's pid says its job
/// variables named their own credentials.
pub async fn client_for(worker: &Worker, run: &FlowRun) -> Result<NorthflankClient, SettleError> {
    let own = run
        .infrastructure_pid
        .as_deref()
        .and_then(|p| p.parse::<InfrastructurePid>().ok())
        .is_some_and(|p| p.own_credentials);
    if own {
        run_client(worker, run).await
    } else {
        Ok(worker.northflank.clone())
    }
}

/// The Northflank client of a run whose job variables named their own credentials: its job
/// configuration is resolved again, exactly as dispatch resolved it.
async fn run_client(worker: &Worker, run: &FlowRun) -> Result<NorthflankClient, SettleError> {
    let fail = |e: &dyn std::fmt::Display| SettleError::Credentials(e.to_string());
    let prefect = &worker.prefect;
    let pool_name = run
        .work_pool_name
        .as_deref()
        .unwrap_or(&worker.settings.work_pool);
    let pool = prefect
        .read_work_pool(pool_name)
        .await?
        .ok_or_else(|| fail(&format!("work pool '{pool_name}' is gone")))?;
    let deployment = match run.deployment_id {
        Some(id) => prefect.read_deployment(id).await?,
        None => None,
    };
    let deployment_variables = deployment.map(|d| d.job_variables).unwrap_or_default();
    let config = crate::render::resolve_configuration(
        &pool.base_job_template,
        &deployment_variables,
        &run.job_variables,
        prefect,
        &|name| std::env::var(name).ok(),
    )
    .await
    .map_err(|e| fail(&e))?;
    match crate::render::job::run_credentials(&config).map_err(|e| fail(&e))? {
        Some(c) => Ok(worker
            .northflank
            .with_token(c.base_url.as_deref(), c.api_token)?),
        None => Ok(worker.northflank.clone()),
    }
}

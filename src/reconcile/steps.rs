//! The reconciliation steps, one per [`Plan`]: each acts on one active flow run of ours.

use std::time::Duration;

use chrono::Utc;

use super::plan::{CancelAction, Plan, cancel};
use super::{Planned, Report};
use crate::ids::InfrastructurePid;
use crate::northflank::NorthflankClient;
use crate::prefect::logs::RunLog;
use crate::prefect::models::{FlowRun, StateType, WorkPool};
use crate::prefect::stale;
use crate::prefect::states::Proposal;
use crate::run::settle::{self, JobRunView, client_for};
use crate::run::{self, Abandoned, Claimed, Hint, Launch};
use crate::worker::Worker;

pub(super) type StepError = Box<dyn std::error::Error + Send + Sync>;

pub(super) async fn carry_out(
    worker: &Worker,
    pool: &WorkPool,
    planned: Planned,
    report: &mut Report,
) -> Result<(), StepError> {
    let Planned {
        plan,
        age,
        flow_run,
        pid,
    } = planned;
    match plan {
        Plan::Cancel => cancelling(worker, &flow_run, pid.as_ref(), age, report).await,
        Plan::Resume { give_up } => resume(worker, pool, &flow_run, give_up, report).await,
        Plan::Verify => verify(worker, flow_run, pid, report).await,
        Plan::UndoStaleClaim => undo_stale_claim(worker, &flow_run, report).await,
        Plan::Nothing => Ok(()),
    }
}

async fn undo_stale_claim(
    worker: &Worker,
    flow_run: &FlowRun,
    report: &mut Report,
) -> Result<(), StepError> {
    let Some(claim) = flow_run.state.as_ref() else {
        return Ok(());
    };
    if let Some(previous) = stale::undo(&worker.prefect, flow_run.id, claim).await? {
        report.undone += 1;
        let mut log = RunLog::new(flow_run.id);
        log.warn(stale::undone_message(flow_run.id, &previous));
        worker.keep_logs(&mut log);
        tracing::info!(
            decision = "undid_stale_claim",
            "restored the state a late claim replaced"
        );
    }
    Ok(())
}

/// A CANCELLING run: after one read of its job run (none without infrastructure), see
/// [`cancel`].
async fn cancelling(
    worker: &Worker,
    flow_run: &FlowRun,
    pid: Option<&InfrastructurePid>,
    age: Duration,
    report: &mut Report,
) -> Result<(), StepError> {
    let nf = match pid {
        Some(_) => client_for(worker, flow_run).await?,
        None => worker.northflank.clone(),
    };
    let job_run = match pid {
        Some(p) => Some(nf.get_run(&p.project, &p.job, &p.run).await?),
        None => None,
    };
    let view = job_run
        .as_ref()
        .map(|r| r.as_ref().map_or(JobRunView::Gone, JobRunView::Found));
    let started = flow_run.start_time.is_some();
    let action = cancel(
        pid.is_some(),
        started,
        view,
        age,
        &worker.settings.reconcile,
    );
    let message = match action {
        CancelAction::Wait => return Ok(()),
        CancelAction::AbortThenCancel(message) => {
            if let Some(p) = pid {
                nf.abort_run(&p.project, &p.job, &p.run).await?;
                report.aborted += 1;
            }
            message
        }
        CancelAction::Cancel(message) => message,
    };
    let mut log = RunLog::new(flow_run.id);
    mark_cancelled(worker, flow_run, &message, &mut log, report).await?;
    delete_job(&nf, pid, &mut log).await?;
    worker.keep_logs(&mut log);
    Ok(())
}

async fn mark_cancelled(
    worker: &Worker,
    flow_run: &FlowRun,
    message: &str,
    log: &mut RunLog,
    report: &mut Report,
) -> Result<(), StepError> {
    let proposal = Proposal::cancelled_from(flow_run.state.as_ref(), message, false);
    let result = worker.prefect.set_state(flow_run.id, &proposal).await?;
    if result
        .state
        .as_ref()
        .is_some_and(|s| s.kind == StateType::Cancelled)
    {
        report.cancelled += 1;
        log.info(format!(
            "Reported flow run '{}' as cancelled: {message}",
            flow_run.id
        ));
        tracing::info!(decision = "cancelled", reason = %message, "flow run cancelled");
    }
    Ok(())
}

/// The job of a cancelled run goes, unless the run keeps it.
async fn delete_job(
    nf: &NorthflankClient,
    pid: Option<&InfrastructurePid>,
    log: &mut RunLog,
) -> Result<(), StepError> {
    if let Some(p) = pid.filter(|p| !p.keep_job)
        && nf.delete_job(&p.project, &p.job).await?
    {
        log.info(format!(
            "Deleted Northflank job '{}' in project '{}'",
            p.job, p.project
        ));
    }
    Ok(())
}

/// A claimed run whose submitter died: its launch is finished, adopting a run it already
/// started; on the last chance, a failure abandons it.
async fn resume(
    worker: &Worker,
    pool: &WorkPool,
    flow_run: &FlowRun,
    give_up: bool,
    report: &mut Report,
) -> Result<(), StepError> {
    let mut log = RunLog::new(flow_run.id);
    let deployment = match flow_run.deployment_id {
        Some(id) => worker.prefect.read_deployment(id).await?,
        None => None,
    };
    let Some(deployment) = deployment else {
        let reason = "Its deployment no longer exists, cancelled run.";
        run::cancel_orphan(worker, flow_run, reason, &mut log).await?;
        report.cancelled += 1;
        worker.keep_logs(&mut log);
        return Ok(());
    };
    let claimed_at = flow_run
        .state
        .as_ref()
        .and_then(|s| s.timestamp)
        .unwrap_or_else(Utc::now);
    log.info(format!(
        "Worker '{}' is finishing the interrupted submission of flow run '{}'",
        worker.settings.prefect.worker_name, flow_run.id
    ));
    let claimed = Claimed {
        pool,
        flow_run,
        deployment: &deployment,
        at: claimed_at,
    };
    let launched = run::launch(worker, &claimed, Launch::Resume, &mut log).await;
    let outcome = match launched {
        Ok(l) => {
            report.resumed += 1;
            tracing::info!(decision = "resumed", pid = %l.pid, adopted = l.adopted, "interrupted submission finished");
            Ok(())
        }
        Err(e) if give_up => {
            let abandoned = run::abandon(worker, flow_run, e, &mut log).await;
            report.crashed += u32::from(matches!(abandoned, Abandoned::Crashed(_)));
            Ok(())
        }
        Err(e) => Err(e.into()),
    };
    worker.keep_logs(&mut log);
    outcome
}

/// A run whose notification may have been lost: exactly the webhook's decision, from one read
/// of its job run.
async fn verify(
    worker: &Worker,
    flow_run: FlowRun,
    pid: Option<InfrastructurePid>,
    report: &mut Report,
) -> Result<(), StepError> {
    worker.memory().checked_now(flow_run.id);
    let hint = Hint {
        project: pid.as_ref().map(|p| p.project.clone()),
        job_run: pid.map(|p| p.run),
        event: None,
    };
    let settled = settle::settle(worker, flow_run, &hint).await?;
    report.verified += 1;
    if settled.action != run::Action::None {
        report.settled += 1;
    }
    if settled.job_deleted {
        report.jobs_deleted += 1;
    }
    Ok(())
}

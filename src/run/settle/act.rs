//! Carrying out a decision: the Prefect state, the container's last log lines, the
//! `executed-flow-run` event, then the job cleanup, each said in the flow run's logs.

use super::decide::{Decision, Transition};
use super::gather::Gathered;
use super::{Action, SettleError, Settled};
use crate::ids::FlowRunId;
use crate::prefect::events;
use crate::prefect::logs::RunLog;
use crate::prefect::models::{FlowRun, SetStateStatus, State};
use crate::prefect::states::Proposal;
use crate::worker::Worker;

/// The flow run a settlement is about, as far as acting on it needs.
pub(super) struct Subject {
    pub id: FlowRunId,
    pub infrastructure_pid: Option<String>,
    pub related: events::Related,
}

impl Subject {
    pub fn of(flow_run: &FlowRun) -> Self {
        Subject {
            id: flow_run.id,
            infrastructure_pid: flow_run.infrastructure_pid.clone(),
            related: events::Related::of_flow_run(flow_run),
        }
    }
}

pub(super) async fn act(
    worker: &Worker,
    subject: &Subject,
    g: &Gathered,
    decision: Decision,
) -> Result<Settled, SettleError> {
    let id = subject.id;
    let mut log = RunLog::new(id);
    if let Some(note) = &g.undone {
        log.warn(note.clone());
    }
    if let Some(note) = &decision.note {
        log.info(note.clone());
    }
    let action = match &decision.transition {
        Some(t) => transition(worker, id, g.state.as_ref(), t, &mut log).await?,
        None => Action::None,
    };
    if let (Some(job_run), true) = (&g.job_run_id, decision.forward_logs) {
        forward_logs(worker, g, job_run, &mut log).await;
    }
    if let (Some(job_run), Some(code)) = (&g.job_run_id, decision.status_code) {
        let pid = (subject.infrastructure_pid.clone())
            .unwrap_or_else(|| format!("{}:{}:{job_run}", g.project, g.job));
        worker.keep_event(events::executed(
            &worker.settings.prefect.worker_name,
            &subject.related,
            job_run,
            &pid,
            code,
        ));
    }
    let job_deleted = decision.delete_job && g.nf.delete_job(&g.project, &g.job).await?;
    if job_deleted {
        log.info(format!(
            "Deleted Northflank job '{}' in project '{}'",
            g.job, g.project
        ));
    }
    worker.keep_logs(&mut log);
    worker.send_soon().await;
    if decision.status_code.is_some() || job_deleted {
        worker.memory().forget_launched(id);
    }
    tracing::info!(decision = action.as_str(), job_deleted, "settled");
    Ok(Settled {
        flow_run_id: id,
        action,
        job_deleted,
        detail: decision.note.unwrap_or_default(),
    })
}

/// Proposes the decided state. ABORT (already terminal) and REJECT (cancelling) mean the
/// server kept its own: nothing was written.
async fn transition(
    worker: &Worker,
    id: FlowRunId,
    state: Option<&State>,
    transition: &Transition,
    log: &mut RunLog,
) -> Result<Action, SettleError> {
    let (proposal, action, name, message) = match transition {
        Transition::Crash(m) => (Proposal::crashed(m), Action::Crashed, "crashed", m),
        Transition::Cancel(m) => (
            Proposal::cancelled_from(state, m, false),
            Action::Cancelled,
            "cancelled",
            m,
        ),
    };
    let result = worker.prefect.set_state(id, &proposal).await?;
    if result.status != SetStateStatus::Accept {
        return Ok(Action::None);
    }
    log.info(format!("Reported flow run '{id}' as {name}: {message}"));
    Ok(action)
}

/// Copies a failed container's last log lines to the flow run's logs, where a Prefect user
/// looks first; its job (and so its logs) may be deleted right after. Best effort: the state is
/// already set.
async fn forward_logs(worker: &Worker, g: &Gathered, job_run: &str, log: &mut RunLog) {
    let lines = worker.settings.northflank.forward_log_lines;
    if lines == 0 {
        return;
    }
    let job = &g.job;
    match g.nf.run_logs(&g.project, job, job_run, lines).await {
        Ok(lines) if lines.is_empty() => {
            log.info(format!(
                "Northflank run '{job_run}' of job '{job}' logged nothing"
            ));
        }
        Ok(lines) => log.info(format!(
            "Last {} log lines of Northflank run '{job_run}' of job '{job}':\n{}",
            lines.len(),
            lines.join("\n")
        )),
        Err(e) => log.warn(format!(
            "Could not read the logs of Northflank run '{job_run}' of job '{job}': {e}"
        )),
    }
}

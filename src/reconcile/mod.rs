//! Reconciliation, once per dispatch invocation, cheap and bounded: what notifications and
//! interrupted submitters left undone.
//!
//! - CANCELLING runs: abort containers that never started (or outlived the grace period), then
//!   Cancelled; runs whose container already stopped are Cancelled.
//! - PENDING runs without infrastructure (their submitter died): the submission is finished,
//!   finding the job by its name and adopting a run it already started; Crashed when that keeps
//!   failing past `give_up_after`.
//! - PENDING or RUNNING runs whose notification may have been lost: one read of their run, and
//!   exactly the webhook's decision.
//! - Jobs left behind by finished runs: deleted (unless the run keeps its job).
//!
//! Northflank requests are budgeted: at most `reconcile_max`, and at most `reconcile_share` of
//! the rate limit Northflank last reported as remaining.

mod plan;
mod sweep;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use chrono::Utc;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::time::Instant;
use tracing::Instrument;

use crate::dispatch::submit::{abandon, launch_claimed};
use crate::ids::{FlowRunId, InfrastructurePid, JobName};
use crate::ownership;
use crate::prefect::logs::RunLog;
use crate::prefect::models::{FlowRun, StateType, WorkPool};
use crate::prefect::stale;
use crate::prefect::states::Proposal;
use crate::webhook::decide::RunView;
use crate::webhook::settle::{self, Hint};
use crate::worker::Worker;
pub use plan::{CancelAction, Facts, Plan, cancel, plan};
pub use sweep::leftover;

/// What this process remembers between invocations (a warm Lambda container keeps it; a cold
/// one starts empty, which costs at most one extra check per run).
#[derive(Debug, Default)]
pub struct Memory {
    checked: HashMap<FlowRunId, Instant>,
    /// Northflank projects this process has submitted to, swept for leftover jobs.
    pub projects: BTreeSet<String>,
    /// When this process last swept for leftover jobs.
    swept: Option<Instant>,
}

/// What one reconciliation did.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Report {
    /// Late claims on finished runs, undone.
    pub undone: u32,
    pub cancelled: u32,
    pub aborted: u32,
    pub resumed: u32,
    pub crashed: u32,
    pub verified: u32,
    /// Verified runs whose state changed (a lost notification made good).
    pub settled: u32,
    pub jobs_deleted: u32,
    /// Active runs of the pool left alone because their infrastructure is not ours.
    pub not_ours: u32,
    pub errors: u32,
    pub northflank_budget: u64,
    pub out_of_budget: bool,
}

/// The Northflank requests reconciliation may still make.
pub struct Budget {
    start: u64,
    limit: u64,
}

impl Budget {
    pub fn new(worker: &Worker) -> Self {
        let s = &worker.settings;
        let max = u64::from(s.reconcile_max);
        let limit = match worker.northflank.rate_limit().remaining {
            Some(remaining) => max.min((remaining as f64 * s.reconcile_share).floor() as u64),
            None => max,
        };
        Budget {
            start: worker.northflank.requests_sent(),
            limit,
        }
    }

    pub fn left(&self, worker: &Worker) -> bool {
        worker.northflank.requests_sent() - self.start < self.limit
    }
}

/// The pool's runs reconciliation looks at.
fn active_runs_filter(worker: &Worker) -> Value {
    let s = &worker.settings;
    let mut body = json!({
        "flow_runs": {"state": {"type": {"any_": ["PENDING", "RUNNING", "CANCELLING"]}}},
        "work_pools": {"name": {"any_": [s.work_pool]}},
        "sort": "EXPECTED_START_TIME_ASC",
        "limit": 200,
    });
    if !s.work_queues.is_empty() {
        body["work_pool_queues"] = json!({"name": {"any_": s.work_queues}});
    }
    body
}

pub async fn reconcile(worker: &Worker, pool: &WorkPool, deadline: Instant) -> Report {
    let worker = worker.until(deadline);
    let us = worker.installation(Some(pool.id));
    let budget = Budget::new(&worker);
    let mut report = Report {
        northflank_budget: budget.limit,
        ..Report::default()
    };
    let runs = match worker
        .prefect
        .filter_flow_runs(&active_runs_filter(&worker))
        .await
    {
        Ok(runs) => runs,
        Err(e) => {
            tracing::warn!(error = %e, "reconciliation could not list the pool's active runs");
            report.errors += 1;
            return report;
        }
    };
    let mut projects: BTreeSet<String> = worker.settings.projects.iter().cloned().collect();
    if let Some(p) = pool
        .base_job_template
        .pointer("/variables/properties/project_id/default")
        .and_then(Value::as_str)
    {
        projects.insert(p.to_string());
    }
    let now = Utc::now();
    let mut planned = Vec::new();
    let sweeping;
    {
        let mut memory = worker.memory.lock().unwrap_or_else(|e| e.into_inner());
        projects.extend(memory.projects.iter().cloned());
        sweeping = plan::sweep_due(memory.swept.map(|t| t.elapsed()), &worker.settings);
        if sweeping {
            memory.swept = Some(Instant::now());
        }
        let active: BTreeSet<FlowRunId> = runs.iter().map(|r| r.id).collect();
        memory.checked.retain(|id, _| active.contains(id));
        for run in runs {
            if let Err(why) = ownership::judge(&us, Some(&run), None) {
                tracing::debug!(flow_run_id = %run.id, reason = %why, "not ours: left alone");
                report.not_ours += 1;
                continue;
            }
            let Some(state) = run.state.as_ref() else {
                continue;
            };
            let pid = run
                .infrastructure_pid
                .as_deref()
                .and_then(|p| p.parse::<InfrastructurePid>().ok());
            if let Some(pid) = &pid {
                projects.insert(pid.project.clone());
            }
            let age = state
                .timestamp
                .map(|t| (now - t).to_std().unwrap_or_default())
                .unwrap_or_default();
            let facts = Facts {
                kind: state.kind,
                age,
                recorded: pid.is_some(),
                since_checked: memory.checked.get(&run.id).map(Instant::elapsed),
                stale_claim: stale::is_stale_claim(state),
            };
            let plan = plan(&facts, &worker.settings);
            if plan != Plan::Nothing {
                planned.push((plan, age, run, pid));
            }
        }
    }
    // Cancellations first (a user is waiting), then resumptions, then the oldest checks.
    planned.sort_by_key(|(plan, age, ..)| {
        (
            matches!(plan, Plan::Verify) as u8 * 2 + matches!(plan, Plan::Resume { .. }) as u8,
            std::cmp::Reverse(*age),
        )
    });
    for (plan, age, run, pid) in planned {
        if !budget.left(&worker) {
            report.out_of_budget = true;
            break;
        }
        let span = tracing::info_span!("flow_run", flow_run_id = %run.id, job = %JobName::for_flow_run(run.id), run = tracing::field::Empty);
        let done = async {
            match plan {
                Plan::Cancel => cancelling(&worker, &run, pid.as_ref(), age, &mut report).await,
                Plan::Resume { give_up } => resume(&worker, pool, &run, give_up, &mut report).await,
                Plan::Verify => verify(&worker, run, pid, &mut report).await,
                Plan::UndoStaleClaim => undo_stale_claim(&worker, &run, &mut report).await,
                Plan::Nothing => Ok(()),
            }
        }
        .instrument(span)
        .await;
        if let Err(e) = done {
            report.errors += 1;
            tracing::warn!(error = %e, "reconciliation step failed; the next invocation tries again");
        }
    }
    if sweeping {
        sweep::sweep(&worker, &us, &projects, &budget, &mut report).await;
    }
    if report
        != (Report {
            northflank_budget: budget.limit,
            ..Report::default()
        })
    {
        tracing::info!(
            undone = report.undone,
            cancelled = report.cancelled,
            aborted = report.aborted,
            resumed = report.resumed,
            crashed = report.crashed,
            verified = report.verified,
            settled = report.settled,
            jobs_deleted = report.jobs_deleted,
            not_ours = report.not_ours,
            errors = report.errors,
            out_of_budget = report.out_of_budget,
            "reconciliation finished"
        );
    }
    report
}

type StepError = Box<dyn std::error::Error + Send + Sync>;

async fn undo_stale_claim(
    worker: &Worker,
    run: &FlowRun,
    report: &mut Report,
) -> Result<(), StepError> {
    let Some(claim) = run.state.as_ref() else {
        return Ok(());
    };
    if let Some(previous) = stale::undo(&worker.prefect, run.id, claim).await? {
        report.undone += 1;
        let mut log = RunLog::new(run.id);
        log.warn(stale::undone_message(run.id, &previous));
        worker.keep_logs(&mut log);
        tracing::info!(
            decision = "undid_stale_claim",
            "restored the state a late claim replaced"
        );
    }
    Ok(())
}

async fn cancelling(
    worker: &Worker,
    run: &FlowRun,
    pid: Option<&InfrastructurePid>,
    age: Duration,
    report: &mut Report,
) -> Result<(), StepError> {
    let nf = match pid {
        Some(_) => settle::client_for(worker, run).await?,
        None => worker.northflank.clone(),
    };
    let read = match pid {
        Some(p) => Some(nf.get_run(&p.project, &p.job, &p.run).await?),
        None => None,
    };
    let view = read
        .as_ref()
        .map(|r| r.as_ref().map_or(RunView::Gone, RunView::Found));
    let action = cancel(
        pid.is_some(),
        run.start_time.is_some(),
        view,
        age,
        &worker.settings,
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
    let mut log = RunLog::new(run.id);
    let result = worker
        .prefect
        .set_state(
            run.id,
            &Proposal::cancelled_from(run.state.as_ref(), &message, false),
        )
        .await?;
    if result
        .state
        .as_ref()
        .is_some_and(|s| s.kind == StateType::Cancelled)
    {
        report.cancelled += 1;
        log.info(format!(
            "Reported flow run '{}' as cancelled: {message}",
            run.id
        ));
        tracing::info!(decision = "cancelled", reason = %message, "flow run cancelled");
    }
    if let Some(p) = pid.filter(|p| !p.keep_job)
        && nf.delete_job(&p.project, &p.job).await?
    {
        log.info(format!(
            "Deleted Northflank job '{}' in project '{}'",
            p.job, p.project
        ));
    }
    worker.keep_logs(&mut log);
    Ok(())
}

async fn resume(
    worker: &Worker,
    pool: &WorkPool,
    run: &FlowRun,
    give_up: bool,
    report: &mut Report,
) -> Result<(), StepError> {
    let mut log = RunLog::new(run.id);
    let Some(deployment) = (match run.deployment_id {
        Some(id) => worker.prefect.read_deployment(id).await?,
        None => None,
    }) else {
        let message = "Its deployment no longer exists, cancelled run.";
        worker
            .prefect
            .set_state(
                run.id,
                &Proposal::cancelled_from(run.state.as_ref(), message, true),
            )
            .await?;
        report.cancelled += 1;
        return Ok(());
    };
    let claimed_at = run
        .state
        .as_ref()
        .and_then(|s| s.timestamp)
        .unwrap_or_else(Utc::now);
    log.info(format!(
        "Worker '{}' is finishing the interrupted submission of flow run '{}'",
        worker.settings.worker_name, run.id
    ));
    let outcome = match launch_claimed(worker, pool, run, &deployment, claimed_at, true, &mut log)
        .await
    {
        Ok((pid, adopted)) => {
            report.resumed += 1;
            tracing::info!(decision = "resumed", pid = %pid, adopted, "interrupted submission finished");
            Ok(())
        }
        Err(e) if give_up => {
            let outcome = abandon(worker, run, e, &mut log).await;
            report.crashed += u32::from(matches!(
                outcome,
                crate::dispatch::SubmitOutcome::Crashed { .. }
            ));
            Ok(())
        }
        Err(e) => Err(e.into()),
    };
    worker.keep_logs(&mut log);
    outcome
}

async fn verify(
    worker: &Worker,
    run: FlowRun,
    pid: Option<InfrastructurePid>,
    report: &mut Report,
) -> Result<(), StepError> {
    let id = run.id;
    worker
        .memory
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .checked
        .insert(id, Instant::now());
    let hint = Hint {
        project: pid.as_ref().map(|p| p.project.clone()),
        run: pid.map(|p| p.run),
        event: None,
    };
    let settled = settle::settle_read(worker, run, &hint).await?;
    report.verified += 1;
    if settled.action != "none" {
        report.settled += 1;
    }
    if settled.job_deleted {
        report.jobs_deleted += 1;
    }
    Ok(())
}

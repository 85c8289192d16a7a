//! Reconciliation, once per scheduled invocation, cheap and bounded: what notifications and
//! interrupted submitters left undone, for the flow runs of ours (`ownership`).
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
mod steps;
mod sweep;

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::Utc;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::time::Instant;
use tracing::Instrument;

use crate::ids::{FlowRunId, InfrastructurePid, JobName};
use crate::ownership::{self, Installation};
use crate::prefect::models::{FlowRun, WorkPool};
use crate::prefect::stale;
use crate::worker::Worker;
pub use plan::{ActiveRun, CancelAction, Plan, cancel, plan, sweep_due};
pub use sweep::leftover;

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
        let s = &worker.settings.reconcile;
        let max = u64::from(s.max_requests);
        let limit = match worker.northflank.rate_limit().remaining {
            Some(remaining) => max.min((remaining as f64 * s.share).floor() as u64),
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

/// One step planned for an active flow run of ours.
struct Planned {
    plan: Plan,
    /// Time since the run's last state change.
    age: Duration,
    flow_run: FlowRun,
    pid: Option<InfrastructurePid>,
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
    let mut projects = known_projects(&worker, pool);
    let planned = plan_runs(&worker, &us, runs, &mut projects, &mut report);
    let sweeping = {
        let mut memory = worker.memory();
        projects.extend(memory.projects().cloned());
        let due = sweep_due(memory.since_swept(), &worker.settings.reconcile);
        if due {
            memory.swept_now();
        }
        due
    };
    carry_out(&worker, pool, planned, &budget, &mut report).await;
    if sweeping {
        sweep::sweep(&worker, &us, &projects, &budget, &mut report).await;
    }
    log_report(&report, budget.limit);
    report
}

/// The pool's runs reconciliation looks at.
fn active_runs_filter(worker: &Worker) -> Value {
    let s = &worker.settings.prefect;
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

/// The projects to sweep: `PFNF_PROJECTS` and the pool's default project (active runs' and
/// this process's are added as they are seen).
fn known_projects(worker: &Worker, pool: &WorkPool) -> BTreeSet<String> {
    let mut projects: BTreeSet<String> =
        worker.settings.reconcile.projects.iter().cloned().collect();
    if let Some(p) = pool
        .base_job_template
        .pointer("/variables/properties/project_id/default")
        .and_then(Value::as_str)
    {
        projects.insert(p.to_string());
    }
    projects
}

/// What each active run of ours needs, most urgent first: cancellations (a user is waiting),
/// then resumptions, then the oldest checks.
fn plan_runs(
    worker: &Worker,
    us: &Installation,
    runs: Vec<FlowRun>,
    projects: &mut BTreeSet<String>,
    report: &mut Report,
) -> Vec<Planned> {
    let now = Utc::now();
    let mut memory = worker.memory();
    let active: BTreeSet<FlowRunId> = runs.iter().map(|r| r.id).collect();
    memory.keep_checks_of(&active);
    let mut planned = Vec::new();
    for flow_run in runs {
        if let Err(why) = ownership::judge(us, Some(&flow_run), None) {
            tracing::debug!(flow_run_id = %flow_run.id, reason = %why, "not ours: left alone");
            report.not_ours += 1;
            continue;
        }
        let Some(state) = flow_run.state.as_ref() else {
            continue;
        };
        let pid = flow_run
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
        let facts = ActiveRun {
            kind: state.kind,
            age,
            recorded: pid.is_some(),
            since_checked: memory.since_checked(flow_run.id),
            stale_claim: stale::is_stale_claim(state),
        };
        let plan = plan(&facts, &worker.settings.reconcile);
        if plan != Plan::Nothing {
            planned.push(Planned {
                plan,
                age,
                flow_run,
                pid,
            });
        }
    }
    planned.sort_by_key(|p| {
        (
            matches!(p.plan, Plan::Verify) as u8 * 2 + matches!(p.plan, Plan::Resume { .. }) as u8,
            std::cmp::Reverse(p.age),
        )
    });
    planned
}

/// Each planned step within the budget; a step that fails is tried again next time.
async fn carry_out(
    worker: &Worker,
    pool: &WorkPool,
    planned: Vec<Planned>,
    budget: &Budget,
    report: &mut Report,
) {
    for p in planned {
        if !budget.left(worker) {
            report.out_of_budget = true;
            return;
        }
        let id = p.flow_run.id;
        let span = tracing::info_span!("flow_run", flow_run_id = %id, job = %JobName::for_flow_run(id), run = tracing::field::Empty);
        let done = steps::carry_out(worker, pool, p, report)
            .instrument(span)
            .await;
        if let Err(e) = done {
            report.errors += 1;
            tracing::warn!(error = %e, "reconciliation step failed; the next invocation tries again");
        }
    }
}

fn log_report(report: &Report, budget: u64) {
    let nothing = Report {
        northflank_budget: budget,
        ..Report::default()
    };
    if *report == nothing {
        return;
    }
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

//! Jobs left behind: `pf-<uuid>` jobs whose flow run has finished (or was deleted) and whose
//! notification was lost. Deleted unless the run asked to keep its job.

use std::collections::{BTreeSet, HashMap};

use serde_json::json;

use super::{Budget, Report};
use crate::ids::{FlowRunId, InfrastructurePid, JobName};
use crate::prefect::models::FlowRun;
use crate::worker::Worker;

/// Whether a job is left over, given its flow run (`None`: deleted).
pub fn leftover(run: Option<&FlowRun>) -> bool {
    let Some(run) = run else { return true };
    let terminal = run.state_type().is_some_and(|k| k.is_terminal());
    let keep = run
        .infrastructure_pid
        .as_deref()
        .and_then(|p| p.parse::<InfrastructurePid>().ok())
        .is_some_and(|p| p.keep_job);
    terminal && !keep
}

pub async fn sweep(
    worker: &Worker,
    projects: &BTreeSet<String>,
    budget: &Budget,
    report: &mut Report,
) {
    for project in projects {
        if !budget.left(worker) {
            report.out_of_budget = true;
            return;
        }
        let jobs = match worker.northflank.list_jobs(project).await {
            Ok(jobs) => jobs,
            Err(e) => {
                tracing::warn!(project = %project, error = %e, "could not list jobs");
                report.errors += 1;
                continue;
            }
        };
        let ours: Vec<(String, FlowRunId)> = jobs
            .into_iter()
            .filter_map(|j| JobName::parse(&j.id).map(|name| (j.id, name.flow_run_id())))
            .collect();
        for chunk in ours.chunks(200) {
            let ids: Vec<FlowRunId> = chunk.iter().map(|(_, id)| *id).collect();
            let body = json!({"flow_runs": {"id": {"any_": ids}}, "limit": ids.len()});
            let runs: HashMap<FlowRunId, FlowRun> =
                match worker.prefect.filter_flow_runs(&body).await {
                    Ok(runs) => runs.into_iter().map(|r| (r.id, r)).collect(),
                    Err(e) => {
                        tracing::warn!(error = %e, "could not read the flow runs of jobs");
                        report.errors += 1;
                        continue;
                    }
                };
            for (job, id) in chunk {
                if !leftover(runs.get(id)) {
                    continue;
                }
                if !budget.left(worker) {
                    report.out_of_budget = true;
                    return;
                }
                match worker.northflank.delete_job(project, job).await {
                    Ok(()) => {
                        report.jobs_deleted += 1;
                        tracing::info!(flow_run_id = %id, job = %job, project = %project, decision = "deleted_leftover_job", "deleted a job left behind");
                    }
                    Err(e) => {
                        report.errors += 1;
                        tracing::warn!(job = %job, error = %e, "could not delete a job left behind");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(state: &str, pid: Option<&str>) -> FlowRun {
        serde_json::from_value(
            json!({"id": uuid::Uuid::new_v4(), "flow_id": uuid::Uuid::new_v4(),
            "state": {"type": state}, "infrastructure_pid": pid}),
        )
        .unwrap()
    }

    #[test]
    fn leftover_table() {
        assert!(leftover(None), "the flow run was deleted");
        assert!(leftover(Some(&run("COMPLETED", Some("p:j:r")))));
        assert!(leftover(Some(&run("CRASHED", None))));
        assert!(
            !leftover(Some(&run("COMPLETED", Some("p:j:r:keep")))),
            "cleanup_job: false"
        );
        assert!(!leftover(Some(&run("RUNNING", Some("p:j:r")))));
        assert!(
            !leftover(Some(&run("SCHEDULED", None))),
            "a retry may reuse the job"
        );
    }
}

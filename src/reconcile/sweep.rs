//! Jobs left behind: jobs of ours whose flow run has finished (or was deleted) and whose
//! notification was lost. Deleted unless the run asked to keep its job. Which jobs are ours is
//! [`ownership::judge`]'s call: a job marked by another installation is not even looked up, and
//! an unmarked one counts only when its flow run is ours.

use std::collections::{BTreeSet, HashMap};

use serde_json::json;

use super::{Budget, Report};
use crate::ids::{FlowRunId, InfrastructurePid, JobName};
use crate::northflank::models::JobSummary;
use crate::ownership::{self, Installation, JobSeen, Marker, NotOurs};
use crate::prefect::models::FlowRun;
use crate::worker::Worker;

/// Whether a job of ours is left over, given its flow run (`None`: deleted).
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
    us: &Installation,
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
        let candidates = candidates(us, project, jobs);
        for chunk in candidates.chunks(200) {
            let ids: Vec<FlowRunId> = chunk.iter().map(|c| c.flow_run).collect();
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
            for c in chunk {
                let run = runs.get(&c.flow_run);
                let seen = c.seen(project);
                if ownership::judge(us, run, Some(seen)).is_err() || !leftover(run) {
                    continue;
                }
                if !budget.left(worker) {
                    report.out_of_budget = true;
                    return;
                }
                delete(worker, project, c, report).await;
            }
        }
    }
}

/// A listed job named after a flow run, with the marker its description carries.
struct Candidate {
    job: String,
    flow_run: FlowRunId,
    marker: Option<Marker>,
}

impl Candidate {
    fn seen<'a>(&'a self, project: &'a str) -> JobSeen<'a> {
        JobSeen {
            project: Some(project),
            job: &self.job,
            marker: self.marker,
        }
    }
}

/// The listed jobs whose flow runs are worth reading: named after a flow run, and not marked
/// by another installation (those are never ours, whatever their flow run).
fn candidates(us: &Installation, project: &str, jobs: Vec<JobSummary>) -> Vec<Candidate> {
    jobs.into_iter()
        .filter_map(|j| {
            let flow_run = JobName::parse(&j.id)?.flow_run_id();
            let marker = j.description.as_deref().and_then(Marker::find);
            Some(Candidate {
                job: j.id,
                flow_run,
                marker,
            })
        })
        .filter(|c| {
            ownership::judge(us, None, Some(c.seen(project))) != Err(NotOurs::MarkedByAnother)
        })
        .collect()
}

async fn delete(worker: &Worker, project: &str, c: &Candidate, report: &mut Report) {
    let (job, id) = (&c.job, c.flow_run);
    match worker.northflank.delete_job(project, job).await {
        Ok(true) => {
            report.jobs_deleted += 1;
            tracing::info!(flow_run_id = %id, job = %job, project = %project, decision = "deleted_leftover_job", "deleted a job left behind");
        }
        Ok(false) => {}
        Err(e) => {
            report.errors += 1;
            tracing::warn!(job = %job, error = %e, "could not delete a job left behind");
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

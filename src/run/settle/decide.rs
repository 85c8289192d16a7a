//! What to do about a flow run whose Northflank job run has been read: a pure function of what
//! was observed, shared by the webhook and by reconciliation.
//!
//! Rules: a terminal Prefect state is final; a CANCELLING run whose container has stopped is
//! Cancelled; a run still PENDING or RUNNING when its container has stopped never reported a
//! final state, so it is Crashed; a concluded run's job is deleted when `cleanup_job` says so.
//! A job is never deleted before the submission has recorded the run (`infrastructure_pid`), as
//! only the record says whether the run asked to keep it. Scheduled and Paused runs are left
//! alone: their container legitimately stopped (rescheduled on SIGTERM, or suspended).

use crate::northflank::models::{JobRun, RunStatus};
use crate::prefect::models::StateType;

/// The Northflank side, as one GET saw it.
#[derive(Clone, Debug, PartialEq)]
pub enum JobRunView<'a> {
    /// The job or the run no longer exists.
    Gone,
    Found(&'a JobRun),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Observation<'a> {
    /// `None`: the flow run was deleted.
    pub state: Option<StateType>,
    pub job_run: JobRunView<'a>,
    pub project: &'a str,
    pub job: &'a str,
    pub cleanup_job: bool,
    /// Whether the flow run records its infrastructure (`infrastructure_pid`). Until it does, the
    /// submission is still going on, and the run may live on an account we cannot tell yet.
    pub recorded: bool,
    /// The notification's event type, when a notification prompted this.
    pub event: Option<&'a str>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Transition {
    Crash(String),
    Cancel(String),
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct Decision {
    pub transition: Option<Transition>,
    pub delete_job: bool,
    /// A line for the flow run's logs.
    pub note: Option<String>,
    /// The container's outcome once its run has concluded (0 succeeded, 1 failed), for the
    /// `executed-flow-run` event.
    pub status_code: Option<i32>,
    /// Copy the container's last log lines to the flow run's logs: it failed, and its job is
    /// about to be deleted or its flow run crashed.
    pub forward_logs: bool,
}

pub fn decide(f: &Observation) -> Decision {
    let run = match f.job_run {
        JobRunView::Gone => return gone(f),
        JobRunView::Found(run) => run,
    };
    // Still running: nothing to do (a start notification is answered before any decision).
    if !run.concluded {
        return Decision::default();
    }
    let status = match &run.status {
        RunStatus::Success => "SUCCESS".to_string(),
        RunStatus::Failed => "FAILED".to_string(),
        RunStatus::Running => "RUNNING".to_string(),
        RunStatus::Other(s) => s.clone(),
    };
    let how = f.event.map(|e| format!(", event {e}")).unwrap_or_default();
    let where_ = format!(
        "Northflank run '{}' of job '{}' in project '{}'",
        run.id, f.job, f.project
    );
    let transition = match f.state {
        Some(StateType::Cancelling) => Some(Transition::Cancel(format!(
            "Flow run was cancelled; {where_} has stopped (status {status}{how})."
        ))),
        Some(StateType::Pending | StateType::Running) if run.status == RunStatus::Success => {
            Some(Transition::Crash(format!(
                "{where_} finished successfully, but the flow run never reported a final state. Check that the job's command runs the flow (prefect flow-run execute)."
            )))
        }
        Some(StateType::Pending | StateType::Running) => Some(Transition::Crash(format!(
            "{where_} failed (status {status}{how}). Check the Northflank job's logs; the container may have run out of memory, failed to pull its image or exceeded its time limit."
        ))),
        _ => None,
    };
    let failed = run.status != RunStatus::Success;
    // Until the submission records the run, whether it asked to keep its job is not known: the
    // job is left to whoever sees the record (the next notification, or the sweep).
    let delete_job = f.cleanup_job && f.recorded;
    let forward_logs = failed && (delete_job || matches!(transition, Some(Transition::Crash(_))));
    Decision {
        transition,
        delete_job,
        note: Some(format!("{where_} concluded with status {status}")),
        status_code: Some(i32::from(failed)),
        forward_logs,
    }
}

fn gone(f: &Observation) -> Decision {
    if !f.recorded {
        return Decision::default();
    }
    let what = format!(
        "Northflank job '{}' in project '{}' or its run no longer exists",
        f.job, f.project
    );
    let transition = match f.state {
        Some(StateType::Cancelling) => Some(Transition::Cancel(format!(
            "Flow run was cancelled; {what}."
        ))),
        Some(StateType::Pending | StateType::Running) => Some(Transition::Crash(format!(
            "{what}, but the flow run never reported a final state."
        ))),
        _ => None,
    };
    // The run is gone but the job may not be: deleting is harmless either way.
    Decision {
        transition,
        delete_job: f.cleanup_job,
        note: Some(what),
        ..Decision::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use StateType::*;

    fn run(concluded: bool, status: RunStatus) -> JobRun {
        JobRun {
            id: "r".into(),
            run_name: None,
            status,
            concluded,
            started_at: None,
            concluded_at: None,
        }
    }

    fn facts<'a>(state: Option<StateType>, run: JobRunView<'a>, cleanup: bool) -> Observation<'a> {
        Observation {
            state,
            job_run: run,
            project: "p",
            job: "pf-j",
            cleanup_job: cleanup,
            recorded: true,
            event: None,
        }
    }

    #[test]
    fn nothing_is_gone_before_the_submission_has_recorded_it() {
        let mut f = facts(Some(StateType::Pending), JobRunView::Gone, true);
        f.recorded = false;
        assert_eq!(decide(&f), Decision::default());
    }

    #[test]
    fn a_concluded_run_keeps_its_job_until_the_submission_has_recorded_it() {
        let ok = run(true, RunStatus::Success);
        let failed = run(true, RunStatus::Failed);
        for (state, job_run) in [
            (Some(StateType::Completed), &ok),
            (Some(StateType::Running), &failed),
        ] {
            let mut f = facts(state, JobRunView::Found(job_run), true);
            f.recorded = false;
            let decision = decide(&f);
            assert!(!decision.delete_job, "{state:?}: {decision:?}");
            assert!(decision.note.is_some());
            f.recorded = true;
            assert!(decide(&f).delete_job, "{state:?}");
        }
    }

    #[test]
    fn decision_table() {
        let ok = run(true, RunStatus::Success);
        let failed = run(true, RunStatus::Failed);
        let active = run(false, RunStatus::Running);
        type Expect = (Option<&'static str>, bool);
        let cases: Vec<(Option<StateType>, JobRunView, bool, Expect)> = vec![
            (
                Some(Running),
                JobRunView::Found(&active),
                true,
                (None, false),
            ),
            (
                Some(Pending),
                JobRunView::Found(&active),
                true,
                (None, false),
            ),
            (Some(Completed), JobRunView::Found(&ok), true, (None, true)),
            (
                Some(Completed),
                JobRunView::Found(&ok),
                false,
                (None, false),
            ),
            (
                Some(Running),
                JobRunView::Found(&ok),
                true,
                (Some("crash"), true),
            ),
            (
                Some(Running),
                JobRunView::Found(&failed),
                true,
                (Some("crash"), true),
            ),
            (
                Some(Pending),
                JobRunView::Found(&failed),
                false,
                (Some("crash"), false),
            ),
            (Some(Failed), JobRunView::Found(&failed), true, (None, true)),
            (
                Some(Crashed),
                JobRunView::Found(&failed),
                true,
                (None, true),
            ),
            (
                Some(Cancelled),
                JobRunView::Found(&failed),
                true,
                (None, true),
            ),
            (
                Some(Cancelling),
                JobRunView::Found(&failed),
                true,
                (Some("cancel"), true),
            ),
            (
                Some(Cancelling),
                JobRunView::Found(&ok),
                true,
                (Some("cancel"), true),
            ),
            (
                Some(Cancelling),
                JobRunView::Found(&active),
                true,
                (None, false),
            ),
            (
                Some(Scheduled),
                JobRunView::Found(&failed),
                true,
                (None, true),
            ),
            (Some(Paused), JobRunView::Found(&ok), true, (None, true)),
            (None, JobRunView::Found(&ok), true, (None, true)),
            (Some(Running), JobRunView::Gone, true, (Some("crash"), true)),
            (
                Some(Cancelling),
                JobRunView::Gone,
                true,
                (Some("cancel"), true),
            ),
            (Some(Completed), JobRunView::Gone, false, (None, false)),
        ];
        for (state, view, cleanup, (want, delete)) in cases {
            let d = decide(&facts(state, view.clone(), cleanup));
            let got = match d.transition {
                Some(Transition::Crash(_)) => Some("crash"),
                Some(Transition::Cancel(_)) => Some("cancel"),
                None => None,
            };
            assert_eq!(
                (got, d.delete_job),
                (want, delete),
                "{state:?} {view:?} cleanup={cleanup}"
            );
        }
    }

    #[test]
    fn a_failed_container_is_explained_before_its_logs_go() {
        let ok = run(true, RunStatus::Success);
        let failed = run(true, RunStatus::Failed);
        let active = run(false, RunStatus::Running);
        // (state, run, cleanup) → (status code, forward logs)
        let cases = [
            (Failed, &failed, true, (Some(1), true)),
            (Running, &failed, false, (Some(1), true)),
            (Failed, &failed, false, (Some(1), false)),
            (Completed, &ok, true, (Some(0), false)),
            (Running, &ok, true, (Some(0), false)),
            (Running, &active, true, (None, false)),
        ];
        for (state, r, cleanup, want) in cases {
            let d = decide(&facts(Some(state), JobRunView::Found(r), cleanup));
            assert_eq!(
                (d.status_code, d.forward_logs),
                want,
                "{state:?} {r:?} cleanup={cleanup}"
            );
        }
        let gone = decide(&facts(Some(Running), JobRunView::Gone, true));
        assert_eq!((gone.status_code, gone.forward_logs), (None, false));
    }

    #[test]
    fn crash_message_names_the_job_and_run() {
        let failed = run(true, RunStatus::Failed);
        let mut f = facts(Some(Running), JobRunView::Found(&failed), true);
        f.event = Some("job-run:failure");
        match decide(&f).transition {
            Some(Transition::Crash(m)) => {
                assert!(
                    m.contains("run 'r'") && m.contains("job 'pf-j'") && m.contains("project 'p'"),
                    "{m}"
                );
                assert!(m.contains("job-run:failure"), "{m}");
            }
            other => panic!("{other:?}"),
        }
    }
}

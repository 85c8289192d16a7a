//! What reconciliation should do about one flow run: pure functions of the facts.

use std::time::Duration;

use crate::config::ReconcileSettings;
use crate::northflank::models::JobRun;
use crate::run::settle::JobRunView;

/// What one active flow run of the pool needs.
#[derive(Clone, Debug, PartialEq)]
pub enum Plan {
    Nothing,
    /// It is CANCELLING: see [`cancel`].
    Cancel,
    /// Claimed, but its submitter died before recording infrastructure: finish the submission
    /// (finding the job and any run it already started). `give_up`: this is the last chance.
    Resume {
        give_up: bool,
    },
    /// It has infrastructure: read the Northflank run, in case a notification was lost.
    Verify,
    /// Its PENDING is a claim that landed after it had finished (see `prefect::stale`): restore
    /// the state the claim replaced. Its submitter normally does this at once.
    UndoStaleClaim,
}

/// What is known about one PENDING, RUNNING or CANCELLING flow run of ours.
#[derive(Clone, Copy, Debug)]
pub struct ActiveRun {
    pub kind: crate::prefect::models::StateType,
    /// Time since its last state change.
    pub age: Duration,
    /// Whether it records its infrastructure (`infrastructure_pid`).
    pub recorded: bool,
    /// Time since this process last verified it.
    pub since_checked: Option<Duration>,
    /// Its current state is a stale claim.
    pub stale_claim: bool,
}

pub fn plan(f: &ActiveRun, s: &ReconcileSettings) -> Plan {
    use crate::prefect::models::StateType::*;
    match f.kind {
        Cancelling => Plan::Cancel,
        Pending if f.stale_claim => Plan::UndoStaleClaim,
        Pending if !f.recorded && f.age >= s.give_up_after => Plan::Resume { give_up: true },
        Pending if !f.recorded && f.age >= s.resume_after => Plan::Resume { give_up: false },
        // Checks space out as a run ages (every half of its age at most), so a long run costs
        // a handful of reads, not one per invocation.
        Pending | Running if f.recorded && f.age >= s.check_after => {
            let due = f
                .since_checked
                .is_none_or(|since| since >= s.check_after.max(f.age / 2));
            if due { Plan::Verify } else { Plan::Nothing }
        }
        _ => Plan::Nothing,
    }
}

/// Whether leftover jobs are due to be looked for, given the time since this process last
/// did. Listing a project's jobs costs a request whatever it finds and jobs are rarely left
/// over, so sweeping every minute would spend 60 of Northflank's 1,000 requests an hour on
/// nothing.
pub fn sweep_due(since_swept: Option<Duration>, s: &ReconcileSettings) -> bool {
    since_swept.is_none_or(|since| since >= s.sweep_interval)
}

#[derive(Clone, Debug, PartialEq)]
pub enum CancelAction {
    /// Give the runner (or the submission) more time.
    Wait,
    /// Its container is not running: mark it Cancelled.
    Cancel(String),
    /// Stop its container, then mark it Cancelled.
    AbortThenCancel(String),
}

/// A CANCELLING run, after one read of its Northflank run (none without infrastructure).
pub fn cancel(
    recorded: bool,
    started: bool,
    job_run: Option<JobRunView<'_>>,
    cancelling_for: Duration,
    s: &ReconcileSettings,
) -> CancelAction {
    if !recorded {
        // A submission may still be writing its infrastructure; after `resume_after` it is dead.
        return if cancelling_for >= s.resume_after {
            CancelAction::Cancel("Flow run cancelled by worker (no infrastructure found).".into())
        } else {
            CancelAction::Wait
        };
    }
    match job_run {
        None | Some(JobRunView::Gone) => CancelAction::Cancel(
            "Flow run was cancelled; its Northflank job no longer exists.".into(),
        ),
        Some(JobRunView::Found(JobRun {
            id,
            concluded: true,
            status,
            ..
        })) => CancelAction::Cancel(format!(
            "Flow run was cancelled; Northflank run '{id}' has stopped (status {}).",
            serde_json::to_value(status)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default()
        )),
        Some(JobRunView::Found(_)) if !started => {
            CancelAction::AbortThenCancel("Flow run cancelled by worker while pending.".into())
        }
        Some(JobRunView::Found(_)) if cancelling_for >= s.cancel_grace => {
            CancelAction::AbortThenCancel(format!(
                "Flow run cancelled by worker: its Northflank run was still running {}s after the cancellation, so it was aborted.",
                s.cancel_grace.as_secs()
            ))
        }
        Some(JobRunView::Found(_)) => CancelAction::Wait,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::northflank::models::RunStatus;
    use crate::prefect::models::StateType::*;

    fn s() -> ReconcileSettings {
        ReconcileSettings::default()
    }

    fn facts(
        kind: crate::prefect::models::StateType,
        age: u64,
        recorded: bool,
        since: Option<u64>,
    ) -> ActiveRun {
        ActiveRun {
            kind,
            age: Duration::from_secs(age),
            recorded,
            since_checked: since.map(Duration::from_secs),
            stale_claim: false,
        }
    }

    #[test]
    fn leftover_jobs_are_looked_for_once_per_sweep_interval() {
        let secs = |n| Some(Duration::from_secs(n));
        let default = s();
        assert!(sweep_due(None, &default), "a fresh process sweeps at once");
        assert!(!sweep_due(secs(60), &default));
        assert!(!sweep_due(secs(599), &default));
        assert!(sweep_due(secs(600), &default));
        let every = ReconcileSettings {
            sweep_interval: Duration::ZERO,
            ..s()
        };
        assert!(sweep_due(secs(0), &every));
    }

    #[test]
    fn plan_table() {
        let cases = [
            (facts(Cancelling, 0, true, None), Plan::Cancel),
            (
                ActiveRun {
                    stale_claim: true,
                    ..facts(Pending, 0, false, None)
                },
                Plan::UndoStaleClaim,
            ),
            (
                ActiveRun {
                    stale_claim: true,
                    ..facts(Pending, 1000, true, None)
                },
                Plan::UndoStaleClaim,
            ),
            (facts(Pending, 30, false, None), Plan::Nothing),
            (
                facts(Pending, 130, false, None),
                Plan::Resume { give_up: false },
            ),
            (
                facts(Pending, 1000, false, None),
                Plan::Resume { give_up: true },
            ),
            (facts(Running, 60, true, None), Plan::Nothing),
            (facts(Running, 130, true, None), Plan::Verify),
            (facts(Pending, 130, true, None), Plan::Verify),
            (facts(Running, 600, true, Some(100)), Plan::Nothing),
            (facts(Running, 600, true, Some(300)), Plan::Verify),
            (facts(Running, 3600, true, Some(1700)), Plan::Nothing),
            (facts(Scheduled, 9999, false, None), Plan::Nothing),
            (facts(Completed, 9999, true, None), Plan::Nothing),
        ];
        for (f, want) in cases {
            assert_eq!(plan(&f, &s()), want, "{f:?}");
        }
    }

    #[test]
    fn cancel_table() {
        let run = |concluded| JobRun {
            id: "r".into(),
            run_name: None,
            status: if concluded {
                RunStatus::Failed
            } else {
                RunStatus::Running
            },
            concluded,
            started_at: None,
            concluded_at: None,
        };
        let (active, done) = (run(false), run(true));
        let d = Duration::from_secs;
        assert_eq!(cancel(false, false, None, d(10), &s()), CancelAction::Wait);
        assert!(
            matches!(cancel(false, false, None, d(200), &s()), CancelAction::Cancel(m) if m.contains("no infrastructure"))
        );
        assert!(matches!(
            cancel(true, true, Some(JobRunView::Gone), d(0), &s()),
            CancelAction::Cancel(_)
        ));
        assert!(
            matches!(cancel(true, true, Some(JobRunView::Found(&done)), d(0), &s()), CancelAction::Cancel(m) if m.contains("FAILED"))
        );
        assert!(
            matches!(cancel(true, false, Some(JobRunView::Found(&active)), d(0), &s()), CancelAction::AbortThenCancel(m) if m.contains("while pending"))
        );
        assert_eq!(
            cancel(true, true, Some(JobRunView::Found(&active)), d(30), &s()),
            CancelAction::Wait
        );
        assert!(matches!(
            cancel(true, true, Some(JobRunView::Found(&active)), d(200), &s()),
            CancelAction::AbortThenCancel(_)
        ));
    }
}

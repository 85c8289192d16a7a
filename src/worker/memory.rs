//! What reconciliation remembers between invocations of this process. A warm Lambda container
//! keeps it; a cold one starts empty, which costs at most one extra check per run and one
//! sweep.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use crate::ids::{FlowRunId, InfrastructurePid};
use crate::prefect::events::Related;

/// The most launches remembered; the oldest are forgotten first (a forgotten run costs one
/// Prefect read when its notifications arrive, nothing else).
pub const LAUNCHED_MAX: usize = 10_000;

/// A flow run this process launched: what its notifications need, so that they are provably
/// about a run of ours without reading it from Prefect again.
#[derive(Clone, Debug)]
pub struct KnownRun {
    pub pid: InfrastructurePid,
    /// For the `executed-flow-run` event.
    pub related: Related,
    /// Its start notification was answered: another one (a repeat, or a late one) reads the
    /// flow run, so it writes nothing on a run that has finished.
    pub start_noted: bool,
}

#[derive(Debug, Default)]
pub struct Memory {
    /// When this process last read each active flow run's Northflank run.
    checked: HashMap<FlowRunId, Instant>,
    /// Northflank projects this process has submitted to, swept for leftover jobs.
    projects: BTreeSet<String>,
    /// When this process last swept for leftover jobs.
    swept: Option<Instant>,
    /// Runs this process launched and has not settled, oldest first in `launch_order`.
    launched: HashMap<FlowRunId, KnownRun>,
    launch_order: VecDeque<FlowRunId>,
}

impl Memory {
    pub fn note_launched(&mut self, id: FlowRunId, launched: KnownRun) {
        if self.launched.insert(id, launched).is_none() {
            self.launch_order.push_back(id);
        }
        while self.launch_order.len() > LAUNCHED_MAX {
            if let Some(old) = self.launch_order.pop_front() {
                self.launched.remove(&old);
            }
        }
    }

    pub fn launched(&self, id: FlowRunId) -> Option<&KnownRun> {
        self.launched.get(&id)
    }

    /// The job and run a remembered launch got (its pid was remembered before they existed).
    pub fn note_run(&mut self, id: FlowRunId, pid: &InfrastructurePid) {
        if let Some(known) = self.launched.get_mut(&id) {
            known.pid = pid.clone();
        }
    }

    /// Marks the run's start as noted; false if it already was (or the run is not known).
    pub fn note_start(&mut self, id: FlowRunId) -> bool {
        match self.launched.get_mut(&id) {
            Some(known) if !known.start_noted => {
                known.start_noted = true;
                true
            }
            _ => false,
        }
    }

    /// The run was settled: its notifications are read the usual way from now on.
    pub fn forget_launched(&mut self, id: FlowRunId) {
        if self.launched.remove(&id).is_some() {
            self.launch_order.retain(|x| *x != id);
        }
    }

    pub fn note_project(&mut self, project: &str) {
        if !self.projects.contains(project) {
            self.projects.insert(project.to_string());
        }
    }

    pub fn projects(&self) -> impl Iterator<Item = &String> {
        self.projects.iter()
    }

    /// Forgets the checks of runs that are no longer active.
    pub fn keep_checks_of(&mut self, active: &BTreeSet<FlowRunId>) {
        self.checked.retain(|id, _| active.contains(id));
    }

    pub fn since_checked(&self, id: FlowRunId) -> Option<Duration> {
        self.checked.get(&id).map(Instant::elapsed)
    }

    pub fn checked_now(&mut self, id: FlowRunId) {
        self.checked.insert(id, Instant::now());
    }

    pub fn since_swept(&self) -> Option<Duration> {
        self.swept.map(|t| t.elapsed())
    }

    pub fn swept_now(&mut self) {
        self.swept = Some(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launched(n: u128) -> (FlowRunId, KnownRun) {
        let id = FlowRunId(uuid::Uuid::from_u128(n));
        let pid: InfrastructurePid = format!("p:pf-{}:r", id.0).parse().unwrap();
        let related = Related {
            flow_run: (id, "r".into()),
            flow: (uuid::Uuid::nil(), None),
            deployment: None,
            tags: Vec::new(),
            work_pool: (None, "nf".into()),
        };
        (
            id,
            KnownRun {
                pid,
                related,
                start_noted: false,
            },
        )
    }

    #[test]
    fn launches_are_remembered_up_to_a_bound_oldest_forgotten_first() {
        let mut m = Memory::default();
        for n in 0..(LAUNCHED_MAX as u128 + 2) {
            let (id, l) = launched(n);
            m.note_launched(id, l);
        }
        assert_eq!(m.launched.len(), LAUNCHED_MAX);
        assert!(m.launched(launched(0).0).is_none());
        assert!(m.launched(launched(1).0).is_none());
        assert!(m.launched(launched(2).0).is_some());
        assert!(m.note_start(launched(2).0));
        assert!(!m.note_start(launched(2).0), "once");
        assert!(!m.note_start(launched(0).0), "forgotten");
        m.forget_launched(launched(2).0);
        assert!(m.launched(launched(2).0).is_none());
        assert_eq!(m.launch_order.len(), LAUNCHED_MAX - 1);
    }
}

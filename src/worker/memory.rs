//! What reconciliation remembers between invocations of this process. A warm Lambda container
//! keeps it; a cold one starts empty, which costs at most one extra check per run and one
//! sweep.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use tokio::time::Instant;

use crate::ids::FlowRunId;

#[derive(Debug, Default)]
pub struct Memory {
    /// When this process last read each active flow run's Northflank run.
    checked: HashMap<FlowRunId, Instant>,
    /// Northflank projects this process has submitted to, swept for leftover jobs.
    projects: BTreeSet<String>,
    /// When this process last swept for leftover jobs.
    swept: Option<Instant>,
}

impl Memory {
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

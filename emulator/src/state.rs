//! Shared emulator state. One `std::sync::Mutex` guards all records: no lock is ever held across
//! an `.await`, so handlers, runners and webhook tasks see consistent updates.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use chrono::{SecondsFormat, Utc};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::model::{
    Counters, Delivery, IntegrationRecord, IntegrationView, JobRecord, RecordedRequest, RunRecord,
    Snapshot,
};
use crate::outbox::Queues;

pub(crate) type App = Arc<Inner>;

pub(crate) struct Inner {
    pub config: Config,
    state: Mutex<State>,
    /// Separate RNGs so API faults and webhook faults stay reproducible independently.
    pub api_rng: Mutex<fastrand::Rng>,
    pub hook_rng: Mutex<fastrand::Rng>,
    pub http: reqwest::Client,
    pub shutdown: watch::Sender<bool>,
    pub hooks: Mutex<Queues>,
    /// Process groups of live process-mode children, killed if the emulator is dropped.
    pub process_groups: Mutex<HashSet<u32>>,
    runners: Mutex<Vec<JoinHandle<()>>>,
    background: Mutex<Vec<JoinHandle<()>>>,
    /// Where every API exchange is appended (`Config::record`).
    pub recorder: Option<Mutex<std::fs::File>>,
}

pub(crate) type JobKey = (String, String);

pub(crate) struct JobEntry {
    pub record: JobRecord,
    pub seq: u64,
}

pub(crate) struct RunEntry {
    pub record: RunRecord,
    pub seq: u64,
    /// Set to true when the run concludes from outside its runner (abort, deadline, delete).
    pub stop: watch::Sender<bool>,
}

pub(crate) struct IntegrationEntry {
    pub view: IntegrationView,
    pub secret: Option<String>,
    pub consecutive_failed_events: u32,
    pub disabled_reason: Option<String>,
    pub seq: u64,
}

/// A token's fixed rate-limit window (§4.2).
pub(crate) struct Window {
    pub started: Instant,
    pub count: u64,
}

#[derive(Default)]
pub(crate) struct State {
    pub jobs: BTreeMap<JobKey, JobEntry>,
    pub runs: HashMap<String, RunEntry>,
    pub integrations: BTreeMap<String, IntegrationEntry>,
    pub deliveries: VecDeque<Delivery>,
    pub requests: VecDeque<RecordedRequest>,
    pub counters: Counters,
    pub windows: HashMap<String, Window>,
    seq: u64,
}

impl State {
    /// Insertion order, for stable listings.
    pub fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    pub fn snapshot(&self) -> Snapshot {
        let mut jobs: Vec<&JobEntry> = self.jobs.values().collect();
        jobs.sort_by_key(|j| j.seq);
        let mut runs: Vec<&RunEntry> = self.runs.values().collect();
        runs.sort_by_key(|r| r.seq);
        let mut integrations: Vec<&IntegrationEntry> = self.integrations.values().collect();
        integrations.sort_by_key(|i| i.seq);
        Snapshot {
            jobs: jobs.into_iter().map(|j| j.record.clone()).collect(),
            runs: runs.into_iter().map(|r| r.record.clone()).collect(),
            integrations: integrations
                .into_iter()
                .map(|i| IntegrationRecord {
                    integration: i.view.clone(),
                    has_secret: i.secret.is_some(),
                    consecutive_failed_events: i.consecutive_failed_events,
                    disabled_reason: i.disabled_reason.clone(),
                })
                .collect(),
            deliveries: self.deliveries.iter().cloned().collect(),
            counters: self.counters.clone(),
        }
    }
}

pub(crate) fn push_ring<T>(ring: &mut VecDeque<T>, item: T, capacity: usize) {
    if capacity == 0 {
        return;
    }
    while ring.len() >= capacity {
        ring.pop_front();
    }
    ring.push_back(item);
}

impl Inner {
    pub fn new(config: Config, http: reqwest::Client, recorder: Option<std::fs::File>) -> Self {
        let seed = config.faults.seed;
        Self {
            config,
            state: Mutex::new(State::default()),
            api_rng: Mutex::new(fastrand::Rng::with_seed(seed)),
            hook_rng: Mutex::new(fastrand::Rng::with_seed(seed)),
            http,
            shutdown: watch::Sender::new(false),
            hooks: Mutex::new(Queues::default()),
            process_groups: Mutex::new(HashSet::new()),
            runners: Mutex::new(Vec::new()),
            background: Mutex::new(Vec::new()),
            recorder: recorder.map(Mutex::new),
        }
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    pub fn shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Run executors: awaited on shutdown so child processes are reaped.
    pub fn spawn_runner(&self, fut: impl Future<Output = ()> + Send + 'static) {
        track(&self.runners, tokio::spawn(fut));
    }

    /// Deliveries, timers, engine polls: aborted on shutdown.
    pub fn spawn_background(&self, fut: impl Future<Output = ()> + Send + 'static) {
        track(&self.background, tokio::spawn(fut));
    }

    pub fn take_runners(&self) -> Vec<JoinHandle<()>> {
        std::mem::take(&mut *lock(&self.runners))
    }

    pub fn abort_background(&self) {
        for task in std::mem::take(&mut *lock(&self.background)) {
            task.abort();
        }
    }

    pub fn count(&self, f: impl FnOnce(&mut Counters)) {
        f(&mut self.state().counters);
    }
}

fn track(list: &Mutex<Vec<JoinHandle<()>>>, handle: JoinHandle<()>) {
    let mut list = lock(list);
    list.retain(|h| !h.is_finished());
    list.push(handle);
}

/// A poisoned lock only means another task panicked mid-update; the data is still the best
/// record there is, and a test harness must keep answering.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn now_ms() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub(crate) fn now_secs() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub(crate) fn epoch_secs() -> i64 {
    Utc::now().timestamp()
}

/// Lowercase, whitespace runs → `-` (§1.3, §8).
pub(crate) fn derive_id(name: &str) -> String {
    name.split_whitespace()
        .collect::<Vec<_>>()
        .join("-")
        .to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids() {
        assert_eq!(derive_id("Example Job"), "example-job");
        assert_eq!(derive_id("My  \t App"), "my-app");
        assert_eq!(derive_id("pf-ABC"), "pf-abc");
    }

    #[test]
    fn ring_is_bounded() {
        let mut ring = VecDeque::new();
        for i in 0..5 {
            push_ring(&mut ring, i, 3);
        }
        assert_eq!(ring, [2, 3, 4]);
    }
}

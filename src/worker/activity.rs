//! Dispatch invocations running in this process: a busy Prefect server must not be asked by
//! many at once, and this is how that is known.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

#[derive(Debug, Default)]
pub struct Activity {
    running: AtomicUsize,
    peak: AtomicUsize,
    started: AtomicU64,
}

impl Activity {
    /// Counts one invocation until the returned guard is dropped.
    pub fn enter(self: &Arc<Self>) -> Running {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        self.started.fetch_add(1, Ordering::SeqCst);
        Running(self.clone())
    }

    /// Invocations started so far.
    pub fn started(&self) -> u64 {
        self.started.load(Ordering::SeqCst)
    }

    /// The most invocations that ran at once.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }
}

/// One running invocation, counted by [`Activity`] until dropped.
#[derive(Debug)]
pub struct Running(Arc<Activity>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

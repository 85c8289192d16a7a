//! Instant dispatch's admission: how calls that arrive together become few dispatches.

use std::sync::Mutex;

/// At most one instant dispatch at a time, and at most one more pending: however many calls
/// arrive together, a busy Prefect server is asked by one dispatch (the finding was 85 at once
/// for 200 calls). A call before the running dispatch polls is folded into that poll (its run
/// existed before the call); a call after it asks for one more dispatch, which starts when
/// the running one ends. No task is started per call.
#[derive(Debug, Default)]
pub struct Gate {
    phase: Mutex<Phase>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Phase {
    #[default]
    Idle,
    /// A dispatch runs and has not polled yet.
    BeforePoll,
    /// A dispatch runs and has polled.
    Polled,
    /// A dispatch runs and has polled, and a call came since: one more dispatch follows.
    Again,
}

impl Gate {
    /// A call arrived. `true`: nothing runs, so the caller starts the dispatch loop (`instant::dispatch_loop`).
    pub fn call(&self) -> bool {
        let mut phase = self.lock();
        let (next, start) = match *phase {
            Phase::Idle => (Phase::BeforePoll, true),
            Phase::BeforePoll => (Phase::BeforePoll, false),
            Phase::Polled | Phase::Again => (Phase::Again, false),
        };
        *phase = next;
        start
    }

    /// The running dispatch is about to poll: later calls need a poll of their own.
    pub fn polling(&self) {
        let mut phase = self.lock();
        if *phase == Phase::BeforePoll {
            *phase = Phase::Polled;
        }
    }

    /// The running dispatch has ended. `true`: a call came after its poll, dispatch again.
    pub fn finished(&self) -> bool {
        let mut phase = self.lock();
        let again = *phase == Phase::Again;
        *phase = if again {
            Phase::BeforePoll
        } else {
            Phase::Idle
        };
        again
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_dispatch_at_a_time_and_one_more_pending() {
        let gate = Gate::default();
        assert!(gate.call(), "the first call starts the loop");
        assert!(!gate.call(), "folded into the coming poll");
        assert!(!gate.finished(), "no call after the poll: the loop ends");

        assert!(gate.call());
        gate.polling();
        // The poll is on its way and may miss these calls' runs: one more dispatch, not two.
        assert!(!gate.call());
        assert!(!gate.call());
        assert!(gate.finished(), "one more dispatch follows");
        assert!(!gate.call(), "folded into the dispatch that follows");
        gate.polling();
        assert!(!gate.finished());
        assert!(gate.call(), "idle again: a call starts the loop");
    }
}

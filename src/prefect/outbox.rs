//! What the worker tells Prefect on the side: flow-run log lines and worker events, kept across
//! every flow run this process handles and sent in batches (one `POST /logs/` and one
//! `POST /events` every couple of seconds, as Prefect's own handlers batch), so a busy dispatch
//! costs a few such requests, not one or two per run. Both are best-effort: a batch that cannot
//! be sent is dropped with a warning (its lines are in the worker's own log as well), except one
//! that Prefect's rate limit refused: it is kept for the next send (at most [`HOLD`] lines and
//! as many events), and the next batches are smaller, because Cloud counts lines and events, not
//! requests, and a batch larger than what is left of its minute would be refused every time.
//!
//! Worker labels that Prefect refused when a run was launched go out with the same sends, one
//! at a time: Prefect updates labels by reading then writing the flow run, which a busy server
//! refuses (SQLite answers 503) when other writes land in between, so retrying each at once
//! made a storm of refused writes during a burst of submissions.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use serde_json::{Map, Value};

use super::logs::{LogEntry, RunLog};
use super::{PrefectClient, PrefectError};
use crate::ids::FlowRunId;
use crate::retry::RetryPolicy;

/// Sends of one run's labels before they are given up (labels are informational): with the
/// batches every couple of seconds, or the last send's pauses ([`LABEL_PAUSE`]), between them.
pub const LABEL_TRIES: u32 = 5;

/// The pause before the last send's first repeat of refused labels; each later repeat waits
/// once more as long. A busy SQLite server refuses a read-then-write while other writes land:
/// a short wait is what it takes to find a quiet moment.
pub const LABEL_PAUSE: Duration = Duration::from_millis(500);

#[derive(Debug)]
struct Labels {
    flow_run: FlowRunId,
    labels: Map<String, Value>,
    tries: u32,
}

/// Lines or events per request: a few hundred kilobytes at most.
pub const BATCH: usize = 500;

/// The most lines (and, apart, events) kept after Prefect's rate limit refused them; beyond
/// it the oldest are dropped, and counted.
pub const HOLD: usize = 10 * BATCH;

#[derive(Debug, Default)]
pub struct Outbox {
    logs: Queue<LogEntry>,
    events: Queue<Value>,
    labels: Mutex<Vec<Labels>>,
    /// Held while labels are being sent, so that the last send knows of none in flight.
    sending_labels: tokio::sync::Mutex<()>,
    /// Lines and events a 429 sent back to wait for the next send, each time it did.
    held: AtomicU64,
    /// Lines and events dropped because too many were held.
    dropped: AtomicU64,
    /// Set by a long-running process: what a notification keeps is sent at most this much
    /// later, together with whatever else arrived meanwhile. Unset (Lambda, whose container
    /// may be frozen the moment it answers), everything is sent before answering.
    batching: OnceLock<Duration>,
    /// A batched send is scheduled.
    scheduled: AtomicBool,
}

impl Outbox {
    /// Sends what is kept in batches, at most `every` after it was kept.
    pub fn batch_every(&self, every: Duration) {
        let _ = self.batching.set(every);
    }

    pub fn batching(&self) -> Option<Duration> {
        self.batching.get().copied()
    }

    /// Whether the caller should schedule the next batched send: true once until
    /// [`Outbox::unschedule`].
    pub fn schedule(&self) -> bool {
        !self.scheduled.swap(true, Ordering::AcqRel)
    }

    /// The scheduled send is about to take what is kept; anything kept from now on needs the
    /// next one.
    pub fn unschedule(&self) {
        self.scheduled.store(false, Ordering::Release);
    }

    pub fn keep_logs(&self, log: &mut RunLog) {
        self.logs.keep(log.take());
    }

    pub fn keep_event(&self, event: Value) {
        self.events.keep(vec![event]);
    }

    /// Lines and events that Prefect's rate limit refused and that were kept for a later send,
    /// counted each time (a line refused twice counts twice).
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    /// Lines and events dropped because more than [`HOLD`] were waiting.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Lines and events waiting now.
    pub fn waiting(&self) -> usize {
        lock(&self.logs.items).len() + lock(&self.events.items).len()
    }

    /// Keeps a flow run's labels, refused once already, for the next send.
    pub fn keep_labels(&self, flow_run: FlowRunId, labels: Map<String, Value>) {
        lock(&self.labels).push(Labels {
            flow_run,
            labels,
            tries: 1,
        });
    }

    /// Sends everything kept so far.
    pub async fn send(&self, prefect: &PrefectClient) {
        let prefect = prefect.without_throttled_retries();
        self.send_queue(&self.logs, &prefect).await;
        self.send_queue(&self.events, &prefect).await;
        self.send_labels(&prefect).await;
    }

    /// Sends everything kept, as the last send of an invocation or process: there is no later
    /// batch for labels refused now, so they are sent again here, after a pause, until they
    /// are accepted or out of tries (fewer than [`LABEL_TRIES`] rounds, whatever refuses them:
    /// 0.5 + 1 + 1.5 s of pauses at most, unless the rate limit refuses them). Labels another
    /// send has in flight (a notification's, in the same process) count as waiting.
    pub async fn send_last(&self, prefect: &PrefectClient) {
        self.send(prefect).await;
        let prefect = prefect.without_throttled_retries();
        for round in 1..LABEL_TRIES {
            drop(self.sending_labels.lock().await);
            if lock(&self.labels).is_empty() {
                return;
            }
            tokio::time::sleep(LABEL_PAUSE * round).await;
            self.send_labels(&prefect).await;
        }
    }

    /// Sends a queue in batches. A batch the rate limit refused is kept with everything after
    /// it; any other failure drops the batch with a warning.
    async fn send_queue<T: Item>(&self, queue: &Queue<T>, prefect: &PrefectClient) {
        let mut items = queue.take();
        while !items.is_empty() {
            let rest = items.split_off(queue.batch().min(items.len()));
            match T::send(prefect, &items).await {
                Ok(()) => queue.accepted(),
                Err(e) if e.is_throttled() => {
                    queue.refused(items.len());
                    items.extend(rest);
                    self.hold(queue, items, &e);
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, count = items.len(), "could not send worker {} to Prefect", T::WHAT);
                }
            }
            items = rest;
        }
    }

    fn hold<T>(&self, queue: &Queue<T>, refused: Vec<T>, error: &PrefectError) {
        let count = refused.len();
        self.held.fetch_add(count as u64, Ordering::Relaxed);
        let dropped = queue.hold(refused);
        tracing::debug!(error = %error, count, "Prefect's rate limit refused worker messages: kept for the next send");
        if dropped > 0 {
            self.dropped.fetch_add(dropped as u64, Ordering::Relaxed);
            tracing::warn!(
                dropped,
                kept = HOLD,
                "too many worker messages waiting for Prefect's rate limit: the oldest were dropped"
            );
        }
    }

    /// One write per run, one at a time, none retried at once.
    async fn send_labels(&self, prefect: &PrefectClient) {
        let _sending = self.sending_labels.lock().await;
        let pending = std::mem::take(&mut *lock(&self.labels));
        let once = prefect.with_retries(RetryPolicy::none());
        for mut entry in pending {
            let Err(e) = once.update_labels(entry.flow_run, &entry.labels).await else {
                continue;
            };
            // The rate limit says nothing about the labels: it does not use up their tries.
            entry.tries += u32::from(!e.is_throttled());
            if entry.tries < LABEL_TRIES && e.status() != Some(404) {
                tracing::debug!(error = %e, flow_run_id = %entry.flow_run, "labels refused; sent again with the next batch");
                lock(&self.labels).push(entry);
            } else {
                tracing::warn!(error = %e, flow_run_id = %entry.flow_run, "could not set the worker labels on the flow run");
            }
        }
    }
}

/// What a queue holds, and how a batch of it is sent.
trait Item: Sized {
    const WHAT: &'static str;
    async fn send(prefect: &PrefectClient, batch: &[Self]) -> Result<(), PrefectError>;
}

impl Item for LogEntry {
    const WHAT: &'static str = "log lines";
    async fn send(prefect: &PrefectClient, batch: &[Self]) -> Result<(), PrefectError> {
        prefect.send_logs(batch).await
    }
}

impl Item for Value {
    const WHAT: &'static str = "events";
    async fn send(prefect: &PrefectClient, batch: &[Self]) -> Result<(), PrefectError> {
        prefect.emit_events(batch).await
    }
}

/// Items waiting to be sent, and how many go in one request: halved when the rate limit
/// refuses a batch, doubled back (up to [`BATCH`]) with each batch accepted.
#[derive(Debug)]
struct Queue<T> {
    items: Mutex<Vec<T>>,
    batch: AtomicUsize,
}

impl<T> Default for Queue<T> {
    fn default() -> Self {
        Queue {
            items: Mutex::default(),
            batch: AtomicUsize::new(BATCH),
        }
    }
}

impl<T> Queue<T> {
    fn keep(&self, mut more: Vec<T>) {
        lock(&self.items).append(&mut more);
    }

    fn take(&self) -> Vec<T> {
        std::mem::take(&mut *lock(&self.items))
    }

    fn batch(&self) -> usize {
        self.batch.load(Ordering::Relaxed).max(1)
    }

    fn refused(&self, size: usize) {
        self.batch.store((size / 2).max(1), Ordering::Relaxed);
    }

    fn accepted(&self) {
        let grown = self.batch().saturating_mul(2).min(BATCH);
        self.batch.store(grown, Ordering::Relaxed);
    }

    /// Puts `refused` back before what was kept since, in order, keeping at most [`HOLD`]:
    /// the oldest go first. Returns how many were dropped.
    fn hold(&self, mut refused: Vec<T>) -> usize {
        let mut items = lock(&self.items);
        refused.append(&mut items);
        let over = refused.len().saturating_sub(HOLD);
        refused.drain(..over);
        *items = refused;
        over
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_batch_is_kept_in_order_bounded_and_the_next_batches_are_smaller() {
        let queue = Queue::<u32>::default();
        queue.keep((0..10).collect());
        let mut taken = queue.take();
        let rest = taken.split_off(4);
        queue.keep(vec![100, 101]);
        queue.refused(taken.len());
        taken.extend(rest);
        assert_eq!(queue.hold(taken), 0);
        assert_eq!(
            queue.take(),
            [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 100, 101],
            "refused first, then what came meanwhile"
        );
        assert_eq!(queue.batch(), 2, "halved");
        queue.refused(1);
        assert_eq!(queue.batch(), 1, "never below one");
        for _ in 0..20 {
            queue.accepted();
        }
        assert_eq!(queue.batch(), BATCH, "grows back to the full batch");

        queue.keep((0..HOLD as u32).collect());
        assert_eq!(queue.hold(vec![7; 3]), 3, "the oldest beyond the bound go");
        let kept = queue.take();
        assert_eq!(kept.len(), HOLD);
        assert_eq!(kept[0], 0);
    }
}

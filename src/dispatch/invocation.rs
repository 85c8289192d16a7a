//! One dispatch invocation, in named phases: begin (the first heartbeat, the log sender), the
//! poll window (heartbeat when due, poll, submit, wait), drain (the submissions and heartbeats
//! still running), finish (the last log batch, the summary). Prefect's rate limit is reported
//! once, when the invocation first meets it, and in the summary.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Semaphore, oneshot};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tracing::Instrument;

use super::submit::{self, SubmitOutcome, submit};
use super::{LOG_FLUSH_EVERY, SUBMIT_RESERVE, Summary, poll, read_pool, send_heartbeat};
use crate::ids::FlowRunId;
use crate::prefect::models::{WorkPool, WorkerFlowRun};
use crate::worker::Worker;

/// How long an invocation polls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The EventBridge schedule (or the local loop): polls every `poll_interval` for
    /// `poll_window`.
    Scheduled,
    /// Instant dispatch: one poll, which the gate is told about just before it goes out.
    Instant,
}

/// When an invocation started, and the request counters then: its summary counts from here.
#[derive(Clone, Copy, Debug)]
pub struct Start {
    at: Instant,
    prefect: u64,
    northflank: u64,
    throttled: u64,
    prefect_throttled: u64,
    prefect_paused: (Duration, Duration),
    held: u64,
    dropped: u64,
}

impl Start {
    pub fn now(worker: &Worker) -> Self {
        let outbox = &worker.kept.outbox;
        Start {
            at: Instant::now(),
            prefect: worker.prefect.requests_sent(),
            northflank: worker.northflank.requests_sent(),
            throttled: worker.northflank.throttled(),
            prefect_throttled: worker.prefect.throttled(),
            prefect_paused: worker.prefect.paused_total(),
            held: outbox.held(),
            dropped: outbox.dropped(),
        }
    }
}

/// Runs one invocation of `pool` until `deadline`.
pub async fn run(
    worker: &Worker,
    pool: WorkPool,
    deadline: Instant,
    mode: Mode,
    start: Start,
) -> Summary {
    let _running = worker.activity().enter();
    let mut invocation = Invocation::begin(worker, pool, deadline, mode, start);
    invocation.poll_window().await;
    invocation.drain().await;
    invocation.finish().await
}

struct Invocation {
    worker: Arc<Worker>,
    deadline: Instant,
    mode: Mode,
    start: Start,
    pool: Arc<WorkPool>,
    summary: Summary,
    heartbeats: JoinSet<bool>,
    last_heartbeat: Instant,
    submissions: Submissions,
    logs: LogSender,
    /// Prefect's rate limit has been reported (once per invocation).
    throttling_reported: bool,
}

impl Invocation {
    /// The first heartbeat goes out beside the polls (a busy server must not delay them), and
    /// so do the worker's messages, in batches.
    fn begin(worker: &Worker, pool: WorkPool, deadline: Instant, mode: Mode, start: Start) -> Self {
        let worker = Arc::new(worker.until(deadline));
        let mut invocation = Invocation {
            submissions: Submissions::new(worker.settings.polling.max_concurrency),
            logs: LogSender::start(worker.clone()),
            worker,
            deadline,
            mode,
            start,
            pool: Arc::new(pool),
            summary: Summary::default(),
            heartbeats: JoinSet::new(),
            last_heartbeat: Instant::now(),
            throttling_reported: false,
        };
        invocation.beat();
        invocation
    }

    fn beat(&mut self) {
        let worker = self.worker.clone();
        self.heartbeats.spawn(
            async move { send_heartbeat(&worker).await }.instrument(tracing::Span::current()),
        );
        self.last_heartbeat = Instant::now();
    }

    /// Polls every interval until the window closes (or once, for an instant invocation). After
    /// a full poll there may be more waiting: the next poll goes out as soon as a slot frees, so
    /// a backlog drains at the speed of submission rather than one batch per tick.
    async fn poll_window(&mut self) {
        let polling = &self.worker.settings.polling;
        let (interval, window) = match self.mode {
            Mode::Scheduled => (polling.interval, polling.window),
            Mode::Instant => (polling.interval, std::time::Duration::ZERO),
        };
        let end_by = self
            .deadline
            .checked_sub(SUBMIT_RESERVE)
            .unwrap_or(self.start.at);
        let window_end = (self.start.at + window).min(end_by);
        loop {
            let tick = Instant::now();
            self.heartbeat_if_due().await;
            let paused = self.worker.prefect.paused_until();
            if !super::worth_polling(tick, self.deadline, paused) {
                self.report_throttling();
                return;
            }
            let full = self.poll_and_submit().await;
            self.report_throttling();
            let next = tick + interval;
            if next > window_end {
                return;
            }
            self.collect_until(next, full).await;
        }
    }

    /// Heartbeats happen every `heartbeat_interval`, with the pool read again then.
    async fn heartbeat_if_due(&mut self) {
        if self.last_heartbeat.elapsed() < self.worker.settings.polling.heartbeat_interval {
            return;
        }
        self.beat();
        if let Ok(pool) = read_pool(&self.worker).await {
            self.pool = Arc::new(pool);
        }
    }

    /// One poll for what fits, and a submission for each run chosen. Returns whether the poll
    /// was full (or the slots saturated): more may be waiting.
    async fn poll_and_submit(&mut self) -> bool {
        self.summary.polls += 1;
        let polling = &self.worker.settings.polling;
        let free = polling
            .max_concurrency
            .saturating_sub(self.submissions.busy())
            .min(polling.limit as usize) as u32;
        if self.mode == Mode::Instant {
            self.worker.gate().polling();
        }
        match poll(&self.worker, (free * 2).min(polling.limit)).await {
            Ok(runs) => {
                let full = runs.len() as u32 >= free;
                let runs = pick(runs, free as usize, &mut fastrand::Rng::new());
                self.summary.found += runs.len() as u32;
                for entry in runs {
                    self.submit(entry);
                }
                full
            }
            Err(e) => {
                self.summary.poll_errors += 1;
                tracing::warn!(error = %e, "poll failed");
                false
            }
        }
    }

    fn submit(&mut self, entry: WorkerFlowRun) {
        let (worker, pool) = (self.worker.clone(), self.pool.clone());
        if !self
            .submissions
            .spawn(entry, move |entry, permits| async move {
                let Ok(_permit) = permits.acquire().await else {
                    return SubmitOutcome::NotClaimed {
                        reason: "the invocation is ending".into(),
                    };
                };
                match submit::gate(&worker) {
                    Some(outcome) => outcome,
                    None => submit(&worker, &pool, &entry).await,
                }
            })
        {
            self.summary.skipped += 1;
        }
    }

    /// Collects finished submissions until `next`, or until a slot frees after a full poll.
    async fn collect_until(&mut self, next: Instant, full: bool) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(next) => return,
                Some(done) = self.submissions.tasks.join_next() => {
                    record(&mut self.summary, done);
                    if full {
                        return;
                    }
                }
            }
        }
    }

    /// Waits for the submissions and heartbeats still running, up to the deadline. Anything
    /// still running then is abandoned; reconciliation finishes it.
    async fn drain(&mut self) {
        let deadline = self.deadline;
        while let Ok(Some(done)) =
            tokio::time::timeout_at(deadline, self.submissions.tasks.join_next()).await
        {
            record(&mut self.summary, done);
        }
        while let Ok(Some(sent)) =
            tokio::time::timeout_at(deadline, self.heartbeats.join_next()).await
        {
            self.summary.heartbeat_errors += u32::from(!sent.unwrap_or(false));
        }
        self.summary.skipped += self.submissions.tasks.len() as u32;
        self.submissions.tasks.abort_all();
    }

    fn report_throttling(&mut self) {
        let seen_before = self.start.prefect_throttled;
        report_throttling(&self.worker, seen_before, &mut self.throttling_reported);
    }

    async fn finish(mut self) -> Summary {
        self.logs.stop(self.deadline).await;
        let (worker, start) = (&self.worker, &self.start);
        report_throttling(
            worker,
            start.prefect_throttled,
            &mut self.throttling_reported,
        );
        let mut summary = self.summary;
        summary.prefect_requests = worker.prefect.requests_sent() - start.prefect;
        summary.northflank_requests = worker.northflank.requests_sent() - start.northflank;
        summary.northflank_throttled = worker.northflank.throttled() - start.throttled;
        summary.prefect_throttled = worker.prefect.throttled() - start.prefect_throttled;
        let (api, logs) = worker.prefect.paused_total();
        let ms = |now: Duration, then: Duration| now.saturating_sub(then).as_millis() as u64;
        summary.prefect_paused_ms = ms(api, start.prefect_paused.0);
        summary.prefect_logs_paused_ms = ms(logs, start.prefect_paused.1);
        summary.logs_held = worker.kept.outbox.held() - start.held;
        summary.logs_dropped = worker.kept.outbox.dropped() - start.dropped;
        summary.duration_ms = start.at.elapsed().as_millis() as u64;
        log_summary(&summary);
        summary
    }
}

/// The submissions of one invocation: at most `max_concurrency` at once, each flow run once.
struct Submissions {
    tasks: JoinSet<SubmitOutcome>,
    permits: Arc<Semaphore>,
    in_flight: Arc<Mutex<HashSet<FlowRunId>>>,
}

impl Submissions {
    fn new(max_concurrency: usize) -> Self {
        Submissions {
            tasks: JoinSet::new(),
            permits: Arc::new(Semaphore::new(max_concurrency)),
            in_flight: Arc::default(),
        }
    }

    fn busy(&self) -> usize {
        self.in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Starts `work` for `entry` unless its flow run is already in flight (`false`).
    fn spawn<F, Fut>(&mut self, entry: WorkerFlowRun, work: F) -> bool
    where
        F: FnOnce(WorkerFlowRun, Arc<Semaphore>) -> Fut,
        Fut: Future<Output = SubmitOutcome> + Send + 'static,
    {
        let id = entry.flow_run.id;
        let in_flight = self.in_flight.clone();
        if !in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id)
        {
            return false;
        }
        let submission = work(entry, self.permits.clone());
        self.tasks.spawn(
            async move {
                let outcome = submission.await;
                in_flight
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
                outcome
            }
            .instrument(tracing::Span::current()),
        );
        true
    }
}

/// Sends the worker's messages in batches while the invocation runs, and once more at its end.
struct LogSender {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl LogSender {
    fn start(worker: Arc<Worker>) -> Self {
        let (stop, mut stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            loop {
                let last = tokio::select! {
                    _ = tokio::time::sleep(LOG_FLUSH_EVERY) => false,
                    _ = &mut stopped => true,
                };
                if last {
                    break worker.send_at_invocation_end().await;
                }
                worker.send_pending().await;
            }
        });
        LogSender { stop, task }
    }

    async fn stop(self, deadline: Instant) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout_at(deadline, self.task).await;
    }
}

/// `n` of the polled runs, chosen at random. Dispatchers polling at the same moment get the
/// same runs, oldest first; asking for twice what fits and choosing at random keeps them from
/// all proposing PENDING for the same few (the losers' proposals are wasted writes on the
/// server). Runs not chosen are offered again by the next poll, moments later.
fn pick<T>(mut runs: Vec<T>, n: usize, rng: &mut fastrand::Rng) -> Vec<T> {
    if runs.len() > n {
        rng.shuffle(&mut runs);
        runs.truncate(n);
    }
    runs
}

fn record(summary: &mut Summary, done: Result<SubmitOutcome, tokio::task::JoinError>) {
    match done {
        Ok(outcome) => summary.record(&outcome),
        Err(e) => {
            summary.failed += 1;
            tracing::error!(error = %e, "a submission task ended abnormally");
        }
    }
}

/// One WARN line the first time an invocation sees Prefect's rate limit (`seen_before`: the
/// 429s counted when it started), not one per refused request.
fn report_throttling(worker: &Worker, seen_before: u64, reported: &mut bool) {
    let prefect = &worker.prefect;
    if *reported || prefect.throttled() == seen_before {
        return;
    }
    *reported = true;
    let until = prefect
        .paused_until()
        .map(|(_, wall)| wall.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    tracing::warn!(
        paused_until = until.as_deref().unwrap_or("not paused now"),
        "Prefect is rate-limiting this worker (HTTP 429): its Prefect calls wait for the time Prefect names, and no flow run is claimed meanwhile"
    );
}

fn log_summary(summary: &Summary) {
    tracing::info!(
        polls = summary.polls,
        found = summary.found,
        claimed = summary.claimed,
        submitted = summary.submitted,
        failed = summary.failed,
        crashed = summary.crashed,
        skipped = summary.skipped,
        cancelled = summary.cancelled,
        rescheduled = summary.rescheduled,
        deferred = summary.deferred,
        interrupted = summary.interrupted,
        heartbeat_errors = summary.heartbeat_errors,
        poll_errors = summary.poll_errors,
        prefect_requests = summary.prefect_requests,
        northflank_requests = summary.northflank_requests,
        northflank_throttled = summary.northflank_throttled,
        prefect_throttled = summary.prefect_throttled,
        prefect_paused_ms = summary.prefect_paused_ms,
        prefect_logs_paused_ms = summary.prefect_logs_paused_ms,
        logs_held = summary.logs_held,
        logs_dropped = summary.logs_dropped,
        duration_ms = summary.duration_ms,
        "dispatch invocation finished"
    );
}

#[cfg(test)]
mod tests {
    use super::pick;

    #[test]
    fn pick_chooses_distinct_runs_and_varies() {
        let mut rng = fastrand::Rng::with_seed(7);
        assert_eq!(pick(vec![1, 2, 3], 8, &mut rng), vec![1, 2, 3]);
        let mut firsts = std::collections::HashSet::new();
        for _ in 0..20 {
            let mut chosen = pick((0..16).collect(), 8, &mut rng);
            firsts.insert(chosen.clone());
            chosen.sort();
            chosen.dedup();
            assert_eq!(chosen.len(), 8);
        }
        assert!(
            firsts.len() > 1,
            "two dispatchers must not always choose the same runs"
        );
    }
}

//! The glue between the AWS Lambda runtimes and the steps. The binaries in `src/bin` only
//! build an [`App`] and hand these handlers to the runtime.
//!
//! Credentials are read once per container (from Secrets Manager when `PFNF_SECRET_ID` is set)
//! and again when Prefect or Northflank refused them during an invocation, which is what a
//! rotated token looks like; the failed work is then tried once more with the new credentials.
//!
//! Instant dispatch spans two functions: the webhook function answers the automation's call as
//! soon as it has handed the call to the instant-dispatch function ([`invoke`]), which runs the
//! dispatch binary; [`dispatch`] tells the schedule's ticks from those calls by their payload.

pub mod invoke;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::Utc;
use lambda_http::{Body, Request, Response};
use lambda_runtime::LambdaEvent;
use serde::Serialize;
use serde_json::Value;
use tokio::time::Instant;
use tower::ServiceExt;

use crate::config::{PollingSettings, Settings, Source};
use crate::dispatch::{self, DispatchError};
use crate::endpoint::{self, Endpoint, InstantMode};
use crate::scheduled::{self, Summary, metrics};
use crate::worker::{Current, Worker};
use invoke::{Invoker, Trigger};

pub type Error = lambda_runtime::Error;

/// Time kept back from the Lambda deadline for logging and returning the summary.
const DEADLINE_MARGIN: Duration = Duration::from_secs(2);

/// How far the clocks of the webhook's and the instant-dispatch function's hosts may disagree,
/// as far as folding calls is concerned (clocks kept by NTP agree far better).
const CLOCK_MARGIN: Duration = Duration::from_millis(500);

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// One Lambda container's worker, and what the function it serves keeps.
pub struct App {
    current: Arc<Current>,
    /// The webhook function's router.
    router: OnceLock<axum::Router>,
    /// The webhook function's hand-off of instant-dispatch calls (`PFNF_INSTANT_FUNCTION`).
    hand_off: Option<Arc<Invoker>>,
    /// The dispatch binary: when this container's latest quick dispatch whose poll took every
    /// run due began. Calls sent before it are folded into it.
    covered_until: Mutex<Option<SystemTime>>,
}

impl App {
    /// Settings from the environment, credentials from the secret (or the environment), and
    /// the hand-off when `PFNF_INSTANT_FUNCTION` names the instant-dispatch function.
    pub async fn from_env() -> Result<App, Error> {
        let settings = Settings::from_env()?;
        let source = Source::from_lookup(&env_var).await;
        let credentials = source.load().await?;
        let hand_off = match &settings.webhook.instant_function {
            Some(function) => Some(Invoker::from_env(function, &env_var).await?),
            None => None,
        };
        let app = App::new(Worker::new(settings, credentials)?, source);
        Ok(match hand_off {
            Some(invoker) => app.handing_off_to(invoker),
            None => app,
        })
    }

    pub fn new(worker: Worker, source: Source) -> App {
        App {
            current: Arc::new(Current::new(worker, Some(source))),
            router: OnceLock::new(),
            hand_off: None,
            covered_until: Mutex::new(None),
        }
    }

    /// The same app, its webhook handing instant-dispatch calls to `invoker`'s function.
    pub fn handing_off_to(self, invoker: Invoker) -> App {
        App {
            hand_off: Some(Arc::new(invoker)),
            ..self
        }
    }

    /// The worker as it is now (its credentials may have been read again since the start).
    pub async fn worker(&self) -> Arc<Worker> {
        self.current.worker().await
    }

    /// The endpoint's router, for `lambda_http::run`: built on first use, so the dispatch
    /// function never builds it. Instant-dispatch calls are handed over when there is a
    /// function to hand them to, and dispatched inline otherwise.
    pub fn router(&self) -> axum::Router {
        self.router
            .get_or_init(|| {
                let deadline = invocation_deadline;
                let instant = match &self.hand_off {
                    Some(invoker) => InstantMode::HandOff {
                        to: invoker.clone(),
                        deadline,
                    },
                    None => InstantMode::Inline { deadline },
                };
                let settings = self.current.settings().webhook.clone();
                let endpoint = Endpoint::new(self.current.clone(), instant, settings);
                endpoint::router(Arc::new(endpoint))
            })
            .clone()
    }
}

/// The invocation's deadline, from the context `lambda_http` puts in the request.
fn invocation_deadline(extensions: &axum::http::Extensions) -> Option<Instant> {
    extensions
        .get::<lambda_runtime::Context>()
        .map(|c| deadline(c.deadline))
}

/// The longest a Lambda invocation can run.
const LAMBDA_MAX: Duration = Duration::from_secs(15 * 60);

/// Time left in the invocation, from `Lambda-Runtime-Deadline-Ms`: Unix milliseconds in AWS. Local
/// runtime emulators are known to send other things (cargo-lambda 1.9.2 sends the timeout itself,
/// e.g. 600000), so a value that cannot be a deadline from this era counts as a relative
/// timeout, and nothing is allowed past Lambda's 15-minute maximum.
fn time_left(context_deadline_ms: u64, now_ms: u64) -> Duration {
    const AN_HOUR_MS: u64 = 3_600_000;
    let left = if context_deadline_ms + AN_HOUR_MS < now_ms {
        Duration::from_millis(context_deadline_ms)
    } else {
        Duration::from_millis(context_deadline_ms.saturating_sub(now_ms))
    };
    left.min(LAMBDA_MAX)
}

/// The invocation's deadline on tokio's clock.
fn deadline(context_deadline_ms: u64) -> Instant {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    Instant::now() + time_left(context_deadline_ms, now_ms).saturating_sub(DEADLINE_MARGIN)
}

/// What one invocation of the dispatch binary did.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Invocation {
    /// The schedule's tick: a dispatch window with reconciliation beside it.
    Scheduled(Summary),
    /// An instant-dispatch call handed over by the webhook function.
    Instant { instant: InstantOutcome },
}

/// What an instant-dispatch event led to.
#[derive(Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InstantOutcome {
    /// A quick dispatch: heartbeat and one poll.
    Dispatched(dispatch::Summary),
    /// Nothing to do: the call was sent before this container's latest quick dispatch began,
    /// whose poll took every run due, the call's run among them.
    Folded,
}

/// The dispatch binary (the scheduled dispatch function and the instant-dispatch function):
/// an instant-dispatch event runs a quick dispatch, anything else a scheduled invocation.
pub async fn dispatch(app: &App, event: LambdaEvent<Value>) -> Result<Invocation, Error> {
    let deadline = deadline(event.context.deadline);
    match invoke::trigger(&event.payload) {
        Trigger::Instant { sent_at } => {
            let instant = instant(app, sent_at, deadline).await?;
            Ok(Invocation::Instant { instant })
        }
        Trigger::Scheduled => Ok(Invocation::Scheduled(
            scheduled(app, &event.payload, deadline).await?,
        )),
    }
}

/// The scheduled invocation: a dispatch window and reconciliation.
async fn scheduled(app: &App, payload: &Value, deadline: Instant) -> Result<Summary, Error> {
    let seconds_left = deadline
        .saturating_duration_since(Instant::now())
        .as_secs_f64();
    let schedule = payload.get("resources").unwrap_or(&Value::Null);
    tracing::info!(%schedule, seconds_left, "dispatch invoked");
    // The invocation logs its summary; the metrics go to stdout on their own line, where
    // CloudWatch Logs extracts them.
    let summary = app
        .current
        .run(Result::is_err, |worker| async move {
            let summary = scheduled::invoke(&worker, deadline).await?;
            if let Some(namespace) = &worker.settings.metrics_namespace {
                let pool = worker.settings.prefect.work_pool.as_str();
                println!("{}", metrics::emf(namespace, pool, &summary, Utc::now()));
            }
            Ok::<_, DispatchError>(summary)
        })
        .await?;
    Ok(summary)
}

/// An instant-dispatch call: a quick dispatch, unless this container's latest one already
/// covered the call. A container runs one invocation at a time and several may run at once
/// (the function's reserved concurrency); PENDING proposals keep their claims apart.
async fn instant(
    app: &App,
    sent_at: Option<SystemTime>,
    deadline: Instant,
) -> Result<InstantOutcome, Error> {
    let covered_until = *app.covered_until.lock().unwrap_or_else(|e| e.into_inner());
    if folded(sent_at, covered_until) {
        tracing::info!("instant dispatch: the call's run was there for the latest poll");
        return Ok(InstantOutcome::Folded);
    }
    let began = SystemTime::now();
    let deadline = deadline.min(Instant::now() + crate::instant::BUDGET);
    let summary = app
        .current
        .run(Result::is_err, |worker| async move {
            crate::instant::dispatch_once(&worker, deadline).await
        })
        .await?;
    if took_every_run_due(&summary, &app.current.settings().polling) {
        *app.covered_until.lock().unwrap_or_else(|e| e.into_inner()) = Some(began);
    }
    Ok(InstantOutcome::Dispatched(summary))
}

/// Whether a call sent at `sent_at` was covered by a quick dispatch that began at
/// `covered_until` and took every run due: the call's run existed before the call was sent, so
/// a poll that began after the call (by more than the two hosts' clocks may disagree) found it.
/// A call without a readable time is never folded.
fn folded(sent_at: Option<SystemTime>, covered_until: Option<SystemTime>) -> bool {
    match (sent_at, covered_until) {
        (Some(sent), Some(until)) => sent + CLOCK_MARGIN < until,
        _ => false,
    }
}

/// Whether a quick dispatch's poll went through and took every run due: it was not full (an
/// instant dispatch starts with every submission slot free, so a full poll found as many runs
/// as it had slots, and more may be waiting).
fn took_every_run_due(summary: &dispatch::Summary, polling: &PollingSettings) -> bool {
    let slots = polling.max_concurrency.min(polling.limit as usize);
    summary.polls > summary.poll_errors && (summary.found as usize) < slots
}

/// The webhook function, behind a Function URL (payload format 2.0): one request through the
/// endpoint's router, as `lambda_http::run(app.router())` serves them. Northflank's
/// notifications come on any path, the instant-dispatch automation's calls on
/// [`INSTANT_PATH`](crate::routes::INSTANT_PATH).
pub async fn webhook(app: &App, request: Request) -> Result<Response<Body>, Error> {
    let response = app
        .router()
        .oneshot(request.map(axum::body::Body::new))
        .await?;
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await?;
    Ok(Response::from_parts(parts, Body::from(bytes.to_vec())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_is_folded_only_into_a_poll_that_began_after_it() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_795_774_070);
        let ms = Duration::from_millis;
        assert!(
            folded(Some(t0), Some(t0 + ms(501))),
            "sent well before the poll"
        );
        assert!(
            !folded(Some(t0), Some(t0 + ms(500))),
            "within the clocks' margin"
        );
        assert!(
            !folded(Some(t0 + ms(10)), Some(t0)),
            "sent after the poll began"
        );
        assert!(!folded(None, Some(t0 + ms(10_000))), "no readable time");
        assert!(!folded(Some(t0), None), "no poll yet in this container");
    }

    #[test]
    fn only_a_poll_that_took_every_run_due_covers_earlier_calls() {
        let polling = PollingSettings::default();
        let summary = |polls, poll_errors, found| dispatch::Summary {
            polls,
            poll_errors,
            found,
            ..Default::default()
        };
        let slots = polling.max_concurrency.min(polling.limit as usize) as u32;
        assert!(took_every_run_due(&summary(1, 0, 0), &polling));
        assert!(took_every_run_due(&summary(1, 0, slots - 1), &polling));
        assert!(
            !took_every_run_due(&summary(1, 0, slots), &polling),
            "full: more may wait"
        );
        assert!(
            !took_every_run_due(&summary(1, 1, 0), &polling),
            "the poll failed"
        );
        assert!(
            !took_every_run_due(&summary(0, 0, 0), &polling),
            "no poll (the pool could not be read)"
        );
    }

    #[test]
    fn reads_the_deadline_header_defensively() {
        let now = 1_795_774_070_896;
        assert_eq!(
            time_left(now + 90_000, now),
            Duration::from_secs(90),
            "AWS: Unix milliseconds"
        );
        assert_eq!(time_left(now - 500, now), Duration::ZERO, "already past");
        assert_eq!(
            time_left(600_000, now),
            Duration::from_secs(600),
            "cargo-lambda: the timeout itself"
        );
        assert_eq!(
            time_left(now + 86_400_000, now),
            LAMBDA_MAX,
            "never past Lambda's maximum"
        );
    }
}

//! The glue between the AWS Lambda runtimes and the two steps. The binaries in `src/bin` only
//! build an [`App`] and hand these handlers to the runtime.
//!
//! Credentials are read once per container (from Secrets Manager when `PFNF_SECRET_ID` is set)
//! and again when Prefect or Northflank refused them during an invocation, which is what a
//! rotated token looks like; the failed work is then tried once more with the new credentials.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lambda_events::eventbridge::EventBridgeEvent;
use chrono::Utc;
use lambda_http::{Body, Request, Response};
use lambda_runtime::LambdaEvent;
use serde_json::Value;
use tokio::time::Instant;
use tower::ServiceExt;

use crate::config::{Settings, Source};
use crate::dispatch::DispatchError;
use crate::endpoint::{self, Endpoint, InstantMode};
use crate::scheduled::{self, Summary, metrics};
use crate::worker::{Current, Worker};

pub type Error = lambda_runtime::Error;

/// Time kept back from the Lambda deadline for logging and returning the summary.
const DEADLINE_MARGIN: Duration = Duration::from_secs(2);

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// One Lambda container's worker, and (for the webhook function) the endpoint's router.
pub struct App {
    current: Arc<Current>,
    router: OnceLock<axum::Router>,
}

impl App {
    /// Settings from the environment, credentials from the secret (or the environment).
    pub async fn from_env() -> Result<App, Error> {
        let settings = Settings::from_env()?;
        let source = Source::from_lookup(&env_var).await;
        let credentials = source.load().await?;
        Ok(App::new(Worker::new(settings, credentials)?, source))
    }

    pub fn new(worker: Worker, source: Source) -> App {
        App {
            current: Arc::new(Current::new(worker, Some(source))),
            router: OnceLock::new(),
        }
    }

    /// The worker as it is now (its credentials may have been read again since the start).
    pub async fn worker(&self) -> Arc<Worker> {
        self.current.worker().await
    }

    /// The endpoint's router, for `lambda_http::run`: built on first use, so the dispatch
    /// function never builds it.
    pub fn router(&self) -> axum::Router {
        self.router
            .get_or_init(|| {
                let instant = InstantMode::Inline {
                    deadline: invocation_deadline,
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

/// The scheduled dispatch function.
pub async fn dispatch(
    app: &App,
    event: LambdaEvent<EventBridgeEvent<Value>>,
) -> Result<Summary, Error> {
    let deadline = deadline(event.context.deadline);
    let seconds_left = deadline
        .saturating_duration_since(Instant::now())
        .as_secs_f64();
    tracing::info!(schedule = ?event.payload.resources, seconds_left, "dispatch invoked");
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

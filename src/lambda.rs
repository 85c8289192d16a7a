//! The glue between the AWS Lambda runtimes and the two steps. The binaries in `src/bin` only
//! build an [`App`] and hand these handlers to the runtime.
//!
//! Credentials are read once per container (from Secrets Manager when `PFNF_SECRET_ID` is set)
//! and again when Prefect or Northflank refused them during an invocation, which is what a
//! rotated token looks like; the failed work is then tried once more with the new credentials.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lambda_events::eventbridge::EventBridgeEvent;
use chrono::Utc;
use lambda_http::{Body, Request, RequestExt, Response};
use lambda_runtime::LambdaEvent;
use serde_json::Value;
use tokio::sync::RwLock;
use tokio::time::Instant;

use crate::config::Settings;
use crate::dispatch::{self, Summary};
use crate::metrics;
use crate::secrets::Source;
use crate::worker::Worker;

pub type Error = lambda_runtime::Error;

/// Time kept back from the Lambda deadline for logging and returning the summary.
const DEADLINE_MARGIN: Duration = Duration::from_secs(2);

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

pub struct App {
    source: Source,
    worker: RwLock<Arc<Worker>>,
}

impl App {
    /// Settings from the environment, credentials from the secret (or the environment).
    pub async fn from_env() -> Result<App, Error> {
        let settings = Settings::from_lookup(&env_var)?;
        let source = Source::from_lookup(&env_var).await;
        let credentials = source.load().await?;
        Ok(App::new(Worker::new(settings, credentials)?, source))
    }

    pub fn new(worker: Worker, source: Source) -> App {
        App {
            source,
            worker: RwLock::new(Arc::new(worker)),
        }
    }

    pub async fn worker(&self) -> Arc<Worker> {
        self.worker.read().await.clone()
    }

    /// Runs `work`; when it met a refused credential, reads the credentials again and, if the
    /// work `failed`, runs it once more with them.
    async fn run<T, F, Fut>(&self, failed: fn(&T) -> bool, work: F) -> T
    where
        F: Fn(Arc<Worker>) -> Fut,
        Fut: Future<Output = T>,
    {
        let worker = self.worker().await;
        let refusals = |w: &Worker| w.prefect.auth_failures() + w.northflank.auth_failures();
        let before = refusals(&worker);
        let out = work(worker.clone()).await;
        if refusals(&worker) == before {
            return out;
        }
        tracing::warn!("credentials were refused; reading them again");
        let fresh = match self.source.load().await {
            Ok(credentials) => {
                Worker::new(worker.settings.clone(), credentials).map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        };
        match fresh {
            Ok(fresh) => {
                let fresh = Arc::new(fresh);
                *self.worker.write().await = fresh.clone();
                if failed(&out) { work(fresh).await } else { out }
            }
            Err(e) => {
                tracing::error!(error = %e, "could not read the credentials again");
                out
            }
        }
    }
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
    // `dispatch::invoke` logs the summary; the metrics go to stdout on their own line, where
    // CloudWatch Logs extracts them.
    let summary = app
        .run(Result::is_err, |worker| async move {
            let summary = dispatch::invoke(&worker, deadline).await?;
            if let Some(namespace) = &worker.settings.metrics_namespace {
                let pool = worker.settings.work_pool.as_str();
                println!("{}", metrics::emf(namespace, pool, &summary, Utc::now()));
            }
            Ok::<_, dispatch::DispatchError>(summary)
        })
        .await?;
    Ok(summary)
}

/// The webhook function, behind a Function URL (payload format 2.0): Northflank's
/// notifications on any path, and the instant-dispatch automation's calls on
/// [`instant::PATH`](crate::instant::PATH).
pub async fn webhook(app: &App, request: Request) -> Result<Response<Body>, Error> {
    let (headers, body) = (request.headers(), request.body().as_ref());
    let response = if request.uri().path() == crate::instant::PATH {
        let deadline = request
            .lambda_context_ref()
            .map_or_else(
                || Instant::now() + crate::instant::BUDGET,
                |c| deadline(c.deadline),
            )
            .min(Instant::now() + crate::instant::BUDGET);
        app.run(
            |r: &crate::webhook::Response| r.status == 503,
            |worker| async move { crate::instant::handle(&worker, headers, deadline).await },
        )
        .await
    } else {
        app.run(
            |r: &crate::webhook::Response| r.status == 503,
            |worker| async move { crate::webhook::handle(&worker, headers, body).await },
        )
        .await
    };
    Ok(Response::builder()
        .status(response.status)
        .header("content-type", "application/json")
        .body(Body::from(response.body.to_string()))?)
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

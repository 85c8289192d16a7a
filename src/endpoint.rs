//! The worker's HTTP surface: one axum [`Router`], served by the local worker and, through
//! `lambda_http`, by the webhook function's Function URL.
//!
//! The URL is public, so every request is treated as hostile until its token is checked: the
//! token (exactly one header, compared in constant time) comes before the body is read, a body
//! is refused from its `Content-Length` or while it streams once it passes the limit, and a
//! refusal closes the connection and costs one counter increment, with one log line per
//! interval at most. Timeouts bound how long a request may take and how long its body may
//! trickle in; the local server adds connection-level limits (`local`).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use tokio::time::Instant;
use tower_http::timeout::{RequestBodyTimeoutLayer, TimeoutLayer};

use crate::config::{Secret, WebhookSettings};
use crate::routes::{
    DISPATCH_TOKEN_HEADER, HEALTH_PATH, INSTANT_PATH, NOTIFICATION_TOKEN_HEADER, WEBHOOK_PATH,
};
use crate::webhook::{Outcome, SettleError};
use crate::worker::Current;

/// An answer: a status and a JSON body.
#[derive(Clone, Debug, PartialEq)]
pub struct Response {
    pub status: StatusCode,
    pub body: Value,
}

impl Response {
    pub fn new(status: StatusCode, body: Value) -> Self {
        Response { status, body }
    }

    /// Something the answer depends on (Prefect, Northflank) is down: the caller retries.
    pub fn unavailable(error: impl std::fmt::Display) -> Self {
        Response::new(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": error.to_string()}),
        )
    }

    pub fn is_unavailable(&self) -> bool {
        self.status == StatusCode::SERVICE_UNAVAILABLE
    }
}

impl IntoResponse for Response {
    fn into_response(self) -> axum::response::Response {
        (self.status, axum::Json(self.body)).into_response()
    }
}

/// Why a request was refused before any work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    NoToken,
    /// The token header came more than once: which one counts would be a guess.
    TwoTokens,
    WrongToken,
    /// Instant dispatch is off (no dispatch token configured).
    Disabled,
    TooLarge {
        limit: usize,
    },
    /// The body did not arrive in time, or the connection broke while it did.
    BodyUnread,
}

impl Refusal {
    fn status(self) -> StatusCode {
        match self {
            Refusal::NoToken | Refusal::TwoTokens | Refusal::WrongToken => StatusCode::UNAUTHORIZED,
            Refusal::Disabled => StatusCode::NOT_FOUND,
            Refusal::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::BodyUnread => StatusCode::REQUEST_TIMEOUT,
        }
    }

    fn message(self) -> String {
        match self {
            Refusal::NoToken | Refusal::TwoTokens | Refusal::WrongToken => "unauthorized".into(),
            Refusal::Disabled => "instant dispatch is not enabled: set PFNF_DISPATCH_TOKEN or the secret's dispatch_token".into(),
            Refusal::TooLarge { limit } => format!("body larger than {limit} bytes"),
            Refusal::BodyUnread => "the body could not be read in time".into(),
        }
    }

    /// The answer; it closes the connection, since the body was not read.
    fn response(self) -> axum::response::Response {
        let mut response =
            Response::new(self.status(), json!({"error": self.message()})).into_response();
        response.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
        response
    }
}

/// Whether `headers` carry `token` in exactly one `name` header, compared in constant time; an
/// empty token never matches.
pub fn check_token(headers: &HeaderMap, name: &str, token: &str) -> Result<(), Refusal> {
    let mut values = headers.get_all(name).iter();
    let given = match (values.next(), values.next()) {
        (None, _) => return Err(Refusal::NoToken),
        (Some(_), Some(_)) => return Err(Refusal::TwoTokens),
        (Some(given), None) => given.as_bytes(),
    };
    if token.is_empty() || !bool::from(given.ct_eq(token.as_bytes())) {
        return Err(Refusal::WrongToken);
    }
    Ok(())
}

/// Refused requests, counted, and logged at most once per interval with the count: a probe
/// of thousands of requests is one line, not thousands (each line costs CloudWatch money).
#[derive(Debug)]
pub struct Refusals {
    interval: Duration,
    state: Mutex<Tally>,
}

#[derive(Debug, Default)]
struct Tally {
    since_report: u64,
    reported_at: Option<Instant>,
}

impl Refusals {
    pub fn new(interval: Duration) -> Self {
        Refusals {
            interval,
            state: Mutex::default(),
        }
    }

    /// Counts one refusal. `Some(n)`: time to report the `n` refusals since the last report.
    pub fn count(&self, now: Instant) -> Option<u64> {
        let mut tally = self.state.lock().unwrap_or_else(|e| e.into_inner());
        tally.since_report += 1;
        let due = tally
            .reported_at
            .is_none_or(|at| now.duration_since(at) >= self.interval);
        if !due {
            return None;
        }
        tally.reported_at = Some(now);
        Some(std::mem::take(&mut tally.since_report))
    }

    fn refuse(&self, why: Refusal, path: &str) -> axum::response::Response {
        tracing::debug!(?why, path, "request refused");
        if let Some(count) = self.count(Instant::now()) {
            tracing::warn!(
                refused = count,
                latest = ?why,
                path,
                "refused requests (missing or wrong token, oversized or unread body); reported at most once per {}s",
                self.interval.as_secs()
            );
        }
        why.response()
    }
}

/// Reads a request's deadline from its extensions, when the runtime put one there.
pub type DeadlineFn = fn(&axum::http::Extensions) -> Option<Instant>;

/// Why a hand-off failed.
pub type HandOffError = Box<dyn std::error::Error + Send + Sync>;

/// Somewhere else to run an instant dispatch: on Lambda, an asynchronous invocation of the
/// instant-dispatch function (`lambda::invoke`).
pub trait HandOff: Send + Sync + std::fmt::Debug {
    /// Hands one call over. `Err`: it may not have been handed over, so the caller dispatches
    /// itself (at worst, two quick dispatches for one call: their claims are race-safe).
    fn hand_off(&self) -> Pin<Box<dyn Future<Output = Result<(), HandOffError>> + Send + '_>>;
}

/// How the instant-dispatch endpoint dispatches. Prefect 3.9's `webhook` block loses calls
/// still waiting for their answer when another call ends, so the shorter each call, the fewer
/// lost.
#[derive(Clone, Debug)]
pub enum InstantMode {
    /// Answer 202 at once and dispatch after, one dispatch at a time (the local worker).
    Background,
    /// Dispatch, then answer (a Lambda function cannot work after answering).
    Inline { deadline: DeadlineFn },
    /// Hand the call over and answer 202 at once (the Lambda webhook, with an instant-dispatch
    /// function); when the hand-off fails, dispatch inline, so that the call is not lost.
    HandOff {
        to: Arc<dyn HandOff>,
        deadline: DeadlineFn,
    },
}

/// What the router's handlers share.
pub struct Endpoint {
    current: Arc<Current>,
    instant: InstantMode,
    /// The body limit and the timeouts (`PFNF_WEBHOOK_MAX_BODY`, `PFNF_HTTP_*_TIMEOUT`).
    settings: WebhookSettings,
    refusals: Refusals,
}

/// How often refusals are reported.
pub const REFUSAL_REPORT_INTERVAL: Duration = Duration::from_secs(60);

impl Endpoint {
    pub fn new(current: Arc<Current>, instant: InstantMode, settings: WebhookSettings) -> Self {
        Endpoint {
            current,
            instant,
            settings,
            refusals: Refusals::new(REFUSAL_REPORT_INTERVAL),
        }
    }

    /// The body, up to the limit: refused from its `Content-Length` before reading, or as soon
    /// as more arrives than the limit allows.
    async fn read_body(&self, headers: &HeaderMap, body: Body) -> Result<Bytes, Refusal> {
        let limit = self.settings.max_body;
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(Refusal::TooLarge { limit });
        }
        axum::body::to_bytes(body, limit).await.map_err(|e| {
            let too_large =
                std::iter::successors(Some(&e as &(dyn std::error::Error + 'static)), |e| {
                    e.source()
                })
                .any(|e| e.is::<http_body_util::LengthLimitError>());
            if too_large {
                Refusal::TooLarge { limit }
            } else {
                Refusal::BodyUnread
            }
        })
    }

    /// The token check, then the body: the order that keeps unauthenticated bodies unread.
    async fn admit(
        &self,
        request: Request,
        header: &str,
        token: Option<&Secret>,
    ) -> Result<(axum::http::request::Parts, Bytes), axum::response::Response> {
        let (parts, body) = request.into_parts();
        let refuse = |why| self.refusals.refuse(why, parts.uri.path());
        let Some(token) = token else {
            return Err(refuse(Refusal::Disabled));
        };
        check_token(&parts.headers, header, token.expose()).map_err(refuse)?;
        let body = self.read_body(&parts.headers, body).await.map_err(refuse)?;
        Ok((parts, body))
    }
}

/// The router. Northflank's notifications are taken on [`WEBHOOK_PATH`] and, since a Lambda
/// Function URL has no routes of its own, on any path the others do not claim.
pub fn router(endpoint: Arc<Endpoint>) -> Router {
    let (body_timeout, request_timeout) = (
        endpoint.settings.body_timeout,
        endpoint.settings.request_timeout,
    );
    Router::new()
        .route(HEALTH_PATH, get(|| async { "ok" }))
        .route(INSTANT_PATH, post(instant))
        .route(WEBHOOK_PATH, post(webhook))
        .fallback(webhook)
        .layer(RequestBodyTimeoutLayer::new(body_timeout))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            request_timeout,
        ))
        .with_state(endpoint)
}

async fn webhook(
    State(endpoint): State<Arc<Endpoint>>,
    request: Request,
) -> axum::response::Response {
    let worker = endpoint.current.worker().await;
    let token = Some(&worker.credentials.webhook_token);
    let (parts, body) = match endpoint
        .admit(request, NOTIFICATION_TOKEN_HEADER, token)
        .await
    {
        Ok(admitted) => admitted,
        Err(refused) => return refused,
    };
    let headers = &parts.headers;
    let body = &body;
    let outcome = endpoint
        .current
        .run(Result::is_err, |worker| async move {
            crate::webhook::handle(&worker, headers, body).await
        })
        .await;
    notification_answer(outcome).into_response()
}

/// A notification's outcome as HTTP: 2xx unless it was malformed (400) or could not be settled
/// yet (503, so that Northflank delivers it again). Anything not ours is a plain 200: an error
/// would make Northflank retry, and then disable the integration.
fn notification_answer(outcome: Result<Outcome, SettleError>) -> Response {
    match outcome {
        Ok(Outcome::Settled(settled)) => Response::new(StatusCode::OK, json!(settled)),
        Ok(Outcome::Ignored(why)) => Response::new(StatusCode::OK, json!({"ignored": why})),
        Ok(Outcome::NotOurs(why)) => Response::new(
            StatusCode::OK,
            json!({"ignored": format!("not ours: {why}")}),
        ),
        Ok(Outcome::Malformed(why)) => {
            Response::new(StatusCode::BAD_REQUEST, json!({"error": why}))
        }
        Err(e) => Response::unavailable(e),
    }
}

async fn instant(
    State(endpoint): State<Arc<Endpoint>>,
    request: Request,
) -> axum::response::Response {
    let worker = endpoint.current.worker().await;
    let token = worker.credentials.dispatch_token.as_ref();
    // The automation's payload is read (and bounded) although nothing in it is needed: a
    // request whose body is left unread ends its connection, which races a client reusing it.
    let (parts, _payload) = match endpoint.admit(request, DISPATCH_TOKEN_HEADER, token).await {
        Ok(admitted) => admitted,
        Err(refused) => return refused,
    };
    match &endpoint.instant {
        InstantMode::Background => {
            if worker.gate().call() {
                tokio::spawn(crate::instant::dispatch_loop(worker));
            }
            accepted()
        }
        InstantMode::Inline { deadline } => dispatch_inline(&endpoint, &parts, *deadline).await,
        InstantMode::HandOff { to, deadline } => match to.hand_off().await {
            Ok(()) => accepted(),
            Err(e) => {
                tracing::warn!(error = %e, "could not hand the instant dispatch over; dispatching here");
                dispatch_inline(&endpoint, &parts, *deadline).await
            }
        },
    }
}

fn accepted() -> axum::response::Response {
    Response::new(StatusCode::ACCEPTED, json!({"accepted": true})).into_response()
}

/// One quick dispatch within the request, answered with its summary.
async fn dispatch_inline(
    endpoint: &Endpoint,
    parts: &axum::http::request::Parts,
    deadline: DeadlineFn,
) -> axum::response::Response {
    let budget = Instant::now() + crate::instant::BUDGET;
    let deadline = deadline(&parts.extensions).map_or(budget, |d| d.min(budget));
    endpoint
        .current
        .run(Response::is_unavailable, |worker| async move {
            match crate::instant::dispatch_once(&worker, deadline).await {
                Ok(summary) => Response::new(StatusCode::OK, json!({"summary": summary})),
                Err(e) => Response::unavailable(e),
            }
        })
        .await
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn exactly_one_token_header_is_accepted() {
        let mut headers = HeaderMap::new();
        assert_eq!(
            check_token(&headers, "x-t", "s3cret"),
            Err(Refusal::NoToken)
        );
        headers.append("x-t", HeaderValue::from_static("wrong"));
        assert_eq!(
            check_token(&headers, "x-t", "s3cret"),
            Err(Refusal::WrongToken)
        );
        let mut one = HeaderMap::new();
        one.append("x-t", HeaderValue::from_static("s3cret"));
        assert_eq!(check_token(&one, "x-t", "s3cret"), Ok(()));
        assert_eq!(check_token(&one, "x-t", ""), Err(Refusal::WrongToken));
        // The right token twice, or beside a wrong one: refused either way.
        for other in ["s3cret", "wrong"] {
            let mut two = one.clone();
            two.append("x-t", HeaderValue::from_str(other).unwrap());
            assert_eq!(check_token(&two, "x-t", "s3cret"), Err(Refusal::TwoTokens));
        }
    }

    #[test]
    fn refusals_are_reported_once_per_interval_with_their_count() {
        let refusals = Refusals::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(
            refusals.count(t0),
            Some(1),
            "the first one is reported at once"
        );
        for i in 1..=1314 {
            assert_eq!(refusals.count(t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(
            refusals.count(t0 + Duration::from_secs(60)),
            Some(1315),
            "the next report carries every refusal since the last"
        );
        assert_eq!(refusals.count(t0 + Duration::from_secs(61)), None);
        assert_eq!(
            refusals.count(t0 + Duration::from_secs(120)),
            Some(2),
            "no refusal is lost between two reports"
        );
    }
}

//! The Prefect REST client's transport: base URL, authentication, headers, Prefect's retry rules
//! bounded by a deadline, one rate limiter for every clone (`throttle`), and CSRF tokens for
//! servers that require them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::Mutex;
use tokio::time::Instant;
use uuid::Uuid;

use super::throttle::{Lane, Throttle};
use crate::config::PrefectAuth;
use crate::http::RateLimit;
use crate::retry::{RetryPolicy, Transient};

/// The API version this worker speaks (Prefect 3.9.1's `SERVER_API_VERSION`).
pub const API_VERSION: &str = "0.8.4";

#[derive(Debug, thiserror::Error)]
pub enum PrefectError {
    #[error("Prefect API {method} {path} answered HTTP {status}: {detail}")]
    Status {
        method: Method,
        path: String,
        status: u16,
        detail: String,
        retry_after: Option<Duration>,
    },
    #[error("Prefect API {method} {path} could not be reached: {source}")]
    Transport {
        method: Method,
        path: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("Prefect API {method} {path} returned a body we could not read: {source}")]
    Decode {
        method: Method,
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "Prefect rate-limited this worker until {}: {method} {path} was not sent, because the wait would pass the invocation's deadline",
        until.to_rfc3339_opts(SecondsFormat::Secs, true)
    )]
    Throttled {
        method: Method,
        path: String,
        until: DateTime<Utc>,
    },
    #[error("Prefect API URL {url:?} is invalid: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("could not build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

impl PrefectError {
    pub fn status(&self) -> Option<u16> {
        match self {
            PrefectError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn is_auth(&self) -> bool {
        matches!(self.status(), Some(401 | 403))
    }

    /// Prefect's rate limit refused the call, or paused it past its deadline.
    pub fn is_throttled(&self) -> bool {
        matches!(self, PrefectError::Throttled { .. }) || self.status() == Some(429)
    }
}

impl Transient for PrefectError {
    /// Prefect's client retries 408, 429, 502 and 503, and transport failures.
    fn is_transient(&self) -> bool {
        match self {
            PrefectError::Status { status, .. } => matches!(status, 408 | 429 | 502 | 503),
            PrefectError::Transport { source, .. } => !source.is_builder(),
            _ => false,
        }
    }

    /// A 429's own delay is waited out by the client's limiter, with every other call, before
    /// the next attempt goes out (or the call fails at once when the pause passes its deadline).
    fn retry_after(&self) -> Option<Duration> {
        match self {
            PrefectError::Status {
                status: 429,
                retry_after: Some(_),
                ..
            } => Some(Duration::ZERO),
            PrefectError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

pub(super) type Result<T, E = PrefectError> = std::result::Result<T, E>;

struct Inner {
    http: reqwest::Client,
    base: Url,
    auth: PrefectAuth,
    worker_name: String,
    requests: AtomicU64,
    /// Requests the server could not take (429, 5xx, no answer): a busy SQLite server refuses
    /// writes that collide, and their retries are counted in `requests` too.
    refused: AtomicU64,
    /// Answers 401 or 403: the credentials may have been rotated.
    auth_failures: AtomicU64,
    /// `(client id, token)` once a server has asked for CSRF tokens.
    csrf: Mutex<Option<(Uuid, String)>>,
    /// The rate-limit headers of the latest answer that had any.
    rate: std::sync::Mutex<RateLimit>,
    /// Prefect's 429s: one pause for every call of the process.
    throttle: Throttle,
}

/// A cheap handle; clones share one connection pool, request counter and rate limiter.
#[derive(Clone)]
pub struct PrefectClient {
    inner: Arc<Inner>,
    deadline: Option<Instant>,
    policy: RetryPolicy,
    /// Whether a 429 is retried (after the pause); callers that keep what was refused for a
    /// later send turn it off.
    retry_throttled: bool,
}

impl PrefectClient {
    pub fn new(
        api_url: &str,
        auth: PrefectAuth,
        worker_name: &str,
        retry_base: Duration,
    ) -> Result<Self> {
        let base = crate::http::base_url(api_url).map_err(|reason| PrefectError::BadUrl {
            url: api_url.to_string(),
            reason,
        })?;
        Ok(PrefectClient {
            inner: Arc::new(Inner {
                http: crate::http::client().map_err(PrefectError::Client)?,
                base,
                auth,
                worker_name: worker_name.to_string(),
                requests: AtomicU64::new(0),
                refused: AtomicU64::new(0),
                auth_failures: AtomicU64::new(0),
                csrf: Mutex::new(None),
                rate: std::sync::Mutex::default(),
                throttle: Throttle::default(),
            }),
            deadline: None,
            policy: RetryPolicy::new(retry_base),
            retry_throttled: true,
        })
    }

    /// The same client, with every call (retries included) bounded by `deadline`.
    pub fn with_deadline(&self, deadline: Instant) -> Self {
        PrefectClient {
            deadline: Some(deadline),
            ..self.clone()
        }
    }

    /// The same client with another retry policy (for calls whose failure costs little).
    pub fn with_retries(&self, policy: RetryPolicy) -> Self {
        PrefectClient {
            policy,
            ..self.clone()
        }
    }

    /// The same client, with a call that Prefect's rate limit refuses failing instead of being
    /// retried, for callers that keep what was refused and send it later (the pause still holds
    /// back their next call).
    pub fn without_throttled_retries(&self) -> Self {
        PrefectClient {
            retry_throttled: false,
            ..self.clone()
        }
    }

    /// The deadline every call is bounded by, if any.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The name this worker heartbeats under and signs its requests with.
    pub fn worker_name(&self) -> &str {
        &self.inner.worker_name
    }

    pub fn api_url(&self) -> &str {
        self.inner.base.as_str().trim_end_matches('/')
    }

    /// Requests sent so far (retries included), for summaries and benchmarks.
    pub fn requests_sent(&self) -> u64 {
        self.inner.requests.load(Ordering::Relaxed)
    }

    /// Of [`PrefectClient::requests_sent`], those the server refused or never answered.
    pub fn requests_refused(&self) -> u64 {
        self.inner.refused.load(Ordering::Relaxed)
    }

    /// Answers 429 so far (also counted in [`PrefectClient::requests_refused`]).
    pub fn throttled(&self) -> u64 {
        self.inner.throttle.refusals()
    }

    /// When Prefect's rate limit lets API calls go again, while it holds them back: the instant,
    /// and the time as the server named it.
    pub fn paused_until(&self) -> Option<(Instant, DateTime<Utc>)> {
        self.inner.throttle.paused_until(Lane::Api)
    }

    /// How long Prefect's rate limit has held back this process's calls: API calls, and log
    /// lines and events.
    pub fn paused_total(&self) -> (Duration, Duration) {
        let throttle = &self.inner.throttle;
        (
            throttle.paused_total(Lane::Api),
            throttle.paused_total(Lane::Logs),
        )
    }

    /// Answers 401 or 403 so far: a signal to read the credentials again.
    pub fn auth_failures(&self) -> u64 {
        self.inner.auth_failures.load(Ordering::Relaxed)
    }

    /// The rate-limit headers of the latest answer that had any (Prefect's self-hosted server
    /// sends none).
    pub fn rate_limit(&self) -> RateLimit {
        *self.inner.rate.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn url(&self, segments: &[&str]) -> Url {
        crate::http::join(&self.inner.base, segments)
    }

    /// One request with its headers: version, worker name, credentials, CSRF token, body.
    async fn request(
        &self,
        method: &Method,
        url: &Url,
        body: Option<&Value>,
    ) -> reqwest::RequestBuilder {
        let timeout = crate::http::timeout(self.deadline);
        let mut req = self
            .inner
            .http
            .request(method.clone(), url.clone())
            .timeout(timeout)
            .header("X-PREFECT-API-VERSION", API_VERSION)
            .header("X-Prefect-Worker-Name", &self.inner.worker_name);
        req = match &self.inner.auth {
            PrefectAuth::None => req,
            PrefectAuth::ApiKey(key) => req.bearer_auth(key.expose()),
            PrefectAuth::AuthString(auth) => {
                let (user, pass) = auth.expose().split_once(':').unwrap_or((auth.expose(), ""));
                req.basic_auth(user, Some(pass))
            }
        };
        if *method != Method::GET
            && let Some((client, token)) = self.inner.csrf.lock().await.as_ref()
        {
            req = req
                .header("Prefect-Csrf-Token", token)
                .header("Prefect-Csrf-Client", client.to_string());
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        req
    }

    /// One attempt: it waits while Prefect's rate limit pauses its bucket (or fails at once if
    /// the pause outlasts the deadline), and a 429 pauses every call of the bucket.
    async fn send_once(
        &self,
        method: &Method,
        url: &Url,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Vec<u8>)> {
        let path = url.path().to_string();
        let lane = Lane::of(self.inner.base.path(), &path);
        let throttled = |until| PrefectError::Throttled {
            method: method.clone(),
            path: path.clone(),
            until,
        };
        (self.inner.throttle)
            .wait(lane, self.deadline)
            .await
            .map_err(throttled)?;
        let req = self.request(method, url, body).await;
        self.inner.requests.fetch_add(1, Ordering::Relaxed);
        let transport = |source| PrefectError::Transport {
            method: method.clone(),
            path: path.clone(),
            source,
        };
        let sent_at = Instant::now();
        let resp = req
            .send()
            .await
            .inspect_err(|_| {
                self.inner.refused.fetch_add(1, Ordering::Relaxed);
            })
            .map_err(transport)?;
        let status = resp.status();
        if status.as_u16() == 429 || status.is_server_error() {
            self.inner.refused.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(reading) = RateLimit::from_headers(resp.headers()) {
            *self.inner.rate.lock().unwrap_or_else(|e| e.into_inner()) = reading;
        }
        let retry_after = crate::http::retry_after(resp.headers());
        let bytes = resp.bytes().await.map_err(transport)?.to_vec();
        tracing::debug!(api = "prefect", method = %method, path = %path, status = status.as_u16(), ms = sent_at.elapsed().as_millis() as u64, "request");
        if status.is_success() {
            return Ok((status, bytes));
        }
        if status.as_u16() == 429
            && let Some(until) = self.pause(lane, retry_after)
        {
            return Err(throttled(until));
        }
        let detail = detail(&bytes);
        if matches!(status.as_u16(), 401 | 403) && !detail.contains("CSRF") {
            self.inner.auth_failures.fetch_add(1, Ordering::Relaxed);
        }
        Err(PrefectError::Status {
            method: method.clone(),
            path,
            status: status.as_u16(),
            detail,
            retry_after,
        })
    }

    /// Counts a 429 and pauses its bucket for the `Retry-After` it named. Returns the pause's
    /// end when it outlasts this client's deadline: the call then fails at once.
    fn pause(&self, lane: Lane, retry_after: Option<Duration>) -> Option<DateTime<Utc>> {
        let (until, wall, began) = self.inner.throttle.refused(lane, retry_after)?;
        if began {
            tracing::debug!(api = "prefect", bucket = ?lane, until = %wall.to_rfc3339_opts(SecondsFormat::Secs, true), "rate-limited: calls paused");
        }
        self.deadline.filter(|d| until > *d).map(|_| wall)
    }

    pub(super) async fn send(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<&Value>,
    ) -> Result<(StatusCode, Vec<u8>)> {
        self.send_url(method, self.url(segments), body).await
    }

    pub(super) async fn send_url(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Vec<u8>)> {
        let retry_when: fn(&PrefectError) -> bool = if self.retry_throttled {
            PrefectError::is_transient
        } else {
            |e| e.is_transient() && !e.is_throttled()
        };
        let attempt = || {
            self.policy.run_if(self.deadline, retry_when, || {
                self.send_once(&method, &url, body)
            })
        };
        match attempt().await {
            Err(PrefectError::Status {
                status: 403,
                ref detail,
                ..
            }) if detail.contains("CSRF") => {
                self.refresh_csrf().await?;
                attempt().await
            }
            other => other,
        }
    }

    /// Servers with CSRF protection hand out a token per client id; a 403 mentioning CSRF means
    /// ours is missing or expired.
    async fn refresh_csrf(&self) -> Result<()> {
        let client = Uuid::new_v4();
        let mut url = self.url(&["csrf-token"]);
        url.query_pairs_mut()
            .append_pair("client", &client.to_string());
        let (_, bytes) = self
            .policy
            .run(self.deadline, || self.send_once(&Method::GET, &url, None))
            .await?;
        let token: Value = decode(&Method::GET, "/csrf-token", &bytes)?;
        let token = token
            .get("token")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        *self.inner.csrf.lock().await = Some((client, token));
        Ok(())
    }

    pub(super) async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<&Value>,
    ) -> Result<T> {
        let (_, bytes) = self.send(method.clone(), segments, body).await?;
        decode(&method, &segments.join("/"), &bytes)
    }

    /// A GET where 404 means "there is none".
    pub(super) async fn optional<T: DeserializeOwned>(
        &self,
        segments: &[&str],
    ) -> Result<Option<T>> {
        self.optional_url(self.url(segments)).await
    }

    pub(super) async fn optional_url<T: DeserializeOwned>(&self, url: Url) -> Result<Option<T>> {
        let path = url.path().to_string();
        match self.send_url(Method::GET, url, None).await {
            Ok((_, bytes)) => decode(&Method::GET, &path, &bytes).map(Some),
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

pub(super) fn decode<T: DeserializeOwned>(method: &Method, path: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|source| PrefectError::Decode {
        method: method.clone(),
        path: path.to_string(),
        source,
    })
}

/// Prefect errors carry `detail` (FastAPI) or `exception_message`; anything else is quoted.
fn detail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let parsed: Option<Value> = serde_json::from_slice(bytes).ok();
    let field = parsed
        .as_ref()
        .and_then(|v| v.get("detail").or_else(|| v.get("exception_message")));
    match field {
        Some(Value::String(s)) => s.clone(),
        Some(other) => crate::http::excerpt(&other.to_string()),
        None => crate::http::excerpt(&text),
    }
}

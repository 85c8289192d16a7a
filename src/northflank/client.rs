//! The Northflank REST client (northflank-api.md §1–§5).
//!
//! Reads, `PUT` and `DELETE` are retried on 429, 5xx and transport failures. `POST` (start a
//! run) has no idempotency key, so it is repeated only when it certainly was not applied (429, or
//! a connection that never opened); otherwise the caller must look before trying again.
//!
//! A 429 whose `Retry-After` would outlast the call's deadline (or, without one, the longest
//! wait a handle accepts, [`MAX_RATE_LIMIT_WAIT`] unless set) is not slept through: it becomes
//! [`NorthflankError::RateLimited`], "rate limited by Northflank until <time>". The default
//! window is an hour, and a command that slept through it would look hung.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::header::HeaderMap;
use reqwest::{Method, Url};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::models::{CreatedJob, JobRun, JobSummary, RateLimit, StartedRun};
use crate::config::Secret;
use crate::retry::{RetryPolicy, Transient};

/// An answer other than success, read from the documented error envelope
/// `{"error": {"status", "message", "id", "details"}}`. The status comes from HTTP.
#[derive(Debug)]
pub struct ApiFailure {
    pub method: Method,
    pub path: String,
    pub status: u16,
    pub message: String,
    pub error_id: Option<String>,
    pub details: Value,
    pub retry_after: Option<Duration>,
}

/// The longest `Retry-After` a handle without a deadline sleeps through (see the module doc).
pub const MAX_RATE_LIMIT_WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum NorthflankError {
    #[error("Northflank API {} {} answered HTTP {}: {}", .0.method, .0.path, .0.status, .0.message)]
    Api(Box<ApiFailure>),
    /// A 429 asking for a longer wait than the call may spend.
    #[error(
        "Northflank API {method} {path}: rate limited by Northflank until {} (Retry-After {} s)",
        .until.to_rfc3339_opts(SecondsFormat::Secs, true), .wait.as_secs()
    )]
    RateLimited {
        method: Method,
        path: String,
        until: DateTime<Utc>,
        wait: Duration,
    },
    #[error("Northflank API {method} {path} could not be reached: {source}")]
    Transport {
        method: Method,
        path: String,
        never_sent: bool,
        #[source]
        source: reqwest::Error,
    },
    #[error("Northflank API {method} {path} returned a body we could not read: {source}")]
    Decode {
        method: Method,
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("Northflank API URL {url:?} is invalid: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("could not build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

impl NorthflankError {
    pub fn status(&self) -> Option<u16> {
        match self {
            NorthflankError::Api(f) => Some(f.status),
            NorthflankError::RateLimited { .. } => Some(429),
            _ => None,
        }
    }

    /// A write may have been applied even though no success came back.
    pub fn outcome_unknown(&self) -> bool {
        match self {
            NorthflankError::Api(f) => f.status >= 500 || f.status == 408,
            NorthflankError::RateLimited { .. } => false,
            NorthflankError::Transport { never_sent, .. } => !never_sent,
            NorthflankError::Decode { .. } => true,
            _ => false,
        }
    }

    /// The token was refused (missing, wrong, rotated, or lacking a permission).
    pub fn is_auth(&self) -> bool {
        matches!(self.status(), Some(401 | 403))
    }

    /// Rate limited: nothing was applied, and the answer says when to come back.
    pub fn is_rate_limited(&self) -> bool {
        self.status() == Some(429)
    }

    /// The message to show a user: Northflank's own words, plus the field details it gave.
    pub fn user_message(&self) -> String {
        match self {
            NorthflankError::Api(f) => {
                let (status, message) = (f.status, &f.message);
                let details = match &f.details {
                    Value::Null => String::new(),
                    Value::Object(m) if m.is_empty() => String::new(),
                    other => format!(" ({})", crate::http::excerpt(&other.to_string())),
                };
                format!("Northflank rejected the request (HTTP {status}): {message}{details}")
            }
            other => other.to_string(),
        }
    }

    fn never_applied(&self) -> bool {
        match self {
            NorthflankError::Api(f) => f.status == 429,
            NorthflankError::Transport { never_sent, .. } => *never_sent,
            _ => false,
        }
    }
}

impl Transient for NorthflankError {
    fn is_transient(&self) -> bool {
        match self {
            NorthflankError::Api(f) => matches!(f.status, 408 | 429 | 500 | 502 | 503 | 504),
            NorthflankError::Transport { source, .. } => !source.is_builder(),
            _ => false,
        }
    }

    /// For a caller that schedules its own next attempt (`run::abandon`): the wait asked for.
    fn retry_after(&self) -> Option<Duration> {
        match self {
            NorthflankError::Api(f) => f.retry_after,
            NorthflankError::RateLimited { wait, .. } => Some(*wait),
            _ => None,
        }
    }
}

type Result<T, E = NorthflankError> = std::result::Result<T, E>;

struct Inner {
    http: reqwest::Client,
    base: Url,
    token: Secret,
    policy: RetryPolicy,
    requests: AtomicU64,
    /// Answers 401 or 403: the credentials may have been rotated.
    auth_failures: AtomicU64,
    /// Answers 429.
    throttled: AtomicU64,
    rate: Mutex<RateLimit>,
}

/// A cheap handle; clones share one connection pool, request counter and rate-limit reading.
#[derive(Clone)]
pub struct NorthflankClient {
    inner: Arc<Inner>,
    deadline: Option<Instant>,
    /// The longest `Retry-After` slept through when there is no deadline.
    max_wait: Duration,
}

impl std::fmt::Debug for NorthflankClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NorthflankClient")
            .field("base_url", &self.base_url())
            .finish_non_exhaustive()
    }
}

impl NorthflankClient {
    pub fn new(base_url: &str, token: Secret, retry_base: Duration) -> Result<Self> {
        let base = crate::http::base_url(base_url).map_err(|reason| NorthflankError::BadUrl {
            url: base_url.to_string(),
            reason,
        })?;
        let mut policy = RetryPolicy::new(retry_base);
        policy.max_retries = 4;
        Ok(NorthflankClient {
            inner: Arc::new(Inner {
                http: crate::http::client().map_err(NorthflankError::Client)?,
                base,
                token,
                policy,
                requests: AtomicU64::new(0),
                auth_failures: AtomicU64::new(0),
                throttled: AtomicU64::new(0),
                rate: Mutex::new(RateLimit::default()),
            }),
            deadline: None,
            max_wait: MAX_RATE_LIMIT_WAIT,
        })
    }

    pub fn with_deadline(&self, deadline: Instant) -> Self {
        NorthflankClient {
            deadline: Some(deadline),
            ..self.clone()
        }
    }

    /// The same API, sleeping through a `Retry-After` of at most `max_wait` when it has no
    /// deadline (a longer one is [`NorthflankError::RateLimited`] at once).
    pub fn with_max_wait(&self, max_wait: Duration) -> Self {
        NorthflankClient {
            max_wait,
            ..self.clone()
        }
    }

    /// The same API with another token (a run whose job variables name their own credentials).
    pub fn with_token(&self, base_url: Option<&str>, token: Secret) -> Result<Self> {
        let base = base_url.unwrap_or(self.inner.base.as_str());
        let mut other = NorthflankClient::new(base, token, self.inner.policy.first_delay)?;
        other.deadline = self.deadline;
        other.max_wait = self.max_wait;
        Ok(other)
    }

    pub fn base_url(&self) -> &str {
        self.inner.base.as_str().trim_end_matches('/')
    }

    pub fn requests_sent(&self) -> u64 {
        self.inner.requests.load(Ordering::Relaxed)
    }

    /// Answers 401 or 403 so far: a signal to read the credentials again.
    pub fn auth_failures(&self) -> u64 {
        self.inner.auth_failures.load(Ordering::Relaxed)
    }

    /// Answers 429 so far.
    pub fn throttled(&self) -> u64 {
        self.inner.throttled.load(Ordering::Relaxed)
    }

    /// The rate-limit headers of the latest answer.
    pub fn rate_limit(&self) -> RateLimit {
        *self.inner.rate.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn url(&self, segments: &[&str]) -> Url {
        crate::http::join(&self.inner.base, segments)
    }

    fn record_rate_limit(&self, headers: &HeaderMap) {
        if let Some(reading) = RateLimit::from_headers(headers) {
            *self.inner.rate.lock().unwrap_or_else(|e| e.into_inner()) = reading;
        }
    }

    async fn send_once(&self, method: &Method, url: &Url, body: Option<&Value>) -> Result<Vec<u8>> {
        let path = url.path().to_string();
        let timeout = crate::http::timeout(self.deadline);
        let mut req = self
            .inner
            .http
            .request(method.clone(), url.clone())
            .timeout(timeout)
            .bearer_auth(self.inner.token.expose())
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(body) = body {
            req = req.json(body);
        }
        self.inner.requests.fetch_add(1, Ordering::Relaxed);
        let transport = |source: reqwest::Error| NorthflankError::Transport {
            method: method.clone(),
            path: path.clone(),
            never_sent: crate::http::never_sent(&source),
            source,
        };
        let sent_at = Instant::now();
        let resp = req.send().await.map_err(transport)?;
        tracing::debug!(api = "northflank", method = %method, path = %path, status = resp.status().as_u16(), ms = sent_at.elapsed().as_millis() as u64, "request");
        self.record_rate_limit(resp.headers());
        let status = resp.status();
        let retry_after = crate::http::retry_after(resp.headers());
        let bytes = resp.bytes().await.map_err(transport)?.to_vec();
        // The docs answer every success with exactly 200; accept any 2xx all the same.
        if status.is_success() {
            return Ok(bytes);
        }
        match status.as_u16() {
            401 | 403 => self.inner.auth_failures.fetch_add(1, Ordering::Relaxed),
            429 => self.inner.throttled.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
        if status.as_u16() == 429
            && let Some(wait) = retry_after.filter(|w| *w > self.longest_wait())
        {
            let until = chrono::Duration::from_std(wait)
                .ok()
                .and_then(|w| Utc::now().checked_add_signed(w))
                .unwrap_or(DateTime::<Utc>::MAX_UTC);
            return Err(NorthflankError::RateLimited {
                method: method.clone(),
                path,
                until,
                wait,
            });
        }
        let envelope: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let error = &envelope["error"];
        Err(NorthflankError::Api(Box::new(ApiFailure {
            method: method.clone(),
            path,
            status: status.as_u16(),
            message: error["message"]
                .as_str()
                .map(String::from)
                .unwrap_or_else(|| crate::http::excerpt(&String::from_utf8_lossy(&bytes))),
            error_id: error["id"].as_str().map(String::from),
            details: error.get("details").cloned().unwrap_or(Value::Null),
            retry_after,
        })))
    }

    /// What this call may still wait for: the time left before its deadline, else `max_wait`.
    fn longest_wait(&self) -> Duration {
        match self.deadline {
            Some(d) => d.saturating_duration_since(Instant::now()),
            None => self.max_wait,
        }
    }

    async fn send(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Value> {
        let mut url = self.url(segments);
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        let idempotent = method != Method::POST;
        let attempt = || self.send_once(&method, &url, body);
        let bytes = if idempotent {
            self.inner.policy.run(self.deadline, attempt).await?
        } else {
            self.inner
                .policy
                .run_if(self.deadline, NorthflankError::never_applied, attempt)
                .await?
        };
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|source| NorthflankError::Decode {
            method: method.clone(),
            path: url.path().to_string(),
            source,
        })
    }

    /// `data` of the envelope, decoded.
    async fn data<T: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<&Value>,
    ) -> Result<T> {
        let value = self.send(method.clone(), segments, &[], body).await?;
        let path = segments.join("/");
        serde_json::from_value(value.get("data").cloned().unwrap_or(Value::Null)).map_err(
            |source| NorthflankError::Decode {
                method,
                path,
                source,
            },
        )
    }

    /// Creates or updates the job (`PUT` is keyed by the derived id, so repeating it is safe).
    pub async fn put_job(&self, project: &str, body: &Value) -> Result<CreatedJob> {
        self.data(
            Method::PUT,
            &["v1", "projects", project, "jobs"],
            Some(body),
        )
        .await
    }

    pub async fn get_job(&self, project: &str, job: &str) -> Result<Option<Value>> {
        match self
            .data(Method::GET, &["v1", "projects", project, "jobs", job], None)
            .await
        {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Deletes the job and its run history: `true` when this call deleted it, `false` when it
    /// was already gone (a duplicate notification, another step's cleanup).
    pub async fn delete_job(&self, project: &str, job: &str) -> Result<bool> {
        match self
            .send(
                Method::DELETE,
                &["v1", "projects", project, "jobs", job],
                &[],
                None,
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.status() == Some(404) => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub async fn list_jobs(&self, project: &str) -> Result<Vec<JobSummary>> {
        self.list(&["v1", "projects", project, "jobs"], "jobs")
            .await
    }

    /// Lists one job of the project and drops it: the cheapest request that needs the
    /// permission the worker uses most (Project › Jobs › General › Read), so it shows whether
    /// the token reaches the project at all.
    pub async fn probe_project(&self, project: &str) -> Result<()> {
        let query = [("per_page", "1".to_string())];
        self.send(
            Method::GET,
            &["v1", "projects", project, "jobs"],
            &query,
            None,
        )
        .await
        .map(drop)
    }

    /// Starts a run. Not idempotent: after an unknown outcome, list the runs before retrying.
    pub async fn start_run(&self, project: &str, job: &str, body: &Value) -> Result<StartedRun> {
        self.data(
            Method::POST,
            &["v1", "projects", project, "jobs", job, "runs"],
            Some(body),
        )
        .await
    }

    pub async fn get_run(&self, project: &str, job: &str, run: &str) -> Result<Option<JobRun>> {
        match self
            .data(
                Method::GET,
                &["v1", "projects", project, "jobs", job, "runs", run],
                None,
            )
            .await
        {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The job's runs; a job that does not exist has none.
    pub async fn list_runs(&self, project: &str, job: &str) -> Result<Vec<JobRun>> {
        match self
            .list(&["v1", "projects", project, "jobs", job, "runs"], "runs")
            .await
        {
            Err(e) if e.status() == Some(404) => Ok(Vec::new()),
            other => other,
        }
    }

    /// The last `lines` log lines of a run, oldest first (`GET …/jobs/{job}/logs`, read
    /// backwards from the end). Each line is the `log` text Northflank returns.
    pub async fn run_logs(
        &self,
        project: &str,
        job: &str,
        run: &str,
        lines: u32,
    ) -> Result<Vec<String>> {
        // The official client always sends `queryType` ("range" for a query, "tail" for the
        // WebSocket); the API tells the two apart by it.
        let query = [
            ("queryType", "range".to_string()),
            ("runId", run.to_string()),
            ("lineLimit", lines.to_string()),
            ("direction", "backward".to_string()),
        ];
        let value = self
            .send(
                Method::GET,
                &["v1", "projects", project, "jobs", job, "logs"],
                &query,
                None,
            )
            .await?;
        let mut out: Vec<(String, String)> = value["data"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|entry| {
                let text = match &entry["log"] {
                    Value::String(s) => s.clone(),
                    Value::Null => String::new(),
                    other => other.to_string(),
                };
                (entry["ts"].as_str().unwrap_or_default().to_string(), text)
            })
            .collect();
        // Backwards means newest first; put them back in the order they were written.
        out.reverse();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out.into_iter().map(|(_, text)| text).collect())
    }

    pub async fn get_notification_integration(&self, id: &str) -> Result<Option<Value>> {
        match self
            .data(
                Method::GET,
                &["v1", "integrations", "notifications", id],
                None,
            )
            .await
        {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn create_notification_integration(&self, body: &Value) -> Result<Value> {
        self.data(
            Method::POST,
            &["v1", "integrations", "notifications"],
            Some(body),
        )
        .await
    }

    /// Updates an integration (Northflank updates with `POST` to the integration's path).
    pub async fn update_notification_integration(&self, id: &str, body: &Value) -> Result<Value> {
        self.data(
            Method::POST,
            &["v1", "integrations", "notifications", id],
            Some(body),
        )
        .await
    }

    /// Aborts a run. A run that has already concluded or is gone answers 4xx; that is not an
    /// error for a caller that only wants it stopped, so the run is read back to tell.
    pub async fn abort_run(&self, project: &str, job: &str, run: &str) -> Result<()> {
        match self
            .send(
                Method::DELETE,
                &["v1", "projects", project, "jobs", job, "runs", run],
                &[],
                None,
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.status(), Some(400 | 404 | 409)) => {
                match self.get_run(project, job, run).await? {
                    None => Ok(()),
                    Some(r) if r.concluded => Ok(()),
                    Some(_) => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Follows pagination: the cursor when one comes back, else the next page while
    /// `hasNextPage` says there is one.
    async fn list<T: DeserializeOwned>(&self, segments: &[&str], key: &str) -> Result<Vec<T>> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        let mut page = 1u32;
        loop {
            let mut query = vec![("per_page", "100".to_string())];
            match &cursor {
                Some(c) => query.push(("cursor", c.clone())),
                None => query.push(("page", page.to_string())),
            }
            let body = self.send(Method::GET, segments, &query, None).await?;
            let list = body["data"][key].clone();
            let batch: Vec<T> =
                serde_json::from_value(if list.is_null() { json!([]) } else { list }).map_err(
                    |source| NorthflankError::Decode {
                        method: Method::GET,
                        path: segments.join("/"),
                        source,
                    },
                )?;
            let got = batch.len();
            items.extend(batch);
            let more = body["pagination"]["hasNextPage"].as_bool().unwrap_or(false);
            if !more || got == 0 {
                return Ok(items);
            }
            cursor = body["pagination"]["cursor"].as_str().map(String::from);
            page += 1;
        }
    }
}

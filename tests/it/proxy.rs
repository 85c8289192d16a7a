//! A rate-limiting reverse proxy in front of the real Prefect test server, refusing requests the
//! way Prefect Cloud documents it (prefect-worker-protocol.md §1.4): each bucket allows so much
//! per window ("per minute", shortened so that a test runs in seconds), counting requests, or
//! the log lines and events a `POST /logs/` or `POST /events` carries; over the limit it answers
//! 429 with `Retry-After` (delay-seconds, or an HTTP-date) naming the window's end. Everything
//! else is forwarded as it came. It can also answer chosen requests with an error of its own
//! (`fail_next`), the way a busy server refuses them, or hold them until the test lets them
//! through (`hold`), the way a slow one answers late.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// What a bucket counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counting {
    Requests,
    /// The items of a JSON array body (Cloud's "Logs + Events" bucket counts messages).
    Items,
}

#[derive(Clone, Debug)]
pub struct Bucket {
    pub name: &'static str,
    /// Paths (under `/api`) starting with any of these count in the bucket.
    pub prefixes: Vec<&'static str>,
    /// Only requests of this method, when set.
    pub method: Option<&'static str>,
    pub counting: Counting,
    pub per_window: u64,
}

impl Bucket {
    /// Requests to `/api/flow_runs…`, as Cloud's older per-endpoint limits counted them.
    pub fn flow_runs(per_window: u64) -> Bucket {
        Bucket::requests("flow_runs", "/api/flow_runs", per_window)
    }

    /// Log lines and events posted, as Cloud's "Logs + Events" bucket counts them.
    pub fn logs(per_window: u64) -> Bucket {
        Bucket {
            name: "logs",
            prefixes: vec!["/api/logs/", "/api/events"],
            method: Some("POST"),
            counting: Counting::Items,
            per_window,
        }
    }

    /// Any request to paths starting with `prefix`.
    pub fn requests(name: &'static str, prefix: &'static str, per_window: u64) -> Bucket {
        Bucket {
            name,
            prefixes: vec![prefix],
            method: None,
            counting: Counting::Requests,
            per_window,
        }
    }

    fn cost(&self, method: &str, path: &str, body: &[u8]) -> Option<u64> {
        if self.method.is_some_and(|m| m != method)
            || !self.prefixes.iter().any(|p| path.starts_with(p))
        {
            return None;
        }
        Some(match self.counting {
            Counting::Requests => 1,
            Counting::Items => match serde_json::from_slice::<Value>(body) {
                Ok(Value::Array(items)) => items.len() as u64,
                _ => 1,
            },
        })
    }
}

#[derive(Clone, Debug)]
pub struct ProxyConfig {
    pub window: Duration,
    pub buckets: Vec<Bucket>,
    /// `Retry-After` as an HTTP-date rather than delay-seconds.
    pub http_date: bool,
}

/// What one bucket saw.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    /// Requests it refused with 429.
    pub refused: u64,
    /// Requests it let through, and what they counted.
    pub forwarded: u64,
    pub counted: u64,
    /// The most counted in any one window.
    pub most_in_a_window: u64,
}

struct Use {
    window: u64,
    used: u64,
}

struct Shared {
    config: ProxyConfig,
    upstream: String,
    http: reqwest::Client,
    started: Instant,
    uses: Mutex<Vec<Use>>,
    tallies: Mutex<Vec<Tally>>,
    /// Every request forwarded: method and path.
    forwarded: Mutex<Vec<(String, String)>>,
    /// Every answer from upstream: method, path and status.
    answers: Mutex<Vec<(String, String, u16)>>,
    faults: Mutex<Vec<Fault>>,
    failed: Mutex<u32>,
    /// Requests a hold has kept waiting so far.
    held: Mutex<u32>,
    holds: Mutex<Vec<Held>>,
}

/// Requests to keep waiting until the test releases them.
struct Held {
    method: &'static str,
    suffix: String,
    released: tokio::sync::watch::Receiver<bool>,
}

/// Lets the requests a [`RateLimitProxy::hold`] holds through, when dropped or released.
pub struct Release(tokio::sync::watch::Sender<bool>);

impl Release {
    pub fn release(&self) {
        let _ = self.0.send(true);
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        self.release();
    }
}

/// Requests to answer with an error instead of forwarding them.
struct Fault {
    method: &'static str,
    fragment: &'static str,
    status: StatusCode,
    left: u32,
}

pub struct RateLimitProxy {
    /// The proxy's API URL, to give the worker as `PREFECT_API_URL`.
    pub api: String,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
}

impl ProxyConfig {
    /// No limits: every request is forwarded (unless a test fails or holds it).
    pub fn unlimited() -> ProxyConfig {
        ProxyConfig {
            window: Duration::from_secs(60),
            buckets: Vec::new(),
            http_date: false,
        }
    }
}

/// A proxy in front of the test server, and an app whose worker talks to Prefect through it.
pub async fn proxied(config: ProxyConfig) -> (RateLimitProxy, crate::helpers::TestApp) {
    let proxy = RateLimitProxy::start(&crate::helpers::prefect_api_url(), config).await;
    let app = crate::helpers::TestApp::spawn_with(crate::helpers::Options {
        worker_api: Some(proxy.api.clone()),
        ..Default::default()
    })
    .await;
    (proxy, app)
}

impl RateLimitProxy {
    /// Starts the proxy on a free 127.0.0.1 port in front of `upstream` (an API URL ending in
    /// `/api`).
    pub async fn start(upstream: &str, config: ProxyConfig) -> RateLimitProxy {
        let buckets = config.buckets.len();
        let shared = Arc::new(Shared {
            config,
            upstream: upstream.trim_end_matches('/').to_string(),
            http: reqwest::Client::new(),
            started: Instant::now(),
            uses: Mutex::new((0..buckets).map(|_| Use { window: 0, used: 0 }).collect()),
            tallies: Mutex::new(vec![Tally::default(); buckets]),
            forwarded: Mutex::default(),
            faults: Mutex::default(),
            failed: Mutex::default(),
            held: Mutex::default(),
            holds: Mutex::default(),
            answers: Mutex::default(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = axum::Router::new()
            .fallback(forward)
            .with_state(shared.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        RateLimitProxy {
            api: format!("http://{addr}/api"),
            shared,
            stop: Some(stop),
        }
    }

    pub fn tally(&self, bucket: &str) -> Tally {
        let index = (self.shared.config.buckets.iter())
            .position(|b| b.name == bucket)
            .unwrap_or_else(|| panic!("no bucket {bucket}"));
        self.shared.tallies.lock().unwrap()[index].clone()
    }

    /// Requests refused, all buckets together.
    pub fn refused(&self) -> u64 {
        self.shared
            .tallies
            .lock()
            .unwrap()
            .iter()
            .map(|t| t.refused)
            .sum()
    }

    /// Answers the next `times` `method` requests whose path contains `fragment` with `status`
    /// (and a body like Prefect's), without forwarding them.
    pub fn fail_next(&self, method: &'static str, fragment: &'static str, status: u16, times: u32) {
        self.shared.faults.lock().unwrap().push(Fault {
            method,
            fragment,
            status: StatusCode::from_u16(status).unwrap(),
            left: times,
        });
    }

    /// Holds every `method` request whose path ends with `suffix` until the returned
    /// [`Release`] is released (or dropped), then forwards it.
    pub fn hold(&self, method: &'static str, suffix: impl Into<String>) -> Release {
        let (tx, rx) = tokio::sync::watch::channel(false);
        self.shared.holds.lock().unwrap().push(Held {
            method,
            suffix: suffix.into(),
            released: rx,
        });
        Release(tx)
    }

    /// Requests a [`RateLimitProxy::hold`] has kept waiting so far.
    pub fn held(&self) -> u32 {
        *self.shared.held.lock().unwrap()
    }

    /// Requests answered by [`RateLimitProxy::fail_next`]'s errors so far.
    pub fn failed(&self) -> u32 {
        *self.shared.failed.lock().unwrap()
    }

    /// The statuses upstream answered `method` requests whose path contains `fragment` with,
    /// in order.
    pub fn answers(&self, method: &str, fragment: &str) -> Vec<u16> {
        (self.shared.answers.lock().unwrap().iter())
            .filter(|(m, p, _)| m == method && p.contains(fragment))
            .map(|(_, _, status)| *status)
            .collect()
    }

    /// Forwarded requests whose path contains `fragment`.
    pub fn forwarded(&self, method: &str, fragment: &str) -> usize {
        (self.shared.forwarded.lock().unwrap().iter())
            .filter(|(m, p)| m == method && p.contains(fragment))
            .count()
    }
}

impl Drop for RateLimitProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Shared {
    /// Counts the request in every bucket it belongs to, or returns how long until the window
    /// of the first bucket it does not fit in ends.
    fn admit(&self, method: &str, path: &str, body: &[u8]) -> Result<(), Duration> {
        let window = self.config.window;
        let elapsed = self.started.elapsed();
        let current = (elapsed.as_nanos() / window.as_nanos()) as u64;
        let costs: Vec<Option<u64>> = (self.config.buckets.iter())
            .map(|b| b.cost(method, path, body))
            .collect();
        let mut uses = self.uses.lock().unwrap();
        let mut tallies = self.tallies.lock().unwrap();
        for (i, cost) in costs.iter().enumerate() {
            let Some(cost) = cost else { continue };
            if uses[i].window != current {
                uses[i] = Use {
                    window: current,
                    used: 0,
                };
            }
            if uses[i].used + cost > self.config.buckets[i].per_window {
                tallies[i].refused += 1;
                return Err(window * (current as u32 + 1) - elapsed);
            }
        }
        for (i, cost) in costs.iter().enumerate() {
            let Some(cost) = cost else { continue };
            uses[i].used += cost;
            let tally = &mut tallies[i];
            tally.forwarded += 1;
            tally.counted += cost;
            tally.most_in_a_window = tally.most_in_a_window.max(uses[i].used);
        }
        Ok(())
    }

    /// The error a fault answers this request with, if one does; it counts as used.
    fn fault(&self, method: &str, path: &str) -> Option<StatusCode> {
        let mut faults = self.faults.lock().unwrap();
        let fault = faults
            .iter_mut()
            .find(|f| f.left > 0 && f.method == method && path.contains(f.fragment))?;
        fault.left -= 1;
        *self.failed.lock().unwrap() += 1;
        Some(fault.status)
    }

    fn refusal(&self, wait: Duration) -> Response {
        // Whole seconds, rounded up: never earlier than the window's end.
        let value = if self.config.http_date {
            let at = chrono::Utc::now() + chrono::Duration::from_std(wait).unwrap();
            let secs = at.timestamp() + i64::from(at.timestamp_subsec_nanos() > 0);
            let at = chrono::DateTime::from_timestamp(secs, 0).unwrap();
            at.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
        } else {
            wait.as_secs_f64().ceil().to_string()
        };
        let body = serde_json::json!({"detail": "Rate limit exceeded"}).to_string();
        let mut response = (StatusCode::TOO_MANY_REQUESTS, body).into_response();
        let headers = response.headers_mut();
        headers.insert("retry-after", HeaderValue::from_str(&value).unwrap());
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        response
    }
}

async fn forward(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body: Bytes = axum::body::to_bytes(body, 64 << 20)
        .await
        .unwrap_or_default();
    let (method, path) = (
        parts.method.as_str().to_string(),
        parts.uri.path().to_string(),
    );
    let held = (shared.holds.lock().unwrap().iter())
        .find(|h| h.method == method && path.ends_with(&h.suffix))
        .map(|h| h.released.clone());
    if let Some(mut released) = held {
        *shared.held.lock().unwrap() += 1;
        let _ = released.wait_for(|r| *r).await;
    }
    if let Some(status) = shared.fault(&method, &path) {
        let body = serde_json::json!({"exception_message": "Service Unavailable"}).to_string();
        return (status, body).into_response();
    }
    if let Err(wait) = shared.admit(&method, &path, &body) {
        return shared.refusal(wait);
    }
    shared
        .forwarded
        .lock()
        .unwrap()
        .push((method.clone(), path.clone()));
    let rest = path.strip_prefix("/api").unwrap_or(&path);
    let query = parts
        .uri
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let url = format!("{}{rest}{query}", shared.upstream);
    let mut upstream = shared.http.request(parts.method.clone(), url).body(body);
    for (name, value) in kept(&parts.headers) {
        upstream = upstream.header(name, value);
    }
    match upstream.send().await {
        Ok(answer) => {
            let status = answer.status();
            (shared.answers.lock().unwrap()).push((method, path, status.as_u16()));
            let headers = answer.headers().clone();
            let bytes = answer.bytes().await.unwrap_or_default();
            let mut response = Response::new(Body::from(bytes));
            *response.status_mut() = status;
            for (name, value) in kept(&headers) {
                response.headers_mut().append(name.clone(), value.clone());
            }
            response
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

/// The headers a proxy passes on: not those of the hop itself.
fn kept(headers: &HeaderMap) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
    headers.iter().filter(|(name, _)| {
        !matches!(
            name.as_str(),
            "host" | "content-length" | "connection" | "transfer-encoding" | "keep-alive"
        )
    })
}

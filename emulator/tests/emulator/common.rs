//! Helpers shared by the integration tests: an API client, a webhook receiver, job bodies.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use nf_emulator::{Config, Emulator};
use reqwest::Method;
use serde_json::{Value, json};

pub const TOKEN: &str = "nf-test-token";
pub const PROJECT: &str = "default-project";

pub async fn emulator(config: Config) -> (Emulator, Api) {
    let emulator = nf_emulator::start(config).await.expect("emulator starts");
    let api = Api::new(&emulator.base_url(), TOKEN);
    (emulator, api)
}

/// Answer of one API call.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or_default()
    }
}

#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    pub base: String,
    pub token: Option<String>,
}

impl Api {
    pub fn new(base: &str, token: &str) -> Self {
        Self {
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            base: base.to_owned(),
            token: Some(token.to_owned()),
        }
    }

    pub fn with_token(&self, token: Option<&str>) -> Self {
        Self {
            token: token.map(str::to_owned),
            ..self.clone()
        }
    }

    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Answer {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("request reaches the emulator");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Answer {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.call(Method::GET, path, None).await
    }
    pub async fn post(&self, path: &str, body: Value) -> Answer {
        self.call(Method::POST, path, Some(body)).await
    }
    pub async fn put(&self, path: &str, body: Value) -> Answer {
        self.call(Method::PUT, path, Some(body)).await
    }
    pub async fn delete(&self, path: &str) -> Answer {
        self.call(Method::DELETE, path, None).await
    }

    /// Creates a job and asserts success; returns its ID.
    pub async fn create_job(&self, body: Value) -> String {
        let a = self
            .post(&format!("/v1/projects/{PROJECT}/jobs"), body)
            .await;
        assert_eq!(a.status, 200, "create job: {:?}", a.body);
        a.body["data"]["id"].as_str().unwrap().to_owned()
    }

    /// Starts a run and asserts success; returns the run ID.
    pub async fn start_run(&self, job: &str, body: Value) -> String {
        let a = self
            .post(&format!("/v1/projects/{PROJECT}/jobs/{job}/runs"), body)
            .await;
        assert_eq!(a.status, 200, "start run: {:?}", a.body);
        a.body["data"]["id"].as_str().unwrap().to_owned()
    }

    pub async fn run(&self, job: &str, run: &str) -> Value {
        let a = self
            .get(&format!("/v1/projects/{PROJECT}/jobs/{job}/runs/{run}"))
            .await;
        assert_eq!(a.status, 200, "get run: {:?}", a.body);
        a.body["data"].clone()
    }

    /// Polls until the run concludes; returns the final run object.
    pub async fn wait_concluded(&self, job: &str, run: &str) -> Value {
        for _ in 0..200 {
            let r = self.run(job, run).await;
            if r["concluded"] == true {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("run {run} did not conclude within 5 s");
    }

    pub async fn logs(&self, job: &str, run: &str) -> Vec<String> {
        let a = self
            .get(&format!(
                "/v1/projects/{PROJECT}/jobs/{job}/logs?queryType=range&runId={run}"
            ))
            .await;
        assert_eq!(a.status, 200, "logs: {:?}", a.body);
        a.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["log"].as_str().unwrap().to_owned())
            .collect()
    }
}

/// A valid job body using an external image and a custom command.
pub fn job(name: &str) -> Value {
    json!({
        "name": name,
        "billing": {"deploymentPlan": "nf-compute-20"},
        "deployment": {
            "external": {"imagePath": "prefecthq/prefect:3-python3.12"},
            "docker": {"configType": "customCommand", "customCommand": "prefect flow-run execute"}
        },
        "settings": {"backoffLimit": 0, "runOnSourceChange": "never"}
    })
}

/// A job whose runs follow the given emulator script.
pub fn scripted_job(name: &str, script: &str) -> Value {
    let mut body = job(name);
    body["runtimeEnvironment"] = json!({"NF_EMULATOR_SCRIPT": script});
    body
}

pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

/// One request a [`Receiver`] got.
#[derive(Debug, Clone)]
pub struct Hit {
    pub headers: BTreeMap<String, String>,
    pub body: Value,
}

impl Hit {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
    pub fn event(&self) -> &str {
        self.body["event"].as_str().unwrap_or_default()
    }
}

#[derive(Default)]
struct ReceiverState {
    hits: Vec<Hit>,
    /// Statuses to answer in order; 200 once exhausted.
    script: VecDeque<(u16, Duration)>,
}

/// A tiny HTTP server on 127.0.0.1 recording POSTs, standing in for a webhook consumer or a
/// Prefect API.
#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    state: Arc<Mutex<ReceiverState>>,
}

impl Receiver {
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(ReceiverState::default()));
        let app = Router::new()
            .route("/{*path}", post(record))
            .route("/", post(record))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, state }
    }

    /// The next answers: (status, delay before answering).
    pub fn answer_with(&self, script: &[(u16, u64)]) {
        let mut state = self.state.lock().unwrap();
        state.script = script
            .iter()
            .map(|(s, ms)| (*s, Duration::from_millis(*ms)))
            .collect();
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.state.lock().unwrap().hits.clone()
    }

    pub fn events(&self) -> Vec<String> {
        self.hits().iter().map(|h| h.event().to_owned()).collect()
    }

    pub async fn wait_for(&self, n: usize) -> Vec<Hit> {
        eventually(
            &format!("{n} webhook hits"),
            Duration::from_secs(5),
            || async { self.hits().len() >= n },
        )
        .await;
        self.hits()
    }
}

async fn record(
    State(state): State<Arc<Mutex<ReceiverState>>>,
    headers: HeaderMap,
    body: String,
) -> StatusCode {
    let (status, delay) = {
        let mut s = state.lock().unwrap();
        s.hits.push(Hit {
            headers: headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_owned(),
                        v.to_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect(),
            body: serde_json::from_str(&body).unwrap_or(Value::Null),
        });
        s.script.pop_front().unwrap_or((200, Duration::ZERO))
    };
    tokio::time::sleep(delay).await;
    StatusCode::from_u16(status).unwrap()
}

/// Config with fast, test-friendly timings.
pub fn fast_config() -> Config {
    let mut config = Config {
        default_script: "succeed:0.1".into(),
        grace: Duration::from_millis(500),
        engine_poll: Duration::from_millis(50),
        ..Config::default()
    };
    config.webhooks.backoff = Duration::from_millis(20);
    config.webhooks.delivery_timeout = Duration::from_secs(2);
    config
}

pub const INTEGRATIONS: &str = "/v1/integrations/notifications";
pub const ALL_EVENTS: [&str; 5] = ["start", "success", "failure", "abort", "terminate"];

pub fn integration(name: &str, url: &str, events: &[&str]) -> Value {
    let events: serde_json::Map<String, Value> = events
        .iter()
        .map(|e| (format!("trigger:job-run:{e}"), json!(true)))
        .collect();
    json!({"name": name, "type": "RAW_WEBHOOK", "webhook": url, "secret": "s3cret-token", "events": events})
}

pub async fn add_integration(api: &Api, body: Value) -> String {
    let a = api.post(INTEGRATIONS, body).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    a.body["data"]["id"].as_str().unwrap().to_owned()
}

/// Creates a job with the script and starts one run.
pub async fn run_script(api: &Api, name: &str, script: &str) -> (String, String) {
    let job_id = api.create_job(scripted_job(name, script)).await;
    let run = api.start_run(&job_id, json!({})).await;
    (job_id, run)
}

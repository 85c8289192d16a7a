//! Spawns what an integration test needs against real parts: a fresh work pool on the real
//! Prefect server started by `scripts/test` (`PREFECT_API_URL`), a Northflank emulator, the
//! worker, and its webhook served on a local port and registered with the emulator.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use prefect_nf::config::{Credentials, PrefectAuth, Secret, Settings};
use prefect_nf::dispatch::{self, Summary};
use prefect_nf::ids::FlowRunId;
use prefect_nf::worker::Worker;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use uuid::Uuid;

pub const NF_TOKEN: &str = "nf-test-token";
pub const WEBHOOK_TOKEN: &str = "hook-secret-for-tests";
pub const DISPATCH_TOKEN: &str = "dispatch-secret-for-tests";

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn prefect_api_url() -> String {
    std::env::var("PREFECT_API_URL").unwrap_or_else(|_| {
        panic!("PREFECT_API_URL is not set: run the integration tests through scripts/test, which starts a Prefect server")
    })
}

pub struct Options {
    pub emulator: nf_emulator::Config,
    pub project: String,
    pub pool_variables: Value,
    pub worker_name: String,
    /// A Prefect API key for the worker (the test server is open and ignores it), to check
    /// where credentials travel.
    pub api_key: Option<String>,
    /// Register our webhook with the emulator (off when a test delivers notifications itself).
    pub register_webhook: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            emulator: nf_emulator::Config {
                report_to_prefect: true,
                ..Default::default()
            },
            project: "test-project".into(),
            pool_variables: json!({}),
            worker_name: "prefect-nf-test".into(),
            api_key: None,
            register_webhook: true,
        }
    }
}

pub struct TestApp {
    pub api: String,
    pub pool: String,
    pub project: String,
    pub emulator: nf_emulator::Emulator,
    pub worker: Worker,
    pub webhook_url: String,
    pub http: reqwest::Client,
    stop_webhook: Option<oneshot::Sender<()>>,
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(Options::default()).await
    }

    /// An app whose emulator has this configuration, everything else as usual.
    pub async fn with_emulator(emulator: nf_emulator::Config) -> TestApp {
        Self::spawn_with(Options {
            emulator,
            ..Default::default()
        })
        .await
    }

    pub async fn spawn_with(options: Options) -> TestApp {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("prefect_nf=debug,nf_emulator=info")
            .with_test_writer()
            .try_init();
        let api = prefect_api_url();
        let pool = format!("test-{}", Uuid::new_v4().simple());
        let emulator = nf_emulator::start(options.emulator)
            .await
            .expect("emulator starts");
        let mut worker = worker_for(&api, &pool, &emulator.base_url(), &options.worker_name);
        if let Some(key) = &options.api_key {
            let mut credentials = worker.credentials.clone();
            credentials.prefect = PrefectAuth::ApiKey(Secret::new(key.clone()));
            worker = Worker::new(worker.settings.clone(), credentials).unwrap();
        }

        let mut template = prefect_nf::pool::template(Some(&options.project));
        if let Value::Object(defaults) = &options.pool_variables {
            for (k, v) in defaults {
                template["variables"]["properties"][k]["default"] = v.clone();
            }
        }
        let http = reqwest::Client::new();
        let (status, text) = prefect_send(
            &http,
            reqwest::Method::POST,
            &format!("{api}/work_pools/"),
            Some(&json!({"name": pool, "type": "northflank", "base_job_template": template})),
        )
        .await;
        assert_eq!(status, 201, "pool creation: {text}");

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let (stop_webhook, stopped) = oneshot::channel();
        tokio::spawn(prefect_nf::local::serve(
            listener,
            Arc::new(worker.clone()),
            async {
                let _ = stopped.await;
            },
        ));
        let webhook_url = format!("http://{addr}{}", prefect_nf::local::WEBHOOK_PATH);
        let app = TestApp {
            api,
            pool,
            project: options.project,
            emulator,
            worker,
            webhook_url,
            http,
            stop_webhook: Some(stop_webhook),
        };
        if options.register_webhook {
            app.register_webhook(&app.webhook_url).await;
        }
        app
    }

    /// A notification integration for this project's job-run events, posting to `url`.
    pub async fn register_webhook(&self, url: &str) {
        register_webhook(
            &self.http,
            &self.emulator.base_url(),
            NF_TOKEN,
            &self.project,
            url,
        )
        .await;
    }
}

/// Registers a notification integration on an emulator for a project's job-run events.
pub async fn register_webhook(
    http: &reqwest::Client,
    emulator: &str,
    token: &str,
    project: &str,
    url: &str,
) {
    let events: serde_json::Map<String, Value> =
        ["start", "success", "failure", "abort", "terminate"]
            .iter()
            .map(|e| (format!("trigger:job-run:{e}"), json!(true)))
            .collect();
    let resp = http
        .post(format!("{emulator}/v1/integrations/notifications"))
        .bearer_auth(token)
        .json(&json!({"name": "prefect runs", "type": "RAW_WEBHOOK", "webhook": url,
                      "secret": WEBHOOK_TOKEN, "restricted": true, "projects": [project], "events": events}))
        .send()
        .await
        .unwrap();
    assert!(
        resp.status().is_success(),
        "integration: {}",
        resp.text().await.unwrap()
    );
}

/// Sends a request to the test Prefect server, retried on 503 as Prefect's own client does:
/// its SQLite database answers 503 when two writers meet, which parallel tests make common.
pub async fn prefect_send(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<&Value>,
) -> (reqwest::StatusCode, String) {
    let mut attempt = 0;
    loop {
        let mut req = http.request(method.clone(), url);
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        if status != 503 || attempt == 10 {
            return (status, text);
        }
        attempt += 1;
        tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
    }
}

impl TestApp {
    /// A second worker (another dispatcher) on the same pool and emulator.
    pub fn another_worker(&self, name: &str) -> Worker {
        worker_for(&self.api, &self.pool, &self.emulator.base_url(), name)
    }

    pub async fn dispatch_once(&self) -> Summary {
        dispatch::invoke(
            &self.worker,
            tokio::time::Instant::now() + Duration::from_secs(60),
        )
        .await
        .expect("dispatch")
    }

    /// A deployment of the example flow in this pool.
    pub async fn deployment(&self, job_variables: Value) -> Uuid {
        let flow: Value = self
            .post("/flows/", json!({"name": "hello-northflank"}))
            .await;
        let dir = repo().join("examples/flows");
        let body = json!({
            "name": format!("dep-{}", Uuid::new_v4().simple()),
            "flow_id": flow["id"],
            "work_pool_name": self.pool,
            "job_variables": job_variables,
            "entrypoint": "hello.py:hello",
            "path": dir,
            "pull_steps": [{"prefect.deployments.steps.set_working_directory": {"directory": dir}}],
            "parameter_openapi_schema": {"type": "object", "properties": {"name": {"type": "string"}}},
        });
        let dep: Value = self.post("/deployments/", body).await;
        dep["id"].as_str().unwrap().parse().unwrap()
    }

    pub async fn flow_run(&self, deployment: Uuid, job_variables: Value) -> FlowRunId {
        let run: Value = self
            .post(
                &format!("/deployments/{deployment}/create_flow_run"),
                json!({"job_variables": job_variables}),
            )
            .await;
        run["id"].as_str().unwrap().parse().unwrap()
    }

    /// A flow run whose Northflank run follows an emulator script (`succeed:0.2`, `hang`, …).
    pub async fn scripted_run(&self, deployment: Uuid, script: &str) -> FlowRunId {
        self.flow_run(deployment, json!({"env": {"NF_EMULATOR_SCRIPT": script}}))
            .await
    }

    pub async fn post(&self, path: &str, body: Value) -> Value {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn get(&self, path: &str) -> Value {
        self.call(reqwest::Method::GET, path, None).await
    }

    /// A Prefect API call that must succeed; its JSON answer (Null when empty).
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let (status, text) = self.raw(method.clone(), path, body.as_ref()).await;
        assert!(status.is_success(), "{method} {path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// A Prefect API call whose status the caller judges.
    pub async fn raw(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> (reqwest::StatusCode, String) {
        prefect_send(&self.http, method, &format!("{}{path}", self.api), body).await
    }

    pub async fn flow_run_json(&self, id: FlowRunId) -> Value {
        self.get(&format!("/flow_runs/{id}")).await
    }

    pub async fn state_type(&self, id: FlowRunId) -> String {
        self.flow_run_json(id).await["state"]["type"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Waits until the flow run's state type is one of `types`; panics with the logs otherwise.
    pub async fn wait_for_state(&self, id: FlowRunId, types: &[&str], timeout: Duration) -> Value {
        let end = tokio::time::Instant::now() + timeout;
        loop {
            let run = self.flow_run_json(id).await;
            if types.contains(&run["state"]["type"].as_str().unwrap_or_default()) {
                return run;
            }
            if tokio::time::Instant::now() > end {
                panic!(
                    "flow run {id} never reached {types:?}: state {}\nlogs:\n{}\nemulator runs: {:#?}",
                    run["state"],
                    self.logs(id).await.join("\n"),
                    self.emulator
                        .snapshot()
                        .runs
                        .iter()
                        .map(|r| (&r.job_id, &r.run.status, &r.logs))
                        .collect::<Vec<_>>()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    pub async fn logs(&self, id: FlowRunId) -> Vec<String> {
        let logs = self
            .post(
                "/logs/filter",
                json!({"logs": {"flow_run_id": {"any_": [id]}}, "sort": "TIMESTAMP_ASC"}),
            )
            .await;
        logs.as_array()
            .unwrap()
            .iter()
            .map(|l| l["message"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// The worker events about flow run `id` once all of `names` are stored, by name. The
    /// server persists events in batches, so this waits for them.
    pub async fn worker_events(&self, id: FlowRunId, names: &[&str]) -> Vec<Value> {
        let filter = json!({
            "filter": {
                "event": {"prefix": ["prefect.worker."]},
                "any_resource": {"id": [format!("prefect.flow-run.{id}")]},
            },
            "limit": 50,
        });
        let end = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let page = self.post("/events/filter", filter.clone()).await;
            let events = page["events"].as_array().cloned().unwrap_or_default();
            if names
                .iter()
                .all(|n| events.iter().any(|e| e["event"] == *n))
            {
                return events;
            }
            assert!(
                tokio::time::Instant::now() < end,
                "events {names:?} about {id} never arrived; stored: {events:#?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The JSON bodies the emulator received for `method` on paths containing `fragment`.
    pub fn bodies(&self, method: &str, fragment: &str) -> Vec<Value> {
        self.emulator
            .requests()
            .into_iter()
            .filter(|r| r.method == method && r.path.contains(fragment))
            .map(|r| r.body)
            .collect()
    }

    /// The Northflank run recorded in the flow run's `infrastructure_pid`.
    pub async fn northflank_run(&self, id: FlowRunId) -> String {
        let run = self.flow_run_json(id).await;
        run["infrastructure_pid"]
            .as_str()
            .unwrap_or_default()
            .rsplit(':')
            .next()
            .unwrap_or_default()
            .to_string()
    }

    /// The emulator's jobs named after flow runs of this test.
    pub fn jobs(&self) -> Vec<String> {
        self.emulator
            .snapshot()
            .jobs
            .into_iter()
            .map(|j| j.id)
            .collect()
    }

    pub async fn wait_until<F: Fn(&TestApp) -> bool>(&self, what: &str, timeout: Duration, f: F) {
        let end = tokio::time::Instant::now() + timeout;
        while !f(self) {
            assert!(
                tokio::time::Instant::now() < end,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop_webhook.take() {
            let _ = stop.send(());
        }
    }
}

pub fn worker_for(api: &str, pool: &str, northflank: &str, name: &str) -> Worker {
    let mut settings = Settings::new(api, pool);
    settings.worker_name = name.to_string();
    settings.poll_window = Duration::ZERO;
    settings.poll_interval = Duration::from_secs(1);
    settings.northflank_api_url = northflank.to_string();
    settings.retry_base = Duration::from_millis(500);
    let credentials = Credentials {
        prefect: PrefectAuth::None,
        northflank_token: Secret::new(NF_TOKEN),
        webhook_token: Secret::new(WEBHOOK_TOKEN),
        dispatch_token: Some(Secret::new(DISPATCH_TOKEN)),
    };
    Worker::new(settings, credentials).expect("worker")
}

/// A Secrets Manager client for moto's server, started by scripts/test.
pub fn moto_client() -> aws_sdk_secretsmanager::Client {
    use aws_sdk_secretsmanager::config::{BehaviorVersion, Credentials as AwsCredentials, Region};
    let endpoint = std::env::var("PFNF_TEST_MOTO_URL")
        .expect("PFNF_TEST_MOTO_URL is not set: run the tests through scripts/test");
    let config = aws_sdk_secretsmanager::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(AwsCredentials::new("test", "test", None, None, "tests"))
        .endpoint_url(endpoint)
        .build();
    aws_sdk_secretsmanager::Client::from_conf(config)
}

/// Creates a secret with a unique name and returns its ARN.
pub async fn put_secret(client: &aws_sdk_secretsmanager::Client, value: &Value) -> String {
    let name = format!("prefect-nf/test-{}", Uuid::new_v4().simple());
    let created = client
        .create_secret()
        .name(name)
        .secret_string(value.to_string())
        .send()
        .await
        .expect("moto creates the secret");
    created.arn().unwrap().to_string()
}

/// The id of the first schema of a block type, as the UI uses it to create documents.
pub async fn schema_of(app: &TestApp, slug: &str) -> (String, String) {
    let block_type = app.get(&format!("/block_types/slug/{slug}")).await;
    let id = block_type["id"].as_str().unwrap().to_string();
    let schemas = app
        .post(
            "/block_schemas/filter",
            json!({"block_schemas": {"block_type_id": {"any_": [id]}}}),
        )
        .await;
    (id, schemas[0]["id"].as_str().unwrap().to_string())
}

/// Creates a block document, replacing one of the same name.
pub async fn block(app: &TestApp, slug: &str, name: &str, data: Value) -> String {
    let (type_id, schema_id) = schema_of(app, slug).await;
    let path = format!("/block_types/slug/{slug}/block_documents/name/{name}");
    let (status, existing) = app.raw(reqwest::Method::GET, &path, None).await;
    if status == 200 {
        let existing: Value = serde_json::from_str(&existing).unwrap();
        let id = existing["id"].as_str().unwrap();
        app.raw(
            reqwest::Method::DELETE,
            &format!("/block_documents/{id}"),
            None,
        )
        .await;
    }
    let doc = app.post("/block_documents/", json!({"name": name, "data": data, "block_schema_id": schema_id, "block_type_id": type_id})).await;
    doc["id"].as_str().unwrap().to_string()
}

//! Spawns what an integration test needs against real parts: a fresh work pool on the real
//! Prefect server started by `scripts/test` (`PREFECT_API_URL`), a Northflank emulator, the
//! worker, and its webhook served on a local port and registered with the emulator.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use prefect_nf::config::{Credentials, PrefectAuth, Secret, Settings};
use prefect_nf::dispatch;
use prefect_nf::ids::FlowRunId;
use prefect_nf::scheduled::Summary;
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

/// A flow's code, as a deployment names it: the flow's name, its folder and its entrypoint.
pub struct FlowSource {
    pub name: &'static str,
    pub dir: PathBuf,
    pub entrypoint: &'static str,
}

/// An emulator that really runs each job's command (process mode), with `prefect_bin` (a
/// virtualenv's `bin`) first on its PATH: the Prefect whose `prefect flow-run execute` runs the
/// flow, which should be the server's own version.
pub fn process_mode(prefect_bin: &std::path::Path) -> nf_emulator::Config {
    let mut config = nf_emulator::Config {
        mode: nf_emulator::Mode::Process,
        ..Default::default()
    };
    let path = format!(
        "{}:{}",
        prefect_bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    config.process_env.insert("PATH".into(), path);
    let home = std::env::temp_dir().join(format!("pfnf-flow-home-{}", std::process::id()));
    config
        .process_env
        .insert("PREFECT_HOME".into(), home.display().to_string());
    config
        .process_env
        .insert("PREFECT_SERVER_ANALYTICS_ENABLED".into(), "false".into());
    config
}

pub fn prefect_api_url() -> String {
    std::env::var("PREFECT_API_URL").unwrap_or_else(|_| {
        panic!("PREFECT_API_URL is not set: run the integration tests through scripts/test, which starts a Prefect server")
    })
}

/// A Prefect server the tests use: the open one, or the one with basic auth and CSRF
/// protection that scripts/test starts beside it.
#[derive(Clone, Debug)]
pub struct PrefectServer {
    pub api: String,
    /// Its `user:password`, when it wants basic auth.
    pub auth: Option<String>,
}

impl PrefectServer {
    pub fn open() -> Self {
        PrefectServer {
            api: prefect_api_url(),
            auth: None,
        }
    }

    pub fn protected() -> Self {
        let var = |name| {
            std::env::var(name)
                .unwrap_or_else(|_| panic!("{name} is not set: run the tests through scripts/test"))
        };
        PrefectServer {
            api: var("PFNF_TEST_AUTH_API_URL"),
            auth: Some(var("PFNF_TEST_AUTH_STRING")),
        }
    }
}

pub struct Options {
    pub prefect: PrefectServer,
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
            prefect: PrefectServer::open(),
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
    pub emulator: Arc<nf_emulator::Emulator>,
    pub worker: Worker,
    pub webhook_url: String,
    pub http: reqwest::Client,
    prefect: PrefectHttp,
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
        let emulator = nf_emulator::start(options.emulator.clone())
            .await
            .expect("emulator starts");
        Self::spawn_on(Arc::new(emulator), options).await
    }

    /// Another installation on this app's emulator (and so in its Northflank project, unless
    /// `options` names another): its own Prefect server, pool, worker and webhook.
    pub async fn beside(&self, options: Options) -> TestApp {
        Self::spawn_on(self.emulator.clone(), options).await
    }

    async fn spawn_on(emulator: Arc<nf_emulator::Emulator>, options: Options) -> TestApp {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("prefect_nf=debug,nf_emulator=info")
            .with_test_writer()
            .try_init();
        let api = options.prefect.api.clone();
        let pool = format!("test-{}", Uuid::new_v4().simple());
        let mut worker = worker_for(&api, &pool, &emulator.base_url(), &options.worker_name);
        let mut credentials = worker.credentials.clone();
        if let Some(auth) = &options.prefect.auth {
            credentials.prefect = PrefectAuth::AuthString(Secret::new(auth.clone()));
        }
        if let Some(key) = &options.api_key {
            credentials.prefect = PrefectAuth::ApiKey(Secret::new(key.clone()));
        }
        worker = Worker::new(worker.settings.clone(), credentials).unwrap();

        let mut template = prefect_nf::setup::pool::template(Some(&options.project));
        if let Value::Object(defaults) = &options.pool_variables {
            for (k, v) in defaults {
                template["variables"]["properties"][k]["default"] = v.clone();
            }
        }
        let http = reqwest::Client::new();
        let prefect = PrefectHttp::new(http.clone(), options.prefect.auth.clone());
        let (status, text) = prefect
            .send(
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
        let webhook_url = format!("http://{addr}{}", prefect_nf::routes::WEBHOOK_PATH);
        let app = TestApp {
            api,
            pool,
            project: options.project,
            emulator,
            worker,
            webhook_url,
            http,
            prefect,
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
        .json(&json!({"name": integration_name(url), "type": "RAW_WEBHOOK", "webhook": url,
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

/// Raw calls to a test Prefect server, as Prefect's own client makes them: basic auth and a
/// CSRF token when the server wants them, and 503 retried (its SQLite database answers 503 when
/// two writers meet, which parallel tests make common).
struct PrefectHttp {
    http: reqwest::Client,
    auth: Option<String>,
    csrf: tokio::sync::Mutex<Option<(String, String)>>,
}

impl PrefectHttp {
    fn new(http: reqwest::Client, auth: Option<String>) -> Self {
        PrefectHttp {
            http,
            auth,
            csrf: tokio::sync::Mutex::new(None),
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<&Value>,
    ) -> (reqwest::StatusCode, String) {
        let mut attempt = 0;
        loop {
            let mut req = self.http.request(method.clone(), url);
            if let Some(body) = body {
                req = req.json(body);
            }
            if let Some(auth) = &self.auth {
                let (user, password) = auth.split_once(':').unwrap_or((auth, ""));
                req = req.basic_auth(user, Some(password));
                req = match self.csrf_token(url).await {
                    Some((client, token)) => req
                        .header("Prefect-Csrf-Client", client)
                        .header("Prefect-Csrf-Token", token),
                    None => req,
                };
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

    /// The server's CSRF token for this client, fetched once.
    async fn csrf_token(&self, url: &str) -> Option<(String, String)> {
        let mut kept = self.csrf.lock().await;
        if kept.is_none() {
            let base = &url[..url.find("/api/")? + 4];
            let client = Uuid::new_v4().to_string();
            let (user, password) = self.auth.as_deref()?.split_once(':')?;
            let answer: Value = self
                .http
                .get(format!("{base}/csrf-token?client={client}"))
                .basic_auth(user, Some(password))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            *kept = Some((client, answer["token"].as_str()?.to_string()));
        }
        kept.clone()
    }
}

/// An integration name per webhook URL (its port), so that several installations can share an
/// emulator.
fn integration_name(url: &str) -> String {
    let port = reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.port())
        .unwrap_or_default();
    format!("prefect runs {port}")
}

impl TestApp {
    /// A second worker (another dispatcher) on the same pool and emulator.
    pub fn another_worker(&self, name: &str) -> Worker {
        let mut settings = self.worker.settings.clone();
        settings.prefect.worker_name = name.to_string();
        Worker::new(settings, self.worker.credentials.clone()).expect("worker")
    }

    /// A worker of this app that reconciles at once: no waiting periods, a sweep on every
    /// invocation.
    pub fn eager_worker(&self, name: &str) -> Worker {
        let mut w = self.another_worker(name);
        w.settings.reconcile.resume_after = Duration::ZERO;
        w.settings.reconcile.check_after = Duration::ZERO;
        w.settings.reconcile.cancel_grace = Duration::ZERO;
        w.settings.reconcile.max_requests = 200;
        w.settings.reconcile.sweep_interval = Duration::ZERO;
        w
    }

    pub async fn dispatch_once(&self) -> Summary {
        prefect_nf::scheduled::invoke(
            &self.worker,
            tokio::time::Instant::now() + Duration::from_secs(60),
        )
        .await
        .expect("dispatch")
    }

    /// A deployment of the example flow in this pool.
    pub async fn deployment(&self, job_variables: Value) -> Uuid {
        let flow = FlowSource {
            name: "hello-northflank",
            dir: repo().join("examples/flows"),
            entrypoint: "hello.py:hello",
        };
        self.deployment_of(&flow, job_variables).await
    }

    /// A deployment of `flow` in this pool.
    pub async fn deployment_of(&self, flow: &FlowSource, job_variables: Value) -> Uuid {
        let dir = &flow.dir;
        let flow_id = self.post("/flows/", json!({"name": flow.name})).await["id"].clone();
        let body = json!({
            "name": format!("dep-{}", Uuid::new_v4().simple()),
            "flow_id": flow_id,
            "work_pool_name": self.pool,
            "job_variables": job_variables,
            "entrypoint": flow.entrypoint,
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
        self.prefect
            .send(method, &format!("{}{path}", self.api), body)
            .await
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

/// One reconciliation by `w`, as a scheduled invocation runs it, with its log lines sent.
pub async fn reconcile_once(w: &Worker) -> prefect_nf::reconcile::Report {
    let (pool, _) = dispatch::heartbeat(w).await.unwrap();
    let report = prefect_nf::reconcile::reconcile(
        w,
        &pool,
        tokio::time::Instant::now() + Duration::from_secs(30),
    )
    .await;
    w.send_pending().await;
    report
}

/// A correctly-tokened notification of `event` about Northflank run `run` of job `pf-<id>` in
/// `project`, as a request to the endpoint.
pub fn notification(
    event: &str,
    id: FlowRunId,
    run: &str,
    project: &str,
) -> axum::http::Request<axum::body::Body> {
    let body = json!({"event": event, "data": {"jobRun": {"id": run}, "job": {"id": format!("pf-{id}")}, "project": {"id": project}}});
    post(
        prefect_nf::routes::WEBHOOK_PATH,
        &[(prefect_nf::routes::NOTIFICATION_TOKEN_HEADER, WEBHOOK_TOKEN)],
        body.to_string(),
    )
}

/// The endpoint's router for `worker`, as the local server serves it.
pub fn router(worker: &Worker) -> axum::Router {
    use prefect_nf::endpoint::{Endpoint, InstantMode};
    let current = prefect_nf::worker::Current::new(worker.clone(), None);
    let endpoint = Endpoint::new(
        Arc::new(current),
        InstantMode::Background,
        worker.settings.webhook.clone(),
    );
    prefect_nf::endpoint::router(Arc::new(endpoint))
}

/// One request through `router`: its status and its body as JSON (a string when it is not).
pub async fn call(
    router: &axum::Router,
    request: axum::http::Request<axum::body::Body>,
) -> (u16, Value) {
    use tower::ServiceExt;
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, body)
}

/// A POST of `body` to `path` with `headers`.
pub fn post(
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<axum::body::Body>,
) -> axum::http::Request<axum::body::Body> {
    let mut request = axum::http::Request::post(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(body.into()).unwrap()
}

pub fn worker_for(api: &str, pool: &str, northflank: &str, name: &str) -> Worker {
    let mut settings = Settings::new(api, pool);
    settings.prefect.worker_name = name.to_string();
    settings.polling.window = Duration::ZERO;
    settings.polling.interval = Duration::from_secs(1);
    settings.northflank.api_url = northflank.to_string();
    settings.northflank.retry_base = Duration::from_millis(500);
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

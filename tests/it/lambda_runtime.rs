//! The end-to-end proof under the real Lambda runtime: both binaries run under
//! `cargo lambda watch` (the runtime API emulator) and are invoked with `cargo lambda invoke`
//! using a real EventBridge schedule event and a real Function URL request carrying a Northflank
//! notification, and with instant dispatch handed from the webhook binary to the dispatch
//! binary through Lambda's Invoke API. The binaries read their credentials from a Secrets
//! Manager secret (moto's server), configured only through the environment, as in AWS.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::helpers::{
    DISPATCH_TOKEN, NF_TOKEN, Options, TestApp, WEBHOOK_TOKEN, moto_client, put_secret, repo,
};
use prefect_nf::routes::{DISPATCH_TOKEN_HEADER, INSTANT_PATH};
use serde_json::{Value, json};
use tokio::process::Command;

fn cargo_lambda() -> Command {
    let mut cmd = Command::new("cargo");
    let path = format!(
        "{}:{}",
        repo().join(".venv/bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    cmd.arg("lambda")
        .env("PATH", path)
        .current_dir(repo())
        .kill_on_drop(true);
    cmd
}

/// `cargo lambda invoke`, which has no timeout of its own.
async fn invoke(port: u16, function: &str, data_file: &Path) -> Value {
    let mut cmd = cargo_lambda();
    cmd.args([
        "invoke",
        function,
        "-A",
        "127.0.0.1",
        "-P",
        &port.to_string(),
        "--data-file",
    ])
    .arg(data_file);
    let out = tokio::time::timeout(Duration::from_secs(180), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("cargo lambda invoke {function} timed out"))
        .unwrap();
    assert!(
        out.status.success(),
        "invoke {function}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// `cargo lambda watch` serving both binaries on a free port of 127.0.0.1, configured only
/// through the environment (as in AWS): the test app's Prefect server and emulator, and the
/// credentials from a Secrets Manager secret in moto's server. Stopped when dropped.
struct Watch {
    port: u16,
    dir: PathBuf,
    _process: tokio::process::Child,
}

impl Watch {
    async fn start(app: &TestApp, secret: &str, extra: &[String]) -> Watch {
        Self::start_on(free_port(), app, secret, extra).await
    }

    async fn start_on(port: u16, app: &TestApp, secret: &str, extra: &[String]) -> Watch {
        let dir =
            std::env::temp_dir().join(format!("pfnf-lambda-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let env_file = dir.join("lambda.env");
        let moto = std::env::var("PFNF_TEST_MOTO_URL").unwrap();
        let mut env = vec![
            format!("PREFECT_API_URL={}", app.api),
            format!("PFNF_WORK_POOL={}", app.pool),
            "PFNF_POLL_WINDOW=0".into(),
            "PFNF_RETRY_BASE_MS=500".into(),
            format!("NORTHFLANK_API_URL={}", app.emulator.base_url()),
            format!("PFNF_SECRET_ID={secret}"),
            format!("AWS_ENDPOINT_URL={moto}"),
            "AWS_REGION=us-east-1".into(),
            "AWS_ACCESS_KEY_ID=test".into(),
            "AWS_SECRET_ACCESS_KEY=test".into(),
            "AWS_LAMBDA_LOG_FORMAT=JSON".into(),
        ];
        env.extend_from_slice(extra);
        std::fs::write(&env_file, env.join("\n")).unwrap();
        let logs = std::fs::File::create(dir.join("watch.log")).unwrap();
        let mut watch = cargo_lambda();
        watch
            .args([
                "watch",
                "--ignore-changes",
                "-A",
                "127.0.0.1",
                "-P",
                &port.to_string(),
                "--env-file",
            ])
            .arg(&env_file)
            .stdout(Stdio::from(logs.try_clone().unwrap()))
            .stderr(Stdio::from(logs));
        let process = watch
            .spawn()
            .expect("cargo lambda is installed in .venv by scripts/test");
        for _ in 0..120 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Watch {
            port,
            dir,
            _process: process,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("watch.log")).unwrap()
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A test app whose notifications the test delivers itself, and a secret in moto with its
/// credentials, and `more` keys.
async fn app_and_secret(more: Value) -> (TestApp, String) {
    let app = TestApp::spawn_with(Options {
        register_webhook: false,
        ..Default::default()
    })
    .await;
    let mut credentials = json!({"northflank_api_token": NF_TOKEN, "webhook_token": WEBHOOK_TOKEN});
    credentials
        .as_object_mut()
        .unwrap()
        .extend(more.as_object().unwrap().clone());
    let secret = put_secret(&moto_client(), &credentials).await;
    (app, secret)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn both_functions_work_under_the_lambda_runtime() {
    let (app, secret) = app_and_secret(json!({})).await;
    let metrics = "PFNF_METRICS_NAMESPACE=PrefectNorthflankTest".to_string();
    // A Prefect setting of the function's environment, which the container gets as well.
    let setting = "PREFECT_RESULTS_PERSIST_BY_DEFAULT=true".to_string();
    let watch = Watch::start(&app, &secret, &[metrics, setting]).await;
    let (port, dir) = (watch.port, &watch.dir);

    let deployment = app.deployment(json!({})).await;
    let id = app.scripted_run(deployment, "crash:0.2").await;
    let summary = invoke(
        port,
        "dispatch",
        &repo().join("tests/it/fixtures/eventbridge-schedule.json"),
    )
    .await;
    assert_eq!(summary["submitted"], 1, "{summary}");

    let job = format!("pf-{id}");
    let created = app.bodies("PUT", "/jobs");
    assert_eq!(
        created[0]["runtimeEnvironment"]["PREFECT_RESULTS_PERSIST_BY_DEFAULT"], "true",
        "{created:?}"
    );
    let run = app
        .wait_for_concluded_run(id, Duration::from_secs(20))
        .await;
    let notification = crate::helpers::notification_body("job-run:failure", id, &run, &app.project);
    let mut request: Value =
        serde_json::from_str(include_str!("fixtures/function-url-request.json")).unwrap();
    request["rawPath"] = json!("/");
    request["rawQueryString"] = json!("");
    request["requestContext"]["http"]["method"] = json!("POST");
    request["requestContext"]["http"]["path"] = json!("/");
    request["headers"]["content-type"] = json!("application/json");
    request["headers"]["x-northflank-notification-integration-token"] = json!(WEBHOOK_TOKEN);
    request["body"] = json!(notification.to_string());
    let request_file = dir.join("function-url.json");
    std::fs::write(&request_file, request.to_string()).unwrap();
    let response = invoke(port, "webhook", &request_file).await;
    assert_eq!(response["statusCode"], 200, "{response}");
    let body: Value = serde_json::from_str(response["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["action"], "crashed", "{body}");

    assert_eq!(app.state_type(id).await, "CRASHED");
    assert!(!app.jobs().contains(&job));
    // Structured JSON logs, each with the invocation's request id, and the flow run's ids.
    let log = watch.log();
    let submitted = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["fields"]["decision"] == "submitted")
        .unwrap_or_else(|| panic!("no structured submission line in:\n{log}"));
    // The invocation's span (with the request id) encloses the flow run's span.
    assert!(
        submitted["spans"][0]["requestId"].is_string(),
        "{submitted}"
    );
    assert_eq!(
        submitted["span"]["flow_run_id"],
        id.to_string(),
        "{submitted}"
    );
    assert_eq!(submitted["span"]["job"], job, "{submitted}");
    assert!(
        !log.contains(WEBHOOK_TOKEN) && !log.contains(NF_TOKEN),
        "no secret in the logs"
    );
    // The dispatch summary as CloudWatch metrics: a line of its own that CloudWatch parses.
    let metrics = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["_aws"]["CloudWatchMetrics"].is_array())
        .unwrap_or_else(|| panic!("no embedded-metric-format line in:\n{log}"));
    assert_eq!(
        metrics["_aws"]["CloudWatchMetrics"][0]["Namespace"],
        "PrefectNorthflankTest"
    );
    assert_eq!(metrics["WorkPool"], app.pool.as_str(), "{metrics}");
    assert_eq!(
        (&metrics["RunsClaimed"], &metrics["RunsSubmitted"]),
        (&json!(1), &json!(1)),
        "{metrics}"
    );
}

/// Lambda's queue of asynchronous invocations, which `cargo lambda watch` lacks (1.9.2 answers
/// an `X-Amz-Invocation-Type: Event` invocation only once the function has run): it takes the
/// webhook function's `Invoke` on 127.0.0.1 and answers 202 at once, then delivers the event to
/// the function under `cargo lambda watch` through the same Invoke API. Each `Invoke` it took
/// (its path and headers) and the function's answer come out of the channel.
async fn event_queue(
    watch_port: u16,
) -> (
    String,
    tokio::sync::mpsc::UnboundedReceiver<(String, axum::http::HeaderMap, Value)>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let router = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let tx = tx.clone();
        async move {
            let (parts, body) = request.into_parts();
            let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
            let path = parts.uri.path().to_string();
            let target = format!("http://127.0.0.1:{watch_port}{path}");
            tokio::spawn(async move {
                let answer = reqwest::Client::new().post(target).body(body).send().await;
                let answer = match answer {
                    Ok(r) => r.json().await.unwrap_or(Value::Null),
                    Err(e) => json!({"delivery failed": e.to_string()}),
                };
                let _ = tx.send((path, parts.headers, answer));
            });
            axum::http::StatusCode::ACCEPTED
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (url, rx)
}

/// Instant dispatch under the Lambda runtime: the webhook binary, configured with
/// `PFNF_INSTANT_FUNCTION`, answers the automation's call (a real HTTP request through the
/// Function URL emulation) with 202 well within a second, having handed it to the dispatch
/// binary with a signed asynchronous `Invoke`; the dispatch binary runs the quick dispatch that
/// submits the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn instant_dispatch_is_handed_off_under_the_lambda_runtime() {
    let (app, secret) = app_and_secret(json!({"dispatch_token": DISPATCH_TOKEN})).await;
    let deployment = app.deployment(json!({})).await;
    let id = app.scripted_run(deployment, "hang").await;
    // The queue forwards to watch, which must know the queue: the port is chosen first.
    let watch_port = free_port();
    let (queue, mut delivered) = event_queue(watch_port).await;
    let extra = [
        "PFNF_INSTANT_FUNCTION=dispatch".to_string(),
        format!("AWS_ENDPOINT_URL_LAMBDA={queue}"),
    ];
    let watch = Watch::start_on(watch_port, &app, &secret, &extra).await;
    let base = format!("http://127.0.0.1:{}/lambda-url/webhook", watch.port);
    let http = reqwest::Client::new();
    // The first request starts the webhook binary (and reads the secret): a cold start.
    let health = http
        .get(format!("{base}/health"))
        .timeout(Duration::from_secs(180))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200, "{}", watch.log());

    let started = std::time::Instant::now();
    let answer = http
        .post(format!("{base}{INSTANT_PATH}"))
        .header(DISPATCH_TOKEN_HEADER, DISPATCH_TOKEN)
        .header("content-type", "application/json")
        .body(json!({"work_pool": app.pool}).to_string())
        .send()
        .await
        .unwrap();
    let answered = started.elapsed();
    let status = answer.status();
    let body = answer.text().await.unwrap();
    println!(
        "instant hand-off under cargo lambda watch: {status} in {} ms",
        answered.as_millis()
    );
    assert_eq!(status, 202, "{body}\n{}", watch.log());
    assert_eq!(body, r#"{"accepted":true}"#);
    assert!(answered < Duration::from_secs(1), "{answered:?}");

    let (path, headers, dispatched) =
        tokio::time::timeout(Duration::from_secs(180), delivered.recv())
            .await
            .expect("the dispatch function answers")
            .unwrap();
    assert_eq!(path, "/2015-03-31/functions/dispatch/invocations");
    assert_eq!(headers["x-amz-invocation-type"], "Event");
    let authorization = headers["authorization"].to_str().unwrap();
    assert!(
        authorization.starts_with("AWS4-HMAC-SHA256 Credential=test/")
            && authorization.contains("/us-east-1/lambda/aws4_request"),
        "{authorization}"
    );
    assert_eq!(
        dispatched["instant"]["dispatched"]["submitted"],
        1,
        "{dispatched}\n{}",
        watch.log()
    );
    assert!(
        app.flow_run_json(id).await["infrastructure_pid"]
            .as_str()
            .is_some()
    );
}

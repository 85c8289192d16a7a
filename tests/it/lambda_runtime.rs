//! The end-to-end proof under the real Lambda runtime: both binaries run under
//! `cargo lambda watch` (the runtime API emulator) and are invoked with `cargo lambda invoke`
//! using a real EventBridge schedule event and a real Function URL request carrying a Northflank
//! notification. The binaries read their credentials from a Secrets Manager secret (moto's
//! server), configured only through the environment, as in AWS.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::helpers::{NF_TOKEN, Options, TestApp, WEBHOOK_TOKEN, moto_client, put_secret, repo};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn both_functions_work_under_the_lambda_runtime() {
    let app = TestApp::spawn_with(Options {
        register_webhook: false,
        ..Default::default()
    })
    .await;
    let secret = put_secret(
        &moto_client(),
        &json!({"northflank_api_token": NF_TOKEN, "webhook_token": WEBHOOK_TOKEN}),
    )
    .await;
    let dir = std::env::temp_dir().join(format!("pfnf-lambda-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let env_file = dir.join("lambda.env");
    let moto = std::env::var("PFNF_TEST_MOTO_URL").unwrap();
    std::fs::write(
        &env_file,
        [
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
            "PFNF_METRICS_NAMESPACE=PrefectNorthflankTest".into(),
        ]
        .join("\n"),
    )
    .unwrap();

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
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
    let _watch = watch
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
    app.wait_until("the Northflank run to fail", Duration::from_secs(20), |a| {
        a.emulator
            .snapshot()
            .runs
            .iter()
            .any(|r| r.job_id == job && r.run.concluded)
    })
    .await;
    let run = app.northflank_run(id).await;
    let notification = json!({"event": "job-run:failure", "data": {"jobRun": {"id": run}, "job": {"id": job}, "project": {"id": app.project}}});
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
    let log = std::fs::read_to_string(dir.join("watch.log")).unwrap();
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

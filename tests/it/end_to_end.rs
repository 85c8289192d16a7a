//! Flow runs through dispatch, the emulator and the webhook, against the real Prefect server.

use std::time::Duration;

use crate::helpers::{Options, TestApp, process_mode, repo};
use serde_json::json;

/// 8a: a real flow, executed by `prefect flow-run execute` in the emulator's process mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_real_flow_completes_and_its_job_is_deleted() {
    let options = Options {
        emulator: process_mode(&repo().join(".venv/bin")),
        api_key: Some("pnu_only_in_the_run".into()),
        ..Default::default()
    };
    let app = TestApp::spawn_with(options).await;
    let deployment = app.deployment(json!({})).await;
    let id = app
        .flow_run(deployment, json!({"env": {"FROM_THE_RUN": "yes"}}))
        .await;

    let summary = app.dispatch_once().await;
    assert_eq!(
        (
            summary.dispatch.claimed,
            summary.dispatch.submitted,
            summary.dispatch.failed
        ),
        (1, 1, 0),
        "{summary:?}"
    );

    let run = app
        .wait_for_state(id, &["COMPLETED"], Duration::from_secs(180))
        .await;
    let job = format!("pf-{id}");
    let pid = run["infrastructure_pid"].as_str().unwrap();
    assert!(pid.starts_with(&format!("test-project:{job}:")), "{pid}");
    assert_eq!(run["labels"]["prefect.worker.name"], "prefect-nf-test");
    assert_eq!(run["labels"]["prefect.worker.type"], "northflank");
    assert_eq!(run["labels"]["prefect.work-pool.name"], app.pool.as_str());
    app.wait_until("the job to be deleted", Duration::from_secs(30), |a| {
        !a.jobs().contains(&job)
    })
    .await;

    // The job definition carries the flow run's environment but never the Prefect API key; the
    // run's own environment carries the key.
    let job_body = app.bodies("PUT", "/jobs").pop().unwrap();
    let job_env = &job_body["runtimeEnvironment"];
    assert_eq!(job_env["PREFECT__FLOW_RUN_ID"], id.to_string());
    assert_eq!(job_env["FROM_THE_RUN"], "yes");
    assert_eq!(job_env["PREFECT_API_URL"], app.api);
    assert!(
        !job_body.to_string().contains("pnu_only_in_the_run"),
        "{job_body}"
    );
    let run_body = app.bodies("POST", "/runs").pop().unwrap();
    assert_eq!(
        run_body["runtimeEnvironment"]["PREFECT_API_KEY"],
        "pnu_only_in_the_run"
    );

    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let logs = app.logs(id).await.join("\n");
        let expected = [
            format!("Worker 'prefect-nf-test' submitting flow run '{id}'"),
            "submitted to infrastructure".to_string(),
            "Hello, Northflank!".to_string(),
            format!("Deleted Northflank job '{job}'"),
            format!("of job '{job}' started"),
        ];
        if expected.iter().all(|e| logs.contains(e.as_str())) {
            // A container that succeeded has nothing to explain.
            assert!(!logs.contains("log lines of Northflank run"), "{logs}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "missing worker messages in:\n{logs}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // Four Northflank requests for the flow run: create the job, start its run, read the run once
    // it concluded, delete the job. The start notification is not confirmed with a read.
    let counters = app.emulator.counters().requests;
    let for_the_run: Vec<(&String, &u64)> = counters
        .iter()
        .filter(|(k, _)| k.contains("/jobs") && k.as_str() != "GET /v1/projects/{projectId}/jobs")
        .collect();
    assert_eq!(
        for_the_run.iter().map(|(_, n)| **n).sum::<u64>(),
        4,
        "{for_the_run:?}"
    );
}

/// 8b: the container dies without reporting: Crashed by the webhook, naming the Northflank run.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_container_crashes_the_flow_run_and_cleans_up() {
    let app = TestApp::spawn().await;
    let deployment = app.deployment(json!({})).await;
    let id = app.scripted_run(deployment, "crash:0.3").await;

    assert_eq!(app.dispatch_once().await.dispatch.submitted, 1);
    let run = app
        .wait_for_state(id, &["CRASHED"], Duration::from_secs(30))
        .await;
    let job = format!("pf-{id}");
    let nf_run = app.northflank_run(id).await;
    assert!(!nf_run.is_empty());
    let message = run["state"]["message"].as_str().unwrap();
    assert!(
        message.contains(&nf_run) && message.contains(&job),
        "{message}"
    );
    app.wait_until("the job to be deleted", Duration::from_secs(10), |a| {
        !a.jobs().contains(&job)
    })
    .await;

    // The container's last lines reach the flow run's logs (read before its job was deleted;
    // the lines are sent right after, and the server stores them a moment later).
    let wanted = |logs: &str| {
        logs.contains(&format!("log lines of Northflank run '{nf_run}'"))
            && logs.contains("Running flow...")
    };
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut logs = app.logs(id).await.join("\n");
    while !wanted(&logs) && tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(200)).await;
        logs = app.logs(id).await.join("\n");
    }
    assert!(wanted(&logs), "{logs}");
    let events = app
        .worker_events(
            id,
            &[
                "prefect.worker.submitted-flow-run",
                "prefect.worker.executed-flow-run",
            ],
        )
        .await;
    let executed = events
        .iter()
        .find(|e| e["event"] == "prefect.worker.executed-flow-run")
        .unwrap();
    let submitted = events
        .iter()
        .find(|e| e["event"] == "prefect.worker.submitted-flow-run")
        .unwrap();
    assert_eq!(executed["follows"], submitted["id"]);
    let flow_run = executed["related"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["prefect.resource.role"] == "flow-run")
        .unwrap();
    assert_eq!(flow_run["prefect.infrastructure.status-code"], "1");
    assert!(
        flow_run["prefect.infrastructure.identifier"]
            .as_str()
            .unwrap()
            .ends_with(&nf_run)
    );
}

/// 8e: Northflank refuses the job (an older 20-character name limit): Crashed at once with
/// Northflank's own validation message in the logs, and the write is not repeated.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_northflank_rejects_crashes_with_its_message_and_no_retries() {
    let emulator = nf_emulator::Config {
        name_max_len: 20,
        ..Default::default()
    };
    let app = TestApp::with_emulator(emulator).await;
    let deployment = app.deployment(json!({})).await;
    let id = app.flow_run(deployment, json!({})).await;

    let summary = app.dispatch_once().await;
    assert_eq!(
        (
            summary.dispatch.claimed,
            summary.dispatch.failed,
            summary.dispatch.submitted
        ),
        (1, 1, 0),
        "{summary:?}"
    );
    let run = app
        .wait_for_state(id, &["CRASHED"], Duration::from_secs(10))
        .await;
    let message = run["state"]["message"].as_str().unwrap();
    assert!(message.starts_with("Failed to submit flow run to infrastructure: Northflank rejected the request (HTTP 400)"), "{message}");
    assert!(message.contains("name"), "{message}");
    let logs = app.logs(id).await.join("\n");
    assert!(
        logs.contains("Northflank rejected the request (HTTP 400)"),
        "{logs}"
    );

    let counters = app.emulator.counters();
    let writes: u64 = counters
        .requests
        .iter()
        .filter(|(k, _)| k.contains("/jobs") && !k.starts_with("GET"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(writes, 1, "{:?}", counters.requests);
    assert_eq!(counters.runs_started, 0);
    assert!(app.jobs().is_empty());
}

/// A configuration we can tell is invalid never reaches Northflank.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_invalid_image_is_refused_before_any_northflank_request() {
    let app = TestApp::spawn().await;
    let deployment = app
        .deployment(json!({"deployment_external_image_path": "prefecthq/prefect"}))
        .await;
    let id = app.flow_run(deployment, json!({})).await;

    assert_eq!(app.dispatch_once().await.dispatch.failed, 1);
    let run = app
        .wait_for_state(id, &["CRASHED"], Duration::from_secs(10))
        .await;
    let message = run["state"]["message"].as_str().unwrap();
    assert!(
        message.contains("deployment_external_image_path") && message.contains("tag or digest"),
        "{message}"
    );
    assert!(
        app.logs(id)
            .await
            .join("\n")
            .contains("deployment_external_image_path")
    );
    // Reconciliation may list the project's jobs; nothing may be written.
    let requests = app.emulator.counters().requests;
    assert!(
        requests
            .keys()
            .all(|k| !k.contains("/jobs") || k.starts_with("GET ")),
        "{requests:?}"
    );
}

/// `cleanup_job: false` keeps the job after the run; the choice travels in the pid.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cleanup_job_false_keeps_the_job() {
    let app = TestApp::spawn().await;
    let deployment = app.deployment(json!({"cleanup_job": false})).await;
    let id = app.scripted_run(deployment, "succeed:0.2").await;

    assert_eq!(app.dispatch_once().await.dispatch.submitted, 1);
    let run = app
        .wait_for_state(id, &["COMPLETED"], Duration::from_secs(30))
        .await;
    assert!(
        run["infrastructure_pid"]
            .as_str()
            .unwrap()
            .ends_with(":keep"),
        "{}",
        run["infrastructure_pid"]
    );
    let job = format!("pf-{id}");
    app.wait_for_delivery("job-run:success", Duration::from_secs(10))
        .await;
    assert!(app.jobs().contains(&job));
    assert_eq!(app.emulator.counters().jobs_deleted, 0);
}

/// The long-running local worker: dispatch ticks and its own webhook server, until stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_local_worker_runs_flows_until_stopped() {
    let app = TestApp::spawn_with(Options {
        register_webhook: false,
        ..Default::default()
    })
    .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}{}",
        listener.local_addr().unwrap(),
        prefect_nf::routes::WEBHOOK_PATH
    );
    app.register_webhook(&url).await;
    assert_eq!(app.worker.batching(), None, "a test app sends at once");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(prefect_nf::local::run(
        app.worker.clone(),
        listener,
        async {
            let _ = stopped.await;
        },
    ));

    let deployment = app.deployment(json!({})).await;
    let ids = [
        app.scripted_run(deployment, "succeed:0.2").await,
        app.scripted_run(deployment, "crash:0.2").await,
    ];
    app.wait_for_state(ids[0], &["COMPLETED"], Duration::from_secs(30))
        .await;
    app.wait_for_state(ids[1], &["CRASHED"], Duration::from_secs(30))
        .await;
    app.wait_until("both jobs deleted", Duration::from_secs(15), |a| {
        a.jobs().is_empty()
    })
    .await;

    // It sends notifications' lines and events in batches, as dispatch sends its own: one
    // `POST /logs/` and one `POST /events` for many runs (`prefect_cost`).
    assert_eq!(
        app.worker.batching(),
        Some(prefect_nf::dispatch::LOG_FLUSH_EVERY)
    );
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), worker)
        .await
        .expect("stops promptly")
        .unwrap()
        .unwrap();
}

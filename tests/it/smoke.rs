//! The end-to-end smoke test, against every supported Prefect version: the oldest, whose server
//! `scripts/lib.sh` installs and starts beside the others, and the current one. One dispatch
//! makes the pool READY and claims two runs; a real flow, executed by the server's own version
//! of `prefect flow-run execute` in the emulator's process mode, reaches COMPLETED; a flow whose
//! process dies mid-run is Crashed by the webhook; both jobs are deleted.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{FlowSource, Options, PrefectServer, TestApp, process_mode, repo};

/// A Prefect server, and the Prefect of the same version that runs the flows.
struct Target {
    server: PrefectServer,
    prefect_bin: PathBuf,
}

fn current() -> Target {
    Target {
        server: PrefectServer::open(),
        prefect_bin: repo().join(".venv/bin"),
    }
}

fn oldest() -> Target {
    let var = |name| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!("{name} is not set: run the tests through scripts/test, which starts the oldest supported Prefect server")
        })
    };
    Target {
        server: PrefectServer {
            api: var("PFNF_TEST_OLDEST_API_URL"),
            auth: None,
        },
        prefect_bin: PathBuf::from(var("PFNF_TEST_OLDEST_VENV")).join("bin"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn smoke_oldest_supported_prefect() {
    smoke(oldest()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn smoke_current_prefect() {
    smoke(current()).await
}

async fn smoke(target: Target) {
    let app = TestApp::spawn_with(Options {
        prefect: target.server,
        emulator: process_mode(&target.prefect_bin),
        ..Default::default()
    })
    .await;
    let version = app.get("/admin/version").await;
    let version = version.as_str().unwrap_or_default().to_string();
    let hello = app.deployment(json!({})).await;
    let dies = FlowSource {
        name: "dies-mid-run",
        dir: repo().join("tests/it/fixtures/smoke"),
        entrypoint: "dies.py:dies",
    };
    let command = "SMOKE_CONTAINER_PID=$$ exec prefect flow-run execute";
    let dies = app.deployment_of(&dies, json!({"command": command})).await;
    let completes = app.flow_run(hello, json!({})).await;
    let crashes = app.flow_run(dies, json!({})).await;

    let summary = app.dispatch_once().await;
    let d = &summary.dispatch;
    assert_eq!(
        (d.claimed, d.submitted, d.failed),
        (2, 2, 0),
        "{version}: {summary:?}"
    );
    let pool = app.get(&format!("/work_pools/{}", app.pool)).await;
    assert_eq!(pool["status"], "READY", "{version}: {pool}");

    let run = app
        .wait_for_state(completes, &["COMPLETED"], Duration::from_secs(180))
        .await;
    let crashed = app
        .wait_for_state(crashes, &["CRASHED"], Duration::from_secs(180))
        .await;
    // Crashed by the webhook, not by anything in the container: the message names the job.
    let message = crashed["state"]["message"].as_str().unwrap_or_default();
    let nf_run = app.northflank_run(crashes).await;
    assert!(
        !nf_run.is_empty()
            && message.contains(&nf_run)
            && message.contains(&format!("pf-{crashes}")),
        "{version}: {message}"
    );
    app.wait_until("both jobs deleted", Duration::from_secs(30), |a| {
        a.jobs().is_empty()
    })
    .await;
    let logs = app.logs(completes).await.join("\n");
    assert!(
        logs.contains("Hello, Northflank!") && logs.contains("submitted to infrastructure"),
        "{version}: {logs}"
    );
    app.worker_events(
        crashes,
        &[
            "prefect.worker.submitted-flow-run",
            "prefect.worker.executed-flow-run",
        ],
    )
    .await;
    degradations(&app, &version, &run).await;
}

/// What the README says an older server lacks, checked on the server at hand.
async fn degradations(app: &TestApp, version: &str, run: &Value) {
    let labelled = run["labels"]["prefect.worker.name"] == "prefect-nf-test";
    assert_eq!(
        labelled,
        at_least(version, (3, 1, 6)),
        "{version}: worker labels {}",
        run["labels"]
    );
    let id = run["id"].as_str().unwrap();
    let states = app
        .get(&format!("/flow_run_states/?flow_run_id={id}"))
        .await;
    let submitting = states
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["name"] == "Submitting");
    assert_eq!(
        submitting,
        at_least(version, (3, 6, 22)),
        "{version}: {states}"
    );
}

/// Whether a Prefect version (`3.0.0`, `3.9.1`, `3.10.0rc1`) is at least `min`.
fn at_least(version: &str, min: (u32, u32, u32)) -> bool {
    let mut parts = version.split('.').map(|p| {
        p.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse::<u32>()
            .unwrap_or(0)
    });
    let mut next = || parts.next().unwrap_or(0);
    (next(), next(), next()) >= min
}

#[test]
fn versions_compare_by_their_numbers() {
    assert!(at_least("3.9.1", (3, 6, 22)));
    assert!(at_least("3.10.0rc1", (3, 9, 0)));
    assert!(!at_least("3.0.0", (3, 1, 6)));
    assert!(!at_least("3.6.21", (3, 6, 22)));
    assert!(at_least("3.1.6", (3, 1, 6)));
}

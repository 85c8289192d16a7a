//! Dispatch against the real Prefect server: racing dispatchers and liveness.

use crate::helpers;

use std::collections::HashSet;
use std::time::Duration;

use crate::helpers::TestApp;
use prefect_nf::dispatch;
use serde_json::{Value, json};

/// 8c: three dispatchers racing over 50 scheduled runs make exactly 50 jobs and 50 runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_dispatchers_submit_each_run_exactly_once() {
    let app = TestApp::spawn().await;
    let deployment = app.deployment(json!({})).await;
    let mut ids = Vec::new();
    for _ in 0..50 {
        ids.push(app.scripted_run(deployment, "succeed:0.5").await);
    }
    // Each dispatcher polls for 20 s, taking per poll only as many runs as it has free slots.
    let workers = ["dispatcher-a", "dispatcher-b", "dispatcher-c"].map(|name| {
        let mut w = app.another_worker(name);
        w.settings.polling.window = Duration::from_secs(20);
        w
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let (a, b, c) = tokio::join!(
        prefect_nf::scheduled::invoke(&workers[0], deadline),
        prefect_nf::scheduled::invoke(&workers[1], deadline),
        prefect_nf::scheduled::invoke(&workers[2], deadline),
    );
    let summaries = [a.unwrap(), b.unwrap(), c.unwrap()];
    let submitted: u32 = summaries.iter().map(|s| s.dispatch.submitted).sum();
    let claimed: u32 = summaries.iter().map(|s| s.dispatch.claimed).sum();
    assert_eq!((submitted, claimed), (50, 50), "{summaries:#?}");

    let counters = app.emulator.counters();
    assert_eq!(counters.jobs_created, 50, "{counters:?}");
    assert_eq!(counters.runs_started, 50, "{counters:?}");
    // One started run per job, and one job per flow run (finished jobs are already deleted, so
    // count from what the emulator received).
    let starts: Vec<String> = app
        .emulator
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/runs") && r.status == 200)
        .map(|r| r.path)
        .collect();
    let jobs: HashSet<&String> = starts.iter().collect();
    assert_eq!((starts.len(), jobs.len()), (50, 50));
    for id in &ids {
        app.wait_for_state(*id, &["COMPLETED"], Duration::from_secs(60))
            .await;
    }
    app.wait_until("all jobs deleted", Duration::from_secs(30), |a| {
        a.jobs().is_empty()
    })
    .await;
}

/// 8f: after one invocation the pool is READY, the worker ONLINE, and the polled queue and
/// deployment READY.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_invocation_makes_the_pool_ready_and_the_worker_online() {
    let app = TestApp::spawn().await;
    let deployment = app.deployment(json!({})).await;
    assert_eq!(
        app.get(&format!("/work_pools/{}", app.pool)).await["status"],
        "NOT_READY"
    );

    let summary = app.dispatch_once().await;
    assert_eq!(summary.dispatch.polls, 1);

    assert_eq!(
        app.get(&format!("/work_pools/{}", app.pool)).await["status"],
        "READY"
    );
    let workers = app
        .post(
            &format!("/work_pools/{}/workers/filter", app.pool),
            json!({}),
        )
        .await;
    let ours: Vec<&Value> = workers
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["name"] == "prefect-nf-test")
        .collect();
    assert_eq!(ours.len(), 1, "{workers}");
    assert_eq!(ours[0]["status"], "ONLINE");
    assert_eq!(ours[0]["heartbeat_interval_seconds"], 60);
    // Queue and deployment readiness are recorded by background tasks after the poll.
    let queue = format!("/work_pools/{}/queues/default", app.pool);
    let deployment = format!("/deployments/{deployment}");
    for path in [queue, deployment] {
        let mut status = Value::Null;
        for _ in 0..40 {
            status = app.get(&path).await["status"].clone();
            if status == "READY" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        assert_eq!(status, "READY", "{path}");
    }
}

/// The default schedule (template.yaml: one invocation a minute) with the default poll window
/// keeps the worker ONLINE and the pool, queue and deployment READY between ticks. The server
/// marks a queue or deployment NOT_READY 60 s after its last poll, and a worker OFFLINE three
/// heartbeat intervals after its last heartbeat; the statuses are read at the worst moment,
/// just before the next tick.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readiness_holds_between_two_scheduled_invocations() {
    let app = TestApp::spawn().await;
    let deployment = app.deployment(json!({})).await;
    let defaults = prefect_nf::config::PollingSettings::default();
    let mut worker = app.another_worker("prefect-nf-test");
    worker.settings.polling.window = defaults.window;
    worker.settings.polling.interval = defaults.interval;
    let tick = Duration::from_secs(60);

    let first = tokio::time::Instant::now();
    let summary = prefect_nf::scheduled::invoke(&worker, first + Duration::from_secs(90))
        .await
        .unwrap();
    assert!(summary.dispatch.polls >= 5, "{summary:?}");
    tokio::time::sleep_until(first + tick - Duration::from_secs(1)).await;
    assert_eq!(
        statuses(&app, deployment).await,
        ["ONLINE", "READY", "READY", "READY"]
    );
    // The last poll is recent enough that the 60 s timeout is far off, not merely unreached.
    let last_polled = app.get(&format!("/deployments/{deployment}")).await["last_polled"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .expect("last_polled");
    let since = chrono::Utc::now().signed_duration_since(last_polled);
    assert!(since.num_seconds() < 30, "last poll {since} ago");

    worker.settings.polling.window = Duration::ZERO;
    prefect_nf::scheduled::invoke(&worker, first + tick + Duration::from_secs(90))
        .await
        .unwrap();
    assert_eq!(
        statuses(&app, deployment).await,
        ["ONLINE", "READY", "READY", "READY"]
    );
}

/// Our worker's status, then the pool's, the default queue's and the deployment's.
async fn statuses(app: &TestApp, deployment: uuid::Uuid) -> [String; 4] {
    let workers = app
        .post(
            &format!("/work_pools/{}/workers/filter", app.pool),
            json!({}),
        )
        .await;
    let worker = workers
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "prefect-nf-test")
        .map(|w| w["status"].as_str().unwrap_or_default().to_string())
        .unwrap_or_default();
    let status = |v: Value| v["status"].as_str().unwrap_or_default().to_string();
    [
        worker,
        status(app.get(&format!("/work_pools/{}", app.pool)).await),
        status(
            app.get(&format!("/work_pools/{}/queues/default", app.pool))
                .await,
        ),
        status(app.get(&format!("/deployments/{deployment}")).await),
    ]
}

/// A missing pool is reported as a configuration error, not an HTTP status.
#[tokio::test]
async fn a_missing_pool_is_a_clear_error() {
    let api = helpers::prefect_api_url();
    let worker = helpers::worker_for(
        &api,
        "no-such-pool-for-prefect-nf",
        "http://127.0.0.1:9",
        "w",
    );
    let err = prefect_nf::scheduled::invoke(
        &worker,
        tokio::time::Instant::now() + Duration::from_secs(20),
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "work pool 'no-such-pool-for-prefect-nf' does not exist; create it with `prefect-nf work-pool create`"
    );
}

/// Prefect lets a finished run go back to PENDING. A claim made from a stale poll must not
/// resurrect it: the finished state is restored and nothing is submitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_claim_restores_the_finished_state_and_submits_nothing() {
    let app = TestApp::spawn().await;
    let deployment = app.deployment(json!({})).await;
    let id = app.flow_run(deployment, json!({})).await;
    let (pool, _) = dispatch::heartbeat(&app.worker).await.unwrap();
    let polled = dispatch::poll(&app.worker, 10).await.unwrap();
    assert_eq!(polled.len(), 1);

    // Meanwhile, the run finishes elsewhere.
    app.post(
        &format!("/flow_runs/{id}/set_state"),
        json!({"state": {"type": "COMPLETED", "name": "Completed"}, "force": true}),
    )
    .await;

    let outcome = dispatch::submit(&app.worker, &pool, &polled[0]).await;
    app.worker.send_pending().await;
    match &outcome {
        dispatch::SubmitOutcome::NotClaimed { reason } => {
            assert!(reason.contains("already left Scheduled"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(app.state_type(id).await, "COMPLETED");
    assert!(
        app.emulator
            .counters()
            .requests
            .keys()
            .all(|k| !k.contains("/jobs"))
    );
    assert!(
        app.logs(id)
            .await
            .join("\n")
            .contains("that state was restored")
    );
}

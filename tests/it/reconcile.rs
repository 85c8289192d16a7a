//! Reconciliation, one step at a time, against the real Prefect server and the emulator: what
//! lost notifications and interrupted submitters leave behind is made good.

use crate::helpers;

use std::time::Duration;

use crate::helpers::{Options, TestApp, reconcile_once};
use prefect_nf::worker::Worker;
use serde_json::json;

fn eager(app: &TestApp) -> Worker {
    app.eager_worker("reconciler")
}

fn no_engine() -> Options {
    Options {
        emulator: nf_emulator::Config {
            report_to_prefect: false,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// The dispatcher died between writing the job and starting its run: the submission is
/// finished, and the flow run gets exactly one run.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_interrupted_submission_is_finished_with_exactly_one_run() {
    let faults = nf_emulator::Faults {
        stall_run_starts_token: Some("doomed-token".into()),
        ..Default::default()
    };
    let emulator = nf_emulator::Config {
        api_tokens: vec![helpers::NF_TOKEN.into(), "doomed-token".into()],
        faults,
        report_to_prefect: true,
        ..Default::default()
    };
    let app = TestApp::with_emulator(emulator).await;
    let deployment = app.deployment(json!({})).await;
    let id = app.scripted_run(deployment, "succeed:0.2").await;

    let mut doomed = app.another_worker("doomed");
    doomed.credentials.northflank_token = prefect_nf::config::Secret::new("doomed-token");
    let doomed = Worker::new(doomed.settings.clone(), doomed.credentials.clone()).unwrap();
    let dying = tokio::spawn(async move {
        prefect_nf::scheduled::invoke(
            &doomed,
            tokio::time::Instant::now() + Duration::from_secs(60),
        )
        .await
    });
    let job = format!("pf-{id}");
    app.wait_until(
        "the doomed dispatcher to write the job",
        Duration::from_secs(15),
        |a| a.jobs().contains(&job),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    dying.abort();
    let run = app.flow_run_json(id).await;
    assert_eq!(
        (
            run["state"]["type"].as_str(),
            run["infrastructure_pid"].as_str()
        ),
        (Some("PENDING"), None)
    );

    let report = reconcile_once(&eager(&app)).await;
    assert_eq!(report.resumed, 1, "{report:?}");
    app.wait_for_state(id, &["COMPLETED"], Duration::from_secs(20))
        .await;
    assert_eq!(
        app.emulator.counters().runs_started_by_job.get(&job),
        Some(&1)
    );
    assert!(
        app.logs(id)
            .await
            .join("\n")
            .contains("finishing the interrupted submission")
    );
}

/// The run was started but its pid never recorded: resuming adopts it instead of starting another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_started_run_without_a_pid_is_adopted_not_started_again() {
    let app = TestApp::spawn_with(no_engine()).await;
    let deployment = app.deployment(json!({})).await;
    let id = app.scripted_run(deployment, "hang").await;
    assert_eq!(app.dispatch_once().await.dispatch.submitted, 1);
    let run_before = app.northflank_run(id).await;
    // As if the PATCH of the pid had been lost.
    let (status, text) = app
        .raw(
            reqwest::Method::PATCH,
            &format!("/flow_runs/{id}"),
            Some(&json!({"infrastructure_pid": null})),
        )
        .await;
    assert_eq!(status, 204, "{text}");

    let report = reconcile_once(&eager(&app)).await;
    assert_eq!(report.resumed, 1, "{report:?}");
    assert_eq!(app.northflank_run(id).await, run_before);
    assert_eq!(app.emulator.counters().runs_started, 1);
}

/// Every notification is lost: a crashed container is found and Crashed, and a finished run's
/// job is found and deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lost_notifications_are_made_good() {
    let faults = nf_emulator::Faults {
        seed: 1,
        webhook_drop_pct: 100.0,
        ..Default::default()
    };
    let emulator = nf_emulator::Config {
        faults,
        report_to_prefect: true,
        ..Default::default()
    };
    let app = TestApp::with_emulator(emulator).await;
    let deployment = app.deployment(json!({})).await;
    let crashed = app.scripted_run(deployment, "crash:0.2").await;
    let completed = app.scripted_run(deployment, "succeed:0.2").await;
    assert_eq!(app.dispatch_once().await.dispatch.submitted, 2);
    app.wait_for_state(completed, &["COMPLETED"], Duration::from_secs(20))
        .await;
    app.wait_until("both runs to conclude", Duration::from_secs(20), |a| {
        a.emulator.snapshot().runs.iter().all(|r| r.run.concluded)
    })
    .await;
    assert_eq!(
        app.state_type(crashed).await,
        "RUNNING",
        "no notification arrived"
    );

    let report = reconcile_once(&eager(&app)).await;
    assert_eq!((report.settled, report.jobs_deleted), (1, 2), "{report:?}");
    let run = app
        .wait_for_state(crashed, &["CRASHED"], Duration::from_secs(5))
        .await;
    assert!(run["state"]["message"].as_str().unwrap().contains("failed"));
    assert!(app.jobs().is_empty(), "{:?}", app.jobs());
}

/// Cancelling: a container that never started the flow is aborted and the run Cancelled; a
/// started one whose runner does not react within the grace period too; a claim that never got
/// infrastructure is Cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancellations_are_carried_out() {
    // The runner never notices the cancellation and no notification arrives: only
    // reconciliation acts.
    let emulator = nf_emulator::Config {
        report_to_prefect: true,
        engine_poll: Duration::from_secs(3600),
        ..Default::default()
    };
    let app = TestApp::spawn_with(Options {
        emulator,
        register_webhook: false,
        ..Default::default()
    })
    .await;
    let deployment = app.deployment(json!({})).await;
    let never_started = app
        .flow_run(
            deployment,
            json!({"env": {"NF_EMULATOR_SCRIPT": "hang", "NF_EMULATOR_ENGINE": "off"}}),
        )
        .await;
    let deaf = app.scripted_run(deployment, "hang").await;
    assert_eq!(app.dispatch_once().await.dispatch.submitted, 2);
    app.wait_for_state(deaf, &["RUNNING"], Duration::from_secs(10))
        .await;
    let unsubmitted = app.flow_run(deployment, json!({})).await;
    let claimed = app
        .post(
            &format!("/flow_runs/{unsubmitted}/set_state"),
            json!({"state": {"type": "PENDING", "name": "Pending"}}),
        )
        .await;
    assert_eq!(claimed["status"], "ACCEPT");
    for id in [never_started, deaf, unsubmitted] {
        let r = app
            .post(
                &format!("/flow_runs/{id}/set_state"),
                json!({"state": {"type": "CANCELLING"}, "force": false}),
            )
            .await;
        assert_eq!(r["state"]["type"], "CANCELLING", "{r}");
    }

    let report = reconcile_once(&eager(&app)).await;
    assert_eq!((report.cancelled, report.aborted), (3, 2), "{report:?}");
    for id in [never_started, deaf, unsubmitted] {
        assert_eq!(app.state_type(id).await, "CANCELLED");
    }
    let message = |run: serde_json::Value| {
        run["state"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert!(message(app.flow_run_json(never_started).await).contains("while pending"));
    assert!(message(app.flow_run_json(deaf).await).contains("aborted"));
    assert!(message(app.flow_run_json(unsubmitted).await).contains("no infrastructure"));
    assert_eq!(app.emulator.counters().runs_aborted, 2);
    assert!(app.jobs().is_empty());
}

/// Reconciliation never spends more than its Northflank budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_stays_within_its_budget() {
    let app = TestApp::spawn_with(no_engine()).await;
    let deployment = app.deployment(json!({})).await;
    for _ in 0..4 {
        app.scripted_run(deployment, "hang").await;
    }
    assert_eq!(app.dispatch_once().await.dispatch.submitted, 4);
    let mut w = eager(&app);
    w.settings.reconcile.max_requests = 2;
    let before = w.northflank.requests_sent();
    let report = reconcile_once(&w).await;
    assert!(report.out_of_budget, "{report:?}");
    assert_eq!(w.northflank.requests_sent() - before, 2);
    // With a generous budget every run is verified once, and not again right away.
    w.settings.reconcile.max_requests = 100;
    assert_eq!(
        reconcile_once(&w).await.verified,
        2,
        "the two checked already wait their turn"
    );
    w.settings.reconcile.check_after = Duration::from_secs(3600);
    assert_eq!(reconcile_once(&w).await.verified, 0);
}

/// A job whose flow run finished without a notification is found by listing the project's
/// jobs, which one process does once per `sweep_interval` (at once when it starts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leftover_jobs_are_swept_once_per_interval() {
    let app = TestApp::spawn_with(no_engine()).await;
    let deployment = app.deployment(json!({})).await;
    // A run that finished in Prefect while its notification was lost: its job stays.
    let leftover = || async {
        let id = app.scripted_run(deployment, "hang").await;
        assert_eq!(app.dispatch_once().await.dispatch.submitted, 1);
        let done = app
            .post(
                &format!("/flow_runs/{id}/set_state"),
                json!({"state": {"type": "COMPLETED"}, "force": true}),
            )
            .await;
        assert_eq!(done["status"], "ACCEPT", "{done}");
        assert_eq!(app.jobs().len(), 1);
    };
    let listings = || {
        app.emulator
            .counters()
            .requests
            .get("GET /v1/projects/{projectId}/jobs")
            .copied()
            .unwrap_or(0)
    };
    let mut w = app.another_worker("sweeper");
    assert_eq!(
        w.settings.reconcile.sweep_interval,
        Duration::from_secs(600)
    );

    leftover().await;
    let before = listings();
    assert_eq!(reconcile_once(&w).await.jobs_deleted, 1);
    assert_eq!(listings() - before, 1);
    assert!(app.jobs().is_empty());

    leftover().await;
    assert_eq!(reconcile_once(&w).await.jobs_deleted, 0, "not due yet");
    assert_eq!(listings() - before, 1);
    assert_eq!(app.jobs().len(), 1);

    w.settings.reconcile.sweep_interval = Duration::ZERO;
    assert_eq!(reconcile_once(&w).await.jobs_deleted, 1);
    assert!(app.jobs().is_empty());
}

//! Only what is provably ours is touched: two installations (staging on one Prefect server,
//! production on the other) share one Northflank project, another work pool's run has a job
//! named after it, and a run of our pool records another worker's infrastructure.

use crate::helpers;

use std::time::Duration;

use crate::helpers::{NF_TOKEN, Options, PrefectServer, TestApp, notification, reconcile_once};
use prefect_nf::config::Secret;
use prefect_nf::ids::FlowRunId;
use prefect_nf::northflank::NorthflankClient;
use prefect_nf::ownership::Marker;
use prefect_nf::worker::Worker;
use serde_json::{Value, json};

fn eager(app: &TestApp, name: &str) -> Worker {
    app.eager_worker(name)
}

fn nf(app: &TestApp) -> NorthflankClient {
    NorthflankClient::new(
        &app.emulator.base_url(),
        Secret::new(NF_TOKEN),
        Duration::from_millis(200),
    )
    .unwrap()
}

/// A job someone else writes in the project, named as they like, without our marker, and a run
/// of it that follows `script`.
async fn foreign_job(app: &TestApp, name: &str, script: &str) -> String {
    let nf = nf(app);
    let body = json!({
        "name": name,
        "description": "written by someone else",
        "billing": {"deploymentPlan": "nf-compute-20"},
        "deployment": {"external": {"imagePath": "prefecthq/prefect:3-python3.12"}},
        "runtimeEnvironment": {"NF_EMULATOR_SCRIPT": script},
        "settings": {"backoffLimit": 0},
    });
    let job = nf.put_job(&app.project, &body).await.unwrap().id;
    nf.start_run(&app.project, &job, &json!({}))
        .await
        .unwrap()
        .id
}

/// A flow run of another work pool of `app`'s Prefect server, RUNNING (on infrastructure of
/// its own, which this worker knows nothing about).
async fn running_run_of_another_pool(app: &TestApp) -> FlowRunId {
    let other = format!("other-{}", uuid::Uuid::new_v4().simple());
    app.post("/work_pools/", json!({"name": other, "type": "process"}))
        .await;
    let flow = app.post("/flows/", json!({"name": "elsewhere"})).await;
    let deployment = app
        .post(
            "/deployments/",
            json!({"name": format!("d-{other}"), "flow_id": flow["id"], "work_pool_name": other}),
        )
        .await;
    let run = app
        .post(
            &format!(
                "/deployments/{}/create_flow_run",
                deployment["id"].as_str().unwrap()
            ),
            json!({}),
        )
        .await;
    let id: FlowRunId = run["id"].as_str().unwrap().parse().unwrap();
    let running = app
        .post(
            &format!("/flow_runs/{id}/set_state"),
            json!({"state": {"type": "RUNNING"}, "force": true}),
        )
        .await;
    assert_eq!(running["status"], "ACCEPT", "{running}");
    id
}

fn job_ids(app: &TestApp) -> Vec<String> {
    app.jobs()
}

/// Staging (the protected Prefect server) and production (the open one) in one Northflank
/// project: runs on both complete, both sweep on every invocation, and neither deletes,
/// aborts or settles the other's jobs, nor an unmarked job, nor a job named after a RUNNING
/// run of another pool, whose genuine failure notification leaves that run RUNNING.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_installations_share_a_project_and_touch_only_their_own() {
    let production = TestApp::spawn().await;
    let staging = production
        .beside(Options {
            prefect: PrefectServer::protected(),
            ..Default::default()
        })
        .await;
    let (prod_worker, staging_worker) = (eager(&production, "prod"), eager(&staging, "staging"));

    // Each installation: a run that completes, and one still running while the other sweeps;
    // production also keeps a finished run's job.
    let prod_deployment = production.deployment(json!({})).await;
    let staging_deployment = staging.deployment(json!({})).await;
    let prod_done = production
        .scripted_run(prod_deployment, "succeed:0.3")
        .await;
    let prod_kept = production
        .flow_run(
            prod_deployment,
            json!({"cleanup_job": false, "env": {"NF_EMULATOR_SCRIPT": "succeed:0.3"}}),
        )
        .await;
    let prod_running = production.scripted_run(prod_deployment, "hang").await;
    let staging_done = staging
        .scripted_run(staging_deployment, "succeed:0.3")
        .await;
    let staging_running = staging.scripted_run(staging_deployment, "hang").await;
    assert_eq!(
        prefect_nf::scheduled::invoke(&prod_worker, deadline())
            .await
            .unwrap()
            .dispatch
            .submitted,
        3
    );
    assert_eq!(
        prefect_nf::scheduled::invoke(&staging_worker, deadline())
            .await
            .unwrap()
            .dispatch
            .submitted,
        2
    );

    // Both webhooks receive every notification of the project; each settles only its own.
    let wait = Duration::from_secs(30);
    production
        .wait_for_state(prod_done, &["COMPLETED"], wait)
        .await;
    production
        .wait_for_state(prod_kept, &["COMPLETED"], wait)
        .await;
    staging
        .wait_for_state(staging_done, &["COMPLETED"], wait)
        .await;
    let job = |id: FlowRunId| format!("pf-{id}");
    production
        .wait_until("finished jobs to be deleted", wait, |a| {
            let jobs = job_ids(a);
            !jobs.contains(&job(prod_done)) && !jobs.contains(&job(staging_done))
        })
        .await;

    // Every job we wrote carries our marker, which the job listing returns.
    let listed = nf(&production)
        .list_jobs(&production.project)
        .await
        .unwrap();
    let marker_of = |id: FlowRunId| {
        listed
            .iter()
            .find(|j| j.id == job(id))
            .and_then(|j| j.description.as_deref())
            .and_then(Marker::find)
    };
    let (prod_pool, staging_pool) = (pool_id(&production).await, pool_id(&staging).await);
    assert_eq!(
        marker_of(prod_running),
        prod_worker.installation(Some(prod_pool)).marker()
    );
    assert_eq!(
        marker_of(staging_running),
        staging_worker.installation(Some(staging_pool)).marker()
    );
    assert_ne!(marker_of(prod_running), marker_of(staging_running));

    // Someone else's jobs in the project: an unmarked one named like ours, and one named after
    // a RUNNING run of another pool on production's server, which fails for real.
    let stranger = format!("pf-{}", uuid::Uuid::new_v4());
    foreign_job(&production, &stranger, "hang").await;
    let elsewhere = running_run_of_another_pool(&production).await;
    let decoy_run = foreign_job(&production, &job(elsewhere), "crash:0.2").await;
    production
        .wait_until(
            "the decoy's failure to be delivered to both webhooks",
            wait,
            |a| {
                a.emulator
                    .snapshot()
                    .deliveries
                    .iter()
                    .filter(|d| d.event == "job-run:failure" && d.run_id == decoy_run)
                    .filter(|d| d.status_code == Some(200))
                    .count()
                    >= 2
            },
        )
        .await;
    assert_eq!(production.state_type(elsewhere).await, "RUNNING");

    // Both sweep and reconcile, twice, with nothing to wait for.
    for _ in 0..2 {
        let prod_report = reconcile_once(&prod_worker).await;
        let staging_report = reconcile_once(&staging_worker).await;
        assert_eq!(
            (
                prod_report.jobs_deleted,
                prod_report.aborted,
                prod_report.errors
            ),
            (0, 0, 0),
            "{prod_report:?}"
        );
        assert_eq!(
            (
                staging_report.jobs_deleted,
                staging_report.aborted,
                staging_report.errors
            ),
            (0, 0, 0),
            "{staging_report:?}"
        );
    }
    let jobs = job_ids(&production);
    for kept in [
        job(prod_running),
        job(prod_kept),
        job(staging_running),
        stranger.clone(),
        job(elsewhere),
    ] {
        assert!(jobs.contains(&kept), "{kept} was deleted; left: {jobs:?}");
    }
    assert_eq!(production.state_type(prod_running).await, "RUNNING");
    assert_eq!(staging.state_type(staging_running).await, "RUNNING");
    assert_eq!(production.state_type(elsewhere).await, "RUNNING");
    let aborted: Vec<_> = production
        .emulator
        .requests()
        .into_iter()
        .filter(|r| r.method == "DELETE" && r.path.contains("/runs/"))
        .collect();
    assert!(aborted.is_empty(), "{aborted:?}");

    // Each one's own leftovers are still its to clean: production's finished run keeps its job
    // (cleanup_job: false); once its flow run is deleted, production's sweep removes it (its
    // marker proves it), and staging's does not.
    let (status, text) = production
        .raw(
            reqwest::Method::DELETE,
            &format!("/flow_runs/{prod_kept}"),
            None,
        )
        .await;
    assert!(
        status.is_success(),
        "deleting the flow run: {status} {text}"
    );
    assert_eq!(reconcile_once(&staging_worker).await.jobs_deleted, 0);
    assert_eq!(reconcile_once(&prod_worker).await.jobs_deleted, 1);
    let jobs = job_ids(&production);
    assert!(!jobs.contains(&job(prod_kept)), "{jobs:?}");
    assert!(jobs.contains(&job(staging_running)) && jobs.contains(&stranger));
}

/// A run of our pool whose `infrastructure_pid` names a job that is not ours (the Python
/// worker's, on the same pool during a migration) is neither checked, settled nor cancelled,
/// and a correctly-tokened notification about it changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_of_our_pool_recording_another_job_is_left_alone() {
    let app = TestApp::spawn_with(Options {
        register_webhook: false,
        ..Default::default()
    })
    .await;
    let deployment = app.deployment(json!({})).await;
    let theirs = app.scripted_run(deployment, "hang").await;
    let set = |state: &'static str| {
        let app = &app;
        async move {
            let answer = app
                .post(
                    &format!("/flow_runs/{theirs}/set_state"),
                    json!({"state": {"type": state}, "force": true}),
                )
                .await;
            assert_eq!(answer["status"], "ACCEPT", "{answer}");
        }
    };
    set("RUNNING").await;
    let pid = format!("{}:pf-my-flow-1a2b3c4d:7d8e9f", app.project);
    let (status, text) = app
        .raw(
            reqwest::Method::PATCH,
            &format!("/flow_runs/{theirs}"),
            Some(&json!({"infrastructure_pid": pid})),
        )
        .await;
    assert!(status.is_success(), "{text}");
    // A job named after the run exists too, and its run fails: a genuine notification.
    let run = foreign_job(&app, &format!("pf-{theirs}"), "crash:0.1").await;

    let w = eager(&app, "reconciler");
    let report = reconcile_once(&w).await;
    assert_eq!(
        (
            report.verified,
            report.settled,
            report.not_ours,
            report.jobs_deleted
        ),
        (0, 0, 1, 0),
        "{report:?}"
    );
    assert_eq!(app.state_type(theirs).await, "RUNNING");

    let router = helpers::router(&app.worker);
    let notify = |event: &str, project: &str| notification(event, theirs, &run, project);
    for event in ["job-run:failure", "job-run:start"] {
        let (status, answer) = helpers::call(&router, notify(event, &app.project)).await;
        assert_eq!(status, 200, "{answer}");
        assert!(
            answer["ignored"]
                .as_str()
                .unwrap_or_default()
                .starts_with("not ours"),
            "{event}: {answer}"
        );
    }
    // Cancelling it is its own worker's business too.
    set("CANCELLING").await;
    let report = reconcile_once(&w).await;
    assert_eq!((report.cancelled, report.aborted), (0, 0), "{report:?}");
    assert_eq!(app.state_type(theirs).await, "CANCELLING");
    assert!(app.jobs().contains(&format!("pf-{theirs}")));
    // Nothing was written to its logs by this worker.
    let logs = app.logs(theirs).await;
    assert!(
        logs.iter().all(|l| !l.contains("Northflank run")),
        "{logs:?}"
    );
}

/// Our run, our pid, but a notification from another project: not ours either. A start
/// notification writes a line only for a run of ours that has not finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_must_match_the_recorded_project_and_a_live_run() {
    let app = TestApp::spawn_with(Options {
        register_webhook: false,
        ..Default::default()
    })
    .await;
    let deployment = app.deployment(json!({})).await;
    let id = app.scripted_run(deployment, "hang").await;
    assert_eq!(app.dispatch_once().await.dispatch.submitted, 1);
    let run = app.northflank_run(id).await;
    let router = helpers::router(&app.worker);
    let notify = |event: &str, project: &str| notification(event, id, &run, project);
    let (_, answer) = helpers::call(&router, notify("job-run:failure", "another-project")).await;
    assert!(
        answer["ignored"]
            .as_str()
            .unwrap_or_default()
            .starts_with("not ours"),
        "{answer}"
    );
    let (_, answer) = helpers::call(&router, notify("job-run:start", &app.project)).await;
    assert_eq!(answer["action"], "none", "{answer}");
    let started = |logs: &[String]| logs.iter().filter(|l| l.ends_with("started")).count();
    assert_eq!(started(&app.logs(id).await), 1);

    // Finished: a late start notification adds nothing.
    let done = app
        .post(
            &format!("/flow_runs/{id}/set_state"),
            json!({"state": {"type": "COMPLETED"}, "force": true}),
        )
        .await;
    assert_eq!(done["status"], "ACCEPT");
    let (_, answer) = helpers::call(&router, notify("job-run:start", &app.project)).await;
    assert_eq!(
        answer["detail"], "the flow run has already finished",
        "{answer}"
    );
    assert_eq!(started(&app.logs(id).await), 1);
}

fn deadline() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(60)
}

async fn pool_id(app: &TestApp) -> uuid::Uuid {
    let pool: Value = app.get(&format!("/work_pools/{}", app.pool)).await;
    pool["id"].as_str().unwrap().parse().unwrap()
}

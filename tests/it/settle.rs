//! Settling flow runs whose Northflank runs stopped, through the emulator's real webhooks, and
//! the cancellation of orphaned runs.

use std::time::Duration;

use crate::helpers::{NF_TOKEN, TestApp};
use crate::proxy::{ProxyConfig, proxied};
use prefect_nf::dispatch::{self, SubmitOutcome};
use prefect_nf::ids::FlowRunId;
use prefect_nf::webhook;
use serde_json::json;

/// Delivers a notification of `event` for the completed flow run's Northflank run to the
/// webhook handler, which must leave the run COMPLETED.
async fn notify_changes_nothing(app: &TestApp, id: FlowRunId, event: &str) {
    let job = format!("pf-{id}");
    let run = app.northflank_run(id).await;
    let body = json!({"event": event, "data": {"jobRun": {"id": run}, "job": {"id": job}}});
    let headers = reqwest::header::HeaderMap::new();
    let r = webhook::handle(&app.worker, &headers, body.to_string().as_bytes()).await;
    match r {
        Ok(webhook::Outcome::Settled(settled)) => {
            assert_eq!(settled.action, prefect_nf::run::Action::None)
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(app.state_type(id).await, "COMPLETED");
}

/// A run Prefect is cancelling, whose Northflank run is aborted: the `job-run:abort`
/// notification makes it Cancelled, and the job is cleaned up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_while_cancelling_ends_cancelled() {
    // No engine in the container: only the worker can settle the run.
    let emulator = nf_emulator::Config {
        report_to_prefect: false,
        ..Default::default()
    };
    let app = TestApp::with_emulator(emulator).await;
    let deployment = app.deployment(json!({})).await;
    let id = app.scripted_run(deployment, "hang").await;
    assert_eq!(app.dispatch_once().await.dispatch.submitted, 1);

    let cancelling = app
        .post(
            &format!("/flow_runs/{id}/set_state"),
            json!({"state": {"type": "CANCELLING"}, "force": false}),
        )
        .await;
    assert_eq!(cancelling["status"], "ACCEPT", "{cancelling}");
    let job = format!("pf-{id}");
    let run = app.northflank_run(id).await;
    let aborted = app
        .http
        .delete(format!(
            "{}/v1/projects/{}/jobs/{job}/runs/{run}",
            app.emulator.base_url(),
            app.project
        ))
        .bearer_auth(NF_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(aborted.status(), 200);

    let settled = app
        .wait_for_state(id, &["CANCELLED"], Duration::from_secs(15))
        .await;
    let message = settled["state"]["message"].as_str().unwrap();
    assert!(
        message.contains(&run) && message.contains("job-run:abort"),
        "{message}"
    );
    app.wait_until("the job to be deleted", Duration::from_secs(10), |a| {
        !a.jobs().contains(&job)
    })
    .await;
}

/// A run that completed on Northflank, whose job is kept (so its run can be read again).
async fn completed_run_keeping_its_job() -> (TestApp, FlowRunId) {
    let app = TestApp::spawn().await;
    let deployment = app.deployment(json!({"cleanup_job": false})).await;
    let id = app.scripted_run(deployment, "succeed:0.1").await;
    assert_eq!(app.dispatch_once().await.dispatch.submitted, 1);
    app.wait_for_state(id, &["COMPLETED"], Duration::from_secs(20))
        .await;
    (app, id)
}

/// A duplicate or late notification changes nothing: a terminal state is final.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_notification_leaves_a_terminal_state_alone() {
    let (app, id) = completed_run_keeping_its_job().await;

    // Replay a failure notification for the same run: the GET says SUCCESS, the state stays.
    for _ in 0..2 {
        notify_changes_nothing(&app, id, "job-run:failure").await;
    }
}

/// A claim that reached the server after the run had finished (Prefect accepts PENDING from
/// COMPLETED) is undone by whichever step sees it: the webhook restores COMPLETED instead of
/// crashing a "pending" run whose container has stopped, and so does reconciliation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_claims_on_a_finished_run_are_undone_by_the_webhook_and_reconciliation() {
    let (app, id) = completed_run_keeping_its_job().await;
    let late_claim = || async {
        let r = app
            .post(
                &format!("/flow_runs/{id}/set_state"),
                json!({"state": {"type": "PENDING", "name": "Pending"}, "force": false}),
            )
            .await;
        assert_eq!(
            r["status"], "ACCEPT",
            "Prefect accepts PENDING from COMPLETED: {r}"
        );
    };

    late_claim().await;
    notify_changes_nothing(&app, id, "job-run:success").await;
    assert!(app.logs(id).await.join("\n").contains("Undid a late claim"));

    late_claim().await;
    let (pool, _) = dispatch::heartbeat(&app.worker).await.unwrap();
    let report = prefect_nf::reconcile::reconcile(
        &app.worker,
        &pool,
        tokio::time::Instant::now() + Duration::from_secs(30),
    )
    .await;
    assert_eq!(report.undone, 1, "{report:?}");
    assert_eq!(app.state_type(id).await, "COMPLETED");
}

/// A polled run whose deployment is gone is cancelled with the Python worker's message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_deployment_is_gone_is_cancelled() {
    let app = TestApp::spawn().await;
    let deployment = app.deployment(json!({})).await;
    let id = app.flow_run(deployment, json!({})).await;
    let (pool, _) = dispatch::heartbeat(&app.worker).await.unwrap();
    let mut polled = dispatch::poll(&app.worker, 10).await.unwrap();
    assert_eq!(polled.len(), 1);
    // The deployment disappears between the poll and the claim.
    let missing = uuid::Uuid::new_v4();
    polled[0].flow_run.deployment_id = Some(missing);

    let outcome = dispatch::submit(&app.worker, &pool, &polled[0]).await;
    app.worker.send_pending().await;
    let expected = format!("Deployment {missing} no longer exists, cancelled run.");
    assert_eq!(
        outcome,
        SubmitOutcome::Cancelled {
            reason: expected.clone()
        }
    );
    let run = app.flow_run_json(id).await;
    assert_eq!(run["state"]["type"], "CANCELLED");
    assert_eq!(run["state"]["message"], expected);
    assert!(app.logs(id).await.contains(&expected));
}

/// A run that ends within moments of its start can be notified before the worker that launched
/// it (another process, as Lambda's dispatch is to its webhook) has recorded it: the webhook
/// reads the flow run again until the record is there, since only the record says whether the
/// run asked to keep its job. Both ways are settled at once: the job deleted, or kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_notified_before_its_record_is_settled_once_the_record_is_there() {
    for keep in [false, true] {
        let (proxy, app) = proxied(ProxyConfig::unlimited()).await;

        let deployment = app.deployment(json!({})).await;
        let variables = json!({"cleanup_job": !keep, "env": {"NF_EMULATOR_SCRIPT": "succeed:0"}});
        let id = app.flow_run(deployment, variables).await;
        // The record waits until the webhook has read the flow run without it, once for the
        // start notification and once for the success.
        let record = proxy.hold("PATCH", format!("/flow_runs/{id}"));
        let dispatcher = app.another_worker("dispatcher");
        let dispatch = tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            prefect_nf::scheduled::invoke(&dispatcher, deadline).await
        });
        app.wait_until(
            "both reads of the unrecorded run",
            Duration::from_secs(30),
            |_| proxy.forwarded("GET", &format!("/flow_runs/{id}")) >= 2,
        )
        .await;
        record.release();
        assert_eq!(dispatch.await.unwrap().unwrap().dispatch.submitted, 1);
        app.wait_for_delivery("job-run:success", Duration::from_secs(10))
            .await;
        let job = format!("pf-{id}");
        assert_eq!(app.jobs().contains(&job), keep, "keep_job {keep}");
        let logs = app.logs(id).await;
        assert!(
            logs.iter()
                .any(|l| l.contains("concluded with status SUCCESS")),
            "{logs:#?}"
        );
    }
}

//! The Lambda handlers, called in-process with real event payloads (the pattern the
//! aws-lambda-rust-runtime README recommends), against the real Prefect server and the emulator.

use crate::helpers;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::helpers::{Options, TestApp, WEBHOOK_TOKEN};
use aws_lambda_events::eventbridge::EventBridgeEvent;
use lambda_runtime::{Context, LambdaEvent};
use prefect_nf::lambda;
use serde_json::{Value, json};

fn schedule_event(seconds_left: u64) -> LambdaEvent<EventBridgeEvent<Value>> {
    let payload: EventBridgeEvent<Value> =
        serde_json::from_str(include_str!("fixtures/eventbridge-schedule.json")).unwrap();
    let mut context = Context::default();
    context.request_id = "req-dispatch-1".into();
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    context.deadline = now_ms + seconds_left * 1000;
    LambdaEvent::new(payload, context)
}

/// A Function URL request (payload format 2.0) posting `body` to the webhook path.
fn function_url_request(token: &str, body: &Value) -> lambda_http::Request {
    let mut raw: Value =
        serde_json::from_str(include_str!("fixtures/function-url-request.json")).unwrap();
    raw["rawPath"] = json!("/northflank/webhook");
    raw["rawQueryString"] = json!("");
    raw["requestContext"]["http"]["method"] = json!("POST");
    raw["requestContext"]["http"]["path"] = json!("/northflank/webhook");
    raw["headers"]["content-type"] = json!("application/json");
    raw["headers"]["x-northflank-notification-integration-token"] = json!(token);
    raw["headers"]["x-northflank-notification-integration-event-type"] = json!(body["event"]);
    raw["body"] = json!(body.to_string());
    lambda_http::request::from_str(&raw.to_string()).expect("a valid Function URL request")
}

/// The Lambda glue around the test app's worker.
fn lambda_app(app: &TestApp) -> lambda::App {
    lambda::App::new(
        app.worker.clone(),
        prefect_nf::config::Source::environment(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dispatch_handler_runs_an_invocation_from_a_schedule_event() {
    let app = TestApp::spawn().await;
    let deployment = app.deployment(json!({})).await;
    let id = app.scripted_run(deployment, "hang").await;

    let lambda_app = lambda_app(&app);
    let summary = lambda::dispatch(&lambda_app, schedule_event(60))
        .await
        .unwrap();
    assert_eq!(
        (summary.dispatch.polls, summary.dispatch.submitted),
        (1, 1),
        "{summary:?}"
    );
    assert!(
        app.flow_run_json(id).await["infrastructure_pid"]
            .as_str()
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_handler_settles_a_function_url_request() {
    let options = Options {
        register_webhook: false,
        ..Default::default()
    };
    let app = TestApp::spawn_with(options).await;
    let deployment = app.deployment(json!({})).await;
    let id = app.scripted_run(deployment, "crash:0.1").await;
    assert_eq!(app.dispatch_once().await.dispatch.submitted, 1);
    let job = format!("pf-{id}");
    app.wait_until("the Northflank run to fail", Duration::from_secs(10), |a| {
        a.emulator
            .snapshot()
            .runs
            .iter()
            .any(|r| r.job_id == job && r.run.concluded)
    })
    .await;
    let run = app.northflank_run(id).await;
    let body = json!({"event": "job-run:failure", "data": {"jobRun": {"id": run}, "job": {"id": job}, "project": {"id": app.project}}});

    let lambda_app = lambda_app(&app);
    let refused = lambda::webhook(&lambda_app, function_url_request("wrong", &body))
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(app.state_type(id).await, "RUNNING");

    let response = lambda::webhook(&lambda_app, function_url_request(WEBHOOK_TOKEN, &body))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = serde_json::from_slice(response.body().as_ref()).unwrap();
    assert_eq!(answer["action"], "crashed", "{answer}");
    assert_eq!(app.state_type(id).await, "CRASHED");
    assert!(!app.jobs().contains(&job));
}

/// The automation's call reaches the quick dispatch through the same function, on its path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_function_answers_instant_dispatch_on_its_path() {
    let app = TestApp::spawn().await;
    let deployment = app.deployment(json!({})).await;
    let id = app.scripted_run(deployment, "hang").await;
    let lambda_app = lambda_app(&app);
    let call = |token: &str| {
        let mut raw: Value =
            serde_json::from_str(include_str!("fixtures/function-url-request.json")).unwrap();
        raw["rawPath"] = json!(prefect_nf::routes::INSTANT_PATH);
        raw["rawQueryString"] = json!("");
        raw["requestContext"]["http"]["method"] = json!("POST");
        raw["requestContext"]["http"]["path"] = json!(prefect_nf::routes::INSTANT_PATH);
        raw["headers"]["content-type"] = json!("application/json");
        raw["headers"][prefect_nf::routes::DISPATCH_TOKEN_HEADER] = json!(token);
        raw["body"] = json!(json!({"work_pool": app.pool}).to_string());
        lambda_http::request::from_str(&raw.to_string()).unwrap()
    };
    // Northflank's token is not the dispatch token.
    let refused = lambda::webhook(&lambda_app, call(WEBHOOK_TOKEN))
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let response = lambda::webhook(&lambda_app, call(helpers::DISPATCH_TOKEN))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = serde_json::from_slice(response.body().as_ref()).unwrap();
    assert_eq!(answer["summary"]["submitted"], 1, "{answer}");
    assert_eq!(answer["summary"]["polls"], 1, "{answer}");
    assert!(
        app.flow_run_json(id).await["infrastructure_pid"]
            .as_str()
            .is_some()
    );
}

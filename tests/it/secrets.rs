//! Credentials from a real Secrets Manager API (moto's server on 127.0.0.1), and reading them
//! again after a rotation.

use crate::helpers;

use std::time::Duration;

use crate::helpers::{NF_TOKEN, Options, TestApp, WEBHOOK_TOKEN, moto_client, put_secret};
use prefect_nf::config::Source;
use prefect_nf::config::{PrefectAuth, Secret};
use prefect_nf::lambda::{self, App};
use serde_json::json;

fn source(id: &str) -> Source {
    Source::SecretsManager {
        client: moto_client(),
        id: id.to_string(),
    }
}

#[tokio::test]
async fn reads_the_credentials_from_the_secret() {
    let arn = put_secret(&moto_client(), &json!({"northflank_api_token": "nf-1", "webhook_token": "wh-1", "prefect_api_auth_string": "u:p"})).await;
    let c = source(&arn).load().await.unwrap();
    assert_eq!(
        (c.northflank_token.expose(), c.webhook_token.expose()),
        ("nf-1", "wh-1")
    );
    assert_eq!(c.prefect, PrefectAuth::AuthString(Secret::new("u:p")));
}

#[tokio::test]
async fn a_missing_key_or_secret_is_an_error_naming_it_never_a_value() {
    let arn = put_secret(
        &moto_client(),
        &json!({"northflank_api_token": "nf-value-that-must-not-leak"}),
    )
    .await;
    let message = source(&arn).load().await.unwrap_err().to_string();
    assert!(
        message.contains("\"webhook_token\"") && message.contains(&arn),
        "{message}"
    );
    assert!(!message.contains("must-not-leak"), "{message}");

    let message = source("prefect-nf/does-not-exist")
        .load()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        message.starts_with("could not read secret prefect-nf/does-not-exist")
            && message.contains("ResourceNotFound"),
        "{message}"
    );
}

/// Northflank refuses the worker's token (it was rotated): the run goes back to Scheduled
/// instead of crashing, the secret is read again, and the next attempt uses the new token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_northflank_token_is_read_again() {
    let emulator = nf_emulator::Config {
        api_tokens: vec!["rotated-token".into()],
        ..Default::default()
    };
    let app = TestApp::spawn_with(Options {
        emulator,
        register_webhook: false,
        ..Default::default()
    })
    .await;
    let arn = put_secret(
        &moto_client(),
        &json!({"northflank_api_token": "rotated-token", "webhook_token": WEBHOOK_TOKEN}),
    )
    .await;
    let lambda_app = App::new(app.worker.clone(), source(&arn));
    assert_eq!(
        lambda_app
            .worker()
            .await
            .credentials
            .northflank_token
            .expose(),
        NF_TOKEN
    );

    let deployment = app.deployment(json!({})).await;
    let id = app.scripted_run(deployment, "hang").await;
    let summary = scheduled(
        lambda::dispatch(&lambda_app, schedule_event())
            .await
            .unwrap(),
    );
    assert_eq!(summary.dispatch.rescheduled, 1, "{summary:?}");
    let run = app.flow_run_json(id).await;
    assert_eq!(
        (run["state"]["type"].as_str(), run["state"]["name"].as_str()),
        (Some("SCHEDULED"), Some("AwaitingRetry"))
    );
    assert!(
        run["state"]["message"]
            .as_str()
            .unwrap()
            .contains("refused the worker's API token")
    );
    assert_eq!(
        lambda_app
            .worker()
            .await
            .credentials
            .northflank_token
            .expose(),
        "rotated-token"
    );

    // Due again now: submitted with the new token.
    app.post(
        &format!("/flow_runs/{id}/set_state"),
        json!({"state": {"type": "SCHEDULED", "name": "Scheduled"}, "force": true}),
    )
    .await;
    let summary = scheduled(
        lambda::dispatch(&lambda_app, schedule_event())
            .await
            .unwrap(),
    );
    assert_eq!(summary.dispatch.submitted, 1, "{summary:?}");
}

/// Prefect refuses the worker's auth string: the invocation reads the secret again and runs
/// once more, successfully.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_prefect_auth_string_is_read_again_and_the_invocation_retried() {
    let api = std::env::var("PFNF_TEST_AUTH_API_URL").expect("run through scripts/test");
    let auth = std::env::var("PFNF_TEST_AUTH_STRING").unwrap();
    let pool = format!("rotated-{}", uuid::Uuid::new_v4().simple());
    let admin = prefect_nf::prefect::PrefectClient::new(
        &api,
        PrefectAuth::AuthString(Secret::new(auth.clone())),
        "admin",
        Duration::from_millis(200),
    )
    .unwrap();
    prefect_nf::setup::pool::create(&admin, &pool, Some("p"), None)
        .await
        .unwrap();

    let mut worker = helpers::worker_for(&api, &pool, "http://127.0.0.1:9", "rotating");
    worker = prefect_nf::worker::Worker::new(
        worker.settings.clone(),
        prefect_nf::config::Credentials {
            prefect: PrefectAuth::AuthString(Secret::new("admin:old-password")),
            ..worker.credentials.clone()
        },
    )
    .unwrap();
    let arn = put_secret(&moto_client(), &json!({"northflank_api_token": NF_TOKEN, "webhook_token": WEBHOOK_TOKEN, "prefect_api_auth_string": auth})).await;
    let lambda_app = App::new(worker, source(&arn));
    let summary = scheduled(
        lambda::dispatch(&lambda_app, schedule_event())
            .await
            .unwrap(),
    );
    assert_eq!(summary.dispatch.polls, 1, "{summary:?}");
    assert_eq!(
        admin
            .read_work_pool(&pool)
            .await
            .unwrap()
            .unwrap()
            .status
            .as_deref(),
        Some("READY")
    );
}

fn scheduled(invocation: lambda::Invocation) -> prefect_nf::scheduled::Summary {
    match invocation {
        lambda::Invocation::Scheduled(summary) => summary,
        other => panic!("not a scheduled invocation: {other:?}"),
    }
}

fn schedule_event() -> lambda_runtime::LambdaEvent<serde_json::Value> {
    let payload = serde_json::from_str(include_str!("fixtures/eventbridge-schedule.json")).unwrap();
    let mut context = lambda_runtime::Context::default();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    context.deadline = now_ms + 60_000;
    lambda_runtime::LambdaEvent::new(payload, context)
}

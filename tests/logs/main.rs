//! No secret value ever reaches a log. This binary installs its own global subscriber, at the
//! most verbose level, capturing every line of a full run: dispatch, the container's job and run
//! (the emulator's own log included), the notification, the settle step and reconciliation.
//! Secrets: the worker's Prefect API key and Northflank token, the webhook token, a credentials
//! block's token, and a Secret block's value rendered into the job's environment.

// The integration tests' helpers, of which this binary uses a part.
#[allow(dead_code)]
#[path = "../it/helpers.rs"]
mod helpers;

use std::time::Duration;

use helpers::{Captured, DISPATCH_TOKEN, NF_TOKEN, Options, TestApp, WEBHOOK_TOKEN, block};
use prefect_nf::setup::{automation, pool};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_secret_value_appears_in_any_log_line() {
    let captured = Captured::default();
    tracing_subscriber::fmt()
        .with_env_filter("trace")
        .with_ansi(false)
        .with_writer(captured.clone())
        .init();

    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let api_key = format!("pnu_log_test_{suffix}");
    let block_token = format!("block-token-{suffix}");
    let secret_value = format!("s3cr3t-{suffix}");
    let mut app = TestApp::spawn_with(Options {
        emulator: nf_emulator::Config {
            api_tokens: vec![NF_TOKEN.into(), block_token.clone()],
            report_to_prefect: true,
            ..Default::default()
        },
        api_key: Some(api_key.clone()),
        ..Default::default()
    })
    .await;
    pool::ensure_block_type(&app.worker.prefect).await.unwrap();
    let creds = block(
        &app,
        "northflank",
        &format!("creds-{suffix}"),
        json!({"api_token": block_token, "base_url": app.emulator.base_url()}),
    )
    .await;
    let secret = format!("secret-{suffix}");
    block(&app, "secret", &secret, json!({"value": secret_value})).await;

    // One run on the worker's token that completes, one on the block's token that fails.
    let plain = app
        .deployment(
            json!({"env": {"API_SECRET": format!("{{{{ prefect.blocks.secret.{secret} }}}}")}}),
        )
        .await;
    let own = app
        .deployment(json!({"credentials": {"$ref": {"block_document_id": creds}}}))
        .await;
    let ok = app.scripted_run(plain, "succeed:0.3").await;
    let crashed = app.scripted_run(own, "crash:0.3").await;
    assert_eq!(app.dispatch_once().await.dispatch.submitted, 2);
    app.wait_for_state(ok, &["COMPLETED"], Duration::from_secs(60))
        .await;
    app.wait_for_state(crashed, &["CRASHED"], Duration::from_secs(60))
        .await;
    app.wait_until("jobs deleted", Duration::from_secs(30), |a| {
        a.jobs().is_empty()
    })
    .await;
    // Reconciliation reads both runs' history and sweeps the project (again: the first
    // dispatch swept already).
    app.worker.settings.reconcile.sweep_interval = Duration::ZERO;
    app.dispatch_once().await;
    // Instant dispatch: its token goes to Prefect in a block and comes back in a header.
    let prefect = &app.worker.prefect;
    automation::enable(prefect, &app.pool, &app.webhook_url, DISPATCH_TOKEN)
        .await
        .unwrap();
    let finished = || {
        String::from_utf8_lossy(&captured.0.lock().unwrap())
            .matches("dispatch invocation finished")
            .count()
    };
    let before = finished();
    let answer = app
        .http
        .post(automation::endpoint(&app.webhook_url).unwrap())
        .header(prefect_nf::routes::DISPATCH_TOKEN_HEADER, DISPATCH_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 202);
    // The endpoint answers first and dispatches after: wait for that dispatch's log lines.
    app.wait_until("the instant dispatch", Duration::from_secs(30), |_| {
        finished() > before
    })
    .await;
    automation::disable(prefect, &app.pool).await.unwrap();

    let logs = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    assert!(
        logs.contains("flow run submitted") && logs.contains("settled"),
        "the capture holds the whole run ({} bytes)",
        logs.len()
    );
    for (name, value) in [
        ("the Prefect API key", api_key.as_str()),
        ("the worker's Northflank token", NF_TOKEN),
        ("the webhook token", WEBHOOK_TOKEN),
        ("the dispatch token", DISPATCH_TOKEN),
        ("the credentials block's token", block_token.as_str()),
        ("the Secret block's value", secret_value.as_str()),
    ] {
        let line = logs.lines().find(|l| l.contains(value));
        assert!(line.is_none(), "{name} appears in a log line: {line:?}");
    }
}

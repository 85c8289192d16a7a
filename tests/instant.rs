//! Instant dispatch against the real Prefect server: the automation `instant-dispatch enable`
//! writes makes the server call our endpoint when a flow run is scheduled, and the quick
//! dispatch behind it submits the run with no dispatch tick at all.

mod helpers;

use std::time::Duration;

use helpers::{DISPATCH_TOKEN, TestApp};
use prefect_nf::instant;
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scheduled_run_is_submitted_by_the_automation_alone() {
    let app = TestApp::spawn().await;
    let prefect = &app.worker.prefect;
    let enabled = instant::enable(prefect, &app.pool, &app.webhook_url, DISPATCH_TOKEN)
        .await
        .unwrap();
    assert!(enabled.created);
    // Enabling again updates the same automation and block.
    let again = instant::enable(prefect, &app.pool, &app.webhook_url, DISPATCH_TOKEN)
        .await
        .unwrap();
    assert_eq!(
        (again.created, &again.automation_id),
        (false, &enabled.automation_id)
    );
    let named = app
        .post(
            "/automations/filter",
            json!({"automations": {"name": {"any_": [instant::automation_name(&app.pool)]}}}),
        )
        .await;
    assert_eq!(named.as_array().unwrap().len(), 1, "{named}");

    // No dispatch invocation runs in this test: only the automation can submit the run.
    let deployment = app.deployment(json!({})).await;
    let id = app.scripted_run(deployment, "succeed:0.2").await;
    app.wait_for_state(id, &["COMPLETED"], Duration::from_secs(30))
        .await;
    assert!(!app.northflank_run(id).await.is_empty());

    assert!(instant::disable(prefect, &app.pool).await.unwrap());
    assert!(!instant::disable(prefect, &app.pool).await.unwrap());
    let named = app
        .post(
            "/automations/filter",
            json!({"automations": {"name": {"any_": [instant::automation_name(&app.pool)]}}}),
        )
        .await;
    assert_eq!(named, json!([]));
}

#[tokio::test]
async fn the_endpoint_wants_its_own_token() {
    let app = TestApp::spawn().await;
    let deadline = tokio::time::Instant::now() + instant::BUDGET;
    let with = |name: &str, value: &str| {
        let mut h = HeaderMap::new();
        h.insert(
            reqwest::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
        h
    };
    let cases = [
        (HeaderMap::new(), 401),
        (with(instant::TOKEN_HEADER, "wrong"), 401),
        // Northflank's token does not open this endpoint.
        (with(instant::TOKEN_HEADER, helpers::WEBHOOK_TOKEN), 401),
        (with(instant::TOKEN_HEADER, DISPATCH_TOKEN), 200),
    ];
    for (headers, status) in cases {
        let response = instant::handle(&app.worker, &headers, deadline).await;
        assert_eq!(response.status, status, "{headers:?}: {:?}", response.body);
    }
    let mut off = app.another_worker("no-token");
    off.credentials.dispatch_token = None;
    let response =
        instant::handle(&off, &with(instant::TOKEN_HEADER, DISPATCH_TOKEN), deadline).await;
    assert_eq!(response.status, 404);
    assert!(
        response.body["error"]
            .as_str()
            .unwrap()
            .contains("PFNF_DISPATCH_TOKEN")
    );
}

//! Instant dispatch against the real Prefect server: the automation `instant-dispatch enable`
//! writes makes the server call our endpoint when a flow run is scheduled, and the quick
//! dispatch behind it submits the run with no dispatch tick at all.

use crate::helpers;

use std::time::Duration;

use crate::helpers::{DISPATCH_TOKEN, TestApp};
use prefect_nf::routes::{DISPATCH_TOKEN_HEADER, INSTANT_PATH};
use prefect_nf::setup::automation;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scheduled_run_is_submitted_by_the_automation_alone() {
    let app = TestApp::spawn().await;
    let prefect = &app.worker.prefect;
    let enabled = automation::enable(prefect, &app.pool, &app.webhook_url, DISPATCH_TOKEN)
        .await
        .unwrap();
    assert!(enabled.created);
    // Enabling again updates the same automation and block.
    let again = automation::enable(prefect, &app.pool, &app.webhook_url, DISPATCH_TOKEN)
        .await
        .unwrap();
    assert_eq!(
        (again.created, &again.automation_id),
        (false, &enabled.automation_id)
    );
    let named = app
        .post(
            "/automations/filter",
            json!({"automations": {"name": {"any_": [automation::automation_name(&app.pool)]}}}),
        )
        .await;
    assert_eq!(named.as_array().unwrap().len(), 1, "{named}");

    // No dispatch invocation runs in this test: only the automation can submit the run.
    let deployment = app.deployment(json!({})).await;
    let id = app.scripted_run(deployment, "succeed:0.2").await;
    app.wait_for_state(id, &["COMPLETED"], Duration::from_secs(30))
        .await;
    assert!(!app.northflank_run(id).await.is_empty());

    assert!(automation::disable(prefect, &app.pool).await.unwrap());
    assert!(!automation::disable(prefect, &app.pool).await.unwrap());
    let named = app
        .post(
            "/automations/filter",
            json!({"automations": {"name": {"any_": [automation::automation_name(&app.pool)]}}}),
        )
        .await;
    assert_eq!(named, json!([]));
}

#[tokio::test]
async fn the_endpoint_wants_exactly_one_of_its_own_tokens() {
    let app = TestApp::spawn().await;
    let router = helpers::router(&app.worker);
    let cases: &[(&[&str], u16)] = &[
        (&[], 401),
        (&["wrong"], 401),
        // Northflank's token does not open this endpoint.
        (&[helpers::WEBHOOK_TOKEN], 401),
        (&[DISPATCH_TOKEN, DISPATCH_TOKEN], 401),
        (&[DISPATCH_TOKEN, "wrong"], 401),
        (&[DISPATCH_TOKEN], 202),
    ];
    for (tokens, status) in cases {
        let headers: Vec<(&str, &str)> =
            tokens.iter().map(|t| (DISPATCH_TOKEN_HEADER, *t)).collect();
        let (got, body) = helpers::call(&router, helpers::post(INSTANT_PATH, &headers, "{}")).await;
        assert_eq!(got, *status, "{tokens:?}: {body}");
    }
    let mut off = app.another_worker("no-token");
    off.credentials.dispatch_token = None;
    let headers = [(DISPATCH_TOKEN_HEADER, DISPATCH_TOKEN)];
    let (status, body) = helpers::call(
        &helpers::router(&off),
        helpers::post(INSTANT_PATH, &headers, "{}"),
    )
    .await;
    assert_eq!(status, 404);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("PFNF_DISPATCH_TOKEN")
    );
}

/// 200 calls at once (Prefect sends one per scheduled run, and a deployment's schedule makes
/// many): one dispatch at a time plus at most one more, every call answered on its kept-alive
/// connection, refused ones included, and every run submitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_calls_run_one_dispatch_at_a_time_and_lose_no_call() {
    let app = TestApp::spawn().await;
    let deployment = app.deployment(json!({})).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(app.scripted_run(deployment, "succeed:0.2").await);
    }
    let url = reqwest::Url::parse(&app.webhook_url)
        .unwrap()
        .join(INSTANT_PATH)
        .unwrap();
    let http = reqwest::Client::new();
    let send = |token: &'static str| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            http.post(url)
                .header(DISPATCH_TOKEN_HEADER, token)
                .header("content-type", "application/json")
                .body(r#"{"work_pool":"p","flow_run":"prefect.flow-run.x"}"#)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .map_err(|e| format!("{e:?}"))
        }
    };
    // Two bursts: the second goes out on the connections the first left open.
    for burst in 0..2 {
        let mut calls = tokio::task::JoinSet::new();
        for i in 0..200 {
            let token = if i % 4 == 3 { "wrong" } else { DISPATCH_TOKEN };
            calls.spawn(send(token));
        }
        let answers = calls.join_all().await;
        let lost: Vec<_> = answers.iter().filter(|a| a.is_err()).collect();
        assert!(lost.is_empty(), "burst {burst}: lost calls {lost:?}");
        let accepted = answers.iter().filter(|a| **a == Ok(202)).count();
        let refused = answers.iter().filter(|a| **a == Ok(401)).count();
        assert_eq!((accepted, refused), (150, 50), "burst {burst}");
    }
    for id in ids {
        app.wait_for_state(id, &["COMPLETED"], Duration::from_secs(60))
            .await;
    }
    let activity = &app.worker.activity();
    println!(
        "instant: 400 calls (300 valid) → {} dispatches, at most {} at once",
        activity.started(),
        activity.peak()
    );
    assert!(
        activity.peak() <= 2,
        "{} dispatches at once",
        activity.peak()
    );
    assert!(
        (1..=10).contains(&activity.started()),
        "{} dispatches for 300 calls",
        activity.started()
    );
}

/// The local endpoint answers 202 before it dispatches (Prefect's webhook block loses calls
/// that are still waiting when another one ends), keeps the connection usable, and the
/// dispatch it starts still submits the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_endpoint_answers_at_once_and_dispatches_after() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let app = TestApp::spawn().await;
    let deployment = app.deployment(json!({})).await;
    let id = app.scripted_run(deployment, "succeed:0.2").await;

    let url = reqwest::Url::parse(&app.webhook_url).unwrap();
    let addr = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap());
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    // The automation's payload, as Prefect sends it.
    let body =
        json!({"work_pool": app.pool, "flow_run": format!("prefect.flow-run.{id}")}).to_string();
    let call = format!(
        "POST {} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n{}: {DISPATCH_TOKEN}\r\ncontent-length: {}\r\n\r\n{body}",
        INSTANT_PATH,
        DISPATCH_TOKEN_HEADER,
        body.len()
    );
    conn.write_all(call.as_bytes()).await.unwrap();
    let (status, answer) = read_response(&mut conn).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer, r#"{"accepted":true}"#);

    // The same connection serves another request.
    let health = format!("GET /health HTTP/1.1\r\nhost: {addr}\r\n\r\n");
    conn.write_all(health.as_bytes()).await.unwrap();
    assert_eq!(read_response(&mut conn).await, (200, "ok".to_string()));

    app.wait_for_state(id, &["COMPLETED"], Duration::from_secs(30))
        .await;

    /// One HTTP/1.1 response with a content-length: its status and body.
    async fn read_response(conn: &mut tokio::net::TcpStream) -> (u16, String) {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        loop {
            let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n");
            if let Some(end) = head_end {
                let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map(|v| v.trim().parse().unwrap())
                    .unwrap_or(0);
                if buf.len() >= end + 4 + length {
                    let status = head[9..12].parse().unwrap();
                    let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + length]);
                    return (status, body.into_owned());
                }
            }
            let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut chunk))
                .await
                .expect("an answer within 10 s")
                .unwrap();
            assert!(
                n > 0,
                "the connection closed: {}",
                String::from_utf8_lossy(&buf)
            );
            buf.extend_from_slice(&chunk[..n]);
        }
    }
}

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
        instant::PATH,
        instant::TOKEN_HEADER,
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

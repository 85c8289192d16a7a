//! The webhook's front door: every refusal happens before any Prefect or Northflank call, and
//! before the body is read.

use crate::helpers;

use std::time::Duration;

use crate::helpers::{WEBHOOK_TOKEN, call, post, router};
use prefect_nf::routes::{NOTIFICATION_TOKEN_HEADER as TOKEN, WEBHOOK_PATH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn worker() -> prefect_nf::worker::Worker {
    // Unreachable on purpose: any call would be counted (and would fail).
    helpers::worker_for("http://127.0.0.1:9/api", "pool", "http://127.0.0.1:9", "w")
}

const SUCCESS: &[u8] = br#"{"event":"job-run:success","data":{"jobRun":{"id":"r"},"job":{"id":"pf-0b9f6a2e-1c3d-4e5f-8a9b-0c1d2e3f4a5b"}}}"#;

/// 8d: a missing, wrong or doubled token → 401, and nothing else happens.
#[tokio::test]
async fn a_missing_wrong_or_doubled_token_is_refused_without_any_call() {
    let w = worker();
    let app = router(&w);
    let cases: &[&[&str]] = &[
        &[],
        &["wrong"],
        &[""],
        &["hook-secret-for-tests-but-longer"],
        // Exactly one token header counts: two are refused, whichever comes first.
        &[WEBHOOK_TOKEN, WEBHOOK_TOKEN],
        &[WEBHOOK_TOKEN, "wrong"],
        &["wrong", WEBHOOK_TOKEN],
    ];
    for tokens in cases {
        let headers: Vec<(&str, &str)> = tokens.iter().map(|t| (TOKEN, *t)).collect();
        let (status, body) = call(&app, post(WEBHOOK_PATH, &headers, SUCCESS)).await;
        assert_eq!(
            (status, &body["error"]),
            (401, &"unauthorized".into()),
            "{tokens:?}"
        );
    }
    assert_eq!(
        (w.prefect.requests_sent(), w.northflank.requests_sent()),
        (0, 0)
    );
}

#[tokio::test]
async fn bad_or_foreign_notifications_are_answered_without_any_call() {
    let w = worker();
    let app = router(&w);
    let ok = [(TOKEN, WEBHOOK_TOKEN)];
    let cases: &[(&[u8], u16)] = &[
        (b"{not json", 400),
        (b"[]", 400),
        (br#"{"event":"build:start","data":{}}"#, 200),
        (
            br#"{"event":"job-run:success","data":{"job":{"id":"someone-elses-job"}}}"#,
            200,
        ),
        (br#"{"event":"job-run:success","data":{}}"#, 200),
    ];
    for (body, status) in cases {
        let (got, answer) = call(&app, post(WEBHOOK_PATH, &ok, *body)).await;
        assert_eq!(got, *status, "{}: {answer}", String::from_utf8_lossy(body));
    }
    let big = vec![b' '; w.settings.webhook.max_body + 1];
    assert_eq!(call(&app, post(WEBHOOK_PATH, &ok, big)).await.0, 413);
    assert_eq!(
        (w.prefect.requests_sent(), w.northflank.requests_sent()),
        (0, 0)
    );
}

/// The same refusal over HTTP, through the local server.
#[tokio::test]
async fn the_http_route_refuses_a_wrong_token() {
    let w = std::sync::Arc::new(worker());
    let addr = serve(w.clone()).await;
    let resp = reqwest::Client::new()
        .post(format!("http://{addr}{WEBHOOK_PATH}"))
        .header(TOKEN, "wrong")
        .body(SUCCESS)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(w.prefect.requests_sent(), 0);
}

/// The token is checked before the body is read: a request announcing a large body and
/// sending none of it is refused at once (were the body read first, the answer would wait
/// for it), and so is one announcing more than the limit, even with the right token.
#[tokio::test]
async fn the_token_and_the_declared_length_are_checked_before_the_body_is_read() {
    let w = std::sync::Arc::new(worker());
    let addr = serve(w.clone()).await;
    let limit = w.settings.webhook.max_body;
    for (token, length, status) in [("wrong", limit - 1, 401), (WEBHOOK_TOKEN, limit + 1, 413)] {
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST {WEBHOOK_PATH} HTTP/1.1\r\nhost: x\r\n{TOKEN}: {token}\r\ncontent-type: application/json\r\ncontent-length: {length}\r\n\r\n"
        );
        conn.write_all(head.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        // The server answers and closes: the connection ends without the body ever sent.
        tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut answer))
            .await
            .expect("answered without waiting for the body")
            .unwrap();
        let answer = String::from_utf8_lossy(&answer).to_lowercase();
        assert!(
            answer.starts_with(&format!("http/1.1 {status}")),
            "{answer}"
        );
        assert!(answer.contains("connection: close"), "{answer}");
    }
    assert_eq!(w.prefect.requests_sent(), 0);
}

async fn serve(w: std::sync::Arc<prefect_nf::worker::Worker>) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(prefect_nf::local::serve(
        listener,
        w,
        std::future::pending(),
    ));
    addr
}

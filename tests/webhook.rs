//! The webhook's front door: every refusal happens before any Prefect or Northflank call.

mod helpers;

use prefect_nf::webhook::{self, TOKEN_HEADER};
use reqwest::header::{HeaderMap, HeaderValue};

fn worker() -> prefect_nf::worker::Worker {
    // Unreachable on purpose: any call would be counted (and would fail).
    helpers::worker_for("http://127.0.0.1:9/api", "pool", "http://127.0.0.1:9", "w")
}

fn headers(token: Option<&str>) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Some(t) = token {
        h.insert(TOKEN_HEADER, HeaderValue::from_str(t).unwrap());
    }
    h
}

const SUCCESS: &[u8] = br#"{"event":"job-run:success","data":{"jobRun":{"id":"r"},"job":{"id":"pf-0b9f6a2e-1c3d-4e5f-8a9b-0c1d2e3f4a5b"}}}"#;

/// 8d: a missing or wrong token → 401, and nothing else happens.
#[tokio::test]
async fn a_missing_or_wrong_token_is_refused_without_any_call() {
    let w = worker();
    for token in [
        None,
        Some("wrong"),
        Some(""),
        Some("hook-secret-for-tests-but-longer"),
    ] {
        let r = webhook::handle(&w, &headers(token), SUCCESS).await;
        assert_eq!(r.status, 401, "{token:?}");
    }
    assert_eq!(
        (w.prefect.requests_sent(), w.northflank.requests_sent()),
        (0, 0)
    );
}

#[tokio::test]
async fn bad_or_foreign_notifications_are_answered_without_any_call() {
    let w = worker();
    let ok = headers(Some(helpers::WEBHOOK_TOKEN));
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
        let r = webhook::handle(&w, &ok, body).await;
        assert_eq!(
            r.status,
            *status,
            "{}: {:?}",
            String::from_utf8_lossy(body),
            r.body
        );
    }
    let big = vec![b' '; w.settings.webhook_max_body + 1];
    assert_eq!(webhook::handle(&w, &ok, &big).await.status, 413);
    assert_eq!(
        (w.prefect.requests_sent(), w.northflank.requests_sent()),
        (0, 0)
    );
}

/// The same refusal over HTTP, through the local server's route.
#[tokio::test]
async fn the_http_route_refuses_a_wrong_token() {
    let w = std::sync::Arc::new(worker());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(prefect_nf::local::serve(
        listener,
        w.clone(),
        std::future::pending(),
    ));
    let resp = reqwest::Client::new()
        .post(format!("http://{addr}{}", prefect_nf::local::WEBHOOK_PATH))
        .header(TOKEN_HEADER, "wrong")
        .body(SUCCESS)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(w.prefect.requests_sent(), 0);
}

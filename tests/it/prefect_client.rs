//! The Prefect client's transport: authentication and CSRF against a real Prefect server that
//! requires both, and Prefect's retry rules against a scripted local peer (a real server cannot
//! be made to answer 429 or 503 on cue).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use prefect_nf::config::{PrefectAuth, Secret};
use prefect_nf::prefect::PrefectClient;

/// The auth- and CSRF-protected server scripts/test starts beside the open one.
fn auth_server() -> (String, String) {
    let url = std::env::var("PFNF_TEST_AUTH_API_URL")
        .expect("PFNF_TEST_AUTH_API_URL is not set: run the tests through scripts/test");
    let auth = std::env::var("PFNF_TEST_AUTH_STRING").expect("PFNF_TEST_AUTH_STRING is not set");
    (url, auth)
}

fn client(url: &str, auth: PrefectAuth) -> PrefectClient {
    PrefectClient::new(url, auth, "auth-test-worker", Duration::from_millis(200)).unwrap()
}

#[tokio::test]
async fn basic_auth_and_csrf_work_against_a_protected_server() {
    let (url, auth) = auth_server();
    let pool = format!("auth-{}", uuid::Uuid::new_v4().simple());

    let anonymous = client(&url, PrefectAuth::None);
    let err = anonymous
        .heartbeat(&pool, Duration::from_secs(60))
        .await
        .unwrap_err();
    assert!(err.is_auth(), "{err}");
    let bearer = client(&url, PrefectAuth::ApiKey(Secret::new(auth.clone())));
    assert!(bearer.read_work_pool(&pool).await.unwrap_err().is_auth());

    // The server really demands CSRF tokens on writes.
    let (user, pass) = auth.split_once(':').unwrap();
    let raw = reqwest::Client::new()
        .post(format!("{url}/work_pools/filter"))
        .basic_auth(user, Some(pass))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 403);

    let basic = client(&url, PrefectAuth::AuthString(Secret::new(auth)));
    // Writes need a CSRF token on this server: the first 403 fetches one.
    let created = prefect_nf::setup::pool::create(&basic, &pool, Some("p"), None)
        .await
        .unwrap();
    assert_eq!(created, prefect_nf::setup::pool::PoolAction::Created);
    basic
        .heartbeat(&pool, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        basic
            .read_work_pool(&pool)
            .await
            .unwrap()
            .unwrap()
            .status
            .as_deref(),
        Some("READY")
    );
}

/// One scripted answer: a status and an optional `Retry-After`.
type Answer = (u16, Option<&'static str>);

/// A local peer that answers each request with the next scripted status (then 200 `[]`), and
/// records the headers it saw.
#[derive(Clone, Default)]
struct Peer {
    script: Arc<Mutex<Vec<Answer>>>,
    seen: Arc<Mutex<Vec<HeaderMap>>>,
}

impl Peer {
    async fn start(script: Vec<Answer>) -> (Peer, String) {
        let peer = Peer {
            script: Arc::new(Mutex::new(script)),
            ..Default::default()
        };
        let state = peer.clone();
        let app = axum::Router::new().fallback(move |headers: HeaderMap| {
            let state = state.clone();
            async move {
                state.seen.lock().unwrap().push(headers);
                let next = {
                    let mut script = state.script.lock().unwrap();
                    (!script.is_empty()).then(|| script.remove(0))
                };
                match next {
                    Some((status, retry_after)) => {
                        let mut resp = (
                            StatusCode::from_u16(status).unwrap(),
                            "{\"detail\":\"scripted\"}",
                        )
                            .into_response();
                        if let Some(after) = retry_after {
                            resp.headers_mut()
                                .insert("retry-after", after.parse().unwrap());
                        }
                        resp
                    }
                    None => (StatusCode::OK, "[]").into_response(),
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/api", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (peer, url)
    }

    fn requests(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

#[tokio::test]
async fn sends_the_api_version_worker_name_and_bearer_key() {
    let (peer, url) = Peer::start(vec![]).await;
    let c = client(&url, PrefectAuth::ApiKey(Secret::new("pnu_key")));
    c.workers("pool").await.unwrap();
    let seen = peer.seen.lock().unwrap()[0].clone();
    assert_eq!(seen["authorization"], "Bearer pnu_key");
    assert_eq!(seen["x-prefect-api-version"], "0.8.4");
    assert_eq!(seen["x-prefect-worker-name"], "auth-test-worker");
}

#[tokio::test]
async fn retries_the_statuses_prefect_retries_and_no_others() {
    let (peer, url) = Peer::start(vec![(503, None), (502, None), (408, None)]).await;
    client(&url, PrefectAuth::None)
        .workers("pool")
        .await
        .unwrap();
    assert_eq!(peer.requests(), 4);

    let (peer, url) = Peer::start(vec![(500, None)]).await;
    let err = client(&url, PrefectAuth::None)
        .workers("pool")
        .await
        .unwrap_err();
    assert_eq!((err.status(), peer.requests()), (Some(500), 1));
}

#[tokio::test]
async fn retry_after_is_a_floor() {
    let (peer, url) = Peer::start(vec![(429, Some("1"))]).await;
    let started = Instant::now();
    client(&url, PrefectAuth::None)
        .workers("pool")
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(peer.requests(), 2);
}

#[tokio::test]
async fn the_deadline_bounds_retries() {
    let (peer, url) = Peer::start(vec![(503, None); 10]).await;
    let c = PrefectClient::new(&url, PrefectAuth::None, "w", Duration::from_secs(2)).unwrap();
    let started = Instant::now();
    let c = c.with_deadline(tokio::time::Instant::now() + Duration::from_millis(500));
    let err = c.workers("pool").await.unwrap_err();
    assert_eq!(err.status(), Some(503));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        peer.requests(),
        1,
        "a retry 2 s away would end after the deadline"
    );
}

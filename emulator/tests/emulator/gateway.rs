//! Auth, rate limit, fault injection, request recording and the control API.

use crate::common::{Api, PROJECT, TOKEN, emulator, fast_config, job};
use nf_emulator::{Config, Faults, Snapshot};
use serde_json::{Value, json};

#[tokio::test]
async fn unauthorized_without_a_known_bearer_token() {
    let (em, api) = emulator(fast_config()).await;
    let path = format!("/v1/projects/{PROJECT}/jobs");
    for anonymous in [api.with_token(None), api.with_token(Some("wrong"))] {
        let a = anonymous.get(&path).await;
        assert_eq!(a.status, 401);
        assert_eq!(
            a.body,
            json!({"error": {"status": 401, "message": "Unauthorized"}})
        );
        assert_eq!(a.header("x-ratelimit-limit"), Some("1000"));
    }
    let c = em.counters();
    assert_eq!(c.responses_401, 2);
    assert_eq!(c.requests["GET /v1/projects/{projectId}/jobs"], 2);
    let multi = Config {
        api_tokens: vec!["a".into(), "b".into()],
        ..fast_config()
    };
    let (_em2, api2) = emulator(multi).await;
    assert_eq!(api2.with_token(Some("b")).get(&path).await.status, 200);
    assert_eq!(
        api2.get(&path).await.status,
        401,
        "the default token is not accepted any more"
    );
}

#[tokio::test]
async fn rate_limit_headers_and_429_after_budget() {
    let config = Config {
        rate_limit_per_hour: 3,
        ..fast_config()
    };
    let (em, api) = emulator(config).await;
    let path = format!("/v1/projects/{PROJECT}/jobs");
    for expected_remaining in ["2", "1", "0"] {
        let a = api.get(&path).await;
        assert_eq!(a.status, 200);
        assert_eq!(a.header("x-ratelimit-limit"), Some("3"));
        assert_eq!(a.header("x-ratelimit-remaining"), Some(expected_remaining));
        let reset: u64 = a.header("x-ratelimit-reset").unwrap().parse().unwrap();
        assert!((3599..=3600).contains(&reset), "{reset}");
    }
    let over = api.post(&path, job("over-budget")).await;
    assert_eq!(over.status, 429);
    assert_eq!(over.body["error"]["status"], 429);
    assert!(over.body["error"]["id"].is_string());
    assert_eq!(over.header("x-ratelimit-remaining"), Some("0"));
    let retry: u64 = over.header("retry-after").unwrap().parse().unwrap();
    assert!((3599..=3600).contains(&retry));
    assert!(em.snapshot().jobs.is_empty(), "a 429 changes nothing");
    // Budgets are per token.
    let other = Config {
        api_tokens: vec![TOKEN.into(), "second".into()],
        rate_limit_per_hour: 1,
        ..fast_config()
    };
    let (_em2, api2) = emulator(other).await;
    assert_eq!(api2.get(&path).await.status, 200);
    assert_eq!(api2.get(&path).await.status, 429);
    assert_eq!(api2.with_token(Some("second")).get(&path).await.status, 200);
    // The control API is never limited, and reset clears the windows.
    let control = reqwest::Client::new();
    let r = control
        .post(format!("{}/_emulator/reset", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(api.get(&path).await.status, 200);
    assert_eq!(em.counters().responses_429, 1);
}

#[tokio::test]
async fn window_restarts_after_its_length() {
    let config = Config {
        rate_limit_per_hour: 1,
        rate_limit_window_secs: 1,
        ..fast_config()
    };
    let (_em, api) = emulator(config).await;
    let path = format!("/v1/projects/{PROJECT}/jobs");
    assert_eq!(api.get(&path).await.status, 200);
    let limited = api.get(&path).await;
    assert_eq!(limited.status, 429);
    assert_eq!(limited.header("retry-after"), Some("1"));
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(api.get(&path).await.status, 200);
}

fn faults(f: impl FnOnce(&mut Faults)) -> Config {
    let mut config = fast_config();
    f(&mut config.faults);
    config
}

#[tokio::test]
async fn injected_503_happens_before_the_handler() {
    let (em, api) = emulator(faults(|f| f.api_5xx_pct = 100.0)).await;
    let a = api
        .post(
            &format!("/v1/projects/{PROJECT}/jobs"),
            job("never-created"),
        )
        .await;
    assert_eq!(a.status, 503);
    assert_eq!(a.body["error"]["status"], 503);
    assert!(a.header("x-ratelimit-remaining").is_some());
    assert!(em.snapshot().jobs.is_empty());
    let c = em.counters();
    assert_eq!((c.responses_5xx, c.faults_injected), (1, 1));
    // Never on the control API.
    let health = reqwest::get(format!("{}/_emulator/health", api.base))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn injected_429_carries_retry_after() {
    let (_em, api) = emulator(faults(|f| {
        f.api_429_pct = 100.0;
        f.retry_after_secs = 7;
    }))
    .await;
    let a = api.get(&format!("/v1/projects/{PROJECT}/jobs")).await;
    assert_eq!(a.status, 429);
    assert_eq!(a.header("retry-after"), Some("7"));
}

#[tokio::test]
async fn lost_response_fault_still_changes_state() {
    let (em, api) = emulator(faults(|f| f.api_5xx_after_pct = 100.0)).await;
    let a = api
        .post(
            &format!("/v1/projects/{PROJECT}/jobs"),
            job("created-anyway"),
        )
        .await;
    assert_eq!(a.status, 502);
    assert_eq!(em.snapshot().jobs[0].id, "created-anyway");
    let retry = api
        .post(
            &format!("/v1/projects/{PROJECT}/jobs"),
            job("created-anyway"),
        )
        .await;
    assert_eq!(retry.status, 502, "the 409 of the retry is lost as well");
    assert_eq!(em.requests()[1].status, 502);
}

#[tokio::test]
async fn faults_are_reproducible_with_a_seed() {
    async fn pattern(seed: u64) -> Vec<u16> {
        let (_em, api) = emulator(faults(|f| {
            f.seed = seed;
            f.api_5xx_pct = 50.0;
        }))
        .await;
        let mut statuses = Vec::new();
        for _ in 0..20 {
            statuses.push(
                api.get(&format!("/v1/projects/{PROJECT}/jobs"))
                    .await
                    .status,
            );
        }
        statuses
    }
    let first = pattern(42).await;
    assert_eq!(first, pattern(42).await);
    assert!(first.contains(&503) && first.contains(&200), "{first:?}");
    assert_ne!(first, pattern(43).await);
}

#[tokio::test]
async fn requests_and_counters_are_recorded_and_served() {
    let (em, api) = emulator(fast_config()).await;
    let job_id = api.create_job(job("recorded")).await;
    api.start_run(&job_id, json!({"runtimeEnvironment": {"A": "1"}}))
        .await;
    api.get(&format!(
        "/v1/teams/t1/projects/{PROJECT}/jobs/{job_id}/runs?per_page=1"
    ))
    .await;

    let requests = em.requests();
    assert_eq!(requests.len(), 3);
    assert_eq!(requests[0].method, "POST");
    assert_eq!(requests[0].endpoint, "POST /v1/projects/{projectId}/jobs");
    assert_eq!(requests[0].body["name"], "recorded");
    assert_eq!(requests[1].body, json!({"runtimeEnvironment": {"A": "1"}}));
    assert_eq!(requests[2].query.as_deref(), Some("per_page=1"));
    assert_eq!(
        requests[2].endpoint,
        "GET /v1/projects/{projectId}/jobs/{jobId}/runs"
    );
    assert_eq!(requests[2].status, 200);
    let counters = em.counters();
    assert_eq!(
        counters.requests["POST /v1/projects/{projectId}/jobs/{jobId}/runs"],
        1
    );
    assert_eq!((counters.jobs_created, counters.runs_started), (1, 1));

    // The same data over the control API, without auth.
    let http = reqwest::Client::new();
    let state: Snapshot = http
        .get(format!("{}/_emulator/state", api.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(state.jobs.len(), 1);
    assert_eq!(state.runs[0].environment["A"], "1");
    let counters: Value = http
        .get(format!("{}/_emulator/counters", api.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(counters["runs_started"], 1);
    let recorded: Vec<Value> = http
        .get(format!("{}/_emulator/requests", api.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(recorded.len(), 3, "control calls are not recorded");
}

#[tokio::test]
async fn control_finish_concludes_a_run() {
    let (_em, api) = emulator(Config {
        default_script: "hang".into(),
        ..fast_config()
    })
    .await;
    let job_id = api.create_job(job("finish-me")).await;
    let run = api.start_run(&job_id, json!({})).await;
    let control = Api::new(&api.base, "unused").with_token(None);
    let a = control
        .post(
            &format!("/_emulator/runs/{run}/finish"),
            json!({"outcome": "success"}),
        )
        .await;
    assert_eq!(a.status, 200);
    let r = api.run(&job_id, &run).await;
    assert_eq!(
        (r["status"].as_str(), r["succeeded"].as_u64()),
        (Some("SUCCESS"), Some(1))
    );
    let again = control
        .post(
            &format!("/_emulator/runs/{run}/finish"),
            json!({"outcome": "failure"}),
        )
        .await;
    assert_eq!(again.status, 409);
    let bad = control
        .post(
            &format!("/_emulator/runs/{run}/finish"),
            json!({"outcome": "maybe"}),
        )
        .await;
    assert_eq!(bad.status, 400);
    assert_eq!(
        control
            .post("/_emulator/runs/nope/finish", json!({"outcome": "success"}))
            .await
            .status,
        404
    );
}

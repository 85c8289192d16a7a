//! Knobs for behaviours the reference marks [INF]: each alternative is reachable.

use serde_json::json;

use crate::common::{PROJECT, emulator, fast_config, job};
use nf_emulator::Config;

#[tokio::test]
async fn duplicate_job_status_and_known_tags() {
    let config = Config {
        duplicate_job_status: 400,
        known_tags: Some(vec!["prefect".into()]),
        ..fast_config()
    };
    let (_em, api) = emulator(config).await;
    let path = format!("/v1/projects/{PROJECT}/jobs");
    let mut body = job("tagged-job");
    body["tags"] = json!(["prefect", "unknown-tag"]);
    let a = api.post(&path, body.clone()).await;
    assert_eq!(a.status, 400);
    assert!(
        a.message().contains("tags[1]: unknown tag \"unknown-tag\""),
        "{}",
        a.message()
    );
    body["tags"] = json!(["prefect"]);
    assert_eq!(api.post(&path, body.clone()).await.status, 200);
    let dup = api.post(&path, body).await;
    assert_eq!(dup.status, 400);
    assert_eq!(dup.body["error"]["status"], 400);
}

#[tokio::test]
async fn runs_can_be_listed_oldest_first() {
    let config = Config {
        runs_newest_first: false,
        default_script: "hang".into(),
        ..fast_config()
    };
    let (_em, api) = emulator(config).await;
    let job_id = api.create_job(job("oldest-first")).await;
    let first = api.start_run(&job_id, json!({})).await;
    api.start_run(&job_id, json!({})).await;
    let list = api
        .get(&format!("/v1/projects/{PROJECT}/jobs/{job_id}/runs"))
        .await;
    assert_eq!(list.body["data"]["runs"][0]["id"], first.as_str());
}

#[tokio::test]
async fn retry_after_can_be_omitted() {
    let config = Config {
        rate_limit_per_hour: 0,
        retry_after_on_limit: false,
        ..fast_config()
    };
    let (_em, api) = emulator(config).await;
    let a = api.get(&format!("/v1/projects/{PROJECT}/jobs")).await;
    assert_eq!(a.status, 429);
    assert_eq!(a.header("retry-after"), None);
    assert_eq!(a.header("x-ratelimit-remaining"), Some("0"));
}

/// `stall_run_starts_token`: starting a run with that token never gets an answer (and starts
/// nothing), as for a worker that dies between writing a job and starting its run; other
/// tokens are unaffected. `runs_started_by_job` counts starts per job.
#[tokio::test]
async fn run_starts_can_stall_for_one_token() {
    let config = Config {
        api_tokens: vec![crate::common::TOKEN.into(), "doomed".into()],
        faults: nf_emulator::Faults {
            stall_run_starts_token: Some("doomed".into()),
            ..Default::default()
        },
        default_script: "hang".into(),
        ..fast_config()
    };
    let (em, api) = emulator(config).await;
    let job_id = api.create_job(job("stalled-start")).await;
    let doomed = api.with_token(Some("doomed"));
    let path = format!("/v1/projects/{PROJECT}/jobs/{job_id}/runs");
    let stalled = tokio::time::timeout(
        std::time::Duration::from_millis(500),
        doomed.post(&path, json!({})),
    )
    .await;
    assert!(stalled.is_err(), "the start must not be answered");
    assert_eq!(em.counters().runs_started, 0);
    api.start_run(&job_id, json!({})).await;
    api.start_run(&job_id, json!({})).await;
    let counters = em.counters();
    assert_eq!(counters.runs_started, 2);
    assert_eq!(counters.runs_started_by_job.get(&job_id), Some(&2));
}

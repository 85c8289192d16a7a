//! The Northflank client against the emulator: rate-limit headers, 429, pagination, abort, and
//! exactly one run per job when requests fail or lose their answers.

use std::time::Duration;

use prefect_nf::config::Secret;
use prefect_nf::ids::{FlowRunId, JobName};
use prefect_nf::northflank::NorthflankClient;
use prefect_nf::northflank::launch::{JobAndRun, launch};
use serde_json::{Value, json};

async fn emulator(config: nf_emulator::Config) -> (nf_emulator::Emulator, NorthflankClient) {
    let emulator = nf_emulator::start(config).await.unwrap();
    let client = NorthflankClient::new(
        &emulator.base_url(),
        Secret::new("nf-test-token"),
        Duration::from_millis(50),
    )
    .unwrap();
    (emulator, client)
}

fn job_body(name: &str) -> Value {
    json!({"name": name, "billing": {"deploymentPlan": "nf-compute-20"},
           "deployment": {"external": {"imagePath": "prefecthq/prefect:3-python3.12"},
                          "docker": {"configType": "customCommand", "customCommand": "prefect flow-run execute"}},
           "settings": {"backoffLimit": 0}, "runtimeEnvironment": {"NF_EMULATOR_SCRIPT": "hang"}})
}

#[tokio::test]
async fn records_rate_limit_headers_and_stops_at_the_budget() {
    let (_e, nf) = emulator(nf_emulator::Config {
        rate_limit_per_hour: 3,
        ..Default::default()
    })
    .await;
    nf.list_jobs("p").await.unwrap();
    let rate = nf.rate_limit();
    assert_eq!((rate.limit, rate.remaining), (Some(3), Some(2)));
    nf.list_jobs("p").await.unwrap();
    nf.list_jobs("p").await.unwrap();
    // The 429's Retry-After (the window's end, an hour away) is past any deadline: no retry.
    let nf = nf.with_deadline(tokio::time::Instant::now() + Duration::from_secs(5));
    let err = nf.list_jobs("p").await.unwrap_err();
    assert!(err.is_rate_limited(), "{err}");
    assert_eq!(nf.rate_limit().remaining, Some(0));
}

/// A `Retry-After` longer than the call may wait is an error saying until when, at once: an
/// hour's window would otherwise put a command without a deadline to sleep for an hour.
#[tokio::test]
async fn a_retry_after_past_the_deadline_or_the_cap_is_an_error_naming_the_time() {
    let (_e, nf) = emulator(nf_emulator::Config {
        rate_limit_per_hour: 1,
        ..Default::default()
    })
    .await;
    nf.list_jobs("p").await.unwrap();
    let deadline = nf.with_deadline(tokio::time::Instant::now() + Duration::from_secs(30));
    for (what, client) in [
        ("no deadline, the 60 s cap", nf.clone()),
        ("a deadline", deadline),
    ] {
        let started = std::time::Instant::now();
        let err = client.list_jobs("p").await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5), "{what}: slept");
        assert!(
            err.is_rate_limited() && !err.outcome_unknown(),
            "{what}: {err}"
        );
        let text = err.to_string();
        let (_, rest) = text
            .split_once("rate limited by Northflank until ")
            .unwrap_or_else(|| panic!("{what}: {text}"));
        let until = chrono::DateTime::parse_from_rfc3339(rest.split(' ').next().unwrap()).unwrap();
        let ahead = until
            .signed_duration_since(chrono::Utc::now())
            .num_seconds();
        assert!((3500..=3601).contains(&ahead), "{what}: {text}");
        let wait = prefect_nf::retry::Transient::retry_after(&err).unwrap();
        assert!(
            wait > Duration::from_secs(3500),
            "the caller can reschedule: {wait:?}"
        );
    }
    // Allowed to wait that long, the handle sleeps instead; a short wait is always slept through.
    let patient = nf.with_max_wait(Duration::from_secs(7200));
    let waiting = tokio::time::timeout(Duration::from_millis(300), patient.list_jobs("p")).await;
    assert!(waiting.is_err(), "a handle allowed to wait does");
}

#[tokio::test]
async fn lists_every_page_and_aborts_idempotently() {
    let (_e, nf) = emulator(nf_emulator::Config::default()).await;
    let job = nf.put_job("p", &job_body("pages")).await.unwrap().id;
    for _ in 0..105 {
        nf.start_run("p", &job, &json!({})).await.unwrap();
    }
    let runs = nf.list_runs("p", &job).await.unwrap();
    assert_eq!(runs.len(), 105);

    let run = &runs[0].id;
    nf.abort_run("p", &job, run).await.unwrap();
    let aborted = nf.get_run("p", &job, run).await.unwrap().unwrap();
    assert!(aborted.concluded);
    // Aborting again answers 409 from Northflank: the run has concluded, so that is success.
    nf.abort_run("p", &job, run).await.unwrap();
    assert!(nf.delete_job("p", &job).await.unwrap(), "deleted");
    assert!(!nf.delete_job("p", &job).await.unwrap(), "already gone");
    assert!(nf.get_run("p", &job, run).await.unwrap().is_none());
    // A job that does not exist has no runs (its listing answers 404).
    assert!(nf.list_runs("p", &job).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_rejected_job_is_a_permanent_error_with_northflanks_message() {
    let (_e, nf) = emulator(nf_emulator::Config::default()).await;
    let mut body = job_body("bad-image");
    body["deployment"]["external"]["imagePath"] = json!("prefecthq/prefect");
    let err = nf.put_job("p", &body).await.unwrap_err();
    assert_eq!(err.status(), Some(400));
    assert!(!err.outcome_unknown());
    assert!(
        err.user_message().contains("imagePath"),
        "{}",
        err.user_message()
    );
}

/// Faults on every endpoint, including answers lost after the change was made: every launch
/// still ends with exactly one job and one run.
#[tokio::test]
async fn launches_exactly_one_run_per_job_through_faults() {
    let faults = nf_emulator::Faults {
        seed: 7,
        api_5xx_pct: 15.0,
        api_429_pct: 10.0,
        api_5xx_after_pct: 20.0,
        retry_after_secs: 0,
        ..Default::default()
    };
    let (emulator, nf) = emulator(nf_emulator::Config {
        faults,
        ..Default::default()
    })
    .await;
    let start_run = json!({});
    let mut launched = 0;
    for _ in 0..30 {
        let id = FlowRunId(uuid::Uuid::new_v4());
        let name = JobName::for_flow_run(id);
        let body = job_body(&name.to_string());
        let l = JobAndRun {
            project: "p",
            job_name: name,
            create_job: &body,
            start_run: &start_run,
            claimed_at: chrono::Utc::now(),
            look_first: false,
        };
        match launch(&nf, &l).await {
            Ok(_) => launched += 1,
            // As dispatch does: a job written for an abandoned launch is deleted.
            Err(e) if e.job_written => {
                nf.delete_job("p", &name.to_string()).await.unwrap();
            }
            Err(_) => {}
        }
    }
    let snapshot = emulator.snapshot();
    let mut per_job = std::collections::HashMap::new();
    for run in &snapshot.runs {
        *per_job.entry(run.job_id.clone()).or_insert(0) += 1;
    }
    assert!(per_job.values().all(|n| *n == 1), "{per_job:?}");
    assert_eq!(
        per_job.len(),
        launched,
        "every successful launch has its run, and no other runs exist"
    );
    assert_eq!(
        snapshot.jobs.len(),
        launched,
        "no job is left behind by a failed launch"
    );
    assert!(
        launched >= 25,
        "retries should carry most launches through: {launched}/30"
    );
    assert!(snapshot.counters.faults_injected > 0);
}

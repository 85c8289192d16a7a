//! Prefect Cloud's rate limits, through a proxy in front of the real test server that refuses
//! what Cloud would (`proxy`): a 429 with `Retry-After` pauses every Prefect call of the
//! process, claims stop while paused, no run is claimed that cannot be submitted, none is
//! crashed by throttling, refused log lines wait for the next send, and the summary says so.
//!
//! The emulated container reports its states straight to the server (its `PREFECT_API_URL` is
//! set in the run's `env`): the emulator's engine is not what is under test.

use std::time::Duration;

use prefect_nf::ids::FlowRunId;
use prefect_nf::prefect::PrefectError;
use prefect_nf::worker::Worker;
use serde_json::json;
use tokio::time::Instant;
use uuid::Uuid;

use crate::helpers::{Captured, TestApp, reconcile_once};
use crate::proxy::{Bucket, ProxyConfig, proxied};

/// A scheduled run whose emulated container succeeds after `secs`, reporting to the server
/// itself.
async fn run(app: &TestApp, deployment: Uuid, secs: f64) -> FlowRunId {
    let env = json!({"NF_EMULATOR_SCRIPT": format!("succeed:{secs}"), "PREFECT_API_URL": app.api});
    app.flow_run(deployment, json!({"env": env})).await
}

async fn states(app: &TestApp, ids: &[FlowRunId]) -> Vec<String> {
    let mut states = Vec::new();
    for id in ids {
        states.push(app.state_type(*id).await);
    }
    states
}

/// The worker's calls under a small bucket: every Retry-After form pauses every clone of the
/// client until the time named, and a call whose deadline comes first fails at once, naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_in_either_form_pauses_every_clone_and_a_deadline_fails_at_once() {
    for http_date in [false, true] {
        let (proxy, app) = proxied(ProxyConfig {
            window: Duration::from_secs(3),
            buckets: vec![Bucket::requests("flows", "/api/flows/", 1)],
            http_date,
        })
        .await;
        let flow: Uuid = app.post("/flows/", json!({"name": "throttled"})).await["id"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let client = app.worker.prefect.clone();
        // Reads until the window's one request is spent: the next is refused, waits for the
        // window's end and goes through.
        let reader = tokio::spawn({
            let client = client.clone();
            async move {
                while client.throttled() == 0 {
                    client
                        .read_flow(flow)
                        .await
                        .expect("read, after the pause if need be");
                }
            }
        });
        while client.paused_until().is_none() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (until, _) = client.paused_until().unwrap();
        // Another clone, another path the proxy does not limit: it waits all the same.
        let other = client.with_deadline(Instant::now() + Duration::from_secs(30));
        assert!(other.read_work_pool(&app.pool).await.unwrap().is_some());
        assert!(Instant::now() >= until, "went out before the pause lifted");
        reader.await.unwrap();
        assert!(proxy.tally("flows").refused >= 1);

        // Once the window's request is spent again, a call due before the pause ends fails at
        // once (a shorter pause is waited out).
        let (error, took) = loop {
            let started = Instant::now();
            let soon = client.with_deadline(started + Duration::from_millis(900));
            if let Err(e) = soon.read_flow(flow).await {
                break (e, started.elapsed());
            }
        };
        assert!(
            matches!(error, PrefectError::Throttled { .. }),
            "http_date={http_date}: {error}"
        );
        assert!(
            took < Duration::from_millis(900),
            "it slept past its deadline"
        );
        let message = error.to_string();
        assert!(
            message.starts_with("Prefect rate-limited this worker until 20"),
            "{message}"
        );
        let refused_before = proxy.refused();
        let again = client.with_deadline(Instant::now() + Duration::from_millis(900));
        assert!(
            again
                .read_work_pool(&app.pool)
                .await
                .unwrap_err()
                .is_throttled()
        );
        assert_eq!(proxy.refused(), refused_before, "nothing sent while paused");
        assert_eq!(client.throttled(), proxy.refused(), "every 429 counted");
    }
}

/// Many scheduled runs under small `flow_runs` and log buckets: every run ends COMPLETED, none
/// is crashed, each has exactly one Northflank run, every log line arrives, and the summaries
/// report the throttling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_runs_under_small_buckets_all_complete_and_none_is_crashed() {
    const RUNS: usize = 12;
    let (proxy, mut app) = proxied(ProxyConfig {
        window: Duration::from_secs(3),
        buckets: vec![Bucket::flow_runs(10), Bucket::logs(10)],
        http_date: false,
    })
    .await;
    app.worker.settings.polling.window = Duration::from_secs(25);
    app.worker.settings.polling.max_concurrency = 6;
    let deployment = app.deployment(json!({})).await;
    let mut ids = Vec::new();
    for _ in 0..RUNS {
        ids.push(run(&app, deployment, 0.2).await);
    }
    let mut summaries = Vec::new();
    for _ in 0..3 {
        let deadline = Instant::now() + Duration::from_secs(40);
        let summary = prefect_nf::scheduled::invoke(&app.worker, deadline)
            .await
            .unwrap()
            .dispatch;
        println!("throttling: {summary:?}");
        assert_eq!(summary.crashed, 0, "{summary:#?}");
        assert_eq!(
            summary.claimed, summary.submitted,
            "every run claimed was submitted: {summary:#?}"
        );
        summaries.push(summary);
        let now = states(&app, &ids).await;
        assert!(
            now.iter()
                .all(|s| ["SCHEDULED", "PENDING", "RUNNING", "COMPLETED"].contains(&s.as_str())),
            "{now:?}"
        );
        if now.iter().all(|s| s != "SCHEDULED") {
            break;
        }
    }
    for id in &ids {
        app.wait_for_state(*id, &["COMPLETED"], Duration::from_secs(60))
            .await;
    }
    let counters = app.emulator.counters();
    assert_eq!(counters.runs_started, RUNS as u64, "{counters:?}");
    assert!(counters.runs_started_by_job.values().all(|n| *n == 1));

    let sum = |f: fn(&prefect_nf::dispatch::Summary) -> u64| summaries.iter().map(f).sum::<u64>();
    assert!(sum(|s| s.prefect_throttled) > 0, "{summaries:#?}");
    assert!(sum(|s| s.prefect_paused_ms) > 0, "{summaries:#?}");
    assert!(sum(|s| s.logs_held) > 0, "{summaries:#?}");
    assert_eq!(sum(|s| s.logs_dropped), 0);
    let (flow_runs, logs) = (proxy.tally("flow_runs"), proxy.tally("logs"));
    assert!(
        flow_runs.refused > 0 && logs.refused > 0,
        "{flow_runs:?} {logs:?}"
    );
    assert!(flow_runs.most_in_a_window <= 10 && logs.most_in_a_window <= 10);

    // Lines the log bucket refused were kept, not dropped: they all arrive.
    let outbox = &app.worker.kept.outbox;
    let end = Instant::now() + Duration::from_secs(60);
    while outbox.waiting() > 0 && Instant::now() < end {
        app.worker.send_pending().await;
    }
    assert_eq!(outbox.waiting(), 0);
    for id in &ids {
        let logs = app.logs(*id).await;
        for line in ["submitting flow run", "submitted to infrastructure"] {
            assert!(logs.iter().any(|l| l.contains(line)), "{line}: {logs:#?}");
        }
    }
    assert_eq!(app.worker.prefect.throttled(), proxy.refused());
    println!(
        "throttling: {RUNS} runs in {} invocations; flow_runs {flow_runs:?}; logs {logs:?}",
        summaries.len()
    );
}

/// A pause that outlasts the invocation: no run is claimed (they stay Scheduled), no poll
/// follows, nothing sleeps, and one WARN line and the summary say so. The runtime is
/// single-threaded so that this thread's log subscriber sees every task's lines.
#[tokio::test]
async fn a_pause_past_the_deadline_defers_every_claim_and_polls_no_more() {
    let (proxy, mut app) = proxied(ProxyConfig {
        window: Duration::from_secs(60),
        buckets: vec![Bucket::requests("deployments", "/api/deployments/", 0)],
        http_date: false,
    })
    .await;
    app.worker.settings.polling.window = Duration::from_secs(5);
    let deployment = app.deployment(json!({})).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(run(&app, deployment, 0.2).await);
    }
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("prefect_nf=info")
        .with_ansi(false)
        .with_writer(captured.clone())
        .finish();
    let guard = tracing::subscriber::set_default(subscriber);
    // The pause (to the end of the proxy's 60 s window) outlasts the invocation.
    let deadline = Instant::now() + Duration::from_secs(30);
    let summary = prefect_nf::scheduled::invoke(&app.worker, deadline)
        .await
        .unwrap()
        .dispatch;
    drop(guard);
    assert_eq!((summary.deferred, summary.claimed), (3, 0), "{summary:#?}");
    assert_eq!(summary.polls, 1, "no poll once the pause leaves no time");
    assert_eq!(proxy.forwarded("POST", "get_scheduled_flow_runs"), 1);
    assert!(summary.prefect_throttled >= 1);
    assert!(summary.prefect_paused_ms > 30_000, "{summary:#?}");
    assert!(summary.duration_ms < 15_000, "it waited: {summary:#?}");
    assert_eq!(states(&app, &ids).await, ["SCHEDULED"; 3]);
    assert!(app.jobs().is_empty());
    for id in &ids {
        assert!(
            app.logs(*id).await.is_empty(),
            "nothing in a deferred run's logs"
        );
    }

    let text = captured.text();
    let warnings: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("Prefect is rate-limiting this worker"))
        .collect();
    assert_eq!(warnings.len(), 1, "{text}");
    assert!(
        warnings[0].contains("WARN") && warnings[0].contains("paused_until=\"20"),
        "{}",
        warnings[0]
    );
    let finished = text
        .lines()
        .find(|l| l.contains("dispatch invocation finished"))
        .expect("the summary line");
    assert!(finished.contains("deferred=3") && finished.contains("prefect_throttled="));
}

/// A run claimed just before a pause that outlasts the invocation: its launch cannot read its
/// flow, and Prefect refuses to take it back to Scheduled, so it stays PENDING without
/// infrastructure rather than Crashed; reconciliation submits it later, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claimed_run_the_limit_interrupts_stays_pending_then_is_resumed_not_crashed() {
    let (proxy, app) = proxied(ProxyConfig {
        window: Duration::from_secs(60),
        buckets: vec![Bucket::requests("flows", "/api/flows/", 0)],
        http_date: false,
    })
    .await;
    let deployment = app.deployment(json!({})).await;
    let id = run(&app, deployment, 0.2).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let summary = prefect_nf::scheduled::invoke(&app.worker, deadline)
        .await
        .unwrap()
        .dispatch;
    assert_eq!(
        (summary.claimed, summary.interrupted, summary.crashed),
        (1, 1, 0),
        "{summary:#?}"
    );
    assert!(proxy.tally("flows").refused >= 1);
    assert_eq!(app.state_type(id).await, "PENDING");
    assert!(app.jobs().is_empty(), "nothing was created");
    app.worker.send_pending().await;
    let logs = app.logs(id).await;
    assert!(
        logs.iter()
            .any(|l| l.contains("stays PENDING and reconciliation resumes")),
        "{logs:#?}"
    );

    // Another process, not rate-limited, resumes the submission.
    let mut settings = app.eager_worker("resumer").settings;
    settings.prefect.api_url = app.api.clone();
    let resumer = Worker::new(settings, app.worker.credentials.clone()).unwrap();
    reconcile_once(&resumer).await;
    app.wait_for_state(id, &["COMPLETED"], Duration::from_secs(60))
        .await;
    assert_eq!(app.emulator.counters().runs_started, 1);
}

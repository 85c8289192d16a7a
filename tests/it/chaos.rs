//! The chaos test: 200 flow runs, three dispatchers (one killed between writing a job and
//! starting its run), 30 % of Northflank's notifications dropped and 10 % duplicated or
//! reordered, 5 % of Northflank requests failing (503, 429, or a lost answer after the change
//! was made), and runs cancelled from Prefect mid-flight. After at most three further dispatch
//! invocations every flow run must be in the state its script calls for, with exactly one job run
//! each and no job left behind.
//!
//! Run it alone with `scripts/with-servers cargo test --test chaos -- --nocapture`. Its last line
//! is `chaos: runs=… duplicate_runs=… leaked_jobs=… stuck_runs=… wrong_state=… nf_requests_per_run=…`.

use std::collections::HashMap;
use std::time::Duration;

use crate::helpers::{NF_TOKEN, TestApp};
use prefect_nf::ids::FlowRunId;
use prefect_nf::worker::Worker;
use serde_json::{Value, json};
use tokio::time::Instant;

const RUNS: usize = 200;
const SEED: u64 = 20_261_127;
const DOOMED_TOKEN: &str = "doomed-token";
/// How long the three dispatchers poll, and each further invocation.
const MAIN_WINDOW: Duration = Duration::from_secs(40);
const FURTHER_WINDOW: Duration = Duration::from_secs(30);

/// What a flow run's container does, and the state it must end in.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Script {
    Complete,
    Fail,
    Crash,
    /// Runs until cancelled from Prefect; its runner cancels it.
    CancelWhileRunning,
    /// Its container never starts the flow; cancelled while PENDING.
    CancelBeforeStart,
}

impl Script {
    fn variables(self, rng: &mut fastrand::Rng) -> Value {
        let secs = format!("{:.1}", 0.5 + rng.f64() * 2.5);
        let (script, engine) = match self {
            Script::Complete => (format!("succeed:{secs}"), "on"),
            Script::Fail => (format!("fail:{secs}"), "on"),
            Script::Crash => (format!("crash:{secs}"), "on"),
            Script::CancelWhileRunning => ("hang".to_string(), "on"),
            Script::CancelBeforeStart => ("hang".to_string(), "off"),
        };
        json!({"env": {"NF_EMULATOR_SCRIPT": script, "NF_EMULATOR_ENGINE": engine}})
    }

    fn expected(self) -> &'static str {
        match self {
            Script::Complete => "COMPLETED",
            Script::Fail => "FAILED",
            Script::Crash => "CRASHED",
            Script::CancelWhileRunning | Script::CancelBeforeStart => "CANCELLED",
        }
    }

    fn cancelled(self) -> bool {
        matches!(self, Script::CancelWhileRunning | Script::CancelBeforeStart)
    }
}

fn dispatcher(app: &TestApp, name: &str, window: Duration) -> Worker {
    let mut w = app.another_worker(name);
    w.settings.polling.window = window;
    w.settings.polling.interval = Duration::from_secs(1);
    w.settings.polling.max_concurrency = 8;
    w.settings.reconcile.resume_after = Duration::from_secs(5);
    w.settings.reconcile.check_after = Duration::from_secs(5);
    w.settings.reconcile.cancel_grace = Duration::from_secs(10);
    w.settings.reconcile.max_requests = 1000;
    // Time runs fast here: every invocation looks for leftover jobs.
    w.settings.reconcile.sweep_interval = Duration::ZERO;
    w
}

async fn states(app: &TestApp, ids: &[FlowRunId]) -> HashMap<FlowRunId, Value> {
    let mut out = HashMap::new();
    for chunk in ids.chunks(100) {
        let runs = app
            .post(
                "/flow_runs/filter",
                json!({"flow_runs": {"id": {"any_": chunk}}, "limit": chunk.len()}),
            )
            .await;
        for run in runs.as_array().unwrap() {
            out.insert(run["id"].as_str().unwrap().parse().unwrap(), run.clone());
        }
    }
    out
}

/// Cancels each targeted run once it is running (or, for a container that never starts the
/// flow, once it is pending with infrastructure), until every target is cancelled or `stop`.
async fn canceller(
    app: &TestApp,
    targets: Vec<(FlowRunId, Script)>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> usize {
    let mut left = targets;
    let mut cancelled = 0;
    while !left.is_empty() && !*stop.borrow() {
        let current = states(app, &left.iter().map(|(id, _)| *id).collect::<Vec<_>>()).await;
        let mut still = Vec::new();
        for (id, script) in left {
            let run = &current[&id];
            let kind = run["state"]["type"].as_str().unwrap_or_default();
            let ready = match script {
                Script::CancelWhileRunning => kind == "RUNNING",
                _ => kind == "PENDING" && run["infrastructure_pid"].is_string(),
            };
            if ready {
                let r = app
                    .post(
                        &format!("/flow_runs/{id}/set_state"),
                        json!({"state": {"type": "CANCELLING"}, "force": false}),
                    )
                    .await;
                if r["status"] == "ACCEPT" {
                    cancelled += 1;
                    continue;
                }
            }
            still.push((id, script));
        }
        left = still;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    cancelled
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos() {
    let started = Instant::now();
    let faults = nf_emulator::Faults {
        seed: SEED,
        webhook_drop_pct: 30.0,
        webhook_duplicate_pct: 5.0,
        webhook_reorder_pct: 5.0,
        webhook_delay_ms: 200,
        api_5xx_pct: 2.0,
        api_429_pct: 2.0,
        api_5xx_after_pct: 1.0,
        retry_after_secs: 1,
        stall_run_starts_token: Some(DOOMED_TOKEN.into()),
        ..Default::default()
    };
    let emulator = nf_emulator::Config {
        api_tokens: vec![NF_TOKEN.into(), DOOMED_TOKEN.into()],
        faults,
        report_to_prefect: true,
        engine_poll: Duration::from_secs(3),
        rate_limit_per_hour: 1_000_000,
        ..Default::default()
    };
    let app = TestApp::with_emulator(emulator).await;
    let deployment = app.deployment(json!({})).await;

    let mut rng = fastrand::Rng::with_seed(SEED);
    let scripts: Vec<(Script, Value)> = (0..RUNS)
        .map(|i| {
            let script = match i % 20 {
                0..=9 => Script::Complete,
                10..=12 => Script::Fail,
                13..=15 => Script::Crash,
                16 | 17 => Script::CancelWhileRunning,
                _ => Script::CancelBeforeStart,
            };
            (script, script.variables(&mut rng))
        })
        .collect();
    // One at a time: the server validates each against the pool's schema (about a fifth of a
    // second of its CPU), so creating them in parallel only adds contention.
    let mut plan: Vec<(FlowRunId, Script)> = Vec::new();
    for (script, variables) in scripts {
        plan.push((app.flow_run(deployment, variables).await, script));
    }
    let ids: Vec<FlowRunId> = plan.iter().map(|(id, _)| *id).collect();
    let expected: HashMap<FlowRunId, Script> = plan.iter().copied().collect();
    println!(
        "chaos: {RUNS} flow runs created in {:.1}s",
        started.elapsed().as_secs_f64()
    );

    // Three dispatchers; the doomed one stalls on its first run start and is killed.
    let window = MAIN_WINDOW;
    let (a, b) = (
        dispatcher(&app, "dispatcher-a", window),
        dispatcher(&app, "dispatcher-b", window),
    );
    let mut doomed = dispatcher(&app, "dispatcher-doomed", window);
    doomed.credentials.northflank_token = prefect_nf::config::Secret::new(DOOMED_TOKEN);
    let doomed = Worker::new(doomed.settings.clone(), doomed.credentials.clone()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    let killed =
        tokio::spawn(async move { prefect_nf::scheduled::invoke(&doomed, deadline).await });
    let cancels = plan
        .iter()
        .filter(|(_, s)| s.cancelled())
        .copied()
        .collect();
    let dispatching = async {
        let (x, y) = tokio::join!(
            prefect_nf::scheduled::invoke(&a, deadline),
            prefect_nf::scheduled::invoke(&b, deadline)
        );
        (x.unwrap(), y.unwrap())
    };
    let killing = async {
        tokio::time::sleep(Duration::from_secs(4)).await;
        killed.abort();
    };
    let (stop_cancelling, stop) = tokio::sync::watch::channel(false);
    let work = async {
        let ((sa, sb), ()) = tokio::join!(dispatching, killing);
        println!(
            "chaos: dispatchers submitted {} + {} (claimed {} + {}), after {:.1}s",
            sa.dispatch.submitted,
            sb.dispatch.submitted,
            sa.dispatch.claimed,
            sb.dispatch.claimed,
            started.elapsed().as_secs_f64()
        );
        // At most three further invocations settle everything (invocations as deployed: a
        // poll window, reconciliation beside it).
        let finisher = dispatcher(&app, "dispatcher-a", FURTHER_WINDOW);
        let mut further = 0;
        let mut final_states = HashMap::new();
        for _ in 0..3 {
            let summary =
                prefect_nf::scheduled::invoke(&finisher, Instant::now() + FURTHER_WINDOW * 2)
                    .await
                    .unwrap();
            further += 1;
            println!(
                "chaos: further invocation {further}: submitted {}, {:?}",
                summary.dispatch.submitted, summary.reconcile
            );
            tokio::time::sleep(Duration::from_secs(2)).await;
            final_states = states(&app, &ids).await;
            let settled = final_states.values().all(|r| {
                matches!(
                    r["state"]["type"].as_str(),
                    Some("COMPLETED" | "FAILED" | "CRASHED" | "CANCELLED")
                )
            });
            if settled && app.jobs().is_empty() {
                break;
            }
        }
        let _ = stop_cancelling.send(true);
        (further, final_states)
    };
    let ((further, final_states), cancelled) = tokio::join!(work, canceller(&app, cancels, stop));
    println!("chaos: {cancelled} runs cancelled from Prefect mid-flight");

    let counters = app.emulator.counters();
    let duplicate_runs: u64 = counters
        .runs_started_by_job
        .values()
        .map(|n| n.saturating_sub(1))
        .sum();
    let leaked_jobs = app.jobs().len();
    let stuck_runs = final_states
        .values()
        .filter(|r| {
            matches!(
                r["state"]["type"].as_str(),
                Some("PENDING" | "RUNNING" | "CANCELLING" | "SCHEDULED")
            )
        })
        .count();
    let wrong: Vec<String> = final_states
        .iter()
        .filter(|(id, r)| r["state"]["type"].as_str() != Some(expected[*id].expected()))
        .map(|(id, r)| {
            format!(
                "{id}: {:?} is {} ({})",
                expected[id], r["state"]["type"], r["state"]["message"]
            )
        })
        .collect();
    let nf_requests: u64 = counters.requests.values().sum();
    println!(
        "chaos: {} further invocations; webhooks sent {} (dropped {}, duplicated {}, reordered {}); faults injected {}; {:.1}s in all",
        further,
        counters.webhooks_sent,
        counters.webhooks_dropped,
        counters.webhooks_duplicated,
        counters.webhooks_reordered,
        counters.faults_injected,
        started.elapsed().as_secs_f64()
    );
    for w in wrong.iter().take(10) {
        println!("chaos: wrong state: {w}");
    }
    println!(
        "chaos: runs={RUNS} duplicate_runs={duplicate_runs} leaked_jobs={leaked_jobs} stuck_runs={stuck_runs} wrong_state={} nf_requests_per_run={:.2}",
        wrong.len(),
        nf_requests as f64 / RUNS as f64
    );
    assert_eq!(
        (duplicate_runs, leaked_jobs, stuck_runs, wrong.len()),
        (0, 0, 0, 0)
    );
    assert!(
        counters.webhooks_dropped > 0 && counters.faults_injected > 0,
        "the faults really happened"
    );
}

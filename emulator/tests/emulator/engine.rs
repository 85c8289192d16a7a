//! Engine emulation against a tiny fake Prefect API that records `set_state` calls.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::{emulator, eventually, fast_config, job};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use nf_emulator::Config;
use serde_json::{Value, json};

const FLOW_RUN: &str = "0b9f6a2e-1c3d-4e5f-8a9b-0c1d2e3f4a5b";

#[derive(Default)]
struct Prefect {
    calls: Vec<(HeaderMap, Value)>,
    answers: VecDeque<Value>,
    state: Value,
}

#[derive(Clone)]
struct FakePrefect {
    url: String,
    inner: Arc<Mutex<Prefect>>,
}

impl FakePrefect {
    async fn start() -> Self {
        let inner = Arc::new(Mutex::new(Prefect {
            state: json!({"type": "PENDING", "name": "Pending", "state_details": {}}),
            ..Prefect::default()
        }));
        let app = Router::new()
            .route("/api/flow_runs/{id}/set_state", post(set_state))
            .route("/api/flow_runs/{id}", get(read_flow_run))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/api", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, inner }
    }

    fn proposals(&self) -> Vec<Value> {
        self.inner
            .lock()
            .unwrap()
            .calls
            .iter()
            .map(|(_, b)| b.clone())
            .collect()
    }

    fn types(&self) -> Vec<String> {
        self.proposals()
            .iter()
            .map(|b| b["state"]["type"].as_str().unwrap().to_owned())
            .collect()
    }

    fn header(&self, call: usize, name: &str) -> String {
        self.inner.lock().unwrap().calls[call].0[name]
            .to_str()
            .unwrap()
            .to_owned()
    }

    fn answer_next(&self, answer: Value) {
        self.inner.lock().unwrap().answers.push_back(answer);
    }

    fn set_current(&self, state: Value) {
        self.inner.lock().unwrap().state = state;
    }
}

async fn set_state(
    State(p): State<Arc<Mutex<Prefect>>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Json<Value> {
    assert_eq!(id, FLOW_RUN);
    let mut p = p.lock().unwrap();
    p.calls.push((headers, body.clone()));
    let answer = p
        .answers
        .pop_front()
        .unwrap_or_else(|| json!({"status": "ACCEPT", "details": {}}));
    if answer["status"] == "ACCEPT" {
        p.state = body["state"].clone();
    }
    Json(answer)
}

async fn read_flow_run(State(p): State<Arc<Mutex<Prefect>>>) -> Json<Value> {
    Json(json!({"id": FLOW_RUN, "state": p.lock().unwrap().state.clone()}))
}

fn engine_config() -> Config {
    Config {
        report_to_prefect: true,
        ..fast_config()
    }
}

fn prefect_job(name: &str, prefect: &FakePrefect, script: &str, auth: Value) -> Value {
    let mut body = job(name);
    let mut env = json!({"PREFECT_API_URL": prefect.url, "PREFECT__FLOW_RUN_ID": FLOW_RUN, "NF_EMULATOR_SCRIPT": script});
    for (k, v) in auth.as_object().unwrap() {
        env[k] = v.clone();
    }
    body["runtimeEnvironment"] = env;
    body
}

#[tokio::test]
async fn success_reports_running_then_completed() {
    let prefect = FakePrefect::start().await;
    let (em, api) = emulator(engine_config()).await;
    let job_id = api
        .create_job(prefect_job(
            "engine-ok",
            &prefect,
            "succeed:0.2",
            json!({"PREFECT_API_KEY": "pnu_key"}),
        ))
        .await;
    let run = api.start_run(&job_id, json!({})).await;
    assert_eq!(api.wait_concluded(&job_id, &run).await["status"], "SUCCESS");
    assert_eq!(prefect.types(), ["RUNNING", "COMPLETED"]);
    let first = &prefect.proposals()[0];
    assert_eq!(first["force"], false);
    assert_eq!(first["state"]["name"], "Running");
    assert_eq!(first["state"]["message"], Value::Null);
    assert_eq!(first["state"]["data"], Value::Null);
    assert_eq!(
        first["state"]["state_details"]["transition_id"]
            .as_str()
            .unwrap()
            .len(),
        36
    );
    assert_eq!(prefect.proposals()[1]["state"]["name"], "Completed");
    assert_eq!(prefect.header(0, "authorization"), "Bearer pnu_key");
    assert_eq!(prefect.header(0, "x-prefect-api-version"), "0.8.4");
    assert_eq!(em.counters().prefect_state_proposals, 2);
}

#[tokio::test]
async fn failure_and_crash() {
    let prefect = FakePrefect::start().await;
    let (_em, api) = emulator(engine_config()).await;
    let auth = json!({"PREFECT_API_AUTH_STRING": "user:pass"});
    let job_id = api
        .create_job(prefect_job(
            "engine-fail",
            &prefect,
            "fail:0.1",
            auth.clone(),
        ))
        .await;
    let run = api.start_run(&job_id, json!({})).await;
    assert_eq!(api.wait_concluded(&job_id, &run).await["status"], "FAILED");
    assert_eq!(prefect.types(), ["RUNNING", "FAILED"]);
    let failed = &prefect.proposals()[1]["state"];
    assert_eq!(
        (failed["name"].as_str(), failed["message"].as_str()),
        (Some("Failed"), Some("Flow run encountered an exception."))
    );
    assert_eq!(prefect.header(0, "authorization"), "Basic dXNlcjpwYXNz");

    let crash = api
        .create_job(prefect_job("engine-crash", &prefect, "crash:0.1", auth))
        .await;
    let run = api.start_run(&crash, json!({})).await;
    assert_eq!(api.wait_concluded(&crash, &run).await["status"], "FAILED");
    assert_eq!(
        prefect.types(),
        ["RUNNING", "FAILED", "RUNNING"],
        "a crash reports no final state"
    );
}

#[tokio::test]
async fn cancelling_is_answered_with_forced_cancelled() {
    let prefect = FakePrefect::start().await;
    let (_em, api) = emulator(engine_config()).await;
    let job_id = api
        .create_job(prefect_job("engine-cancel", &prefect, "hang", json!({})))
        .await;
    let run = api.start_run(&job_id, json!({})).await;
    eventually("RUNNING", Duration::from_secs(3), || async {
        prefect.types() == ["RUNNING"]
    })
    .await;
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(
        api.run(&job_id, &run).await["concluded"],
        false,
        "hang keeps running"
    );
    prefect.set_current(json!({"type": "CANCELLING", "name": "Cancelling", "state_details": {"transition_id": "old", "pause_reschedule": false, "deferred": true}}));
    assert_eq!(api.wait_concluded(&job_id, &run).await["status"], "FAILED");
    let cancelled = prefect.proposals()[1].clone();
    assert_eq!(cancelled["force"], true);
    assert_eq!(cancelled["state"]["type"], "CANCELLED");
    assert_eq!(cancelled["state"]["name"], "Cancelled");
    assert_eq!(
        cancelled["state"]["message"],
        "Flow run was cancelled successfully."
    );
    let details = &cancelled["state"]["state_details"];
    assert_eq!(
        details["deferred"], true,
        "details copied from the CANCELLING state"
    );
    assert_ne!(details["transition_id"], "old");
    assert_eq!(details["transition_id"].as_str().unwrap().len(), 36);
    assert!(
        !prefect.inner.lock().unwrap().calls[0]
            .0
            .contains_key("authorization"),
        "no credentials, no header"
    );
}

#[tokio::test]
async fn wait_is_retried_and_reject_is_logged() {
    let prefect = FakePrefect::start().await;
    prefect.answer_next(json!({"status": "WAIT", "details": {"delay_seconds": 0.1}}));
    prefect.answer_next(json!({"status": "ACCEPT", "details": {}}));
    prefect.answer_next(json!({"status": "REJECT", "details": {"reason": "not today"}}));
    let (_em, api) = emulator(engine_config()).await;
    let job_id = api
        .create_job(prefect_job(
            "engine-wait",
            &prefect,
            "succeed:0.1",
            json!({}),
        ))
        .await;
    let run = api.start_run(&job_id, json!({})).await;
    assert_eq!(
        api.wait_concluded(&job_id, &run).await["status"],
        "SUCCESS",
        "a REJECT does not stop the run"
    );
    assert_eq!(prefect.types(), ["RUNNING", "RUNNING", "COMPLETED"]);
    let logs = api.logs(&job_id, &run).await;
    assert!(
        logs.iter()
            .any(|l| l.contains("state COMPLETED answered REJECT: not today")),
        "{logs:?}"
    );
}

#[tokio::test]
async fn unreachable_prefect_is_logged_not_fatal() {
    let (_em, api) = emulator(engine_config()).await;
    let mut body = job("engine-down");
    body["runtimeEnvironment"] = json!({"PREFECT_API_URL": "http://127.0.0.1:9/api", "PREFECT__FLOW_RUN_ID": FLOW_RUN, "NF_EMULATOR_SCRIPT": "succeed:0.1"});
    let job_id = api.create_job(body).await;
    let run = api.start_run(&job_id, json!({})).await;
    assert_eq!(api.wait_concluded(&job_id, &run).await["status"], "SUCCESS");
    let logs = api.logs(&job_id, &run).await;
    assert!(
        logs.iter().any(|l| l.contains("proposing RUNNING failed")),
        "{logs:?}"
    );

    let bare = api
        .create_job(crate::common::scripted_job("engine-no-env", "succeed:0"))
        .await;
    let run = api.start_run(&bare, json!({})).await;
    api.wait_concluded(&bare, &run).await;
    assert!(
        api.logs(&bare, &run)
            .await
            .iter()
            .any(|l| l.contains("engine emulation skipped"))
    );
}

#[tokio::test]
async fn no_reporting_unless_enabled() {
    let prefect = FakePrefect::start().await;
    let (_em, api) = emulator(fast_config()).await;
    let job_id = api
        .create_job(prefect_job(
            "engine-off",
            &prefect,
            "succeed:0.1",
            json!({}),
        ))
        .await;
    let run = api.start_run(&job_id, json!({})).await;
    api.wait_concluded(&job_id, &run).await;
    assert!(prefect.proposals().is_empty());
}

/// `NF_EMULATOR_ENGINE=off`: a container that never gets to start the flow says nothing to
/// Prefect, even with engine emulation on.
#[tokio::test]
async fn the_engine_can_be_switched_off_per_run() {
    let prefect = FakePrefect::start().await;
    let (em, api) = emulator(engine_config()).await;
    let mut body = prefect_job("engine-off", &prefect, "succeed:0.1", json!({}));
    body["runtimeEnvironment"]["NF_EMULATOR_ENGINE"] = json!("off");
    let job_id = api.create_job(body).await;
    let run = api.start_run(&job_id, json!({})).await;
    assert_eq!(api.wait_concluded(&job_id, &run).await["status"], "SUCCESS");
    assert!(prefect.types().is_empty(), "{:?}", prefect.types());
    assert_eq!(em.counters().prefect_state_proposals, 0);
}

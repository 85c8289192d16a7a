//! Scripted run lifecycle: success, failure, crash, hang + abort, deadline, job delete.

use std::time::Duration;

use crate::common::{PROJECT, emulator, fast_config, job, scripted_job};
use nf_emulator::{AbortConcluded, Config, ContainerStatus, Outcome, RunEnd};
use serde_json::{Value, json};

fn assert_run_shape(r: &Value) {
    for key in [
        "id",
        "runName",
        "status",
        "active",
        "succeeded",
        "failed",
        "completions",
        "concluded",
        "backoffLimit",
        "startedAt",
    ] {
        assert!(r.get(key).is_some(), "run lacks {key}: {r}");
    }
    let started = r["startedAt"].as_str().unwrap();
    assert!(
        started.len() == 20 && started.ends_with('Z'),
        "second precision: {started}"
    );
}

#[tokio::test]
async fn succeed_script_concludes_success() {
    let (em, api) = emulator(fast_config()).await;
    let job_id = api
        .create_job(scripted_job("succeeds", "succeed:0.2"))
        .await;
    let a = api
        .post(
            &format!("/v1/projects/{PROJECT}/jobs/{job_id}/runs"),
            json!({}),
        )
        .await;
    let data = &a.body["data"];
    let run = data["id"].as_str().unwrap().to_owned();
    assert_eq!(run.len(), 36);
    let run_name = data["runName"].as_str().unwrap();
    let suffix = run_name.strip_prefix("succeeds-").unwrap();
    assert!(
        suffix.len() == 24 && suffix.chars().all(|c| c.is_ascii_hexdigit()),
        "{run_name}"
    );

    let running = api.run(&job_id, &run).await;
    assert_run_shape(&running);
    assert_eq!(running["status"], "RUNNING");
    assert_eq!(
        (running["active"].as_u64(), running["concluded"].as_bool()),
        (Some(1), Some(false))
    );
    assert!(
        running.get("concludedAt").is_none(),
        "omitted until concluded"
    );

    let done = api.wait_concluded(&job_id, &run).await;
    assert_eq!(done["status"], "SUCCESS");
    assert_eq!(
        (
            done["active"].as_u64(),
            done["succeeded"].as_u64(),
            done["failed"].as_u64(),
            done["completions"].as_u64()
        ),
        (Some(0), Some(1), Some(0), Some(1))
    );
    assert!(done["concludedAt"].as_str().unwrap().ends_with('Z'));
    let logs = api.logs(&job_id, &run).await;
    assert!(
        logs.iter()
            .any(|l| l == "stdout F Flow run finished successfully."),
        "{logs:?}"
    );
    let log_entry = &api
        .get(&format!(
            "/v1/projects/{PROJECT}/jobs/{job_id}/logs?queryType=range&runId={run}"
        ))
        .await
        .body["data"][0];
    assert_eq!(log_entry["containerId"], format!("{run_name}-main"));
    assert!(log_entry["ts"].as_str().unwrap().ends_with('Z'));

    let containers = api
        .get(&format!(
            "/v1/projects/{PROJECT}/jobs/{job_id}/containers?runId={run}"
        ))
        .await;
    assert_eq!(containers.body["data"]["runId"], run.as_str());
    assert_eq!(
        containers.body["data"]["containers"][0]["status"],
        "TASK_FINISHED"
    );
    assert!(containers.body["data"]["containers"][0]["createdAt"].is_i64());
    assert_eq!(containers.body["pagination"]["count"], 1);
    let snapshot = em.snapshot();
    assert_eq!(snapshot.runs[0].end, Some(RunEnd::Success));
    assert_eq!(em.counters().runs_succeeded, 1);
}

#[tokio::test]
async fn fail_and_crash_scripts_conclude_failed() {
    let (em, api) = emulator(fast_config()).await;
    for (name, script, line) in [
        (
            "fails",
            "fail:0.1",
            "stderr F Flow run encountered an exception.",
        ),
        (
            "crashes",
            "crash:0.1",
            "stderr F [nf-emulator] scripted crash: container exited with code 137",
        ),
        (
            "bad-script",
            "explode",
            "stderr F [nf-emulator] invalid NF_EMULATOR_SCRIPT",
        ),
    ] {
        let job_id = api.create_job(scripted_job(name, script)).await;
        let run = api.start_run(&job_id, json!({})).await;
        let done = api.wait_concluded(&job_id, &run).await;
        assert_eq!(done["status"], "FAILED", "{name}");
        assert_eq!(
            (
                done["failed"].as_u64(),
                done["succeeded"].as_u64(),
                done["completions"].as_u64()
            ),
            (Some(1), Some(0), Some(1))
        );
        let logs = api.logs(&job_id, &run).await;
        assert!(logs.iter().any(|l| l.starts_with(line)), "{name}: {logs:?}");
    }
    assert!(
        em.snapshot()
            .runs
            .iter()
            .all(|r| r.container_status == ContainerStatus::TaskFailed)
    );
}

#[tokio::test]
async fn run_environment_overrides_the_job() {
    let (em, api) = emulator(fast_config()).await;
    let mut body = scripted_job("env-merge", "fail:5");
    body["runtimeEnvironment"]["KEEP"] = json!("job");
    body["runtimeEnvironment"]["OVERRIDE"] = json!("job");
    let job_id = api.create_job(body).await;
    let run = api
        .start_run(
            &job_id,
            json!({"runtimeEnvironment": {"OVERRIDE": "run", "NF_EMULATOR_SCRIPT": "succeed:0.1"},
                   "deployment": {"docker": {"configType": "customCommand", "customCommand": "echo override"}}}),
        )
        .await;
    assert_eq!(api.wait_concluded(&job_id, &run).await["status"], "SUCCESS");
    let record = &em.snapshot().runs[0];
    assert_eq!(record.environment["KEEP"], "job");
    assert_eq!(record.environment["OVERRIDE"], "run");
    assert_eq!(record.command.as_deref(), Some("echo override"));
}

#[tokio::test]
async fn hang_then_abort() {
    let (em, api) = emulator(fast_config()).await;
    let job_id = api.create_job(scripted_job("hangs", "hang")).await;
    let run = api.start_run(&job_id, json!({})).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(api.run(&job_id, &run).await["concluded"], false);
    let path = format!("/v1/projects/{PROJECT}/jobs/{job_id}/runs/{run}");
    let a = api.delete(&path).await;
    assert_eq!((a.status, a.body.clone()), (200, json!({"data": {}})));
    let r = api.run(&job_id, &run).await;
    assert_eq!(
        (
            r["status"].as_str(),
            r["concluded"].as_bool(),
            r["failed"].as_u64()
        ),
        (Some("FAILED"), Some(true), Some(1))
    );
    assert!(r["concludedAt"].is_string());
    // A concluded run cannot be aborted again (default knob).
    let again = api.delete(&path).await;
    assert_eq!(again.status, 409);
    assert_eq!(again.message(), "Job run has already concluded");
    let snapshot = em.snapshot();
    assert_eq!(snapshot.runs[0].end, Some(RunEnd::Abort));
    assert_eq!(
        snapshot.runs[0].container_status,
        ContainerStatus::TaskKilled
    );
    assert_eq!(em.counters().runs_aborted, 1);
    assert_eq!(
        api.delete(&format!("/v1/projects/{PROJECT}/jobs/{job_id}/runs/nope"))
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn abort_of_concluded_run_can_be_a_noop() {
    let config = Config {
        abort_concluded: AbortConcluded::Noop,
        concluded_at_null: true,
        ..fast_config()
    };
    let (_em, api) = emulator(config).await;
    let job_id = api
        .create_job(scripted_job("noop-abort", "succeed:0.05"))
        .await;
    let run = api.start_run(&job_id, json!({})).await;
    let running = api.run(&job_id, &run).await;
    assert!(
        running.get("concludedAt").is_some_and(Value::is_null),
        "knob emits null: {running}"
    );
    api.wait_concluded(&job_id, &run).await;
    let a = api
        .delete(&format!("/v1/projects/{PROJECT}/jobs/{job_id}/runs/{run}"))
        .await;
    assert_eq!(a.status, 200);
    assert_eq!(
        api.run(&job_id, &run).await["status"],
        "SUCCESS",
        "nothing changed"
    );
}

#[tokio::test]
async fn deadline_terminates_the_run() {
    let (em, api) = emulator(fast_config()).await;
    let mut body = scripted_job("deadline", "hang");
    body["settings"]["activeDeadlineSeconds"] = json!(1);
    body["settings"]["backoffLimit"] = json!(2);
    let job_id = api.create_job(body).await;
    let run = api.start_run(&job_id, json!({})).await;
    assert_eq!(api.run(&job_id, &run).await["backoffLimit"], 2);
    let done = api.wait_concluded(&job_id, &run).await;
    assert_eq!(done["status"], "FAILED");
    let record = &em.snapshot().runs[0];
    assert_eq!(record.end, Some(RunEnd::Deadline));
    assert!(
        api.logs(&job_id, &run)
            .await
            .iter()
            .any(|l| l.contains("activeDeadlineSeconds (1) exceeded"))
    );
    assert_eq!(em.counters().runs_terminated, 1);
}

#[tokio::test]
async fn deleting_a_job_kills_its_runs() {
    let (em, api) = emulator(fast_config()).await;
    let job_id = api.create_job(scripted_job("delete-running", "hang")).await;
    let run = api.start_run(&job_id, json!({})).await;
    let done = api
        .start_run(
            &job_id,
            json!({"runtimeEnvironment": {"NF_EMULATOR_SCRIPT": "succeed:0"}}),
        )
        .await;
    api.wait_concluded(&job_id, &done).await;
    assert_eq!(
        api.delete(&format!("/v1/projects/{PROJECT}/jobs/{job_id}"))
            .await
            .status,
        200
    );
    assert_eq!(
        api.get(&format!("/v1/projects/{PROJECT}/jobs/{job_id}/runs/{run}"))
            .await
            .status,
        404
    );
    assert!(em.snapshot().runs.is_empty(), "run history is gone");
    let c = em.counters();
    assert_eq!((c.runs_terminated, c.jobs_deleted), (1, 1));
}

#[tokio::test]
async fn list_runs_newest_first_with_pagination() {
    let (_em, api) = emulator(Config {
        default_script: "hang".into(),
        ..fast_config()
    })
    .await;
    let job_id = api.create_job(job("many-runs")).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(api.start_run(&job_id, json!({})).await);
    }
    let path = format!("/v1/projects/{PROJECT}/jobs/{job_id}/runs");
    let first = api.get(&format!("{path}?per_page=2")).await;
    let runs: Vec<&str> = first.body["data"]["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(runs, [ids[2].as_str(), ids[1].as_str()]);
    let cursor = first.body["pagination"]["cursor"].as_str().unwrap();
    let second = api.get(&format!("{path}?per_page=2&cursor={cursor}")).await;
    assert_eq!(second.body["data"]["runs"][0]["id"], ids[0].as_str());
    assert_eq!(
        second.body["pagination"],
        json!({"hasNextPage": false, "count": 1})
    );
    assert_eq!(
        api.get(&format!("/v1/projects/{PROJECT}/jobs/missing/runs"))
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn run_body_is_validated() {
    let (em, api) = emulator(fast_config()).await;
    let job_id = api.create_job(job("validated-runs")).await;
    let path = format!("/v1/projects/{PROJECT}/jobs/{job_id}/runs");
    for (body, field) in [
        (
            json!({"runtimeEnvironment": {"A": 1}}),
            "runtimeEnvironment.A",
        ),
        (
            json!({"billing": {"deploymentPlan": "bad plan"}}),
            "billing.deploymentPlan",
        ),
        (
            json!({"deployment": {"external": {"imagePath": "prefecthq/prefect"}}}),
            "deployment.external.imagePath",
        ),
        (json!({"deployment": {"vcs": {}}}), "deployment.vcs"),
        (
            json!({"deployment": {"docker": {"configType": "customCommand"}}}),
            "deployment.docker.customCommand",
        ),
        (json!([]), "(body)"),
    ] {
        let a = api.post(&path, body.clone()).await;
        assert_eq!(a.status, 400, "{body}");
        assert!(a.message().contains(field), "{field}: {}", a.message());
    }
    // An empty body is a plain run.
    let resp = reqwest::Client::new()
        .post(format!("{}{path}", api.base))
        .bearer_auth(crate::common::TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(em.counters().runs_started, 1);
    assert_eq!(
        api.post(
            &format!("/v1/projects/{PROJECT}/jobs/missing/runs"),
            json!({})
        )
        .await
        .status,
        404
    );
}

#[tokio::test]
async fn finish_run_hook_and_logs_query() {
    let (em, api) = emulator(Config {
        default_script: "hang".into(),
        ..fast_config()
    })
    .await;
    let job_id = api.create_job(job("hooked")).await;
    let run = api.start_run(&job_id, json!({})).await;
    em.finish_run(&run, Outcome::Failure);
    let r = api.run(&job_id, &run).await;
    assert_eq!(r["status"], "FAILED");
    em.finish_run(&run, Outcome::Success); // ignored: already concluded
    assert_eq!(api.run(&job_id, &run).await["status"], "FAILED");
    let base = format!("/v1/projects/{PROJECT}/jobs/{job_id}/logs?queryType=range&runId={run}");
    let all = api.logs(&job_id, &run).await;
    let last = api
        .get(&format!("{base}&lineLimit=1&direction=backward"))
        .await;
    assert_eq!(last.body["data"].as_array().unwrap().len(), 1);
    assert_eq!(last.body["data"][0]["log"], all.last().unwrap().as_str());
    assert_eq!(
        api.get(&format!("{base}&direction=sideways")).await.status,
        400
    );
}

//! Our Northflank exchanges against the official client's types (`scripts/nf-schema`): the
//! checker fails on a bad body, naming the request, the field path and the rule; and a recorded
//! session of our client (a rendered job and its run, logs, listings, aborts, the notification
//! integration registered twice) conforms, its requests and the emulator's answers alike.
//! `scripts/test` runs the same checker over every exchange of the whole test run.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use prefect_nf::config::{PrefectAuth, Secret};
use prefect_nf::northflank::NorthflankClient;
use prefect_nf::render::dry_run::Offline;
use prefect_nf::render::{resolve_configuration, to_northflank};
use prefect_nf::setup::integration::{self, RegisterAction, Registration};
use serde_json::{Map, Value, json};

use crate::helpers;

fn recording(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "pfnf-nf-schema-{name}-{}.jsonl",
        uuid::Uuid::new_v4().simple()
    ))
}

async fn check(recordings: &[&Path]) -> Output {
    let repo = helpers::repo();
    tokio::process::Command::new(repo.join(".venv/bin/python"))
        .arg(repo.join("scripts/nf-schema/check.py"))
        .args(recordings)
        .output()
        .await
        .expect("the venv's python runs the checker")
}

fn exchange(method: &str, path: &str, endpoint: &str, agent: &str, body: Value) -> Value {
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    json!({"method": method, "path": path, "query": (!query.is_empty()).then_some(query),
           "endpoint": endpoint, "userAgent": agent, "status": 200, "body": body,
           "response": {"data": {}}})
}

const OURS: &str = "prefect-nf/0.1.0";
const PUT_JOB: &str = "PUT /v1/projects/{projectId}/jobs";
const UPDATE: &str = "POST /v1/integrations/notifications/{notificationId}";

fn write(path: &Path, lines: &[Value]) {
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(path, text).unwrap();
}

#[tokio::test]
async fn the_checker_names_the_request_path_and_rule_of_each_bad_field() {
    let bad_job = json!({"name": "pf-x", "description": null,
        "billing": {"deploymentPlan": "nf-compute-20"},
        "deployment": {"external": {"imagePath": 5}, "docker": {"configType": "default"}},
        "settings": {"backofflimit": 1}});
    let mut put = exchange("PUT", "/v1/projects/p/jobs", PUT_JOB, OURS, bad_job.clone());
    put["response"] = json!({"data": {"name": "pf-x", "billing": {"deploymentPlan": "nf-compute-20"},
        "jobType": "manual", "id": "pf-x", "appId": "/t/p/pf-x", "status": {}}});
    let mut logs = exchange(
        "GET",
        "/v1/projects/p/jobs/j/logs?runId=r",
        "GET /v1/projects/{projectId}/jobs/{jobId}/logs",
        OURS,
        Value::Null,
    );
    logs["response"] = json!({"data": []});
    let lines = [
        put,
        logs,
        exchange(
            "POST",
            "/v1/integrations/notifications/x",
            UPDATE,
            OURS,
            json!({"type": "RAW_WEBHOOK", "secret": "s"}),
        ),
        // Someone else's request (the emulator's own tests send bad bodies on purpose).
        exchange("PUT", "/v1/projects/p/jobs", PUT_JOB, "reqwest", bad_job),
    ];
    let file = recording("bad");
    write(&file, &lines);
    let out = check(&[&file]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let at = |line: usize| format!("{}:{line}: ", file.display());
    let expected = [
        format!(
            "{}PUT /v1/projects/p/jobs: request PutJobData: description: null is not allowed (must be string; omit the field instead)",
            at(1)
        ),
        format!(
            "{}PUT /v1/projects/p/jobs: request PutJobData: deployment.external.imagePath: 5 is not of type 'string'",
            at(1)
        ),
        format!(
            "{}PUT /v1/projects/p/jobs: request PutJobData: settings.backofflimit: unknown field (the type allows: activeDeadlineSeconds, backoffLimit, cron, runOnSourceChange)",
            at(1)
        ),
        format!(
            "{}PUT /v1/projects/p/jobs: request PutJobData: settings.backoffLimit: is required",
            at(1)
        ),
        format!(
            "{}PUT /v1/projects/p/jobs: answer PutJobResult: cluster: is required",
            at(1)
        ),
        format!(
            "{}GET /v1/projects/p/jobs/j/logs: query queryType: must be sent once as 'range' (got nothing)",
            at(2)
        ),
        format!(
            "{}POST /v1/integrations/notifications/x: request UpdateNotificationData: type: unknown field (the type allows: events, name, projects, restricted, restrictions, secret, webhook)",
            at(3)
        ),
    ];
    for line in &expected {
        assert!(
            stderr.lines().any(|l| l == line),
            "missing {line}\nin:\n{stderr}"
        );
    }
    assert!(
        !stderr.contains(&at(4)),
        "only our client's exchanges are checked: {stderr}"
    );
    assert!(
        stderr.contains(
            "nf-schema: 7 problem(s) in 3 exchanges checked against @northflank/js-client 0.9.5"
        ),
        "{stderr}"
    );

    let good = json!({"name": "pf-x", "billing": {"deploymentPlan": "nf-compute-20"},
        "deployment": {"external": {"imagePath": "a:b"}}, "settings": {"backoffLimit": 0, "activeDeadlineSeconds": null}});
    let mut good = exchange("PUT", "/v1/projects/p/jobs", PUT_JOB, OURS, good);
    good["response"] = json!({"data": {"name": "pf-x", "billing": {"deploymentPlan": "nf-compute-20"},
        "jobType": "manual", "id": "pf-x", "appId": "/t/p/pf-x", "status": {},
        "cluster": {"id": "c", "name": "c"}}});
    write(&file, &[good]);
    let out = check(&[&file]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    write(&file, &[]);
    let out = check(&[&file]).await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "an empty recording means nothing was recorded"
    );
    let _ = std::fs::remove_file(&file);
}

/// The job and run bodies dispatch sends for a pool's defaults.
async fn rendered() -> prefect_nf::render::Rendered {
    let template = prefect_nf::setup::pool::template(Some("proj"));
    let variables =
        json!({"env": {"A": "1"}, "runtime_environment": {"NF_EMULATOR_SCRIPT": "hang"}});
    let config = resolve_configuration(
        &template,
        variables.as_object().unwrap(),
        &Map::new(),
        &Offline,
        &|_: &str| None,
    )
    .await
    .unwrap();
    let facts = helpers::run_facts("nightly", PrefectAuth::ApiKey(Secret::new("pnu_x")));
    to_northflank(&config, &facts).unwrap()
}

#[tokio::test]
async fn a_recorded_session_of_our_client_conforms_to_the_official_types() {
    let file = recording("session");
    let emulator = nf_emulator::start(nf_emulator::Config {
        record: Some(file.clone()),
        ..Default::default()
    })
    .await
    .unwrap();
    let nf = NorthflankClient::new(
        &emulator.base_url(),
        Secret::new(helpers::NF_TOKEN),
        Duration::from_millis(50),
    )
    .unwrap();
    let r = rendered().await;
    let (project, job) = (r.project_id.as_str(), r.job_name.to_string());
    assert_eq!(nf.put_job(project, &r.create_job).await.unwrap().id, job);
    let run = nf.start_run(project, &job, &r.start_run).await.unwrap();
    assert!(
        !nf.get_run(project, &job, &run.id)
            .await
            .unwrap()
            .unwrap()
            .concluded
    );
    assert_eq!(nf.list_runs(project, &job).await.unwrap().len(), 1);
    nf.run_logs(project, &job, &run.id, 50).await.unwrap();
    assert!(nf.get_job(project, &job).await.unwrap().is_some());
    assert_eq!(nf.list_jobs(project).await.unwrap().len(), 1);
    nf.abort_run(project, &job, &run.id).await.unwrap();
    nf.abort_run(project, &job, &run.id).await.unwrap();
    assert!(nf.delete_job(project, &job).await.unwrap());
    assert!(nf.get_run(project, &job, &run.id).await.unwrap().is_none());

    // Registering twice: created, then updated (a token rotation), against the strict emulator.
    let registration = Registration {
        name: "prefect-nf",
        url: "https://example.com/northflank/webhook",
        projects: &[project.to_string()],
        token: "rotated",
    };
    for expected in [RegisterAction::Created, RegisterAction::Updated] {
        let done = integration::register(&nf, &registration).await.unwrap();
        assert_eq!(done, expected);
    }
    let status = nf
        .get_notification_integration("prefect-nf")
        .await
        .unwrap()
        .unwrap()["status"]
        .clone();
    assert_eq!(
        status,
        json!({"disabled": false, "numberOfFailedRequests": 0})
    );
    let updates: Vec<Value> = emulator
        .requests()
        .into_iter()
        .filter(|q| q.endpoint == UPDATE)
        .map(|q| q.body)
        .collect();
    assert_eq!(updates.len(), 1);
    assert!(updates[0].get("type").is_none(), "{}", updates[0]);
    emulator.shutdown().await;

    let out = check(&[&file]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("nf-schema: 17 exchanges of our client conform"),
        "{stdout}"
    );
    let _ = std::fs::remove_file(&file);
}

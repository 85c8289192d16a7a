//! Migrating from prefect-northflank 1.0.1 on the real Prefect server: a pool that still has the
//! Python worker's template runs its flow runs as the Python worker did, says in the run's logs
//! which of our variables its template drops, and `work-pool update` fixes it.

use crate::helpers::{TestApp, python_worker_template};

use std::time::Duration;

use prefect_nf::setup::pool::{self, PoolAction};
use serde_json::{Value, json};

/// The create-job body the emulator received for the flow run named `name`.
fn job_body(app: &TestApp, run: prefect_nf::ids::FlowRunId) -> Value {
    app.bodies("PUT", "/jobs")
        .into_iter()
        .find(|b| b["name"] == format!("pf-{run}"))
        .unwrap_or_else(|| panic!("no job was created for {run}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_worker_pool_runs_warns_and_is_fixed_by_work_pool_update() {
    let app = TestApp::spawn().await;
    let (status, text) = app
        .raw(
            reqwest::Method::PATCH,
            &format!("/work_pools/{}", app.pool),
            Some(&json!({"base_job_template": python_worker_template(&app.project)})),
        )
        .await;
    assert_eq!(status, 204, "{text}");
    let variables = json!({
        "infrastructure_architecture": "X86",
        "name": "{{ ctx.flow.name }}-{{ ctx.flow_run.name }}",
        "build_configuration_docker_credentials": ["registry-creds"],
        "env": {"NF_EMULATOR_SCRIPT": "succeed:0.1"},
    });
    let deployment = app.deployment(variables).await;

    let before = app.flow_run(deployment, json!({})).await;
    assert_eq!(app.dispatch_once().await.dispatch.submitted, 1);
    let job = job_body(&app, before);
    assert_eq!(job["infrastructure"], json!({"architecture": "x86"}));
    assert!(job.get("buildConfiguration").is_none());
    let run_name = app.flow_run_json(before).await["name"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        job["description"]
            .as_str()
            .unwrap()
            .starts_with(&format!("Prefect flow run 'hello-northflank-{run_name}'")),
        "{}",
        job["description"]
    );
    let logs = app.logs(before).await;
    assert!(
        logs.iter().any(|l| l.contains(
            "job variable `build_configuration_docker_credentials` is set but was ignored"
        ) && l.contains("prefect-nf work-pool update")),
        "{logs:#?}"
    );

    assert_eq!(
        pool::update(&app.worker.prefect, &app.pool, None)
            .await
            .unwrap(),
        PoolAction::Updated
    );
    let template = app.get(&format!("/work_pools/{}", app.pool)).await["base_job_template"].clone();
    assert!(prefect_nf::render::gaps::missing(&template).is_empty());
    assert_eq!(
        template["variables"]["properties"]["project_id"]["default"],
        app.project.as_str(),
        "the pool's defaults are kept"
    );
    let after = app.flow_run(deployment, json!({})).await;
    assert_eq!(app.dispatch_once().await.dispatch.submitted, 1);
    assert_eq!(
        job_body(&app, after)["buildConfiguration"],
        json!({"dockerCredentials": ["registry-creds"]})
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs = app.logs(after).await;
    assert!(!logs.iter().any(|l| l.contains("was ignored")), "{logs:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_accepts_the_python_workers_architecture_spellings() {
    let app = TestApp::spawn().await;
    let flow = app.post("/flows/", json!({"name": "arch-check"})).await;
    let create = |arch: &str| {
        json!({
            "name": format!("arch-{}", uuid::Uuid::new_v4().simple()),
            "flow_id": flow["id"],
            "work_pool_name": app.pool,
            "job_variables": {"infrastructure_architecture": arch},
        })
    };
    for arch in ["X86", "ARM", "arm"] {
        let (status, text) = app
            .raw(reqwest::Method::POST, "/deployments/", Some(&create(arch)))
            .await;
        assert!(status.is_success(), "{arch}: {status} {text}");
    }
    let (status, text) = app
        .raw(
            reqwest::Method::POST,
            "/deployments/",
            Some(&create("x86_64")),
        )
        .await;
    assert_eq!(status, 422, "x86_64 is refused at deployment time: {text}");
}

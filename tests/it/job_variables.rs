//! Job variables on the real Prefect server: the `northflank` block type, blocks and variables
//! resolved through the API, and the Python worker's README examples deployed unchanged.

use crate::helpers;

use std::time::Duration;

use crate::helpers::{NF_TOKEN, Options, TestApp, block, repo, schema_of};
use prefect_nf::setup::pool::{self, BlockAction};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_pool_create_registers_the_northflank_block_type_once() {
    let app = TestApp::spawn().await;
    let prefect = &app.worker.prefect;
    let name = format!("created-{}", uuid::Uuid::new_v4().simple());
    assert_eq!(
        pool::create(prefect, &name, Some("p"), Some("made by a test"))
            .await
            .unwrap(),
        pool::PoolAction::Created
    );
    assert_eq!(
        pool::create(prefect, &name, Some("other"), None)
            .await
            .unwrap(),
        pool::PoolAction::AlreadyExists
    );
    let (_, schema) = schema_of(&app, "northflank").await;
    assert_eq!(
        pool::ensure_block_type(prefect).await.unwrap(),
        BlockAction::AlreadyRegistered
    );
    assert_eq!(
        schema_of(&app, "northflank").await.1,
        schema,
        "no second schema"
    );
    let fields = app.get(&format!("/block_schemas/{schema}")).await["fields"].clone();
    assert_eq!(fields["secret_fields"], json!(["api_token"]));
    // What the UI does with it: a credentials block whose token is stored as a secret.
    let id = block(
        &app,
        "northflank",
        &format!("ui-{}", uuid::Uuid::new_v4().simple()),
        json!({"api_token": "t0k3n"}),
    )
    .await;
    assert_eq!(
        app.get(&format!("/block_documents/{id}")).await["data"]["api_token"],
        "********"
    );

    // update rewrites the template idempotently and keeps the pool's project.
    assert_eq!(
        pool::update(prefect, &name, None).await.unwrap(),
        pool::PoolAction::Unchanged
    );
    assert_eq!(
        pool::update(prefect, &name, Some("p2")).await.unwrap(),
        pool::PoolAction::Updated
    );
    assert_eq!(
        pool::update(prefect, &name, None).await.unwrap(),
        pool::PoolAction::Unchanged
    );
    let stored = app.get(&format!("/work_pools/{name}")).await;
    assert_eq!(
        stored["base_job_template"]["variables"]["properties"]["project_id"]["default"],
        "p2"
    );
}

/// Blocks (by `$ref` and by name, secrets included) and variables are resolved through the
/// API at submission; the run's own credentials reach another Northflank account, and the
/// step that settles the run finds them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn blocks_and_variables_resolve_through_the_real_api() {
    let app = TestApp::spawn().await;
    let other = nf_emulator::start(nf_emulator::Config {
        api_tokens: vec!["block-token".into()],
        report_to_prefect: true,
        ..Default::default()
    })
    .await
    .unwrap();
    helpers::register_webhook(
        &app.http,
        &other.base_url(),
        "block-token",
        &app.project,
        &app.webhook_url,
    )
    .await;
    pool::ensure_block_type(&app.worker.prefect).await.unwrap();
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let creds = block(
        &app,
        "northflank",
        &format!("creds-{suffix}"),
        json!({"api_token": "block-token", "base_url": other.base_url()}),
    )
    .await;
    let secret = format!("api-secret-{suffix}");
    block(&app, "secret", &secret, json!({"value": "s3cr3t-value"})).await;
    let (image, plan) = (format!("nf_image_{suffix}"), format!("nf_plan_{suffix}"));
    app.post(
        "/variables/",
        json!({"name": image, "value": "prefecthq/prefect:3-python3.11"}),
    )
    .await;
    app.post(
        "/variables/",
        json!({"name": plan, "value": "nf-compute-50"}),
    )
    .await;

    let deployment = app
        .deployment(json!({
            "credentials": {"$ref": {"block_document_id": creds}},
            "deployment_external_image_path": format!("{{{{ prefect.variables.{image} }}}}"),
            "billing_deployment_plan": format!("{{{{ prefect.variables.{plan} }}}}"),
            "env": {"API_SECRET": format!("{{{{ prefect.blocks.secret.{secret} }}}}"), "LABEL": format!("plan-{{{{ prefect.variables.{plan} }}}}")},
        }))
        .await;
    let id = app.scripted_run(deployment, "succeed:0.2").await;
    assert_eq!(app.dispatch_once().await.dispatch.submitted, 1);

    let job = other
        .requests()
        .into_iter()
        .find(|r| r.method == "PUT")
        .expect("the job went to the other account")
        .body;
    assert_eq!(
        job["deployment"]["external"]["imagePath"],
        "prefecthq/prefect:3-python3.11"
    );
    assert_eq!(job["billing"]["deploymentPlan"], "nf-compute-50");
    assert_eq!(job["runtimeEnvironment"]["API_SECRET"], "s3cr3t-value");
    assert_eq!(job["runtimeEnvironment"]["LABEL"], "plan-nf-compute-50");
    let own: Vec<String> = app
        .emulator
        .requests()
        .iter()
        .filter(|r| r.path.contains("/jobs") && r.method != "GET")
        .map(|r| format!("{} {} {}", r.method, r.path, r.status))
        .collect();
    assert!(
        own.is_empty(),
        "nothing was written to the worker's own account: {own:?}"
    );

    let run = app
        .wait_for_state(id, &["COMPLETED"], Duration::from_secs(30))
        .await;
    assert!(
        run["infrastructure_pid"]
            .as_str()
            .unwrap()
            .ends_with(":own-token")
    );
    let name = format!("pf-{id}");
    let deleted = async {
        while other.snapshot().jobs.iter().any(|j| j.id == name) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(15), deleted)
        .await
        .expect("the job is deleted with the run's own credentials");
}

/// A pool default set the way the UI sets it (`$ref` to a block) works too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credentials_default_on_the_pool_is_used() {
    let other = nf_emulator::start(nf_emulator::Config {
        api_tokens: vec!["pool-token".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let probe = TestApp::spawn().await;
    pool::ensure_block_type(&probe.worker.prefect)
        .await
        .unwrap();
    let name = format!("pool-creds-{}", uuid::Uuid::new_v4().simple());
    let creds = block(
        &probe,
        "northflank",
        &name,
        json!({"api_token": "pool-token", "base_url": other.base_url()}),
    )
    .await;
    let app = TestApp::spawn_with(Options {
        pool_variables: json!({"credentials": {"$ref": {"block_document_id": creds}}}),
        ..Default::default()
    })
    .await;
    let deployment = app.deployment(json!({})).await;
    let id = app.scripted_run(deployment, "hang").await;
    let summary = app.dispatch_once().await;
    assert_eq!(
        summary.dispatch.submitted,
        1,
        "{summary:?}\n{:?}",
        app.logs(id).await
    );
    assert!(
        app.flow_run_json(id).await["infrastructure_pid"]
            .as_str()
            .unwrap()
            .ends_with(":own-token")
    );
    assert_eq!(other.counters().runs_started, 1);
    assert_eq!(app.emulator.counters().runs_started, 0);
}

/// prefect-northflank's README examples deploy unchanged with the real `prefect deploy`, and
/// every deployment renders to bodies Northflank accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_python_workers_readme_examples_deploy_unchanged() {
    let app = TestApp::spawn().await;
    let prefect = &app.worker.prefect;
    for pool_name in ["my-northflank-pool", "northflank-gpu-pool"] {
        let (status, text) = app
            .raw(
                reqwest::Method::DELETE,
                &format!("/work_pools/{pool_name}"),
                None,
            )
            .await;
        assert!(
            status == 204 || status == 404,
            "pool deletion: {status} {text}"
        );
        pool::create(prefect, pool_name, None, None).await.unwrap();
    }
    for name in ["northflank-creds", "my-creds"] {
        block(
            &app,
            "northflank",
            name,
            json!({"api_token": NF_TOKEN, "base_url": app.emulator.base_url()}),
        )
        .await;
    }
    let dir = repo().join("tests/it/fixtures/python-worker-readme");
    let out = tokio::process::Command::new(repo().join(".venv/bin/prefect"))
        .args(["--no-prompt", "deploy", "--all"])
        .current_dir(&dir)
        .env("PREFECT_API_URL", &app.api)
        .env(
            "PREFECT_HOME",
            std::env::temp_dir().join(format!("pfnf-deploy-{}", std::process::id())),
        )
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "prefect deploy failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let mut expected_jobs = 0;
    for (flow, deployment, pool_name) in [
        ("my-flow", "my-northflank-deployment", "my-northflank-pool"),
        ("my-flow", "my-build-deployment", "my-northflank-pool"),
        ("training-flow", "gpu-training", "northflank-gpu-pool"),
    ] {
        let dep = app
            .get(&format!("/deployments/name/{flow}/{deployment}"))
            .await;
        app.post(
            &format!(
                "/deployments/{}/create_flow_run",
                dep["id"].as_str().unwrap()
            ),
            json!({}),
        )
        .await;
        let worker = helpers::worker_for(
            &app.api,
            pool_name,
            &app.emulator.base_url(),
            "readme-worker",
        );
        let summary = prefect_nf::scheduled::invoke(
            &worker,
            tokio::time::Instant::now() + Duration::from_secs(60),
        )
        .await
        .unwrap();
        expected_jobs += summary.dispatch.submitted;
        assert!(summary.dispatch.submitted >= 1, "{deployment}: {summary:?}");
    }
    let jobs: Vec<Value> = app.bodies("PUT", "/jobs");
    assert_eq!(jobs.len() as u32, expected_jobs);
    let gpu = jobs
        .iter()
        .find(|j| j["billing"]["deploymentPlan"] == "nf-gpu-h100-80-1g")
        .unwrap();
    assert_eq!(
        gpu["billing"]["gpu"],
        json!({"enabled": true, "configuration": {"gpuType": "h100-80", "gpuCount": 2}})
    );
    assert_eq!(gpu["runtimeEnvironment"]["TORCH_CUDA_ARCH_LIST"], "8.9");
    assert_eq!(gpu["settings"]["activeDeadlineSeconds"], 14400);
    let build = jobs
        .iter()
        .find(|j| j["deployment"].get("internal").is_some())
        .unwrap();
    assert_eq!(
        build["deployment"]["internal"],
        json!({"id": "build-service-abc123", "branch": "main"})
    );
    assert_eq!(build["runtimeEnvironment"]["ENVIRONMENT"], "production");
    assert!(
        jobs.iter().all(|j| !j.to_string().contains(NF_TOKEN)),
        "the credentials block never reaches a job body"
    );
    let statuses: Vec<u16> = app
        .emulator
        .requests()
        .iter()
        .filter(|r| r.path.contains("/jobs"))
        .map(|r| r.status)
        .collect();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
}

//! The `prefect-nf` command line: the dry run and the pool template, run as a user would.

use crate::helpers;

use std::process::Output;

use crate::helpers::TestApp;
use serde_json::{Value, json};

async fn prefect_nf(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_prefect-nf"));
    cmd.args(args)
        .env_remove("PREFECT_API_URL")
        .env_remove("PREFECT_API_KEY")
        .env_remove("PREFECT_API_AUTH_STRING");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().await.unwrap()
}

fn json_out(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn render_prints_the_northflank_bodies_with_secrets_redacted() {
    let vars = r#"{"project_id": "proj", "deployment_external_image_path": "ghcr.io/acme/etl:1.2", "env": {"A": 1}}"#;
    let out = prefect_nf(
        &[
            "render",
            "--deployment-variables",
            vars,
            "--flow-run-variables",
            r#"{"env": {"B": "run"}}"#,
        ],
        &[("PREFECT_API_KEY", "pnu_hidden")],
    )
    .await;
    let bodies = json_out(&out);
    assert_eq!(bodies["projectId"], "proj");
    assert_eq!(
        bodies["createJob"]["name"],
        "pf-00000000-0000-0000-0000-000000000000"
    );
    assert_eq!(
        bodies["createJob"]["deployment"]["external"]["imagePath"],
        "ghcr.io/acme/etl:1.2"
    );
    assert_eq!(bodies["createJob"]["runtimeEnvironment"]["A"], "1");
    assert_eq!(bodies["createJob"]["runtimeEnvironment"]["B"], "run");
    assert_eq!(
        bodies["startRun"]["runtimeEnvironment"]["PREFECT_API_KEY"],
        "********"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("pnu_hidden"));
}

#[tokio::test]
async fn render_stage_config_shows_the_templating_result() {
    let dir = std::env::temp_dir().join(format!("pfnf-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("vars.json");
    std::fs::write(&file, r#"{"project_id": "proj", "env.FROM_DOTTED": "x", "credentials": {"api_token": "nf-secret"}}"#).unwrap();
    let out = prefect_nf(
        &[
            "render",
            "--stage",
            "config",
            "--deployment-variables",
            file.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    let config = json_out(&out);
    assert_eq!(config["env"], json!({"FROM_DOTTED": "x"}));
    assert_eq!(config["billing_deployment_plan"], "nf-compute-20");
    assert_eq!(config["credentials"]["api_token"], "********");
    assert!(
        config.get("name").is_none(),
        "a missing value drops the key, as in Prefect"
    );
}

#[tokio::test]
async fn render_errors_name_the_variable_or_the_flag() {
    let out = prefect_nf(
        &[
            "render",
            "--deployment-variables",
            r#"{"project_id": "p", "billing_gpu_enabled": true}"#,
        ],
        &[],
    )
    .await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("billing_gpu_type")
            && stderr.contains("required when billing_gpu_enabled is true"),
        "{stderr}"
    );

    let out = prefect_nf(&["render", "--flow-run-variables", "{not json"], &[]).await;
    assert!(String::from_utf8_lossy(&out.stderr).contains("--flow-run-variables: invalid JSON"));

    let out = prefect_nf(
        &[
            "render",
            "--deployment-variables",
            r#"{"project_id": "{{ prefect.variables.p }}"}"#,
        ],
        &[],
    )
    .await;
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("needs the Prefect API: set PREFECT_API_URL")
    );
}

#[tokio::test]
async fn work_pool_template_prints_the_checked_in_template() {
    let out = prefect_nf(&["work-pool", "template", "--project-id", "proj"], &[]).await;
    assert_eq!(
        json_out(&out),
        prefect_nf::setup::pool::template(Some("proj"))
    );
}

/// Against the server: the pool's own template and a deployment's variables, blocks resolved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn render_reads_the_pool_and_the_deployment_from_the_server() {
    let app = TestApp::spawn().await;
    app.deployment(json!({"deployment_internal_id": "builder", "env": {"FROM": "deployment"}}))
        .await;
    let deployments = app
        .post(
            "/deployments/filter",
            json!({"work_pools": {"name": {"any_": [app.pool]}}}),
        )
        .await;
    let name = format!(
        "hello-northflank/{}",
        deployments[0]["name"].as_str().unwrap()
    );
    let out = prefect_nf(
        &["render", "--pool", &app.pool, "--deployment", &name],
        &[("PREFECT_API_URL", &app.api)],
    )
    .await;
    let bodies = json_out(&out);
    assert_eq!(
        bodies["projectId"], "test-project",
        "the pool's default project"
    );
    assert_eq!(
        bodies["createJob"]["deployment"]["internal"],
        json!({"id": "builder"})
    );
    assert_eq!(
        bodies["createJob"]["runtimeEnvironment"]["FROM"],
        "deployment"
    );
    assert_eq!(
        bodies["createJob"]["runtimeEnvironment"]["PREFECT__FLOW_NAME"],
        "hello-northflank"
    );
}

/// `webhook register` creates the integration, updates it when run again, and the integration
/// it leaves delivers job-run events the webhook accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn webhook_register_is_idempotent_and_its_integration_delivers() {
    let app = TestApp::spawn_with(helpers::Options {
        register_webhook: false,
        ..Default::default()
    })
    .await;
    let env_file = std::env::temp_dir().join(format!(
        "pfnf-register-{}.env",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::write(
        &env_file,
        format!(
            "# credentials for the emulator\nNORTHFLANK_API_URL={}\nNORTHFLANK_API_TOKEN={}\nPFNF_WEBHOOK_TOKEN='{}'\n",
            app.emulator.base_url(),
            helpers::NF_TOKEN,
            helpers::WEBHOOK_TOKEN
        ),
    )
    .unwrap();
    let args = [
        "--env-file",
        env_file.to_str().unwrap(),
        "webhook",
        "register",
        "--url",
        &app.webhook_url,
        "--project-id",
        &app.project,
    ];
    let first = prefect_nf(&args, &[]).await;
    assert!(
        String::from_utf8_lossy(&first.stdout).starts_with("created"),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let second = prefect_nf(&args, &[]).await;
    assert!(
        String::from_utf8_lossy(&second.stdout).starts_with("updated"),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );

    let integrations = app.emulator.snapshot().integrations;
    assert_eq!(integrations.len(), 1);
    let i = &integrations[0].integration;
    assert_eq!(
        (i.id.as_str(), i.kind.as_str(), i.restricted),
        ("prefect-nf", "RAW_WEBHOOK", true)
    );
    assert_eq!(i.projects, vec![app.project.clone()]);
    assert_eq!(i.events.values().filter(|on| **on).count(), 5);
    assert!(integrations[0].has_secret);

    let deployment = app.deployment(json!({})).await;
    let id = app.scripted_run(deployment, "crash:0.1").await;
    assert_eq!(app.dispatch_once().await.dispatch.submitted, 1);
    app.wait_for_state(id, &["CRASHED"], std::time::Duration::from_secs(15))
        .await;
}

/// `instant-dispatch enable` needs the dispatch token, then writes the automation once;
/// `disable` removes it.
#[tokio::test]
async fn instant_dispatch_enable_and_disable() {
    let app = TestApp::spawn().await;
    let base = [
        ("PREFECT_API_URL", app.api.as_str()),
        ("NORTHFLANK_API_TOKEN", helpers::NF_TOKEN),
        ("PFNF_WEBHOOK_TOKEN", helpers::WEBHOOK_TOKEN),
    ];
    let enable = [
        "instant-dispatch",
        "enable",
        "--url",
        app.webhook_url.as_str(),
        "--pool",
        app.pool.as_str(),
    ];
    let refused = prefect_nf(&enable, &base).await;
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("PFNF_DISPATCH_TOKEN"), "{stderr}");

    let mut with_token = base.to_vec();
    with_token.push(("PFNF_DISPATCH_TOKEN", helpers::DISPATCH_TOKEN));
    for expected in ["created", "updated"] {
        let out = prefect_nf(&enable, &with_token).await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.starts_with(expected) && stdout.contains("/prefect/dispatch"),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let disable = ["instant-dispatch", "disable", "--pool", app.pool.as_str()];
    let out = prefect_nf(&disable, &with_token).await;
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("deleted"));
    let out = prefect_nf(&disable, &with_token).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("was not enabled"));
}

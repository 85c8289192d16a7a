//! Job rendering, table-driven: what each job variable becomes in the Northflank bodies, and
//! every rule that refuses a configuration before it reaches Northflank. The same two stages
//! as dispatch: Prefect's templating, then the mapping.

use prefect_nf::config::{PrefectAuth, Secret};
use prefect_nf::render::dry_run::Offline;
use prefect_nf::render::{RenderError, RenderInput, Rendered, RunFacts};
use serde_json::{Map, Value, json};

const RUN: &str = "0b9f6a2e-1c3d-4e5f-8a9b-0c1d2e3f4a5b";

fn facts() -> RunFacts {
    RunFacts {
        flow_run_id: RUN.parse().unwrap(),
        flow_run_name: "crimson-fox".into(),
        flow_id: uuid::Uuid::nil(),
        flow_name: "etl".into(),
        deployment_id: Some(uuid::Uuid::nil()),
        deployment_name: Some("nightly".into()),
        worker_name: "prefect-nf".into(),
        api_url: "https://api.prefect.cloud/api/accounts/a/workspaces/w".into(),
        auth: PrefectAuth::ApiKey(Secret::new("pnu_secret")),
        settings_env: [
            ("PREFECT_LOGGING_LEVEL", "DEBUG"),
            ("PREFECT_RESULTS_PERSIST_BY_DEFAULT", "true"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        ctx: RunFacts::ctx_of(
            json!({"id": RUN, "name": "crimson-fox", "parameters": {"region": "eu"}}),
            json!({"id": uuid::Uuid::nil(), "name": "etl"}),
        ),
        marker: None,
    }
}

/// Both stages, exactly as dispatch runs them.
async fn render_with(template: Value, deployment: Value) -> Result<Rendered, RenderError> {
    let deployment: Map<String, Value> = deployment.as_object().cloned().unwrap();
    let facts = facts();
    let input = RenderInput {
        template: &template,
        deployment_variables: &deployment,
        flow_run_variables: &Map::new(),
        facts: &facts,
    };
    prefect_nf::render::render(&input, &Offline, &|_: &str| None).await
}

async fn render(deployment: Value) -> Result<Rendered, RenderError> {
    render_with(prefect_nf::setup::pool::template(Some("proj")), deployment).await
}

#[tokio::test]
async fn every_rule_names_the_variable_the_value_and_the_rule() {
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            json!({"project_id": "my proj"}),
            "`project_id` = \"my proj\"",
            "letters, digits and '-'",
        ),
        (
            json!({"deployment_external_image_path": "prefecthq/prefect"}),
            "`deployment_external_image_path` = \"prefecthq/prefect\"",
            "tag or digest",
        ),
        (
            json!({"deployment_external_image_path": "a/b:1", "deployment_internal_id": "builder"}),
            "`deployment_external_image_path, deployment_internal_id`",
            "exactly one deployment source",
        ),
        (
            json!({"deployment_external_image_path": "a/b:1", "deployment_internal_id": "b1", "deployment_vcs_project_url": "https://github.com/o/r"}),
            "3 sources",
            "exactly one deployment source",
        ),
        (
            json!({"deployment_internal_id": "9builder"}),
            "`deployment_internal_id` = \"9builder\"",
            "build service id",
        ),
        (
            json!({"deployment_internal_id": "builder", "deployment_internal_build_sha": "abc"}),
            "`deployment_internal_build_sha` = \"abc\"",
            "40-character commit SHA",
        ),
        (
            json!({"deployment_vcs_project_url": "not a url"}),
            "`deployment_vcs_project_url` = \"not a url\"",
            "repository URL",
        ),
        (
            json!({"deployment_vcs_project_url": "https://github.com/org/repo"}),
            "`deployment_vcs_project_type` = \"null\"",
            "required for a Git build",
        ),
        (
            json!({"deployment_vcs_project_url": "https://github.com/org/repo", "deployment_vcs_project_type": "svn", "deployment_vcs_project_branch": "main"}),
            "`deployment_vcs_project_type` = \"svn\"",
            "github, gitlab, bitbucket, self-hosted, azure",
        ),
        (
            json!({"deployment_vcs_project_url": "https://github.com/org/repo", "deployment_vcs_project_type": "github"}),
            "`deployment_vcs_project_branch` = \"null\"",
            "the branch to build",
        ),
        (
            json!({"deployment_vcs_project_url": "https://git.example.com/org/repo", "deployment_vcs_project_type": "self-hosted", "deployment_vcs_project_branch": "main"}),
            "`deployment_vcs_self_hosted_vcs_id` = \"null\"",
            "required when deployment_vcs_project_type is self-hosted",
        ),
        (
            json!({"deployment_vcs_project_url": "https://github.com/org/repo", "deployment_vcs_project_type": "github", "deployment_vcs_project_branch": "main", "deployment_vcs_vcs_link_id": "short"}),
            "`deployment_vcs_vcs_link_id` = \"short\"",
            "exactly 24 characters",
        ),
        (
            json!({"deployment_vcs_project_url": "https://github.com/org/repo", "deployment_vcs_project_type": "github", "deployment_vcs_project_branch": "main", "build_buildpack_builder": "HEROKU_99"}),
            "`build_buildpack_builder` = \"HEROKU_99\"",
            "must be one of HEROKU_24",
        ),
        (
            json!({"deployment_vcs_project_url": "https://github.com/org/repo", "deployment_vcs_project_type": "github", "deployment_vcs_project_branch": "main", "build_dockerfile_path": "Dockerfile"}),
            "`build_dockerfile_path` = \"Dockerfile\"",
            "absolute path",
        ),
        (
            json!({"deployment_vcs_project_url": "https://github.com/org/repo", "deployment_vcs_project_type": "github", "deployment_vcs_project_branch": "main", "billing_build_plan": "big plan"}),
            "`billing_build_plan` = \"big plan\"",
            "at least 4 vCPU",
        ),
        (
            json!({"deployment_docker_config_type": "shell"}),
            "`deployment_docker_config_type` = \"shell\"",
            "must be one of default, customEntrypoint",
        ),
        (
            json!({"deployment_docker_config_type": "customEntrypoint"}),
            "`deployment_docker_custom_entrypoint` = \"null\"",
            "required when deployment_docker_config_type is customEntrypoint",
        ),
        (
            json!({"deployment_docker_config_type": "customEntrypointCustomCommand"}),
            "`deployment_docker_custom_entrypoint` = \"null\"",
            "required when deployment_docker_config_type is customEntrypointCustomCommand",
        ),
        (
            json!({"billing_gpu_enabled": true}),
            "`billing_gpu_type` = \"null\"",
            "required when billing_gpu_enabled is true",
        ),
        (
            json!({"billing_gpu_enabled": true, "billing_gpu_type": "h100-80", "billing_gpu_count": 3}),
            "`billing_gpu_count` = \"3\"",
            "1, 2, 4 or 8",
        ),
        (
            json!({"billing_gpu_enabled": true, "billing_gpu_type": "h100-80", "billing_gpu_count": 16}),
            "`billing_gpu_count` = 16",
            "between 1 and 8",
        ),
        (
            json!({"infrastructure_architecture": "x86_64"}),
            "`infrastructure_architecture` = \"x86_64\"",
            "must be x86 or arm",
        ),
        (
            json!({"billing_deployment_plan": null}),
            "`billing_deployment_plan` = \"null\"",
            "is required",
        ),
        (
            json!({"billing_deployment_plan": "nf compute"}),
            "`billing_deployment_plan` = \"nf compute\"",
            "plan id",
        ),
        (
            json!({"settings_backoff_limit": -1}),
            "`settings_backoff_limit` = -1",
            "between 0 and 1000",
        ),
        (
            json!({"settings_active_deadline_seconds": 0}),
            "`settings_active_deadline_seconds` = 0",
            "between 1 and",
        ),
        (
            json!({"settings_active_deadline_seconds": "soon"}),
            "`settings_active_deadline_seconds` = \"soon\"",
            "whole number",
        ),
        (
            json!({"settings_run_on_source_change": "sometimes"}),
            "`settings_run_on_source_change` = \"sometimes\"",
            "never, cd-promote or always",
        ),
        (
            json!({"deployment_external_credentials": "my creds"}),
            "`deployment_external_credentials` = \"my creds\"",
            "saved registry credentials",
        ),
        (
            json!({"build_configuration_docker_credentials": ["a b"]}),
            "`build_configuration_docker_credentials` = \"a b\"",
            "letters, digits and '-'",
        ),
        (
            json!({"build_configuration_docker_credentials": "a"}),
            "`build_configuration_docker_credentials` = \"a\"",
            "list of strings",
        ),
        (
            json!({"credentials": {"base_url": "https://api.northflank.com"}}),
            "`credentials`",
            "must have an api_token",
        ),
        (
            json!({"credentials": {"api_token": "t", "base_url": "ftp://x"}}),
            "`credentials.base_url` = \"ftp://x\"",
            "http(s) URL",
        ),
        (
            json!({"credentials": "nf-token"}),
            "`credentials` = \"nf-token\"",
            "must be a mapping",
        ),
        (
            json!({"cleanup_job": "maybe"}),
            "`cleanup_job` = \"maybe\"",
            "true or false",
        ),
        (
            json!({"env": "A=1"}),
            "`env` = \"A=1\"",
            "mapping of variable names",
        ),
        (
            json!({"tags": "a,b"}),
            "`tags` = \"a,b\"",
            "list of strings",
        ),
        (
            json!({"project_id": 7}),
            "`project_id` = 7",
            "must be a string",
        ),
    ];
    for (variables, names, rule) in cases {
        let message = match render(variables.clone()).await {
            Err(e) => e.to_string(),
            Ok(r) => panic!("{variables} rendered: {}", r.create_job),
        };
        assert!(message.starts_with("job variable "), "{message}");
        assert!(
            message.contains(names),
            "{variables}: expected {names} in: {message}"
        );
        assert!(
            message.contains(rule),
            "{variables}: expected {rule:?} in: {message}"
        );
    }
}

#[tokio::test]
async fn a_pool_without_a_project_asks_for_one() {
    let err = render_with(prefect_nf::setup::pool::template(None), json!({}))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "job variable `project_id` = null is invalid: is required: set the Northflank project in the work pool's or the deployment's job variables"
    );
}

#[tokio::test]
async fn the_defaults_render_the_python_workers_job() {
    let r = render(json!({})).await.unwrap();
    assert_eq!(r.project_id, "proj");
    assert!(r.cleanup_job);
    let job = &r.create_job;
    assert_eq!(job["name"], format!("pf-{RUN}"));
    assert_eq!(
        job["description"],
        format!("Prefect flow run 'crimson-fox' ({RUN})")
    );
    assert_eq!(job["billing"], json!({"deploymentPlan": "nf-compute-20"}));
    assert_eq!(
        job["deployment"],
        json!({"external": {"imagePath": "prefecthq/prefect:3-python3.12"},
               "docker": {"configType": "customCommand", "customCommand": "prefect flow-run execute"}})
    );
    assert_eq!(
        job["settings"],
        json!({"backoffLimit": 3, "activeDeadlineSeconds": 3600, "runOnSourceChange": "never"})
    );
    let env = &job["runtimeEnvironment"];
    assert_eq!(env["PREFECT__FLOW_RUN_ID"], RUN);
    assert_eq!(
        env["PREFECT_API_URL"],
        "https://api.prefect.cloud/api/accounts/a/workspaces/w"
    );
    assert_eq!(
        (
            env["PREFECT__FLOW_NAME"].as_str(),
            env["PREFECT__DEPLOYMENT_NAME"].as_str()
        ),
        (Some("etl"), Some("nightly"))
    );
    assert_eq!(env["PREFECT__WORKER_NAME"], "prefect-nf");
    assert!(
        env.get("PREFECT_API_KEY").is_none(),
        "the key never goes into the job definition"
    );
    assert_eq!(
        r.start_run,
        json!({"runtimeEnvironment": {"PREFECT_API_KEY": "pnu_secret"}})
    );
    for absent in [
        "tags",
        "infrastructure",
        "buildSettings",
        "buildConfiguration",
    ] {
        assert!(job.get(absent).is_none(), "{absent}");
    }
}

#[tokio::test]
async fn the_environment_merges_and_runtime_environment_wins() {
    let r = render(json!({
        "env": {"A": "from-env", "B": "from-env", "N": 1, "T": true, "PREFECT__FLOW_NAME": "override", "PREFECT_API_URL": null},
        "runtime_environment": {"B": "from-runtime", "C": "runtime-only", "PREFECT_API_AUTH_STRING": "u:p"}
    }))
    .await
    .unwrap();
    let env = &r.create_job["runtimeEnvironment"];
    assert_eq!(
        (env["A"].as_str(), env["B"].as_str(), env["C"].as_str()),
        (Some("from-env"), Some("from-runtime"), Some("runtime-only"))
    );
    assert_eq!(
        (env["N"].as_str(), env["T"].as_str()),
        (Some("1"), Some("True")),
        "Python str() of the values"
    );
    assert_eq!(env["PREFECT__FLOW_NAME"], "override");
    assert!(env.get("PREFECT_API_URL").is_none(), "null unsets");
    assert!(env.get("PREFECT_API_AUTH_STRING").is_none());
    assert_eq!(
        r.start_run["runtimeEnvironment"]["PREFECT_API_AUTH_STRING"],
        "u:p"
    );
}

#[tokio::test]
async fn each_deployment_source_maps_to_its_branch() {
    let internal = render(json!({"deployment_internal_id": "builder", "deployment_internal_branch": "main",
                                 "deployment_internal_build_sha": "latest", "deployment_internal_build_id": "b-1"}))
    .await
    .unwrap();
    assert_eq!(
        internal.create_job["deployment"]["internal"],
        json!({"id": "builder", "branch": "main", "buildSHA": "latest", "buildId": "b-1"})
    );
    assert!(internal.create_job["deployment"].get("external").is_none());

    let vcs = render(json!({"deployment_vcs_project_url": "https://github.com/org/repo", "deployment_vcs_project_type": "github",
                            "deployment_vcs_project_branch": "main", "deployment_vcs_account_login": "me", "billing_build_plan": "nf-compute-400-16"}))
    .await
    .unwrap();
    let job = &vcs.create_job;
    assert_eq!(
        job["deployment"]["vcs"],
        json!({"projectUrl": "https://github.com/org/repo", "projectType": "github", "projectBranch": "main", "accountLogin": "me"})
    );
    assert_eq!(
        job["buildSettings"],
        json!({"dockerfile": {"dockerFilePath": "/Dockerfile", "dockerWorkDir": "/"}})
    );
    assert_eq!(job["billing"]["buildPlan"], "nf-compute-400-16");

    let buildpack = render(json!({"deployment_vcs_project_url": "https://github.com/org/repo", "deployment_vcs_project_type": "github",
                                  "deployment_vcs_project_branch": "main", "build_buildpack_builder": "HEROKU_24"}))
    .await
    .unwrap();
    assert_eq!(
        buildpack.create_job["buildSettings"],
        json!({"buildpack": {"builder": "HEROKU_24"}})
    );

    let external = render(json!({"deployment_external_image_path": "ghcr.io/acme/etl@sha256:abc123", "deployment_external_credentials": "ghcr-creds"}))
    .await
    .unwrap();
    assert_eq!(
        external.create_job["deployment"]["external"],
        json!({"imagePath": "ghcr.io/acme/etl@sha256:abc123", "credentials": "ghcr-creds"})
    );
}

#[tokio::test]
async fn the_users_docker_configuration_is_honoured() {
    let cases = [
        (
            json!({"deployment_docker_custom_command": "python my_script.py"}),
            json!({"configType": "customCommand", "customCommand": "python my_script.py"}),
        ),
        (
            json!({"command": "prefect flow-run execute --log-level debug"}),
            json!({"configType": "customCommand", "customCommand": "prefect flow-run execute --log-level debug"}),
        ),
        (
            json!({"deployment_docker_config_type": "default"}),
            json!({"configType": "default"}),
        ),
        (
            json!({"deployment_docker_config_type": "customEntrypoint", "deployment_docker_custom_entrypoint": "/entry.sh"}),
            json!({"configType": "customEntrypoint", "customEntrypoint": "/entry.sh"}),
        ),
        (
            json!({"deployment_docker_config_type": "customEntrypointCustomCommand", "deployment_docker_custom_entrypoint": "/bin/sh"}),
            json!({"configType": "customEntrypointCustomCommand", "customEntrypoint": "/bin/sh", "customCommand": "prefect flow-run execute"}),
        ),
    ];
    for (variables, docker) in cases {
        assert_eq!(
            render(variables.clone()).await.unwrap().create_job["deployment"]["docker"],
            docker,
            "{variables}"
        );
    }
}

#[tokio::test]
async fn gpu_architecture_settings_and_cleanup_map_through() {
    let r = render(json!({"billing_deployment_plan": "nf-gpu-h100-80-1g", "billing_gpu_enabled": true, "billing_gpu_type": "h100-80",
                          "billing_gpu_count": 2, "billing_gpu_timesliced": false, "infrastructure_architecture": "arm",
                          "settings_backoff_limit": null, "settings_active_deadline_seconds": null, "settings_run_on_source_change": null,
                          "cleanup_job": false, "build_configuration_docker_credentials": ["dockerhub"]}))
    .await
    .unwrap();
    let job = &r.create_job;
    assert_eq!(
        job["billing"],
        json!({"deploymentPlan": "nf-gpu-h100-80-1g", "gpu": {"enabled": true, "configuration": {"gpuType": "h100-80", "gpuCount": 2, "timesliced": false}}})
    );
    assert_eq!(job["infrastructure"], json!({"architecture": "arm"}));
    assert_eq!(
        job["settings"],
        json!({"backoffLimit": 0}),
        "null settings: no limits (backoffLimit is required)"
    );
    assert_eq!(
        job["buildConfiguration"],
        json!({"dockerCredentials": ["dockerhub"]})
    );
    assert!(!r.cleanup_job);
    // A GPU type without GPUs enabled changes nothing, as in the Python worker.
    let off = render(json!({"billing_gpu_type": "h100-80"}))
        .await
        .unwrap();
    assert!(off.create_job["billing"].get("gpu").is_none());
}

#[tokio::test]
async fn names_tags_and_descriptions_are_made_valid_never_sent_invalid() {
    let r = render(json!({"name": "nightly run #7 @ acme", "tags": ["team_data", "x", "ok-tag", "Team Data!", "team-data"]})).await.unwrap();
    let job = &r.create_job;
    assert_eq!(
        job["name"],
        format!("pf-{RUN}"),
        "the job name never changes"
    );
    assert_eq!(
        job["description"],
        format!("Prefect flow run 'nightly run -7 - acme' ({RUN})")
    );
    assert_eq!(job["tags"], json!(["team-data", "ok-tag", "Team-Data"]));
    assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
    assert!(r.warnings[0].contains("\"x\""));
    let described = render(json!({"description": "ETL <nightly> {prod} ünïcode"}))
        .await
        .unwrap();
    assert_eq!(
        described.create_job["description"],
        "ETL -nightly- -prod- -n-code"
    );
}

#[tokio::test]
async fn a_command_list_is_joined_with_shell_quoting() {
    let template = {
        let mut t = prefect_nf::setup::pool::template(Some("proj"));
        t["variables"]["properties"]["command"] =
            json!({"type": "array", "items": {"type": "string"}});
        t
    };
    let r = render_with(
        template,
        json!({"command": ["python", "-c", "print('a b')"]}),
    )
    .await
    .unwrap();
    assert_eq!(
        r.create_job["deployment"]["docker"]["customCommand"],
        r#"python -c 'print('\''a b'\'')'"#
    );
}

#[tokio::test]
async fn a_credentials_block_becomes_the_runs_northflank_client() {
    let r = render(
        json!({"credentials": {"api_token": "nf-token", "base_url": "https://nf.example.com"}}),
    )
    .await
    .unwrap();
    let c = r.credentials.unwrap();
    assert_eq!(
        (c.api_token.expose(), c.base_url.as_deref()),
        ("nf-token", Some("https://nf.example.com"))
    );
    assert!(!r.create_job.to_string().contains("nf-token"));
}

// ---- Migrating from prefect-northflank 1.0.1 (the Python worker) ----

#[tokio::test]
async fn a_python_worker_pool_names_each_variable_its_template_drops() {
    let r = render_with(
        crate::helpers::python_worker_template("proj"),
        json!({"build_configuration_docker_credentials": ["creds-1"], "billing_build_plan": "nf-compute-400-16"}),
    )
    .await
    .unwrap();
    assert!(r.create_job.get("buildConfiguration").is_none());
    for variable in [
        "build_configuration_docker_credentials",
        "billing_build_plan",
    ] {
        assert!(
            r.warnings.iter().any(
                |w| w.contains(&format!("`{variable}` is set but was ignored"))
                    && w.contains("prefect-nf work-pool update")
            ),
            "{variable}: {:?}",
            r.warnings
        );
    }
    // The same variables with the current template: no warning.
    let current = render(json!({"build_configuration_docker_credentials": ["creds-1"]}))
        .await
        .unwrap();
    assert!(current.warnings.is_empty(), "{:?}", current.warnings);
    assert_eq!(
        current.create_job["buildConfiguration"],
        json!({"dockerCredentials": ["creds-1"]})
    );
}

#[tokio::test]
async fn a_dropped_entrypoint_is_reported_as_dropped_not_as_missing() {
    let err = render_with(
        crate::helpers::python_worker_template("proj"),
        json!({"deployment_docker_config_type": "customEntrypoint", "deployment_docker_custom_entrypoint": "/bin/sh"}),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("`deployment_docker_custom_entrypoint`")
            && err.contains("is set, but this work pool's base job template predates it")
            && err.contains("prefect-nf work-pool update"),
        "{err}"
    );
}

#[tokio::test]
async fn variables_without_their_anchor_name_the_anchor() {
    let cases = [
        (
            "deployment_internal_branch",
            json!("main"),
            "deployment_internal_id",
        ),
        (
            "deployment_internal_build_sha",
            json!("latest"),
            "deployment_internal_id",
        ),
        (
            "deployment_internal_build_id",
            json!("b-1"),
            "deployment_internal_id",
        ),
        (
            "deployment_vcs_project_type",
            json!("github"),
            "deployment_vcs_project_url",
        ),
        (
            "deployment_vcs_project_branch",
            json!("main"),
            "deployment_vcs_project_url",
        ),
        (
            "deployment_vcs_account_login",
            json!("me"),
            "deployment_vcs_project_url",
        ),
        (
            "build_dockerfile_path",
            json!("/Dockerfile"),
            "deployment_vcs_project_url",
        ),
        (
            "build_buildpack_builder",
            json!("HEROKU_24"),
            "deployment_vcs_project_url",
        ),
        (
            "billing_build_plan",
            json!("nf-compute-400-16"),
            "deployment_vcs_project_url",
        ),
    ];
    for (variable, value, anchor) in cases {
        let err = render(json!({ variable: value }))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!("job variable `{variable}` = "))
                && err.contains(&format!("needs `{anchor}`, which is not set")),
            "{variable}: {err}"
        );
    }
    // With the anchor, they are used.
    let r =
        render(json!({"deployment_internal_id": "builder", "deployment_internal_branch": "main"}))
            .await
            .unwrap();
    assert_eq!(
        r.create_job["deployment"]["internal"],
        json!({"id": "builder", "branch": "main"})
    );
}

#[tokio::test]
async fn the_python_workers_spellings_are_accepted() {
    for (arch, want) in [
        ("X86", "x86"),
        ("ARM", "arm"),
        ("Arm", "arm"),
        (" x86 ", "x86"),
    ] {
        let r = render(json!({"infrastructure_architecture": arch}))
            .await
            .unwrap();
        assert_eq!(
            r.create_job["infrastructure"]["architecture"], want,
            "{arch}"
        );
    }
    let err = render(json!({"infrastructure_architecture": "x86_64"}))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("must be x86 or arm"), "{err}");
    for (spelling, want) in [
        ("yes", true),
        ("Y", true),
        ("on", true),
        ("1", true),
        ("t", true),
        ("no", false),
        ("OFF", false),
        ("0", false),
        ("f", false),
    ] {
        let r = render(json!({"cleanup_job": spelling})).await.unwrap();
        assert_eq!(r.cleanup_job, want, "{spelling}");
    }
    let r = render(json!({"cleanup_job": 0})).await.unwrap();
    assert!(!r.cleanup_job);
    let err = render(json!({"billing_gpu_enabled": "maybe"}))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`billing_gpu_enabled` = \"maybe\"") && err.contains("yes/no"),
        "{err}"
    );
}

#[tokio::test]
async fn the_name_renders_prefects_ctx_placeholders() {
    let r = render(json!({"name": "{{ ctx.flow.name }}-{{ ctx.flow_run.name }}-{{ ctx.flow_run.parameters.region }}"}))
        .await
        .unwrap();
    let description = r.create_job["description"].as_str().unwrap();
    assert!(
        description.starts_with("Prefect flow run 'etl-crimson-fox-eu'"),
        "{description}"
    );
    // Prefect keeps a name that is one unknown placeholder as it was written.
    let r = render(json!({"name": "{{ ctx.flow_run.nothing }}"}))
        .await
        .unwrap();
    assert!(
        r.create_job["description"]
            .as_str()
            .unwrap()
            .contains("ctx.flow_run.nothing"),
        "{}",
        r.create_job["description"]
    );
}

#[tokio::test]
async fn the_workers_prefect_settings_reach_the_container_before_the_users_env() {
    let r = render(json!({"env": {"PREFECT_LOGGING_LEVEL": "INFO"}}))
        .await
        .unwrap();
    let env = &r.create_job["runtimeEnvironment"];
    assert_eq!(env["PREFECT_RESULTS_PERSIST_BY_DEFAULT"], "true");
    assert_eq!(env["PREFECT_LOGGING_LEVEL"], "INFO", "the user's env wins");
    assert!(env.get("PREFECT_API_KEY").is_none());
}

#[test]
fn the_template_schema_accepts_the_python_workers_architecture_spellings() {
    let t = prefect_nf::setup::pool::template(None);
    let schema = &t["variables"]["properties"]["infrastructure_architecture"]["anyOf"][0];
    let pattern = regex::Regex::new(schema["pattern"].as_str().unwrap()).unwrap();
    for ok in ["x86", "X86", "arm", "ARM", "Arm"] {
        assert!(pattern.is_match(ok), "{ok}");
    }
    for bad in ["x86_64", "amd64", ""] {
        assert!(!pattern.is_match(bad), "{bad}");
    }
}

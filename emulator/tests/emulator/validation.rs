//! Job body validation (§2.2, §8): accepted documented bodies and rejected ones, each naming
//! the offending field and rule.

use nf_emulator::Config;
use serde_json::{Value, json};

use crate::common::{PROJECT, emulator, fast_config, job};

fn with(mut body: Value, pointer: &str, value: Value) -> Value {
    *body
        .pointer_mut(pointer)
        .unwrap_or_else(|| panic!("{pointer} exists")) = value;
    body
}

fn merged(mut body: Value, key: &str, value: Value) -> Value {
    body[key] = value;
    body
}

#[tokio::test]
async fn validation_accepts_documented_bodies() {
    let (_em, api) = emulator(fast_config()).await;
    let accepted = vec![
        job("pf-0b9f6a2e-1c3d-4e5f-8a9b-0c1d2e3f4a5b"),
        json!({"name": "no-settings", "billing": {"deploymentPlan": "nf-compute-20"}}),
        with(
            job("nginx-latest"),
            "/deployment/external/imagePath",
            json!("nginx:latest"),
        ),
        with(
            job("digest-image"),
            "/deployment/external/imagePath",
            json!("ghcr.io/o/i@sha256:abcdef0123"),
        ),
        merged(
            job("env-underscore"),
            "runtimeEnvironment",
            json!({"PREFECT__FLOW_RUN_ID": "x", "A_B": "c"}),
        ),
        merged(
            job("with-description"),
            "description",
            json!("Prefect flow run [abc] (x); 'ok' \"yes\" 50% a/b"),
        ),
        merged(job("with-tags"), "tags", json!(["prefect", "flow-runs"])),
        merged(
            job("gpu-billing"),
            "billing",
            json!({"deploymentPlan": "nf-gpu-h100-80-1g", "gpu": {"enabled": true, "configuration": {"gpuType": "h100-80", "gpuCount": 1}}}),
        ),
        with(
            job("null-deadline"),
            "/settings",
            json!({"backoffLimit": 2, "activeDeadlineSeconds": null}),
        ),
        with(
            job("cron-job"),
            "/settings",
            json!({"backoffLimit": 0, "cron": {"schedule": "0 * * * *", "concurrencyPolicy": "forbid"}}),
        ),
        with(
            job("entrypoint-job"),
            "/deployment/docker",
            json!({"configType": "customEntrypointCustomCommand", "customEntrypoint": "/bin/sh", "customCommand": "-c true"}),
        ),
        merged(
            job("Example Job"),
            "infrastructure",
            json!({"architecture": "arm"}),
        ),
        json!({
            "name": "vcs-job", "billing": {"buildPlan": "nf-compute-200-8", "deploymentPlan": "nf-compute-20"},
            "deployment": {"docker": {"configType": "default"},
                "vcs": {"projectUrl": "https://github.com/northflank/gatsby-with-northflank", "projectType": "github", "accountLogin": "github-user", "projectBranch": "master"}},
            "buildConfiguration": {"pathIgnoreRules": ["README.md"], "isAllowList": false, "ciIgnoreFlags": ["[skip ci]"], "dockerCredentials": ["example-docker-credential"]},
            "buildSettings": {"dockerfile": {"buildEngine": "buildkit", "dockerFilePath": "/Dockerfile", "dockerWorkDir": "/", "buildkit": {"useCache": true, "cacheStorageSize": 32768}}},
            "settings": {"backoffLimit": 0, "runOnSourceChange": "never", "activeDeadlineSeconds": 600}
        }),
        json!({"name": "internal-job", "billing": {"deploymentPlan": "nf-compute-20"},
               "deployment": {"internal": {"id": "my-builder", "branch": "main", "buildSHA": "latest"}}}),
    ];
    for body in accepted {
        let a = api
            .post(&format!("/v1/projects/{PROJECT}/jobs"), body.clone())
            .await;
        assert_eq!(a.status, 200, "{body} → {:?}", a.body);
    }
}

#[tokio::test]
async fn validation_rejects_with_field_paths() {
    let (em, api) = emulator(fast_config()).await;
    let long_name = format!("a{}", "b".repeat(52));
    let rejected: Vec<(Value, &str, &str)> = vec![
        (
            with(
                job("no-tag"),
                "/deployment/external/imagePath",
                json!("prefecthq/prefect"),
            ),
            "deployment.external.imagePath",
            "a tag or digest is required",
        ),
        (job(&long_name), "name", "at most 52 characters"),
        (job("ab"), "name", "at least 3 characters"),
        (job("bad_name"), "name", "must match pattern"),
        (job("1starts-with-digit"), "name", "must match pattern"),
        (
            json!({"billing": {"deploymentPlan": "nf-compute-20"}}),
            "name",
            "is required",
        ),
        (json!({"name": "no-billing"}), "billing", "is required"),
        (
            merged(job("no-plan"), "billing", json!({})),
            "billing.deploymentPlan",
            "is required",
        ),
        (
            merged(
                job("bad-plan"),
                "billing",
                json!({"deploymentPlan": "nf_compute"}),
            ),
            "billing.deploymentPlan",
            "must match pattern",
        ),
        (
            merged(
                job("bad-build-plan"),
                "billing",
                json!({"deploymentPlan": "nf-compute-20", "buildPlan": "x y"}),
            ),
            "billing.buildPlan",
            "must match pattern",
        ),
        (
            merged(
                job("gpu-no-type"),
                "billing",
                json!({"deploymentPlan": "nf-gpu-h100-80-1g", "gpu": {"enabled": true, "configuration": {"gpuCount": 1}}}),
            ),
            "billing.gpu.configuration.gpuType",
            "is required",
        ),
        (
            with(
                job("deploy-gpu-no-type"),
                "/deployment/docker",
                json!({"configType": "default"}),
            )
            .pipe(|mut b| {
                b["deployment"]["gpu"] = json!({"configuration": {}});
                b
            }),
            "deployment.gpu.configuration.gpuType",
            "is required",
        ),
        (
            with(
                job("entrypoint-missing"),
                "/deployment/docker",
                json!({"configType": "customEntrypoint"}),
            ),
            "deployment.docker.customEntrypoint",
            "is required when configType is customEntrypoint",
        ),
        (
            with(
                job("command-missing"),
                "/deployment/docker",
                json!({"configType": "customEntrypointCustomCommand", "customEntrypoint": "sh"}),
            ),
            "deployment.docker.customCommand",
            "is required",
        ),
        (
            with(
                job("bad-config-type"),
                "/deployment/docker",
                json!({"configType": "custom"}),
            ),
            "deployment.docker.configType",
            "must be one of",
        ),
        (
            merged(job("bad-tags"), "tags", json!(["my_tag"])),
            "tags[0]",
            "must match pattern",
        ),
        (
            merged(job("short-tag"), "tags", json!(["ab"])),
            "tags[0]",
            "at least 3",
        ),
        (
            merged(
                job("bad-description"),
                "description",
                json!("flow #1 @ home"),
            ),
            "description",
            "must match pattern",
        ),
        (
            merged(
                job("long-description"),
                "description",
                json!("a".repeat(201)),
            ),
            "description",
            "at most 200",
        ),
        (
            with(
                job("two-sources"),
                "/deployment",
                json!({"external": {"imagePath": "nginx:1"}, "internal": {"id": "svc"}}),
            ),
            "deployment",
            "exactly one source",
        ),
        (
            with(
                job("no-source"),
                "/deployment",
                json!({"docker": {"configType": "default"}}),
            ),
            "deployment",
            "exactly one source",
        ),
        (
            with(
                job("no-backoff"),
                "/settings",
                json!({"activeDeadlineSeconds": 10}),
            ),
            "settings.backoffLimit",
            "is required",
        ),
        (
            with(
                job("zero-deadline"),
                "/settings",
                json!({"backoffLimit": 0, "activeDeadlineSeconds": 0}),
            ),
            "settings.activeDeadlineSeconds",
            "at least 1",
        ),
        (
            with(
                job("bad-source-change"),
                "/settings",
                json!({"backoffLimit": 0, "runOnSourceChange": "sometimes"}),
            ),
            "settings.runOnSourceChange",
            "must be one of",
        ),
        (
            merged(
                job("env-not-strings"),
                "runtimeEnvironment",
                json!({"A": 1}),
            ),
            "runtimeEnvironment.A",
            "must be a string",
        ),
        (
            merged(
                job("bad-arch"),
                "infrastructure",
                json!({"architecture": "riscv"}),
            ),
            "infrastructure.architecture",
            "must be one of",
        ),
        (
            with(
                job("bad-credentials"),
                "/deployment/external",
                json!({"imagePath": "nginx:1", "credentials": "a b"}),
            ),
            "deployment.external.credentials",
            "must match pattern",
        ),
        (
            with(
                job("bad-internal"),
                "/deployment",
                json!({"internal": {"id": "x", "buildSHA": "abc"}}),
            ),
            "deployment.internal.buildSHA",
            "40-character",
        ),
        (
            with(
                job("bad-vcs"),
                "/deployment",
                json!({"vcs": {"projectUrl": "https://github.com/a/b", "projectType": "svn", "projectBranch": "main", "vcsLinkId": "short"}}),
            ),
            "deployment.vcs.projectType",
            "must be one of",
        ),
        (
            merged(
                job("bad-dockerfile"),
                "buildSettings",
                json!({"dockerfile": {"dockerFilePath": "Dockerfile", "dockerWorkDir": "/"}}),
            ),
            "buildSettings.dockerfile.dockerFilePath",
            "absolute path",
        ),
        (
            merged(
                job("bad-builder"),
                "buildSettings",
                json!({"buildpack": {"builder": "HEROKU_99"}}),
            ),
            "buildSettings.buildpack.builder",
            "must be one of",
        ),
        (
            merged(
                job("bad-docker-creds"),
                "buildConfiguration",
                json!({"dockerCredentials": ["a_b"]}),
            ),
            "buildConfiguration.dockerCredentials[0]",
            "must match pattern",
        ),
        (
            merged(
                job("bad-files"),
                "runtimeFiles",
                json!({"/etc/x": {"encoding": "utf-8"}}),
            ),
            "runtimeFiles./etc/x.data",
            "is required",
        ),
    ];
    for (body, path, rule) in rejected {
        let a = api
            .post(&format!("/v1/projects/{PROJECT}/jobs"), body.clone())
            .await;
        assert_eq!(a.status, 400, "{body} should be rejected");
        let message = a.message();
        assert!(
            message.contains(&format!("{path}: ")) && message.contains(rule),
            "{path} / {rule} not in {message:?}"
        );
        let fields = a.body["error"]["details"]["fields"].as_array().unwrap();
        assert!(
            fields.iter().any(|f| f["path"] == path),
            "details lack {path}: {fields:?}"
        );
        assert!(
            a.body["error"]["id"]
                .as_str()
                .is_some_and(|id| id.len() == 36)
        );
        assert_eq!(a.body["error"]["status"], 400);
    }
    // The vcs body above also reports its second problem in the same answer.
    let a = api
        .post(
            &format!("/v1/projects/{PROJECT}/jobs"),
            with(job("two-problems"), "/deployment", json!({"vcs": {"projectUrl": "https://github.com/a/b", "projectType": "svn", "projectBranch": "main", "vcsLinkId": "short"}})),
        )
        .await;
    assert!(
        a.message()
            .contains("deployment.vcs.vcsLinkId: must be at least 24"),
        "{}",
        a.message()
    );
    assert!(em.snapshot().jobs.is_empty(), "nothing invalid was stored");
}

trait Pipe: Sized {
    fn pipe(self, f: impl FnOnce(Self) -> Self) -> Self {
        f(self)
    }
}
impl Pipe for Value {}

#[tokio::test]
async fn malformed_json_is_a_400_envelope() {
    let (_em, api) = emulator(fast_config()).await;
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/projects/{PROJECT}/jobs", api.base))
        .bearer_auth(crate::common::TOKEN)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not valid JSON")
    );
}

#[tokio::test]
async fn name_length_is_a_knob() {
    let (_em, api) = emulator(Config {
        name_max_len: 20,
        ..fast_config()
    })
    .await;
    let a = api
        .post(
            &format!("/v1/projects/{PROJECT}/jobs"),
            job("pf-0b9f6a2e-1c3d-4e5f-8a9b"),
        )
        .await;
    assert_eq!(a.status, 400);
    assert!(a.message().contains("at most 20"));
}

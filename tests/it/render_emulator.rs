//! Every body the renderer produces is one the documented API accepts: a table of variable
//! combinations (sources × docker configurations × GPUs × free text × architectures ×
//! settings), each rendered and sent to the emulator, whose validator follows the reference
//! independently of our code.

use prefect_nf::config::{PrefectAuth, Secret};
use prefect_nf::render::dry_run::Offline;
use prefect_nf::render::{resolve_configuration, to_northflank};
use serde_json::{Map, Value, json};

fn merge(parts: &[&Value]) -> Map<String, Value> {
    let mut out = Map::new();
    for part in parts {
        out.extend(part.as_object().unwrap().clone());
    }
    out
}

#[tokio::test]
async fn the_emulator_accepts_every_rendered_job_and_run() {
    let sources = [
        json!({}),
        json!({"deployment_external_image_path": "ghcr.io/acme/etl:1.2", "deployment_external_credentials": "ghcr-creds"}),
        json!({"deployment_external_image_path": "prefecthq/prefect@sha256:0123abcd"}),
        json!({"deployment_internal_id": "builder", "deployment_internal_branch": "main"}),
        json!({"deployment_internal_id": "builder", "deployment_internal_build_sha": "latest"}),
        json!({"deployment_vcs_project_url": "https://github.com/org/repo", "deployment_vcs_project_type": "github", "deployment_vcs_project_branch": "main"}),
        json!({"deployment_vcs_project_url": "https://gitlab.com/org/repo", "deployment_vcs_project_type": "gitlab", "deployment_vcs_project_branch": "dev",
               "build_buildpack_builder": "HEROKU_24", "billing_build_plan": "nf-compute-400-16", "build_configuration_docker_credentials": ["hub"]}),
    ];
    let dockers = [
        json!({}),
        json!({"deployment_docker_custom_command": "python -m etl --date '2026-11-27'"}),
        json!({"deployment_docker_config_type": "default"}),
        json!({"deployment_docker_config_type": "customEntrypoint", "deployment_docker_custom_entrypoint": "/entry.sh"}),
        json!({"deployment_docker_config_type": "customEntrypointCustomCommand", "deployment_docker_custom_entrypoint": "/bin/sh"}),
    ];
    let gpus = [
        json!({}),
        json!({"billing_deployment_plan": "nf-gpu-h100-80-1g", "billing_gpu_enabled": true, "billing_gpu_type": "h100-80"}),
        json!({"billing_deployment_plan": "nf-gpu-l4-24-4g", "billing_gpu_enabled": true, "billing_gpu_type": "l4-24", "billing_gpu_count": 4, "billing_gpu_timesliced": false}),
    ];
    let texts = [
        json!({}),
        json!({"name": "run #7 @ acme {prod}", "description": "ÉTL <nightly> | ~$", "tags": ["team_data", "x", "Prod Env!", "a--b"]}),
    ];
    let arches = [
        json!({}),
        json!({"infrastructure_architecture": "x86"}),
        json!({"infrastructure_architecture": "arm"}),
    ];
    let settings = [
        json!({}),
        json!({"settings_backoff_limit": null, "settings_active_deadline_seconds": null, "settings_run_on_source_change": null}),
        json!({"settings_backoff_limit": 0, "settings_active_deadline_seconds": 60, "settings_run_on_source_change": "always",
               "env": {"A": 1, "B": null}, "runtime_environment": {"C": "x"}, "cleanup_job": false}),
    ];

    let emulator = nf_emulator::start(nf_emulator::Config {
        rate_limit_per_hour: 1_000_000,
        ..Default::default()
    })
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let template = prefect_nf::setup::pool::template(Some("proj"));
    let no_env = |_: &str| None;
    let mut checked = 0;
    for source in &sources {
        for docker in &dockers {
            for gpu in &gpus {
                for text in &texts {
                    for arch in &arches {
                        for setting in &settings {
                            let variables = merge(&[source, docker, gpu, text, arch, setting]);
                            let config = resolve_configuration(
                                &template,
                                &variables,
                                &Map::new(),
                                &Offline,
                                &no_env,
                            )
                            .await
                            .unwrap();
                            let facts = crate::helpers::run_facts(
                                "weird_name.with:colons",
                                PrefectAuth::AuthString(Secret::new("u:p")),
                            );
                            let rendered = to_northflank(&config, &facts)
                                .unwrap_or_else(|e| panic!("{variables:?}: {e}"));
                            let base = format!(
                                "{}/v1/projects/{}/jobs",
                                emulator.base_url(),
                                rendered.project_id
                            );
                            let job = http
                                .put(&base)
                                .bearer_auth("nf-test-token")
                                .json(&rendered.create_job)
                                .send()
                                .await
                                .unwrap();
                            let status = job.status();
                            let answer: Value = job.json().await.unwrap();
                            assert_eq!(
                                status, 200,
                                "{variables:?}\n{}\n{answer}",
                                rendered.create_job
                            );
                            let id = answer["data"]["id"].as_str().unwrap().to_string();
                            assert_eq!(id, rendered.job_name.to_string());
                            let run = http
                                .post(format!("{base}/{id}/runs"))
                                .bearer_auth("nf-test-token")
                                .json(&rendered.start_run)
                                .send()
                                .await
                                .unwrap();
                            assert_eq!(run.status(), 200, "{}", rendered.start_run);
                            checked += 1;
                        }
                    }
                }
            }
        }
    }
    assert_eq!(
        checked,
        sources.len() * dockers.len() * gpus.len() * texts.len() * arches.len() * settings.len()
    );
    assert_eq!(emulator.counters().jobs_created, checked as u64);
}

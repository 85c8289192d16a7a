//! A resolved job configuration → the Northflank create-job and start-run bodies.
//!
//! Pure: facts in, bodies out. Every rule Northflank documents that we can check is checked here,
//! so an invalid configuration fails with a message naming the variable before any request.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::fields::{Fields, invalid_value};
use super::{RenderError, Rendered, RunCredentials, RunFacts, rules};
use crate::config::Secret;
use crate::ids::JobName;
use crate::ownership::Marker;

/// The image used when no deployment source is configured (the Python worker's default).
pub const DEFAULT_IMAGE: &str = "prefecthq/prefect:3-python3.12";
/// Prefect 3.9's flow-run command (`BaseJobConfiguration._base_flow_run_command`).
pub const FLOW_RUN_COMMAND: &str = "prefect flow-run execute";
/// Variables that hold Prefect credentials. They go to the run, never the stored job definition.
pub const SECRET_ENV: &[&str] = &["PREFECT_API_KEY", "PREFECT_API_AUTH_STRING"];

type Env = BTreeMap<String, String>;

pub fn to_northflank(
    config: &Map<String, Value>,
    facts: &RunFacts,
) -> Result<Rendered, RenderError> {
    let f = Fields(config);
    let mut warnings = Vec::new();
    let project_id = project(&f)?;
    let (job_env, run_env) = environment(&f, facts)?;
    let command = f
        .command("command")?
        .unwrap_or_else(|| FLOW_RUN_COMMAND.to_string());
    let mut deployment = source(&f, &mut warnings)?;
    deployment.insert("docker".into(), docker(&f, &command)?);
    let mut billing = billing(&f)?;

    let job_name = JobName::for_flow_run(facts.flow_run_id);
    let mut body = Map::new();
    body.insert("name".into(), json!(job_name.to_string()));
    describe(&f, facts, &mut body, &mut warnings)?;
    if let Some(arch) = architecture(&f)? {
        body.insert("infrastructure".into(), json!({"architecture": arch}));
    }
    if deployment.contains_key("vcs") {
        vcs_build(&f, &mut body, &mut billing)?;
    }
    docker_credentials(&f, &mut body)?;
    body.insert("billing".into(), Value::Object(billing));
    body.insert("deployment".into(), Value::Object(deployment));
    body.insert("runtimeEnvironment".into(), json!(job_env));
    body.insert("settings".into(), settings(&f)?);

    Ok(Rendered {
        project_id,
        job_name,
        create_job: Value::Object(body),
        start_run: json!({"runtimeEnvironment": run_env}),
        cleanup_job: f.bool("cleanup_job")?.unwrap_or(true),
        credentials: credentials(&f)?,
        warnings,
    })
}

/// `x86` or `arm`, in any case: the Python worker lower-cases it (`X86` works there).
fn architecture(f: &Fields) -> Result<Option<String>, RenderError> {
    let Some(arch) = f.string("infrastructure_architecture")? else {
        return Ok(None);
    };
    match arch.to_ascii_lowercase().as_str() {
        a @ ("x86" | "arm") => Ok(Some(a.to_string())),
        _ => Err(invalid_value(
            "infrastructure_architecture",
            &arch,
            "must be x86 or arm (in any case)",
        )),
    }
}

fn project(f: &Fields) -> Result<String, RenderError> {
    let project_id = f.string("project_id")?.ok_or_else(|| RenderError::Invalid {
        variable: "project_id".into(),
        value: "null".into(),
        rule: "is required: set the Northflank project in the work pool's or the deployment's job variables".into(),
    })?;
    check(
        &rules::PROJECT_ID,
        "project_id",
        &project_id,
        "must contain only letters, digits and '-'",
    )?;
    Ok(project_id)
}

/// The deployment plan, and the GPU when one is asked for.
fn billing(f: &Fields) -> Result<Map<String, Value>, RenderError> {
    let mut billing = Map::new();
    let plan = f.string("billing_deployment_plan")?.ok_or_else(|| {
        invalid_value(
            "billing_deployment_plan",
            "null",
            "is required, e.g. nf-compute-20",
        )
    })?;
    check(
        &rules::PLAN,
        "billing_deployment_plan",
        &plan,
        "must be a Northflank plan id such as nf-compute-20",
    )?;
    billing.insert("deploymentPlan".into(), json!(plan));
    if let Some(gpu) = gpu(f)? {
        billing.insert("gpu".into(), gpu);
    }
    Ok(billing)
}

/// The description (with our marker) and the tags.
fn describe(
    f: &Fields,
    facts: &RunFacts,
    body: &mut Map<String, Value>,
    warnings: &mut Vec<String>,
) -> Result<(), RenderError> {
    let name = f
        .string("name")?
        .unwrap_or_else(|| facts.flow_run_name.clone());
    let description = match f.string("description")? {
        Some(d) => d,
        None => format!("Prefect flow run '{name}' ({})", facts.flow_run_id),
    };
    if let Some(d) = marked_description(&description, facts.marker) {
        body.insert("description".into(), json!(d));
    }
    let tags = tags(f, warnings)?;
    if !tags.is_empty() {
        body.insert("tags".into(), json!(tags));
    }
    Ok(())
}

fn docker_credentials(f: &Fields, body: &mut Map<String, Value>) -> Result<(), RenderError> {
    let ids = f.string_list("build_configuration_docker_credentials")?;
    for id in &ids {
        check(
            &rules::CREDENTIALS_ID,
            "build_configuration_docker_credentials",
            id,
            "each id must contain only letters, digits and '-'",
        )?;
    }
    if !ids.is_empty() {
        body.insert(
            "buildConfiguration".into(),
            json!({"dockerCredentials": ids}),
        );
    }
    Ok(())
}

/// The chosen description made valid, then this installation's ownership marker, within
/// Northflank's 200 characters: the marker is how the sweep tells our jobs from others'.
fn marked_description(text: &str, marker: Option<Marker>) -> Option<String> {
    let Some(marker) = marker else {
        return rules::description(text);
    };
    let room = rules::DESCRIPTION_MAX - Marker::LEN - 1;
    Some(match rules::description(text) {
        Some(d) => {
            let cut: String = d.chars().take(room).collect();
            format!("{} {marker}", cut.trim_end())
        }
        None => marker.to_string(),
    })
}

fn check(re: &regex::Regex, variable: &str, value: &str, rule: &str) -> Result<(), RenderError> {
    if re.is_match(value) {
        Ok(())
    } else {
        Err(invalid_value(variable, value, rule))
    }
}

/// Prefect's order (`prepare_for_flow_run`): the worker's Prefect settings, the flow-run id, the
/// attribution variables, then the rendered `env`; `runtime_environment` wins over all of them,
/// and a `null` unsets. Credentials are then moved to the run's own environment.
fn environment(f: &Fields, facts: &RunFacts) -> Result<(Env, Env), RenderError> {
    let mut env = facts.settings_env.clone();
    let mut put = |k: &str, v: &str| {
        env.insert(k.to_string(), v.to_string());
    };
    put("PREFECT_API_URL", &facts.api_url);
    if let Some((k, v)) = facts.auth.container_env() {
        put(k, v);
    }
    put("PREFECT__FLOW_RUN_ID", &facts.flow_run_id.to_string());
    put("PREFECT__WORKER_NAME", &facts.worker_name);
    put("PREFECT__FLOW_ID", &facts.flow_id.to_string());
    put("PREFECT__FLOW_NAME", &facts.flow_name);
    if let Some(id) = facts.deployment_id {
        put("PREFECT__DEPLOYMENT_ID", &id.to_string());
    }
    if let Some(name) = &facts.deployment_name {
        put("PREFECT__DEPLOYMENT_NAME", name);
    }
    for key in ["env", "runtime_environment"] {
        for (k, v) in f.env(key)? {
            match v {
                Some(v) => env.insert(k, v),
                None => env.remove(&k),
            };
        }
    }
    let run_env = SECRET_ENV
        .iter()
        .filter_map(|k| env.remove(*k).map(|v| (k.to_string(), v)))
        .collect();
    Ok((env, run_env))
}

/// Variables that only mean something with their anchor: set without it, they would be
/// dropped and the default image would run instead, so they are an error naming the anchor.
const ANCHORED: &[(&str, &[&str])] = &[
    (
        "deployment_internal_id",
        &[
            "deployment_internal_branch",
            "deployment_internal_build_sha",
            "deployment_internal_build_id",
        ],
    ),
    (
        "deployment_vcs_project_url",
        &[
            "deployment_vcs_project_type",
            "deployment_vcs_project_branch",
            "deployment_vcs_self_hosted_vcs_id",
            "deployment_vcs_account_login",
            "deployment_vcs_vcs_link_id",
            "build_dockerfile_path",
            "build_docker_work_dir",
            "build_buildpack_builder",
            "billing_build_plan",
        ],
    ),
];

fn anchors(f: &Fields) -> Result<(), RenderError> {
    for (anchor, dependents) in ANCHORED {
        if f.string(anchor)?.is_some() {
            continue;
        }
        for dependent in *dependents {
            if let Some(value) = f.string(dependent)? {
                return Err(invalid_value(
                    dependent,
                    &value,
                    format!(
                        "needs `{anchor}`, which is not set: set it too, or remove `{dependent}`"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Exactly one of the external image, the internal build and the Git build.
fn source(f: &Fields, warnings: &mut Vec<String>) -> Result<Map<String, Value>, RenderError> {
    anchors(f)?;
    let image = f.string("deployment_external_image_path")?;
    let internal = f.string("deployment_internal_id")?;
    let vcs = f.string("deployment_vcs_project_url")?;
    let chosen: Vec<&str> = [
        image.as_ref().map(|_| "deployment_external_image_path"),
        internal.as_ref().map(|_| "deployment_internal_id"),
        vcs.as_ref().map(|_| "deployment_vcs_project_url"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if chosen.len() > 1 {
        return Err(RenderError::Invalid {
            variable: chosen.join(", "),
            value: chosen.len().to_string() + " sources",
            rule: "a job runs exactly one deployment source: set only one of the external image, the internal build service or the Git repository".into(),
        });
    }
    let external_credentials = f.string("deployment_external_credentials")?;
    let mut out = Map::new();
    if let Some(id) = internal {
        check(
            &rules::INTERNAL_ID,
            "deployment_internal_id",
            &id,
            "must be a Northflank build service id (a letter, then letters, digits and single '-')",
        )?;
        let mut internal = json!({"id": id});
        if let Some(branch) = f.string("deployment_internal_branch")? {
            internal["branch"] = json!(branch);
        }
        if let Some(sha) = f.string("deployment_internal_build_sha")? {
            check(
                &rules::BUILD_SHA,
                "deployment_internal_build_sha",
                &sha,
                "must be a 40-character commit SHA or 'latest'",
            )?;
            internal["buildSHA"] = json!(sha);
        }
        if let Some(build) = f.string("deployment_internal_build_id")? {
            internal["buildId"] = json!(build);
        }
        out.insert("internal".into(), internal);
    } else if let Some(url) = vcs {
        out.insert("vcs".into(), vcs_source(f, &url)?);
    } else {
        let image = image.unwrap_or_else(|| DEFAULT_IMAGE.to_string());
        check(
            &rules::IMAGE_PATH,
            "deployment_external_image_path",
            &image,
            "must be an image reference with a tag or digest, e.g. prefecthq/prefect:3-python3.12",
        )?;
        let mut external = json!({"imagePath": image});
        if let Some(creds) = &external_credentials {
            check(
                &rules::CREDENTIALS_ID,
                "deployment_external_credentials",
                creds,
                "must be the id of saved registry credentials (letters, digits and '-')",
            )?;
            external["credentials"] = json!(creds);
        }
        out.insert("external".into(), external);
        return Ok(out);
    }
    if external_credentials.is_some() {
        warnings.push(
            "deployment_external_credentials is ignored: the job does not run an external image"
                .into(),
        );
    }
    Ok(out)
}

fn vcs_source(f: &Fields, url: &str) -> Result<Value, RenderError> {
    check(
        &rules::VCS_URL,
        "deployment_vcs_project_url",
        url,
        "must be a repository URL such as https://github.com/org/repo",
    )?;
    let required = |key: &str, what: &str| {
        f.string(key)?.ok_or_else(|| {
            invalid_value(key, "null", format!("is required for a Git build: {what}"))
        })
    };
    let kind = required(
        "deployment_vcs_project_type",
        "github, gitlab, bitbucket, self-hosted or azure",
    )?;
    if !rules::VCS_TYPES.contains(&kind.as_str()) {
        return Err(invalid_value(
            "deployment_vcs_project_type",
            &kind,
            "must be one of github, gitlab, bitbucket, self-hosted, azure",
        ));
    }
    let branch = required("deployment_vcs_project_branch", "the branch to build")?;
    let mut vcs = json!({"projectUrl": url, "projectType": kind, "projectBranch": branch});
    if let Some(id) = f.string("deployment_vcs_self_hosted_vcs_id")? {
        check(
            &rules::SELF_HOSTED_VCS_ID,
            "deployment_vcs_self_hosted_vcs_id",
            &id,
            "must be a self-hosted VCS id",
        )?;
        vcs["selfHostedVcsId"] = json!(id);
    } else if kind == "self-hosted" {
        return Err(invalid_value(
            "deployment_vcs_self_hosted_vcs_id",
            "null",
            "is required when deployment_vcs_project_type is self-hosted",
        ));
    }
    if let Some(login) = f.string("deployment_vcs_account_login")? {
        vcs["accountLogin"] = json!(login);
    }
    if let Some(link) = f.string("deployment_vcs_vcs_link_id")? {
        if link.chars().count() != 24 {
            return Err(invalid_value(
                "deployment_vcs_vcs_link_id",
                &link,
                "must be exactly 24 characters",
            ));
        }
        vcs["vcsLinkId"] = json!(link);
    }
    Ok(vcs)
}

/// A Git job builds its own image: a Dockerfile (default `/Dockerfile` in `/`) or a buildpack.
fn vcs_build(
    f: &Fields,
    body: &mut Map<String, Value>,
    billing: &mut Map<String, Value>,
) -> Result<(), RenderError> {
    let settings = match f.string("build_buildpack_builder")? {
        Some(builder) => {
            if !rules::BUILDPACK_BUILDERS.contains(&builder.as_str()) {
                return Err(invalid_value(
                    "build_buildpack_builder",
                    &builder,
                    format!("must be one of {}", rules::BUILDPACK_BUILDERS.join(", ")),
                ));
            }
            json!({"buildpack": {"builder": builder}})
        }
        None => {
            let path = f
                .string("build_dockerfile_path")?
                .unwrap_or_else(|| "/Dockerfile".into());
            check(
                &rules::DOCKERFILE_PATH,
                "build_dockerfile_path",
                &path,
                "must be an absolute path in the repository, e.g. /Dockerfile",
            )?;
            let dir = f
                .string("build_docker_work_dir")?
                .unwrap_or_else(|| "/".into());
            check(
                &rules::DOCKER_WORK_DIR,
                "build_docker_work_dir",
                &dir,
                "must be an absolute directory in the repository, e.g. /",
            )?;
            json!({"dockerfile": {"dockerFilePath": path, "dockerWorkDir": dir}})
        }
    };
    body.insert("buildSettings".into(), settings);
    if let Some(plan) = f.string("billing_build_plan")? {
        check(
            &rules::PLAN,
            "billing_build_plan",
            &plan,
            "must be a Northflank plan id with at least 4 vCPU, e.g. nf-compute-400-16",
        )?;
        billing.insert("buildPlan".into(), json!(plan));
    }
    Ok(())
}

/// The user's docker configuration is honoured; the flow-run command fills the command slot
/// unless the user gave a custom one.
fn docker(f: &Fields, command: &str) -> Result<Value, RenderError> {
    let kind = f
        .string("deployment_docker_config_type")?
        .unwrap_or_else(|| "customCommand".into());
    if !rules::DOCKER_CONFIG_TYPES.contains(&kind.as_str()) {
        return Err(invalid_value(
            "deployment_docker_config_type",
            &kind,
            format!("must be one of {}", rules::DOCKER_CONFIG_TYPES.join(", ")),
        ));
    }
    let custom_command = f
        .string("deployment_docker_custom_command")?
        .unwrap_or_else(|| command.to_string());
    let entrypoint = || {
        f.string("deployment_docker_custom_entrypoint")?
            .ok_or_else(|| {
                invalid_value(
                    "deployment_docker_custom_entrypoint",
                    "null",
                    format!("is required when deployment_docker_config_type is {kind}"),
                )
            })
    };
    Ok(match kind.as_str() {
        "default" => json!({"configType": "default"}),
        "customCommand" => json!({"configType": kind, "customCommand": custom_command}),
        "customEntrypoint" => json!({"configType": kind, "customEntrypoint": entrypoint()?}),
        _ => {
            json!({"configType": kind, "customEntrypoint": entrypoint()?, "customCommand": custom_command})
        }
    })
}

fn gpu(f: &Fields) -> Result<Option<Value>, RenderError> {
    if !f.bool("billing_gpu_enabled")?.unwrap_or(false) {
        return Ok(None);
    }
    let kind = f.string("billing_gpu_type")?.ok_or_else(|| {
        invalid_value(
            "billing_gpu_type",
            "null",
            "is required when billing_gpu_enabled is true, e.g. h100-80",
        )
    })?;
    let count = f.integer("billing_gpu_count", 1, 8)?.unwrap_or(1);
    if ![1, 2, 4, 8].contains(&count) {
        return Err(invalid_value(
            "billing_gpu_count",
            &count.to_string(),
            "must be 1, 2, 4 or 8 (GPUs come in those counts)",
        ));
    }
    let mut configuration = json!({"gpuType": kind, "gpuCount": count});
    if let Some(t) = f.bool("billing_gpu_timesliced")? {
        configuration["timesliced"] = json!(t);
    }
    Ok(Some(
        json!({"enabled": true, "configuration": configuration}),
    ))
}

fn tags(f: &Fields, warnings: &mut Vec<String>) -> Result<Vec<String>, RenderError> {
    let mut out: Vec<String> = Vec::new();
    for raw in f.string_list("tags")? {
        match rules::tag(&raw) {
            Some(t) if !out.contains(&t) => out.push(t),
            Some(_) => {}
            None => warnings.push(format!(
                "tag {raw:?} was left out: Northflank tags need at least 3 letters or digits"
            )),
        }
    }
    Ok(out)
}

fn settings(f: &Fields) -> Result<Value, RenderError> {
    // Northflank requires backoffLimit whenever settings are sent; an unset limit means none.
    let mut settings =
        json!({"backoffLimit": f.integer("settings_backoff_limit", 0, 1000)?.unwrap_or(0)});
    if let Some(secs) = f.integer("settings_active_deadline_seconds", 1, i64::from(i32::MAX))? {
        settings["activeDeadlineSeconds"] = json!(secs);
    }
    if let Some(when) = f.string("settings_run_on_source_change")? {
        if !rules::RUN_ON_SOURCE_CHANGE.contains(&when.as_str()) {
            return Err(invalid_value(
                "settings_run_on_source_change",
                &when,
                "must be never, cd-promote or always",
            ));
        }
        settings["runOnSourceChange"] = json!(when);
    }
    Ok(settings)
}

/// The Northflank credentials a resolved job configuration names, if any.
pub fn run_credentials(config: &Map<String, Value>) -> Result<Option<RunCredentials>, RenderError> {
    credentials(&Fields(config))
}

fn credentials(f: &Fields) -> Result<Option<RunCredentials>, RenderError> {
    let Some(block) = f.object("credentials")? else {
        return Ok(None);
    };
    let block = Fields(&block);
    let Some(token) = block.string("api_token")? else {
        return Err(invalid_value(
            "credentials",
            "{…}",
            "the credentials block must have an api_token",
        ));
    };
    let base_url = block.string("base_url")?;
    if let Some(url) = &base_url
        && !(url.starts_with("https://") || url.starts_with("http://"))
    {
        return Err(invalid_value(
            "credentials.base_url",
            url,
            "must be an http(s) URL",
        ));
    }
    Ok(Some(RunCredentials {
        api_token: Secret::new(token),
        base_url,
    }))
}

//! Job create/put body (§2.2 and §8).

use serde_json::{Map, Value};

use super::deployment::{Context, check_deployment, check_gpu};
use super::patterns::{
    CRON_SCHEDULE, DESCRIPTION, DOCKER_WORKDIR, DOCKERFILE_PATH, JOB_NAME, RESOURCE_ID, SLUG,
};
use super::{Issues, body_object, field, join, official_issues};
use crate::error::ApiError;

const BUILDPACK_BUILDERS: &[&str] = &[
    "HEROKU_24",
    "HEROKU_22",
    "HEROKU_22_CLASSIC",
    "HEROKU_20",
    "HEROKU_18",
    "GOOGLE_22",
    "GOOGLE_V1",
    "CNB_ALPINE",
    "CNB_BIONIC",
    "PAKETO_JAMMY_TINY",
    "PAKETO_JAMMY_BASE",
    "PAKETO_JAMMY_FULL",
    "PAKETO_TINY",
    "PAKETO_BASE",
    "PAKETO_FULL",
];
const STORAGE_SIZES: &[i64] = &[16384, 32768, 65536, 131072, 262144, 524288];

/// `endpoint` is the create or the put route: their official types differ in name only.
pub fn validate_job(
    body: &Value,
    name_max_len: usize,
    endpoint: &str,
    strict: bool,
) -> Result<(), ApiError> {
    let mut issues = official_issues(body, endpoint, strict);
    if let Some(job) = body_object(&mut issues, body) {
        check_job(&mut issues, job, name_max_len);
    }
    issues.into_result()
}

fn check_job(issues: &mut Issues, job: &Map<String, Value>, name_max_len: usize) {
    if let Some(name) = issues.req_str(job, "name", "") {
        check_name(issues, name, "name", name_max_len);
    }
    if let Some(description) = issues.opt_str(job, "description", "") {
        issues.length(description, "description", 0, 200);
        issues.pattern(description, "description", &DESCRIPTION);
    }
    if let Some(stage) = issues.opt_str(job, "stageId", "") {
        issues.length(stage, "stageId", 3, 100);
        issues.pattern(stage, "stageId", &SLUG);
    }
    issues.opt_str_items(job, "tags", "", |issues, tag, path| {
        issues.length(tag, path, 3, 100);
        issues.pattern(tag, path, &SLUG);
    });
    if let Some(infra) = field(job, "infrastructure")
        && let Some(infra) = issues.object(infra, "infrastructure")
    {
        issues.opt_enum(infra, "architecture", "infrastructure", &["x86", "arm"]);
    }
    if let Some(billing) = issues.required(job, "billing", "") {
        check_billing(issues, billing);
    }
    if let Some(deployment) = field(job, "deployment") {
        check_deployment(issues, deployment, "deployment", Context::Job);
    }
    issues.opt_bool(job, "disabledCI", "");
    if let Some(v) = field(job, "settings") {
        check_settings(issues, v);
    }
    if let Some(v) = field(job, "buildSettings") {
        check_build_settings(issues, v);
    }
    if let Some(v) = field(job, "buildConfiguration") {
        check_build_configuration(issues, v);
    }
    for key in ["runtimeEnvironment", "buildArguments"] {
        if let Some(v) = field(job, key) {
            issues.string_map(v, key);
        }
    }
    for key in ["runtimeFiles", "buildFiles", "dockerSecretMounts"] {
        if let Some(v) = field(job, key) {
            issues.file_map(v, key);
        }
    }
    if let Some(v) = field(job, "healthChecks") {
        issues.array(v, "healthChecks");
    }
}

/// Names of jobs and of notification integrations share the pattern, not the length limit.
pub fn check_name(issues: &mut Issues, name: &str, path: &str, max_len: usize) {
    issues.length(name, path, 3, max_len);
    issues.pattern(name, path, &JOB_NAME);
}

/// `billing.deploymentPlan` is also checked on run overrides.
pub fn check_plan(issues: &mut Issues, billing: &Map<String, Value>, key: &str, required: bool) {
    let plan = if required {
        issues.req_str(billing, key, "billing")
    } else {
        issues.opt_str(billing, key, "billing")
    };
    if let Some(plan) = plan {
        let path = join("billing", key);
        issues.length(plan, &path, 3, 100);
        issues.pattern(plan, &path, &SLUG);
    }
}

fn check_billing(issues: &mut Issues, v: &Value) {
    let Some(billing) = issues.object(v, "billing") else {
        return;
    };
    check_plan(issues, billing, "deploymentPlan", true);
    check_plan(issues, billing, "buildPlan", false);
    if let Some(gpu) = field(billing, "gpu") {
        check_gpu(issues, gpu, "billing.gpu");
    }
}

fn check_settings(issues: &mut Issues, v: &Value) {
    let Some(s) = issues.object(v, "settings") else {
        return;
    };
    if let Some(limit) = issues.required(s, "backoffLimit", "settings")
        && let Some(n) = issues.integer(limit, "settings.backoffLimit")
        && n < 0
    {
        issues.push("settings.backoffLimit", "must be at least 0");
    }
    if let Some(deadline) = field(s, "activeDeadlineSeconds")
        && let Some(n) = issues.integer(deadline, "settings.activeDeadlineSeconds")
        && n < 1
    {
        issues.push(
            "settings.activeDeadlineSeconds",
            "must be at least 1 or null",
        );
    }
    issues.opt_enum(
        s,
        "runOnSourceChange",
        "settings",
        &["never", "cd-promote", "always"],
    );
    if let Some(cron) = field(s, "cron")
        && let Some(cron) = issues.object(cron, "settings.cron")
    {
        if let Some(schedule) = issues.opt_str(cron, "schedule", "settings.cron") {
            issues.pattern(schedule, "settings.cron.schedule", &CRON_SCHEDULE);
        }
        issues.opt_bool(cron, "suspended", "settings.cron");
        issues.opt_enum(
            cron,
            "concurrencyPolicy",
            "settings.cron",
            &["allow", "forbid", "replace"],
        );
    }
}

fn check_build_settings(issues: &mut Issues, v: &Value) {
    let Some(b) = issues.object(v, "buildSettings") else {
        return;
    };
    let has_dockerfile = field(b, "dockerfile").is_some();
    let has_buildpack = field(b, "buildpack").is_some();
    if has_dockerfile == has_buildpack {
        issues.push(
            "buildSettings",
            "must contain exactly one of dockerfile or buildpack",
        );
    }
    if let Some(d) = field(b, "dockerfile")
        && let Some(d) = issues.object(d, "buildSettings.dockerfile")
    {
        let path = "buildSettings.dockerfile";
        if let Some(p) = issues.req_str(d, "dockerFilePath", path) {
            issues.pattern(p, &join(path, "dockerFilePath"), &DOCKERFILE_PATH);
        }
        if let Some(p) = issues.req_str(d, "dockerWorkDir", path) {
            issues.pattern(p, &join(path, "dockerWorkDir"), &DOCKER_WORKDIR);
        }
        issues.opt_enum(d, "buildEngine", path, &["buildkit", "kaniko"]);
    }
    if let Some(p) = field(b, "buildpack")
        && let Some(p) = issues.object(p, "buildSettings.buildpack")
    {
        let path = "buildSettings.buildpack";
        issues.opt_enum(p, "builder", path, BUILDPACK_BUILDERS);
        issues.opt_str_items(p, "buildpackLocators", path, |_, _, _| {});
        issues.opt_bool(p, "useCache", path);
    }
}

fn check_build_configuration(issues: &mut Issues, v: &Value) {
    let path = "buildConfiguration";
    let Some(c) = issues.object(v, path) else {
        return;
    };
    issues.opt_str_items(c, "dockerCredentials", path, |issues, s, p| {
        issues.pattern(s, p, &RESOURCE_ID);
    });
    issues.opt_str_items(c, "pathIgnoreRules", path, |issues, s, p| {
        issues.length(s, p, 0, 260);
    });
    issues.opt_str_items(c, "ciIgnoreFlags", path, |issues, s, p| {
        issues.length(s, p, 0, 72);
    });
    for key in [
        "isAllowList",
        "ciIgnoreFlagsEnabled",
        "includeGitFolder",
        "fullGitClone",
        "enableGitLfs",
    ] {
        issues.opt_bool(c, key, path);
    }
    let storage_path = "buildConfiguration.storage";
    let storage = field(c, "storage").and_then(|s| issues.object(s, storage_path));
    let ephemeral_path = "buildConfiguration.storage.ephemeralStorage";
    let ephemeral = storage
        .and_then(|s| field(s, "ephemeralStorage"))
        .and_then(|e| issues.object(e, ephemeral_path));
    if let Some(size) = ephemeral.and_then(|e| field(e, "storageSize")) {
        let size_path = "buildConfiguration.storage.ephemeralStorage.storageSize";
        if let Some(n) = issues.integer(size, size_path)
            && !STORAGE_SIZES.contains(&n)
        {
            issues.push(
                size_path,
                "must be one of 16384, 32768, 65536, 131072, 262144, 524288",
            );
        }
    }
}

//! The `deployment` object (§2.2), shared by job bodies and run overrides (§3.1).

use serde_json::Value;

use super::patterns::{
    BUILD_SHA, IMAGE_PATH, INTERNAL_ID, PROJECT_URL, RESOURCE_ID, SELF_HOSTED_VCS_ID,
};
use super::{Issues, field, join};

const DOCKER_CONFIG_TYPES: &[&str] = &[
    "default",
    "customEntrypoint",
    "customCommand",
    "customEntrypointCustomCommand",
];
const BUILDPACK_CONFIG_TYPES: &[&str] = &[
    "default",
    "customProcess",
    "customCommand",
    "customEntrypointCustomCommand",
    "originalEntrypointCustomCommand",
];
const VCS_TYPES: &[&str] = &["bitbucket", "gitlab", "github", "self-hosted", "azure"];

/// Where the deployment is checked from.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Context {
    /// A job body: exactly one source of external/internal/vcs.
    Job,
    /// A run override: at most one of external/internal, no vcs.
    Run,
}

pub fn check_deployment(issues: &mut Issues, v: &Value, path: &str, context: Context) {
    let Some(d) = issues.object(v, path) else {
        return;
    };
    let sources: Vec<&str> = ["external", "internal", "vcs"]
        .into_iter()
        .filter(|k| field(d, k).is_some())
        .collect();
    match context {
        Context::Job if sources.len() != 1 => issues.push(
            path,
            format!(
                "must contain exactly one source of external, internal or vcs (got {})",
                describe(&sources)
            ),
        ),
        Context::Run if sources.contains(&"vcs") => issues.push(
            &join(path, "vcs"),
            "is not allowed in a run override; use external or internal",
        ),
        Context::Run if sources.len() > 1 => issues.push(
            path,
            format!(
                "must contain at most one source of external or internal (got {})",
                describe(&sources)
            ),
        ),
        _ => {}
    }
    if let Some(v) = field(d, "external") {
        check_external(issues, v, &join(path, "external"));
    }
    if let Some(v) = field(d, "internal") {
        check_internal(issues, v, &join(path, "internal"));
    }
    if context == Context::Job
        && let Some(v) = field(d, "vcs")
    {
        check_vcs(issues, v, &join(path, "vcs"));
    }
    if let Some(v) = field(d, "docker") {
        check_docker(issues, v, &join(path, "docker"));
    }
    if let Some(v) = field(d, "buildpack") {
        check_buildpack(issues, v, &join(path, "buildpack"));
    }
    if let Some(v) = field(d, "gpu") {
        check_gpu(issues, v, &join(path, "gpu"));
    }
    if let Some(v) = field(d, "storage") {
        check_storage(issues, v, &join(path, "storage"));
    }
    if let Some(v) = field(d, "gracePeriodSeconds")
        && let Some(n) = issues.integer(v, &join(path, "gracePeriodSeconds"))
        && n < 0
    {
        issues.push(&join(path, "gracePeriodSeconds"), "must be at least 0");
    }
    if let Some(v) = field(d, "metadata") {
        issues.object(v, &join(path, "metadata"));
    }
}

fn describe(sources: &[&str]) -> String {
    if sources.is_empty() {
        "none".to_owned()
    } else {
        sources.join(" and ")
    }
}

fn check_external(issues: &mut Issues, v: &Value, path: &str) {
    let Some(m) = issues.object(v, path) else {
        return;
    };
    if let Some(image) = issues.req_str(m, "imagePath", path) {
        issues.pattern(image, &join(path, "imagePath"), &IMAGE_PATH);
    }
    if let Some(credentials) = issues.opt_str(m, "credentials", path) {
        issues.pattern(credentials, &join(path, "credentials"), &RESOURCE_ID);
    }
}

fn check_internal(issues: &mut Issues, v: &Value, path: &str) {
    let Some(m) = issues.object(v, path) else {
        return;
    };
    if let Some(id) = issues.opt_str(m, "id", path) {
        issues.length(id, &join(path, "id"), 3, 54);
        issues.pattern(id, &join(path, "id"), &INTERNAL_ID);
    }
    issues.opt_str(m, "branch", path);
    issues.opt_str(m, "buildId", path);
    if let Some(sha) = issues.opt_str(m, "buildSHA", path) {
        issues.pattern(sha, &join(path, "buildSHA"), &BUILD_SHA);
    }
}

fn check_vcs(issues: &mut Issues, v: &Value, path: &str) {
    let Some(m) = issues.object(v, path) else {
        return;
    };
    if let Some(url) = issues.req_str(m, "projectUrl", path) {
        issues.pattern(url, &join(path, "projectUrl"), &PROJECT_URL);
    }
    if let Some(kind) = issues.req_str(m, "projectType", path) {
        issues.one_of(kind, &join(path, "projectType"), VCS_TYPES);
    }
    issues.req_str(m, "projectBranch", path);
    issues.opt_str(m, "accountLogin", path);
    if let Some(id) = issues.opt_str(m, "selfHostedVcsId", path) {
        issues.pattern(id, &join(path, "selfHostedVcsId"), &SELF_HOSTED_VCS_ID);
    }
    if let Some(id) = issues.opt_str(m, "vcsLinkId", path) {
        issues.length(id, &join(path, "vcsLinkId"), 24, 24);
    }
}

fn check_docker(issues: &mut Issues, v: &Value, path: &str) {
    let Some(m) = issues.object(v, path) else {
        return;
    };
    let entrypoint = issues.opt_str(m, "customEntrypoint", path);
    let command = issues.opt_str(m, "customCommand", path);
    let Some(config_type) = issues.req_str(m, "configType", path) else {
        return;
    };
    issues.one_of(config_type, &join(path, "configType"), DOCKER_CONFIG_TYPES);
    let needs_entrypoint = matches!(
        config_type,
        "customEntrypoint" | "customEntrypointCustomCommand"
    );
    let needs_command = matches!(
        config_type,
        "customCommand" | "customEntrypointCustomCommand"
    );
    if needs_entrypoint && entrypoint.is_none() {
        issues.push(
            &join(path, "customEntrypoint"),
            format!("is required when configType is {config_type}"),
        );
    }
    if needs_command && command.is_none() {
        issues.push(
            &join(path, "customCommand"),
            format!("is required when configType is {config_type}"),
        );
    }
}

fn check_buildpack(issues: &mut Issues, v: &Value, path: &str) {
    let Some(m) = issues.object(v, path) else {
        return;
    };
    for key in ["customProcess", "customEntrypoint", "customCommand"] {
        issues.opt_str(m, key, path);
    }
    if let Some(config_type) = issues.req_str(m, "configType", path) {
        issues.one_of(
            config_type,
            &join(path, "configType"),
            BUILDPACK_CONFIG_TYPES,
        );
    }
}

/// `{enabled?, configuration?: {gpuType (req), gpuCount?, timesliced?}}`, used under both
/// `billing.gpu` and `deployment.gpu`.
pub fn check_gpu(issues: &mut Issues, v: &Value, path: &str) {
    let Some(m) = issues.object(v, path) else {
        return;
    };
    issues.opt_bool(m, "enabled", path);
    let Some(c) = field(m, "configuration") else {
        return;
    };
    let c_path = join(path, "configuration");
    let Some(c) = issues.object(c, &c_path) else {
        return;
    };
    issues.req_str(c, "gpuType", &c_path);
    if let Some(count) = field(c, "gpuCount")
        && let Some(n) = issues.integer(count, &join(&c_path, "gpuCount"))
        && n < 1
    {
        issues.push(&join(&c_path, "gpuCount"), "must be at least 1");
    }
    issues.opt_bool(c, "timesliced", &c_path);
}

fn check_storage(issues: &mut Issues, v: &Value, path: &str) {
    let Some(m) = issues.object(v, path) else {
        return;
    };
    issues.opt_bool(m, "useHdbStorage", path);
    issues.opt_bool(m, "usePdSsdStorage", path);
    if let Some(v) = field(m, "shmSize") {
        issues.integer(v, &join(path, "shmSize"));
    }
    if let Some(e) = field(m, "ephemeralStorage") {
        let e_path = join(path, "ephemeralStorage");
        if let Some(e) = issues.object(e, &e_path)
            && let Some(size) = field(e, "storageSize")
        {
            issues.integer(size, &join(&e_path, "storageSize"));
        }
    }
}

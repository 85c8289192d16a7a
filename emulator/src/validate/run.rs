//! Start-run body (§3.1): every field is optional, and `{}` is a plain run.

use serde_json::Value;

use super::deployment::{Context, check_deployment};
use super::job::check_plan;
use super::{body_object, field, official_issues};
use crate::error::ApiError;

pub const START_RUN: &str = "POST /v1/projects/{projectId}/jobs/{jobId}/runs";

pub fn validate_run(body: &Value, strict: bool) -> Result<(), ApiError> {
    let mut issues = official_issues(body, START_RUN, strict);
    if let Some(run) = body_object(&mut issues, body) {
        if let Some(v) = field(run, "runtimeEnvironment") {
            issues.string_map(v, "runtimeEnvironment");
        }
        for key in ["runtimeFiles", "dockerSecretMounts"] {
            if let Some(v) = field(run, key) {
                issues.file_map(v, key);
            }
        }
        if let Some(v) = field(run, "billing")
            && let Some(billing) = issues.object(v, "billing")
        {
            check_plan(&mut issues, billing, "deploymentPlan", false);
        }
        if let Some(v) = field(run, "deployment") {
            check_deployment(&mut issues, v, "deployment", Context::Run);
        }
    }
    issues.into_result()
}

//! Notification-integration body (§5.1).

use serde_json::{Map, Value};

use super::job::check_name;
use super::patterns::RESOURCE_ID;
use super::{Issues, body_object, field};
use crate::error::ApiError;

pub const INTEGRATION_TYPES: &[&str] = &["RAW_WEBHOOK", "DISCORD", "TEAMS", "TEAMS_WORKFLOWS"];

pub fn validate_integration(body: &Value) -> Result<(), ApiError> {
    let mut issues = Issues::default();
    if let Some(m) = body_object(&mut issues, body) {
        check(&mut issues, m);
    }
    issues.into_result()
}

fn check(issues: &mut Issues, m: &Map<String, Value>) {
    if let Some(name) = issues.req_str(m, "name", "") {
        check_name(issues, name, "name", 39);
    }
    if let Some(kind) = issues.req_str(m, "type", "") {
        issues.one_of(kind, "type", INTEGRATION_TYPES);
    }
    if let Some(url) = issues.req_str(m, "webhook", "") {
        match reqwest::Url::parse(url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            _ => issues.push("webhook", "must be an absolute http(s) URL"),
        }
    }
    issues.opt_str(m, "secret", "");
    issues.opt_bool(m, "restricted", "");
    issues.opt_str_items(m, "projects", "", |issues, s, p| {
        issues.pattern(s, p, &RESOURCE_ID);
    });
    if let Some(events) = issues.required(m, "events", "")
        && let Some(events) = issues.object(events, "events")
    {
        for (key, value) in events {
            if !value.is_boolean() {
                issues.push(&format!("events.{key}"), "must be a boolean");
            }
        }
    }
    if let Some(r) = field(m, "restrictions")
        && let Some(r) = issues.object(r, "restrictions")
        && let Some(tags) = field(r, "tags")
        && let Some(tags) = issues.object(tags, "restrictions.tags")
    {
        issues.opt_bool(tags, "enabled", "restrictions.tags");
        issues.opt_str_items(tags, "items", "restrictions.tags", |_, _, _| {});
        issues.opt_enum(tags, "matchCondition", "restrictions.tags", &["and", "or"]);
    }
}

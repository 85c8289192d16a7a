//! Notification-integration bodies (§5.1): `CreateNotificationData` requires `name`, `type`,
//! `webhook` and `events`; `UpdateNotificationData` has every field optional and no `type`.

use serde_json::{Map, Value};

use super::job::check_name;
use super::patterns::RESOURCE_ID;
use super::{Issues, body_object, field, official_issues};
use crate::error::ApiError;

pub const INTEGRATION_TYPES: &[&str] = &["RAW_WEBHOOK", "DISCORD", "TEAMS", "TEAMS_WORKFLOWS"];

/// Which body: a new integration, or changes to one.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Create,
    Update,
}

impl Purpose {
    pub fn endpoint(self) -> &'static str {
        match self {
            Purpose::Create => "POST /v1/integrations/notifications",
            Purpose::Update => "POST /v1/integrations/notifications/{notificationId}",
        }
    }
}

pub fn validate_integration(body: &Value, purpose: Purpose, strict: bool) -> Result<(), ApiError> {
    let mut issues = official_issues(body, purpose.endpoint(), strict);
    if let Some(m) = body_object(&mut issues, body) {
        check(&mut issues, m, purpose);
    }
    issues.into_result()
}

fn check(issues: &mut Issues, m: &Map<String, Value>, purpose: Purpose) {
    let create = purpose == Purpose::Create;
    let text = |issues: &mut Issues, key: &str| {
        if create {
            issues.req_str(m, key, "")
        } else {
            issues.opt_str(m, key, "")
        }
    };
    if let Some(name) = text(issues, "name") {
        check_name(issues, name, "name", 39);
    }
    // An update has no `type`: strict mode refuses it above, lenient mode ignores it.
    if create && let Some(kind) = issues.req_str(m, "type", "") {
        issues.one_of(kind, "type", INTEGRATION_TYPES);
    }
    if let Some(url) = text(issues, "webhook") {
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
    let events = if create {
        issues.required(m, "events", "")
    } else {
        field(m, "events")
    };
    if let Some(events) = events
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

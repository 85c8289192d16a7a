//! Registering the webhook with Northflank: one RAW_WEBHOOK notification integration for the
//! job-run events of the pool's projects, carrying the shared token. Found again by its name (the
//! integration's id is the name's slug), so registering twice updates instead of duplicating.

use serde_json::{Map, Value, json};

use crate::northflank::{NorthflankClient, NorthflankError};

/// The job-run events the worker acts on.
pub const EVENTS: &[&str] = &["start", "success", "failure", "abort", "terminate"];

#[derive(Clone, Debug)]
pub struct Registration<'a> {
    /// The integration's name (3–39 characters, letters, digits, single spaces or hyphens).
    pub name: &'a str,
    pub url: &'a str,
    /// The projects whose job runs are reported (at least one).
    pub projects: &'a [String],
    pub token: &'a str,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegisterAction {
    Created,
    Updated,
}

#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error(
        "integration name {0:?} is invalid: use 3 to 39 letters and digits, separated by single spaces or hyphens, starting with a letter"
    )]
    BadName(String),
    #[error(
        "webhook URL {0:?} is invalid: it must be an https:// URL (or http:// on 127.0.0.1 for local tests)"
    )]
    BadUrl(String),
    #[error(
        "--project-id {0:?} is invalid: a Northflank project id has only letters, digits and '-'"
    )]
    BadProject(String),
    #[error("the integration needs at least one --project-id")]
    NoProject,
    #[error(transparent)]
    Northflank(#[from] NorthflankError),
}

/// Northflank derives ids from names: lowercase, whitespace runs → `-`.
pub fn integration_id(name: &str) -> String {
    name.split_whitespace()
        .collect::<Vec<_>>()
        .join("-")
        .to_lowercase()
}

/// `CreateNotificationData`.
pub fn body(r: &Registration) -> Value {
    let events: Map<String, Value> = EVENTS
        .iter()
        .map(|e| (format!("trigger:job-run:{e}"), json!(true)))
        .collect();
    json!({
        "name": r.name,
        "type": "RAW_WEBHOOK",
        "webhook": r.url,
        "secret": r.token,
        "restricted": true,
        "projects": r.projects,
        "events": events,
    })
}

/// `UpdateNotificationData`: the create body without `type`, which an update does not have (a
/// strict API refuses the unknown field, and re-registration would fail on it).
pub fn update_body(r: &Registration) -> Value {
    let mut body = body(r);
    if let Some(fields) = body.as_object_mut() {
        fields.remove("type");
    }
    body
}

fn check(r: &Registration) -> Result<(), RegisterError> {
    let words_ok = r
        .name
        .split(['-', ' '])
        .all(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_alphanumeric()));
    let starts_ok = r
        .name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic());
    if !(3..=39).contains(&r.name.len()) || !words_ok || !starts_ok {
        return Err(RegisterError::BadName(r.name.to_string()));
    }
    let local = r.url.starts_with("http://127.0.0.1") || r.url.starts_with("http://localhost");
    if !(r.url.starts_with("https://") || local) {
        return Err(RegisterError::BadUrl(r.url.to_string()));
    }
    if r.projects.is_empty() {
        return Err(RegisterError::NoProject);
    }
    let project_ok =
        |p: &&String| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    match r.projects.iter().find(|p| !project_ok(p)) {
        Some(bad) => Err(RegisterError::BadProject(bad.clone())),
        None => Ok(()),
    }
}

/// Creates the integration, or updates the one with the same name (Northflank never returns
/// the secret, so the token is always sent again).
pub async fn register(
    nf: &NorthflankClient,
    r: &Registration<'_>,
) -> Result<RegisterAction, RegisterError> {
    check(r)?;
    let id = integration_id(r.name);
    if nf.get_notification_integration(&id).await?.is_some() {
        nf.update_notification_integration(&id, &update_body(r))
            .await?;
        return Ok(RegisterAction::Updated);
    }
    match nf.create_notification_integration(&body(r)).await {
        Ok(_) => Ok(RegisterAction::Created),
        // Created by someone else meanwhile.
        Err(e) if e.status() == Some(409) => {
            nf.update_notification_integration(&id, &update_body(r))
                .await?;
            Ok(RegisterAction::Updated)
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_names() {
        assert_eq!(integration_id("Prefect Runs"), "prefect-runs");
        let projects = ["p".to_string(), "q-2".to_string()];
        let ok = Registration {
            name: "prefect nf",
            url: "https://x.lambda-url.eu-west-1.on.aws/",
            projects: &projects,
            token: "t",
        };
        assert!(check(&ok).is_ok());
        for name in [
            "ab",
            "prefect_nf",
            "-prefect",
            "prefect--nf",
            "9lives",
            &"x".repeat(40),
        ] {
            assert!(
                matches!(
                    check(&Registration { name, ..ok.clone() }),
                    Err(RegisterError::BadName(_))
                ),
                "{name}"
            );
        }
        assert!(matches!(
            check(&Registration {
                url: "http://example.com",
                ..ok.clone()
            }),
            Err(RegisterError::BadUrl(_))
        ));
        let no_project = check(&Registration {
            projects: &[],
            ..ok.clone()
        });
        assert!(matches!(no_project, Err(RegisterError::NoProject)));
        let bad = ["my_project".to_string()];
        let bad_project = check(&Registration {
            projects: &bad,
            ..ok.clone()
        });
        assert!(matches!(bad_project, Err(RegisterError::BadProject(p)) if p == "my_project"));
        let b = body(&ok);
        assert_eq!(b["events"].as_object().unwrap().len(), 5);
        assert_eq!(b["type"], "RAW_WEBHOOK");
        let mut without_type = b.clone();
        without_type.as_object_mut().unwrap().remove("type");
        assert_eq!(update_body(&ok), without_type, "an update has no type");
        assert_eq!(
            (b["restricted"].as_bool(), b["projects"].clone()),
            (Some(true), json!(["p", "q-2"]))
        );
    }
}

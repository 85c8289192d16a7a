//! The Northflank side: the projects the pool's runs use (found by resolving their job
//! variables exactly as dispatch does) and whether the token reaches each, and the notification
//! integration that calls the webhook.

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::report::Check;
use crate::northflank::NorthflankError;
use crate::prefect::PrefectError;
use crate::prefect::models::WorkPool;
use crate::render::{self, RunCredentials};
use crate::routes::WEBHOOK_PATH;
use crate::setup::integration::EVENTS;
use crate::worker::Worker;

/// A project some of the pool's runs use, with the token they use it with.
pub struct Project {
    pub id: String,
    /// Where it came from: "the pool's default", "deployment 'flow/name'", "PFNF_PROJECTS".
    pub sources: Vec<String>,
    /// A `credentials` block in the job variables; `None`: the worker's own token.
    pub credentials: Option<RunCredentials>,
}

/// The projects of the pool's runs, and the job variables that could not be resolved.
#[derive(Default)]
pub struct Usage {
    pub projects: Vec<Project>,
    pub problems: Vec<String>,
    pub deployments: usize,
    pub pool_has_default: bool,
}

fn same_token(a: &Option<RunCredentials>, b: &Option<RunCredentials>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => a.api_token == b.api_token && a.base_url == b.base_url,
        _ => false,
    }
}

impl Usage {
    fn add(&mut self, id: String, credentials: Option<RunCredentials>, source: String) {
        let known = self
            .projects
            .iter_mut()
            .find(|p| p.id == id && same_token(&p.credentials, &credentials));
        match known {
            Some(p) => p.sources.push(source),
            None => self.projects.push(Project {
                id,
                sources: vec![source],
                credentials,
            }),
        }
    }

    /// The projects reached with the worker's own token: the integration must cover them.
    pub fn own_projects(&self) -> Vec<String> {
        self.projects
            .iter()
            .filter(|p| p.credentials.is_none())
            .map(|p| p.id.clone())
            .collect()
    }
}

/// The project and credentials of a run with these deployment job variables.
async fn resolve(
    worker: &Worker,
    template: &Value,
    variables: &Map<String, Value>,
) -> Result<(Option<String>, Option<RunCredentials>), String> {
    let env = |name: &str| std::env::var(name).ok();
    let config =
        render::resolve_configuration(template, variables, &Map::new(), &worker.prefect, &env)
            .await
            .map_err(|e| e.to_string())?;
    let credentials = render::job::run_credentials(&config).map_err(|e| e.to_string())?;
    let project = config
        .get("project_id")
        .and_then(Value::as_str)
        .filter(|p| !p.is_empty())
        .map(str::to_string);
    Ok((project, credentials))
}

/// Every project the pool's runs use: its default, its deployments', and `PFNF_PROJECTS`.
pub async fn usage(worker: &Worker, pool: &WorkPool) -> Result<Usage, PrefectError> {
    let template = &pool.base_job_template;
    let mut usage = Usage::default();
    match resolve(worker, template, &Map::new()).await {
        Ok((Some(project), credentials)) => {
            usage.pool_has_default = true;
            usage.add(project, credentials, "the pool's default".into());
        }
        Ok((None, _)) => {}
        Err(e) => usage.problems.push(format!("the pool's defaults: {e}")),
    }
    let deployments = worker.prefect.deployments_of_pool(&pool.name).await?;
    usage.deployments = deployments.len();
    let mut flows: HashMap<uuid::Uuid, String> = HashMap::new();
    for d in deployments {
        let flow = match d.flow_id {
            Some(id) if !flows.contains_key(&id) => {
                let name = worker.prefect.read_flow(id).await?.name;
                flows.entry(id).or_insert(name).clone()
            }
            Some(id) => flows[&id].clone(),
            None => "?".into(),
        };
        let source = format!("deployment '{flow}/{}'", d.name);
        match resolve(worker, template, &d.job_variables).await {
            Ok((Some(project), credentials)) => usage.add(project, credentials, source),
            Ok((None, _)) => usage.problems.push(format!(
                "{source}: no project_id (neither the pool's default nor the deployment's job variables set one)"
            )),
            Err(e) => usage.problems.push(format!("{source}: {e}")),
        }
    }
    for project in &worker.settings.reconcile.projects {
        usage.add(project.clone(), None, "PFNF_PROJECTS".into());
    }
    Ok(usage)
}

/// Whether every run's job variables resolve to a project.
pub fn usage_check(pool: &str, u: &Usage) -> Check {
    const NAME: &str = "job-variables";
    if !u.problems.is_empty() {
        return Check::fail(
            NAME,
            format!(
                "runs would fail before reaching Northflank: {}",
                u.problems.join("; ")
            ),
            format!(
                "fix the job variable named; `prefect-nf render --pool {pool} --deployment <flow>/<deployment>` shows a deployment's bodies"
            ),
        );
    }
    if u.projects.is_empty() {
        return Check::warn(
            NAME,
            "no Northflank project yet: the pool has no default project_id, no deployment sets one, and PFNF_PROJECTS is empty",
        )
        .with_fix(format!(
            "prefect-nf work-pool update --name {pool} --project-id <your Northflank project>"
        ));
    }
    let ids: Vec<&str> = u.projects.iter().map(|p| p.id.as_str()).collect();
    Check::ok(
        NAME,
        format!(
            "resolved for the pool's defaults{} and {} deployment(s): project(s) {}",
            if u.pool_has_default {
                ""
            } else {
                " (no default project)"
            },
            u.deployments,
            ids.join(", ")
        ),
    )
}

fn sources(p: &Project) -> String {
    const SHOWN: usize = 4;
    let mut text = p.sources[..p.sources.len().min(SHOWN)].join(", ");
    if p.sources.len() > SHOWN {
        text.push_str(&format!(" and {} more", p.sources.len() - SHOWN));
    }
    text
}

/// The token reaches the project: `probe` is the answer to listing one of its jobs.
pub fn project_check(p: &Project, probe: &Result<(), NorthflankError>) -> Check {
    const NAME: &str = "project";
    let token = match &p.credentials {
        None => "the worker's token",
        Some(_) => "the token of the job variables' credentials block",
    };
    let used = format!("used by {}", sources(p));
    let Err(e) = probe else {
        return Check::ok(NAME, format!("{token} reaches it ({used})")).about(&p.id);
    };
    let where_token = match &p.credentials {
        None => "northflank_api_token in the secret (NORTHFLANK_API_TOKEN)",
        Some(_) => "the api_token of the credentials block",
    };
    let (why, fix) = match e.status() {
        Some(401) => (
            format!("Northflank refused {token}"),
            format!("set {where_token} to a valid API token"),
        ),
        Some(403) => (
            format!("{token} may not read the project's jobs"),
            "give the token's API role the project permissions listed in docs/deploy.md (Project › Jobs › General: Create, Read, Run Job, Update, Delete)".to_string(),
        ),
        Some(404) => (
            format!("Northflank knows no project '{}' that {token} can see", p.id),
            format!("check the project id in {}, or give the token's API role access to the project", sources(p)),
        ),
        Some(429) => (
            format!("{token} is rate limited"),
            "wait for the rate-limit window to reset (see the rate-limit check)".to_string(),
        ),
        _ => (
            "Northflank did not answer".to_string(),
            "check NORTHFLANK_API_URL and that this machine reaches it".to_string(),
        ),
    };
    Check::fail(NAME, format!("{why} ({used}): {}", e.user_message()), fix).about(&p.id)
}

/// The notification integration as read, and what it should be.
pub struct Integration<'a> {
    pub name: &'a str,
    pub read: &'a Result<Option<Value>, NorthflankError>,
    /// The webhook's URL (`--url`), if given.
    pub url: Option<&'a str>,
    /// The projects it must report on; `None` when they are not known (the pool was not read).
    pub needed: Option<&'a [String]>,
}

impl Integration<'_> {
    /// The command that writes the integration as it should be.
    fn register(&self, current: &Value) -> String {
        let url = self
            .url
            .or(current["webhook"].as_str())
            .unwrap_or("<WebhookUrl>");
        let mut projects: Vec<String> = self.needed.map(<[String]>::to_vec).unwrap_or_default();
        if current["restricted"] == true {
            for p in current["projects"].as_array().into_iter().flatten() {
                if let Some(p) = p.as_str().filter(|p| !projects.iter().any(|q| q == p)) {
                    projects.push(p.to_string());
                }
            }
        }
        if projects.is_empty() {
            projects.push("<your Northflank project>".into());
        }
        let flags: Vec<String> = projects
            .iter()
            .map(|p| format!("--project-id {p}"))
            .collect();
        format!(
            "prefect-nf webhook register --name '{}' --url {url} {}",
            self.name,
            flags.join(" ")
        )
    }
}

const PARTS: [&str; 4] = [
    "integration-url",
    "integration-events",
    "integration-projects",
    "integration-status",
];

/// The integration exists, is a raw webhook, posts to our URL, covers the five job-run events
/// and the projects, and is neither failing nor disabled.
pub fn integration_checks(i: &Integration) -> Vec<Check> {
    const NAME: &str = "integration";
    let skip_parts = |why: &str| {
        PARTS
            .iter()
            .map(|p| Check::skip(p, why))
            .collect::<Vec<_>>()
    };
    let current = match i.read {
        Ok(Some(v)) => v,
        Ok(None) => {
            let mut checks = vec![Check::fail(
                NAME,
                format!(
                    "there is no notification integration '{}': Northflank tells the webhook nothing, so runs settle only through reconciliation, minutes late",
                    i.name
                ),
                i.register(&Value::Null),
            )];
            checks.extend(skip_parts("the integration does not exist"));
            return checks;
        }
        Err(e) => {
            let mut checks = vec![unreadable(i.name, e)];
            checks.extend(skip_parts("the integration could not be read"));
            return checks;
        }
    };
    let fix = i.register(current);
    let kind = current["type"].as_str().unwrap_or("unknown");
    let mut checks = vec![if kind == "RAW_WEBHOOK" {
        Check::ok(
            NAME,
            format!(
                "'{}' exists (id {}), type RAW_WEBHOOK",
                i.name,
                current["id"].as_str().unwrap_or("?")
            ),
        )
    } else {
        Check::fail(
            NAME,
            format!(
                "'{}' is of type {kind}: only RAW_WEBHOOK posts the JSON and the token the webhook reads",
                i.name
            ),
            format!("delete it in Northflank, then: {fix}"),
        )
    }];
    checks.push(url_check(i, current, &fix));
    checks.push(events_check(current, &fix));
    checks.push(projects_check(i, current, &fix));
    checks.push(status_check(current, &fix));
    checks
}

fn unreadable(name: &str, e: &NorthflankError) -> Check {
    const NAME: &str = "integration";
    match e.status() {
        // deploy.md lets the worker's token go without the notifications permission.
        Some(403) => Check::warn(
            NAME,
            format!("this token may not read notification integrations, so '{name}' was not checked: {}", e.user_message()),
        )
        .with_fix("run doctor again with a token whose role has Team › Notifications (the one `webhook register` used)"),
        Some(401) => Check::fail(NAME, format!("Northflank refused the token: {}", e.user_message()), "set northflank_api_token in the secret (NORTHFLANK_API_TOKEN) to a valid API token"),
        _ => Check::fail(NAME, format!("could not read '{name}': {}", e.user_message()), "check NORTHFLANK_API_URL and that this machine reaches it"),
    }
}

fn url_check(i: &Integration, current: &Value, fix: &str) -> Check {
    const NAME: &str = "integration-url";
    let target = current["webhook"].as_str().unwrap_or_default();
    let Some(url) = i.url else {
        return Check::warn(NAME, format!("posts to {target}; not compared"))
            .with_fix("pass --url <WebhookUrl> (or the local worker's address) to compare it");
    };
    let base = url.trim_end_matches('/');
    let target_base = target.trim_end_matches('/');
    // The Function URL takes notifications on any path; the local server on WEBHOOK_PATH.
    if target_base == base || target_base == format!("{base}{WEBHOOK_PATH}") {
        Check::ok(NAME, format!("posts to {target}"))
    } else {
        Check::fail(NAME, format!("posts to {target}, not to {url}"), fix)
    }
}

fn events_check(current: &Value, fix: &str) -> Check {
    const NAME: &str = "integration-events";
    let missing: Vec<String> = EVENTS
        .iter()
        .map(|e| format!("trigger:job-run:{e}"))
        .filter(|key| current["events"][key] != true)
        .collect();
    if missing.is_empty() {
        return Check::ok(NAME, format!("all {} job-run events are on", EVENTS.len()));
    }
    Check::fail(
        NAME,
        format!(
            "events off: {} (the webhook settles runs on these)",
            missing.join(", ")
        ),
        fix,
    )
}

fn projects_check(i: &Integration, current: &Value, fix: &str) -> Check {
    const NAME: &str = "integration-projects";
    let tags = &current["restrictions"]["tags"];
    if tags["enabled"] == true {
        return Check::warn(
            NAME,
            format!(
                "restricted to jobs tagged {}: runs without those tags are not reported",
                tags["items"]
            ),
        )
        .with_fix(format!(
            "remove the tag restriction in Northflank, or: {fix}"
        ));
    }
    if current["restricted"] != true {
        return Check::ok(NAME, "not restricted: it reports job runs of every project");
    }
    let Some(needed) = i.needed else {
        return Check::skip(NAME, "the pool's projects are not known");
    };
    let listed: Vec<&str> = current["projects"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let missing: Vec<&str> = needed
        .iter()
        .map(String::as_str)
        .filter(|p| !listed.contains(p))
        .collect();
    if missing.is_empty() {
        return Check::ok(NAME, format!("covers {}", listed.join(", ")));
    }
    Check::fail(
        NAME,
        format!(
            "restricted to {}; runs in {} are not reported",
            listed.join(", "),
            missing.join(", ")
        ),
        fix,
    )
}

/// The `status` of `GetNotificationResult` (`@northflank/js-client` 0.9.5): `disabled`,
/// `reason`, `timeOfFirstFailedRequest`, `numberOfFailedRequests`.
fn status_check(current: &Value, fix: &str) -> Check {
    const NAME: &str = "integration-status";
    let status = &current["status"];
    let repair = format!(
        "make the webhook answer 2xx (is it deployed, is webhook_token the one registered?), then save the integration again so Northflank resumes: {fix}"
    );
    if status["disabled"] == true {
        // The official type makes `reason` a boolean (disabled for failures); read a string
        // too, in case the API says more than its type.
        let reason = match &status["reason"] {
            Value::Bool(true) => " after failed deliveries".to_string(),
            Value::String(s) => format!(": {s}"),
            _ => String::new(),
        };
        return Check::fail(
            NAME,
            format!("Northflank disabled it{reason}; it sends nothing"),
            repair,
        );
    }
    let failed = status["numberOfFailedRequests"].as_u64().unwrap_or(0);
    if failed > 0 {
        let since = status["timeOfFirstFailedRequest"]
            .as_str()
            .unwrap_or("an unknown time");
        return Check::fail(
            NAME,
            format!(
                "failing: {failed} failed request(s) since {since}; Northflank disables integrations that keep failing"
            ),
            repair,
        );
    }
    Check::ok(NAME, "delivering: not disabled, no failed requests")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use crate::northflank::ApiFailure;
    use crate::setup::integration::{Registration, body};
    use reqwest::Method;
    use serde_json::json;

    use super::super::Status;

    fn api_error(status: u16) -> NorthflankError {
        NorthflankError::Api(Box::new(ApiFailure {
            method: Method::GET,
            path: "/v1/projects/p/jobs".into(),
            status,
            message: "nope".into(),
            error_id: None,
            details: Value::Null,
            retry_after: None,
        }))
    }

    fn project(sources: usize) -> Project {
        Project {
            id: "p".into(),
            sources: (0..sources)
                .map(|i| format!("deployment 'f/d{i}'"))
                .collect(),
            credentials: None,
        }
    }

    #[test]
    fn a_project_check_says_why_and_what_to_change() {
        let p = project(6);
        let ok = project_check(&p, &Ok(()));
        assert_eq!(ok.status, Status::Ok);
        assert!(
            ok.explanation.contains("'f/d3' and 2 more"),
            "{}",
            ok.explanation
        );
        let missing = project_check(&p, &Err(api_error(404)));
        assert!(
            missing
                .explanation
                .starts_with("Northflank knows no project 'p'")
        );
        assert!(
            project_check(&p, &Err(api_error(403)))
                .fix
                .unwrap()
                .contains("Run Job")
        );
        let own = project_check(&p, &Err(api_error(401)));
        assert!(own.fix.unwrap().contains("NORTHFLANK_API_TOKEN"));
        let block = Project {
            credentials: Some(RunCredentials {
                api_token: Secret::new("x"),
                base_url: None,
            }),
            ..project(1)
        };
        assert!(
            project_check(&block, &Err(api_error(401)))
                .fix
                .unwrap()
                .contains("credentials block")
        );
    }

    fn registered(projects: &[&str]) -> Value {
        let projects: Vec<String> = projects.iter().map(|p| p.to_string()).collect();
        let mut v = body(&Registration {
            name: "prefect-nf",
            url: "https://x.lambda-url.eu-west-1.on.aws/",
            projects: &projects,
            token: "t",
        });
        v["id"] = json!("prefect-nf");
        v["status"] = json!({"disabled": false, "numberOfFailedRequests": 0});
        v
    }

    #[test]
    fn what_webhook_register_writes_passes_and_each_defect_fails_with_the_command() {
        let needed = vec!["p".to_string(), "q".to_string()];
        let current = Ok(Some(registered(&["p", "q"])));
        let good = Integration {
            name: "prefect-nf",
            read: &current,
            url: Some("https://x.lambda-url.eu-west-1.on.aws"),
            needed: Some(&needed),
        };
        let checks = integration_checks(&good);
        assert_eq!(checks.len(), 5);
        assert!(checks.iter().all(|c| c.status == Status::Ok), "{checks:#?}");

        let mut v = registered(&["p"]);
        v["webhook"] = json!("https://old.example.com/hook");
        v["events"]["trigger:job-run:abort"] = json!(false);
        v["status"] = json!({"disabled": true, "reason": true});
        let read = Ok(Some(v));
        let bad = integration_checks(&Integration {
            read: &read,
            ..good
        });
        let failed: Vec<&str> = bad
            .iter()
            .filter(|c| c.status == Status::Fail)
            .map(|c| c.check)
            .collect();
        assert_eq!(failed, PARTS);
        let fix = bad[1].fix.as_deref().unwrap();
        assert_eq!(
            fix,
            "prefect-nf webhook register --name 'prefect-nf' --url https://x.lambda-url.eu-west-1.on.aws --project-id p --project-id q"
        );
        assert!(bad[2].explanation.contains("trigger:job-run:abort"));
        assert!(bad[3].explanation.contains("runs in q are not reported"));
        assert!(
            bad[4]
                .explanation
                .starts_with("Northflank disabled it after failed deliveries")
        );

        let missing = Ok(None);
        let none = integration_checks(&Integration {
            read: &missing,
            url: None,
            ..good
        });
        assert_eq!(none[0].status, Status::Fail);
        assert!(
            none[0]
                .fix
                .as_deref()
                .unwrap()
                .contains("--url <WebhookUrl> --project-id p --project-id q")
        );
        assert!(none[1..].iter().all(|c| c.status == Status::Skip));
        let forbidden = Err(api_error(403));
        assert_eq!(
            integration_checks(&Integration {
                read: &forbidden,
                ..good
            })[0]
                .status,
            Status::Warn
        );
    }

    #[test]
    fn the_local_webhook_path_counts_as_our_url() {
        let mut v = registered(&["p"]);
        v["webhook"] = json!("http://127.0.0.1:8080/northflank/webhook");
        let fix = "f";
        let read = Ok(None);
        let i = |url| Integration {
            name: "n",
            read: &read,
            url: Some(url),
            needed: None,
        };
        assert_eq!(
            url_check(&i("http://127.0.0.1:8080/"), &v, fix).status,
            Status::Ok
        );
        assert_eq!(
            url_check(&i("http://127.0.0.1:8080/northflank/webhook"), &v, fix).status,
            Status::Ok
        );
        assert_eq!(
            url_check(&i("http://127.0.0.1:9999"), &v, fix).status,
            Status::Fail
        );
    }
}

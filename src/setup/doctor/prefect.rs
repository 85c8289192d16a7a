//! The Prefect side: the credentials against the server they are for, the pool and its template,
//! and instant dispatch's automation. Each check is a pure judgement of what was read.

use serde_json::Value;
use uuid::Uuid;

use super::report::Check;
use crate::config::{PrefectAuth, Secret};
use crate::prefect::PrefectError;
use crate::prefect::models::{Automation, WorkPool};
use crate::routes::DISPATCH_TOKEN_HEADER;
use crate::setup::{automation, pool};

/// Prefect Cloud or a self-hosted server: they take different credentials.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Cloud,
    SelfHosted,
}

impl Backend {
    /// Prefect's own rule (`client/orchestration`): Cloud is the API under `api.prefect.cloud`.
    pub fn of(api_url: &str) -> Backend {
        let host = reqwest::Url::parse(api_url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string));
        match host.as_deref() {
            Some(h) if h == "prefect.cloud" || h.ends_with(".prefect.cloud") => Backend::Cloud,
            _ => Backend::SelfHosted,
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Backend::Cloud => "Prefect Cloud",
            Backend::SelfHosted => "a self-hosted Prefect server",
        }
    }
}

fn auth_kind(auth: &PrefectAuth) -> &'static str {
    match auth {
        PrefectAuth::None => "no credentials",
        PrefectAuth::ApiKey(_) => "an API key",
        PrefectAuth::AuthString(_) => "an auth string (basic auth)",
    }
}

/// Whether the credentials suit the server, and whether it accepted them: `read` is the answer
/// to reading the work pool, the first authenticated request.
pub fn credentials_check(
    backend: Backend,
    auth: &PrefectAuth,
    api_url: &str,
    read: &Result<Option<WorkPool>, PrefectError>,
) -> Check {
    const NAME: &str = "prefect-api";
    let kind = auth_kind(auth);
    match (backend, auth) {
        (Backend::Cloud, PrefectAuth::None) => {
            return Check::fail(
                NAME,
                "Prefect Cloud needs an API key, and none is set",
                "set prefect_api_key in the secret (or PREFECT_API_KEY) to a key of this workspace",
            );
        }
        (Backend::Cloud, PrefectAuth::AuthString(_)) => {
            return Check::fail(
                NAME,
                "an auth string is for a self-hosted server with basic auth; Prefect Cloud takes an API key (and the auth string wins when both are set)",
                "remove prefect_api_auth_string (PREFECT_API_AUTH_STRING) and set prefect_api_key (PREFECT_API_KEY)",
            );
        }
        _ => {}
    }
    let err = match read {
        Ok(_) if *auth == PrefectAuth::None => {
            return Check::ok(
                NAME,
                format!(
                    "{} at {api_url} answers without credentials (an open server)",
                    backend.describe()
                ),
            );
        }
        Ok(_) => {
            return Check::ok(
                NAME,
                format!("{} at {api_url} accepted {kind}", backend.describe()),
            );
        }
        Err(e) => e,
    };
    if !err.is_auth() {
        return Check::fail(
            NAME,
            format!("{} at {api_url} did not answer: {err}", backend.describe()),
            "check PREFECT_API_URL (it ends in /api for a self-hosted server) and that this machine reaches it",
        );
    }
    let fix = match (backend, auth) {
        (Backend::Cloud, _) => {
            "create an API key in Prefect Cloud for this workspace and set prefect_api_key (PREFECT_API_KEY)"
        }
        (_, PrefectAuth::None) => {
            "the server wants basic auth: set prefect_api_auth_string (PREFECT_API_AUTH_STRING) to its user:password"
        }
        (_, PrefectAuth::ApiKey(_)) => {
            "a self-hosted server with basic auth takes prefect_api_auth_string (PREFECT_API_AUTH_STRING) = user:password, not an API key"
        }
        (_, PrefectAuth::AuthString(_)) => {
            "set prefect_api_auth_string (PREFECT_API_AUTH_STRING) to the server's PREFECT_SERVER_API_AUTH_STRING"
        }
    };
    Check::fail(
        NAME,
        format!("{} refused {kind}: {err}", backend.describe()),
        fix,
    )
}

/// The pool exists and is of our type.
pub fn pool_check(name: &str, read: &Result<Option<WorkPool>, PrefectError>) -> Check {
    const NAME: &str = "work-pool";
    match read {
        Err(_) => Check::skip(NAME, "the Prefect API did not answer"),
        Ok(None) => Check::fail(
            NAME,
            format!("work pool '{name}' does not exist"),
            format!(
                "prefect-nf work-pool create --name {name} --project-id <your Northflank project>"
            ),
        ),
        Ok(Some(p)) if p.kind != crate::WORKER_TYPE => Check::fail(
            NAME,
            format!(
                "work pool '{name}' is of type '{}'; this worker serves only '{}' pools",
                p.kind,
                crate::WORKER_TYPE
            ),
            "a pool's type cannot change: create one (prefect-nf work-pool create --name <new name>) and point PFNF_WORK_POOL and the deployments at it",
        ),
        Ok(Some(p)) if p.is_paused => Check::warn(
            NAME,
            format!(
                "work pool '{name}' (type {}) is paused: Prefect hands out none of its runs",
                p.kind
            ),
        )
        .with_fix(format!(
            "resume it in the UI, or: prefect work-pool resume {name}"
        )),
        Ok(Some(p)) => Check::ok(
            NAME,
            format!(
                "work pool '{name}' exists, type {}, status {}",
                p.kind,
                p.status.as_deref().unwrap_or("unknown")
            ),
        ),
    }
}

/// How a pool's template differs from the one `work-pool update` would write.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Drift {
    /// Variables this worker has and the pool's template does not pass on (a pool from the
    /// Python worker lacks the VCS and build variables), as [`crate::render::gaps::missing`].
    pub missing: Vec<String>,
    /// Variables the pool has and this worker does not use.
    pub unused: Vec<String>,
    /// Variables whose definition (type, description, …) differs.
    pub changed: Vec<String>,
    /// `job_configuration` entries missing, extra or different, other than those of missing
    /// or unused variables.
    pub configuration: Vec<String>,
    /// Other parts that differ (`variables.definitions`, `variables.required`, …).
    pub other: Vec<String>,
}

fn keys(v: &Value) -> Vec<&String> {
    v.as_object()
        .map(|m| m.keys().collect())
        .unwrap_or_default()
}

/// `current` against `wanted`, a template that carries `current`'s defaults over.
pub fn drift(current: &Value, wanted: &Value) -> Drift {
    let (now, want) = (
        &current["variables"]["properties"],
        &wanted["variables"]["properties"],
    );
    // Missing: what the pool's job configuration does not pass on, whether the variable is
    // undeclared or only unused there (prefect-northflank declares
    // `build_configuration_docker_credentials` and drops it).
    let mut d = Drift {
        missing: crate::render::gaps::missing(current),
        ..Drift::default()
    };
    for k in keys(want) {
        if d.missing.contains(k) {
            continue;
        }
        match now.get(k) {
            None => d.missing.push(k.clone()),
            Some(v) if v != &want[k] => d.changed.push(k.clone()),
            Some(_) => {}
        }
    }
    d.unused = keys(now)
        .into_iter()
        .filter(|k| want.get(*k).is_none())
        .cloned()
        .collect();
    let (now, want) = (&current["job_configuration"], &wanted["job_configuration"]);
    let mut entries: Vec<&String> = keys(want);
    entries.extend(keys(now).into_iter().filter(|k| want.get(*k).is_none()));
    // Entries of missing or unused variables go with them; only the others are news.
    let implied = |k: &&String| d.missing.contains(k) || d.unused.contains(k);
    d.configuration = entries
        .into_iter()
        .filter(|k| now.get(*k) != want.get(*k) && !implied(k))
        .cloned()
        .collect();
    for part in ["definitions", "required", "type"] {
        if current["variables"].get(part) != wanted["variables"].get(part) {
            d.other.push(format!("variables.{part}"));
        }
    }
    d
}

fn listed(what: &str, names: &[String]) -> Option<String> {
    (!names.is_empty()).then(|| format!("{what} ({}): {}", names.len(), names.join(", ")))
}

/// The template is the one `work-pool update` would write (the pool's defaults kept).
pub fn template_check(name: &str, current: &Value) -> Check {
    const NAME: &str = "pool-template";
    let wanted = pool::merged_template(current, None);
    if &wanted == current {
        return Check::ok(
            NAME,
            format!(
                "the base job template is this worker's ({} variables)",
                keys(&wanted["variables"]["properties"]).len()
            ),
        );
    }
    let d = drift(current, &wanted);
    let parts: Vec<String> = [
        listed("missing variables", &d.missing),
        listed("variables this worker does not use", &d.unused),
        listed("variables defined differently", &d.changed),
        listed("job_configuration entries that differ", &d.configuration),
        listed("other parts that differ", &d.other),
    ]
    .into_iter()
    .flatten()
    .collect();
    Check::fail(
        NAME,
        format!(
            "the base job template is not this worker's (a pool created by the Python worker or an older prefect-nf): {}",
            parts.join("; ")
        ),
        format!("prefect-nf work-pool update --name {name} (keeps the defaults set on the pool)"),
    )
}

/// Instant dispatch's pieces as read from the server.
#[derive(Clone, Copy)]
pub struct InstantDispatch<'a> {
    pub pool_name: &'a str,
    pub pool_id: Uuid,
    pub dispatch_token: Option<&'a Secret>,
    pub automation: Option<&'a Automation>,
    /// The webhook block's id and data (secrets included), if it exists.
    pub block: Option<(Uuid, &'a Value)>,
    /// The webhook's base URL (`--url`), to compare the block's target with.
    pub url: Option<&'a str>,
}

/// The automation exists exactly when instant dispatch is on (a dispatch token is set), and
/// calls our endpoint, with our token, for flow runs of this pool.
pub fn instant_check(i: &InstantDispatch) -> Check {
    const NAME: &str = "instant-dispatch";
    let url = i.url.unwrap_or("<WebhookUrl>");
    let enable = format!(
        "prefect-nf instant-dispatch enable --url {url} --pool {}",
        i.pool_name
    );
    let (token, automation) = match (i.dispatch_token, i.automation) {
        (None, None) => {
            return Check::ok(
                NAME,
                "off: no dispatch token is set, and there is no automation",
            );
        }
        (None, Some(_)) => {
            return Check::fail(
                NAME,
                format!(
                    "the automation '{}' exists, but the credentials hold no dispatch_token, so the endpoint answers 404 to each of its calls",
                    automation::automation_name(i.pool_name)
                ),
                format!(
                    "set dispatch_token in the secret (PFNF_DISPATCH_TOKEN) and run {enable}; or: prefect-nf instant-dispatch disable --pool {}",
                    i.pool_name
                ),
            );
        }
        (Some(_), None) => {
            return Check::fail(
                NAME,
                format!(
                    "a dispatch token is set, but there is no automation '{}': \"Run now\" waits for the next dispatch tick",
                    automation::automation_name(i.pool_name)
                ),
                enable,
            );
        }
        (Some(t), Some(a)) => (t, a),
    };
    match automation_problem(i, token, automation) {
        Some(problem) => Check::fail(NAME, problem, enable),
        None if i.url.is_none() => Check::warn(
            NAME,
            "the automation is enabled for this pool and sends our token; its URL was not compared",
        )
        .with_fix("pass --url <WebhookUrl> to compare it"),
        None => Check::ok(
            NAME,
            format!(
                "the automation is enabled and calls {} with our token for flow runs of this pool",
                automation::endpoint(url).unwrap_or_default()
            ),
        ),
    }
}

fn automation_problem(i: &InstantDispatch, token: &Secret, a: &Automation) -> Option<String> {
    if !a.enabled {
        return Some("the automation is disabled".into());
    }
    let watched = &a.trigger["match_related"]["prefect.resource.id"];
    let ours = format!("prefect.work-pool.{}", i.pool_id);
    if watched.as_str() != Some(ours.as_str()) {
        return Some(format!(
            "the automation watches {watched}, not this pool ({ours}); was the pool created again?"
        ));
    }
    let called = a
        .actions
        .iter()
        .find(|x| x["type"] == "call-webhook")
        .and_then(|x| x["block_document_id"].as_str());
    let Some((block_id, data)) = i.block else {
        return Some(format!(
            "its webhook block '{}' is missing",
            automation::block_name(i.pool_name)
        ));
    };
    if called != Some(block_id.to_string().as_str()) {
        return Some(format!(
            "the automation calls block {}, not '{}'",
            called.unwrap_or("none"),
            automation::block_name(i.pool_name)
        ));
    }
    let sent = data["headers"][DISPATCH_TOKEN_HEADER].as_str();
    if sent.map(Secret::new).as_ref() != Some(token) {
        return Some(
            "the webhook block sends another dispatch token than the credentials hold (rotated?)"
                .into(),
        );
    }
    let want = i.url.map(automation::endpoint)?.ok()?;
    match data["url"].as_str() {
        Some(target) if target == want => None,
        target => Some(format!(
            "the webhook block posts to {}, not to {want}",
            target.unwrap_or("nothing")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prefect::PrefectError;
    use reqwest::Method;
    use serde_json::json;

    fn refused() -> Result<Option<WorkPool>, PrefectError> {
        Err(PrefectError::Status {
            method: Method::GET,
            path: "/api/work_pools/p".into(),
            status: 401,
            detail: "Unauthorized".into(),
            retry_after: None,
        })
    }

    #[test]
    fn cloud_wants_an_api_key_and_self_hosted_basic_auth_an_auth_string() {
        let key = PrefectAuth::ApiKey(Secret::new("pnu_x"));
        let auth = PrefectAuth::AuthString(Secret::new("u:p"));
        let cloud = "https://api.prefect.cloud/api/accounts/a/workspaces/w";
        assert_eq!(Backend::of(cloud), Backend::Cloud);
        assert_eq!(
            Backend::of("http://127.0.0.1:4200/api"),
            Backend::SelfHosted
        );
        assert_eq!(
            Backend::of("https://prefect.cloud.example.com/api"),
            Backend::SelfHosted
        );
        let read_ok = Ok(None);
        let c = credentials_check(Backend::Cloud, &PrefectAuth::None, cloud, &read_ok);
        assert!(c.explanation.contains("needs an API key"), "{c:?}");
        let c = credentials_check(Backend::Cloud, &auth, cloud, &read_ok);
        assert!(c.fix.unwrap().contains("set prefect_api_key"));
        let c = credentials_check(Backend::Cloud, &key, cloud, &read_ok);
        assert_eq!(c.status, super::super::Status::Ok);
        assert!(c.explanation.contains("Prefect Cloud") && c.explanation.contains("API key"));
        let c = credentials_check(Backend::Cloud, &key, cloud, &refused());
        assert!(
            c.fix.unwrap().contains("create an API key"),
            "{}",
            c.explanation
        );
        let api = "http://127.0.0.1:4200/api";
        let c = credentials_check(Backend::SelfHosted, &key, api, &refused());
        assert!(c.fix.unwrap().contains("not an API key"));
        let c = credentials_check(Backend::SelfHosted, &PrefectAuth::None, api, &refused());
        assert!(c.fix.unwrap().contains("wants basic auth"));
        let c = credentials_check(Backend::SelfHosted, &auth, api, &refused());
        assert!(c.explanation.contains("refused an auth string") && c.explanation.contains("401"));
    }

    #[test]
    fn the_python_workers_template_misses_the_vcs_and_build_variables() {
        let ours = pool::template(Some("p"));
        let mut older = ours.clone();
        let gone = ["build_dockerfile_path", "deployment_vcs_project_url"];
        for v in gone {
            older["variables"]["properties"]
                .as_object_mut()
                .unwrap()
                .remove(v);
            older["job_configuration"]
                .as_object_mut()
                .unwrap()
                .remove(v);
        }
        older["variables"]["properties"]["old_knob"] = json!({"type": "string"});
        older["variables"]["properties"]["tags"]["description"] = json!("older words");
        older["job_configuration"]["command"] = json!("{{ command }} --verbose");
        let d = drift(&older, &pool::merged_template(&older, None));
        assert_eq!(d.missing, gone);
        assert_eq!(d.unused, ["old_knob"]);
        assert_eq!(d.changed, ["tags"]);
        assert_eq!(d.configuration, ["command"]);
        assert!(d.other.is_empty());
        let c = template_check("nf", &older);
        assert!(
            c.explanation.contains(
                "missing variables (2): build_dockerfile_path, deployment_vcs_project_url"
            ),
            "{}",
            c.explanation
        );
        assert_eq!(
            c.fix.as_deref(),
            Some("prefect-nf work-pool update --name nf (keeps the defaults set on the pool)")
        );
        assert_eq!(template_check("nf", &ours).status, super::super::Status::Ok);
    }

    fn automation(enabled: bool, pool: Uuid, block: Uuid) -> Automation {
        let body = automation::automation("nf", &pool.to_string(), &block.to_string());
        Automation {
            id: Uuid::nil(),
            name: automation::automation_name("nf"),
            enabled,
            trigger: body["trigger"].clone(),
            actions: body["actions"].as_array().unwrap().clone(),
        }
    }

    #[test]
    fn instant_dispatch_needs_the_automation_exactly_when_a_token_is_set() {
        let (pool, block) = (Uuid::new_v4(), Uuid::new_v4());
        let token = Secret::new("dt");
        let endpoint = automation::endpoint("http://127.0.0.1:8080").unwrap();
        let data = automation::block_data(&endpoint, "dt");
        let good = automation(true, pool, block);
        let base = InstantDispatch {
            pool_name: "nf",
            pool_id: pool,
            dispatch_token: Some(&token),
            automation: Some(&good),
            block: Some((block, &data)),
            url: Some("http://127.0.0.1:8080"),
        };
        assert_eq!(instant_check(&base).status, super::super::Status::Ok);
        let off = InstantDispatch {
            dispatch_token: None,
            automation: None,
            ..base
        };
        assert_eq!(instant_check(&off).status, super::super::Status::Ok);
        let orphan = InstantDispatch {
            dispatch_token: None,
            ..base
        };
        assert!(instant_check(&orphan).explanation.contains("answers 404"));
        let missing = InstantDispatch {
            automation: None,
            ..base
        };
        assert!(instant_check(&missing).fix.unwrap().starts_with(
            "prefect-nf instant-dispatch enable --url http://127.0.0.1:8080 --pool nf"
        ));
        let disabled = automation(false, pool, block);
        let c = instant_check(&InstantDispatch {
            automation: Some(&disabled),
            ..base
        });
        assert_eq!(c.explanation, "the automation is disabled");
        let elsewhere = automation(true, Uuid::new_v4(), block);
        assert!(
            instant_check(&InstantDispatch {
                automation: Some(&elsewhere),
                ..base
            })
            .explanation
            .contains("not this pool")
        );
        let rotated = Secret::new("new");
        assert!(
            instant_check(&InstantDispatch {
                dispatch_token: Some(&rotated),
                ..base
            })
            .explanation
            .contains("another dispatch token")
        );
        let moved = InstantDispatch {
            url: Some("http://127.0.0.1:9090"),
            ..base
        };
        assert!(instant_check(&moved).explanation.contains("posts to http://127.0.0.1:8080/prefect/dispatch, not to http://127.0.0.1:9090/prefect/dispatch"));
        let unknown_url = InstantDispatch { url: None, ..base };
        assert_eq!(
            instant_check(&unknown_url).status,
            super::super::Status::Warn
        );
    }
}

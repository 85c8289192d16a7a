//! `prefect-nf doctor`: checks an installation with the settings and credentials the worker
//! itself would use (the environment, or the Lambda's Secrets Manager secret), and explains
//! each finding with a fix.
//!
//! Every check reads what it needs through the worker's own clients and setup code (the pool
//! template `work-pool update` writes, the integration `webhook register` writes, the automation
//! `instant-dispatch enable` writes, the job-variable resolution dispatch does), then judges it
//! with a pure function (in `prefect` and `northflank`). Checks that need a failed one are
//! reported as skipped, so one run shows every independent problem.

mod northflank;
mod prefect;
pub mod report;

use std::time::Duration;

use crate::config::{ConfigError, Credentials, PrefectAuth, SecretError, Settings, Source};
use crate::http::RateLimit;
use crate::prefect::PrefectError;
use crate::worker::Worker;

pub use prefect::Backend;
pub use report::{Check, Report, Status};

/// The integration name `webhook register` uses by default.
pub const DEFAULT_INTEGRATION: &str = "prefect-nf";

/// What the settings do not say.
#[derive(Clone, Debug)]
pub struct Options {
    /// The webhook's URL (the stack's WebhookUrl, or the local worker's address): the
    /// integration and the automation must point at it. Without it their URLs are not compared.
    pub url: Option<String>,
    /// The notification integration's name (`webhook register --name`).
    pub integration: String,
    /// How long all the checks may take together.
    pub timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            url: None,
            integration: DEFAULT_INTEGRATION.to_string(),
            timeout: Duration::from_secs(30),
        }
    }
}

/// Every check, starting from the variables `get` finds (the environment, a settings file).
pub async fn diagnose(get: &(dyn Fn(&str) -> Option<String> + Sync), options: &Options) -> Report {
    let mut report = Report::default();
    let settings = match Settings::from_lookup(&|k| get(k)) {
        Ok(s) => s,
        Err(e) => {
            report.push(Check::fail("settings", e.to_string(), config_fix(&e)));
            return report;
        }
    };
    if let Some(url) = &options.url
        && let Err(e) = crate::setup::automation::endpoint(url)
    {
        let fix = "pass the stack's WebhookUrl output, or the local worker's address";
        report.push(Check::fail("settings", e.to_string(), fix));
        return report;
    }
    report.push(settings_ok(&settings));
    let source = Source::from_lookup(get).await;
    let credentials = match source.load().await {
        Ok(c) => c,
        Err(e) => {
            report.push(Check::fail(
                "credentials",
                e.to_string(),
                credentials_fix(&e),
            ));
            return report;
        }
    };
    report.push(credentials_ok(&source, &credentials));
    match Worker::new(settings, credentials) {
        Ok(worker) => {
            let deadline = tokio::time::Instant::now() + options.timeout;
            check(&worker.until(deadline), options, &mut report).await;
        }
        Err(e) => report.push(Check::fail(
            "settings",
            e.to_string(),
            "correct the URL it names",
        )),
    }
    report
}

fn settings_ok(s: &Settings) -> Check {
    let p = &s.prefect;
    Check::ok(
        "settings",
        format!(
            "Prefect API {} ({}), work pool '{}', worker '{}', Northflank API {}",
            p.api_url,
            Backend::of(&p.api_url).describe(),
            p.work_pool,
            p.worker_name,
            s.northflank.api_url
        ),
    )
}

fn config_fix(e: &ConfigError) -> String {
    match e {
        ConfigError::Missing {
            var: "PFNF_WORK_POOL",
        } => "set PFNF_WORK_POOL, or pass --pool".into(),
        ConfigError::Missing { var } => {
            format!("set {var} (in the environment or the --env-file; the stack sets it in Lambda)")
        }
        ConfigError::Invalid { var, rule, .. } => format!("correct {var}: it {rule}"),
    }
}

fn credentials_fix(e: &SecretError) -> String {
    match e {
        SecretError::Read { .. } => "check PFNF_SECRET_ID (the stack's SecretArn output), and that your AWS credentials and region may read it".into(),
        SecretError::NotString { .. } | SecretError::Malformed { .. } => {
            "store the credentials as one JSON object of strings (docs/deploy.md, step 4)".into()
        }
        SecretError::Missing { key, .. } | SecretError::Placeholder { key, .. } => {
            format!("set {key} in the secret (docs/deploy.md, step 4)")
        }
        SecretError::Config(ConfigError::Missing { var }) => format!(
            "set {var}, or PFNF_SECRET_ID to read the credentials from the Lambda's secret"
        ),
        SecretError::Config(c) => config_fix(c),
    }
}

fn credentials_ok(source: &Source, c: &Credentials) -> Check {
    let from = match source {
        Source::SecretsManager { id, .. } => format!("read from Secrets Manager secret {id}"),
        Source::Values(_) => "read from the environment".to_string(),
    };
    let prefect = match c.prefect {
        PrefectAuth::None => "none",
        PrefectAuth::ApiKey(_) => "an API key",
        PrefectAuth::AuthString(_) => "an auth string",
    };
    let dispatch = match c.dispatch_token {
        Some(_) => "set (instant dispatch on)",
        None => "not set (instant dispatch off)",
    };
    Check::ok(
        "credentials",
        format!(
            "{from}: Northflank token and webhook token present; Prefect credentials: {prefect}; dispatch token: {dispatch}"
        ),
    )
}

/// The checks that talk to Prefect and Northflank, with `worker`'s settings and credentials.
pub async fn check(worker: &Worker, options: &Options, report: &mut Report) {
    let s = &worker.settings.prefect;
    let read = worker.prefect.read_work_pool(&s.work_pool).await;
    let prefect_answered = matches!(
        read,
        Ok(_) | Err(PrefectError::Status { .. } | PrefectError::Decode { .. })
    );
    report.push(prefect::credentials_check(
        Backend::of(&s.api_url),
        &worker.credentials.prefect,
        &s.api_url,
        &read,
    ));
    report.push(prefect::pool_check(&s.work_pool, &read));
    let pool = read.ok().flatten().filter(|p| p.kind == crate::WORKER_TYPE);
    let usage = match &pool {
        Some(p) => {
            report.push(prefect::template_check(&p.name, &p.base_job_template));
            steps::projects(worker, p, report).await
        }
        None => {
            let why = "the work pool could not be read";
            report.push(Check::skip("pool-template", why));
            report.push(Check::skip("job-variables", why));
            None
        }
    };
    let needed = usage.as_ref().map(northflank::Usage::own_projects);
    let northflank_answered = steps::integration(worker, options, needed.as_deref(), report).await;
    match &pool {
        Some(p) => report.push(steps::instant_dispatch(worker, p, options).await),
        None => report.push(Check::skip(
            "instant-dispatch",
            "the work pool could not be read",
        )),
    }
    report.push(if northflank_answered {
        northflank_rate(worker.northflank.rate_limit())
    } else {
        Check::skip("northflank-rate-limit", "Northflank did not answer")
    });
    report.push(if prefect_answered {
        prefect_rate(Backend::of(&s.api_url), worker.prefect.rate_limit())
    } else {
        Check::skip("prefect-rate-limit", "the Prefect API did not answer")
    });
}

/// Below this share of the budget left, a check fails: new runs would soon wait for the window.
pub const FAIL_BELOW: f64 = 0.05;
/// Below this share, a warning.
pub const WARN_BELOW: f64 = 0.20;

fn headroom(
    check: &'static str,
    api: &str,
    remaining: u64,
    r: RateLimit,
    (cost, fix): (&str, &str),
) -> Check {
    let reset = r
        .reset_secs
        .map(|s| format!(", the window resets in {s} s"))
        .unwrap_or_default();
    let (share, of) = match r.limit {
        Some(limit) if limit > 0 => (remaining as f64 / limit as f64, format!(" of {limit}")),
        _ => (if remaining == 0 { 0.0 } else { 1.0 }, String::new()),
    };
    let text = format!("{api}: {remaining}{of} requests left{reset}; {cost}");
    let thresholds = format!(
        "under {:.0} % fails, under {:.0} % warns",
        FAIL_BELOW * 100.0,
        WARN_BELOW * 100.0
    );
    if share < FAIL_BELOW {
        Check::fail(check, format!("{text} ({thresholds})"), fix)
    } else if share < WARN_BELOW {
        Check::warn(check, format!("{text} ({thresholds})")).with_fix(fix)
    } else {
        Check::ok(check, text)
    }
}

/// Northflank's budget after the checks' own requests (northflank-api.md §4.2: every answer
/// carries the headers; 1,000 requests an hour by default).
pub fn northflank_rate(r: RateLimit) -> Check {
    const NAME: &str = "northflank-rate-limit";
    let Some(remaining) = r.remaining else {
        return Check::warn(
            NAME,
            "Northflank's answers carried no x-ratelimit headers, so the budget is unknown (reconciliation then spends at most PFNF_RECONCILE_MAX requests per invocation)",
        );
    };
    headroom(
        NAME,
        "Northflank",
        remaining,
        r,
        (
            "a flow run takes about 4 (one more for a failed container's logs)",
            "wait for the window to reset; if it recurs, find the other clients of this token (the Python worker polls every 10 s per run) or ask Northflank for a higher limit",
        ),
    )
}

/// Prefect's budget, when its answers say (Prefect Cloud's limits are per minute and account;
/// a self-hosted server has none).
pub fn prefect_rate(backend: Backend, r: RateLimit) -> Check {
    const NAME: &str = "prefect-rate-limit";
    let Some(remaining) = r.remaining else {
        return Check::ok(
            NAME,
            format!(
                "{} sent no rate-limit headers{}",
                backend.describe(),
                match backend {
                    Backend::SelfHosted => " (a self-hosted server does not limit requests)",
                    Backend::Cloud =>
                        " (its limits are per minute and per account, answered with 429 and Retry-After, which the worker honours)",
                }
            ),
        );
    };
    headroom(
        NAME,
        "Prefect",
        remaining,
        r,
        (
            "dispatch polls every PFNF_POLL_INTERVAL seconds",
            "wait for the window to reset; if it recurs, find the other clients of this account, or raise PFNF_POLL_INTERVAL",
        ),
    )
}

/// The checks that gather before they judge.
mod steps {
    use super::northflank::{self, Integration, Usage};
    use super::prefect::{self, InstantDispatch};
    use super::{Check, Options, Report};
    use crate::northflank::NorthflankError;
    use crate::prefect::PrefectError;
    use crate::prefect::models::WorkPool;
    use crate::setup::{automation, integration};
    use crate::worker::Worker;

    /// `job-variables`, then one `project` check per project; the usage, when it was read.
    pub async fn projects(worker: &Worker, pool: &WorkPool, report: &mut Report) -> Option<Usage> {
        let usage = match northflank::usage(worker, pool).await {
            Ok(u) => u,
            Err(e) => {
                report.push(Check::fail(
                    "job-variables",
                    format!("could not read the pool's deployments and their flows: {e}"),
                    "see the prefect-api check",
                ));
                return None;
            }
        };
        report.push(northflank::usage_check(&pool.name, &usage));
        for p in &usage.projects {
            let client = crate::run::config::northflank_client(worker, p.credentials.as_ref());
            let probe = match client {
                Ok(nf) => nf.probe_project(&p.id).await,
                Err(e) => Err(e),
            };
            report.push(northflank::project_check(p, &probe));
        }
        Some(usage)
    }

    pub async fn integration(
        worker: &Worker,
        options: &Options,
        needed: Option<&[String]>,
        report: &mut Report,
    ) -> bool {
        let id = integration::integration_id(&options.integration);
        let read = worker.northflank.get_notification_integration(&id).await;
        for check in northflank::integration_checks(&Integration {
            name: &options.integration,
            read: &read,
            url: options.url.as_deref(),
            needed,
        }) {
            report.push(check);
        }
        // Whether Northflank answered at all (an error status is an answer).
        matches!(read, Ok(_) | Err(NorthflankError::Api(_)))
    }

    pub async fn instant_dispatch(worker: &Worker, pool: &WorkPool, options: &Options) -> Check {
        match read_instant(worker, pool, options).await {
            Ok(check) => check,
            Err(e) => Check::fail(
                "instant-dispatch",
                format!("could not read the automation or its block: {e}"),
                "see the prefect-api check",
            ),
        }
    }

    async fn read_instant(
        worker: &Worker,
        pool: &WorkPool,
        options: &Options,
    ) -> Result<Check, String> {
        use prefect_templating::Lookup as _;
        let prefect = &worker.prefect;
        let text = |e: PrefectError| e.to_string();
        let found = prefect
            .find_automation(&automation::automation_name(&pool.name))
            .await
            .map_err(text)?;
        let name = automation::block_name(&pool.name);
        let doc = prefect
            .read_block_document(automation::BLOCK_TYPE, &name)
            .await
            .map_err(text)?;
        // The same read templating does: the block's data with its secrets (URL, token header).
        let data = match &doc {
            Some(_) => prefect
                .block_document_by_name(automation::BLOCK_TYPE, &name)
                .await
                .map_err(|e| e.to_string())?,
            None => None,
        };
        let block = doc.as_ref().zip(data.as_ref()).map(|(d, v)| (d.id, v));
        Ok(prefect::instant_check(&InstantDispatch {
            pool_name: &pool.name,
            pool_id: pool.id,
            dispatch_token: worker.credentials.dispatch_token.as_ref(),
            automation: found.as_ref(),
            block,
            url: options.url.as_deref(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(limit: u64, remaining: u64) -> RateLimit {
        RateLimit {
            limit: Some(limit),
            remaining: Some(remaining),
            reset_secs: Some(1800),
        }
    }

    #[test]
    fn rate_limits_fail_below_five_and_warn_below_twenty_percent() {
        assert_eq!(northflank_rate(reading(1000, 700)).status, Status::Ok);
        assert_eq!(northflank_rate(reading(1000, 150)).status, Status::Warn);
        let low = northflank_rate(reading(1000, 40));
        assert_eq!(low.status, Status::Fail);
        assert!(
            low.explanation
                .starts_with("Northflank: 40 of 1000 requests left, the window resets in 1800 s"),
            "{}",
            low.explanation
        );
        assert!(low.explanation.contains("under 5 % fails"));
        assert_eq!(northflank_rate(RateLimit::default()).status, Status::Warn);
        let open = prefect_rate(Backend::SelfHosted, RateLimit::default());
        assert_eq!(open.status, Status::Ok);
        assert!(open.explanation.contains("does not limit"));
        assert_eq!(
            prefect_rate(Backend::Cloud, reading(625, 10)).status,
            Status::Fail
        );
    }

    #[test]
    fn setting_errors_name_the_variable_and_the_fix() {
        let fix = config_fix(&ConfigError::Missing {
            var: "PREFECT_API_URL",
        });
        assert!(fix.starts_with("set PREFECT_API_URL"));
        let secret = SecretError::Placeholder {
            id: "arn".into(),
            key: "prefect_api_key",
        };
        assert_eq!(
            credentials_fix(&secret),
            "set prefect_api_key in the secret (docs/deploy.md, step 4)"
        );
    }
}

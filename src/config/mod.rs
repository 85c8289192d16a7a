//! Settings and credentials.
//!
//! Settings are non-secret and come from environment variables (the same names in Lambda and in
//! the local worker), grouped by the concern that reads them: each step takes only its group.
//! Every default is defined once, in the group's `Default`. Credentials are secret
//! ([`credentials`]); they come from the environment locally and from one Secrets Manager
//! secret in Lambda ([`source`]).

mod credentials;
mod read;
mod source;

use std::collections::BTreeMap;
use std::time::Duration;

pub use credentials::{Credentials, PrefectAuth, Secret};
pub use read::{Lookup, parse_env_file};
pub use source::{SecretError, Source};

use read::{list, number, positive_seconds, required, seconds, set, text, url};

/// Why a setting or credential could not be used. Every variant names the variable and the rule.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("{var} is required but not set")]
    Missing { var: &'static str },
    #[error("{var}={value:?} is invalid: {rule}")]
    Invalid {
        var: &'static str,
        value: String,
        rule: &'static str,
    },
}

/// Non-secret settings, by concern.
#[derive(Clone, Debug)]
pub struct Settings {
    pub prefect: PrefectSettings,
    pub polling: PollingSettings,
    pub reconcile: ReconcileSettings,
    pub webhook: WebhookSettings,
    pub northflank: NorthflankSettings,
    /// `PFNF_METRICS_NAMESPACE`: when set, each dispatch invocation prints its summary as
    /// CloudWatch metrics in the embedded metric format (`dispatch::metrics`).
    pub metrics_namespace: Option<String>,
}

/// Which Prefect server, pool and queues; how the worker is named there.
#[derive(Clone, Debug)]
pub struct PrefectSettings {
    /// `PREFECT_API_URL`, e.g. `http://127.0.0.1:4200/api` or a Prefect Cloud workspace URL.
    pub api_url: String,
    /// `PFNF_WORK_POOL`.
    pub work_pool: String,
    /// `PFNF_WORK_QUEUES`, comma-separated; empty means every queue of the pool.
    pub work_queues: Vec<String>,
    /// `PFNF_WORKER_NAME`: one stable name shared by every invocation, so the UI shows one
    /// worker (default `prefect-nf`).
    pub worker_name: String,
    /// The worker process's own Prefect settings (`PREFECT_*` variables, e.g.
    /// `PREFECT_LOGGING_LEVEL`), passed on to every flow run's environment as every Prefect
    /// worker does (`BaseJobConfiguration._base_environment`). Secrets are not among them: see
    /// [`flow_run_env`].
    pub flow_run_env: BTreeMap<String, String>,
}

/// How one dispatch invocation polls and submits.
#[derive(Clone, Debug)]
pub struct PollingSettings {
    /// `PFNF_POLL_INTERVAL` seconds between polls inside one dispatch invocation (default 10).
    pub interval: Duration,
    /// `PFNF_POLL_WINDOW` seconds one dispatch invocation keeps polling (default 50; 0 = one poll).
    pub window: Duration,
    /// `PFNF_PREFETCH` seconds: runs scheduled up to this far ahead are claimed (default 10).
    pub prefetch: Duration,
    /// `PFNF_HEARTBEAT_INTERVAL` seconds: how often heartbeats really happen, i.e. the schedule
    /// period in Lambda (default 60). Prefect shows the worker ONLINE for three times this.
    pub heartbeat_interval: Duration,
    /// `PFNF_MAX_CONCURRENCY`: flow runs submitted at once by one invocation (default 30: each
    /// submission mostly waits on Prefect's answers, and with 10 in flight a Postgres-backed
    /// server stayed 62 % idle in the benchmark; 30 nearly doubled the runs started per second).
    pub max_concurrency: usize,
    /// `PFNF_POLL_LIMIT`: the most runs taken from one poll (default 50, at most 200).
    pub limit: u32,
}

/// What reconciliation does, how soon, and how much of Northflank's budget it may spend.
#[derive(Clone, Debug)]
pub struct ReconcileSettings {
    /// `PFNF_RESUME_AFTER` seconds: a claimed run still without infrastructure this long after
    /// its last PENDING state lost its submitter, and is resumed (default 120: longer than any
    /// invocation).
    pub resume_after: Duration,
    /// `PFNF_GIVE_UP_AFTER` seconds: a run that could not be resumed by then is Crashed (default
    /// 900; with a one-minute schedule, about 13 attempts).
    pub give_up_after: Duration,
    /// `PFNF_CHECK_AFTER` seconds: a PENDING or RUNNING run is first checked against Northflank
    /// this long after its last state change, in case a notification was lost; later checks
    /// space out as the run ages (default 120).
    pub check_after: Duration,
    /// `PFNF_CANCEL_GRACE` seconds: a started run still CANCELLING this long (its runner did not
    /// stop it) has its Northflank run aborted (default 120).
    pub cancel_grace: Duration,
    /// `PFNF_RECONCILE_SHARE`: the largest share of Northflank's remaining rate limit one
    /// invocation spends on reconciliation (default 0.2).
    pub share: f64,
    /// `PFNF_RECONCILE_MAX`: the most Northflank requests one invocation spends on
    /// reconciliation (default 40).
    pub max_requests: u32,
    /// `PFNF_SWEEP_INTERVAL` seconds: how often one process lists the projects' jobs to find
    /// jobs left behind by lost notifications (default 600; 0 = every invocation). A fresh
    /// process sweeps at once.
    pub sweep_interval: Duration,
    /// `PFNF_PROJECTS`: more Northflank projects to sweep for leftover jobs, beyond the pool's
    /// default project and those of active runs (comma-separated).
    pub projects: Vec<String>,
}

/// The HTTP endpoint: what requests it takes and how long it waits for them.
#[derive(Clone, Debug)]
pub struct WebhookSettings {
    /// `PFNF_WEBHOOK_MAX_BODY` bytes: larger bodies are refused (default 262144).
    pub max_body: usize,
    /// `PFNF_HTTP_HEADER_TIMEOUT` seconds: a connection to the local server must send a
    /// request's headers within this, both when it opens and between requests, or it is closed
    /// (default 10; it is also the idle keep-alive timeout).
    pub header_timeout: Duration,
    /// `PFNF_HTTP_BODY_TIMEOUT` seconds: the longest a request body may take to arrive
    /// (default 10).
    pub body_timeout: Duration,
    /// `PFNF_HTTP_REQUEST_TIMEOUT` seconds: the longest a whole request may take (default 30;
    /// an instant dispatch in Lambda takes up to 25).
    pub request_timeout: Duration,
    /// `PFNF_HTTP_MAX_CONNECTIONS`: connections the local server holds open at once; more wait
    /// to be accepted (default 4096, and never more than the open-file limit allows).
    pub max_connections: usize,
    /// `PFNF_INSTANT_FUNCTION`: the Lambda function (name or ARN) the webhook function hands
    /// instant-dispatch calls to, answering them at once; unset, it dispatches them itself
    /// before answering. Lambda only: the local worker always answers at once.
    pub instant_function: Option<String>,
}

/// The Northflank API, and how runs are shown from it.
#[derive(Clone, Debug)]
pub struct NorthflankSettings {
    /// `NORTHFLANK_API_URL` (default `https://api.northflank.com`).
    pub api_url: String,
    /// `PFNF_RETRY_BASE_MS`: the first retry delay of both API clients (default 2000, doubling).
    pub retry_base: Duration,
    /// `PFNF_JOB_URL`: the link to a job in Northflank's app shown in the flow run's logs, with
    /// `{project}` and `{job}` placeholders. Northflank does not document its app URLs; the
    /// default follows the team-independent `/s/` form its own links use.
    pub job_url: String,
    /// `PFNF_FORWARD_LOG_LINES`: how many of a failed container's last log lines are copied to
    /// the flow run's logs before its job is deleted (default 50; 0 turns it off).
    pub forward_log_lines: u32,
}

/// [INF] Northflank's app links are undocumented; see [`NorthflankSettings::job_url`].
pub const DEFAULT_JOB_URL: &str = "https://app.northflank.com/s/project/{project}/jobs/{job}";

impl Default for PollingSettings {
    fn default() -> Self {
        PollingSettings {
            interval: Duration::from_secs(10),
            window: Duration::from_secs(50),
            prefetch: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(60),
            max_concurrency: 30,
            limit: 50,
        }
    }
}

impl Default for ReconcileSettings {
    fn default() -> Self {
        ReconcileSettings {
            resume_after: Duration::from_secs(120),
            give_up_after: Duration::from_secs(900),
            check_after: Duration::from_secs(120),
            cancel_grace: Duration::from_secs(120),
            share: 0.2,
            max_requests: 40,
            sweep_interval: Duration::from_secs(600),
            projects: Vec::new(),
        }
    }
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            max_body: 256 * 1024,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_connections: 4096,
            instant_function: None,
        }
    }
}

impl Default for NorthflankSettings {
    fn default() -> Self {
        NorthflankSettings {
            api_url: "https://api.northflank.com".to_string(),
            retry_base: Duration::from_secs(2),
            job_url: DEFAULT_JOB_URL.to_string(),
            forward_log_lines: 50,
        }
    }
}

impl Settings {
    /// Defaults for everything but the two required values.
    pub fn new(prefect_api_url: impl Into<String>, work_pool: impl Into<String>) -> Self {
        Settings {
            prefect: PrefectSettings {
                api_url: prefect_api_url.into().trim_end_matches('/').to_string(),
                work_pool: work_pool.into(),
                work_queues: Vec::new(),
                worker_name: "prefect-nf".to_string(),
                flow_run_env: BTreeMap::new(),
            },
            polling: PollingSettings::default(),
            reconcile: ReconcileSettings::default(),
            webhook: WebhookSettings::default(),
            northflank: NorthflankSettings::default(),
            metrics_namespace: None,
        }
    }

    pub fn from_lookup(get: Lookup) -> Result<Self, ConfigError> {
        Ok(Settings {
            prefect: PrefectSettings::from_lookup(get)?,
            polling: PollingSettings::from_lookup(get)?,
            reconcile: ReconcileSettings::from_lookup(get)?,
            webhook: WebhookSettings::from_lookup(get)?,
            northflank: NorthflankSettings::from_lookup(get)?,
            metrics_namespace: metrics_namespace(get)?,
        })
    }

    /// Settings from a complete set of variables: looked up by name, and scanned for the
    /// Prefect settings passed on to flow runs.
    pub fn from_vars(vars: &BTreeMap<String, String>) -> Result<Self, ConfigError> {
        let mut settings = Self::from_lookup(&|k| vars.get(k).cloned())?;
        settings.prefect.flow_run_env = flow_run_env(vars);
        Ok(settings)
    }

    /// Settings from the process environment (Lambda's function environment, or the shell's).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(&std::env::vars().collect())
    }
}

/// Variables holding credentials, by name. Prefect's own credentials reach the flow run through
/// the run's environment ([`PrefectAuth::container_env`]); other secret settings (database
/// passwords and URLs, server auth) belong to a server, not to a flow run, and are not passed on.
fn is_secret_setting(name: &str) -> bool {
    [
        "KEY",
        "SECRET",
        "PASSWORD",
        "TOKEN",
        "AUTH_STRING",
        "CONNECTION_URL",
    ]
    .iter()
    .any(|word| name.contains(word))
}

/// The worker's Prefect settings a flow run inherits: every `PREFECT_*` variable except the API
/// URL (the worker sets its own), the per-run `PREFECT__*` ones (set per flow run) and secrets.
pub fn flow_run_env(vars: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    vars.iter()
        .filter(|(name, _)| {
            name.starts_with("PREFECT_")
                && !name.starts_with("PREFECT__")
                && name.as_str() != "PREFECT_API_URL"
                && !is_secret_setting(name)
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

impl PrefectSettings {
    fn from_lookup(get: Lookup) -> Result<Self, ConfigError> {
        let var = "PREFECT_API_URL";
        let api_url = url(get, var)?.ok_or(ConfigError::Missing { var })?;
        let api_url = api_url.trim_end_matches('/').to_string();
        let worker_name = match text(get, "PFNF_WORKER_NAME") {
            Some(name) if name.contains('/') || name.contains('%') => {
                return Err(ConfigError::Invalid {
                    var: "PFNF_WORKER_NAME",
                    value: name,
                    rule: "Prefect worker names cannot contain '/' or '%'",
                });
            }
            Some(name) => name,
            None => "prefect-nf".to_string(),
        };
        Ok(PrefectSettings {
            api_url,
            work_pool: required(get, "PFNF_WORK_POOL")?,
            work_queues: list(get, "PFNF_WORK_QUEUES").unwrap_or_default(),
            worker_name,
            flow_run_env: BTreeMap::new(),
        })
    }
}

impl PollingSettings {
    fn from_lookup(get: Lookup) -> Result<Self, ConfigError> {
        let mut p = PollingSettings::default();
        set(
            &mut p.interval,
            positive_seconds(get, "PFNF_POLL_INTERVAL")?,
        );
        set(&mut p.window, seconds(get, "PFNF_POLL_WINDOW")?);
        set(&mut p.prefetch, seconds(get, "PFNF_PREFETCH")?);
        let heartbeat = seconds(get, "PFNF_HEARTBEAT_INTERVAL")?;
        set(
            &mut p.heartbeat_interval,
            heartbeat.map(|d| d.max(Duration::from_secs(1))),
        );
        let concurrency = number(get, "PFNF_MAX_CONCURRENCY")?;
        set(
            &mut p.max_concurrency,
            concurrency.map(|n| n.max(1) as usize),
        );
        set(
            &mut p.limit,
            number(get, "PFNF_POLL_LIMIT")?.map(|n| n.clamp(1, 200) as u32),
        );
        Ok(p)
    }
}

impl ReconcileSettings {
    fn from_lookup(get: Lookup) -> Result<Self, ConfigError> {
        let mut r = ReconcileSettings::default();
        set(&mut r.resume_after, seconds(get, "PFNF_RESUME_AFTER")?);
        set(&mut r.give_up_after, seconds(get, "PFNF_GIVE_UP_AFTER")?);
        set(&mut r.check_after, seconds(get, "PFNF_CHECK_AFTER")?);
        set(&mut r.cancel_grace, seconds(get, "PFNF_CANCEL_GRACE")?);
        set(&mut r.sweep_interval, seconds(get, "PFNF_SWEEP_INTERVAL")?);
        set(&mut r.share, share(get)?);
        let max = number(get, "PFNF_RECONCILE_MAX")?;
        set(
            &mut r.max_requests,
            max.map(|n| n.min(u64::from(u32::MAX)) as u32),
        );
        set(&mut r.projects, list(get, "PFNF_PROJECTS"));
        Ok(r)
    }
}

fn share(get: Lookup) -> Result<Option<f64>, ConfigError> {
    let var = "PFNF_RECONCILE_SHARE";
    let Some(v) = text(get, var) else {
        return Ok(None);
    };
    match v.trim().parse::<f64>() {
        Ok(x) if (0.0..=1.0).contains(&x) => Ok(Some(x)),
        _ => Err(ConfigError::Invalid {
            var,
            value: v,
            rule: "must be a number from 0 to 1",
        }),
    }
}

impl WebhookSettings {
    fn from_lookup(get: Lookup) -> Result<Self, ConfigError> {
        let mut w = WebhookSettings::default();
        set(
            &mut w.max_body,
            number(get, "PFNF_WEBHOOK_MAX_BODY")?.map(|n| n as usize),
        );
        set(
            &mut w.header_timeout,
            positive_seconds(get, "PFNF_HTTP_HEADER_TIMEOUT")?,
        );
        set(
            &mut w.body_timeout,
            positive_seconds(get, "PFNF_HTTP_BODY_TIMEOUT")?,
        );
        set(
            &mut w.request_timeout,
            positive_seconds(get, "PFNF_HTTP_REQUEST_TIMEOUT")?,
        );
        let connections = number(get, "PFNF_HTTP_MAX_CONNECTIONS")?;
        set(
            &mut w.max_connections,
            connections.map(|n| n.clamp(1, 1_000_000) as usize),
        );
        w.instant_function = lambda_function(get, "PFNF_INSTANT_FUNCTION")?;
        Ok(w)
    }
}

/// A Lambda function as `Invoke` takes it: a name, optionally with a version or alias, or its
/// full ARN.
fn lambda_function(get: Lookup, var: &'static str) -> Result<Option<String>, ConfigError> {
    static FUNCTION: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(
            r"^(arn:aws[a-zA-Z-]*:lambda:[a-z]{2}(-[a-z]+)+-\d:\d{12}:function:)?[a-zA-Z0-9_-]{1,64}(:(\$LATEST|[a-zA-Z0-9_-]{1,128}))?$",
        )
        .expect("a valid pattern")
    });
    let Some(function) = text(get, var) else {
        return Ok(None);
    };
    if !FUNCTION.is_match(&function) {
        return Err(ConfigError::Invalid {
            var,
            value: function,
            rule: "must be a Lambda function name (letters, digits, '-' and '_', at most 64), optionally with ':<version or alias>', or the function's ARN",
        });
    }
    Ok(Some(function))
}

impl NorthflankSettings {
    pub fn from_lookup(get: Lookup) -> Result<Self, ConfigError> {
        let mut n = NorthflankSettings::default();
        let api = url(get, "NORTHFLANK_API_URL")?;
        set(
            &mut n.api_url,
            api.map(|u| u.trim_end_matches('/').to_string()),
        );
        let retry = number(get, "PFNF_RETRY_BASE_MS")?;
        set(&mut n.retry_base, retry.map(Duration::from_millis));
        set(&mut n.job_url, url(get, "PFNF_JOB_URL")?);
        let lines = number(get, "PFNF_FORWARD_LOG_LINES")?;
        set(&mut n.forward_log_lines, lines.map(|n| n.min(1000) as u32));
        Ok(n)
    }

    /// The link to a job in Northflank's app.
    pub fn job_link(&self, project: &str, job: &str) -> String {
        self.job_url
            .replace("{project}", project)
            .replace("{job}", job)
    }
}

/// CloudWatch's own rules for a namespace; `AWS/` is reserved for AWS services.
fn metrics_namespace(get: Lookup) -> Result<Option<String>, ConfigError> {
    let Some(ns) = text(get, "PFNF_METRICS_NAMESPACE") else {
        return Ok(None);
    };
    let valid = ns.len() <= 255
        && !ns.starts_with(':')
        && !ns.starts_with("AWS/")
        && ns.chars().all(|c| c.is_ascii_graphic() || c == ' ');
    if !valid {
        return Err(ConfigError::Invalid {
            var: "PFNF_METRICS_NAMESPACE",
            value: ns,
            rule: "must be at most 255 printable ASCII characters, not start with ':' or 'AWS/'",
        });
    }
    Ok(Some(ns))
}

#[cfg(test)]
mod tests {
    use super::read::tests::lookup;
    use super::*;

    #[test]
    fn flow_runs_inherit_the_workers_prefect_settings_but_no_secret() {
        let vars: BTreeMap<String, String> = [
            ("PREFECT_API_URL", "http://x/api"),
            ("PFNF_WORK_POOL", "nf"),
            ("PREFECT_LOGGING_LEVEL", "DEBUG"),
            ("PREFECT_RESULTS_PERSIST_BY_DEFAULT", "true"),
            ("PREFECT_API_KEY", "pnu_secret"),
            ("PREFECT_API_AUTH_STRING", "admin:pass"),
            ("PREFECT_API_DATABASE_PASSWORD", "pw"),
            (
                "PREFECT_API_DATABASE_CONNECTION_URL",
                "postgresql://u:pw@h/db",
            ),
            ("PREFECT__FLOW_RUN_ID", "x"),
            ("PFNF_WORKER_NAME", "w"),
            ("HOME", "/root"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let s = Settings::from_vars(&vars).unwrap();
        let passed: Vec<&str> = s.prefect.flow_run_env.keys().map(String::as_str).collect();
        assert_eq!(
            passed,
            [
                "PREFECT_LOGGING_LEVEL",
                "PREFECT_RESULTS_PERSIST_BY_DEFAULT"
            ]
        );
        assert_eq!(s.prefect.work_pool, "nf");
    }

    #[test]
    fn settings_defaults_and_overrides() {
        let s = Settings::from_lookup(&lookup(&[
            ("PREFECT_API_URL", "http://127.0.0.1:4200/api/"),
            ("PFNF_WORK_POOL", "nf"),
            ("PFNF_WORK_QUEUES", "a, b,,"),
            ("PFNF_POLL_WINDOW", "0"),
        ]))
        .unwrap();
        assert_eq!(s.prefect.api_url, "http://127.0.0.1:4200/api");
        assert_eq!(s.prefect.work_queues, vec!["a", "b"]);
        assert_eq!(s.polling.window, Duration::ZERO);
        assert_eq!(s.polling.interval, Duration::from_secs(10));
        assert_eq!(s.northflank.api_url, "https://api.northflank.com");
    }

    #[test]
    fn settings_errors_name_the_variable_and_rule() {
        let err = Settings::from_lookup(&lookup(&[("PFNF_WORK_POOL", "nf")])).unwrap_err();
        assert_eq!(err.to_string(), "PREFECT_API_URL is required but not set");
        let err = Settings::from_lookup(&lookup(&[
            ("PREFECT_API_URL", "http://x/api"),
            ("PFNF_WORK_POOL", "nf"),
            ("PFNF_POLL_INTERVAL", "ten"),
        ]))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "PFNF_POLL_INTERVAL=\"ten\" is invalid: must be a non-negative number of seconds"
        );
        let err = Settings::from_lookup(&lookup(&[
            ("PREFECT_API_URL", "http://x/api"),
            ("PFNF_WORK_POOL", "nf"),
            ("PFNF_WORKER_NAME", "a/b"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("cannot contain '/'"));
        let err = Settings::from_lookup(&lookup(&[
            ("PREFECT_API_URL", "ftp://x/api"),
            ("PFNF_WORK_POOL", "nf"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("must start with http://"), "{err}");
        let err = Settings::from_lookup(&lookup(&[
            ("PREFECT_API_URL", "http://x/api"),
            ("PFNF_WORK_POOL", "nf"),
            ("PFNF_HTTP_HEADER_TIMEOUT", "0"),
        ]))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "PFNF_HTTP_HEADER_TIMEOUT=\"0\" is invalid: must be greater than 0"
        );
    }

    #[test]
    fn the_instant_function_is_a_lambda_function_name_or_arn() {
        let with = |function: &str| {
            Settings::from_lookup(&lookup(&[
                ("PREFECT_API_URL", "http://x/api"),
                ("PFNF_WORK_POOL", "nf"),
                ("PFNF_INSTANT_FUNCTION", function),
            ]))
            .map(|s| s.webhook.instant_function)
        };
        for good in [
            "prefect-nf-InstantDispatchFunction-AbC_12",
            "f:live",
            "f:$LATEST",
            "arn:aws:lambda:eu-west-1:123456789012:function:f",
            "arn:aws-us-gov:lambda:us-gov-west-1:123456789012:function:f:7",
        ] {
            assert_eq!(with(good), Ok(Some(good.to_string())), "{good}");
        }
        for bad in [
            "my function",
            "f/../other",
            "arn:aws:lambda:eu-west-1:123:function:f",
            "arn:aws:s3:::bucket",
            &"f".repeat(65),
        ] {
            let err = with(bad).unwrap_err().to_string();
            assert!(
                err.starts_with("PFNF_INSTANT_FUNCTION=") && err.contains("Lambda function name"),
                "{bad}: {err}"
            );
        }
        let unset = Settings::from_lookup(&lookup(&[
            ("PREFECT_API_URL", "http://x/api"),
            ("PFNF_WORK_POOL", "nf"),
        ]))
        .unwrap();
        assert_eq!(unset.webhook.instant_function, None);
    }
}

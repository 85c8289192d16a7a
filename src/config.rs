//! Settings and credentials.
//!
//! Settings are non-secret and come from environment variables (the same names in Lambda and in
//! the local worker). Credentials are secret; they come from the environment locally and from one
//! Secrets Manager secret in Lambda, and never appear in `Debug` output or logs.

use std::fmt;
use std::time::Duration;

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

/// A secret string. `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(********)")
    }
}

/// How the worker authenticates to Prefect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PrefectAuth {
    /// An open self-hosted server.
    None,
    /// Prefect Cloud: `Authorization: Bearer <key>`; the container gets `PREFECT_API_KEY`.
    ApiKey(Secret),
    /// A self-hosted server with basic auth (`user:pass`): `Authorization: Basic …`; the
    /// container gets `PREFECT_API_AUTH_STRING`.
    AuthString(Secret),
}

impl PrefectAuth {
    /// Prefect's own rule: when both are set, the auth string wins.
    pub fn from_parts(api_key: Option<String>, auth_string: Option<String>) -> Self {
        match (
            auth_string.filter(|s| !s.is_empty()),
            api_key.filter(|s| !s.is_empty()),
        ) {
            (Some(auth), _) => PrefectAuth::AuthString(Secret::new(auth)),
            (None, Some(key)) => PrefectAuth::ApiKey(Secret::new(key)),
            (None, None) => PrefectAuth::None,
        }
    }

    /// The environment variable and value the flow-run container needs to reach Prefect.
    pub fn container_env(&self) -> Option<(&'static str, &str)> {
        match self {
            PrefectAuth::None => None,
            PrefectAuth::ApiKey(key) => Some(("PREFECT_API_KEY", key.expose())),
            PrefectAuth::AuthString(auth) => Some(("PREFECT_API_AUTH_STRING", auth.expose())),
        }
    }
}

/// Everything secret the worker holds.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub prefect: PrefectAuth,
    pub northflank_token: Secret,
    /// The shared token Northflank sends in `X-Northflank-Notification-Integration-Token`.
    pub webhook_token: Secret,
    /// The token Prefect's instant-dispatch automation sends (see [`crate::instant`]); none
    /// turns the endpoint off.
    pub dispatch_token: Option<Secret>,
}

impl Credentials {
    /// The variables credentials are read from when they do not come from a secret.
    pub const VARIABLES: [&str; 5] = [
        "PREFECT_API_KEY",
        "PREFECT_API_AUTH_STRING",
        "NORTHFLANK_API_TOKEN",
        "PFNF_WEBHOOK_TOKEN",
        "PFNF_DISPATCH_TOKEN",
    ];

    /// Reads `PREFECT_API_KEY` / `PREFECT_API_AUTH_STRING`, `NORTHFLANK_API_TOKEN`,
    /// `PFNF_WEBHOOK_TOKEN` and optionally `PFNF_DISPATCH_TOKEN`.
    pub fn from_lookup(get: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let required = |var: &'static str| {
            get(var)
                .filter(|v| !v.is_empty())
                .map(Secret::new)
                .ok_or(ConfigError::Missing { var })
        };
        Ok(Credentials {
            prefect: PrefectAuth::from_parts(
                get("PREFECT_API_KEY"),
                get("PREFECT_API_AUTH_STRING"),
            ),
            northflank_token: required("NORTHFLANK_API_TOKEN")?,
            webhook_token: required("PFNF_WEBHOOK_TOKEN")?,
            dispatch_token: get("PFNF_DISPATCH_TOKEN")
                .filter(|v| !v.is_empty())
                .map(Secret::new),
        })
    }

    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(&env_var)
    }
}

/// Non-secret settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `PREFECT_API_URL`, e.g. `http://127.0.0.1:4200/api` or a Prefect Cloud workspace URL.
    pub prefect_api_url: String,
    /// `PFNF_WORK_POOL`.
    pub work_pool: String,
    /// `PFNF_WORK_QUEUES`, comma-separated; empty means every queue of the pool.
    pub work_queues: Vec<String>,
    /// `PFNF_WORKER_NAME`: one stable name shared by every invocation, so the UI shows one worker.
    pub worker_name: String,
    /// `PFNF_POLL_INTERVAL` seconds between polls inside one dispatch invocation (default 10).
    pub poll_interval: Duration,
    /// `PFNF_POLL_WINDOW` seconds one dispatch invocation keeps polling (default 50; 0 = one poll).
    pub poll_window: Duration,
    /// `PFNF_PREFETCH` seconds: runs scheduled up to this far ahead are claimed (default 10).
    pub prefetch: Duration,
    /// `PFNF_HEARTBEAT_INTERVAL` seconds: how often heartbeats really happen, i.e. the schedule
    /// period in Lambda (default 60). Prefect shows the worker ONLINE for three times this.
    pub heartbeat_interval: Duration,
    /// `PFNF_MAX_CONCURRENCY`: flow runs submitted at once by one invocation (default 10).
    pub max_concurrency: usize,
    /// `PFNF_POLL_LIMIT`: the most runs taken from one poll (default 50).
    pub poll_limit: u32,
    /// `NORTHFLANK_API_URL` (default `https://api.northflank.com`).
    pub northflank_api_url: String,
    /// `PFNF_WEBHOOK_MAX_BODY` bytes: larger webhook bodies are refused (default 262144).
    pub webhook_max_body: usize,
    /// `PFNF_HTTP_HEADER_TIMEOUT` seconds: a connection to the local server must send a
    /// request's headers within this, both when it opens and between requests, or it is closed
    /// (default 10; it is also the idle keep-alive timeout).
    pub http_header_timeout: Duration,
    /// `PFNF_HTTP_BODY_TIMEOUT` seconds: the longest a request body may take to arrive
    /// (default 10).
    pub http_body_timeout: Duration,
    /// `PFNF_HTTP_REQUEST_TIMEOUT` seconds: the longest a whole request may take (default 30;
    /// an instant dispatch in Lambda takes up to 25).
    pub http_request_timeout: Duration,
    /// `PFNF_HTTP_MAX_CONNECTIONS`: connections the local server holds open at once; more wait
    /// to be accepted (default 4096, and never more than the open-file limit allows).
    pub http_max_connections: usize,
    /// `PFNF_RETRY_BASE_MS`: the first retry delay of both API clients (default 2000, doubling).
    pub retry_base: Duration,
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
    pub reconcile_share: f64,
    /// `PFNF_RECONCILE_MAX`: the most Northflank requests one invocation spends on
    /// reconciliation (default 40).
    pub reconcile_max: u32,
    /// `PFNF_SWEEP_INTERVAL` seconds: how often one process lists the projects' jobs to find
    /// jobs left behind by lost notifications (default 600; 0 = every invocation). A fresh
    /// process sweeps at once.
    pub sweep_interval: Duration,
    /// `PFNF_PROJECTS`: more Northflank projects to sweep for leftover jobs, beyond the pool's
    /// default project and those of active runs (comma-separated).
    pub projects: Vec<String>,
    /// `PFNF_JOB_URL`: the link to a job in Northflank's app shown in the flow run's logs, with
    /// `{project}` and `{job}` placeholders. Northflank does not document its app URLs; the
    /// default follows the team-independent `/s/` form its own links use.
    pub job_url: String,
    /// `PFNF_FORWARD_LOG_LINES`: how many of a failed container's last log lines are copied to
    /// the flow run's logs before its job is deleted (default 50; 0 turns it off).
    pub forward_log_lines: u32,
    /// `PFNF_METRICS_NAMESPACE`: when set, each dispatch invocation prints its summary as
    /// CloudWatch metrics in the embedded metric format (see [`crate::metrics`]).
    pub metrics_namespace: Option<String>,
}

/// [INF] Northflank's app links are undocumented; see [`Settings::job_url`].
pub const DEFAULT_JOB_URL: &str = "https://app.northflank.com/s/project/{project}/jobs/{job}";

impl Settings {
    /// The link to a job in Northflank's app.
    pub fn job_link(&self, project: &str, job: &str) -> String {
        self.job_url
            .replace("{project}", project)
            .replace("{job}", job)
    }

    /// Defaults for everything but the two required values.
    pub fn new(prefect_api_url: impl Into<String>, work_pool: impl Into<String>) -> Self {
        Settings {
            prefect_api_url: prefect_api_url.into().trim_end_matches('/').to_string(),
            work_pool: work_pool.into(),
            work_queues: Vec::new(),
            worker_name: "prefect-nf".to_string(),
            poll_interval: Duration::from_secs(10),
            poll_window: Duration::from_secs(50),
            prefetch: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(60),
            max_concurrency: 10,
            poll_limit: 50,
            northflank_api_url: "https://api.northflank.com".to_string(),
            webhook_max_body: 256 * 1024,
            http_header_timeout: Duration::from_secs(10),
            http_body_timeout: Duration::from_secs(10),
            http_request_timeout: Duration::from_secs(30),
            http_max_connections: 4096,
            retry_base: Duration::from_secs(2),
            resume_after: Duration::from_secs(120),
            give_up_after: Duration::from_secs(900),
            check_after: Duration::from_secs(120),
            cancel_grace: Duration::from_secs(120),
            reconcile_share: 0.2,
            reconcile_max: 40,
            sweep_interval: Duration::from_secs(600),
            projects: Vec::new(),
            job_url: DEFAULT_JOB_URL.to_string(),
            forward_log_lines: 50,
            metrics_namespace: None,
        }
    }

    pub fn from_lookup(get: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let api = get("PREFECT_API_URL")
            .filter(|v| !v.is_empty())
            .ok_or(ConfigError::Missing {
                var: "PREFECT_API_URL",
            })?;
        if !(api.starts_with("http://") || api.starts_with("https://")) {
            return Err(ConfigError::Invalid {
                var: "PREFECT_API_URL",
                value: api,
                rule: "must start with http:// or https://",
            });
        }
        let pool = get("PFNF_WORK_POOL")
            .filter(|v| !v.is_empty())
            .ok_or(ConfigError::Missing {
                var: "PFNF_WORK_POOL",
            })?;
        let mut s = Settings::new(api, pool);
        if let Some(q) = get("PFNF_WORK_QUEUES") {
            s.work_queues = q
                .split(',')
                .map(str::trim)
                .filter(|q| !q.is_empty())
                .map(String::from)
                .collect();
        }
        if let Some(name) = get("PFNF_WORKER_NAME").filter(|v| !v.is_empty()) {
            if name.contains('/') || name.contains('%') {
                return Err(ConfigError::Invalid {
                    var: "PFNF_WORKER_NAME",
                    value: name,
                    rule: "Prefect worker names cannot contain '/' or '%'",
                });
            }
            s.worker_name = name;
        }
        let secs = |var| seconds(get, var);
        if let Some(d) = secs("PFNF_POLL_INTERVAL")? {
            if d.is_zero() {
                return Err(ConfigError::Invalid {
                    var: "PFNF_POLL_INTERVAL",
                    value: "0".into(),
                    rule: "must be greater than 0",
                });
            }
            s.poll_interval = d;
        }
        if let Some(d) = secs("PFNF_POLL_WINDOW")? {
            s.poll_window = d;
        }
        if let Some(d) = secs("PFNF_PREFETCH")? {
            s.prefetch = d;
        }
        if let Some(d) = secs("PFNF_HEARTBEAT_INTERVAL")? {
            s.heartbeat_interval = d.max(Duration::from_secs(1));
        }
        if let Some(n) = number(get, "PFNF_MAX_CONCURRENCY")? {
            s.max_concurrency = n.max(1) as usize;
        }
        if let Some(n) = number(get, "PFNF_POLL_LIMIT")? {
            s.poll_limit = n.clamp(1, 200) as u32;
        }
        if let Some(url) = get("NORTHFLANK_API_URL").filter(|v| !v.is_empty()) {
            s.northflank_api_url = url.trim_end_matches('/').to_string();
        }
        if let Some(n) = number(get, "PFNF_WEBHOOK_MAX_BODY")? {
            s.webhook_max_body = n as usize;
        }
        for (var, field) in [
            ("PFNF_HTTP_HEADER_TIMEOUT", &mut s.http_header_timeout),
            ("PFNF_HTTP_BODY_TIMEOUT", &mut s.http_body_timeout),
            ("PFNF_HTTP_REQUEST_TIMEOUT", &mut s.http_request_timeout),
        ] {
            match seconds(get, var)? {
                Some(d) if d.is_zero() => {
                    return Err(ConfigError::Invalid {
                        var,
                        value: "0".into(),
                        rule: "must be greater than 0",
                    });
                }
                Some(d) => *field = d,
                None => {}
            }
        }
        if let Some(n) = number(get, "PFNF_HTTP_MAX_CONNECTIONS")? {
            s.http_max_connections = n.clamp(1, 1_000_000) as usize;
        }
        if let Some(n) = number(get, "PFNF_RETRY_BASE_MS")? {
            s.retry_base = Duration::from_millis(n);
        }
        for (var, field) in [
            ("PFNF_RESUME_AFTER", &mut s.resume_after),
            ("PFNF_GIVE_UP_AFTER", &mut s.give_up_after),
            ("PFNF_CHECK_AFTER", &mut s.check_after),
            ("PFNF_CANCEL_GRACE", &mut s.cancel_grace),
            ("PFNF_SWEEP_INTERVAL", &mut s.sweep_interval),
        ] {
            if let Some(d) = seconds(get, var)? {
                *field = d;
            }
        }
        if let Some(v) = get("PFNF_RECONCILE_SHARE").filter(|v| !v.trim().is_empty()) {
            s.reconcile_share = match v.trim().parse::<f64>() {
                Ok(x) if (0.0..=1.0).contains(&x) => x,
                _ => {
                    return Err(ConfigError::Invalid {
                        var: "PFNF_RECONCILE_SHARE",
                        value: v,
                        rule: "must be a number from 0 to 1",
                    });
                }
            };
        }
        if let Some(n) = number(get, "PFNF_RECONCILE_MAX")? {
            s.reconcile_max = n.min(u64::from(u32::MAX)) as u32;
        }
        if let Some(p) = get("PFNF_PROJECTS") {
            s.projects = p
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(String::from)
                .collect();
        }
        if let Some(url) = get("PFNF_JOB_URL").filter(|v| !v.trim().is_empty()) {
            if !url.starts_with("https://") && !url.starts_with("http://") {
                return Err(ConfigError::Invalid {
                    var: "PFNF_JOB_URL",
                    value: url,
                    rule: "must start with http:// or https://",
                });
            }
            s.job_url = url;
        }
        if let Some(n) = number(get, "PFNF_FORWARD_LOG_LINES")? {
            s.forward_log_lines = n.min(1000) as u32;
        }
        if let Some(ns) = get("PFNF_METRICS_NAMESPACE").filter(|v| !v.trim().is_empty()) {
            // CloudWatch's own rules for a namespace; `AWS/` is reserved for AWS services.
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
            s.metrics_namespace = Some(ns);
        }
        Ok(s)
    }

    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(&env_var)
    }
}

/// Parses a settings file of `KEY=VALUE` lines (the variables this page documents): blank lines
/// and `#` comments are skipped, an `export ` prefix and matching quotes around the value are
/// dropped. The local worker reads it with `--env-file`; the environment wins over it.
pub fn parse_env_file(text: &str) -> Result<std::collections::BTreeMap<String, String>, String> {
    let mut values = std::collections::BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!("line {}: expected KEY=VALUE", n + 1));
        };
        let key = key.trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("line {}: {key:?} is not a variable name", n + 1));
        }
        let value = value.trim();
        let unquoted = [('"', '"'), ('\'', '\'')]
            .iter()
            .find_map(|(a, b)| value.strip_prefix(*a)?.strip_suffix(*b))
            .unwrap_or(value);
        values.insert(key.to_string(), unquoted.to_string());
    }
    Ok(values)
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn number(
    get: &dyn Fn(&str) -> Option<String>,
    var: &'static str,
) -> Result<Option<u64>, ConfigError> {
    match get(var).filter(|v| !v.trim().is_empty()) {
        None => Ok(None),
        Some(v) => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| ConfigError::Invalid {
                var,
                value: v,
                rule: "must be a whole number",
            }),
    }
}

fn seconds(
    get: &dyn Fn(&str) -> Option<String>,
    var: &'static str,
) -> Result<Option<Duration>, ConfigError> {
    match get(var).filter(|v| !v.trim().is_empty()) {
        None => Ok(None),
        Some(v) => match v.trim().parse::<f64>() {
            Ok(x) if x.is_finite() && x >= 0.0 => Ok(Some(Duration::from_secs_f64(x))),
            _ => Err(ConfigError::Invalid {
                var,
                value: v,
                rule: "must be a non-negative number of seconds",
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
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
        assert_eq!(s.prefect_api_url, "http://127.0.0.1:4200/api");
        assert_eq!(s.work_queues, vec!["a", "b"]);
        assert_eq!(s.poll_window, Duration::ZERO);
        assert_eq!(s.poll_interval, Duration::from_secs(10));
        assert_eq!(s.northflank_api_url, "https://api.northflank.com");
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
    }

    #[test]
    fn env_files_are_key_value_lines() {
        let values = parse_env_file(
            "# settings\nPFNF_WORK_POOL=nf\nexport PREFECT_API_URL=\"http://x/api\"\n\nA='b=c'\n",
        )
        .unwrap();
        assert_eq!(values.get("PFNF_WORK_POOL").map(String::as_str), Some("nf"));
        assert_eq!(
            values.get("PREFECT_API_URL").map(String::as_str),
            Some("http://x/api")
        );
        assert_eq!(values.get("A").map(String::as_str), Some("b=c"));
        assert_eq!(
            parse_env_file("A=1\nnonsense").unwrap_err(),
            "line 2: expected KEY=VALUE"
        );
        assert_eq!(
            parse_env_file("A B=1").unwrap_err(),
            "line 1: \"A B\" is not a variable name"
        );
    }

    #[test]
    fn auth_string_wins_over_api_key_and_secrets_stay_hidden() {
        let auth = PrefectAuth::from_parts(Some("pnu_key".into()), Some("admin:pw".into()));
        assert_eq!(
            auth.container_env(),
            Some(("PREFECT_API_AUTH_STRING", "admin:pw"))
        );
        assert!(!format!("{auth:?}").contains("admin:pw"));
        let creds = Credentials::from_lookup(&lookup(&[
            ("NORTHFLANK_API_TOKEN", "nf-secret"),
            ("PFNF_WEBHOOK_TOKEN", "hook-secret"),
        ]))
        .unwrap();
        let shown = format!("{creds:?}");
        assert!(!shown.contains("nf-secret") && !shown.contains("hook-secret"));
        let err = Credentials::from_lookup(&lookup(&[("NORTHFLANK_API_TOKEN", "x")])).unwrap_err();
        assert_eq!(
            err,
            ConfigError::Missing {
                var: "PFNF_WEBHOOK_TOKEN"
            }
        );
    }
}

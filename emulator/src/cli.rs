//! Command-line interface of the `nf-emulator` binary; every flag maps onto a [`Config`] field.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::config::{
    AbortConcluded, Config, Faults, LogFormat, Mode, RunKey, TokenHeader, WebhookConfig,
};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ModeArg {
    Scripted,
    Process,
}

impl From<ModeArg> for Mode {
    fn from(arg: ModeArg) -> Self {
        match arg {
            ModeArg::Scripted => Mode::Scripted,
            ModeArg::Process => Mode::Process,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RunKeyArg {
    #[value(name = "jobRun")]
    JobRun,
    #[value(name = "run")]
    Run,
    #[value(name = "job_run")]
    JobRunSnake,
}

impl From<RunKeyArg> for RunKey {
    fn from(arg: RunKeyArg) -> Self {
        match arg {
            RunKeyArg::JobRun => RunKey::JobRun,
            RunKeyArg::Run => RunKey::Run,
            RunKeyArg::JobRunSnake => RunKey::JobRunSnake,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum AbortConcludedArg {
    Conflict,
    Noop,
}

impl From<AbortConcludedArg> for AbortConcluded {
    fn from(arg: AbortConcludedArg) -> Self {
        match arg {
            AbortConcludedArg::Conflict => AbortConcluded::Conflict,
            AbortConcludedArg::Noop => AbortConcluded::Noop,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormatArg {
    Cri,
    Plain,
}

impl From<LogFormatArg> for LogFormat {
    fn from(arg: LogFormatArg) -> Self {
        match arg {
            LogFormatArg::Cri => LogFormat::Cri,
            LogFormatArg::Plain => LogFormat::Plain,
        }
    }
}

/// A local emulator of the Northflank jobs API and job-run webhooks.
#[derive(Debug, Parser)]
#[command(name = "nf-emulator", version)]
pub struct Args {
    /// Listen address (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub bind: SocketAddr,
    /// Allow binding a non-loopback address (the emulator has no real security).
    #[arg(long)]
    pub allow_non_loopback: bool,
    /// Accepted API token (repeatable).
    #[arg(
        long = "token",
        env = "NF_EMULATOR_TOKENS",
        value_delimiter = ',',
        default_value = "nf-test-token"
    )]
    pub tokens: Vec<String>,
    /// Team used in appId.
    #[arg(long, default_value = "emulator-team")]
    pub team: String,
    /// Restrict the existing projects (repeatable); default: any well-formed ID.
    #[arg(long = "project")]
    pub projects: Vec<String>,
    #[arg(long, value_enum, default_value = "scripted")]
    pub mode: ModeArg,
    /// Requests per token per window.
    #[arg(long, default_value_t = 1000)]
    pub rate_limit: u32,
    #[arg(long, default_value_t = 3600)]
    pub rate_limit_window_secs: u64,
    #[arg(long, default_value_t = 52)]
    pub name_max_len: usize,
    #[arg(long, default_value_t = 0)]
    pub default_backoff_limit: i64,
    /// Status of POST /jobs when the derived ID exists.
    #[arg(long, default_value_t = 409)]
    pub duplicate_job_status: u16,
    /// Restrict job tags to these (repeatable); default: any well-formed tag.
    #[arg(long = "known-tag")]
    pub known_tags: Vec<String>,
    /// List runs oldest first instead of newest first.
    #[arg(long)]
    pub runs_oldest_first: bool,
    /// Omit Retry-After on over-budget 429 answers.
    #[arg(long)]
    pub no_retry_after: bool,
    #[arg(long, value_enum, default_value = "conflict")]
    pub abort_concluded: AbortConcludedArg,
    /// Emit "concludedAt": null on running runs instead of omitting it.
    #[arg(long)]
    pub concluded_at_null: bool,
    /// Do not fire job-run:terminate for active runs of a deleted job.
    #[arg(long)]
    pub no_delete_job_terminate: bool,
    /// Key of the run object in webhook payloads.
    #[arg(long, value_enum, default_value = "jobRun")]
    pub run_key: RunKeyArg,
    /// Send an empty token header when an integration has no secret (default: omit it).
    #[arg(long)]
    pub empty_token_header: bool,
    #[arg(long, default_value_t = 10_000)]
    pub webhook_timeout_ms: u64,
    #[arg(long, default_value_t = 3)]
    pub webhook_retries: u32,
    #[arg(long, default_value_t = 500)]
    pub webhook_backoff_ms: u64,
    #[arg(long, default_value_t = 20)]
    pub disable_after_failures: u32,
    /// Scripted mode: act like Prefect's engine against the run's PREFECT_API_URL.
    #[arg(long)]
    pub report_to_prefect: bool,
    #[arg(long, default_value_t = 2000)]
    pub engine_poll_ms: u64,
    /// Script for runs without NF_EMULATOR_SCRIPT.
    #[arg(long, default_value = "succeed:1")]
    pub default_script: String,
    /// Extra environment for process-mode children (K=V, repeatable).
    #[arg(long = "process-env", value_parser = parse_key_value)]
    pub process_env: Vec<(String, String)>,
    /// Working directory of process-mode children (default: the system temp dir).
    #[arg(long)]
    pub workdir: Option<PathBuf>,
    /// SIGTERM → SIGKILL grace, in seconds.
    #[arg(long, default_value_t = 5.0)]
    pub grace_secs: f64,
    #[arg(long, value_enum, default_value = "cri")]
    pub log_format: LogFormatArg,
    /// Accept fields, nulls and query parameters the official types do not have.
    #[arg(long)]
    pub lenient: bool,
    /// Append every API exchange to this file as JSON lines (for scripts/nf-schema/check.py).
    #[arg(long, env = "NF_EMULATOR_RECORD")]
    pub record: Option<PathBuf>,
    /// Seed of the fault RNGs.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = 0.0)]
    pub webhook_drop_pct: f64,
    #[arg(long, default_value_t = 0.0)]
    pub webhook_duplicate_pct: f64,
    #[arg(long, default_value_t = 0.0)]
    pub webhook_reorder_pct: f64,
    #[arg(long, default_value_t = 1000)]
    pub webhook_reorder_hold_ms: u64,
    #[arg(long, default_value_t = 0)]
    pub webhook_delay_ms: u64,
    #[arg(long, default_value_t = 0.0)]
    pub api_5xx_pct: f64,
    #[arg(long, default_value_t = 0.0)]
    pub api_429_pct: f64,
    #[arg(long, default_value_t = 0.0)]
    pub api_5xx_after_pct: f64,
    #[arg(long, default_value_t = 1)]
    pub retry_after_secs: u64,
    /// Run starts with this bearer token are never answered (a worker dying mid-submission).
    #[arg(long)]
    pub stall_run_starts_token: Option<String>,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

/// Why the arguments cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("refusing to bind non-loopback address {0}; pass --allow-non-loopback to do it anyway")]
    NonLoopback(SocketAddr),
    #[error("--{0} must be between 0 and 100")]
    Percentage(&'static str),
    #[error("--grace-secs must be a non-negative number")]
    Grace,
    #[error("--duplicate-job-status must be an HTTP error status (400-599)")]
    Status,
}

impl Args {
    pub fn into_config(self) -> Result<Config, CliError> {
        self.check()?;
        let webhooks = self.webhooks();
        let faults = self.faults();
        Ok(Config {
            webhooks,
            faults,
            ..self.into_base_config()
        })
    }

    fn check(&self) -> Result<(), CliError> {
        if !self.bind.ip().is_loopback() && !self.allow_non_loopback {
            return Err(CliError::NonLoopback(self.bind));
        }
        let percentages = [
            ("webhook-drop-pct", self.webhook_drop_pct),
            ("webhook-duplicate-pct", self.webhook_duplicate_pct),
            ("webhook-reorder-pct", self.webhook_reorder_pct),
            ("api-5xx-pct", self.api_5xx_pct),
            ("api-429-pct", self.api_429_pct),
            ("api-5xx-after-pct", self.api_5xx_after_pct),
        ];
        if let Some((name, _)) = percentages.iter().find(|(_, v)| !(0.0..=100.0).contains(v)) {
            return Err(CliError::Percentage(name));
        }
        if !(self.grace_secs.is_finite() && self.grace_secs >= 0.0) {
            return Err(CliError::Grace);
        }
        if !(400..=599).contains(&self.duplicate_job_status) {
            return Err(CliError::Status);
        }
        Ok(())
    }

    fn webhooks(&self) -> WebhookConfig {
        WebhookConfig {
            delivery_timeout: Duration::from_millis(self.webhook_timeout_ms),
            retries: self.webhook_retries,
            backoff: Duration::from_millis(self.webhook_backoff_ms),
            disable_after_failures: self.disable_after_failures,
            token_header_without_secret: if self.empty_token_header {
                TokenHeader::Empty
            } else {
                TokenHeader::Absent
            },
            run_key: self.run_key.into(),
        }
    }

    fn faults(&self) -> Faults {
        Faults {
            seed: self.seed,
            webhook_drop_pct: self.webhook_drop_pct,
            webhook_duplicate_pct: self.webhook_duplicate_pct,
            webhook_reorder_pct: self.webhook_reorder_pct,
            webhook_reorder_hold: Duration::from_millis(self.webhook_reorder_hold_ms),
            webhook_delay_ms: self.webhook_delay_ms,
            api_5xx_pct: self.api_5xx_pct,
            api_429_pct: self.api_429_pct,
            api_5xx_after_pct: self.api_5xx_after_pct,
            retry_after_secs: self.retry_after_secs,
            stall_run_starts_token: self.stall_run_starts_token.clone(),
        }
    }

    /// Everything but the webhook and fault settings.
    fn into_base_config(self) -> Config {
        Config {
            bind: self.bind,
            api_tokens: self.tokens.into_iter().filter(|t| !t.is_empty()).collect(),
            team: self.team,
            projects: (!self.projects.is_empty()).then_some(self.projects),
            rate_limit_per_hour: self.rate_limit,
            rate_limit_window_secs: self.rate_limit_window_secs,
            name_max_len: self.name_max_len,
            default_backoff_limit: self.default_backoff_limit,
            duplicate_job_status: self.duplicate_job_status,
            known_tags: (!self.known_tags.is_empty()).then_some(self.known_tags),
            runs_newest_first: !self.runs_oldest_first,
            retry_after_on_limit: !self.no_retry_after,
            abort_concluded: self.abort_concluded.into(),
            concluded_at_null: self.concluded_at_null,
            delete_job_fires_terminate: !self.no_delete_job_terminate,
            mode: self.mode.into(),
            default_script: self.default_script,
            report_to_prefect: self.report_to_prefect,
            engine_poll: Duration::from_millis(self.engine_poll_ms),
            process_env: self.process_env.into_iter().collect(),
            process_workdir: self.workdir,
            grace: Duration::from_secs_f64(self.grace_secs),
            log_format: self.log_format.into(),
            lenient: self.lenient,
            record: self.record,
            ..Config::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, CliError> {
        Args::try_parse_from(std::iter::once("nf-emulator").chain(args.iter().copied()))
            .expect("arguments parse")
            .into_config()
    }

    #[test]
    fn defaults_match_config_defaults() {
        let c = parse(&["--token", "a", "--token", "b"]).unwrap();
        assert_eq!(c.api_tokens, ["a", "b"]);
        assert_eq!(c.bind.port(), 8081);
        assert_eq!(c.rate_limit_per_hour, 1000);
        assert_eq!(c.webhooks.run_key, RunKey::JobRun);
        assert_eq!(c.mode, Mode::Scripted);
    }

    #[test]
    fn refuses_non_loopback_unless_allowed() {
        assert!(matches!(
            parse(&["--bind", "0.0.0.0:80"]),
            Err(CliError::NonLoopback(_))
        ));
        assert!(parse(&["--bind", "0.0.0.0:80", "--allow-non-loopback"]).is_ok());
    }

    #[test]
    fn maps_flags() {
        let c = parse(&[
            "--mode",
            "process",
            "--run-key",
            "job_run",
            "--process-env",
            "A=1=2",
            "--webhook-drop-pct",
            "50",
            "--project",
            "p1",
        ])
        .unwrap();
        assert_eq!(c.mode, Mode::Process);
        assert_eq!(c.webhooks.run_key, RunKey::JobRunSnake);
        assert_eq!(c.process_env.get("A").map(String::as_str), Some("1=2"));
        assert_eq!(c.faults.webhook_drop_pct, 50.0);
        assert_eq!(c.projects, Some(vec!["p1".to_owned()]));
        assert!(parse(&["--api-5xx-pct", "101"]).is_err());
        assert!(!c.lenient && parse(&["--lenient"]).unwrap().lenient);
    }
}

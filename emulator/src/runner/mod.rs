//! Running a job run: the executor task (scripted or process), its deadline timer, and the
//! captured log lines.

mod engine;
pub(crate) mod lifecycle;
mod process;
mod scripted;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::sync::watch;

use crate::config::{LogFormat, Mode};
use crate::model::{LogLine, Outcome, RunEnd};
use crate::state::{App, now_ms};

/// What an executor needs; built by `lifecycle::start_run`.
pub(crate) struct RunCtx {
    pub run_id: String,
    pub env: BTreeMap<String, String>,
    pub command: Option<String>,
    pub deadline: Option<Duration>,
    pub grace: Duration,
    pub stop: Stop,
}

/// Resolves when the run was concluded from outside (abort, deadline, job delete) or the
/// emulator shuts down.
#[derive(Clone)]
pub(crate) struct Stop {
    run: watch::Receiver<bool>,
    shutdown: watch::Receiver<bool>,
}

impl Stop {
    pub fn new(run: watch::Receiver<bool>, shutdown: watch::Receiver<bool>) -> Self {
        Self { run, shutdown }
    }

    pub async fn wait(&mut self) {
        // A closed channel means the run record or the emulator is gone: stop as well.
        tokio::select! {
            _ = self.run.wait_for(|stop| *stop) => {}
            _ = self.shutdown.wait_for(|stop| *stop) => {}
        }
    }
}

#[derive(Clone, Copy)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

impl fmt::Display for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        })
    }
}

/// Appends one captured line to the run's container log.
pub(crate) fn append_log(app: &App, run_id: &str, stream: Stream, line: &str) {
    let cap = app.config.log_lines_per_run.max(1);
    let log = match app.config.log_format {
        LogFormat::Cri => format!("{stream} F {line}"),
        LogFormat::Plain => line.to_owned(),
    };
    let mut state = app.state();
    let Some(entry) = state.runs.get_mut(run_id) else {
        return;
    };
    let logs = &mut entry.record.logs;
    if logs.len() >= cap {
        // Drop a tenth at a time so a chatty process does not shift the vector on every line.
        let excess = (cap / 10).max(1).min(logs.len());
        logs.drain(..excess);
    }
    logs.push(LogLine {
        container_id: format!("{}-main", entry.record.run.run_name),
        log,
        ts: now_ms(),
    });
}

/// Emulator messages in the run log carry this prefix so they are never mistaken for output.
pub(crate) fn note(app: &App, run_id: &str, stream: Stream, message: &str) {
    append_log(app, run_id, stream, &format!("[nf-emulator] {message}"));
}

/// The command a container would run: entrypoint then command (§2.2 `deployment.docker`).
pub(crate) fn docker_command(docker: Option<&Map<String, Value>>) -> Option<String> {
    let docker = docker?;
    let entrypoint = docker.get("customEntrypoint").and_then(Value::as_str);
    let command = docker.get("customCommand").and_then(Value::as_str);
    match docker.get("configType").and_then(Value::as_str)? {
        "customCommand" => command.map(str::to_owned),
        "customEntrypoint" => entrypoint.map(str::to_owned),
        "customEntrypointCustomCommand" => match (entrypoint, command) {
            (Some(e), Some(c)) => Some(format!("{e} {c}")),
            _ => None,
        },
        _ => None,
    }
}

/// Last-resort kill of a process-mode group (emulator dropped without shutdown).
pub(crate) fn kill_group(pgid: u32) {
    process::signal_group(pgid, process::SIGKILL);
}

pub(crate) fn spawn(app: &App, mut ctx: RunCtx) {
    if let Some(deadline) = ctx.deadline {
        let (timer_app, run_id, mut stop) = (app.clone(), ctx.run_id.clone(), ctx.stop.clone());
        app.spawn_background(async move {
            tokio::select! {
                _ = tokio::time::sleep(deadline) => {
                    let message = format!("activeDeadlineSeconds ({}) exceeded: run terminated", deadline.as_secs());
                    note(&timer_app, &run_id, Stream::Stderr, &message);
                    let _ = lifecycle::conclude(&timer_app, &run_id, RunEnd::Deadline);
                }
                _ = stop.wait() => {}
            }
        });
    }
    let task_app = app.clone();
    app.spawn_runner(async move {
        let outcome = match task_app.config.mode {
            Mode::Scripted => scripted::execute(&task_app, &mut ctx).await,
            Mode::Process => process::execute(&task_app, &mut ctx).await,
        };
        let end = match outcome {
            Some(Outcome::Success) => RunEnd::Success,
            Some(Outcome::Failure) => RunEnd::Failure,
            None => return,
        };
        // Losing the race to an abort or deadline is expected: the first conclusion wins.
        let _ = lifecycle::conclude(&task_app, &ctx.run_id, end);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cmd(v: Value) -> Option<String> {
        docker_command(v.as_object())
    }

    #[test]
    fn docker_commands() {
        assert_eq!(
            cmd(json!({"configType": "customCommand", "customCommand": "echo hi"})).as_deref(),
            Some("echo hi")
        );
        assert_eq!(
            cmd(json!({"configType": "customEntrypointCustomCommand", "customEntrypoint": "sh -c", "customCommand": "'echo hi'"}))
                .as_deref(),
            Some("sh -c 'echo hi'")
        );
        assert_eq!(cmd(json!({"configType": "default"})), None);
        assert_eq!(docker_command(None), None);
    }
}

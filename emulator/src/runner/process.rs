//! Process mode: the run's command really runs as `sh -c` in its own process group, like a
//! container whose processes all die with it.

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use super::{RunCtx, Stream, append_log, note};
use crate::model::Outcome;
use crate::state::{App, lock};

/// How long output pipes may stay open after the main process exited (background children
/// holding them are killed anyway).
const DRAIN: Duration = Duration::from_secs(1);
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

pub(crate) async fn execute(app: &App, ctx: &mut RunCtx) -> Option<Outcome> {
    let Some(command) = ctx.command.clone() else {
        note(
            app,
            &ctx.run_id,
            Stream::Stderr,
            "process mode needs a command: set deployment.docker.configType to customCommand \
             (or customEntrypoint / customEntrypointCustomCommand) on the job or the run",
        );
        return Some(Outcome::Failure);
    };
    let Some(mut child) = spawn_child(app, ctx, &command) else {
        return Some(Outcome::Failure);
    };
    let Some(pgid) = child.id() else {
        return Some(Outcome::Failure);
    };
    lock(&app.process_groups).insert(pgid);
    let readers = [
        child
            .stdout
            .take()
            .map(|out| spawn_reader(app, &ctx.run_id, Stream::Stdout, out)),
        child
            .stderr
            .take()
            .map(|err| spawn_reader(app, &ctx.run_id, Stream::Stderr, err)),
    ];

    let exited = tokio::select! {
        status = child.wait() => Some(status),
        _ = ctx.stop.wait() => None,
    };
    let outcome = match exited {
        Some(status) => Some(after_exit(app, &ctx.run_id, pgid, status, readers).await),
        None => {
            let grace = if app.shutting_down() {
                ctx.grace.min(SHUTDOWN_GRACE)
            } else {
                ctx.grace
            };
            terminate(pgid, grace, &mut child).await;
            None
        }
    };
    lock(&app.process_groups).remove(&pgid);
    outcome
}

/// `sh -c command` in its own process group, with only the base, configured and run
/// environment; a failure to start is noted in the run log.
fn spawn_child(app: &App, ctx: &RunCtx, command: &str) -> Option<Child> {
    let workdir = app
        .config
        .process_workdir
        .clone()
        .unwrap_or_else(std::env::temp_dir);
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(command)
        .env_clear()
        .envs(base_env(&workdir))
        .envs(&app.config.process_env)
        .envs(&ctx.env)
        .current_dir(&workdir)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    match cmd.spawn() {
        Ok(child) => Some(child),
        Err(e) => {
            note(
                app,
                &ctx.run_id,
                Stream::Stderr,
                &format!("cannot start sh -c: {e}"),
            );
            None
        }
    }
}

async fn after_exit(
    app: &App,
    run_id: &str,
    pgid: u32,
    status: std::io::Result<ExitStatus>,
    readers: [Option<JoinHandle<()>>; 2],
) -> Outcome {
    // The container is gone once its main process is; so are its other processes.
    signal_group(pgid, SIGKILL);
    for reader in readers.into_iter().flatten() {
        let _ = tokio::time::timeout(DRAIN, reader).await;
    }
    let outcome = match &status {
        Ok(s) if s.success() => Outcome::Success,
        _ => Outcome::Failure,
    };
    let described = match status {
        Ok(s) => s.to_string(),
        Err(e) => format!("wait failed: {e}"),
    };
    note(app, run_id, Stream::Stdout, &format!("process {described}"));
    outcome
}

fn base_env(workdir: &std::path::Path) -> Vec<(String, String)> {
    let inherit =
        |key: &str, default: &str| std::env::var(key).unwrap_or_else(|_| default.to_owned());
    vec![
        (
            "PATH".into(),
            inherit("PATH", "/usr/local/bin:/usr/bin:/bin"),
        ),
        ("HOME".into(), inherit("HOME", &workdir.to_string_lossy())),
        ("LANG".into(), inherit("LANG", "C.UTF-8")),
    ]
}

fn spawn_reader(
    app: &App,
    run_id: &str,
    stream: Stream,
    pipe: impl AsyncRead + Unpin + Send + 'static,
) -> JoinHandle<()> {
    let (app, run_id) = (app.clone(), run_id.to_owned());
    tokio::spawn(async move {
        let mut reader = BufReader::new(pipe);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf);
                    append_log(&app, &run_id, stream, line.trim_end_matches(['\n', '\r']));
                }
            }
        }
    })
}

/// SIGTERM to the group, SIGKILL after the grace period, as a container runtime does.
async fn terminate(pgid: u32, grace: Duration, child: &mut Child) {
    signal_group(pgid, SIGTERM);
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        tracing::debug!(pgid, "grace period over: SIGKILL");
    }
    signal_group(pgid, SIGKILL);
    let _ = child.wait().await;
}

pub(crate) const SIGTERM: i32 = 15;
pub(crate) const SIGKILL: i32 = 9;

// Declared by hand to avoid pulling in the libc crate for one call; libc itself is always
// linked on unix.
unsafe extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

/// Signals every process of the group. A group that is already gone (ESRCH) is fine.
pub(crate) fn signal_group(pgid: u32, signal: i32) {
    let Ok(pgid) = i32::try_from(pgid) else {
        return;
    };
    if pgid <= 1 {
        return;
    }
    // SAFETY: kill(2) has no memory-safety preconditions; a negative pid addresses a group.
    unsafe {
        kill(-pgid, signal);
    }
}

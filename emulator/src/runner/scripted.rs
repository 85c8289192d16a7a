//! Scripted mode: `NF_EMULATOR_SCRIPT` (or `Config::default_script`) decides what the
//! "container" does, with optional emulation of Prefect's in-container engine.

use std::time::Duration;

use serde_json::Value;

use super::engine::{Engine, StateKind};
use super::{RunCtx, Stream, append_log, note};
use crate::model::Outcome;
use crate::state::App;

pub(crate) const SCRIPT_VAR: &str = "NF_EMULATOR_SCRIPT";
/// `off` disables the engine emulation for one run.
pub(crate) const ENGINE_VAR: &str = "NF_EMULATOR_ENGINE";
const DEFAULT_SECS: f64 = 1.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScriptKind {
    /// The flow completes; exit 0.
    Succeed,
    /// The flow fails; the engine reports FAILED, exit 1.
    Fail,
    /// The container dies without the engine reporting a final state.
    Crash,
    /// Runs until abort, deadline or job delete.
    Hang,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Script {
    pub kind: ScriptKind,
    pub duration: Option<Duration>,
}

/// `succeed[:secs]`, `fail[:secs]`, `crash[:secs]`, `hang`; seconds may be fractional.
pub(crate) fn parse(raw: &str) -> Result<Script, String> {
    let raw = raw.trim();
    let (word, secs) = match raw.split_once(':') {
        Some((w, s)) => (w, Some(s)),
        None => (raw, None),
    };
    let kind = match word.to_ascii_lowercase().as_str() {
        "succeed" => ScriptKind::Succeed,
        "fail" => ScriptKind::Fail,
        "crash" => ScriptKind::Crash,
        "hang" => ScriptKind::Hang,
        _ => {
            return Err(format!(
                "unknown script {raw:?}: expected succeed[:secs], fail[:secs], crash[:secs] or hang"
            ));
        }
    };
    if kind == ScriptKind::Hang {
        return match secs {
            None => Ok(Script {
                kind,
                duration: None,
            }),
            Some(_) => Err("hang takes no duration; it runs until aborted".to_owned()),
        };
    }
    let secs = match secs {
        None => DEFAULT_SECS,
        Some(s) => s
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| {
                format!("invalid duration {s:?} in {raw:?}: expected seconds such as 0.5")
            })?,
    };
    Ok(Script {
        kind,
        duration: Some(Duration::from_secs_f64(secs)),
    })
}

pub(crate) async fn execute(app: &App, ctx: &mut RunCtx) -> Option<Outcome> {
    let Some(script) = start_script(app, ctx) else {
        return Some(Outcome::Failure);
    };
    let engine = start_engine(app, ctx).await;
    append_log(app, &ctx.run_id, Stream::Stdout, "Running flow...");

    tokio::select! {
        _ = sleep(script.duration) => {}
        _ = ctx.stop.wait() => return None,
        details = cancelling(engine.as_ref()) => {
            if let Some(engine) = &engine {
                engine.propose_cancelled(details).await;
            }
            append_log(app, &ctx.run_id, Stream::Stdout, "Flow run was cancelled successfully.");
            return Some(Outcome::Failure);
        }
    }
    finish(app, &ctx.run_id, script.kind, engine.as_ref()).await
}

/// The run's script, announced in its log; an invalid one is only reported there (`None`).
fn start_script(app: &App, ctx: &RunCtx) -> Option<Script> {
    let raw = ctx
        .env
        .get(SCRIPT_VAR)
        .cloned()
        .unwrap_or_else(|| app.config.default_script.clone());
    let script = match parse(&raw) {
        Ok(s) => s,
        Err(e) => {
            note(
                app,
                &ctx.run_id,
                Stream::Stderr,
                &format!("invalid {SCRIPT_VAR}: {e}"),
            );
            return None;
        }
    };
    note(
        app,
        &ctx.run_id,
        Stream::Stdout,
        &format!("scripted container started: {raw}"),
    );
    Some(script)
}

async fn start_engine(app: &App, ctx: &RunCtx) -> Option<Engine> {
    // `NF_EMULATOR_ENGINE=off` models a container that never gets to start the flow.
    let engine_off = ctx.env.get(ENGINE_VAR).is_some_and(|v| v == "off");
    let engine = if app.config.report_to_prefect && !engine_off {
        Engine::from_env(app, &ctx.run_id, &ctx.env)
    } else {
        None
    };
    if let Some(engine) = &engine {
        engine.propose(StateKind::Running).await;
    }
    engine
}

/// A script without a duration runs until stopped.
async fn sleep(duration: Option<Duration>) {
    match duration {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// Without the engine emulation nobody asks for a cancellation.
async fn cancelling(engine: Option<&Engine>) -> Value {
    match engine {
        Some(engine) => engine.wait_for_cancelling().await,
        None => std::future::pending().await,
    }
}

/// What the container does once the script's duration is over.
async fn finish(
    app: &App,
    run_id: &str,
    kind: ScriptKind,
    engine: Option<&Engine>,
) -> Option<Outcome> {
    match kind {
        ScriptKind::Succeed => {
            if let Some(engine) = engine {
                engine.propose(StateKind::Completed).await;
            }
            append_log(
                app,
                run_id,
                Stream::Stdout,
                "Flow run finished successfully.",
            );
            Some(Outcome::Success)
        }
        ScriptKind::Fail => {
            if let Some(engine) = engine {
                engine.propose(StateKind::Failed).await;
            }
            append_log(
                app,
                run_id,
                Stream::Stderr,
                "Flow run encountered an exception.",
            );
            Some(Outcome::Failure)
        }
        ScriptKind::Crash => {
            note(
                app,
                run_id,
                Stream::Stderr,
                "scripted crash: container exited with code 137",
            );
            Some(Outcome::Failure)
        }
        ScriptKind::Hang => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_scripts() {
        let s = parse("succeed:0.25").unwrap();
        assert_eq!(s.kind, ScriptKind::Succeed);
        assert_eq!(s.duration, Some(Duration::from_millis(250)));
        assert_eq!(
            parse("fail").unwrap().duration,
            Some(Duration::from_secs(1))
        );
        assert_eq!(parse("crash:2").unwrap().kind, ScriptKind::Crash);
        assert_eq!(parse("hang").unwrap().duration, None);
        for bad in ["explode", "succeed:x", "succeed:-1", "hang:3", "fail:NaN"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}

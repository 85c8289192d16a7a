//! Process mode: commands really run as `sh -c` children.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::common::{Api, PROJECT, emulator, eventually, fast_config, job};
use nf_emulator::{Config, LogFormat, Mode, RunEnd};
use serde_json::{Value, json};

fn workdir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nf-emulator-test-{test}-{}", std::process::id()));
    // Pids are reused (pid_max is often 32768): a directory left by an earlier run under the
    // same pid would hand its stale pid files to this test.
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn process_config(test: &str) -> Config {
    Config {
        mode: Mode::Process,
        process_workdir: Some(workdir(test)),
        process_env: BTreeMap::from([("FROM_CONFIG".to_owned(), "cfg".to_owned())]),
        ..fast_config()
    }
}

fn command_job(name: &str, command: &str) -> Value {
    let mut body = job(name);
    body["deployment"]["docker"] = json!({"configType": "customCommand", "customCommand": command});
    body
}

fn alive(pid: u32) -> bool {
    // A reaped process has no /proc entry; a zombie would still show up as state Z.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

async fn read_pid(dir: &std::path::Path) -> u32 {
    let file = dir.join("pid");
    eventually(
        "the child to write its pid",
        Duration::from_secs(5),
        || async { std::fs::read_to_string(&file).is_ok_and(|s| s.ends_with('\n')) },
    )
    .await;
    std::fs::read_to_string(&file)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn exit_code_and_output_are_captured() {
    let (_em, api) = emulator(process_config("exit")).await;
    let job_id = api
        .create_job(command_job("exit-three", "echo hi; echo oops >&2; exit 3"))
        .await;
    let run = api.start_run(&job_id, json!({})).await;
    let done = api.wait_concluded(&job_id, &run).await;
    assert_eq!(done["status"], "FAILED");
    let logs = api.logs(&job_id, &run).await;
    assert!(logs.contains(&"stdout F hi".to_owned()), "{logs:?}");
    assert!(logs.contains(&"stderr F oops".to_owned()), "{logs:?}");
    assert!(
        logs.iter().any(|l| l.contains("exit status: 3")),
        "{logs:?}"
    );

    let ok = api.create_job(command_job("exit-zero", "true")).await;
    let run = api.start_run(&ok, json!({})).await;
    assert_eq!(api.wait_concluded(&ok, &run).await["status"], "SUCCESS");
}

#[tokio::test]
async fn environment_is_job_env_merged_with_run_overrides() {
    let config = Config {
        log_format: LogFormat::Plain,
        ..process_config("env")
    };
    let dir = config.process_workdir.clone().unwrap();
    let (_em, api) = emulator(config).await;
    let mut body = command_job(
        "env-echo",
        "echo \"$FOO|$BAR|$FROM_CONFIG|$(pwd)\"; test -n \"$PATH\"",
    );
    body["runtimeEnvironment"] = json!({"FOO": "job-foo", "BAR": "job-bar"});
    let job_id = api.create_job(body).await;
    let run = api
        .start_run(&job_id, json!({"runtimeEnvironment": {"FOO": "run-foo"}}))
        .await;
    assert_eq!(api.wait_concluded(&job_id, &run).await["status"], "SUCCESS");
    let logs = api.logs(&job_id, &run).await;
    let expected = format!(
        "run-foo|job-bar|cfg|{}",
        dir.canonicalize().unwrap().display()
    );
    assert_eq!(logs[0], expected, "{logs:?}");
    // The emulator's own environment does not leak in.
    let leak = api
        .create_job(command_job(
            "env-leak",
            "test -z \"$CARGO_PKG_NAME$RUST_LOG_UNLIKELY\"",
        ))
        .await;
    let run = api.start_run(&leak, json!({})).await;
    assert_eq!(api.wait_concluded(&leak, &run).await["status"], "SUCCESS");
}

#[tokio::test]
async fn run_docker_override_replaces_the_command() {
    let (_em, api) = emulator(process_config("override")).await;
    let job_id = api.create_job(command_job("override", "exit 1")).await;
    let run = api
        .start_run(&job_id, json!({"deployment": {"docker": {"configType": "customEntrypointCustomCommand", "customEntrypoint": "echo", "customCommand": "from-run"}}}))
        .await;
    assert_eq!(api.wait_concluded(&job_id, &run).await["status"], "SUCCESS");
    assert!(
        api.logs(&job_id, &run)
            .await
            .contains(&"stdout F from-run".to_owned())
    );
}

#[tokio::test]
async fn missing_command_fails_with_an_explanation() {
    let (_em, api) = emulator(process_config("nocmd")).await;
    let mut body = job("no-command");
    body["deployment"]["docker"] = json!({"configType": "default"});
    let job_id = api.create_job(body).await;
    let run = api.start_run(&job_id, json!({})).await;
    assert_eq!(api.wait_concluded(&job_id, &run).await["status"], "FAILED");
    let logs = api.logs(&job_id, &run).await;
    assert!(
        logs.iter()
            .any(|l| l.contains("process mode needs a command")),
        "{logs:?}"
    );
}

#[tokio::test]
async fn abort_sends_sigterm_to_the_process_group() {
    let config = process_config("abort");
    let dir = config.process_workdir.clone().unwrap().join("abort");
    std::fs::create_dir_all(&dir).unwrap();
    let (_em, api) = emulator(config).await;
    let script = format!(
        "cd {}; trap 'echo got-term; exit 0' TERM; sleep 30 & echo $! > pid; wait",
        dir.display()
    );
    let job_id = api.create_job(command_job("trap-term", &script)).await;
    let run = api.start_run(&job_id, json!({})).await;
    let sleeper = read_pid(&dir).await;
    assert!(alive(sleeper));
    assert_eq!(
        api.delete(&format!("/v1/projects/{PROJECT}/jobs/{job_id}/runs/{run}"))
            .await
            .status,
        200
    );
    assert_eq!(api.run(&job_id, &run).await["status"], "FAILED");
    eventually("the trap to log", Duration::from_secs(3), || async {
        api.logs(&job_id, &run)
            .await
            .contains(&"stdout F got-term".to_owned())
    })
    .await;
    eventually(
        "the background sleep to die",
        Duration::from_secs(3),
        || async { !alive(sleeper) },
    )
    .await;
}

#[tokio::test]
async fn sigkill_after_grace_and_on_job_delete() {
    let config = Config {
        grace: Duration::from_millis(200),
        ..process_config("kill")
    };
    let dir = config.process_workdir.clone().unwrap().join("kill");
    std::fs::create_dir_all(&dir).unwrap();
    let (em, api) = emulator(config).await;
    let script = format!(
        "cd {}; trap '' TERM; echo $$ > pid; while true; do sleep 0.05; done",
        dir.display()
    );
    let job_id = api.create_job(command_job("ignores-term", &script)).await;
    let _run = api.start_run(&job_id, json!({})).await;
    let shell = read_pid(&dir).await;
    assert_eq!(
        api.delete(&format!("/v1/projects/{PROJECT}/jobs/{job_id}"))
            .await
            .status,
        200
    );
    eventually(
        "SIGKILL after the grace period",
        Duration::from_secs(3),
        || async { !alive(shell) },
    )
    .await;
    assert_eq!(em.counters().runs_terminated, 1);
}

#[tokio::test]
async fn deadline_kills_the_process() {
    let (em, api) = emulator(process_config("deadline")).await;
    let mut body = command_job("slow", "sleep 30");
    body["settings"]["activeDeadlineSeconds"] = json!(1);
    let job_id = api.create_job(body).await;
    let run = api.start_run(&job_id, json!({})).await;
    assert_eq!(api.wait_concluded(&job_id, &run).await["status"], "FAILED");
    assert_eq!(em.snapshot().runs[0].end, Some(RunEnd::Deadline));
}

#[tokio::test]
async fn shutdown_kills_children() {
    let config = process_config("shutdown");
    let dir = config.process_workdir.clone().unwrap().join("shutdown");
    std::fs::create_dir_all(&dir).unwrap();
    let (em, api): (_, Api) = emulator(config).await;
    let script = format!("cd {}; echo $$ > pid; exec sleep 30", dir.display());
    let job_id = api.create_job(command_job("outlives", &script)).await;
    api.start_run(&job_id, json!({})).await;
    let pid = read_pid(&dir).await;
    em.shutdown().await;
    assert!(!alive(pid), "child killed on shutdown");
}

//! The `nf-emulator` binary: ready line, control API, clean exit on SIGTERM killing children.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{Api, eventually, job};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_nf-emulator");

#[test]
fn refuses_non_loopback_bind() {
    let out = Command::new(BIN)
        .args(["--bind", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--allow-non-loopback"));
}

#[tokio::test]
async fn serves_until_sigterm_and_kills_children() {
    let dir = std::env::temp_dir().join(format!("nf-emulator-bin-{}", std::process::id()));
    // A directory left under a reused pid would hand its stale pid file to this test.
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = Command::new(BIN)
        .args([
            "--bind",
            "127.0.0.1:0",
            "--mode",
            "process",
            "--token",
            "bin-token",
            "--process-env",
            "MARK=bin",
        ])
        .arg("--workdir")
        .arg(&dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .trim()
        .strip_prefix("nf-emulator listening on ")
        .expect("ready line")
        .to_owned();
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");

    let api = Api::new(&base, "bin-token");
    let health = reqwest::get(format!("{base}/_emulator/health"))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let mut body = job("bin-job");
    body["deployment"]["docker"] = json!({"configType": "customCommand", "customCommand": "echo $$ > pid; echo $MARK; exec sleep 30"});
    let job_id = api.create_job(body).await;
    let run = api.start_run(&job_id, json!({})).await;
    let pid_file = dir.join("pid");
    eventually("the child pid", Duration::from_secs(5), || async {
        std::fs::read_to_string(&pid_file).is_ok_and(|s| s.ends_with('\n'))
    })
    .await;
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    eventually("output", Duration::from_secs(3), || async {
        api.logs(&job_id, &run)
            .await
            .contains(&"stdout F bin".to_owned())
    })
    .await;
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(exit.success(), "{exit:?}");
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "child {pid} survived"
    );
}

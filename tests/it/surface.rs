//! The local worker's HTTP surface under hostile traffic, against the real `prefect-nf local`
//! process started as most machines start a process: with a soft limit of 1,024 open files.

use std::net::SocketAddr;
use std::time::Duration;

use crate::helpers::{DISPATCH_TOKEN, NF_TOKEN, Options, TestApp, WEBHOOK_TOKEN};
use prefect_nf::routes::{NOTIFICATION_TOKEN_HEADER, WEBHOOK_PATH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// `prefect-nf local` on a port of its own, killed when dropped.
struct LocalWorker {
    child: Child,
    addr: SocketAddr,
}

impl LocalWorker {
    async fn start(app: &TestApp, env: &[(&str, &str)]) -> LocalWorker {
        let addr = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap()
        };
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(r#"ulimit -Sn 1024 && exec "$0" local --bind "$1""#)
            .arg(env!("CARGO_BIN_EXE_prefect-nf"))
            .arg(addr.to_string())
            .env("PREFECT_API_URL", &app.api)
            .env("PFNF_WORK_POOL", &app.pool)
            .env("NORTHFLANK_API_URL", app.emulator.base_url())
            .env("NORTHFLANK_API_TOKEN", NF_TOKEN)
            .env("PFNF_WEBHOOK_TOKEN", WEBHOOK_TOKEN)
            .env("PFNF_DISPATCH_TOKEN", DISPATCH_TOKEN)
            .env("PFNF_POLL_INTERVAL", "5")
            .env("RUST_LOG", "warn")
            .env_remove("PREFECT_API_KEY")
            .env_remove("PREFECT_API_AUTH_STRING")
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let worker = LocalWorker {
            child: cmd.spawn().unwrap(),
            addr,
        };
        let http = reqwest::Client::new();
        for _ in 0..200 {
            let ok = http
                .get(format!("http://{addr}/health"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            if ok {
                return worker;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("prefect-nf local never answered on {addr}");
    }

    /// The process's resident memory, in kilobytes.
    fn rss_kb(&self) -> u64 {
        let pid = self.child.id().unwrap();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    /// `n` connections that send nothing.
    async fn idle(&self, n: usize) -> Vec<TcpStream> {
        let mut held = Vec::with_capacity(n);
        for _ in 0..n {
            held.push(TcpStream::connect(self.addr).await.unwrap());
        }
        held
    }

    async fn health(&self) -> u16 {
        reqwest::Client::new()
            .get(format!("http://{}/health", self.addr))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    }

    /// A correctly-tokened notification about no job of ours: answered 200 without a call.
    async fn webhook(&self) -> u16 {
        reqwest::Client::new()
            .post(format!("http://{}{WEBHOOK_PATH}", self.addr))
            .header(NOTIFICATION_TOKEN_HEADER, WEBHOOK_TOKEN)
            .body(r#"{"event":"job-run:success","data":{"job":{"id":"someone-elses"}}}"#)
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    }
}

async fn app() -> TestApp {
    TestApp::spawn_with(Options {
        register_webhook: false,
        ..Default::default()
    })
    .await
}

/// Whether the server closed `conn` within `within` (after whatever it answered).
async fn closed_by_server(conn: &mut TcpStream, within: Duration) -> bool {
    let mut rest = Vec::new();
    tokio::time::timeout(within, conn.read_to_end(&mut rest))
        .await
        .is_ok()
}

/// 1,100 idle connections, more than the soft limit of open files the process started with,
/// neither starve `/health` nor a valid notification while they are held (the header timeout
/// is long here, so it is not what frees them); and with a short header timeout, the server
/// closes connections that never send a request.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_connections_starve_nothing_and_are_closed() {
    // This process holds the 1,100 client sockets: its own limit must allow them.
    rlimit::increase_nofile_limit(4096).unwrap();
    let app = app().await;
    let worker = LocalWorker::start(&app, &[("PFNF_HTTP_HEADER_TIMEOUT", "120")]).await;
    let mut held = Vec::new();
    for target in [0, 500, 1100] {
        held.extend(worker.idle(target - held.len()).await);
        let asked = tokio::time::Instant::now();
        let answered = tokio::time::timeout(Duration::from_secs(20), async {
            (worker.health().await, worker.webhook().await)
        })
        .await;
        let took = asked.elapsed();
        assert_eq!(
            answered,
            Ok((200, 200)),
            "with {target} idle connections held"
        );
        println!(
            "surface: {target} idle connections held: /health and a notification answered in {} ms",
            took.as_millis()
        );
    }
    drop(held);

    let quick = LocalWorker::start(&app, &[("PFNF_HTTP_HEADER_TIMEOUT", "1")]).await;
    let mut held = quick.idle(50).await;
    for conn in &mut held {
        assert!(
            closed_by_server(conn, Duration::from_secs(20)).await,
            "an idle connection outlived the header timeout"
        );
    }
}

/// At most `PFNF_HTTP_MAX_CONNECTIONS` connections are held; the next waits to be accepted
/// until the header timeout frees a slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_beyond_the_cap_wait_for_a_free_slot() {
    let app = app().await;
    let worker = LocalWorker::start(
        &app,
        &[
            ("PFNF_HTTP_MAX_CONNECTIONS", "20"),
            ("PFNF_HTTP_HEADER_TIMEOUT", "3"),
        ],
    )
    .await;
    let mut held = worker.idle(20).await;
    let health = tokio::spawn({
        let addr = worker.addr;
        async move {
            let answer = reqwest::Client::new()
                .get(format!("http://{addr}/health"))
                .send()
                .await
                .map(|r| r.status().as_u16());
            (answer, tokio::time::Instant::now())
        }
    });
    let mut first_closed = None;
    for conn in &mut held {
        assert!(closed_by_server(conn, Duration::from_secs(20)).await);
        first_closed.get_or_insert_with(tokio::time::Instant::now);
    }
    let (answer, answered_at) = tokio::time::timeout(Duration::from_secs(20), health)
        .await
        .expect("answered once a slot was free")
        .unwrap();
    assert_eq!(answer.unwrap(), 200);
    assert!(
        answered_at >= first_closed.unwrap() - Duration::from_millis(500),
        "the request beyond the cap was served before any slot was free"
    );
}

/// 300 unauthenticated requests, each announcing and sending a body just under the limit,
/// held open: refused on their headers, their bodies never read, so the worker's memory does
/// not grow with them (it grew by about 230 KB per connection when bodies were read first).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unauthenticated_bodies_are_never_read_into_memory() {
    let app = app().await;
    let worker = LocalWorker::start(&app, &[]).await;
    // Warm up: the first requests allocate what every later one reuses.
    for _ in 0..20 {
        assert_eq!(worker.webhook().await, 200);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = worker.rss_kb();
    let body = vec![b'x'; 256 * 1024 - 1024];
    let mut conns = Vec::new();
    for _ in 0..300 {
        let mut conn = TcpStream::connect(worker.addr).await.unwrap();
        let head = format!(
            "POST {WEBHOOK_PATH} HTTP/1.1\r\nhost: x\r\n{NOTIFICATION_TOKEN_HEADER}: wrong\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        conn.write_all(head.as_bytes()).await.unwrap();
        // The server may close before the whole body is written: that is the point.
        let _ = tokio::time::timeout(Duration::from_secs(2), conn.write_all(&body)).await;
        conns.push(conn);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let during = worker.rss_kb();
    let grown_kb = during.saturating_sub(before);
    println!(
        "surface: rss before={before} kB with 300 unauthenticated near-limit bodies={during} kB growth={grown_kb} kB"
    );
    assert!(
        grown_kb < 30 * 1024,
        "RSS grew by {grown_kb} kB with 300 unauthenticated bodies held"
    );
    for conn in &mut conns {
        assert!(closed_by_server(conn, Duration::from_secs(5)).await);
    }
}

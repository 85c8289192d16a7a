//! A local emulator of the Northflank jobs API and job-run webhooks, for tests and demos.
//!
//! It follows `northflank-api.md` (§1–§5, §8): faithful where Northflank documents behaviour,
//! and configurable (see [`Config`]) wherever the behaviour is inferred. Start it in-process
//! with [`start`] or run the `nf-emulator` binary; see the crate README for the knobs, the
//! run scripts and the `/_emulator` control API.

mod api;
pub mod cli;
mod config;
mod error;
mod model;
mod outbox;
mod runner;
mod state;
mod validate;
mod webhook;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

pub use config::{
    AbortConcluded, Config, Faults, LogFormat, Mode, RunKey, TokenHeader, WebhookConfig,
};
pub use error::Error;
pub use model::{
    ContainerStatus, Counters, Delivery, IntegrationRecord, IntegrationStatus, IntegrationView,
    JobRecord, LogLine, Outcome, RecordedRequest, RunEnd, RunRecord, RunStatus, RunView, Snapshot,
};

use state::{App, Inner, lock};

/// How long shutdown waits for the HTTP server to finish in-flight requests.
const SERVER_DRAIN: Duration = Duration::from_secs(2);

/// A running emulator. Dropping it stops the server and kills child processes too, but
/// [`Emulator::shutdown`] does so gracefully and waits for it.
pub struct Emulator {
    app: App,
    addr: SocketAddr,
    server: Option<JoinHandle<()>>,
}

/// Binds `config.bind` and serves until shutdown. Without `config.record`, a non-empty
/// `NF_EMULATOR_RECORD` names the file to record exchanges in, so that a whole test run can be
/// checked against the official types (`scripts/test` sets it).
pub async fn start(mut config: Config) -> Result<Emulator, Error> {
    let http = reqwest::Client::builder().no_proxy().build()?;
    let bind = config.bind;
    if config.record.is_none() {
        config.record = std::env::var_os("NF_EMULATOR_RECORD")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
    }
    let recorder = match &config.record {
        Some(path) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| Error::Record {
                    path: path.clone(),
                    source,
                })?,
        ),
        None => None,
    };
    let app: App = Arc::new(Inner::new(config, http, recorder));
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .map_err(|source| Error::Bind { addr: bind, source })?;
    let addr = listener.local_addr()?;
    let router = api::router(app.clone());
    let mut stop = app.shutdown.subscribe();
    let server = tokio::spawn(async move {
        let serve = axum::serve(listener, router).with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "emulator server failed");
        }
    });
    tracing::info!(%addr, "nf-emulator started");
    Ok(Emulator {
        app,
        addr,
        server: Some(server),
    })
}

impl Emulator {
    /// `http://127.0.0.1:<port>` (a wildcard bind is reported as loopback).
    pub fn base_url(&self) -> String {
        let ip = match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        format!("http://{}", SocketAddr::new(ip, self.addr.port()))
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn config(&self) -> &Config {
        &self.app.config
    }

    pub fn snapshot(&self) -> Snapshot {
        self.app.state().snapshot()
    }

    pub fn counters(&self) -> Counters {
        self.app.state().counters.clone()
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.app.state().requests.iter().cloned().collect()
    }

    /// Test hook: concludes an active run now (success → `job-run:success`, failure →
    /// `job-run:failure`). Unknown or already concluded runs are left alone.
    pub fn finish_run(&self, run_id: &str, outcome: Outcome) {
        if let Err(e) = api::finish_run(&self.app, run_id, outcome) {
            tracing::warn!(run = run_id, error = %e, "finish_run ignored");
        }
    }

    /// Stops the server, kills child processes (SIGTERM, then SIGKILL after a short grace)
    /// and waits for them.
    pub async fn shutdown(mut self) {
        self.app.shutdown.send_replace(true);
        for runner in self.app.take_runners() {
            let _ = tokio::time::timeout(self.app.config.grace + SERVER_DRAIN, runner).await;
        }
        self.app.abort_background();
        if let Some(mut server) = self.server.take()
            && tokio::time::timeout(SERVER_DRAIN, &mut server)
                .await
                .is_err()
        {
            server.abort();
        }
        kill_all(&self.app);
        tracing::info!("nf-emulator stopped");
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.app.shutdown.send_replace(true);
        kill_all(&self.app);
        self.app.abort_background();
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

fn kill_all(app: &App) {
    for pgid in lock(&app.process_groups).drain() {
        runner::kill_group(pgid);
    }
}

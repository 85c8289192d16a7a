//! The long-running local worker: dispatch invocations back to back, and the HTTP endpoint on a
//! port. The same library code as the Lambdas, without AWS.
//!
//! A port on a public address meets what a Function URL's front end absorbs for the Lambda: so
//! connections are limited here. Each must send a request's headers within
//! `http_header_timeout`, when it opens and between requests (hyper's header-read timeout, which
//! needs a timer: `axum::serve` arms none), and at most `http_max_connections` are held at once,
//! the rest waiting to be accepted. The process's soft limit of open files is raised to its
//! hard limit first, so that idle connections cannot use up the descriptors the worker needs.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::config::WebhookSettings;
use crate::dispatch::SUBMIT_RESERVE;
use crate::endpoint::{self, Endpoint, InstantMode};
use crate::scheduled;
use crate::worker::{Current, Worker};

/// Open files kept for everything but incoming connections: Prefect and Northflank
/// connections, logs, the listener itself.
const RESERVED_FILES: u64 = 128;

/// How long in-flight requests get to finish once the server is asked to stop.
const DRAIN: Duration = Duration::from_secs(10);

/// Connection-level limits of the local server.
#[derive(Clone, Copy, Debug)]
pub struct ServerLimits {
    pub header_timeout: Duration,
    pub max_connections: usize,
}

impl ServerLimits {
    /// From the settings, the connection cap kept within the open-file limit.
    pub fn of(settings: &WebhookSettings) -> Self {
        let files = rlimit::getrlimit(rlimit::Resource::NOFILE)
            .map(|(soft, _)| soft)
            .unwrap_or(1024);
        let fits = files.saturating_sub(RESERVED_FILES).max(1);
        ServerLimits {
            header_timeout: settings.header_timeout,
            max_connections: settings.max_connections.min(fits as usize),
        }
    }
}

/// Raises the soft limit of open files to the hard limit, as servers commonly do (the soft
/// limit is often 1,024, the hard limit far more). Returns the limit now in force.
pub fn raise_open_file_limit() -> std::io::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
}

/// Serves the endpoint on `listener` until `shutdown` completes, then lets in-flight requests
/// finish (for a while).
pub async fn serve(
    listener: TcpListener,
    worker: Arc<Worker>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let settings = &worker.settings.webhook;
    let limits = ServerLimits::of(settings);
    let endpoint = Endpoint::new(
        Arc::new(Current::new(Worker::clone(&worker), None)),
        InstantMode::Background,
        settings.clone(),
    );
    serve_router(
        listener,
        endpoint::router(Arc::new(endpoint)),
        limits,
        shutdown,
    )
    .await
}

/// The accept loop: a permit per connection, hyper's HTTP/1 with its header-read timeout.
pub async fn serve_router(
    listener: TcpListener,
    router: axum::Router,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.map_err(std::io::Error::other)?,
            _ = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "requests still running {}s after shutdown were cut",
            DRAIN.as_secs()
        );
    }
    Ok(())
}

/// An accept that failed: a connection reset before it was accepted is nothing; running out of
/// file descriptors passes once connections close, so wait a moment instead of spinning.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::*;
    if matches!(e.kind(), ConnectionAborted | ConnectionReset | Interrupted) {
        return;
    }
    tracing::warn!(error = %e, "could not accept a connection");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// Runs dispatch invocations one after another until `shutdown` completes. Each invocation
/// heartbeats, so the heartbeat period is about one poll window.
pub async fn dispatch_forever(worker: Arc<Worker>, shutdown: impl Future<Output = ()>) {
    let polling = &worker.settings.polling;
    let margin = Duration::from_secs(20);
    let looping = async {
        loop {
            let started = Instant::now();
            let deadline = started + polling.window + polling.interval + SUBMIT_RESERVE + margin;
            match scheduled::invoke(&worker, deadline).await {
                Ok(summary) => tracing::info!(?summary, "dispatch tick"),
                Err(e) => tracing::error!(error = %e, "dispatch tick failed"),
            }
            // An invocation's last poll is at most one interval before it returns; with a zero
            // window it returns at once, so wait out the interval to keep the poll cadence.
            tokio::time::sleep_until(started + polling.interval).await;
        }
    };
    tokio::select! {
        _ = looping => {}
        _ = shutdown => {}
    }
}

/// The whole local worker: endpoint and dispatch loop, both stopped by `shutdown`.
pub async fn run(
    worker: Worker,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // A long-running process is still there to send a batch later: notifications' log lines
    // and events go out together, as dispatch's do.
    worker.batch_sends(crate::dispatch::LOG_FLUSH_EVERY);
    let worker = Arc::new(worker);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut server_stop = stop_rx.clone();
    let server = tokio::spawn(serve(listener, worker.clone(), async move {
        let _ = server_stop.wait_for(|stop| *stop).await;
    }));
    let mut loop_stop = stop_rx;
    tokio::select! {
        _ = dispatch_forever(worker.clone(), async move { let _ = loop_stop.wait_for(|stop| *stop).await; }) => {}
        _ = shutdown => {}
    }
    let _ = stop_tx.send(true);
    let served = server.await.map_err(std::io::Error::other)?;
    worker.send_last().await;
    served
}

//! `nf-emulator`: serves the emulator until SIGINT/SIGTERM.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use nf_emulator::cli::Args;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = match Args::parse().into_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("nf-emulator: {e}");
            return ExitCode::from(2);
        }
    };
    let emulator = match nf_emulator::start(config).await {
        Ok(e) => e,
        Err(e) => {
            eprintln!("nf-emulator: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Scripts wait for exactly this line on stdout; logs go to stderr.
    println!("nf-emulator listening on {}", emulator.base_url());
    let _ = std::io::stdout().flush();
    wait_for_signal().await;
    emulator.shutdown().await;
    ExitCode::SUCCESS
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

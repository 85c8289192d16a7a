//! `prefect-nf`: the local worker and the setup commands.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use prefect_nf::config::{Credentials, PrefectAuth, Settings};
use prefect_nf::prefect::PrefectClient;
use prefect_nf::{dispatch, local, pool, worker::Worker};

#[derive(Parser)]
#[command(
    name = "prefect-nf",
    version,
    about = "Serverless Prefect 3 worker for Northflank"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the worker locally: dispatch ticks, and the webhook on an HTTP port.
    Local {
        /// Address for the webhook server (Northflank posts to /northflank/webhook).
        #[arg(long, env = "PFNF_BIND", default_value = "127.0.0.1:8080")]
        bind: SocketAddr,
    },
    /// Run one dispatch invocation (heartbeat, poll window) and print its summary as JSON.
    Dispatch {
        /// Seconds the invocation may take, like a Lambda timeout.
        #[arg(long, default_value_t = 90)]
        timeout: u64,
    },
    /// Manage the `northflank` work pool.
    WorkPool {
        #[command(subcommand)]
        action: PoolCommand,
    },
}

#[derive(Subcommand)]
enum PoolCommand {
    /// Create the work pool with this worker's base job template (an existing pool is kept).
    Create {
        #[arg(long, env = "PFNF_WORK_POOL")]
        name: String,
        /// Default Northflank project for the pool's runs.
        #[arg(long)]
        project_id: Option<String>,
        #[arg(long)]
        description: Option<String>,
    },
}

fn init_logging() {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("PFNF_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().init();
    } else {
        builder.compact().init();
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    init_logging();
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

type Error = Box<dyn std::error::Error + Send + Sync>;

fn worker() -> Result<Worker, Error> {
    Ok(Worker::new(
        Settings::from_env()?,
        Credentials::from_env()?,
    )?)
}

async fn run(cli: Cli) -> Result<(), Error> {
    match cli.command {
        Command::Local { bind } => {
            let worker = worker()?;
            let listener = tokio::net::TcpListener::bind(bind).await?;
            tracing::info!(address = %listener.local_addr()?, path = local::WEBHOOK_PATH, pool = %worker.settings.work_pool, "local worker running");
            local::run(worker, listener, async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await?;
        }
        Command::Dispatch { timeout } => {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
            let summary = dispatch::invoke(&worker()?, deadline).await?;
            println!("{}", serde_json::to_string_pretty(&summary)?);
        }
        Command::WorkPool {
            action:
                PoolCommand::Create {
                    name,
                    project_id,
                    description,
                },
        } => {
            let api = std::env::var("PREFECT_API_URL")
                .map_err(|_| "PREFECT_API_URL is required but not set")?;
            let auth = PrefectAuth::from_parts(
                std::env::var("PREFECT_API_KEY").ok(),
                std::env::var("PREFECT_API_AUTH_STRING").ok(),
            );
            let prefect = PrefectClient::new(&api, auth, "prefect-nf-cli", Duration::from_secs(2))?;
            match pool::create(
                &prefect,
                &name,
                project_id.as_deref(),
                description.as_deref(),
            )
            .await?
            {
                pool::PoolAction::Created => println!(
                    "created work pool '{name}' (type {})",
                    prefect_nf::WORKER_TYPE
                ),
                pool::PoolAction::AlreadyExists => {
                    println!("work pool '{name}' already exists; left unchanged")
                }
            }
        }
    }
    Ok(())
}

//! `prefect-nf`: the local worker, the setup commands and the dry run.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use prefect_nf::config::{Credentials, PrefectAuth, Settings};
use prefect_nf::prefect::PrefectClient;
use prefect_nf::render::RunFacts;
use prefect_nf::render::dry_run::{self, DryRun, Offline, Stage};
use prefect_nf::{dispatch, local, pool, worker::Worker};
use serde_json::{Map, Value};

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
    /// Print exactly what dispatch would send to Northflank for a flow run (secrets redacted),
    /// or with `--stage config` the job configuration after Prefect's templating. Uses
    /// PREFECT_API_URL (and its credentials) when set, to read pools, deployments, blocks and
    /// variables.
    Render {
        /// Read the base job template from this work pool.
        #[arg(long, conflicts_with = "template")]
        pool: Option<String>,
        /// Read the base job template from a JSON file (default: this worker's template).
        #[arg(long)]
        template: Option<PathBuf>,
        /// Read the deployment's job variables from the server: `<flow name>/<deployment name>`.
        #[arg(long, conflicts_with = "deployment_variables")]
        deployment: Option<String>,
        /// The deployment's job variables: inline JSON or a JSON file.
        #[arg(long)]
        deployment_variables: Option<String>,
        /// The flow run's job variables: inline JSON or a JSON file.
        #[arg(long)]
        flow_run_variables: Option<String>,
        #[arg(long, value_enum, default_value_t = StageArg::Northflank)]
        stage: StageArg,
    },
}

#[derive(Subcommand)]
enum PoolCommand {
    /// Create the work pool with this worker's base job template, and register the
    /// `northflank` block type if the server lacks it. An existing pool is left unchanged.
    Create {
        #[arg(long, env = "PFNF_WORK_POOL")]
        name: String,
        /// Default Northflank project for the pool's runs.
        #[arg(long)]
        project_id: Option<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// Write this worker's base job template to an existing pool, keeping the defaults already
    /// set on it (unless --project-id replaces the project).
    Update {
        #[arg(long, env = "PFNF_WORK_POOL")]
        name: String,
        #[arg(long)]
        project_id: Option<String>,
    },
    /// Print the base job template (for `prefect work-pool create --base-job-template`).
    Template {
        #[arg(long)]
        project_id: Option<String>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum StageArg {
    Config,
    Northflank,
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

fn auth() -> PrefectAuth {
    PrefectAuth::from_parts(
        std::env::var("PREFECT_API_KEY").ok(),
        std::env::var("PREFECT_API_AUTH_STRING").ok(),
    )
}

/// A Prefect client for the setup commands, which need no Northflank credentials.
fn prefect() -> Result<PrefectClient, Error> {
    let api =
        std::env::var("PREFECT_API_URL").map_err(|_| "PREFECT_API_URL is required but not set")?;
    Ok(PrefectClient::new(
        &api,
        auth(),
        "prefect-nf-cli",
        Duration::from_secs(2),
    )?)
}

/// A JSON object from inline JSON or a file, naming the flag in every error.
fn json_object(flag: &str, value: &str) -> Result<Map<String, Value>, Error> {
    let text = if value.trim_start().starts_with('{') {
        value.to_string()
    } else {
        std::fs::read_to_string(value).map_err(|e| format!("{flag}: cannot read {value:?}: {e}"))?
    };
    match serde_json::from_str(&text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(format!("{flag}: must be a JSON object").into()),
        Err(e) => Err(format!("{flag}: invalid JSON: {e}").into()),
    }
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
        Command::WorkPool { action } => pool_command(action).await?,
        Command::Render {
            pool,
            template,
            deployment,
            deployment_variables,
            flow_run_variables,
            stage,
        } => {
            let client = std::env::var("PREFECT_API_URL")
                .ok()
                .map(|_| prefect())
                .transpose()?;
            let api = || {
                client
                    .as_ref()
                    .ok_or("--pool and --deployment read from the server: set PREFECT_API_URL")
            };
            let template = match (pool, template) {
                (Some(name), _) => {
                    api()?
                        .read_work_pool(&name)
                        .await?
                        .ok_or(format!("work pool '{name}' does not exist"))?
                        .base_job_template
                }
                (None, Some(path)) => serde_json::from_str(&std::fs::read_to_string(&path)?)
                    .map_err(|e| format!("--template {}: invalid JSON: {e}", path.display()))?,
                (None, None) => pool::template(None),
            };
            let mut facts = RunFacts {
                flow_run_id: prefect_nf::ids::FlowRunId(uuid::Uuid::nil()),
                flow_run_name: "dry-run".into(),
                flow_id: uuid::Uuid::nil(),
                flow_name: "flow".into(),
                deployment_id: None,
                deployment_name: None,
                worker_name: std::env::var("PFNF_WORKER_NAME")
                    .unwrap_or_else(|_| "prefect-nf".into()),
                api_url: std::env::var("PREFECT_API_URL")
                    .unwrap_or_else(|_| "http://127.0.0.1:4200/api".into()),
                auth: auth(),
            };
            let deployment_variables = match (deployment, deployment_variables) {
                (Some(name), _) => {
                    let (flow, dep) = name
                        .split_once('/')
                        .ok_or("--deployment: use <flow name>/<deployment name>")?;
                    let d = api()?
                        .read_deployment_by_name(flow, dep)
                        .await?
                        .ok_or(format!("deployment '{name}' does not exist"))?;
                    (facts.flow_name, facts.deployment_id, facts.deployment_name) =
                        (flow.to_string(), Some(d.id), Some(d.name));
                    d.job_variables
                }
                (None, Some(v)) => json_object("--deployment-variables", &v)?,
                (None, None) => Map::new(),
            };
            let flow_run_variables = match flow_run_variables {
                Some(v) => json_object("--flow-run-variables", &v)?,
                None => Map::new(),
            };
            let input = DryRun {
                template,
                deployment_variables,
                flow_run_variables,
                facts,
            };
            let stage = match stage {
                StageArg::Config => Stage::Config,
                StageArg::Northflank => Stage::Northflank,
            };
            let out = match &client {
                Some(c) => dry_run::dry_run(&input, stage, c).await?,
                None => dry_run::dry_run(&input, stage, &Offline).await?,
            };
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
    }
    Ok(())
}

async fn pool_command(action: PoolCommand) -> Result<(), Error> {
    match action {
        PoolCommand::Create {
            name,
            project_id,
            description,
        } => {
            match pool::create(
                &prefect()?,
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
                _ => println!(
                    "work pool '{name}' already exists; left unchanged (use `work-pool update` to rewrite its template)"
                ),
            }
        }
        PoolCommand::Update { name, project_id } => {
            match pool::update(&prefect()?, &name, project_id.as_deref()).await? {
                pool::PoolAction::Unchanged => {
                    println!("work pool '{name}' already has this template")
                }
                _ => println!("updated the base job template of work pool '{name}'"),
            }
        }
        PoolCommand::Template { project_id } => {
            println!(
                "{}",
                serde_json::to_string_pretty(&pool::template(project_id.as_deref()))?
            );
        }
    }
    Ok(())
}

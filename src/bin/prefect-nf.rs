//! `prefect-nf`: the local worker, the setup commands and the dry run.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use std::collections::BTreeMap;

use prefect_nf::config::{
    Credentials, NorthflankSettings, PrefectAuth, Settings, Source, parse_env_file,
};
use prefect_nf::northflank::NorthflankClient;
use prefect_nf::ownership::{Marker, ServerId};
use prefect_nf::prefect::PrefectClient;
use prefect_nf::render::RunFacts;
use prefect_nf::render::dry_run::{self, DryRun, Offline, Stage};
use prefect_nf::setup::integration::{self, RegisterAction, Registration};
use prefect_nf::setup::{automation, doctor, pool};
use prefect_nf::{local, routes, scheduled, worker::Worker};
use serde_json::{Map, Value};

#[derive(Parser)]
#[command(
    name = "prefect-nf",
    version,
    about = "Serverless Prefect 3 worker for Northflank"
)]
struct Cli {
    /// Read settings (KEY=VALUE lines, the same names as the environment) from this file; the
    /// environment wins over it.
    #[arg(long, global = true)]
    env_file: Option<PathBuf>,
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
    /// Manage the Northflank notification integration that calls the webhook.
    Webhook {
        #[command(subcommand)]
        action: WebhookCommand,
    },
    /// Let Prefect call the webhook the moment a flow run of the pool is scheduled (a Prefect
    /// automation), so "Run now" starts within about a second instead of at the next tick.
    InstantDispatch {
        #[command(subcommand)]
        action: InstantCommand,
    },
    /// Print exactly what dispatch would send to Northflank for a flow run (secrets redacted),
    /// or with `--stage config` the job configuration after Prefect's templating. Uses
    /// PREFECT_API_URL (and its credentials) when set, to read pools, deployments, blocks and
    /// variables.
    Render(RenderArgs),
    /// Check the installation with the worker's own settings and credentials (PFNF_SECRET_ID
    /// reads the Lambda's secret): Prefect credentials, the pool and its template, the projects
    /// the pool's runs use, the notification integration, instant dispatch, rate-limit headroom.
    /// Every failure comes with a fix; the exit status is 0 only when every check passes.
    Doctor(DoctorArgs),
}

// The flags of `doctor` (its help text is the variant's).
#[derive(clap::Args)]
struct DoctorArgs {
    /// The work pool (default: PFNF_WORK_POOL).
    #[arg(long)]
    pool: Option<String>,
    /// The webhook's URL (the stack's WebhookUrl output, or the local worker's address), to
    /// check that the integration and the automation point at it.
    #[arg(long)]
    url: Option<String>,
    /// The notification integration's name, as given to `webhook register --name`.
    #[arg(long, default_value = prefect_nf::setup::doctor::DEFAULT_INTEGRATION)]
    integration: String,
    /// Print `{"status": "pass"|"fail", "checks": [...]}` instead of lines.
    #[arg(long)]
    json: bool,
    /// Seconds all the checks may take together.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
}

// The flags of `render` (its help text is the variant's).
#[derive(clap::Args)]
struct RenderArgs {
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

#[derive(Subcommand)]
enum WebhookCommand {
    /// Create or update (found by name) a RAW_WEBHOOK integration for the project's job-run
    /// events, with the webhook token from the credentials (PFNF_SECRET_ID or the environment).
    Register {
        /// The webhook's URL: the stack's WebhookUrl output, or the local worker's address.
        #[arg(long)]
        url: String,
        /// A Northflank project whose job runs are reported; repeat it for every project the
        /// pool's runs use (`prefect-nf doctor` lists them).
        #[arg(long, required = true)]
        project_id: Vec<String>,
        #[arg(long, default_value = "prefect-nf")]
        name: String,
    },
}

#[derive(Subcommand)]
enum InstantCommand {
    /// Create or update (found by name) the automation and the `webhook` block it calls, with
    /// the dispatch token from the credentials (PFNF_SECRET_ID or PFNF_DISPATCH_TOKEN).
    Enable {
        /// The webhook's URL: the stack's WebhookUrl output, or the local worker's address.
        /// The automation posts to <url>/prefect/dispatch.
        #[arg(long)]
        url: String,
        #[arg(long, env = "PFNF_WORK_POOL")]
        pool: String,
    },
    /// Delete the automation and its block.
    Disable {
        #[arg(long, env = "PFNF_WORK_POOL")]
        pool: String,
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
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Settings from the environment, then the `--env-file`.
struct Env(BTreeMap<String, String>);

impl Env {
    fn load(file: Option<&PathBuf>) -> Result<Env, Error> {
        let Some(path) = file else {
            return Ok(Env(BTreeMap::new()));
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("--env-file {}: {e}", path.display()))?;
        Ok(Env(parse_env_file(&text).map_err(|e| {
            format!("--env-file {}: {e}", path.display())
        })?))
    }

    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name)
            .ok()
            .or_else(|| self.0.get(name).cloned())
    }

    /// Every variable: the file's, with the process environment over it.
    fn vars(&self) -> BTreeMap<String, String> {
        let mut vars = self.0.clone();
        vars.extend(std::env::vars());
        vars
    }

    async fn credentials(&self) -> Result<Credentials, Error> {
        Ok(Source::from_lookup(&|k| self.get(k)).await.load().await?)
    }

    async fn worker(&self) -> Result<Worker, Error> {
        let settings = Settings::from_vars(&self.vars())?;
        Ok(Worker::new(settings, self.credentials().await?)?)
    }

    fn northflank(&self) -> Result<NorthflankSettings, Error> {
        Ok(NorthflankSettings::from_lookup(&|k| self.get(k))?)
    }

    /// A Prefect client for the setup commands, which need no Northflank credentials.
    fn prefect(&self) -> Result<PrefectClient, Error> {
        let api = self
            .get("PREFECT_API_URL")
            .ok_or("PREFECT_API_URL is required but not set")?;
        let auth = PrefectAuth::from_lookup(&|k| self.get(k));
        Ok(PrefectClient::new(
            &api,
            auth,
            "prefect-nf-cli",
            self.northflank()?.retry_base,
        )?)
    }
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

async fn run(cli: Cli) -> Result<ExitCode, Error> {
    let env = Env::load(cli.env_file.as_ref())?;
    let done = match cli.command {
        Command::Doctor(args) => return doctor_command(&env, args).await,
        Command::Local { bind } => local_command(&env, bind).await,
        Command::Dispatch { timeout } => {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
            let summary = scheduled::invoke(&env.worker().await?, deadline).await?;
            println!("{}", serde_json::to_string_pretty(&summary)?);
            Ok(())
        }
        Command::WorkPool { action } => pool_command(&env, action).await,
        Command::InstantDispatch { action } => instant_command(&env, action).await,
        Command::Webhook {
            action:
                WebhookCommand::Register {
                    url,
                    project_id,
                    name,
                },
        } => register_webhook(&env, &url, &project_id, &name).await,
        Command::Render(args) => render_command(&env, args).await,
    };
    done.map(|()| ExitCode::SUCCESS)
}

/// Prints the report; the exit status is 1 when a check failed.
async fn doctor_command(env: &Env, args: DoctorArgs) -> Result<ExitCode, Error> {
    let options = doctor::Options {
        url: args.url,
        integration: args.integration,
        timeout: Duration::from_secs(args.timeout),
    };
    let lookup = |k: &str| match (k, &args.pool) {
        ("PFNF_WORK_POOL", Some(pool)) => Some(pool.clone()),
        _ => env.get(k),
    };
    let report = doctor::diagnose(&lookup, &options).await;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report.json())?);
    } else {
        print!("{}", report.human());
    }
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn local_command(env: &Env, bind: SocketAddr) -> Result<(), Error> {
    let worker = env.worker().await?;
    match local::raise_open_file_limit() {
        Ok(files) => tracing::debug!(files, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open-file limit"),
    }
    let listener = tokio::net::TcpListener::bind(bind).await?;
    tracing::info!(address = %listener.local_addr()?, path = routes::WEBHOOK_PATH, pool = %worker.settings.prefect.work_pool, "local worker running");
    local::run(worker, listener, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}

async fn register_webhook(
    env: &Env,
    url: &str,
    projects: &[String],
    name: &str,
) -> Result<(), Error> {
    let credentials = env.credentials().await?;
    let settings = env.northflank()?;
    let nf = NorthflankClient::new(
        &settings.api_url,
        credentials.northflank_token.clone(),
        settings.retry_base,
    )?;
    let registration = Registration {
        name,
        url,
        projects,
        token: credentials.webhook_token.expose(),
    };
    let done = match integration::register(&nf, &registration).await? {
        RegisterAction::Created => "created",
        RegisterAction::Updated => "updated",
    };
    println!(
        "{done} notification integration '{name}' for project(s) {} → {url}",
        projects.join(", ")
    );
    Ok(())
}

async fn render_command(env: &Env, args: RenderArgs) -> Result<(), Error> {
    let client = env
        .get("PREFECT_API_URL")
        .map(|_| env.prefect())
        .transpose()?;
    let api = || {
        client
            .as_ref()
            .ok_or("--pool and --deployment read from the server: set PREFECT_API_URL")
    };
    let (template, pool_id) = match (&args.pool, &args.template) {
        (Some(name), _) => {
            let pool = api()?
                .read_work_pool(name)
                .await?
                .ok_or(format!("work pool '{name}' does not exist"))?;
            (pool.base_job_template, Some(pool.id))
        }
        (None, Some(path)) => (read_template(path)?, None),
        (None, None) => (pool::template(None), None),
    };
    let mut facts = dry_run_facts(env, pool_id);
    let deployment_variables = match (&args.deployment, &args.deployment_variables) {
        (Some(name), _) => deployment_variables(api()?, name, &mut facts).await?,
        (None, Some(v)) => json_object("--deployment-variables", v)?,
        (None, None) => Map::new(),
    };
    let flow_run_variables = match &args.flow_run_variables {
        Some(v) => json_object("--flow-run-variables", v)?,
        None => Map::new(),
    };
    let input = DryRun {
        template,
        deployment_variables,
        flow_run_variables,
        facts,
    };
    let stage = match args.stage {
        StageArg::Config => Stage::Config,
        StageArg::Northflank => Stage::Northflank,
    };
    let out = match &client {
        Some(c) => dry_run::dry_run(&input, stage, c).await?,
        None => dry_run::dry_run(&input, stage, &Offline).await?,
    };
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

fn read_template(path: &PathBuf) -> Result<Value, Error> {
    Ok(serde_json::from_str(&std::fs::read_to_string(path)?)
        .map_err(|e| format!("--template {}: invalid JSON: {e}", path.display()))?)
}

/// What a dry run's container would be told. The pool's id is part of the ownership marker:
/// without a pool, none is shown.
fn dry_run_facts(env: &Env, pool_id: Option<uuid::Uuid>) -> RunFacts {
    let api_url = env
        .get("PREFECT_API_URL")
        .unwrap_or_else(|| "http://127.0.0.1:4200/api".into());
    let marker = pool_id.map(|pool_id| Marker {
        pool_id,
        server: ServerId::of_api_url(&api_url),
    });
    let (flow_run_name, flow_name) = ("dry-run", "flow");
    RunFacts {
        flow_run_id: prefect_nf::ids::FlowRunId(uuid::Uuid::nil()),
        flow_run_name: flow_run_name.into(),
        flow_id: uuid::Uuid::nil(),
        flow_name: flow_name.into(),
        deployment_id: None,
        deployment_name: None,
        worker_name: env
            .get("PFNF_WORKER_NAME")
            .unwrap_or_else(|| "prefect-nf".into()),
        api_url,
        auth: PrefectAuth::from_lookup(&|k| env.get(k)),
        settings_env: prefect_nf::config::flow_run_env(&env.vars()),
        ctx: RunFacts::ctx_of(
            serde_json::json!({"id": uuid::Uuid::nil(), "name": flow_run_name}),
            serde_json::json!({"id": uuid::Uuid::nil(), "name": flow_name}),
        ),
        marker,
    }
}

/// The job variables of deployment `<flow name>/<deployment name>`, naming it in `facts`.
async fn deployment_variables(
    prefect: &PrefectClient,
    name: &str,
    facts: &mut RunFacts,
) -> Result<Map<String, Value>, Error> {
    let (flow, dep) = name
        .split_once('/')
        .ok_or("--deployment: use <flow name>/<deployment name>")?;
    let d = prefect
        .read_deployment_by_name(flow, dep)
        .await?
        .ok_or(format!("deployment '{name}' does not exist"))?;
    (facts.flow_name, facts.deployment_id, facts.deployment_name) =
        (flow.to_string(), Some(d.id), Some(d.name));
    facts.ctx["flow"]["name"] = Value::String(flow.to_string());
    Ok(d.job_variables)
}

async fn instant_command(env: &Env, action: InstantCommand) -> Result<(), Error> {
    let prefect = env.prefect()?;
    match action {
        InstantCommand::Enable { url, pool } => {
            let token = env.credentials().await?.dispatch_token.ok_or(
                "instant dispatch needs a dispatch token: set dispatch_token in the secret (PFNF_SECRET_ID) or PFNF_DISPATCH_TOKEN",
            )?;
            let enabled = automation::enable(&prefect, &pool, &url, token.expose()).await?;
            println!(
                "{} automation '{}' ({}): flow runs scheduled in '{pool}' call {} through block 'webhook/{}'",
                if enabled.created {
                    "created"
                } else {
                    "updated"
                },
                automation::automation_name(&pool),
                enabled.automation_id,
                automation::endpoint(&url)?,
                enabled.block_document,
            );
        }
        InstantCommand::Disable { pool } => {
            if automation::disable(&prefect, &pool).await? {
                println!("deleted the instant-dispatch automation of '{pool}' and its block");
            } else {
                println!("instant dispatch was not enabled for '{pool}'");
            }
        }
    }
    Ok(())
}

async fn pool_command(env: &Env, action: PoolCommand) -> Result<(), Error> {
    match action {
        PoolCommand::Create {
            name,
            project_id,
            description,
        } => {
            match pool::create(
                &env.prefect()?,
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
            match pool::update(&env.prefect()?, &name, project_id.as_deref()).await? {
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

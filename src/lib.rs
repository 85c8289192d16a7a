//! A serverless Prefect 3 worker for Northflank.
//!
//! Prefect flow runs scheduled in a work pool of type `northflank` become Northflank jobs. Nothing
//! polls Northflank: a scheduled **dispatch** step claims runs and submits jobs, and Northflank's
//! job-run notifications call a **webhook** step that settles the Prefect state and cleans up.
//! Both steps run as AWS Lambda functions, or together in one long-running local worker.
//!
//! # Layout
//!
//! - [`config`]: settings (non-secret, from the environment) and credentials (secret).
//! - [`ids`]: domain identifiers that parse instead of validate: flow-run ids, `pf-<uuid>` job
//!   names, `<project>:<job>:<run>` infrastructure pids.
//! - [`secrets`]: credentials from one JSON secret in AWS Secrets Manager, or the environment.
//! - [`retry`]: the retry schedule both API clients share, bounded by a deadline.
//! - [`http`]: what an HTTP failure looks like to both clients (status, body, `Retry-After`).
//! - [`prefect`]: the Prefect REST client: pools, heartbeats, polling, claiming, states, logs.
//! - [`northflank`]: the Northflank REST client: jobs, runs, notification integrations, rate limits.
//! - [`render`]: turns a pool's base job template and job variables into the exact Northflank
//!   create-job and start-run bodies.
//! - [`integration`]: registering the webhook as a Northflank notification integration.
//! - [`pool`]: creating the `northflank` work pool with this worker's base job template.
//! - [`dispatch`]: one scheduled invocation: heartbeat, poll, claim, submit. Each flow run is
//!   submitted by a step that returns an outcome tests can drive.
//! - [`reconcile`]: once per invocation, what lost notifications and interrupted submitters
//!   left undone: cancellations, resumed submissions, unsettled runs, leftover jobs.
//! - [`webhook`]: a Northflank job-run notification in, a Prefect state and a job cleanup out.
//!   The decision itself is a pure function of the facts gathered.
//! - [`metrics`]: the dispatch summary as CloudWatch metrics (embedded metric format).
//! - [`instant`]: instant dispatch: the Prefect automation that calls the webhook function
//!   when a flow run is scheduled, and the quick dispatch that answers it.
//! - [`local`]: the long-running local worker: dispatch ticks plus the webhook on an HTTP port.
//! - [`worker`]: settings, credentials and the two clients, shared by both steps.
//! - [`lambda`]: the glue between the AWS Lambda runtimes and the two steps; the binaries in
//!   `src/bin` only call it.

pub mod config;
pub mod dispatch;
pub mod endpoint;
pub mod http;
pub mod ids;
pub mod instant;
pub mod integration;
pub mod lambda;
pub mod local;
pub mod metrics;
pub mod northflank;
pub mod ownership;
pub mod pool;
pub mod prefect;
pub mod reconcile;
pub mod render;
pub mod retry;
pub mod routes;
pub mod secrets;
pub mod webhook;
pub mod worker;

/// The work-pool type this worker serves, the same as the Python worker's, so existing pools and
/// `prefect.yaml` files keep working.
pub const WORKER_TYPE: &str = "northflank";

//! A serverless Prefect 3 worker for Northflank.
//!
//! Prefect flow runs scheduled in a work pool of type `northflank` become Northflank jobs. Nothing
//! polls Northflank: a scheduled **dispatch** claims runs and submits jobs, and Northflank's
//! job-run notifications call a **webhook** that settles the Prefect state and cleans up. Both
//! run as AWS Lambda functions, or together in one long-running local worker.
//!
//! # Layout
//!
//! The crate reads bottom-up: each layer imports only the layers below it
//! (`scripts/check-structure` fails on a cycle between top-level modules).
//!
//! 1. **Base**: what the rest is made of.
//!    - [`config`]: settings by concern (Prefect, polling, reconciliation, webhook, Northflank),
//!      credentials, and where credentials come from (the environment or Secrets Manager).
//!    - [`ids`]: identifiers that parse instead of validate: flow-run ids, `pf-<uuid>` job
//!      names, `<project>:<job>:<run>` infrastructure pids.
//!    - [`retry`], [`http`]: the retry policy and the HTTP details both API clients share.
//!    - [`prefect`], [`northflank`]: the two REST clients and the objects they read (the
//!      Prefect client with one rate limiter for the whole process, `prefect::throttle`).
//!    - [`render`]: a pool's base job template and job variables → the exact Northflank
//!      create-job and start-run bodies (with the `prefect-templating` crate).
//!    - [`ownership`]: the one rule for what this installation may touch (pure).
//!    - [`routes`]: the paths and token headers of the HTTP surface.
//! 2. **[`worker`]**: the context every step runs in: settings, credentials, clients, and what
//!    one process keeps between invocations (caches, reconciliation's memory, the outbox,
//!    instant dispatch's gate).
//! 3. **[`run`]**: what several entry points do to one flow run: claim, launch (fresh or
//!    resumed), abandon, settle (gather → decide, a pure function → act).
//! 4. **Steps**, peers on top of `run`:
//!    - [`dispatch`]: heartbeat, poll, submit; one invocation in named phases.
//!    - [`reconcile`]: what lost notifications and interrupted submitters left undone; a pure
//!      plan per flow run, the steps, the leftover-job sweep.
//!    - [`webhook`]: a Northflank notification → one flow run of ours settled.
//!    - [`instant`]: instant dispatch's handler: one quick dispatch at a time.
//!    - [`scheduled`]: the scheduled invocation: a dispatch window with reconciliation beside
//!      it, and its CloudWatch metrics.
//! 5. **[`setup`]**: the work pool, the notification integration, the automation, and `doctor`,
//!    which checks them all with the worker's own clients (the CLI's).
//! 6. **Adapters**: [`endpoint`] (one axum router for the webhook, instant dispatch and
//!    `/health`), [`local`] (the long-running worker and its hardened server), [`lambda`] (the
//!    dispatch and webhook binaries, and instant dispatch's hand-off from one to the other);
//!    the binaries in `src/bin` only call them.

pub mod config;
pub mod dispatch;
pub mod endpoint;
pub mod http;
pub mod ids;
pub mod instant;
pub mod lambda;
pub mod local;
pub mod northflank;
pub mod ownership;
pub mod prefect;
pub mod reconcile;
pub mod render;
pub mod retry;
pub mod routes;
pub mod run;
pub mod scheduled;
pub mod setup;
pub mod webhook;
pub mod worker;

/// The work-pool type this worker serves, the same as the Python worker's, so existing pools and
/// `prefect.yaml` files keep working.
pub const WORKER_TYPE: &str = "northflank";

//! The root crate's integration tests, in one binary (one link instead of one per file): each
//! module runs against real parts, a Prefect server started by `scripts/test` and the
//! Northflank emulator in-process; `helpers` spawns them.
//!
//! `scripts/test` runs the chaos test on its own (`cargo test --test it chaos -- --nocapture`)
//! so that its figures can be printed; the rest run with `--skip chaos`. The one test that
//! installs a global log subscriber of its own lives in a second binary, `tests/logs`.

mod helpers;

mod chaos;
mod cli;
mod dispatch;
mod doctor;
mod end_to_end;
mod instant;
mod job_variables;
mod lambda;
mod lambda_runtime;
mod migration;
mod nf_schema;
mod northflank_client;
mod ownership;
mod prefect_client;
mod prefect_cost;
mod proxy;
mod reconcile;
mod render_emulator;
mod render_rules;
mod secrets;
mod settle;
mod smoke;
mod surface;
mod template;
mod throttling;
mod webhook;
mod webhook_fuzz;

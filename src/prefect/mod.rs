//! Prefect: the REST client, the objects it reads, the states it proposes and the worker's log
//! messages.

mod automations;
mod blocks;
mod calls;
mod client;
pub mod events;
pub mod logs;
pub mod models;
pub mod outbox;
pub mod stale;
pub mod states;
pub mod throttle;

pub use client::{API_VERSION, PrefectClient, PrefectError};

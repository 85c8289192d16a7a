//! Northflank: the REST client, the objects it reads, and the idempotent launch of one flow run's
//! job and run.

mod client;
pub mod launch;
pub mod models;

pub use client::{ApiFailure, NorthflankClient, NorthflankError};

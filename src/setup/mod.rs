//! Setting an installation up: the work pool (and the `northflank` block type), the Northflank
//! notification integration that calls the webhook, and instant dispatch's Prefect automation;
//! and `doctor`, which checks all of them as they are. The CLI runs these; nothing else does.

pub mod automation;
pub mod doctor;
pub mod integration;
pub mod pool;

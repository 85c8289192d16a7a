//! What several entry points do to one flow run: claim it, launch its Northflank job and run
//! ([`Launch::Fresh`] from dispatch, [`Launch::Resume`] from reconciliation), abandon a launch
//! that failed, and settle it against its job run (the webhook and reconciliation). Its job
//! configuration is resolved in one place ([`config`]).

mod abandon;
mod claim;
pub mod config;
mod launch;
pub mod settle;

pub use abandon::{Abandoned, abandon, crash};
pub use claim::{NotClaimed, cancel_orphan, claim};
pub use launch::{Claimed, Launch, LaunchError, Launched, WrittenJob, launch};
pub use settle::{Action, Hint, SettleError, Settled, settle, settle_known_success};

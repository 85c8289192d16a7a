//! The worker's HTTP contract: the paths and token headers it serves. The endpoint serves them;
//! the setup commands write them into Northflank's integration and Prefect's automation.

/// Northflank's job-run notifications. The Lambda Function URL accepts them on any path.
pub const WEBHOOK_PATH: &str = "/northflank/webhook";
/// Prefect's instant-dispatch automation.
pub const INSTANT_PATH: &str = "/prefect/dispatch";
/// A liveness check: `ok`, with no call to anything.
pub const HEALTH_PATH: &str = "/health";

/// The shared token Northflank sends with every notification.
pub const NOTIFICATION_TOKEN_HEADER: &str = "x-northflank-notification-integration-token";
/// The dispatch token Prefect's automation sends (separate from Northflank's).
pub const DISPATCH_TOKEN_HEADER: &str = "x-prefect-nf-dispatch-token";

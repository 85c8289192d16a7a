//! Worker messages for a flow run's Logs tab.
//!
//! Messages are collected while one flow run is handled, then kept in the worker's
//! [`Outbox`](super::outbox::Outbox) until the next batch is sent. Each line also goes to
//! `tracing`.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::ids::FlowRunId;

/// Python logging levels, which Prefect stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Debug = 10,
    Info = 20,
    Warning = 30,
    Error = 40,
}

#[derive(Clone, Debug, Serialize)]
pub struct LogEntry {
    pub name: &'static str,
    pub level: u8,
    pub message: String,
    pub timestamp: DateTime<Utc>,
    pub flow_run_id: FlowRunId,
    pub task_run_id: Option<()>,
}

/// The logger name the Python worker uses for flow-run messages.
const LOGGER: &str = "prefect.flow_runs.worker";

/// The messages about one flow run, waiting to be sent.
#[derive(Debug)]
pub struct RunLog {
    flow_run_id: FlowRunId,
    entries: Vec<LogEntry>,
}

impl RunLog {
    pub fn new(flow_run_id: FlowRunId) -> Self {
        RunLog {
            flow_run_id,
            entries: Vec::new(),
        }
    }

    pub fn flow_run_id(&self) -> FlowRunId {
        self.flow_run_id
    }

    pub fn log(&mut self, level: Level, message: impl Into<String>) {
        let message = message.into();
        let id = self.flow_run_id.to_string();
        match level {
            Level::Error => tracing::error!(flow_run_id = %id, "{message}"),
            Level::Warning => tracing::warn!(flow_run_id = %id, "{message}"),
            Level::Info => tracing::info!(flow_run_id = %id, "{message}"),
            Level::Debug => tracing::debug!(flow_run_id = %id, "{message}"),
        }
        self.entries.push(LogEntry {
            name: LOGGER,
            level: level as u8,
            message,
            timestamp: Utc::now(),
            flow_run_id: self.flow_run_id,
            task_run_id: None,
        });
    }

    pub fn info(&mut self, message: impl Into<String>) {
        self.log(Level::Info, message)
    }

    pub fn warn(&mut self, message: impl Into<String>) {
        self.log(Level::Warning, message)
    }

    pub fn error(&mut self, message: impl Into<String>) {
        self.log(Level::Error, message)
    }

    pub fn take(&mut self) -> Vec<LogEntry> {
        std::mem::take(&mut self.entries)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

//! The parts of Northflank's API objects the worker reads (northflank-api.md §2–§5). Fields the
//! docs mark required but that real answers may omit are optional here.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A job run's status. The docs list only these three; anything else is kept, not rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunStatus {
    Success,
    Running,
    Failed,
    Other(String),
}

impl<'de> Deserialize<'de> for RunStatus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(match s.to_ascii_uppercase().as_str() {
            "SUCCESS" => RunStatus::Success,
            "RUNNING" => RunStatus::Running,
            "FAILED" => RunStatus::Failed,
            _ => RunStatus::Other(s),
        })
    }
}

impl Serialize for RunStatus {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match self {
            RunStatus::Success => "SUCCESS",
            RunStatus::Running => "RUNNING",
            RunStatus::Failed => "FAILED",
            RunStatus::Other(x) => x,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobRun {
    pub id: String,
    #[serde(default)]
    pub run_name: Option<String>,
    pub status: RunStatus,
    /// The terminal signal; `status` is read only once this is true.
    #[serde(default)]
    pub concluded: bool,
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub concluded_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobSummary {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    /// Where our ownership marker is (`ownership::Marker`); optional in Northflank's listing.
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct CreatedJob {
    pub id: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartedRun {
    pub id: String,
    #[serde(default)]
    pub run_name: Option<String>,
}

/// The rate-limit headers of the latest answer.
pub use crate::http::RateLimit;

//! Creating one flow run's job and starting its single run, safely repeatable.
//!
//! The job is written with `PUT` (create or update by the derived id), so repeating it never
//! makes a second job. Starting a run has no idempotency key, so whenever a start may have been
//! applied without an answer, or a previous attempt may have started one, the job's runs are
//! listed first and a run started since the claim is adopted instead of starting another.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{NorthflankClient, NorthflankError};
use crate::ids::JobName;

/// A run whose start is this much older than the claim still counts as this claim's: the two
/// timestamps come from different clocks.
const CLOCK_SKEW: Duration = Duration::from_secs(10);

/// How often a start is tried when each attempt ends with an unknown outcome.
const START_ATTEMPTS: u32 = 3;

pub struct JobAndRun<'a> {
    pub project: &'a str,
    pub job_name: JobName,
    pub create_job: &'a Value,
    pub start_run: &'a Value,
    /// When this worker claimed the flow run; runs started since then belong to this claim.
    pub claimed_at: DateTime<Utc>,
    /// Whether an earlier attempt may already have started a run (a resumed submission).
    pub look_first: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Started {
    pub job: String,
    pub run: String,
    /// The run already existed and was adopted.
    pub adopted: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("{source}")]
pub struct StartError {
    #[source]
    pub source: NorthflankError,
    /// The job was (or may have been) written, so it must be cleaned up if the run is abandoned.
    pub job_written: bool,
}

pub async fn launch(nf: &NorthflankClient, l: &JobAndRun<'_>) -> Result<Started, StartError> {
    let job = nf
        .put_job(l.project, l.create_job)
        .await
        .map_err(|source| StartError {
            job_written: source.outcome_unknown(),
            source,
        })?
        .id;
    let failed = |source| StartError {
        source,
        job_written: true,
    };
    let mut look = l.look_first;
    let mut attempt = 0;
    loop {
        attempt += 1;
        if look && let Some(run) = find_claimed_run(nf, l, &job).await.map_err(failed)? {
            return Ok(Started {
                job,
                run,
                adopted: true,
            });
        }
        match nf.start_run(l.project, &job, l.start_run).await {
            Ok(run) => {
                return Ok(Started {
                    job,
                    run: run.id,
                    adopted: false,
                });
            }
            Err(e) if e.outcome_unknown() && attempt < START_ATTEMPTS => look = true,
            Err(e) => return Err(failed(e)),
        }
    }
}

async fn find_claimed_run(
    nf: &NorthflankClient,
    l: &JobAndRun<'_>,
    job: &str,
) -> Result<Option<String>, NorthflankError> {
    let since = l.claimed_at - chrono::Duration::from_std(CLOCK_SKEW).unwrap_or_default();
    let runs = nf.list_runs(l.project, job).await?;
    Ok(runs
        .into_iter()
        .filter(|r| r.started_at.is_none_or(|t| t >= since))
        .max_by_key(|r| r.started_at)
        .map(|r| r.id))
}

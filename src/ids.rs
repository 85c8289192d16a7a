//! Identifiers that cross system boundaries. Each one is parsed once, at the edge, so the rest of
//! the code never handles a malformed id.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

/// A Prefect flow-run id.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct FlowRunId(pub Uuid);

impl fmt::Display for FlowRunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl FromStr for FlowRunId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(FlowRunId)
    }
}

/// The Northflank job name (and id) of a flow run: `pf-<lowercase uuid>`.
///
/// It is exactly 39 characters, matches every documented version of Northflank's name pattern,
/// is already a slug (so the job id equals the name), and maps back to the flow run without any
/// stored state. Names derived from flow-run names break the pattern and collide on retries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct JobName(FlowRunId);

impl JobName {
    const PREFIX: &'static str = "pf-";

    pub fn for_flow_run(id: FlowRunId) -> Self {
        JobName(id)
    }

    pub fn flow_run_id(&self) -> FlowRunId {
        self.0
    }

    /// Parses a job id or name; anything that is not exactly `pf-<lowercase hyphenated uuid>` is
    /// not ours.
    pub fn parse(s: &str) -> Option<Self> {
        let rest = s.strip_prefix(Self::PREFIX)?;
        let id = Uuid::try_parse(rest).ok()?;
        // Reject other spellings of the same uuid so that name and id stay one-to-one.
        (id.hyphenated().to_string() == rest).then_some(JobName(FlowRunId(id)))
    }
}

impl fmt::Display for JobName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", Self::PREFIX, self.0)
    }
}

/// The `infrastructure_pid` recorded on a flow run: `<project>:<job>:<run>`, then `:keep` when
/// the job must outlive its run (`cleanup_job: false`) and `:own-token` when the run's job
/// variables chose their own Northflank credentials.
///
/// Northflank project and job ids are slugs and run ids are uuids, so none contains `:`. These
/// two facts live here because this is the one write after the claim that Prefect applies as a
/// plain update: it cannot be lost to the read-modify-write conflicts that labels hit on a busy
/// SQLite server, and the step that settles the run reads it anyway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InfrastructurePid {
    pub project: String,
    pub job: String,
    pub run: String,
    pub keep_job: bool,
    pub own_credentials: bool,
}

const KEEP: &str = "keep";
const OWN_TOKEN: &str = "own-token";

impl fmt::Display for InfrastructurePid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.project, self.job, self.run)?;
        if self.keep_job {
            write!(f, ":{KEEP}")?;
        }
        if self.own_credentials {
            write!(f, ":{OWN_TOKEN}")?;
        }
        Ok(())
    }
}

impl FromStr for InfrastructurePid {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split(':').collect();
        let bad = || {
            format!(
                "infrastructure_pid {s:?} is not of the form <project>:<job>:<run>[:keep][:own-token]"
            )
        };
        let [project, job, run, flags @ ..] = parts.as_slice() else {
            return Err(bad());
        };
        let (keep_job, own_credentials) = match flags {
            [] => (false, false),
            [KEEP] => (true, false),
            [OWN_TOKEN] => (false, true),
            [KEEP, OWN_TOKEN] => (true, true),
            _ => return Err(bad()),
        };
        if project.is_empty() || job.is_empty() || run.is_empty() {
            return Err(format!("infrastructure_pid {s:?} has an empty part"));
        }
        Ok(InfrastructurePid {
            project: project.to_string(),
            job: job.to_string(),
            run: run.to_string(),
            keep_job,
            own_credentials,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_name_round_trips_and_fits_northflank_limits() {
        let id: FlowRunId = "0b9f6a2e-1c3d-4e5f-8a9b-0c1d2e3f4a5b".parse().unwrap();
        let name = JobName::for_flow_run(id);
        assert_eq!(name.to_string(), "pf-0b9f6a2e-1c3d-4e5f-8a9b-0c1d2e3f4a5b");
        assert_eq!(name.to_string().len(), 39);
        assert_eq!(JobName::parse(&name.to_string()), Some(name));
    }

    #[test]
    fn job_name_rejects_foreign_names() {
        for s in [
            "my-job",
            "pf-",
            "pf-not-a-uuid",
            "pf-0B9F6A2E-1C3D-4E5F-8A9B-0C1D2E3F4A5B",
            "pf-0b9f6a2e1c3d4e5f8a9b0c1d2e3f4a5b",
            "xpf-0b9f6a2e-1c3d-4e5f-8a9b-0c1d2e3f4a5b",
            "pf-0b9f6a2e-1c3d-4e5f-8a9b-0c1d2e3f4a5b-x",
        ] {
            assert_eq!(JobName::parse(s), None, "{s}");
        }
    }

    #[test]
    fn infrastructure_pid_round_trips() {
        let pid: InfrastructurePid = "proj:pf-x:d34582a4-35bd-4c71-8e7c-e36999b88723"
            .parse()
            .unwrap();
        assert_eq!(pid.project, "proj");
        assert_eq!(
            pid.to_string(),
            "proj:pf-x:d34582a4-35bd-4c71-8e7c-e36999b88723"
        );
        assert!("proj:job".parse::<InfrastructurePid>().is_err());
        assert!("a::c".parse::<InfrastructurePid>().is_err());
        assert!("12345".parse::<InfrastructurePid>().is_err());
    }

    #[test]
    fn infrastructure_pid_flags() {
        let kept: InfrastructurePid = "p:j:r:keep".parse().unwrap();
        assert!(kept.keep_job && !kept.own_credentials);
        let both: InfrastructurePid = "p:j:r:keep:own-token".parse().unwrap();
        assert!(both.keep_job && both.own_credentials);
        assert_eq!(both.to_string(), "p:j:r:keep:own-token");
        let own: InfrastructurePid = "p:j:r:own-token".parse().unwrap();
        assert_eq!(own.to_string(), "p:j:r:own-token");
        for bad in ["p:j:r:other", "p:j:r:own-token:keep", "p:j:r:keep:keep"] {
            assert!(bad.parse::<InfrastructurePid>().is_err(), "{bad}");
        }
    }
}

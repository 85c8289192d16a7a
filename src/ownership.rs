//! What this installation may touch: one rule, in one place, for the webhook, every
//! reconciliation step and the sweep.
//!
//! Several installations may share one Northflank project (staging and production, two Prefect
//! workspaces, a second region), another work pool's worker (or the Python worker) may run in
//! it, and anyone who can create a job there can name it `pf-<uuid>`. A name proves nothing, so:
//!
//! - a **flow run** is ours only if Prefect reports it in this worker's work pool and, once it
//!   records an `infrastructure_pid`, only if that pid is ours: it parses, names the job this
//!   worker derives from the flow run (`pf-<flow run id>`), and names the project and job where
//!   the job was seen;
//! - a **job** is ours only if its description carries this installation's [`Marker`], which
//!   dispatch writes on every job and Northflank's job listing returns. A job marked by another
//!   installation is never ours. An unmarked job (written before markers existed, or not read)
//!   is ours only if its flow run is ours.
//!
//! Anything that is not ours is acknowledged and left alone: no Prefect write, no Northflank
//! write. Pure functions of what the caller already read; the table test below is the rule.

use std::fmt;

use uuid::Uuid;

use crate::ids::{InfrastructurePid, JobName};
use crate::prefect::models::FlowRun;

/// A stable name of the Prefect server or workspace the worker talks to: 16 hex digits of a
/// name-based (SHA-1) uuid of its API URL, the same in every process and every release.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ServerId([u8; 8]);

impl ServerId {
    /// From the API URL as configured; scheme and host case and a trailing `/` do not matter.
    pub fn of_api_url(url: &str) -> Self {
        let normalized = match reqwest::Url::parse(url.trim()) {
            Ok(parsed) => parsed.as_str().trim_end_matches('/').to_string(),
            Err(_) => url.trim().trim_end_matches('/').to_string(),
        };
        let digest = Uuid::new_v5(&Uuid::NAMESPACE_URL, normalized.as_bytes());
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&digest.as_bytes()[..8]);
        ServerId(bytes)
    }

    fn parse(hex: &str) -> Option<Self> {
        if hex.len() != 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let mut bytes = [0u8; 8];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(ServerId(bytes))
    }
}

impl fmt::Display for ServerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// The ownership marker dispatch appends to every job's description:
/// `prefect-nf:<work pool id>:<server id>`. Every character is one Northflank's description
/// pattern allows, and it is 64 characters of the 200 a description may have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Marker {
    pub pool_id: Uuid,
    pub server: ServerId,
}

impl Marker {
    const PREFIX: &'static str = "prefect-nf:";
    /// The length of every marker.
    pub const LEN: usize = 11 + 36 + 1 + 16;

    /// The marker a description ends with, if any. Only the last one counts: dispatch appends
    /// its marker after whatever description the job variables chose.
    pub fn find(description: &str) -> Option<Marker> {
        let at = description.rfind(Self::PREFIX)?;
        let token = description[at + Self::PREFIX.len()..]
            .split_whitespace()
            .next()?;
        let (pool, server) = token.split_once(':')?;
        Some(Marker {
            pool_id: Uuid::try_parse(pool).ok()?,
            server: ServerId::parse(server)?,
        })
    }
}

impl fmt::Display for Marker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{}:{}",
            Self::PREFIX,
            self.pool_id.hyphenated(),
            self.server
        )
    }
}

/// Who "we" are: this worker's work pool on this Prefect server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Installation {
    pub pool_name: String,
    /// Known once the pool has been read (dispatch, reconciliation); the webhook goes by name.
    pub pool_id: Option<Uuid>,
    pub server: ServerId,
}

impl Installation {
    /// Our marker, once the pool's id is known.
    pub fn marker(&self) -> Option<Marker> {
        self.pool_id.map(|pool_id| Marker {
            pool_id,
            server: self.server,
        })
    }
}

/// A job as the caller saw it: in a notification, a listing, or a flow run's pid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JobSeen<'a> {
    /// The project it was seen in, when the sighting names one.
    pub project: Option<&'a str>,
    pub job: &'a str,
    /// The marker its description carries; `None` when it has none or was not read.
    pub marker: Option<Marker>,
}

/// Why something is not ours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotOurs {
    /// The job carries another installation's marker.
    MarkedByAnother,
    /// Prefect has no such flow run, and the job carries no marker of ours.
    UnknownFlowRun,
    /// The flow run belongs to another work pool (or to none).
    OtherPool,
    /// The flow run records infrastructure that is not this job of ours: another worker's
    /// pid, or a pid naming another project or job.
    OtherInfrastructure,
}

impl NotOurs {
    pub fn reason(self) -> &'static str {
        match self {
            NotOurs::MarkedByAnother => "the job is marked by another installation",
            NotOurs::UnknownFlowRun => {
                "no flow run of this Prefect server has this id, and the job carries no marker of ours"
            }
            NotOurs::OtherPool => "the flow run belongs to another work pool",
            NotOurs::OtherInfrastructure => {
                "the flow run records infrastructure other than this job"
            }
        }
    }
}

impl fmt::Display for NotOurs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

/// The rule. `run`: the flow run the job's name points at, as Prefect reports it (`None`: it
/// does not exist). `job`: the job as seen, when the question starts from a job.
pub fn judge(
    us: &Installation,
    run: Option<&FlowRun>,
    job: Option<JobSeen>,
) -> Result<(), NotOurs> {
    let marked_ours = match job.and_then(|j| j.marker) {
        Some(marker) if Some(marker) != us.marker() => return Err(NotOurs::MarkedByAnother),
        Some(_) => true,
        None => false,
    };
    let Some(run) = run else {
        // An orphan: its flow run was deleted. Only our marker proves the job is ours.
        return if marked_ours {
            Ok(())
        } else {
            Err(NotOurs::UnknownFlowRun)
        };
    };
    if !in_our_pool(us, run) {
        return Err(NotOurs::OtherPool);
    }
    let ours = JobName::for_flow_run(run.id).to_string();
    if job.is_some_and(|j| j.job != ours) {
        return Err(NotOurs::OtherInfrastructure);
    }
    let Some(pid) = run.infrastructure_pid.as_deref().filter(|p| !p.is_empty()) else {
        return Ok(());
    };
    let Ok(pid) = pid.parse::<InfrastructurePid>() else {
        return Err(NotOurs::OtherInfrastructure);
    };
    let same_project = job.and_then(|j| j.project).is_none_or(|p| p == pid.project);
    if pid.job != ours || !same_project {
        return Err(NotOurs::OtherInfrastructure);
    }
    Ok(())
}

/// By id when both sides know it, else by name, as Prefect reports them.
fn in_our_pool(us: &Installation, run: &FlowRun) -> bool {
    match (us.pool_id, run.work_pool_id) {
        (Some(ours), Some(theirs)) => ours == theirs,
        _ => run.work_pool_name.as_deref() == Some(us.pool_name.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const RUN: &str = "0b9f6a2e-1c3d-4e5f-8a9b-0c1d2e3f4a5b";
    const JOB: &str = "pf-0b9f6a2e-1c3d-4e5f-8a9b-0c1d2e3f4a5b";

    fn pool() -> Uuid {
        Uuid::from_u128(1)
    }

    fn us() -> Installation {
        Installation {
            pool_name: "nf".into(),
            pool_id: Some(pool()),
            server: ServerId::of_api_url("https://prefect.example/api"),
        }
    }

    fn run(pool_id: Option<Uuid>, pool_name: Option<&str>, pid: Option<&str>) -> FlowRun {
        serde_json::from_value(json!({"id": RUN, "flow_id": Uuid::nil(),
            "work_pool_id": pool_id, "work_pool_name": pool_name, "infrastructure_pid": pid}))
        .unwrap()
    }

    fn seen(
        project: Option<&'static str>,
        job: &'static str,
        marker: Option<Marker>,
    ) -> JobSeen<'static> {
        JobSeen {
            project,
            job,
            marker,
        }
    }

    #[test]
    fn the_rule() {
        let ours = us().marker();
        let theirs = Some(Marker {
            pool_id: Uuid::from_u128(2),
            server: us().server,
        });
        let other_server = Some(Marker {
            pool_id: pool(),
            server: ServerId::of_api_url("https://staging.example/api"),
        });
        let plain = run(Some(pool()), Some("nf"), None);
        let recorded = run(Some(pool()), Some("nf"), Some(&format!("p:{JOB}:r")));
        let by_name = run(None, Some("nf"), Some(&format!("p:{JOB}:r:keep")));
        let other_pool = run(Some(Uuid::from_u128(2)), Some("nf-staging"), None);
        let same_name_other_id = run(Some(Uuid::from_u128(3)), Some("nf"), None);
        let no_pool = run(None, None, None);
        let python_worker = run(Some(pool()), Some("nf"), Some("p:pf-my-flow-0b9f6a2e:r"));
        let other_job = run(
            Some(pool()),
            Some("nf"),
            Some("p:pf-11111111-1c3d-4e5f-8a9b-0c1d2e3f4a5b:r"),
        );
        let unparseable = run(Some(pool()), Some("nf"), Some("12345"));
        use NotOurs::*;
        type Case<'a> = (
            &'a str,
            Option<&'a FlowRun>,
            Option<JobSeen<'a>>,
            Result<(), NotOurs>,
        );
        let cases: Vec<Case> = vec![
            ("our run, from Prefect", Some(&plain), None, Ok(())),
            ("our run with our pid", Some(&recorded), None, Ok(())),
            (
                "pool by name when the id is unknown",
                Some(&by_name),
                None,
                Ok(()),
            ),
            ("another pool", Some(&other_pool), None, Err(OtherPool)),
            (
                "same name, another pool id",
                Some(&same_name_other_id),
                None,
                Err(OtherPool),
            ),
            ("no pool at all", Some(&no_pool), None, Err(OtherPool)),
            (
                "the Python worker's pid",
                Some(&python_worker),
                None,
                Err(OtherInfrastructure),
            ),
            (
                "a pid naming another job",
                Some(&other_job),
                None,
                Err(OtherInfrastructure),
            ),
            (
                "a pid of another shape",
                Some(&unparseable),
                None,
                Err(OtherInfrastructure),
            ),
            (
                "notified in the pid's project",
                Some(&recorded),
                Some(seen(Some("p"), JOB, None)),
                Ok(()),
            ),
            (
                "notified without a project",
                Some(&recorded),
                Some(seen(None, JOB, None)),
                Ok(()),
            ),
            (
                "notified in another project",
                Some(&recorded),
                Some(seen(Some("q"), JOB, None)),
                Err(OtherInfrastructure),
            ),
            (
                "unrecorded run, any project",
                Some(&plain),
                Some(seen(Some("q"), JOB, None)),
                Ok(()),
            ),
            (
                "another pool's run, even named right",
                Some(&other_pool),
                Some(seen(Some("p"), JOB, None)),
                Err(OtherPool),
            ),
            (
                "an orphan job with our marker",
                None,
                Some(seen(Some("p"), JOB, ours)),
                Ok(()),
            ),
            (
                "an orphan job without a marker",
                None,
                Some(seen(Some("p"), JOB, None)),
                Err(UnknownFlowRun),
            ),
            ("an unknown flow run", None, None, Err(UnknownFlowRun)),
            (
                "another pool's marker",
                Some(&plain),
                Some(seen(Some("p"), JOB, theirs)),
                Err(MarkedByAnother),
            ),
            (
                "another server's marker",
                None,
                Some(seen(Some("p"), JOB, other_server)),
                Err(MarkedByAnother),
            ),
            (
                "our marker, our run",
                Some(&recorded),
                Some(seen(Some("p"), JOB, ours)),
                Ok(()),
            ),
            (
                "our marker, but the run moved pool",
                Some(&other_pool),
                Some(seen(Some("p"), JOB, ours)),
                Err(OtherPool),
            ),
        ];
        for (what, r, j, want) in cases {
            assert_eq!(judge(&us(), r, j), want, "{what}");
        }
    }

    #[test]
    fn without_a_pool_id_a_marker_is_never_ours() {
        let webhook = Installation {
            pool_id: None,
            ..us()
        };
        assert_eq!(
            judge(&webhook, None, Some(seen(Some("p"), JOB, us().marker()))),
            Err(NotOurs::MarkedByAnother)
        );
    }

    #[test]
    fn markers_round_trip_through_a_description() {
        let marker = us().marker().unwrap();
        let text = marker.to_string();
        assert_eq!(text.len(), Marker::LEN);
        assert!(text.starts_with("prefect-nf:00000000-0000-0000-0000-000000000001:"));
        assert!(crate::render::rules::description(&text).as_deref() == Some(text.as_str()));
        assert_eq!(
            Marker::find(&format!("Prefect flow run 'x' {text}")),
            Some(marker)
        );
        // Only the last marker counts: a description may quote another one.
        let other = Marker {
            pool_id: Uuid::from_u128(9),
            ..marker
        };
        assert_eq!(
            Marker::find(&format!("{other} then {marker}")),
            Some(marker)
        );
        for bad in [
            "",
            "prefect-nf:",
            "prefect-nf:not-a-uuid:0011223344556677",
            "prefect-nf:00000000-0000-0000-0000-000000000001:00112233",
            "prefect-nf:00000000-0000-0000-0000-000000000001:zz11223344556677",
        ] {
            assert_eq!(Marker::find(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_server_id_is_stable_and_ignores_spelling() {
        let a = ServerId::of_api_url("https://api.prefect.cloud/api/accounts/a/workspaces/w");
        assert_eq!(
            a,
            ServerId::of_api_url("HTTPS://API.prefect.cloud/api/accounts/a/workspaces/w/")
        );
        assert_ne!(
            a,
            ServerId::of_api_url("https://api.prefect.cloud/api/accounts/a/workspaces/x")
        );
        // Fixed forever: markers written by one release are read by the next (the first 8
        // bytes of Python's `uuid.uuid5(uuid.NAMESPACE_URL, url)`, the same algorithm).
        assert_eq!(
            ServerId::of_api_url("http://127.0.0.1:4200/api/").to_string(),
            "3f19845de4a351e0"
        );
        assert_eq!(ServerId::parse(&a.to_string()), Some(a));
    }
}

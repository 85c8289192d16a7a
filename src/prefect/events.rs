//! Worker events, in the shape the 3.9 Python worker emits (prefect-worker-protocol.md §11):
//! `prefect.worker.submitted-flow-run` when a flow run's Northflank run has started, and
//! `prefect.worker.executed-flow-run` when it has concluded. They feed the Event Feed, the
//! worker's activity and automations; orchestration does not depend on them.
//!
//! Ids are derived from the flow run and its Northflank run instead of drawn at random: a
//! repeated notification repeats the same event, which the server stores once, and the executed
//! event names the submitted one in `follows` without anyone remembering it.

use chrono::Utc;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::ids::FlowRunId;
use crate::prefect::models::FlowRun;

/// Namespace of the derived event ids (a fixed random UUID).
const EVENT_NAMESPACE: Uuid = Uuid::from_u128(0x6f1c_3b2e_8d4a_4f7e_9c21_5a0b_7e3d_2c19);

/// The resources an event about one flow run relates to.
#[derive(Clone, Debug)]
pub struct Related {
    pub flow_run: (FlowRunId, String),
    pub flow: (Uuid, Option<String>),
    pub deployment: Option<(Uuid, Option<String>)>,
    /// Deployment, flow and flow-run tags together.
    pub tags: Vec<String>,
    pub work_pool: (Option<Uuid>, String),
}

impl Related {
    /// What the flow run itself names, without reading its flow or deployment: the webhook
    /// answers Northflank and should not spend Prefect requests on names.
    pub fn of_flow_run(run: &FlowRun) -> Self {
        Related {
            flow_run: (run.id, run.name.clone()),
            flow: (run.flow_id, None),
            deployment: run.deployment_id.map(|id| (id, None)),
            tags: run.tags.clone(),
            work_pool: (
                run.work_pool_id,
                run.work_pool_name.clone().unwrap_or_default(),
            ),
        }
    }
}

/// The Northflank run an event is about, and so its identity.
fn event_id(kind: &str, flow_run: FlowRunId, run: &str) -> Uuid {
    Uuid::new_v5(
        &EVENT_NAMESPACE,
        format!("{kind}:{flow_run}:{run}").as_bytes(),
    )
}

pub fn submitted(worker_name: &str, related: &Related, nf_run: &str) -> Value {
    event(
        "prefect.worker.submitted-flow-run",
        event_id("submitted", related.flow_run.0, nf_run),
        None,
        worker_name,
        related,
        json!({}),
    )
}

/// `status_code`: 0 when the container succeeded, 1 when it failed (Northflank reports no exit
/// code).
pub fn executed(
    worker_name: &str,
    related: &Related,
    nf_run: &str,
    pid: &str,
    status_code: i32,
) -> Value {
    let mut e = event(
        "prefect.worker.executed-flow-run",
        event_id("executed", related.flow_run.0, nf_run),
        Some(event_id("submitted", related.flow_run.0, nf_run)),
        worker_name,
        related,
        json!({}),
    );
    for r in e["related"].as_array_mut().into_iter().flatten() {
        if r["prefect.resource.role"] == "flow-run" {
            r["prefect.infrastructure.identifier"] = json!(pid);
            r["prefect.infrastructure.status-code"] = json!(status_code.to_string());
        }
    }
    e
}

fn event(
    name: &str,
    id: Uuid,
    follows: Option<Uuid>,
    worker_name: &str,
    related: &Related,
    payload: Value,
) -> Value {
    json!({
        "occurred": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "event": name,
        "resource": {
            "prefect.resource.id": format!("prefect.worker.{}.{}", crate::WORKER_TYPE, slugify(worker_name)),
            "prefect.resource.name": worker_name,
            "prefect.worker-type": crate::WORKER_TYPE,
            "prefect-nf.version": env!("CARGO_PKG_VERSION"),
        },
        "related": related_resources(related),
        "payload": payload,
        "id": id,
        "follows": follows,
    })
}

fn resource(kind: &str, id: impl std::fmt::Display, role: &str, name: Option<&str>) -> Value {
    let mut r = json!({
        "prefect.resource.id": format!("prefect.{kind}.{id}"),
        "prefect.resource.role": role,
    });
    if let Some(name) = name {
        r["prefect.resource.name"] = json!(name);
    }
    r
}

/// Deployment, flow, flow run, tags (sorted, deduplicated) and work pool, in the Python
/// worker's order.
fn related_resources(r: &Related) -> Value {
    let mut out = Vec::new();
    if let Some((id, name)) = &r.deployment {
        out.push(resource("deployment", id, "deployment", name.as_deref()));
    }
    out.push(resource("flow", r.flow.0, "flow", r.flow.1.as_deref()));
    out.push(resource(
        "flow-run",
        r.flow_run.0,
        "flow-run",
        Some(&r.flow_run.1),
    ));
    let mut tags = r.tags.clone();
    tags.sort();
    tags.dedup();
    for tag in &tags {
        out.push(resource("tag", tag, "tag", None));
    }
    if let (Some(id), name) = &r.work_pool {
        out.push(resource("work-pool", id, "work-pool", Some(name)));
    }
    Value::Array(out)
}

/// Python's `slugify` for the names this worker allows: lower case, runs of anything but
/// letters and digits become one `-`, none at either end.
fn slugify(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    out.trim_end_matches('-').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn related() -> Related {
        Related {
            flow_run: (
                "0b9f6a2e-1c3d-4e5f-8a9b-0c1d2e3f4a5b".parse().unwrap(),
                "run-1".into(),
            ),
            flow: (Uuid::from_u128(1), Some("etl".into())),
            deployment: Some((Uuid::from_u128(2), Some("etl-nf".into()))),
            tags: vec!["team-a".into(), "nightly".into(), "team-a".into()],
            work_pool: (Some(Uuid::from_u128(3)), "nf-pool".into()),
        }
    }

    #[test]
    fn submitted_has_the_python_workers_shape() {
        let e = submitted("Prefect NF_worker", &related(), "r1");
        assert_eq!(e["event"], "prefect.worker.submitted-flow-run");
        assert_eq!(
            e["resource"]["prefect.resource.id"],
            "prefect.worker.northflank.prefect-nf-worker"
        );
        let roles: Vec<&str> = e["related"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["prefect.resource.role"].as_str().unwrap())
            .collect();
        assert_eq!(
            roles,
            ["deployment", "flow", "flow-run", "tag", "tag", "work-pool"]
        );
        assert_eq!(
            e["related"][3]["prefect.resource.id"],
            "prefect.tag.nightly"
        );
        assert_eq!(e["follows"], Value::Null);
    }

    #[test]
    fn executed_follows_submitted_and_ids_repeat() {
        let r = related();
        let s = submitted("w", &r, "r1");
        let x = executed("w", &r, "r1", "p:pf-x:r1", 1);
        assert_eq!(x["follows"], s["id"]);
        assert_eq!(x["id"], executed("w", &r, "r1", "p:pf-x:r1", 1)["id"]);
        assert_ne!(x["id"], executed("w", &r, "r2", "p:pf-x:r2", 1)["id"]);
        let run = &x["related"][2];
        assert_eq!(run["prefect.infrastructure.identifier"], "p:pf-x:r1");
        assert_eq!(run["prefect.infrastructure.status-code"], "1");
    }
}

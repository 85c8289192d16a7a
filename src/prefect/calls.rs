//! The calls a worker makes, exactly as `prefect-worker-protocol.md` describes them.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::Method;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::PrefectClient;
use super::client::{Result, decode};
use super::logs::LogEntry;
use super::models::{
    Deployment, Flow, FlowRun, OrchestrationResult, State, WorkPool, Worker, WorkerFlowRun,
};
use super::states::Proposal;
use crate::ids::FlowRunId;

impl PrefectClient {
    pub async fn read_work_pool(&self, pool: &str) -> Result<Option<WorkPool>> {
        self.optional(&["work_pools", pool]).await
    }

    pub async fn create_work_pool(&self, body: &Value) -> Result<WorkPool> {
        self.json(Method::POST, &["work_pools", ""], Some(body))
            .await
    }

    pub async fn update_work_pool(&self, pool: &str, body: &Value) -> Result<()> {
        self.send(Method::PATCH, &["work_pools", pool], Some(body))
            .await
            .map(drop)
    }

    /// Marks the worker ONLINE (for three intervals) and the pool READY. The interval must be the
    /// real one, or the UI shows the worker flapping.
    pub async fn heartbeat(&self, pool: &str, interval: Duration) -> Result<()> {
        let body = json!({"name": self.worker_name(), "heartbeat_interval_seconds": interval.as_secs().max(1)});
        self.send(
            Method::POST,
            &["work_pools", pool, "workers", "heartbeat"],
            Some(&body),
        )
        .await
        .map(drop)
    }

    pub async fn workers(&self, pool: &str) -> Result<Vec<Worker>> {
        self.json(
            Method::POST,
            &["work_pools", pool, "workers", "filter"],
            Some(&json!({})),
        )
        .await
    }

    /// Polling also marks the polled queues and their deployments READY for 60 s.
    pub async fn scheduled_flow_runs(
        &self,
        pool: &str,
        queues: &[String],
        scheduled_before: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<WorkerFlowRun>> {
        let body = json!({"work_queue_names": queues, "scheduled_before": scheduled_before.to_rfc3339(), "limit": limit});
        self.json(
            Method::POST,
            &["work_pools", pool, "get_scheduled_flow_runs"],
            Some(&body),
        )
        .await
    }

    pub async fn read_deployment(&self, id: Uuid) -> Result<Option<Deployment>> {
        self.optional(&["deployments", &id.to_string()]).await
    }

    /// A deployment by `<flow name>/<deployment name>`, as the Prefect CLI names them.
    pub async fn read_deployment_by_name(
        &self,
        flow: &str,
        deployment: &str,
    ) -> Result<Option<Deployment>> {
        self.optional(&["deployments", "name", flow, deployment])
            .await
    }

    /// Every deployment of the work pool (`POST /deployments/filter`, a page at a time).
    pub async fn deployments_of_pool(&self, pool: &str) -> Result<Vec<Deployment>> {
        const PAGE: usize = 200;
        let mut all = Vec::new();
        loop {
            let body = json!({"work_pools": {"name": {"any_": [pool]}}, "sort": "NAME_ASC", "limit": PAGE, "offset": all.len()});
            let page: Vec<Deployment> = self
                .json(Method::POST, &["deployments", "filter"], Some(&body))
                .await?;
            let last = page.len() < PAGE;
            all.extend(page);
            if last {
                return Ok(all);
            }
        }
    }

    pub async fn read_flow(&self, id: Uuid) -> Result<Flow> {
        self.json(Method::GET, &["flows", &id.to_string()], None)
            .await
    }

    pub async fn read_flow_run(&self, id: FlowRunId) -> Result<Option<FlowRun>> {
        self.optional(&["flow_runs", &id.to_string()]).await
    }

    pub async fn filter_flow_runs(&self, body: &Value) -> Result<Vec<FlowRun>> {
        self.json(Method::POST, &["flow_runs", "filter"], Some(body))
            .await
    }

    /// Every state the flow run has had, oldest first.
    pub async fn flow_run_states(&self, id: FlowRunId) -> Result<Vec<State>> {
        let mut url = self.url(&["flow_run_states", ""]);
        url.query_pairs_mut()
            .append_pair("flow_run_id", &id.to_string());
        let (_, bytes) = self.send_url(Method::GET, url, None).await?;
        let mut states: Vec<State> = decode(&Method::GET, "/flow_run_states/", &bytes)?;
        states.sort_by_key(|s| s.timestamp);
        Ok(states)
    }

    pub async fn set_state(
        &self,
        id: FlowRunId,
        proposal: &Proposal,
    ) -> Result<OrchestrationResult> {
        self.json(
            Method::POST,
            &["flow_runs", &id.to_string(), "set_state"],
            Some(&proposal.body),
        )
        .await
    }

    pub async fn set_infrastructure_pid(&self, id: FlowRunId, pid: &str) -> Result<()> {
        let body = json!({"infrastructure_pid": pid});
        self.send(Method::PATCH, &["flow_runs", &id.to_string()], Some(&body))
            .await
            .map(drop)
    }

    /// Merges `labels` into the flow run's labels.
    pub async fn update_labels(&self, id: FlowRunId, labels: &Map<String, Value>) -> Result<()> {
        let body = Value::Object(labels.clone());
        self.send(
            Method::PATCH,
            &["flow_runs", &id.to_string(), "labels"],
            Some(&body),
        )
        .await
        .map(drop)
    }

    /// `POST /events` (prefect-worker-protocol.md §11): the HTTP alternative to the events
    /// WebSocket, answered 204.
    pub async fn emit_events(&self, events: &[Value]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let body = Value::Array(events.to_vec());
        self.send(Method::POST, &["events"], Some(&body))
            .await
            .map(drop)
    }

    pub async fn send_logs(&self, entries: &[LogEntry]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let body = serde_json::to_value(entries).unwrap_or(Value::Null);
        self.send(Method::POST, &["logs", ""], Some(&body))
            .await
            .map(drop)
    }
}

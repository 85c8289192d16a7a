//! Instant dispatch: a Prefect automation calls the webhook function when a flow run of the
//! pool enters Scheduled, and a quick dispatch (one poll, no reconciliation) submits it at once
//! instead of at the next scheduled tick. Optional: without a dispatch token the endpoint
//! answers 404 and nothing changes.
//!
//! The automation's `call-webhook` action posts through a `webhook` block document that holds
//! the URL and the token header; Prefect stores both as secrets. Every Scheduled event calls
//! the endpoint, including runs scheduled for later by a deployment's schedule: those polls find
//! nothing due and cost no Northflank request. However many calls arrive, one quick dispatch
//! runs at a time (see [`Gate`]).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;
use tracing::Instrument;

use crate::dispatch::{self, DispatchError, Summary};
use crate::prefect::{PrefectClient, PrefectError};
use crate::routes::{DISPATCH_TOKEN_HEADER, INSTANT_PATH, WEBHOOK_PATH};
use crate::worker::Worker;

/// The most a quick dispatch takes: a poll, and submissions, which dispatch only starts with
/// `SUBMIT_RESERVE` left.
pub const BUDGET: Duration = Duration::from_secs(25);
/// Prefect's block type for outgoing webhooks, registered by every server.
const BLOCK_TYPE: &str = "webhook";

/// At most one instant dispatch at a time, and at most one more pending: however many calls
/// arrive together, a busy Prefect server is asked by one dispatch (the finding was 85 at once
/// for 200 calls). A call before the running dispatch polls is folded into that poll (its run
/// existed before the call); a call after it asks for one more dispatch, which starts when
/// the running one ends. No task is started per call.
#[derive(Debug, Default)]
pub struct Gate {
    phase: Mutex<Phase>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Phase {
    #[default]
    Idle,
    /// A dispatch runs and has not polled yet.
    BeforePoll,
    /// A dispatch runs and has polled.
    Polled,
    /// A dispatch runs and has polled, and a call came since: one more dispatch follows.
    Again,
}

impl Gate {
    /// A call arrived. `true`: nothing runs, so the caller starts [`dispatch_loop`].
    pub fn call(&self) -> bool {
        let mut phase = self.lock();
        let (next, start) = match *phase {
            Phase::Idle => (Phase::BeforePoll, true),
            Phase::BeforePoll => (Phase::BeforePoll, false),
            Phase::Polled | Phase::Again => (Phase::Again, false),
        };
        *phase = next;
        start
    }

    /// The running dispatch is about to poll: later calls need a poll of their own.
    pub fn polling(&self) {
        let mut phase = self.lock();
        if *phase == Phase::BeforePoll {
            *phase = Phase::Polled;
        }
    }

    /// The running dispatch has ended. `true`: a call came after its poll, dispatch again.
    pub fn finished(&self) -> bool {
        let mut phase = self.lock();
        let again = *phase == Phase::Again;
        *phase = if again {
            Phase::BeforePoll
        } else {
            Phase::Idle
        };
        again
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Quick dispatches, one after another, while calls keep asking for one (the local worker,
/// started by the call that found the gate idle).
pub async fn dispatch_loop(worker: Arc<Worker>) {
    loop {
        let w = worker.clone();
        let one = tokio::spawn(
            async move { dispatch_once(&w, Instant::now() + BUDGET).await }
                .instrument(tracing::Span::current()),
        );
        // A panicking dispatch must not leave the gate closed for good.
        if let Err(e) = one.await {
            tracing::error!(error = %e, "an instant dispatch ended abnormally");
        }
        if !worker.instant.finished() {
            return;
        }
    }
}

/// One quick dispatch: heartbeat and one poll, no reconciliation (the scheduled invocations
/// keep doing it).
pub async fn dispatch_once(worker: &Worker, deadline: Instant) -> Result<Summary, DispatchError> {
    let polled = dispatch::invoke_instant(worker, deadline, &|| worker.instant.polling()).await;
    if let Err(e) = &polled {
        tracing::error!(error = %e, "instant dispatch failed");
    }
    polled
}

/// What `enable` wrote.
#[derive(Debug, PartialEq)]
pub struct Enabled {
    pub automation_id: String,
    pub block_document: String,
    pub created: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum InstantError {
    #[error(transparent)]
    Prefect(#[from] PrefectError),
    #[error("work pool '{0}' does not exist; create it first (prefect-nf work-pool create)")]
    NoPool(String),
    #[error("--url {url:?} is invalid: {rule}")]
    Url { url: String, rule: &'static str },
    #[error("the Prefect server has no `webhook` block type with a url and headers")]
    NoWebhookBlock,
}

/// The block document's name: lower-case letters, digits and dashes, as Prefect requires.
pub fn block_name(pool: &str) -> String {
    let slug: String = pool
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    format!("prefect-nf-dispatch-{}", slug.trim_matches('-'))
}

pub fn automation_name(pool: &str) -> String {
    format!("prefect-nf instant dispatch: {pool}")
}

/// The endpoint under the webhook's base URL (the stack's WebhookUrl output).
pub fn endpoint(url: &str) -> Result<String, InstantError> {
    let invalid = |rule| InstantError::Url {
        url: url.to_string(),
        rule,
    };
    let parsed = reqwest::Url::parse(url).map_err(|_| invalid("must be an absolute URL"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid(
            "must start with https:// (or http:// for a local worker)",
        ));
    }
    if parsed.query().is_some() {
        return Err(invalid("must not have a query string"));
    }
    let base = url.trim_end_matches('/');
    Ok(match base.strip_suffix(WEBHOOK_PATH) {
        Some(root) => format!("{root}{INSTANT_PATH}"),
        None => format!("{base}{INSTANT_PATH}"),
    })
}

/// The webhook block's data: where to post and the token header.
pub fn block_data(endpoint: &str, token: &str) -> Value {
    json!({
        "method": "POST",
        "url": endpoint,
        "headers": {DISPATCH_TOKEN_HEADER: token, "content-type": "application/json"},
    })
}

/// A reactive trigger on flow runs entering Scheduled in the pool, calling the block.
pub fn automation(pool_name: &str, pool_id: &str, block_document_id: &str) -> Value {
    json!({
        "name": automation_name(pool_name),
        "description": "Created by prefect-nf: submits a flow run as soon as it is scheduled, instead of at the next dispatch tick.",
        "enabled": true,
        "trigger": {
            "type": "event",
            "posture": "Reactive",
            "expect": ["prefect.flow-run.Scheduled"],
            "match": {"prefect.resource.id": "prefect.flow-run.*"},
            "match_related": {
                "prefect.resource.role": "work-pool",
                "prefect.resource.id": format!("prefect.work-pool.{pool_id}"),
            },
            "threshold": 1,
            "within": 0,
        },
        "actions": [{
            "type": "call-webhook",
            "block_document_id": block_document_id,
            "payload": json!({"work_pool": pool_name, "flow_run": "{{ event.resource.id }}"}).to_string(),
        }],
    })
}

/// Creates or updates (found by name) the webhook block and the automation.
pub async fn enable(
    prefect: &PrefectClient,
    pool: &str,
    url: &str,
    token: &str,
) -> Result<Enabled, InstantError> {
    let endpoint = endpoint(url)?;
    let pool_id = prefect
        .read_work_pool(pool)
        .await?
        .ok_or_else(|| InstantError::NoPool(pool.to_string()))?
        .id
        .to_string();
    let name = block_name(pool);
    let data = block_data(&endpoint, token);
    let block_id = match prefect.read_block_document(BLOCK_TYPE, &name).await? {
        Some(doc) => {
            let id = doc["id"].as_str().unwrap_or_default().to_string();
            prefect
                .update_block_document(&id, &json!({"data": data, "merge_existing_data": false}))
                .await?;
            id
        }
        None => {
            let block_type = prefect
                .read_block_type(BLOCK_TYPE)
                .await?
                .ok_or(InstantError::NoWebhookBlock)?;
            let type_id = block_type["id"].as_str().unwrap_or_default();
            let schema = prefect
                .block_schemas(type_id)
                .await?
                .into_iter()
                .find(|s| {
                    let fields = &s["fields"]["properties"];
                    fields["url"].is_object() && fields["headers"].is_object()
                })
                .ok_or(InstantError::NoWebhookBlock)?;
            let doc = prefect
                .create_block_document(&json!({
                    "name": name,
                    "block_type_id": type_id,
                    "block_schema_id": schema["id"],
                    "data": data,
                }))
                .await?;
            doc["id"].as_str().unwrap_or_default().to_string()
        }
    };
    let body = automation(pool, &pool_id, &block_id);
    let (automation_id, created) = match prefect.find_automation(&automation_name(pool)).await? {
        Some(existing) => {
            let id = existing["id"].as_str().unwrap_or_default().to_string();
            prefect.replace_automation(&id, &body).await?;
            (id, false)
        }
        None => {
            let made = prefect.create_automation(&body).await?;
            (made["id"].as_str().unwrap_or_default().to_string(), true)
        }
    };
    Ok(Enabled {
        automation_id,
        block_document: name,
        created,
    })
}

/// Deletes the automation and its webhook block; returns whether anything was there.
pub async fn disable(prefect: &PrefectClient, pool: &str) -> Result<bool, InstantError> {
    let mut removed = false;
    if let Some(a) = prefect.find_automation(&automation_name(pool)).await? {
        prefect
            .delete_automation(a["id"].as_str().unwrap_or_default())
            .await?;
        removed = true;
    }
    if let Some(doc) = prefect
        .read_block_document(BLOCK_TYPE, &block_name(pool))
        .await?
    {
        prefect
            .delete_block_document(doc["id"].as_str().unwrap_or_default())
            .await?;
        removed = true;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_dispatch_at_a_time_and_one_more_pending() {
        let gate = Gate::default();
        assert!(gate.call(), "the first call starts the loop");
        assert!(!gate.call(), "folded into the coming poll");
        assert!(!gate.finished(), "no call after the poll: the loop ends");

        assert!(gate.call());
        gate.polling();
        // The poll is on its way and may miss these calls' runs: one more dispatch, not two.
        assert!(!gate.call());
        assert!(!gate.call());
        assert!(gate.finished(), "one more dispatch follows");
        assert!(!gate.call(), "folded into the dispatch that follows");
        gate.polling();
        assert!(!gate.finished());
        assert!(gate.call(), "idle again: a call starts the loop");
    }

    #[test]
    fn the_endpoint_sits_beside_the_northflank_webhook() {
        let cases = [
            (
                "https://abc.lambda-url.eu-west-1.on.aws/",
                "https://abc.lambda-url.eu-west-1.on.aws/prefect/dispatch",
            ),
            (
                "http://127.0.0.1:8080/northflank/webhook",
                "http://127.0.0.1:8080/prefect/dispatch",
            ),
            (
                "http://10.0.0.5:8080",
                "http://10.0.0.5:8080/prefect/dispatch",
            ),
        ];
        for (url, want) in cases {
            assert_eq!(endpoint(url).unwrap(), want, "{url}");
        }
        for bad in ["ftp://x/", "not a url", "https://x/?a=1"] {
            let e = endpoint(bad).unwrap_err().to_string();
            assert!(e.contains("--url") && e.contains(bad), "{e}");
        }
    }

    #[test]
    fn block_names_follow_prefects_rule() {
        assert_eq!(block_name("NF Pool_1"), "prefect-nf-dispatch-nf-pool-1");
        let name = block_name("--Ünïcode--");
        assert!(
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "{name}"
        );
    }

    #[test]
    fn the_trigger_is_scoped_to_the_pool() {
        let a = automation("nf-pool", "1234", "b-1");
        assert_eq!(a["trigger"]["expect"][0], "prefect.flow-run.Scheduled");
        assert_eq!(
            a["trigger"]["match_related"]["prefect.resource.id"],
            "prefect.work-pool.1234"
        );
        assert_eq!(a["actions"][0]["block_document_id"], "b-1");
    }
}

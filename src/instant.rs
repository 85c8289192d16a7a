//! Instant dispatch: a Prefect automation calls the webhook function when a flow run of the
//! pool enters Scheduled, and a quick dispatch (one poll, no reconciliation) submits it at once
//! instead of at the next scheduled tick. Optional: without a dispatch token the endpoint
//! answers 404 and nothing changes.
//!
//! The automation's `call-webhook` action posts through a `webhook` block document that holds
//! the URL and the token header; Prefect stores both as secrets. Every Scheduled event calls
//! the endpoint, including runs scheduled for later by a deployment's schedule: those polls find
//! nothing due and cost no Northflank request. Calls arriving before a quick dispatch has
//! polled are folded into its poll (see [`Gate`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::dispatch;
use crate::prefect::{PrefectClient, PrefectError};
use crate::webhook::{Response, header_matches};
use crate::worker::Worker;

/// The endpoint's path, beside the Northflank webhook.
pub const PATH: &str = "/prefect/dispatch";
/// The header carrying the dispatch token (separate from Northflank's).
pub const TOKEN_HEADER: &str = "x-prefect-nf-dispatch-token";
/// The most a quick dispatch takes: a poll, and submissions, which dispatch only starts with
/// `SUBMIT_RESERVE` left.
pub const BUDGET: Duration = Duration::from_secs(25);
/// Prefect's block type for outgoing webhooks, registered by every server.
const BLOCK_TYPE: &str = "webhook";

/// Folds calls into a quick dispatch that has not polled yet: its poll will find their runs,
/// which existed before the calls were made. A call that comes once the poll has been sent
/// starts its own dispatch, without waiting for the previous one's submissions, heartbeat and
/// log writes (on a busy server those take seconds).
#[derive(Debug, Default)]
pub struct Gate {
    waiting: AtomicBool,
}

impl Gate {
    /// `None`: a dispatch is about to poll and the call is folded into it.
    pub fn enter(&self) -> Option<Polling<'_>> {
        (!self.waiting.swap(true, Ordering::SeqCst)).then_some(Polling {
            gate: self,
            done: AtomicBool::new(false),
        })
    }
}

/// A dispatch admitted by the gate. Calls are folded into it until [`Polling::polled`], which
/// dropping it implies (a dispatch that fails before its poll must not hold later calls).
#[derive(Debug)]
pub struct Polling<'a> {
    gate: &'a Gate,
    done: AtomicBool,
}

impl Polling<'_> {
    /// The poll is about to be sent: later calls need a poll of their own.
    pub fn polled(&self) {
        if !self.done.swap(true, Ordering::SeqCst) {
            self.gate.waiting.store(false, Ordering::SeqCst);
        }
    }
}

impl Drop for Polling<'_> {
    fn drop(&mut self) {
        self.polled();
    }
}

/// Answers the automation's call: checks the token, then dispatches once (or folds the call
/// into a quick dispatch that has not polled yet). The Lambda's way: it cannot work after
/// answering.
pub async fn handle(worker: &Worker, headers: &HeaderMap, deadline: Instant) -> Response {
    match authorize(worker, headers) {
        Ok(()) => run(worker, deadline).await,
        Err(refused) => refused,
    }
}

/// Whether the call may dispatch: 404 while instant dispatch is off, 401 without the dispatch
/// token.
pub fn authorize(worker: &Worker, headers: &HeaderMap) -> Result<(), Response> {
    let Some(token) = &worker.credentials.dispatch_token else {
        return Err(Response::new(
            404,
            json!({"error": "instant dispatch is not enabled: set PFNF_DISPATCH_TOKEN or the secret's dispatch_token"}),
        ));
    };
    if !header_matches(headers, TOKEN_HEADER, token.expose()) {
        tracing::warn!("instant dispatch refused: missing or wrong dispatch token");
        return Err(Response::new(401, json!({"error": "unauthorized"})));
    }
    Ok(())
}

/// One quick dispatch, or the call folded into one that has not polled yet (202).
pub async fn run(worker: &Worker, deadline: Instant) -> Response {
    let Some(polling) = worker.instant.enter() else {
        return Response::new(202, json!({"coalesced": true}));
    };
    match dispatch::invoke_instant(worker, deadline, &|| polling.polled()).await {
        Ok(summary) => Response::new(200, json!({"summary": summary})),
        Err(e) => {
            tracing::error!(error = %e, "instant dispatch failed");
            Response::new(503, json!({"error": e.to_string()}))
        }
    }
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
    Ok(match base.strip_suffix(crate::local::WEBHOOK_PATH) {
        Some(root) => format!("{root}{PATH}"),
        None => format!("{base}{PATH}"),
    })
}

/// The webhook block's data: where to post and the token header.
pub fn block_data(endpoint: &str, token: &str) -> Value {
    json!({
        "method": "POST",
        "url": endpoint,
        "headers": {TOKEN_HEADER: token, "content-type": "application/json"},
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
    fn calls_fold_into_a_dispatch_only_until_it_polls() {
        let gate = Gate::default();
        let first = gate.enter().expect("the first call dispatches");
        assert!(gate.enter().is_none(), "folded into the coming poll");
        first.polled();
        // The poll is on its way and may miss this call's run: a dispatch of its own.
        let second = gate.enter().expect("a call after the poll dispatches");
        drop(first);
        assert!(
            gate.enter().is_none(),
            "the first ending changes nothing for the second"
        );
        // A dispatch that fails before its poll lets the next call through.
        drop(second);
        assert!(gate.enter().is_some());
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

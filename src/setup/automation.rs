//! Instant dispatch's setup: a `webhook` block holding the endpoint's URL and token, and a
//! Prefect automation calling it when a flow run of the pool is scheduled. Names identify
//! both, so enabling twice updates instead of duplicating.

use serde_json::{Value, json};

use crate::prefect::{PrefectClient, PrefectError};
use crate::routes::{DISPATCH_TOKEN_HEADER, INSTANT_PATH, WEBHOOK_PATH};

/// Prefect's block type for outgoing webhooks, registered by every server.
pub const BLOCK_TYPE: &str = "webhook";

/// What `enable` wrote.
#[derive(Debug, PartialEq)]
pub struct Enabled {
    pub automation_id: String,
    pub block_document: String,
    pub created: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum AutomationError {
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
pub fn endpoint(url: &str) -> Result<String, AutomationError> {
    let invalid = |rule| AutomationError::Url {
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
) -> Result<Enabled, AutomationError> {
    let endpoint = endpoint(url)?;
    let pool_id = prefect
        .read_work_pool(pool)
        .await?
        .ok_or_else(|| AutomationError::NoPool(pool.to_string()))?
        .id;
    let name = block_name(pool);
    let block = write_block(prefect, &name, &block_data(&endpoint, token)).await?;
    let body = automation(pool, &pool_id.to_string(), &block.to_string());
    let (automation_id, created) = match prefect.find_automation(&automation_name(pool)).await? {
        Some(existing) => {
            let id = existing.id.to_string();
            prefect.replace_automation(&id, &body).await?;
            (id, false)
        }
        None => (prefect.create_automation(&body).await?.id.to_string(), true),
    };
    Ok(Enabled {
        automation_id,
        block_document: name,
        created,
    })
}

/// The webhook block document `name` with `data`, updated or created; its id.
async fn write_block(
    prefect: &PrefectClient,
    name: &str,
    data: &Value,
) -> Result<uuid::Uuid, AutomationError> {
    if let Some(doc) = prefect.read_block_document(BLOCK_TYPE, name).await? {
        let update = json!({"data": data, "merge_existing_data": false});
        prefect
            .update_block_document(&doc.id.to_string(), &update)
            .await?;
        return Ok(doc.id);
    }
    let block_type = prefect
        .read_block_type(BLOCK_TYPE)
        .await?
        .ok_or(AutomationError::NoWebhookBlock)?;
    let schema = prefect
        .block_schemas(block_type.id)
        .await?
        .into_iter()
        .find(|s| {
            let fields = &s.fields["properties"];
            fields["url"].is_object() && fields["headers"].is_object()
        })
        .ok_or(AutomationError::NoWebhookBlock)?;
    let doc = prefect
        .create_block_document(&json!({
            "name": name,
            "block_type_id": block_type.id,
            "block_schema_id": schema.id,
            "data": data,
        }))
        .await?;
    Ok(doc.id)
}

/// Deletes the automation and its webhook block; returns whether anything was there.
pub async fn disable(prefect: &PrefectClient, pool: &str) -> Result<bool, AutomationError> {
    let mut removed = false;
    if let Some(a) = prefect.find_automation(&automation_name(pool)).await? {
        prefect.delete_automation(&a.id.to_string()).await?;
        removed = true;
    }
    if let Some(doc) = prefect
        .read_block_document(BLOCK_TYPE, &block_name(pool))
        .await?
    {
        prefect.delete_block_document(&doc.id.to_string()).await?;
        removed = true;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

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

//! Setting up the work pool: type `northflank`, with this worker's base job template, and the
//! `northflank` block type its `credentials` variable refers to.

use serde_json::{Value, json};

use crate::prefect::{PrefectClient, PrefectError};
use crate::render::base_job_template;

/// The block type slug of prefect-northflank's credentials block, kept so that
/// `{{ prefect.blocks.northflank.<name> }}` works unchanged.
pub const BLOCK_TYPE_SLUG: &str = "northflank";

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error(transparent)]
    Prefect(#[from] PrefectError),
    #[error("work pool '{0}' does not exist; create it with `prefect-nf work-pool create`")]
    Missing(String),
    #[error("work pool '{name}' is of type '{kind}', not '{}'", crate::WORKER_TYPE)]
    WrongType { name: String, kind: String },
    #[error("block type '{BLOCK_TYPE_SLUG}' was reported as existing, then could not be read")]
    BlockTypeVanished,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PoolAction {
    Created,
    /// `create` found the pool and left it as it was.
    AlreadyExists,
    Updated,
    /// `update` found the template already current.
    Unchanged,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlockAction {
    Registered,
    AlreadyRegistered,
}

/// The base job template, with a default project when one is given.
pub fn template(project_id: Option<&str>) -> Value {
    let mut template = base_job_template();
    if let Some(project) = project_id {
        template["variables"]["properties"]["project_id"]["default"] = json!(project);
    }
    template
}

/// Registers the `northflank` block type and its schema when the server has neither, so users
/// without the Python package can create credentials blocks in the UI. An existing type or
/// schema (e.g. from prefect-northflank) is left alone.
pub async fn ensure_block_type(prefect: &PrefectClient) -> Result<BlockAction, PoolError> {
    let mut registered = false;
    let block_type = match prefect.read_block_type(BLOCK_TYPE_SLUG).await? {
        Some(t) => t,
        None => {
            registered = true;
            let body = json!({
                "name": "Northflank",
                "slug": BLOCK_TYPE_SLUG,
                "logo_url": null,
                "documentation_url": "https://northflank.com/docs/v1/api/use-the-api",
                "description": "Credentials for the Northflank API, used by Northflank work pools.",
                "code_example": null,
            });
            match prefect.create_block_type(&body).await {
                Ok(t) => t,
                // Another process registered it meanwhile.
                Err(e) if e.status() == Some(409) => prefect
                    .read_block_type(BLOCK_TYPE_SLUG)
                    .await?
                    .ok_or(PoolError::BlockTypeVanished)?,
                Err(e) => return Err(e.into()),
            }
        }
    };
    let id = block_type.id;
    if prefect.block_schemas(id).await?.is_empty() {
        registered = true;
        let fields = base_job_template()["variables"]["definitions"]["Northflank"].clone();
        let body = json!({"block_type_id": id, "fields": fields, "capabilities": [], "version": env!("CARGO_PKG_VERSION")});
        prefect.create_block_schema(&body).await?;
    }
    Ok(if registered {
        BlockAction::Registered
    } else {
        BlockAction::AlreadyRegistered
    })
}

/// Creates the pool (and registers the block type); an existing pool is left as it is.
pub async fn create(
    prefect: &PrefectClient,
    name: &str,
    project_id: Option<&str>,
    description: Option<&str>,
) -> Result<PoolAction, PoolError> {
    ensure_block_type(prefect).await?;
    let body = json!({
        "name": name,
        "type": crate::WORKER_TYPE,
        "description": description,
        "base_job_template": template(project_id),
    });
    match prefect.create_work_pool(&body).await {
        Ok(_) => Ok(PoolAction::Created),
        Err(e) if e.status() == Some(409) => Ok(PoolAction::AlreadyExists),
        Err(e) => Err(e.into()),
    }
}

/// Writes this worker's template to an existing pool. Defaults the pool already has for
/// variables that still exist are kept (a project set in the UI survives an upgrade), unless
/// `project_id` overrides that one. Running it twice changes nothing the second time.
pub async fn update(
    prefect: &PrefectClient,
    name: &str,
    project_id: Option<&str>,
) -> Result<PoolAction, PoolError> {
    ensure_block_type(prefect).await?;
    let pool = prefect
        .read_work_pool(name)
        .await?
        .ok_or_else(|| PoolError::Missing(name.to_string()))?;
    if pool.kind != crate::WORKER_TYPE {
        return Err(PoolError::WrongType {
            name: name.to_string(),
            kind: pool.kind,
        });
    }
    let wanted = merged_template(&pool.base_job_template, project_id);
    if wanted == pool.base_job_template {
        return Ok(PoolAction::Unchanged);
    }
    prefect
        .update_work_pool(name, &json!({"base_job_template": wanted}))
        .await?;
    Ok(PoolAction::Updated)
}

/// This worker's template, carrying over the defaults of `current`.
pub fn merged_template(current: &Value, project_id: Option<&str>) -> Value {
    let mut wanted = template(None);
    if let (Some(old), Some(new)) = (
        current["variables"]["properties"].as_object(),
        wanted["variables"]["properties"].as_object_mut(),
    ) {
        for (key, property) in new.iter_mut() {
            if let Some(default) = old.get(key).and_then(|p| p.get("default")) {
                property["default"] = default.clone();
            }
        }
    }
    if let Some(project) = project_id {
        wanted["variables"]["properties"]["project_id"]["default"] = json!(project);
    }
    wanted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checked_in_template_is_the_one_pools_get() {
        let file: Value =
            serde_json::from_str(include_str!("../../infra/base-job-template.json")).unwrap();
        assert_eq!(template(None), file);
        assert_eq!(
            template(Some("p"))["variables"]["properties"]["project_id"]["default"],
            "p"
        );
    }

    #[test]
    fn update_keeps_existing_defaults_and_applies_the_project() {
        let mut current = template(Some("old-project"));
        current["variables"]["properties"]["billing_deployment_plan"]["default"] =
            json!("nf-compute-50");
        current["variables"]["properties"]["removed_variable"] =
            json!({"type": "string", "default": "x"});
        let merged = merged_template(&current, None);
        let props = &merged["variables"]["properties"];
        assert_eq!(props["billing_deployment_plan"]["default"], "nf-compute-50");
        assert_eq!(props["project_id"]["default"], "old-project");
        assert!(props.get("removed_variable").is_none());
        assert_eq!(
            merged_template(&current, Some("new"))["variables"]["properties"]["project_id"]["default"],
            "new"
        );
        assert_eq!(merged_template(&merged, None), merged, "idempotent");
    }
}

//! Automations and the block documents their actions use: what `instant-dispatch enable`
//! writes. Names identify them, so enabling twice updates instead of duplicating.

use reqwest::Method;
use serde_json::{Value, json};

use super::PrefectClient;
use super::client::Result;
use super::models::{Automation, BlockDocument};

impl PrefectClient {
    /// The automation called `name`, if any (names are not unique on the server; the first).
    pub async fn find_automation(&self, name: &str) -> Result<Option<Automation>> {
        let body = json!({"automations": {"name": {"any_": [name]}}});
        let found: Vec<Automation> = self
            .json(Method::POST, &["automations", "filter"], Some(&body))
            .await?;
        Ok(found.into_iter().find(|a| a.name == name))
    }

    pub async fn create_automation(&self, body: &Value) -> Result<Automation> {
        self.json(Method::POST, &["automations", ""], Some(body))
            .await
    }

    pub async fn replace_automation(&self, id: &str, body: &Value) -> Result<()> {
        self.send(Method::PUT, &["automations", id], Some(body))
            .await
            .map(drop)
    }

    pub async fn delete_automation(&self, id: &str) -> Result<()> {
        self.send(Method::DELETE, &["automations", id], None)
            .await
            .map(drop)
    }

    /// A block document by type slug and name, without its secrets.
    pub async fn read_block_document(
        &self,
        slug: &str,
        name: &str,
    ) -> Result<Option<BlockDocument>> {
        self.optional(&["block_types", "slug", slug, "block_documents", "name", name])
            .await
    }

    pub async fn update_block_document(&self, id: &str, body: &Value) -> Result<()> {
        self.send(Method::PATCH, &["block_documents", id], Some(body))
            .await
            .map(drop)
    }

    pub async fn delete_block_document(&self, id: &str) -> Result<()> {
        self.send(Method::DELETE, &["block_documents", id], None)
            .await
            .map(drop)
    }
}

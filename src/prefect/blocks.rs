//! Block documents and variables: what job-template placeholders resolve through, and the
//! registration of the `northflank` block type.

use reqwest::Method;
use serde_json::{Value, json};

use super::PrefectClient;
use super::client::Result;
use super::models::{BlockDocument, BlockSchema, BlockType};

impl PrefectClient {
    /// A block document's `data`, secrets included (Prefect's templating needs the real values).
    async fn block_data(&self, segments: &[&str]) -> Result<Option<Value>> {
        let mut url = self.url(segments);
        url.query_pairs_mut().append_pair("include_secrets", "true");
        let doc: Option<Value> = self.optional_url(url).await?;
        Ok(doc.map(|mut d| d["data"].take()))
    }

    pub async fn read_block_type(&self, slug: &str) -> Result<Option<BlockType>> {
        self.optional(&["block_types", "slug", slug]).await
    }

    pub async fn create_block_type(&self, body: &Value) -> Result<BlockType> {
        self.json(Method::POST, &["block_types", ""], Some(body))
            .await
    }

    pub async fn block_schemas(&self, block_type_id: uuid::Uuid) -> Result<Vec<BlockSchema>> {
        let body = json!({"block_schemas": {"block_type_id": {"any_": [block_type_id]}}});
        self.json(Method::POST, &["block_schemas", "filter"], Some(&body))
            .await
    }

    pub async fn create_block_schema(&self, body: &Value) -> Result<BlockSchema> {
        self.json(Method::POST, &["block_schemas", ""], Some(body))
            .await
    }

    pub async fn create_block_document(&self, body: &Value) -> Result<BlockDocument> {
        self.json(Method::POST, &["block_documents", ""], Some(body))
            .await
    }
}

/// Block and variable placeholders in job templates are resolved through the API.
impl prefect_templating::Lookup for PrefectClient {
    async fn block_document_by_id(
        &self,
        id: &str,
    ) -> Result<Option<Value>, prefect_templating::LookupError> {
        self.block_data(&["block_documents", id])
            .await
            .map_err(prefect_templating::LookupError::new)
    }

    async fn block_document_by_name(
        &self,
        slug: &str,
        name: &str,
    ) -> Result<Option<Value>, prefect_templating::LookupError> {
        self.block_data(&["block_types", "slug", slug, "block_documents", "name", name])
            .await
            .map_err(prefect_templating::LookupError::new)
    }

    async fn variable(&self, name: &str) -> Result<Option<Value>, prefect_templating::LookupError> {
        let var: Option<Value> = self
            .optional(&["variables", "name", name])
            .await
            .map_err(prefect_templating::LookupError::new)?;
        Ok(var.map(|mut v| v["value"].take()))
    }
}

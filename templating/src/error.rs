//! Errors. Their messages end up in a flow run's logs ("Failed to submit flow run to infrastructure: …"), so
//! each names the placeholder, block, variable or key involved and the rule that was broken.

use std::error::Error as StdError;

/// A failure of the caller's [`crate::Lookup`] (network, authentication, server error, …), passed through.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct LookupError(Box<dyn StdError + Send + Sync + 'static>);

impl LookupError {
    pub fn new(source: impl Into<Box<dyn StdError + Send + Sync + 'static>>) -> Self {
        Self(source.into())
    }

    /// The caller's own error, e.g. to tell transient failures from permanent ones by downcasting.
    pub fn inner(&self) -> &(dyn StdError + Send + Sync + 'static) {
        self.0.as_ref()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The work pool's base job template does not have the shape Prefect requires.
    #[error("invalid base job template: {reason}")]
    InvalidBaseJobTemplate { reason: String },

    /// An `env` had to be merged key by key into an object but is not an object (Python's `dict | x`
    /// or `dict.update(x)` raises here).
    #[error(
        "{what} must be an object of environment variables to be merged into {into}, but it is {found}"
    )]
    EnvNotObject {
        what: &'static str,
        into: &'static str,
        found: &'static str,
    },

    /// A dotted job-variable key such as `env.FOO.BAR` runs through a value that is not an object.
    #[error(
        "job variable '{key}' cannot be expanded: '{at}' already holds a non-object value \
         (dotted keys only nest into objects)"
    )]
    DottedKeyConflict { key: String, at: String },

    /// `{{ prefect.blocks.<x> }}` without both a block type slug and a block document name.
    #[error(
        "invalid block placeholder {placeholder}: expected \
         {{{{ prefect.blocks.<block-type-slug>.<block-document-name>[.<key path>] }}}}"
    )]
    InvalidBlockPlaceholder { placeholder: String },

    /// The named block document does not exist (HTTP 404).
    #[error("block '{slug}/{name}' not found (from {placeholder}); it may have been deleted")]
    BlockNotFound {
        slug: String,
        name: String,
        placeholder: String,
    },

    /// The block document of a `{"$ref": {"block_document_id": …}}` does not exist (HTTP 404).
    #[error(
        "block document '{id}' not found (from {{\"$ref\": {{\"block_document_id\": \"{id}\"}}}}); \
         it may have been deleted"
    )]
    BlockDocumentNotFound { id: String },

    /// A `"$ref"` key whose value is not an object (Prefect fails on it too).
    #[error(
        "invalid block reference: \"$ref\" must be an object like {{\"block_document_id\": \"<uuid>\"}}, \
         but it is {found}"
    )]
    InvalidBlockReference { found: &'static str },

    /// The key path after the block name does not exist in the block document's data.
    #[error("block '{slug}/{name}' has no value at key path '{keypath}' (from {placeholder})")]
    BlockKeyPathNotFound {
        slug: String,
        name: String,
        keypath: String,
        placeholder: String,
    },

    /// A block placeholder embedded in a longer string resolved to an object or array.
    #[error(
        "block placeholder {placeholder} resolved to {found}, which cannot be embedded in the string \
         {template:?}; reference a single attribute instead (e.g. '.value' or '.url'), \
         or make the placeholder the whole string"
    )]
    BlockValueNotEmbeddable {
        placeholder: String,
        found: &'static str,
        template: String,
    },

    /// The caller's lookup failed for a reason other than "not found".
    #[error("could not read {target}: {source}")]
    Lookup {
        /// e.g. `block 'secret/token' (from {{ prefect.blocks.secret.token }})` or `variable 'registry'`.
        target: String,
        #[source]
        source: LookupError,
    },
}

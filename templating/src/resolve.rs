//! The passes after `apply_values`: `resolve_block_document_references`, then `resolve_variables`.
//!
//! Each pass is a synchronous walk over a lookup cache. When the walk meets a lookup it has not made yet it
//! stops; the lookup is awaited, cached, and the walk starts over. This fetches in Prefect's depth-first
//! order and reports the same first error Prefect would, without recursive async functions.

use std::collections::HashMap;
use std::future::Future;

use serde_json::{Map, Value};

use crate::error::{LookupError, TemplateError};
use crate::path::get_from_dict;
use crate::placeholder::{
    BLOCK_DOCUMENT_PREFIX, Placeholder, PlaceholderKind, VARIABLE_PREFIX, find_placeholders,
    substitute,
};
use crate::pyrepr::py_str;
use crate::pytype::{is_truthy, py_type_name};

/// Reads block documents and variables, typically over the Prefect REST API. `Ok(None)` means "not found"
/// (HTTP 404); `Err` is any other failure and aborts rendering.
///
/// Implement the methods with `async fn`; the `Send` bound lets callers spawn the rendering future on a
/// multi-threaded runtime.
pub trait Lookup {
    /// The `data` of a block document, with secrets (`GET /block_documents/{id}?include_secrets=true`).
    fn block_document_by_id(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<Value>, LookupError>> + Send;

    /// The `data` of a block document, with secrets
    /// (`GET /block_types/slug/{slug}/block_documents/name/{name}?include_secrets=true`).
    fn block_document_by_name(
        &self,
        slug: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<Value>, LookupError>> + Send;

    /// The `value` of a variable (`GET /variables/name/{name}`).
    fn variable(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<Value>, LookupError>> + Send;
}

/// Resolves, in this order and each over the whole value, as Prefect does:
///
/// 1. `{"$ref": {"block_document_id": …}}` objects → the block document's `data` (not resolved further);
///    `{{ prefect.blocks.<slug>.<name>[.<key path>] }}` → the block's data: the whole value (type kept) when
///    the placeholder is the whole string, else `str(value)` (objects and arrays are an error there). Data of
///    exactly `{"value": …}` (Secret, String, … blocks) stands for that value unless the key path starts
///    with the `value` key.
/// 2. `{{ prefect.variables.<name> }}` → the variable's value: type kept when it is the whole string, else
///    `str(value)`; a missing variable gives `""` (the key is kept).
///
/// Other placeholders are left as they are. Each document and variable is looked up once per call.
pub async fn resolve_references(
    value: Value,
    lookup: &impl Lookup,
) -> Result<Value, TemplateError> {
    let mut cache = Cache::default();
    let with_blocks = loop {
        match blocks_in(&value, &cache) {
            Ok(resolved) => break resolved,
            Err(Halt::Fail(err)) => return Err(err),
            Err(Halt::Need(need)) => cache.fetch(need, lookup).await?,
        }
    };
    loop {
        match variables_in(&with_blocks, &cache) {
            Ok(resolved) => return Ok(resolved),
            Err(Halt::Fail(err)) => return Err(err),
            Err(Halt::Need(need)) => cache.fetch(need, lookup).await?,
        }
    }
}

/// A lookup the walk needs before it can go on.
enum Need {
    BlockById {
        id: String,
    },
    BlockByName {
        slug: String,
        name: String,
        placeholder: String,
    },
    Variable {
        name: String,
        placeholder: String,
    },
}

enum Halt {
    Need(Need),
    Fail(TemplateError),
}

impl From<TemplateError> for Halt {
    fn from(err: TemplateError) -> Self {
        Self::Fail(err)
    }
}

#[derive(Default)]
struct Cache {
    blocks_by_id: HashMap<String, Value>,
    blocks_by_name: HashMap<(String, String), Value>,
    /// `None`: the variable does not exist (also cached, as Prefect does).
    variables: HashMap<String, Option<Value>>,
}

impl Cache {
    async fn fetch(&mut self, need: Need, lookup: &impl Lookup) -> Result<(), TemplateError> {
        match need {
            Need::BlockById { id } => match lookup.block_document_by_id(&id).await {
                Ok(Some(data)) => {
                    self.blocks_by_id.insert(id, data);
                }
                Ok(None) => return Err(TemplateError::BlockDocumentNotFound { id }),
                Err(source) => {
                    let target = format!("block document '{id}'");
                    return Err(TemplateError::Lookup { target, source });
                }
            },
            Need::BlockByName {
                slug,
                name,
                placeholder,
            } => match lookup.block_document_by_name(&slug, &name).await {
                Ok(Some(data)) => {
                    self.blocks_by_name.insert((slug, name), data);
                }
                Ok(None) => {
                    return Err(TemplateError::BlockNotFound {
                        slug,
                        name,
                        placeholder,
                    });
                }
                Err(source) => {
                    let target = format!("block '{slug}/{name}' (from {placeholder})");
                    return Err(TemplateError::Lookup { target, source });
                }
            },
            Need::Variable { name, placeholder } => match lookup.variable(&name).await {
                Ok(value) => {
                    self.variables.insert(name, value);
                }
                Err(source) => {
                    let target = format!("variable '{name}' (from {placeholder})");
                    return Err(TemplateError::Lookup { target, source });
                }
            },
        }
        Ok(())
    }
}

fn blocks_in(value: &Value, cache: &Cache) -> Result<Value, Halt> {
    match value {
        Value::Object(map) => {
            if let Some(reference) = map.get("$ref") {
                // Prefect calls `.get` on the "$ref" value, which fails for anything but a dict.
                let Value::Object(reference) = reference else {
                    return Err(TemplateError::InvalidBlockReference {
                        found: py_type_name(reference),
                    }
                    .into());
                };
                if let Some(id) = reference
                    .get("block_document_id")
                    .filter(|id| is_truthy(id))
                {
                    let id = py_str(id);
                    return match cache.blocks_by_id.get(&id) {
                        Some(data) => Ok(data.clone()),
                        None => Err(Halt::Need(Need::BlockById { id })),
                    };
                }
            }
            let resolved = map
                .iter()
                .map(|(k, v)| Ok((k.clone(), blocks_in(v, cache)?)))
                .collect::<Result<Map<String, Value>, Halt>>()?;
            Ok(Value::Object(resolved))
        }
        Value::Array(items) => Ok(Value::Array(
            items
                .iter()
                .map(|v| blocks_in(v, cache))
                .collect::<Result<_, _>>()?,
        )),
        Value::String(s) => blocks_in_string(s, cache),
        Value::Null | Value::Bool(_) | Value::Number(_) => Ok(value.clone()),
    }
}

fn blocks_in_string(template: &str, cache: &Cache) -> Result<Value, Halt> {
    let placeholders = find_placeholders(template);
    let is_block = |p: &&Placeholder| p.kind == PlaceholderKind::BlockDocument;
    if !placeholders.iter().any(|p| is_block(&p)) {
        return Ok(Value::String(template.to_owned()));
    }
    if let [only] = placeholders.as_slice()
        && only.full_match == template
    {
        return block_value(only, cache);
    }
    let mut replacements = HashMap::new();
    for p in placeholders.iter().filter(is_block) {
        let value = block_value(p, cache)?;
        if matches!(value, Value::Object(_) | Value::Array(_)) {
            return Err(TemplateError::BlockValueNotEmbeddable {
                placeholder: p.full_match.clone(),
                found: py_type_name(&value),
                template: template.to_owned(),
            }
            .into());
        }
        replacements.insert(p.full_match.clone(), py_str(&value));
    }
    Ok(Value::String(substitute(template, &replacements)))
}

/// The value a block placeholder stands for (Prefect's `_resolve_single_placeholder`).
fn block_value(placeholder: &Placeholder, cache: &Cache) -> Result<Value, Halt> {
    // Prefect removes the prefix wherever it occurs in the name, then splits into at most three parts.
    let stripped = placeholder.name.replace(BLOCK_DOCUMENT_PREFIX, "");
    let mut parts = stripped.splitn(3, '.');
    let (Some(slug), Some(name)) = (parts.next(), parts.next()) else {
        let placeholder = placeholder.full_match.clone();
        return Err(TemplateError::InvalidBlockPlaceholder { placeholder }.into());
    };
    let keypath = parts.next();
    let Some(mut data) = cache
        .blocks_by_name
        .get(&(slug.to_owned(), name.to_owned()))
    else {
        return Err(Halt::Need(Need::BlockByName {
            slug: slug.to_owned(),
            name: name.to_owned(),
            placeholder: placeholder.full_match.clone(),
        }));
    };

    // System blocks (Secret, String, JSON, …) hold just `value`: they stand for it, unless the key path
    // addresses that `value` key itself (a key merely starting with "value", like "values", is inside it).
    if let Value::Object(fields) = data
        && fields.len() == 1
        && let Some(inner) = fields.get("value")
    {
        let addresses_value = keypath
            .is_some_and(|k| k == "value" || k.starts_with("value.") || k.starts_with("value["));
        if !addresses_value {
            data = inner;
        }
    }

    let Some(keypath) = keypath else {
        return Ok(data.clone());
    };
    get_from_dict(data, keypath).ok_or_else(|| {
        Halt::Fail(TemplateError::BlockKeyPathNotFound {
            slug: slug.to_owned(),
            name: name.to_owned(),
            keypath: keypath.to_owned(),
            placeholder: placeholder.full_match.clone(),
        })
    })
}

fn variables_in(value: &Value, cache: &Cache) -> Result<Value, Halt> {
    match value {
        Value::String(s) => variables_in_string(s, cache),
        Value::Object(map) => Ok(Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), variables_in(v, cache)?)))
                .collect::<Result<_, Halt>>()?,
        )),
        Value::Array(items) => Ok(Value::Array(
            items
                .iter()
                .map(|v| variables_in(v, cache))
                .collect::<Result<_, _>>()?,
        )),
        Value::Null | Value::Bool(_) | Value::Number(_) => Ok(value.clone()),
    }
}

fn variables_in_string(template: &str, cache: &Cache) -> Result<Value, Halt> {
    let placeholders = find_placeholders(template);
    let is_variable = |p: &&Placeholder| p.kind == PlaceholderKind::Variable;
    if !placeholders.iter().any(|p| is_variable(&p)) {
        return Ok(Value::String(template.to_owned()));
    }
    if let [only] = placeholders.as_slice()
        && only.full_match == template
    {
        // A missing variable gives "" (the key stays), unlike a missing job variable.
        return Ok(variable_value(only, cache)?.unwrap_or_else(|| Value::String(String::new())));
    }
    let mut replacements = HashMap::new();
    for p in placeholders.iter().filter(is_variable) {
        let text = variable_value(p, cache)?
            .map(|v| py_str(&v))
            .unwrap_or_default();
        replacements.insert(p.full_match.clone(), text);
    }
    Ok(Value::String(substitute(template, &replacements)))
}

/// `Ok(None)`: the variable does not exist.
fn variable_value(placeholder: &Placeholder, cache: &Cache) -> Result<Option<Value>, Halt> {
    // As in Prefect, the prefix is removed wherever it occurs in the name.
    let name = placeholder.name.replace(VARIABLE_PREFIX, "");
    match cache.variables.get(&name) {
        Some(value) => Ok(value.clone()),
        None => Err(Halt::Need(Need::Variable {
            name,
            placeholder: placeholder.full_match.clone(),
        })),
    }
}

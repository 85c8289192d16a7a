//! Where credentials come from: one JSON secret in AWS Secrets Manager, or the environment.
//!
//! The secret holds `northflank_api_token`, `webhook_token`, `prefect_api_key` or
//! `prefect_api_auth_string`, and optionally `dispatch_token` (instant dispatch). It is read once per Lambda container and again after an
//! authentication failure (a rotated token). Errors name the key and the rule, never a value.
//! Without `PFNF_SECRET_ID`, the same credentials come from the environment (local mode).

use std::collections::BTreeMap;

use aws_sdk_secretsmanager::error::DisplayErrorContext;
use serde_json::Value;

use super::{ConfigError, Credentials, PrefectAuth, Secret};

/// The environment variable naming the secret (its ARN or name).
pub const SECRET_ID_VAR: &str = "PFNF_SECRET_ID";

/// What `aws secretsmanager create-secret` leaves in a key until the user sets it.
const PLACEHOLDER: &str = "REPLACE_ME";

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("could not read secret {id}: {reason}")]
    Read { id: String, reason: String },
    #[error("secret {id} has no string value (store the credentials as a JSON object)")]
    NotString { id: String },
    #[error("secret {id} is not a JSON object with string values: {reason}")]
    Malformed { id: String, reason: String },
    #[error("secret {id} has no value for {key:?}: {hint}")]
    Missing {
        id: String,
        key: &'static str,
        hint: &'static str,
    },
    #[error(
        "secret {id} still holds the placeholder {PLACEHOLDER} for {key:?}: set it (for prefect_api_key, \"\" means a Prefect server without authentication)"
    )]
    Placeholder { id: String, key: &'static str },
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Reads the credentials out of the secret's JSON text.
pub fn parse(id: &str, text: &str) -> Result<Credentials, SecretError> {
    let malformed = |reason: String| SecretError::Malformed {
        id: id.to_string(),
        reason,
    };
    // serde_json's messages give a position, never the input itself.
    let value: Value = serde_json::from_str(text).map_err(|e| malformed(e.to_string()))?;
    let Value::Object(map) = value else {
        return Err(malformed("the top level must be an object".into()));
    };
    let get = |key: &'static str| -> Result<Option<String>, SecretError> {
        match map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s == PLACEHOLDER => Err(SecretError::Placeholder {
                id: id.to_string(),
                key,
            }),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(malformed(format!("{key:?} must be a string"))),
        }
    };
    let required = |key: &'static str, hint: &'static str| {
        get(key)?.ok_or(SecretError::Missing {
            id: id.to_string(),
            key,
            hint,
        })
    };
    Ok(Credentials {
        prefect: PrefectAuth::from_parts(get("prefect_api_key")?, get("prefect_api_auth_string")?),
        northflank_token: Secret::new(required(
            "northflank_api_token",
            "a Northflank API token (see docs/deploy.md for its permissions)",
        )?),
        webhook_token: Secret::new(required(
            "webhook_token",
            "the shared secret of the Northflank notification integration",
        )?),
        dispatch_token: get("dispatch_token")?.map(Secret::new),
    })
}

/// Where the credentials come from.
pub enum Source {
    /// The credential variables (`Credentials::VARIABLES`) as read when the worker started,
    /// from the environment or a file.
    Values(BTreeMap<String, String>),
    SecretsManager {
        client: aws_sdk_secretsmanager::Client,
        id: String,
    },
}

impl Source {
    /// The credential variables of the process environment.
    pub fn environment() -> Source {
        Self::values(&|k| std::env::var(k).ok())
    }

    fn values(get: &dyn Fn(&str) -> Option<String>) -> Source {
        Source::Values(
            Credentials::VARIABLES
                .iter()
                .filter_map(|k| Some((k.to_string(), get(k)?)))
                .collect(),
        )
    }

    /// Secrets Manager when `PFNF_SECRET_ID` is set (the SDK's usual configuration, including
    /// `AWS_ENDPOINT_URL`, applies), else the credential variables `get` finds.
    pub async fn from_lookup(get: &(dyn Fn(&str) -> Option<String> + Sync)) -> Source {
        match get(SECRET_ID_VAR).filter(|id| !id.is_empty()) {
            None => Self::values(get),
            Some(id) => {
                let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
                Source::SecretsManager {
                    client: aws_sdk_secretsmanager::Client::new(&config),
                    id,
                }
            }
        }
    }

    pub async fn load(&self) -> Result<Credentials, SecretError> {
        match self {
            Source::Values(values) => Ok(Credentials::from_lookup(&|k| values.get(k).cloned())?),
            Source::SecretsManager { client, id } => {
                let answer = client
                    .get_secret_value()
                    .secret_id(id)
                    .send()
                    .await
                    .map_err(|e| SecretError::Read {
                        id: id.clone(),
                        reason: DisplayErrorContext(&e).to_string(),
                    })?;
                let text = answer
                    .secret_string()
                    .ok_or_else(|| SecretError::NotString { id: id.clone() })?;
                let credentials = parse(id, text)?;
                tracing::info!(secret = %id, "credentials loaded from Secrets Manager");
                Ok(credentials)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_complete_secret() {
        let c = parse(
            "s",
            r#"{"northflank_api_token":"nf","webhook_token":"wh","prefect_api_key":"pnu"}"#,
        )
        .unwrap();
        assert_eq!(c.northflank_token.expose(), "nf");
        assert_eq!(c.prefect.container_env(), Some(("PREFECT_API_KEY", "pnu")));
        assert!(c.dispatch_token.is_none());
        let c = parse("s", r#"{"northflank_api_token":"nf","webhook_token":"wh","prefect_api_auth_string":"u:p","prefect_api_key":""}"#).unwrap();
        assert_eq!(
            c.prefect.container_env(),
            Some(("PREFECT_API_AUTH_STRING", "u:p"))
        );
        let c = parse(
            "s",
            r#"{"northflank_api_token":"nf","webhook_token":"wh","dispatch_token":"dt"}"#,
        )
        .unwrap();
        assert_eq!(
            c.dispatch_token.map(|t| t.expose().to_string()).as_deref(),
            Some("dt")
        );
    }

    #[test]
    fn errors_name_the_key_and_never_show_a_value() {
        let cases = [
            (
                r#"{"webhook_token":"wh-secret-value"}"#,
                "has no value for \"northflank_api_token\"",
            ),
            (
                r#"{"northflank_api_token":"REPLACE_ME","webhook_token":"wh-secret-value"}"#,
                "placeholder REPLACE_ME for \"northflank_api_token\"",
            ),
            (
                r#"{"northflank_api_token":"nf-secret-value","webhook_token":"wh-secret-value","prefect_api_key":"REPLACE_ME"}"#,
                "placeholder REPLACE_ME for \"prefect_api_key\"",
            ),
            (
                r#"{"northflank_api_token":"nf-secret-value"}"#,
                "has no value for \"webhook_token\"",
            ),
            (
                r#"{"northflank_api_token":"nf-secret-value","webhook_token":7}"#,
                "\"webhook_token\" must be a string",
            ),
            (r#"["nf-secret-value"]"#, "the top level must be an object"),
            (
                r#"{"northflank_api_token":"nf-secret-value", oops"#,
                "is not a JSON object",
            ),
        ];
        for (text, expected) in cases {
            let message = parse("arn:aws:secretsmanager:eu-west-1:1:secret:x", text)
                .unwrap_err()
                .to_string();
            assert!(message.contains(expected), "{text}: {message}");
            assert!(
                message.contains("arn:aws:secretsmanager:eu-west-1:1:secret:x"),
                "{message}"
            );
            assert!(!message.contains("secret-value"), "{message}");
        }
    }
}

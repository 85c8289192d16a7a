//! Credentials: secret, read from the environment locally and from one Secrets Manager secret
//! in Lambda (`source`), and never shown in `Debug` output or logs.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

use super::ConfigError;
use super::read::{Lookup, text};

/// A secret string: zeroed when dropped, never shown by `Debug`, compared in constant time.
#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(SecretString::from(value.into()))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(********)")
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.expose()
            .as_bytes()
            .ct_eq(other.expose().as_bytes())
            .into()
    }
}

impl Eq for Secret {}

/// How the worker authenticates to Prefect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PrefectAuth {
    /// An open self-hosted server.
    None,
    /// Prefect Cloud: `Authorization: Bearer <key>`; the container gets `PREFECT_API_KEY`.
    ApiKey(Secret),
    /// A self-hosted server with basic auth (`user:pass`): `Authorization: Basic …`; the
    /// container gets `PREFECT_API_AUTH_STRING`.
    AuthString(Secret),
}

impl PrefectAuth {
    /// Prefect's own rule: when both are set, the auth string wins.
    pub fn from_parts(api_key: Option<String>, auth_string: Option<String>) -> Self {
        match (
            auth_string.filter(|s| !s.is_empty()),
            api_key.filter(|s| !s.is_empty()),
        ) {
            (Some(auth), _) => PrefectAuth::AuthString(Secret::new(auth)),
            (None, Some(key)) => PrefectAuth::ApiKey(Secret::new(key)),
            (None, None) => PrefectAuth::None,
        }
    }

    /// From `PREFECT_API_KEY` and `PREFECT_API_AUTH_STRING`.
    pub fn from_lookup(get: Lookup) -> Self {
        Self::from_parts(get("PREFECT_API_KEY"), get("PREFECT_API_AUTH_STRING"))
    }

    /// The environment variable and value the flow-run container needs to reach Prefect.
    pub fn container_env(&self) -> Option<(&'static str, &str)> {
        match self {
            PrefectAuth::None => None,
            PrefectAuth::ApiKey(key) => Some(("PREFECT_API_KEY", key.expose())),
            PrefectAuth::AuthString(auth) => Some(("PREFECT_API_AUTH_STRING", auth.expose())),
        }
    }
}

/// Everything secret the worker holds.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub prefect: PrefectAuth,
    pub northflank_token: Secret,
    /// The shared token Northflank sends in `X-Northflank-Notification-Integration-Token`.
    pub webhook_token: Secret,
    /// The token Prefect's instant-dispatch automation sends; none turns the endpoint off.
    pub dispatch_token: Option<Secret>,
}

impl Credentials {
    /// The variables credentials are read from when they do not come from a secret.
    pub const VARIABLES: [&str; 5] = [
        "PREFECT_API_KEY",
        "PREFECT_API_AUTH_STRING",
        "NORTHFLANK_API_TOKEN",
        "PFNF_WEBHOOK_TOKEN",
        "PFNF_DISPATCH_TOKEN",
    ];

    /// Reads `PREFECT_API_KEY` / `PREFECT_API_AUTH_STRING`, `NORTHFLANK_API_TOKEN`,
    /// `PFNF_WEBHOOK_TOKEN` and optionally `PFNF_DISPATCH_TOKEN`.
    pub fn from_lookup(get: Lookup) -> Result<Self, ConfigError> {
        let required = |var: &'static str| {
            get(var)
                .filter(|v| !v.is_empty())
                .map(Secret::new)
                .ok_or(ConfigError::Missing { var })
        };
        Ok(Credentials {
            prefect: PrefectAuth::from_lookup(get),
            northflank_token: required("NORTHFLANK_API_TOKEN")?,
            webhook_token: required("PFNF_WEBHOOK_TOKEN")?,
            dispatch_token: text(get, "PFNF_DISPATCH_TOKEN").map(Secret::new),
        })
    }

    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(&super::read::env_var)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::read::tests::lookup;

    #[test]
    fn auth_string_wins_over_api_key_and_secrets_stay_hidden() {
        let auth = PrefectAuth::from_parts(Some("pnu_key".into()), Some("admin:pw".into()));
        assert_eq!(
            auth.container_env(),
            Some(("PREFECT_API_AUTH_STRING", "admin:pw"))
        );
        assert!(!format!("{auth:?}").contains("admin:pw"));
        let creds = Credentials::from_lookup(&lookup(&[
            ("NORTHFLANK_API_TOKEN", "nf-secret"),
            ("PFNF_WEBHOOK_TOKEN", "hook-secret"),
        ]))
        .unwrap();
        let shown = format!("{creds:?}");
        assert!(!shown.contains("nf-secret") && !shown.contains("hook-secret"));
        let err = Credentials::from_lookup(&lookup(&[("NORTHFLANK_API_TOKEN", "x")])).unwrap_err();
        assert_eq!(
            err,
            ConfigError::Missing {
                var: "PFNF_WEBHOOK_TOKEN"
            }
        );
    }

    #[test]
    fn secrets_compare_by_value() {
        assert_eq!(Secret::new("a"), Secret::new("a"));
        assert_ne!(Secret::new("a"), Secret::new("ab"));
    }
}

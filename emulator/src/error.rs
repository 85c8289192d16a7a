//! Error types: `Error` for the library API, `ApiError` for HTTP answers in the Northflank
//! envelope `{"error":{"status","message","id","details"}}` (§4.1), and `Issues`, the broken
//! rules a validation answer reports.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// Failure to start the emulator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot build the HTTP client: {0}")]
    HttpClient(#[from] reqwest::Error),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot open the exchange record {path:?} (NF_EMULATOR_RECORD / --record): {source}")]
    Record {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// One broken rule.
#[derive(Debug, Clone)]
pub struct Issue {
    pub path: String,
    pub rule: String,
}

/// All broken rules of one request body.
#[derive(Debug, Clone, Default)]
pub struct Issues(Vec<Issue>);

impl Issues {
    pub fn push(&mut self, path: &str, rule: impl Into<String>) {
        self.0.push(Issue {
            path: path.to_owned(),
            rule: rule.into(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    #[cfg(test)]
    pub fn list(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|i| (i.path.as_str(), i.rule.as_str()))
    }

    pub fn message(&self) -> String {
        self.message_about("request body")
    }

    /// `Invalid <what>: path: rule; path: rule`.
    pub fn message_about(&self, what: &str) -> String {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|i| format!("{}: {}", i.path, i.rule))
            .collect();
        format!("Invalid {what}: {}", parts.join("; "))
    }

    pub fn details(&self) -> Value {
        let fields: Vec<Value> = self
            .0
            .iter()
            .map(|i| json!({"path": i.path, "message": i.rule}))
            .collect();
        json!({ "fields": fields })
    }

    pub fn into_result(self) -> Result<(), ApiError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Validation(self))
        }
    }
}

/// An HTTP error answer. The message is what a user sees, so it says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("Unauthorized")]
    Unauthorized,
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// A configurable status for an inferred behaviour (e.g. the duplicate-job answer).
    #[error("{message}")]
    Other { status: StatusCode, message: String },
    #[error("{0}")]
    BadRequest(String),
    #[error("{}", .0.message())]
    Validation(Issues),
    /// Query parameters the official client never sends, or a required one missing.
    #[error("{}", .0.message_about("query"))]
    InvalidQuery(Issues),
    #[error("Rate limit exceeded: retry in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64, header: bool },
    #[error("Service temporarily unavailable (injected fault)")]
    Unavailable,
    #[error("Bad gateway (injected fault: the request was processed but the answer was lost)")]
    LostResponse,
    #[error("Method not allowed")]
    MethodNotAllowed,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Other { status, .. } => *status,
            ApiError::BadRequest(_) | ApiError::Validation(_) | ApiError::InvalidQuery(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::LostResponse => StatusCode::BAD_GATEWAY,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    pub fn not_found(what: &str) -> Self {
        ApiError::NotFound(format!("{what} not found"))
    }

    /// A single-field validation error.
    pub fn invalid(path: &str, rule: impl Into<String>) -> Self {
        let mut issues = Issues::default();
        issues.push(path, rule);
        ApiError::Validation(issues)
    }

    fn body(&self) -> Value {
        let status = self.status().as_u16();
        // §8 gives the 401 body without id or details; keep it exactly that small.
        if matches!(self, ApiError::Unauthorized) {
            return json!({"error": {"status": status, "message": "Unauthorized"}});
        }
        let mut error = json!({
            "status": status,
            "message": self.to_string(),
            "id": uuid::Uuid::new_v4().to_string(),
        });
        error["details"] = match self {
            ApiError::Validation(issues) | ApiError::InvalidQuery(issues) => issues.details(),
            ApiError::RateLimited {
                retry_after_secs, ..
            } => json!({"retryAfter": retry_after_secs}),
            _ => json!({}),
        };
        json!({ "error": error })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), axum::Json(self.body())).into_response();
        if let ApiError::RateLimited {
            retry_after_secs,
            header: true,
        } = self
        {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        response
    }
}

//! Emulation of Prefect's in-container engine (`prefect flow-run execute`), driven through the
//! run's own environment exactly as the real container would be. Every problem talking to
//! Prefect goes to the run's log; nothing here may take the emulator down.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use super::{Stream, note};
use crate::state::App;

const API_VERSION: &str = "0.8.4";
const MAX_WAIT: Duration = Duration::from_secs(5);
/// Enough to ride out a busy orchestrator without looping forever.
const MAX_PROPOSALS: u32 = 20;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Prefect's client retries 408, 429, 502, 503 and transport errors (its `client/base.py`);
/// a busy SQLite-backed server answers 503 to concurrent writers, so the engine must too.
const TRANSIENT_RETRIES: u32 = 6;
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(250);

#[derive(Debug, Clone, Copy)]
pub(crate) enum StateKind {
    Running,
    Completed,
    Failed,
}

pub(crate) struct Engine {
    app: App,
    run_id: String,
    api: String,
    flow_run_id: String,
    authorization: Option<String>,
    /// `(client id, token)` once the server asked for CSRF tokens, as Prefect's client keeps.
    csrf: std::sync::Mutex<Option<(String, String)>>,
}

impl Engine {
    /// None (with a log line) when the environment lacks what the real engine needs.
    pub fn from_env(app: &App, run_id: &str, env: &BTreeMap<String, String>) -> Option<Self> {
        let (Some(api), Some(flow_run_id)) =
            (env.get("PREFECT_API_URL"), env.get("PREFECT__FLOW_RUN_ID"))
        else {
            note(
                app,
                run_id,
                Stream::Stderr,
                "engine emulation skipped: PREFECT_API_URL and PREFECT__FLOW_RUN_ID must both be set",
            );
            return None;
        };
        let authorization = match (
            env.get("PREFECT_API_KEY"),
            env.get("PREFECT_API_AUTH_STRING"),
        ) {
            (Some(key), _) => Some(format!("Bearer {key}")),
            (None, Some(auth)) => Some(format!("Basic {}", base64(auth.as_bytes()))),
            (None, None) => None,
        };
        Some(Self {
            app: app.clone(),
            run_id: run_id.to_owned(),
            api: api.trim_end_matches('/').to_owned(),
            flow_run_id: flow_run_id.clone(),
            authorization,
            csrf: std::sync::Mutex::new(None),
        })
    }

    fn log(&self, stream: Stream, message: &str) {
        note(
            &self.app,
            &self.run_id,
            stream,
            &format!("engine: {message}"),
        );
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let url = format!("{}/flow_runs/{}{path}", self.api, self.flow_run_id);
        let mut request = self
            .app
            .http
            .request(method, url)
            .timeout(REQUEST_TIMEOUT)
            .header("X-PREFECT-API-VERSION", API_VERSION);
        if let Some(auth) = &self.authorization {
            request = request.header(reqwest::header::AUTHORIZATION, auth);
        }
        if let Some((client, token)) = self.csrf.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            request = request
                .header("Prefect-Csrf-Token", token)
                .header("Prefect-Csrf-Client", client);
        }
        request
    }

    /// A server with CSRF protection refuses writes without a token (403 naming CSRF); like
    /// Prefect's client, fetch one for a fresh client id and keep it.
    async fn refresh_csrf(&self) -> Result<(), String> {
        let client = uuid::Uuid::new_v4().to_string();
        let mut request = self
            .app
            .http
            .get(format!("{}/csrf-token?client={client}", self.api))
            .timeout(REQUEST_TIMEOUT)
            .header("X-PREFECT-API-VERSION", API_VERSION);
        if let Some(auth) = &self.authorization {
            request = request.header(reqwest::header::AUTHORIZATION, auth);
        }
        let answer: Value = request
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| format!("CSRF token: {e}"))?
            .json()
            .await
            .map_err(|e| format!("CSRF token: {e}"))?;
        let token = answer["token"].as_str().unwrap_or_default().to_owned();
        *self.csrf.lock().unwrap_or_else(|e| e.into_inner()) = Some((client, token));
        Ok(())
    }

    pub async fn propose(&self, kind: StateKind) {
        let (ty, name, message) = match kind {
            StateKind::Running => ("RUNNING", "Running", None),
            StateKind::Completed => ("COMPLETED", "Completed", None),
            StateKind::Failed => (
                "FAILED",
                "Failed",
                Some("Flow run encountered an exception."),
            ),
        };
        let state = json!({
            "type": ty, "name": name, "message": message,
            "state_details": {"transition_id": uuid::Uuid::new_v4().to_string()},
            "data": null,
        });
        self.set_state(state, false).await;
    }

    /// Mirrors the engine's cancellation: force CANCELLED, keeping the CANCELLING details.
    pub async fn propose_cancelled(&self, details: Value) {
        let mut details = match details {
            Value::Object(m) => m,
            _ => serde_json::Map::new(),
        };
        details.insert(
            "transition_id".into(),
            json!(uuid::Uuid::new_v4().to_string()),
        );
        let state = json!({
            "type": "CANCELLED", "name": "Cancelled",
            "message": "Flow run was cancelled successfully.",
            "state_details": details, "data": null,
        });
        self.set_state(state, true).await;
    }

    /// One `set_state` call, retried on transient failures with the same body (and so the same
    /// `transition_id`, which makes a replay harmless).
    async fn post_state(&self, body: &Value) -> Result<Value, String> {
        let mut delay = FIRST_RETRY_DELAY;
        let mut attempt = 0;
        let mut csrf_refreshed = false;
        loop {
            attempt += 1;
            self.app.count(|c| c.prefect_state_proposals += 1);
            let result = self
                .request(reqwest::Method::POST, "/set_state")
                .json(body)
                .send()
                .await;
            let transient = match &result {
                Ok(r) => matches!(r.status().as_u16(), 408 | 429 | 502 | 503),
                // Like Prefect's client: a refused connection is not retried.
                Err(e) => !e.is_builder() && !e.is_connect(),
            };
            if let Ok(r) = &result
                && r.status() == reqwest::StatusCode::FORBIDDEN
                && !csrf_refreshed
            {
                csrf_refreshed = true;
                self.refresh_csrf().await?;
                continue;
            }
            if transient && attempt <= TRANSIENT_RETRIES {
                let jitter = 0.8 + 0.4 * fastrand::f64();
                tokio::time::sleep(delay.mul_f64(jitter)).await;
                delay *= 2;
                continue;
            }
            return match result {
                Ok(r) if r.status().is_success() => {
                    r.json::<Value>().await.map_err(|e| e.to_string())
                }
                Ok(r) => Err(format!("HTTP {}", r.status())),
                Err(e) => Err(e.to_string()),
            };
        }
    }

    async fn set_state(&self, state: Value, force: bool) {
        let ty = state["type"].as_str().unwrap_or("?").to_owned();
        let body = json!({"state": state, "force": force});
        for _ in 0..MAX_PROPOSALS {
            let answer = self.post_state(&body).await;
            let answer = match answer {
                Ok(a) => a,
                Err(e) => {
                    self.log(Stream::Stderr, &format!("proposing {ty} failed: {e}"));
                    return;
                }
            };
            let reason = answer
                .pointer("/details/reason")
                .and_then(Value::as_str)
                .unwrap_or("");
            match answer.get("status").and_then(Value::as_str) {
                Some("ACCEPT") => {
                    self.log(Stream::Stdout, &format!("state {ty} accepted"));
                    return;
                }
                Some("WAIT") => {
                    let secs = answer
                        .pointer("/details/delay_seconds")
                        .and_then(Value::as_f64)
                        .filter(|s| s.is_finite() && *s >= 0.0)
                        .unwrap_or(1.0);
                    tokio::time::sleep(Duration::from_secs_f64(secs).min(MAX_WAIT)).await;
                }
                Some(status @ ("REJECT" | "ABORT")) => {
                    self.log(
                        Stream::Stderr,
                        &format!("state {ty} answered {status}: {reason}"),
                    );
                    return;
                }
                other => {
                    self.log(
                        Stream::Stderr,
                        &format!("state {ty}: unexpected answer status {other:?}"),
                    );
                    return;
                }
            }
        }
        self.log(
            Stream::Stderr,
            &format!("state {ty}: gave up after {MAX_PROPOSALS} WAIT answers"),
        );
    }

    /// Polls the flow run until Prefect asks for cancellation; returns its `state_details`.
    pub async fn wait_for_cancelling(&self) -> Value {
        let mut last_error = String::new();
        loop {
            tokio::time::sleep(self.app.config.engine_poll).await;
            let result = match self.request(reqwest::Method::GET, "").send().await {
                Ok(r) if r.status().is_success() => {
                    r.json::<Value>().await.map_err(|e| e.to_string())
                }
                Ok(r) => Err(format!("HTTP {}", r.status())),
                Err(e) => Err(e.to_string()),
            };
            match result {
                Ok(flow_run) => {
                    last_error.clear();
                    if flow_run.pointer("/state/type").and_then(Value::as_str) == Some("CANCELLING")
                    {
                        self.log(Stream::Stdout, "flow run is CANCELLING: cancelling");
                        return flow_run
                            .pointer("/state/state_details")
                            .cloned()
                            .unwrap_or(json!({}));
                    }
                }
                // Only changes are logged, so an unreachable server does not flood the log.
                Err(e) if e != last_error => {
                    self.log(Stream::Stderr, &format!("polling the flow run failed: {e}"));
                    last_error = e;
                }
                Err(_) => {}
            }
        }
    }
}

/// Standard base64 with padding (RFC 4648), for `PREFECT_API_AUTH_STRING` basic auth.
fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::base64;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
            ("user:pass", "dXNlcjpwYXNz"),
        ] {
            assert_eq!(base64(input.as_bytes()), expected);
        }
    }
}

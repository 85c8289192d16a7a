//! In front of every Northflank route: bearer auth, the fixed-window rate limit (§4.2), fault
//! injection, rate-limit headers on every answer, and the request record.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::error::{ApiError, Issues};
use crate::model::RecordedRequest;
use crate::state::{App, Window, lock, now_ms, push_ring};
use crate::validate::official;

struct Budget {
    remaining: u64,
    reset_secs: u64,
}

pub(crate) async fn gate(State(app): State<App>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let endpoint = endpoint_key(&method, &path);
    let user_agent = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let limit = u64::from(app.config.rate_limit_per_hour);
    let (body_json, mut response, budget) = answer(&app, req, next, &endpoint, limit).await;

    let budget = budget.unwrap_or(Budget {
        remaining: limit,
        reset_secs: app.config.rate_limit_window_secs,
    });
    let headers = response.headers_mut();
    headers.insert("x-ratelimit-limit", HeaderValue::from(limit));
    headers.insert("x-ratelimit-remaining", HeaderValue::from(budget.remaining));
    headers.insert("x-ratelimit-reset", HeaderValue::from(budget.reset_secs));

    let status = response.status().as_u16();
    let record = RecordedRequest {
        method: method.to_string(),
        path,
        query,
        endpoint,
        body: body_json,
        status,
        at: now_ms(),
    };
    let response = super::record::append(&app, &record, user_agent, response).await;
    let mut state = app.state();
    let counters = &mut state.counters;
    *counters
        .requests
        .entry(record.endpoint.clone())
        .or_default() += 1;
    match status {
        401 => counters.responses_401 += 1,
        429 => counters.responses_429 += 1,
        500..=599 => counters.responses_5xx += 1,
        _ => {}
    }
    push_ring(&mut state.requests, record, app.config.request_log_capacity);
    response
}

/// Auth, budget, body size and the query's parameters, then the handler: the JSON body (for
/// the record), the answer, and the budget left when the token was known.
async fn answer(
    app: &App,
    req: Request,
    next: Next,
    endpoint: &str,
    limit: u64,
) -> (Value, Response, Option<Budget>) {
    let token = bearer(req.headers());
    let query = req.uri().query().map(str::to_owned);
    let (parts, body) = req.into_parts();
    let (body_json, body) = match axum::body::to_bytes(body, app.config.max_body_bytes).await {
        Ok(bytes) => (
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            Some(bytes),
        ),
        Err(_) => (Value::Null, None),
    };
    let valid_token = token.filter(|t| app.config.api_tokens.iter().any(|known| known == t));
    let Some(token) = valid_token else {
        return (body_json, ApiError::Unauthorized.into_response(), None);
    };
    let budget = take_budget(app, &token, limit);
    let response = match (budget.as_ref(), body) {
        (Err(exhausted), _) => ApiError::RateLimited {
            retry_after_secs: exhausted.reset_secs.max(1),
            header: app.config.retry_after_on_limit,
        }
        .into_response(),
        (Ok(_), None) => ApiError::BadRequest(format!(
            "Request body exceeds {} bytes",
            app.config.max_body_bytes
        ))
        .into_response(),
        (Ok(_), Some(bytes)) => match check_query(app, endpoint, query.as_deref()) {
            Err(e) => e.into_response(),
            Ok(()) => {
                run_with_faults(app, Request::from_parts(parts, Body::from(bytes)), next).await
            }
        },
    };
    (body_json, response, Some(budget.unwrap_or_else(|b| b)))
}

/// In strict mode, the query holds only parameters the official client sends to this
/// endpoint, and those it always sends with a fixed value (`queryType=range` on logs).
/// Endpoints outside the types (unknown routes) are left to the router's 404.
fn check_query(app: &App, endpoint: &str, query: Option<&str>) -> Result<(), ApiError> {
    let Some(official::Query { known, fixed }) =
        official::query(endpoint).filter(|_| !app.config.lenient)
    else {
        return Ok(());
    };
    let pairs: Vec<(String, String)> = reqwest::Url::parse("http://q/")
        .map(|mut url| {
            url.set_query(query);
            url.query_pairs().into_owned().collect()
        })
        .unwrap_or_default();
    let mut issues = Issues::default();
    for (name, _) in &pairs {
        if !known.contains(&name.as_str()) {
            let sent = if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            };
            issues.push(
                name,
                format!(
                    "is not a query parameter of {endpoint} (the official client sends: {sent})"
                ),
            );
        }
    }
    for (name, value) in fixed {
        let got: Vec<&str> = pairs
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect();
        if got != [value] {
            issues.push(
                name,
                format!("is required, once, as {name}={value} (as the official client sends it)"),
            );
        }
    }
    if issues.is_empty() {
        Ok(())
    } else {
        Err(ApiError::InvalidQuery(issues))
    }
}

/// Faults before the handler leave state untouched; `api_5xx_after_pct` lets the handler
/// change state and then loses the answer, which is what makes blind POST retries unsafe.
async fn run_with_faults(app: &App, req: Request, next: Next) -> Response {
    let faults = &app.config.faults;
    let (reject_429, reject_503, lose_answer) = {
        let mut rng = lock(&app.api_rng);
        let mut roll = |pct: f64| pct > 0.0 && rng.f64() * 100.0 < pct;
        (
            roll(faults.api_429_pct),
            roll(faults.api_5xx_pct),
            roll(faults.api_5xx_after_pct),
        )
    };
    if reject_429 || reject_503 {
        app.count(|c| c.faults_injected += 1);
        return if reject_429 {
            ApiError::RateLimited {
                retry_after_secs: faults.retry_after_secs,
                header: true,
            }
            .into_response()
        } else {
            ApiError::Unavailable.into_response()
        };
    }
    let response = next.run(req).await;
    if lose_answer {
        app.count(|c| c.faults_injected += 1);
        return ApiError::LostResponse.into_response();
    }
    response
}

/// `Ok` with the budget left after this request, or `Err` when it was already used up.
fn take_budget(app: &App, token: &str, limit: u64) -> Result<Budget, Budget> {
    let window = Duration::from_secs(app.config.rate_limit_window_secs);
    let now = Instant::now();
    let mut state = app.state();
    let w = state.windows.entry(token.to_owned()).or_insert(Window {
        started: now,
        count: 0,
    });
    if now.duration_since(w.started) >= window {
        *w = Window {
            started: now,
            count: 0,
        };
    }
    let left = window.saturating_sub(now.duration_since(w.started));
    let reset_secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
    if w.count >= limit {
        return Err(Budget {
            remaining: 0,
            reset_secs,
        });
    }
    w.count += 1;
    Ok(Budget {
        remaining: limit - w.count,
        reset_secs,
    })
}

pub(crate) fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

/// `"METHOD /v1/projects/{projectId}/jobs"`: IDs replaced by their parameter names, and the
/// `/teams/{teamId}` twin folded into the plain route so both count together.
pub(crate) fn endpoint_key(method: &Method, path: &str) -> String {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let mut out: Vec<&str> = Vec::new();
    let mut i = 0;
    while i < segments.len() {
        let segment = segments[i];
        if i == 1 && segment == "teams" && segments.first() == Some(&"v1") {
            i += 2;
            continue;
        }
        out.push(segment);
        let param = match segment {
            "projects" => Some("{projectId}"),
            "jobs" => Some("{jobId}"),
            "runs" => Some("{runId}"),
            "notifications" => Some("{notificationId}"),
            _ => None,
        };
        match (param, segments.get(i + 1)) {
            (Some(name), Some(_)) => {
                out.push(name);
                i += 2;
            }
            _ => i += 1,
        }
    }
    format!("{method} /{}", out.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_keys() {
        let k = |m: Method, p: &str| endpoint_key(&m, p);
        assert_eq!(
            k(Method::POST, "/v1/projects/p1/jobs"),
            "POST /v1/projects/{projectId}/jobs"
        );
        assert_eq!(
            k(Method::GET, "/v1/teams/t/projects/p1/jobs/j/runs/r"),
            "GET /v1/projects/{projectId}/jobs/{jobId}/runs/{runId}"
        );
        assert_eq!(
            k(Method::DELETE, "/v1/integrations/notifications/x"),
            "DELETE /v1/integrations/notifications/{notificationId}"
        );
        assert_eq!(
            k(Method::GET, "/v1/projects/p/jobs/j/logs"),
            "GET /v1/projects/{projectId}/jobs/{jobId}/logs"
        );
    }
}

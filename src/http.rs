//! What both API clients share about HTTP: one `reqwest` client configuration and the reading of
//! a failed response. Each client gives failures its own meaning (which statuses are transient,
//! which writes are safe to repeat).

use std::time::Duration;

use reqwest::header::HeaderMap;

/// The user agent both clients send, so server-side logs can tell this worker apart.
pub const USER_AGENT: &str = concat!("prefect-nf/", env!("CARGO_PKG_VERSION"));

/// The longest a single request may take; the caller's deadline may shorten it.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A client with rustls, a bounded idle pool and keep-alive below the 30 s that cloud load
/// balancers allow (the value Prefect's own client uses).
pub fn client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .pool_max_idle_per_host(16)
        .pool_idle_timeout(Duration::from_secs(25))
        .connect_timeout(Duration::from_secs(10))
        .build()
}

/// The rate-limit headers of an answer (`x-ratelimit-limit`, `-remaining`, and `-reset` in
/// seconds), as Northflank sends them on every response (northflank-api.md §4.2). Prefect's
/// client records the same names in case a Prefect API sends them; a self-hosted server does not.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RateLimit {
    pub limit: Option<u64>,
    pub remaining: Option<u64>,
    pub reset_secs: Option<u64>,
}

impl RateLimit {
    /// The reading in `headers`; `None` when the answer carries none of them.
    pub fn from_headers(headers: &HeaderMap) -> Option<RateLimit> {
        let read = |name: &str| headers.get(name)?.to_str().ok()?.trim().parse::<u64>().ok();
        let reading = RateLimit {
            limit: read("x-ratelimit-limit"),
            remaining: read("x-ratelimit-remaining"),
            reset_secs: read("x-ratelimit-reset"),
        };
        (reading != RateLimit::default()).then_some(reading)
    }
}

/// The `Retry-After` of a response, if it has a readable one.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::retry::parse_retry_after)
}

/// Whether a transport error certainly happened before the request reached the server, which
/// makes even a non-idempotent write safe to send again.
pub fn never_sent(error: &reqwest::Error) -> bool {
    error.is_connect()
}

/// Cuts a response body to a length fit for an error message.
pub fn excerpt(body: &str) -> String {
    const MAX: usize = 500;
    if body.len() <= MAX {
        return body.to_string();
    }
    let mut end = MAX;
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &body[..end])
}

/// Parses an API base URL; only absolute http(s) URLs that can take a path are accepted.
pub fn base_url(raw: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(raw.trim_end_matches('/')).map_err(|e| e.to_string())?;
    if url.cannot_be_a_base() || !matches!(url.scheme(), "http" | "https") {
        return Err("must be an http(s) URL".into());
    }
    Ok(url)
}

/// `base` with `segments` appended, each percent-encoded (pool and block names may hold spaces).
pub fn join(base: &reqwest::Url, segments: &[&str]) -> reqwest::Url {
    let mut url = base.clone();
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(segments);
    }
    url
}

/// The timeout of one request: [`REQUEST_TIMEOUT`], cut to what is left before `deadline`
/// (but at least a second, so a request is never sent doomed).
pub fn timeout(deadline: Option<tokio::time::Instant>) -> Duration {
    match deadline {
        Some(d) => REQUEST_TIMEOUT.min(
            d.saturating_duration_since(tokio::time::Instant::now())
                .max(Duration::from_secs(1)),
        ),
        None => REQUEST_TIMEOUT,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn rate_limit_headers_are_read_when_any_is_there() {
        let mut headers = HeaderMap::new();
        assert_eq!(RateLimit::from_headers(&headers), None);
        headers.insert("x-ratelimit-remaining", HeaderValue::from_static(" 42 "));
        headers.insert(
            "x-ratelimit-reset",
            HeaderValue::from_static("not a number"),
        );
        assert_eq!(
            RateLimit::from_headers(&headers),
            Some(RateLimit {
                limit: None,
                remaining: Some(42),
                reset_secs: None
            })
        );
    }
}

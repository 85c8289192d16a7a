//! Instant dispatch's hand-off: the webhook function queues an event for the instant-dispatch
//! function with an asynchronous `Invoke` (`X-Amz-Invocation-Type: Event`) and answers the
//! automation's call as soon as Lambda has accepted the event (202), instead of after a quick
//! dispatch of its own.
//!
//! The `Invoke` is one POST, signed with SigV4 by `aws-sigv4` (in the tree already, through
//! `aws-config`) and sent with reqwest: `aws-sdk-lambda` would bring a client for every Lambda
//! operation to send this one (its cost in build time and binary size is in docs/deploy.md,
//! "Build").

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sdk_secretsmanager::error::DisplayErrorContext;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use reqwest::header::HeaderValue;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::endpoint::{HandOff, HandOffError};

/// The `source` of the events the webhook function sends; anything else the dispatch binary
/// receives is the schedule's tick.
pub const INSTANT_SOURCE: &str = "prefect-nf.instant";

/// The longest the `Invoke` may take before the webhook dispatches the call itself: Lambda
/// accepts an event within tens of milliseconds.
pub const INVOKE_TIMEOUT: Duration = Duration::from_secs(2);

/// The headers of the `Invoke`, all signed (with `host` and SigV4's own).
const HEADERS: [(&str, &str); 2] = [
    ("content-type", "application/json"),
    ("x-amz-invocation-type", "Event"),
];

/// The event the webhook function sends: its source, and when it was sent, so that the
/// container receiving it can tell whether a poll of its own came after it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InstantEvent {
    pub source: String,
    /// Unix milliseconds, by the webhook function's clock.
    pub sent_at_ms: u64,
}

impl InstantEvent {
    pub fn now() -> Self {
        InstantEvent {
            source: INSTANT_SOURCE.to_string(),
            sent_at_ms: unix_ms(SystemTime::now()),
        }
    }
}

fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// What an invocation of the dispatch binary is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// The schedule's tick: whatever the payload is, as long as it is not an instant event (an
    /// EventBridge Scheduler target without `Input` is not promised an EventBridge event).
    Scheduled,
    /// An instant-dispatch call handed over by the webhook function, and when it was sent (when
    /// the payload says so readably).
    Instant { sent_at: Option<SystemTime> },
}

/// Reads the payload leniently: only `source` decides.
pub fn trigger(payload: &Value) -> Trigger {
    if payload.get("source").and_then(Value::as_str) != Some(INSTANT_SOURCE) {
        return Trigger::Scheduled;
    }
    let sent_at = payload
        .get("sent_at_ms")
        .and_then(Value::as_u64)
        .map(|ms| UNIX_EPOCH + Duration::from_millis(ms));
    Trigger::Instant { sent_at }
}

#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error("PFNF_INSTANT_FUNCTION is set, but no AWS region is configured (AWS_REGION)")]
    NoRegion,
    #[error("PFNF_INSTANT_FUNCTION is set, but no AWS credentials are configured")]
    NoCredentials,
    #[error("the Lambda endpoint {url:?} is invalid: {rule}")]
    Endpoint { url: String, rule: String },
    #[error("could not build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    #[error("could not read the AWS credentials: {0}")]
    Credentials(String),
    #[error("could not sign the Invoke request: {0}")]
    Sign(String),
    /// Not sent, or no answer in time; `reason` carries the causes (a refused connection, a
    /// timeout), which reqwest's own message leaves out.
    #[error("Invoke of {function} failed: {reason}")]
    Transport { function: String, reason: String },
    #[error("Invoke of {function} answered {status}: {body}")]
    Refused {
        function: String,
        status: u16,
        body: String,
    },
}

/// The asynchronous `Invoke` of one function.
#[derive(Debug)]
pub struct Invoker {
    http: reqwest::Client,
    function: String,
    url: reqwest::Url,
    region: String,
    credentials: SharedCredentialsProvider,
}

impl Invoker {
    /// `function` (a name or an ARN) through the SDK's usual configuration: the region (an
    /// ARN's own first), the credentials, and the endpoint from `AWS_ENDPOINT_URL_LAMBDA` or
    /// `AWS_ENDPOINT_URL` when set (as every AWS SDK reads them). The credentials are resolved
    /// for each call: in Lambda they are the function role's, in the environment, which the
    /// provider chain reads first, at no cost.
    pub async fn from_env(
        function: &str,
        get: &(dyn Fn(&str) -> Option<String> + Sync),
    ) -> Result<Invoker, InvokeError> {
        let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        let region = arn_region(function)
            .map(str::to_string)
            .or_else(|| config.region().map(|r| r.to_string()))
            .ok_or(InvokeError::NoRegion)?;
        let endpoint = get("AWS_ENDPOINT_URL_LAMBDA")
            .or_else(|| config.endpoint_url().map(str::to_string))
            .unwrap_or_else(|| default_endpoint(&region));
        let credentials = config
            .credentials_provider()
            .ok_or(InvokeError::NoCredentials)?;
        Invoker::new(function, &endpoint, &region, credentials)
    }

    pub fn new(
        function: &str,
        endpoint: &str,
        region: &str,
        credentials: SharedCredentialsProvider,
    ) -> Result<Invoker, InvokeError> {
        let base = crate::http::base_url(endpoint).map_err(|rule| InvokeError::Endpoint {
            url: endpoint.to_string(),
            rule,
        })?;
        Ok(Invoker {
            http: crate::http::client().map_err(InvokeError::Client)?,
            function: function.to_string(),
            url: invocations_url(&base, function),
            region: region.to_string(),
            credentials,
        })
    }

    /// Queues `event` for the function: `Ok` once Lambda has accepted it.
    pub async fn invoke(&self, event: &InstantEvent) -> Result<(), InvokeError> {
        let body = serde_json::to_vec(event).expect("an instant event serializes");
        let mut request = self.http.post(self.url.clone()).timeout(INVOKE_TIMEOUT);
        for (name, value) in HEADERS {
            request = request.header(name, value);
        }
        for (name, value) in self.signature(&body).await? {
            request = request.header(name, value);
        }
        let transport = |e: reqwest::Error| InvokeError::Transport {
            function: self.function.clone(),
            reason: DisplayErrorContext(&e).to_string(),
        };
        let response = request.body(body).send().await.map_err(transport)?;
        let status = response.status();
        if status == reqwest::StatusCode::ACCEPTED {
            return Ok(());
        }
        let body = response.text().await.unwrap_or_default();
        Err(InvokeError::Refused {
            function: self.function.clone(),
            status: status.as_u16(),
            body: crate::http::excerpt(&body),
        })
    }

    /// SigV4's headers for a POST of `body` with [`HEADERS`], signed now (the signature and the
    /// session token marked sensitive, so that no log shows them).
    async fn signature(
        &self,
        body: &[u8],
    ) -> Result<Vec<(&'static str, HeaderValue)>, InvokeError> {
        let credentials = self
            .credentials
            .provide_credentials()
            .await
            .map_err(|e| InvokeError::Credentials(DisplayErrorContext(&e).to_string()))?;
        let identity = credentials.into();
        let sign_error = |e: &dyn std::fmt::Display| InvokeError::Sign(e.to_string());
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("lambda")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| sign_error(&e))?
            .into();
        let request = SignableRequest::new(
            "POST",
            self.url.as_str(),
            HEADERS.into_iter(),
            SignableBody::Bytes(body),
        )
        .map_err(|e| sign_error(&e))?;
        let (instructions, _) = sign(request, &params)
            .map_err(|e| sign_error(&e))?
            .into_parts();
        let (headers, _) = instructions.into_parts();
        headers
            .into_iter()
            .map(|h| {
                let mut value = HeaderValue::from_str(h.value()).map_err(|e| sign_error(&e))?;
                value.set_sensitive(h.sensitive());
                Ok((h.name(), value))
            })
            .collect()
    }
}

impl HandOff for Invoker {
    fn hand_off(&self) -> Pin<Box<dyn Future<Output = Result<(), HandOffError>> + Send + '_>> {
        Box::pin(async move { Ok(self.invoke(&InstantEvent::now()).await?) })
    }
}

/// `POST /2015-03-31/functions/{function}/invocations`, the function percent-encoded.
fn invocations_url(base: &reqwest::Url, function: &str) -> reqwest::Url {
    crate::http::join(base, &["2015-03-31", "functions", function, "invocations"])
}

/// The region of a function ARN (`arn:<partition>:lambda:<region>:<account>:function:<name>`).
fn arn_region(function: &str) -> Option<&str> {
    let mut parts = function.strip_prefix("arn:")?.split(':');
    parts.nth(2).filter(|r| !r.is_empty())
}

/// Lambda's regional endpoint (China's regions have their own domain).
fn default_endpoint(region: &str) -> String {
    let domain = if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    };
    format!("https://lambda.{region}.{domain}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_the_instant_source_makes_an_instant_invocation() {
        let sent = json!({"source": INSTANT_SOURCE, "sent_at_ms": 1_795_774_070_896u64});
        assert_eq!(
            trigger(&sent),
            Trigger::Instant {
                sent_at: Some(UNIX_EPOCH + Duration::from_millis(1_795_774_070_896))
            }
        );
        assert_eq!(
            trigger(&json!({"source": INSTANT_SOURCE, "sent_at_ms": "soon"})),
            Trigger::Instant { sent_at: None },
            "instant, but never folded"
        );
        let event = InstantEvent::now();
        assert!(matches!(
            trigger(&serde_json::to_value(&event).unwrap()),
            Trigger::Instant { sent_at: Some(_) }
        ));
        // The schedule's event in whatever shape it comes.
        for tick in [
            json!({"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}}),
            json!({}),
            json!(null),
            json!("prefect-nf.instant"),
            json!({"source": "prefect-nf.instant.other"}),
        ] {
            assert_eq!(trigger(&tick), Trigger::Scheduled, "{tick}");
        }
    }

    #[test]
    fn the_invoke_url_regions_and_endpoints() {
        let base = crate::http::base_url("https://lambda.eu-west-1.amazonaws.com").unwrap();
        assert_eq!(
            invocations_url(&base, "stack-InstantDispatchFunction-AbC_1").as_str(),
            "https://lambda.eu-west-1.amazonaws.com/2015-03-31/functions/stack-InstantDispatchFunction-AbC_1/invocations"
        );
        let arn = "arn:aws:lambda:eu-west-1:123456789012:function:f";
        assert_eq!(
            invocations_url(&base, arn).path(),
            "/2015-03-31/functions/arn:aws:lambda:eu-west-1:123456789012:function:f/invocations"
        );
        assert_eq!(arn_region(arn), Some("eu-west-1"));
        assert_eq!(
            arn_region("arn:aws-cn:lambda:cn-north-1:123456789012:function:f"),
            Some("cn-north-1")
        );
        assert_eq!(arn_region("my-function"), None);
        assert_eq!(
            default_endpoint("us-east-1"),
            "https://lambda.us-east-1.amazonaws.com"
        );
        assert_eq!(
            default_endpoint("cn-north-1"),
            "https://lambda.cn-north-1.amazonaws.com.cn"
        );
    }
}

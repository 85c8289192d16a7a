//! The Lambda handlers, called in-process with real event payloads (the pattern the
//! aws-lambda-rust-runtime README recommends), against the real Prefect server and the emulator;
//! instant dispatch's hand-off against a stand-in for the Lambda API on 127.0.0.1.

use crate::helpers;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::helpers::{DISPATCH_TOKEN, Options, TestApp, WEBHOOK_TOKEN};
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use lambda_runtime::{Context, LambdaEvent};
use prefect_nf::lambda::invoke::{INSTANT_SOURCE, Invoker};
use prefect_nf::lambda::{self, InstantOutcome, Invocation};
use prefect_nf::routes::{DISPATCH_TOKEN_HEADER, INSTANT_PATH};
use serde_json::{Value, json};

fn schedule_event(seconds_left: u64) -> LambdaEvent<Value> {
    let payload = serde_json::from_str(include_str!("fixtures/eventbridge-schedule.json")).unwrap();
    event(payload, seconds_left)
}

/// The dispatch binary's event: `payload`, with `seconds_left` until the invocation's deadline.
fn event(payload: Value, seconds_left: u64) -> LambdaEvent<Value> {
    let mut context = Context::default();
    context.request_id = "req-dispatch-1".into();
    context.deadline = unix_ms(SystemTime::now()) + seconds_left * 1000;
    LambdaEvent::new(payload, context)
}

fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// A Function URL request (payload format 2.0) posting `body` to the webhook path.
fn function_url_request(token: &str, body: &Value) -> lambda_http::Request {
    let mut raw: Value =
        serde_json::from_str(include_str!("fixtures/function-url-request.json")).unwrap();
    raw["rawPath"] = json!("/northflank/webhook");
    raw["rawQueryString"] = json!("");
    raw["requestContext"]["http"]["method"] = json!("POST");
    raw["requestContext"]["http"]["path"] = json!("/northflank/webhook");
    raw["headers"]["content-type"] = json!("application/json");
    raw["headers"]["x-northflank-notification-integration-token"] = json!(token);
    raw["headers"]["x-northflank-notification-integration-event-type"] = json!(body["event"]);
    raw["body"] = json!(body.to_string());
    lambda_http::request::from_str(&raw.to_string()).expect("a valid Function URL request")
}

/// The Lambda glue around the test app's worker.
fn lambda_app(app: &TestApp) -> lambda::App {
    lambda::App::new(
        app.worker.clone(),
        prefect_nf::config::Source::environment(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dispatch_handler_runs_an_invocation_from_a_schedule_event() {
    let app = TestApp::spawn().await;
    let deployment = app.deployment(json!({})).await;
    let id = app.scripted_run(deployment, "hang").await;

    let lambda_app = lambda_app(&app);
    let invocation = lambda::dispatch(&lambda_app, schedule_event(60))
        .await
        .unwrap();
    let Invocation::Scheduled(summary) = invocation else {
        panic!("{invocation:?}");
    };
    assert_eq!(
        (summary.dispatch.polls, summary.dispatch.submitted),
        (1, 1),
        "{summary:?}"
    );
    assert!(
        app.flow_run_json(id).await["infrastructure_pid"]
            .as_str()
            .is_some()
    );
    // EventBridge Scheduler without an `Input` is not promised to send an EventBridge event:
    // whatever is not an instant-dispatch event is the tick.
    let id = app.scripted_run(deployment, "hang").await;
    let invocation = lambda::dispatch(&lambda_app, event(json!({}), 60))
        .await
        .unwrap();
    let Invocation::Scheduled(summary) = invocation else {
        panic!("{invocation:?}");
    };
    assert_eq!(summary.dispatch.submitted, 1, "{summary:?}");
    assert!(
        app.flow_run_json(id).await["infrastructure_pid"]
            .as_str()
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_handler_settles_a_function_url_request() {
    let options = Options {
        register_webhook: false,
        ..Default::default()
    };
    let app = TestApp::spawn_with(options).await;
    let deployment = app.deployment(json!({})).await;
    let id = app.scripted_run(deployment, "crash:0.1").await;
    assert_eq!(app.dispatch_once().await.dispatch.submitted, 1);
    let run = app
        .wait_for_concluded_run(id, Duration::from_secs(10))
        .await;
    let body = helpers::notification_body("job-run:failure", id, &run, &app.project);

    let lambda_app = lambda_app(&app);
    let refused = lambda::webhook(&lambda_app, function_url_request("wrong", &body))
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(app.state_type(id).await, "RUNNING");

    let response = lambda::webhook(&lambda_app, function_url_request(WEBHOOK_TOKEN, &body))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = serde_json::from_slice(response.body().as_ref()).unwrap();
    assert_eq!(answer["action"], "crashed", "{answer}");
    assert_eq!(app.state_type(id).await, "CRASHED");
    assert!(!app.jobs().contains(&format!("pf-{id}")));
}

/// The automation's call, as a Function URL request (payload format 2.0) on its path.
fn instant_call(app: &TestApp, token: &str) -> lambda_http::Request {
    let mut raw: Value =
        serde_json::from_str(include_str!("fixtures/function-url-request.json")).unwrap();
    raw["rawPath"] = json!(INSTANT_PATH);
    raw["rawQueryString"] = json!("");
    raw["requestContext"]["http"]["method"] = json!("POST");
    raw["requestContext"]["http"]["path"] = json!(INSTANT_PATH);
    raw["headers"]["content-type"] = json!("application/json");
    raw["headers"][DISPATCH_TOKEN_HEADER] = json!(token);
    raw["body"] = json!(json!({"work_pool": app.pool}).to_string());
    lambda_http::request::from_str(&raw.to_string()).unwrap()
}

/// Without an instant-dispatch function, the automation's call reaches the quick dispatch
/// through the webhook function itself, on its path, and is answered after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_function_answers_instant_dispatch_on_its_path() {
    let app = TestApp::spawn().await;
    let deployment = app.deployment(json!({})).await;
    let id = app.scripted_run(deployment, "hang").await;
    let lambda_app = lambda_app(&app);
    // Northflank's token is not the dispatch token.
    let refused = lambda::webhook(&lambda_app, instant_call(&app, WEBHOOK_TOKEN))
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let response = lambda::webhook(&lambda_app, instant_call(&app, DISPATCH_TOKEN))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = serde_json::from_slice(response.body().as_ref()).unwrap();
    assert_eq!(answer["summary"]["submitted"], 1, "{answer}");
    assert_eq!(answer["summary"]["polls"], 1, "{answer}");
    assert!(
        app.flow_run_json(id).await["infrastructure_pid"]
            .as_str()
            .is_some()
    );
}

/// One request a stand-in for the Lambda API received.
#[derive(Clone, Debug)]
struct Received {
    method: String,
    path: String,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or_else(|| panic!("no {name} header: {:?}", self.headers))
    }
}

/// A stand-in for the Lambda API on 127.0.0.1: it records every request and answers `status`
/// with `body` (202 and nothing: Lambda has queued the event). Its URL, and what it received.
async fn lambda_api(status: u16, body: &'static str) -> (String, Arc<Mutex<Vec<Received>>>) {
    let received = Arc::new(Mutex::new(Vec::new()));
    let seen = received.clone();
    let router = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let seen = seen.clone();
        async move {
            let (parts, bytes) = request.into_parts();
            let bytes = axum::body::to_bytes(bytes, 1 << 20).await.unwrap();
            seen.lock().unwrap().push(Received {
                method: parts.method.to_string(),
                path: parts.uri.path().to_string(),
                headers: parts.headers,
                body: bytes.to_vec(),
            });
            (axum::http::StatusCode::from_u16(status).unwrap(), body)
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (url, received)
}

const ACCESS_KEY: &str = "AKIDPREFECTNFTEST";
const SECRET_KEY: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const SESSION_TOKEN: &str = "session-token-of-the-webhook-role";
const FUNCTION: &str = "prefect-nf-InstantDispatchFunction-Test1";

/// The webhook function's app, handing instant-dispatch calls to [`FUNCTION`] through the
/// Lambda API at `endpoint`, with the role credentials a Lambda container has.
fn handing_off(app: &TestApp, endpoint: &str) -> lambda::App {
    let credentials = Credentials::new(
        ACCESS_KEY,
        SECRET_KEY,
        Some(SESSION_TOKEN.into()),
        None,
        "tests",
    );
    let invoker = Invoker::new(
        FUNCTION,
        endpoint,
        "us-east-1",
        SharedCredentialsProvider::new(credentials),
    )
    .unwrap();
    lambda_app(app).handing_off_to(invoker)
}

/// The Authorization header's parts: `Credential`, `SignedHeaders`, `Signature`.
fn authorization(received: &Received) -> (String, String, String) {
    let value = received.header("authorization");
    let rest = value
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .unwrap_or_else(|| panic!("not SigV4: {value}"));
    let part = |name: &str| {
        rest.split(", ")
            .find_map(|p| p.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name} in {value}"))
            .to_string()
    };
    (part("Credential"), part("SignedHeaders"), part("Signature"))
}

/// The signature botocore (the AWS CLI's signer, an implementation independent of ours)
/// computes for the request as received: the one AWS would expect.
fn botocore_signature(received: &Received, url: &str) -> String {
    let (_, signed, _) = authorization(received);
    let headers: serde_json::Map<String, Value> = signed
        .split(';')
        .filter(|h| *h != "host")
        .map(|h| (h.to_string(), json!(received.header(h))))
        .collect();
    let input = json!({
        "method": received.method, "url": format!("{url}{}", received.path),
        "headers": headers, "body": String::from_utf8(received.body.clone()).unwrap(),
        "access_key": ACCESS_KEY, "secret_key": SECRET_KEY, "token": SESSION_TOKEN,
        "region": "us-east-1", "service": "lambda",
    });
    let mut child = std::process::Command::new(helpers::repo().join(".venv/bin/python"))
        .arg(helpers::repo().join("tests/it/fixtures/sigv4.py"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the project venv has botocore: run through scripts/test");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "sigv4.py failed");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The summary of the quick dispatch an instant event ran.
fn quick_dispatch(invocation: &Invocation) -> &prefect_nf::dispatch::Summary {
    match invocation {
        Invocation::Instant {
            instant: InstantOutcome::Dispatched(summary),
        } => summary,
        other => panic!("not a quick dispatch: {other:?}"),
    }
}

/// With an instant-dispatch function, the webhook function answers the automation's call as
/// soon as Lambda has accepted an asynchronous `Invoke` (signed as AWS expects it), without
/// dispatching; the dispatch function, given that event, runs the quick dispatch that submits
/// the run, and a call sent before a quick dispatch that took every run due is folded into it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instant_calls_are_handed_to_the_dispatch_function_and_answered_at_once() {
    let app = TestApp::spawn().await;
    let deployment = app.deployment(json!({})).await;
    let id = app.scripted_run(deployment, "hang").await;
    let (lambda_url, received) = lambda_api(202, "").await;
    let webhook = handing_off(&app, &lambda_url);

    let refused = lambda::webhook(&webhook, instant_call(&app, WEBHOOK_TOKEN))
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    assert!(
        received.lock().unwrap().is_empty(),
        "a refused call hands nothing over"
    );

    let sent = SystemTime::now();
    let started = std::time::Instant::now();
    let response = lambda::webhook(&webhook, instant_call(&app, DISPATCH_TOKEN))
        .await
        .unwrap();
    let answered = started.elapsed();
    println!(
        "instant hand-off (in-process): 202 in {} ms",
        answered.as_millis()
    );
    assert_eq!(response.status(), 202);
    assert_eq!(response.body().as_ref(), br#"{"accepted":true}"#);
    assert!(answered < Duration::from_secs(1), "{answered:?}");
    // Handed over, not dispatched: the run is still waiting.
    let run = app.flow_run_json(id).await;
    assert_eq!(run["state"]["type"], "SCHEDULED", "{run}");
    assert!(run["infrastructure_pid"].is_null(), "{run}");

    let invoke = received.lock().unwrap().pop().expect("one Invoke");
    assert_eq!(invoke.method, "POST");
    assert_eq!(
        invoke.path,
        format!("/2015-03-31/functions/{FUNCTION}/invocations")
    );
    assert_eq!(invoke.header("x-amz-invocation-type"), "Event");
    assert_eq!(invoke.header("x-amz-security-token"), SESSION_TOKEN);
    let (credential, signed, signature) = authorization(&invoke);
    let day = chrono::Utc::now().format("%Y%m%d");
    assert_eq!(
        credential,
        format!("{ACCESS_KEY}/{day}/us-east-1/lambda/aws4_request")
    );
    assert_eq!(
        signed,
        "content-type;host;x-amz-date;x-amz-invocation-type;x-amz-security-token"
    );
    assert_eq!(signature, botocore_signature(&invoke, &lambda_url));
    let payload: Value = serde_json::from_slice(&invoke.body).unwrap();
    assert_eq!(payload["source"], INSTANT_SOURCE, "{payload}");
    let sent_at = payload["sent_at_ms"].as_u64().unwrap();
    assert!(
        (unix_ms(sent)..=unix_ms(SystemTime::now())).contains(&sent_at),
        "{payload}"
    );

    // Lambda delivers the event to the dispatch function (another container).
    let dispatcher = lambda_app(&app);
    let dispatched = lambda::dispatch(&dispatcher, event(payload.clone(), 30))
        .await
        .unwrap();
    let summary = quick_dispatch(&dispatched);
    assert_eq!((summary.polls, summary.submitted), (1, 1), "{summary:?}");
    assert!(
        app.flow_run_json(id).await["infrastructure_pid"]
            .as_str()
            .is_some()
    );
    assert_eq!(
        serde_json::to_value(&dispatched).unwrap()["instant"]["dispatched"]["submitted"],
        1
    );

    // A call sent well before that dispatch began: its run was there for the poll. No request.
    let prefect_requests = app.worker.prefect.requests_sent();
    let older = json!({"source": INSTANT_SOURCE, "sent_at_ms": sent_at - 5_000});
    let folded = lambda::dispatch(&dispatcher, event(older, 30))
        .await
        .unwrap();
    assert!(
        matches!(
            folded,
            Invocation::Instant {
                instant: InstantOutcome::Folded
            }
        ),
        "{folded:?}"
    );
    assert_eq!(
        serde_json::to_value(&folded).unwrap(),
        json!({"instant": "folded"})
    );
    assert_eq!(app.worker.prefect.requests_sent(), prefect_requests);
    // A call sent since: a poll of its own.
    let newer = json!({"source": INSTANT_SOURCE, "sent_at_ms": unix_ms(SystemTime::now())});
    let again = lambda::dispatch(&dispatcher, event(newer, 30))
        .await
        .unwrap();
    let summary = quick_dispatch(&again);
    assert_eq!((summary.polls, summary.submitted), (1, 0), "{summary:?}");
}

/// When Lambda refuses the `Invoke` (a missing permission), cannot be reached, or does not
/// answer in time, the webhook function runs the quick dispatch itself, as without an
/// instant-dispatch function: the call is answered later, but its run is not left for the next
/// tick.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_hand_off_dispatches_the_call_here() {
    let app = TestApp::spawn().await;
    let deployment = app.deployment(json!({})).await;
    let denied = r#"{"Type":"User","message":"User: arn:aws:sts::123456789012:assumed-role/webhook is not authorized to perform: lambda:InvokeFunction"}"#;
    let (refusing, received) = lambda_api(403, denied).await;
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    // Takes connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_url = format!("http://{}", silent.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((connection, _)) = silent.accept().await {
            held.push(connection);
        }
    });
    for endpoint in [refusing, closed, silent_url] {
        let id = app.scripted_run(deployment, "hang").await;
        let webhook = handing_off(&app, &endpoint);
        let started = std::time::Instant::now();
        let response = lambda::webhook(&webhook, instant_call(&app, DISPATCH_TOKEN))
            .await
            .unwrap();
        // The hand-off gives up after its timeout; then one quick dispatch.
        let took = started.elapsed();
        assert!(
            took < prefect_nf::lambda::invoke::INVOKE_TIMEOUT + Duration::from_secs(10),
            "{endpoint}: {took:?}"
        );
        assert_eq!(response.status(), 200, "{endpoint}");
        let answer: Value = serde_json::from_slice(response.body().as_ref()).unwrap();
        assert_eq!(answer["summary"]["submitted"], 1, "{endpoint}: {answer}");
        assert!(
            app.flow_run_json(id).await["infrastructure_pid"]
                .as_str()
                .is_some(),
            "{endpoint}"
        );
    }
    assert_eq!(
        received.lock().unwrap().len(),
        1,
        "the refused Invoke was sent once"
    );
}

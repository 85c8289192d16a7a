//! Property tests of the webhook's front door: whatever arrives (arbitrary bytes, arbitrary JSON,
//! JSON shaped like a notification with hostile values), the handler never panics, answers with
//! a status Northflank understands, and calls neither Prefect nor Northflank unless the body
//! names a `job-run:*` event for one of this worker's jobs.

use crate::helpers;

use std::sync::OnceLock;

use prefect_nf::ids::JobName;
use prefect_nf::routes::{NOTIFICATION_TOKEN_HEADER as TOKEN_HEADER, WEBHOOK_PATH};
use prefect_nf::webhook::event;
use proptest::prelude::*;
use serde_json::{Map, Value};

struct Fixture {
    worker: prefect_nf::worker::Worker,
    router: axum::Router,
    rt: tokio::runtime::Runtime,
}

/// One worker, router and runtime for every case (building HTTP clients is the slow part). The
/// worker's clients point at a closed port: a call would be counted.
fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let worker =
            helpers::worker_for("http://127.0.0.1:9/api", "pool", "http://127.0.0.1:9", "w");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let router = helpers::router(&worker);
        Fixture { worker, router, rt }
    })
}

fn calls(w: &prefect_nf::worker::Worker) -> u64 {
    w.prefect.requests_sent() + w.northflank.requests_sent()
}

/// Sends one body through the endpoint with `tokens` (one header each): the status, and the
/// calls it made.
fn handle(tokens: &[&str], body: &[u8]) -> (u16, u64) {
    let f = fixture();
    let before = calls(&f.worker);
    let headers: Vec<(&str, &str)> = tokens.iter().map(|t| (TOKEN_HEADER, *t)).collect();
    let request = helpers::post(WEBHOOK_PATH, &headers, body.to_vec());
    let (status, _) = f.rt.block_on(helpers::call(&f.router, request));
    (status, calls(&f.worker) - before)
}

fn authorized() -> [&'static str; 1] {
    [helpers::WEBHOOK_TOKEN]
}

/// Whether the handler may call out for this body: only for a job-run event naming one of our
/// jobs.
fn targets_our_job(body: &[u8]) -> bool {
    event::parse(body, None, None)
        .ok()
        .filter(|n| n.is_job_run())
        .and_then(|n| n.job_id)
        .and_then(|job| JobName::parse(&job))
        .is_some()
}

/// Strings that matter to the parser, mixed with arbitrary ones.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("job-run:success".to_string()),
        Just("job-run:failure".to_string()),
        Just("job-run:abort".to_string()),
        Just("pf-not-a-uuid".to_string()),
        Just("pf-x-0123456789abcdef01234567".to_string()),
        Just(String::new()),
        ".{0,40}",
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("event".to_string()),
        Just("data".to_string()),
        Just("jobRun".to_string()),
        Just("run".to_string()),
        Just("job_run".to_string()),
        Just("job".to_string()),
        Just("project".to_string()),
        Just("id".to_string()),
        Just("name".to_string()),
        Just("runName".to_string()),
        Just("jobRunId".to_string()),
        "[a-zA-Z_]{1,8}",
    ]
}

/// JSON trees built from those keys and values, nested a few levels.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Handles one body with the right token; asserts the status and that nothing was called.
fn check(body: &[u8]) -> Result<(), TestCaseError> {
    let (status, calls) = handle(&authorized(), body);
    prop_assert!(
        matches!(status, 200 | 400 | 413),
        "status {} for {:?}",
        status,
        String::from_utf8_lossy(body)
    );
    prop_assert_eq!(calls, 0);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic_or_call_out(body in prop::collection::vec(any::<u8>(), 0..2048)) {
        prop_assume!(!targets_our_job(&body));
        check(&body)?;
    }

    #[test]
    fn arbitrary_json_never_panics_or_calls_out(value in json()) {
        let body = serde_json::to_vec(&value).unwrap();
        prop_assume!(!targets_our_job(&body));
        check(&body)?;
    }

    #[test]
    fn notification_shaped_json_never_panics_or_calls_out(
        event in text(),
        data in json(),
        header_event in proptest::option::of(text()),
    ) {
        let body = serde_json::to_vec(&serde_json::json!({"event": event, "data": data})).unwrap();
        prop_assume!(!targets_our_job(&body));
        // The parser itself, with the event header as well.
        let _ = event::parse(&body, header_event.as_deref(), Some("id"));
        check(&body)?;
    }

    #[test]
    fn bodies_without_the_token_are_refused(value in json(), token in proptest::option::of("[ -~]{0,40}")) {
        prop_assume!(token.as_deref() != Some(helpers::WEBHOOK_TOKEN));
        let tokens: Vec<&str> = token.as_deref().into_iter().collect();
        let body = serde_json::to_vec(&value).unwrap();
        prop_assert_eq!(handle(&tokens, &body), (401, 0));
    }

    #[test]
    fn a_second_token_header_is_refused_whatever_it_holds(value in json(), other in "[ -~]{0,40}") {
        let body = serde_json::to_vec(&value).unwrap();
        prop_assert_eq!(handle(&[helpers::WEBHOOK_TOKEN, &other], &body), (401, 0));
        prop_assert_eq!(handle(&[&other, helpers::WEBHOOK_TOKEN], &body), (401, 0));
    }

    #[test]
    fn oversized_bodies_are_refused(extra in 1usize..4096) {
        let limit = fixture().worker.settings.webhook.max_body;
        prop_assert_eq!(handle(&authorized(), &vec![b'{'; limit + extra]), (413, 0));
    }
}

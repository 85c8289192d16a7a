//! Helpers shared by the integration tests.

#![allow(dead_code)] // each test crate uses a different subset

use std::collections::HashMap;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use serde_json::{Map, Value};

/// Runs a future whose awaits all complete immediately (in-memory lookups), without an async runtime.
pub fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
    }
}

/// The object inside a JSON value; panics in tests only, on malformed test data.
pub fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("test data must be an object, got {other}"),
    }
}

/// An environment lookup over a fixed map, standing in for `os.environ`.
pub fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |name: &str| map.get(name).cloned()
}

pub fn no_env(_: &str) -> Option<String> {
    None
}

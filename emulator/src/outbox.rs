//! Webhook dispatches between being emitted and being sent, with the per (run, integration)
//! ordering state. It sits below `state`, which owns the queues, so that the shared state does
//! not depend on the sender in `webhook`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;

#[derive(Clone)]
pub(crate) struct Target {
    pub id: String,
    pub name: String,
    pub url: String,
    pub secret: Option<String>,
}

/// One event bound for one integration.
pub(crate) struct Dispatch {
    pub target: Target,
    pub event: String,
    pub event_id: String,
    pub run_id: String,
    pub body: Arc<Value>,
    pub duplicate: bool,
    pub reordered: bool,
    pub delay: Duration,
}

/// (run ID, integration ID).
pub(crate) type Key = (String, String);

/// Per (run, integration) ordering state.
#[derive(Default)]
pub(crate) struct Queues {
    /// The completion signal of the latest in-order delivery, with its id.
    chains: HashMap<Key, (u64, watch::Receiver<bool>)>,
    /// Deliveries held back by the reorder fault.
    held: HashMap<Key, Vec<Dispatch>>,
    next_chain_id: u64,
}

impl Queues {
    /// Makes `done` the latest in-order delivery of `key`. Returns the signal of the one before
    /// it, which must finish first, and the new link's id.
    pub fn chain(
        &mut self,
        key: Key,
        done: watch::Receiver<bool>,
    ) -> (Option<watch::Receiver<bool>>, u64) {
        self.next_chain_id += 1;
        let id = self.next_chain_id;
        let previous = self.chains.insert(key, (id, done)).map(|(_, rx)| rx);
        (previous, id)
    }

    /// Forgets the chain of `key` unless a later delivery has joined it since.
    pub fn unchain(&mut self, key: &Key, id: u64) {
        if self
            .chains
            .get(key)
            .is_some_and(|(latest, _)| *latest == id)
        {
            self.chains.remove(key);
        }
    }

    pub fn hold(&mut self, key: Key, d: Dispatch) {
        self.held.entry(key).or_default().push(d);
    }

    /// Takes back one held dispatch, unless it was released meanwhile.
    pub fn unhold(&mut self, key: &Key, event_id: &str) -> Option<Dispatch> {
        let list = self.held.entry(key.clone()).or_default();
        let found = list
            .iter()
            .position(|d| d.event_id == event_id)
            .map(|i| list.remove(i));
        if list.is_empty() {
            self.held.remove(key);
        }
        found
    }

    /// Takes everything held for `key`.
    pub fn release(&mut self, key: &Key) -> Vec<Dispatch> {
        self.held.remove(key).unwrap_or_default()
    }
}

//! Sending: one HTTP POST per attempt with the five documented headers, retries with doubling
//! backoff, and the integration's failure accounting (§5.4).

use tokio::sync::watch;

use crate::config::TokenHeader;
use crate::model::Delivery;
use crate::outbox::Dispatch;
use crate::state::{App, lock, now_ms, push_ring};

const HEADER_PREFIX: &str = "X-Northflank-Notification-Integration";

pub(super) async fn in_order(
    app: App,
    d: Dispatch,
    previous: Option<watch::Receiver<bool>>,
    done: watch::Sender<bool>,
    chain_id: u64,
) {
    if !d.delay.is_zero() {
        tokio::time::sleep(d.delay).await;
    }
    if let Some(mut previous) = previous {
        // An error means the previous task is gone; nothing left to wait for.
        let _ = previous.wait_for(|finished| *finished).await;
    }
    let ok = attempt(&app, &d, 1, false).await;
    done.send_replace(true);
    let key = (d.run_id.clone(), d.target.id.clone());
    lock(&app.hooks).unchain(&key, chain_id);
    release_held(&app, &d.run_id, &d.target.id);
    finish(app, d, ok).await;
}

pub(super) async fn out_of_order(app: App, d: Dispatch) {
    if !d.delay.is_zero() {
        tokio::time::sleep(d.delay).await;
    }
    let ok = attempt(&app, &d, 1, false).await;
    finish(app, d, ok).await;
}

/// Sends what the reorder fault held back for this run and integration.
pub(super) fn release_held(app: &App, run_id: &str, integration_id: &str) {
    let key = (run_id.to_owned(), integration_id.to_owned());
    let held = lock(&app.hooks).release(&key);
    for d in held {
        app.spawn_background(out_of_order(app.clone(), d));
    }
}

async fn finish(app: App, d: Dispatch, mut ok: bool) {
    if d.duplicate {
        app.count(|c| c.webhooks_duplicated += 1);
        attempt(&app, &d, 1, true).await;
    }
    let config = &app.config.webhooks;
    let mut backoff = config.backoff;
    let mut n = 1;
    while !ok && n <= config.retries && !app.shutting_down() {
        tokio::time::sleep(backoff).await;
        backoff = backoff.saturating_mul(2);
        n += 1;
        ok = attempt(&app, &d, n, false).await;
    }
    account(&app, &d.target.id, ok);
}

async fn attempt(app: &App, d: &Dispatch, n: u32, duplicate: bool) -> bool {
    let config = &app.config.webhooks;
    let mut request = app
        .http
        .post(&d.target.url)
        .timeout(config.delivery_timeout)
        .header(format!("{HEADER_PREFIX}-Id"), &d.target.id)
        .header(format!("{HEADER_PREFIX}-Name"), &d.target.name)
        .header(format!("{HEADER_PREFIX}-Event-Id"), &d.event_id)
        .header(format!("{HEADER_PREFIX}-Event-Type"), &d.event)
        .json(&*d.body);
    match (&d.target.secret, config.token_header_without_secret) {
        (Some(secret), _) => request = request.header(format!("{HEADER_PREFIX}-Token"), secret),
        (None, TokenHeader::Empty) => {
            request = request.header(format!("{HEADER_PREFIX}-Token"), "")
        }
        (None, TokenHeader::Absent) => {}
    }
    let (status_code, error) = match request.send().await {
        Ok(response) => (Some(response.status().as_u16()), None),
        Err(e) if e.is_timeout() => (
            None,
            Some(format!(
                "timed out after {} ms",
                config.delivery_timeout.as_millis()
            )),
        ),
        Err(e) => (None, Some(error_chain(&e))),
    };
    let delivery = Delivery {
        event: d.event.clone(),
        event_id: d.event_id.clone(),
        integration_id: d.target.id.clone(),
        run_id: d.run_id.clone(),
        url: d.target.url.clone(),
        attempt: n,
        status_code,
        error,
        dropped: false,
        duplicate,
        reordered: d.reordered,
        at: now_ms(),
    };
    let ok = delivery.succeeded();
    tracing::debug!(event = %d.event, url = %d.target.url, attempt = n, ?status_code, "webhook attempt");
    let mut state = app.state();
    state.counters.webhooks_sent += 1;
    if ok {
        state.counters.webhooks_delivered += 1;
    } else {
        state.counters.webhooks_failed += 1;
        if let Some(entry) = state.integrations.get_mut(&d.target.id) {
            let status = &mut entry.view.status;
            status.number_of_failed_requests += 1;
            status
                .time_of_first_failed_request
                .get_or_insert_with(now_ms);
        }
    }
    push_ring(
        &mut state.deliveries,
        delivery,
        app.config.delivery_log_capacity,
    );
    ok
}

/// After an event's last attempt: reset on success, count towards auto-disable on failure.
fn account(app: &App, integration_id: &str, ok: bool) {
    let limit = app.config.webhooks.disable_after_failures;
    let mut state = app.state();
    if !ok {
        state.counters.webhook_events_abandoned += 1;
    }
    let Some(entry) = state.integrations.get_mut(integration_id) else {
        return;
    };
    if ok {
        entry.consecutive_failed_events = 0;
        entry.view.status.number_of_failed_requests = 0;
        entry.view.status.time_of_first_failed_request = None;
        return;
    }
    entry.consecutive_failed_events += 1;
    if limit > 0 && entry.consecutive_failed_events >= limit && !entry.view.status.disabled {
        entry.view.status.disabled = true;
        entry.view.status.reason = Some(true);
        entry.disabled_reason = Some(format!(
            "Disabled after {limit} consecutive failed notifications"
        ));
        tracing::warn!(
            integration = integration_id,
            "notification integration disabled"
        );
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    message
}

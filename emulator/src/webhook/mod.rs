//! Job-run webhook notifications (§5.2–5.4): which integrations get an event, and the fault
//! decisions (drop, duplicate, reorder, delay) taken when the event is emitted.
//!
//! Without faults, the deliveries of one run to one integration go out in event order: each
//! first attempt waits for the previous event's first attempt. Retries are not ordered, so a
//! failing receiver can still see `start` after `success`, as §5.4 warns.

mod deliver;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;

use crate::model::Delivery;
use crate::outbox::{Dispatch, Target};
use crate::state::{App, IntegrationEntry, lock, now_ms, push_ring};

/// One job-run event, built by the run lifecycle at the moment it happens.
pub(crate) struct RunEvent {
    /// `start`, `success`, `failure`, `abort` or `terminate`.
    pub kind: &'static str,
    pub run_id: String,
    pub project_id: String,
    pub job_id: String,
    pub job_name: String,
    pub job_tags: Vec<String>,
    /// The run object as `GET .../runs/{r}` returns it at that moment.
    pub run: Value,
}

pub(crate) fn emit(app: &App, ev: RunEvent) {
    if app.shutting_down() {
        return;
    }
    let event = format!("job-run:{}", ev.kind);
    let run_key = app.config.webhooks.run_key.as_str();
    let mut data = serde_json::Map::new();
    data.insert(run_key.to_owned(), ev.run.clone());
    data.insert("job".into(), json!({"id": ev.job_id, "name": ev.job_name}));
    // Project names are not modelled; the ID stands in for the name.
    data.insert(
        "project".into(),
        json!({"id": ev.project_id, "name": ev.project_id}),
    );
    let body = Arc::new(json!({"event": event, "data": data}));
    let event_id = uuid::Uuid::new_v4().to_string();

    let targets: Vec<Target> = {
        let state = app.state();
        state
            .integrations
            .values()
            .filter(|i| admits(i, &event, &ev.project_id, &ev.job_tags))
            .map(|i| Target {
                id: i.view.id.clone(),
                name: i.view.name.clone(),
                url: i.view.webhook.clone(),
                secret: i.secret.clone(),
            })
            .collect()
    };
    for target in targets {
        let faults = &app.config.faults;
        let (drop, duplicate, reorder, delay_ms) = {
            let mut rng = lock(&app.hook_rng);
            let drop = roll(&mut rng, faults.webhook_drop_pct);
            let duplicate = roll(&mut rng, faults.webhook_duplicate_pct);
            let reorder = roll(&mut rng, faults.webhook_reorder_pct);
            let delay = match faults.webhook_delay_ms {
                0 => 0,
                max => rng.u64(0..=max),
            };
            (drop, duplicate, reorder, delay)
        };
        let dispatch = Dispatch {
            target,
            event: event.clone(),
            event_id: event_id.clone(),
            run_id: ev.run_id.clone(),
            body: body.clone(),
            duplicate,
            reordered: reorder && !drop,
            delay: Duration::from_millis(delay_ms),
        };
        if drop {
            record_drop(app, &dispatch);
            deliver::release_held(app, &dispatch.run_id, &dispatch.target.id);
        } else if reorder {
            hold(app, dispatch);
        } else {
            in_order(app, dispatch);
        }
    }
}

/// Percentages are drawn only for enabled knobs, so enabling one knob does not shift the
/// random sequence of another between otherwise identical runs.
fn roll(rng: &mut fastrand::Rng, pct: f64) -> bool {
    pct > 0.0 && rng.f64() * 100.0 < pct
}

fn admits(i: &IntegrationEntry, event: &str, project: &str, tags: &[String]) -> bool {
    let view = &i.view;
    if view.status.disabled || view.events.get(&format!("trigger:{event}")) != Some(&true) {
        return false;
    }
    if view.restricted && !view.projects.iter().any(|p| p == project) {
        return false;
    }
    let Some(tag_rule) = view.restrictions.as_ref().and_then(|r| r.get("tags")) else {
        return true;
    };
    if tag_rule.get("enabled").and_then(Value::as_bool) != Some(true) {
        return true;
    }
    let items: Vec<&str> = tag_rule
        .get("items")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let has = |t: &&str| tags.iter().any(|jt| jt == t);
    match tag_rule.get("matchCondition").and_then(Value::as_str) {
        Some("and") => items.iter().all(has),
        _ => items.iter().any(has),
    }
}

fn record_drop(app: &App, d: &Dispatch) {
    let mut state = app.state();
    state.counters.webhooks_dropped += 1;
    let capacity = app.config.delivery_log_capacity;
    push_ring(
        &mut state.deliveries,
        Delivery {
            event: d.event.clone(),
            event_id: d.event_id.clone(),
            integration_id: d.target.id.clone(),
            run_id: d.run_id.clone(),
            url: d.target.url.clone(),
            attempt: 0,
            status_code: None,
            error: None,
            dropped: true,
            duplicate: false,
            reordered: false,
            at: now_ms(),
        },
        capacity,
    );
}

/// Held until the next event of the run reaches this integration, or the hold time passes.
fn hold(app: &App, d: Dispatch) {
    app.count(|c| c.webhooks_reordered += 1);
    let key = (d.run_id.clone(), d.target.id.clone());
    let event_id = d.event_id.clone();
    lock(&app.hooks).hold(key.clone(), d);
    let hold_for = app.config.faults.webhook_reorder_hold;
    let task_app = app.clone();
    app.spawn_background(async move {
        tokio::time::sleep(hold_for).await;
        let mine = lock(&task_app.hooks).unhold(&key, &event_id);
        if let Some(d) = mine {
            deliver::out_of_order(task_app, d).await;
        }
    });
}

fn in_order(app: &App, d: Dispatch) {
    let key = (d.run_id.clone(), d.target.id.clone());
    let (done, rx) = watch::channel(false);
    let (previous, chain_id) = lock(&app.hooks).chain(key, rx);
    let task_app = app.clone();
    app.spawn_background(async move {
        deliver::in_order(task_app, d, previous, done, chain_id).await;
    });
}

//! Webhook fault knobs (drop, duplicate, reorder) and payload/token knobs.

use std::time::{Duration, Instant};

use nf_emulator::{Config, RunKey, TokenHeader};
use serde_json::json;

use crate::common::{
    ALL_EVENTS, PROJECT, Receiver, add_integration, emulator, eventually, fast_config, integration,
    run_script,
};

#[tokio::test]
async fn drop_and_duplicate_faults() {
    let receiver = Receiver::start().await;
    let mut config = fast_config();
    config.faults.webhook_drop_pct = 100.0;
    let (em, api) = emulator(config).await;
    add_integration(&api, integration("dropped", &receiver.url, &ALL_EVENTS)).await;
    run_script(&api, "dropped-events", "succeed:0.05").await;
    eventually("two drops", Duration::from_secs(2), || async {
        em.counters().webhooks_dropped == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(receiver.hits().is_empty());
    assert!(
        em.snapshot()
            .deliveries
            .iter()
            .all(|d| d.dropped && d.attempt == 0)
    );

    let receiver = Receiver::start().await;
    let mut config = fast_config();
    config.faults.webhook_duplicate_pct = 100.0;
    let (em, api) = emulator(config).await;
    add_integration(&api, integration("duplicated", &receiver.url, &ALL_EVENTS)).await;
    run_script(&api, "duplicated-events", "succeed:0.05").await;
    let hits = receiver.wait_for(4).await;
    let pairs: Vec<(&str, &str)> = hits
        .iter()
        .map(|h| {
            (
                h.event(),
                h.header("X-Northflank-Notification-Integration-Event-Id")
                    .unwrap(),
            )
        })
        .collect();
    assert_eq!(pairs[0], pairs[1]);
    assert_eq!(pairs[2], pairs[3]);
    assert_eq!(pairs[0].0, "job-run:start");
    assert_eq!(em.counters().webhooks_duplicated, 2);
}

/// With only the reorder knob on, each delivery draws one number from the seeded RNG.
fn seed_reordering_first_delivery_only(pct: f64) -> u64 {
    (0..10_000)
        .find(|seed| {
            let mut rng = fastrand::Rng::with_seed(*seed);
            rng.f64() * 100.0 < pct && rng.f64() * 100.0 >= pct
        })
        .unwrap()
}

#[tokio::test]
async fn reorder_fault_delivers_start_after_success() {
    let receiver = Receiver::start().await;
    let mut config = fast_config();
    config.faults.webhook_reorder_pct = 50.0;
    config.faults.seed = seed_reordering_first_delivery_only(50.0);
    config.faults.webhook_reorder_hold = Duration::from_secs(3);
    let (em, api) = emulator(config).await;
    add_integration(&api, integration("reordered", &receiver.url, &ALL_EVENTS)).await;
    let started = Instant::now();
    run_script(&api, "reordered-events", "succeed:0.1").await;
    receiver.wait_for(2).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "released by the next event, not the hold timer"
    );
    assert_eq!(receiver.events(), ["job-run:success", "job-run:start"]);
    assert_eq!(em.counters().webhooks_reordered, 1);

    // Without a next event, the hold time releases it.
    let receiver = Receiver::start().await;
    let mut config = fast_config();
    config.faults.webhook_reorder_pct = 100.0;
    config.faults.webhook_reorder_hold = Duration::from_millis(100);
    let (_em, api) = emulator(config).await;
    add_integration(&api, integration("held", &receiver.url, &["start"])).await;
    run_script(&api, "held-start", "hang").await;
    assert_eq!(receiver.wait_for(1).await[0].event(), "job-run:start");
}

#[tokio::test]
async fn payload_and_token_knobs() {
    let receiver = Receiver::start().await;
    let mut config = fast_config();
    config.webhooks.run_key = RunKey::Run;
    let (_em, api) = emulator(config).await;
    let mut body = integration("no-secret", &receiver.url, &["start"]);
    body.as_object_mut().unwrap().remove("secret");
    add_integration(&api, body.clone()).await;
    run_script(&api, "run-key", "hang").await;
    let hit = &receiver.wait_for(1).await[0];
    assert!(hit.body["data"]["run"]["id"].is_string() && hit.body["data"].get("jobRun").is_none());
    assert_eq!(
        hit.header("X-Northflank-Notification-Integration-Token"),
        None
    );

    let receiver = Receiver::start().await;
    let mut config = fast_config();
    config.webhooks.token_header_without_secret = TokenHeader::Empty;
    config.webhooks.run_key = RunKey::JobRunSnake;
    let (_em, api) = emulator(config).await;
    body["webhook"] = json!(receiver.url);
    add_integration(&api, body).await;
    run_script(&api, "empty-token", "hang").await;
    let hit = &receiver.wait_for(1).await[0];
    assert_eq!(
        hit.header("X-Northflank-Notification-Integration-Token"),
        Some("")
    );
    assert!(hit.body["data"]["job_run"]["id"].is_string());
}

#[tokio::test]
async fn knob_can_silence_terminate_on_job_delete() {
    let receiver = Receiver::start().await;
    let (_em, api) = emulator(Config {
        delete_job_fires_terminate: false,
        ..fast_config()
    })
    .await;
    add_integration(&api, integration("quiet", &receiver.url, &["terminate"])).await;
    let (job_id, _) = run_script(&api, "quiet-delete", "hang").await;
    api.delete(&format!("/v1/projects/{PROJECT}/jobs/{job_id}"))
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(receiver.hits().is_empty());
}

//! Job-run webhook delivery (§5.2–5.4): headers, payload, filtering, retries, auto-disable.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{
    ALL_EVENTS, INTEGRATIONS, PROJECT, Receiver, add_integration, emulator, eventually,
    fast_config, integration, run_script, scripted_job,
};

#[tokio::test]
async fn delivers_events_with_the_five_headers() {
    let receiver = Receiver::start().await;
    let (em, api) = emulator(fast_config()).await;
    add_integration(&api, integration("all-events", &receiver.url, &ALL_EVENTS)).await;
    let (job_id, run) = run_script(&api, "webhook-job", "succeed:0.1").await;
    let hits = receiver.wait_for(2).await;
    assert_eq!(receiver.events(), ["job-run:start", "job-run:success"]);
    for hit in &hits {
        assert_eq!(
            hit.header("X-Northflank-Notification-Integration-Id"),
            Some("all-events")
        );
        assert_eq!(
            hit.header("X-Northflank-Notification-Integration-Name"),
            Some("all-events")
        );
        assert_eq!(
            hit.header("X-Northflank-Notification-Integration-Token"),
            Some("s3cret-token")
        );
        assert_eq!(
            hit.header("X-Northflank-Notification-Integration-Event-Type"),
            Some(hit.event())
        );
        assert_eq!(
            hit.header("X-Northflank-Notification-Integration-Event-Id")
                .unwrap()
                .len(),
            36
        );
        assert_eq!(hit.header("content-type"), Some("application/json"));
        assert_eq!(
            hit.body["data"]["job"],
            json!({"id": job_id, "name": "webhook-job"})
        );
        assert_eq!(
            hit.body["data"]["project"],
            json!({"id": PROJECT, "name": PROJECT})
        );
        assert_eq!(hit.body["data"]["jobRun"]["id"], run.as_str());
    }
    assert_ne!(
        hits[0].header("X-Northflank-Notification-Integration-Event-Id"),
        hits[1].header("X-Northflank-Notification-Integration-Event-Id")
    );
    let start = &hits[0].body["data"]["jobRun"];
    assert_eq!(
        (start["status"].as_str(), start["concluded"].as_bool()),
        (Some("RUNNING"), Some(false))
    );
    let success = &hits[1].body["data"]["jobRun"];
    assert_eq!(
        success,
        &api.run(&job_id, &run).await,
        "the payload run is the GET run"
    );
    assert_eq!(success["status"], "SUCCESS");
    eventually("deliveries recorded", Duration::from_secs(2), || async {
        em.snapshot().deliveries.len() == 2
    })
    .await;
    let deliveries = em.snapshot().deliveries;
    assert!(
        deliveries
            .iter()
            .all(|d| d.succeeded() && d.attempt == 1 && d.run_id == run)
    );
    assert_eq!(em.counters().webhooks_delivered, 2);
}

#[tokio::test]
async fn filters_by_event_and_project() {
    let receiver = Receiver::start().await;
    let (_em, api) = emulator(fast_config()).await;
    add_integration(
        &api,
        integration(
            "only-success",
            &format!("{}/success", receiver.url),
            &["success"],
        ),
    )
    .await;
    let mut elsewhere = integration(
        "elsewhere",
        &format!("{}/elsewhere", receiver.url),
        &ALL_EVENTS,
    );
    elsewhere["restricted"] = json!(true);
    elsewhere["projects"] = json!(["another-project"]);
    add_integration(&api, elsewhere).await;
    let mut here = integration(
        "here",
        &format!("{}/here", receiver.url),
        &["start", "failure"],
    );
    here["restricted"] = json!(true);
    here["projects"] = json!([PROJECT]);
    add_integration(&api, here).await;
    let mut tagged = integration("tagged", &format!("{}/tagged", receiver.url), &ALL_EVENTS);
    tagged["restrictions"] =
        json!({"tags": {"enabled": true, "items": ["gpu"], "matchCondition": "or"}});
    add_integration(&api, tagged).await;

    run_script(&api, "filtered-ok", "succeed:0.05").await;
    run_script(&api, "filtered-fail", "fail:0.05").await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut got: Vec<(String, String)> = receiver
        .hits()
        .iter()
        .map(|h| {
            (
                h.header("X-Northflank-Notification-Integration-Id")
                    .unwrap()
                    .to_owned(),
                h.event().to_owned(),
            )
        })
        .collect();
    got.sort();
    let expected = [
        ("here", "job-run:failure"),
        ("here", "job-run:start"),
        ("here", "job-run:start"),
        ("only-success", "job-run:success"),
    ];
    assert_eq!(got, expected.map(|(a, b)| (a.to_owned(), b.to_owned())));
}

#[tokio::test]
async fn abort_and_terminate_events() {
    let receiver = Receiver::start().await;
    let (_em, api) = emulator(fast_config()).await;
    add_integration(
        &api,
        integration("lifecycle", &receiver.url, &["abort", "terminate"]),
    )
    .await;
    let (job_id, run) = run_script(&api, "aborted", "hang").await;
    api.delete(&format!("/v1/projects/{PROJECT}/jobs/{job_id}/runs/{run}"))
        .await;
    let hits = receiver.wait_for(1).await;
    assert_eq!(hits[0].event(), "job-run:abort");
    assert_eq!(hits[0].body["data"]["jobRun"]["status"], "FAILED");

    let mut deadline = scripted_job("deadline-hook", "hang");
    deadline["settings"]["activeDeadlineSeconds"] = json!(1);
    let deadline_job = api.create_job(deadline).await;
    api.start_run(&deadline_job, json!({})).await;
    let (deleted_job, _) = run_script(&api, "deleted-hook", "hang").await;
    api.delete(&format!("/v1/projects/{PROJECT}/jobs/{deleted_job}"))
        .await;
    receiver.wait_for(3).await;
    assert_eq!(
        receiver.events(),
        ["job-run:abort", "job-run:terminate", "job-run:terminate"]
    );
    let jobs: Vec<Value> = receiver
        .hits()
        .iter()
        .map(|h| h.body["data"]["job"]["id"].clone())
        .collect();
    assert_eq!(
        jobs,
        [
            json!("aborted"),
            json!("deleted-hook"),
            json!("deadline-hook")
        ]
    );
}

#[tokio::test]
async fn retries_failed_deliveries_with_the_same_event_id() {
    let receiver = Receiver::start().await;
    receiver.answer_with(&[(500, 0), (503, 0), (200, 0)]);
    let (em, api) = emulator(fast_config()).await;
    add_integration(&api, integration("flaky", &receiver.url, &["start"])).await;
    run_script(&api, "retried", "hang").await;
    let hits = receiver.wait_for(3).await;
    let ids: Vec<&str> = hits
        .iter()
        .map(|h| {
            h.header("X-Northflank-Notification-Integration-Event-Id")
                .unwrap()
        })
        .collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    eventually("attempts recorded", Duration::from_secs(2), || async {
        em.snapshot().deliveries.len() == 3
    })
    .await;
    let attempts: Vec<(u32, Option<u16>)> = em
        .snapshot()
        .deliveries
        .iter()
        .map(|d| (d.attempt, d.status_code))
        .collect();
    assert_eq!(attempts, [(1, Some(500)), (2, Some(503)), (3, Some(200))]);
    let c = em.counters();
    assert_eq!(
        (c.webhooks_sent, c.webhooks_failed, c.webhooks_delivered),
        (3, 2, 1)
    );
    let status = &api.get(&format!("{INTEGRATIONS}/flaky")).await.body["data"]["status"];
    assert_eq!(
        status["numberOfFailedRequests"], 0,
        "a delivered event clears the failure streak"
    );
}

#[tokio::test]
async fn disables_after_consecutive_failed_events() {
    let receiver = Receiver::start().await;
    receiver.answer_with(&[(500, 0); 10]);
    let mut config = fast_config();
    config.webhooks.retries = 1;
    config.webhooks.disable_after_failures = 2;
    let (em, api) = emulator(config).await;
    add_integration(&api, integration("failing", &receiver.url, &ALL_EVENTS)).await;
    run_script(&api, "first-event-fails", "succeed:0.05").await;
    eventually(
        "the integration to be disabled",
        Duration::from_secs(3),
        || async {
            api.get(&format!("{INTEGRATIONS}/failing")).await.body["data"]["status"]["disabled"]
                == true
        },
    )
    .await;
    let status = api.get(&format!("{INTEGRATIONS}/failing")).await.body["data"]["status"].clone();
    assert_eq!(status["numberOfFailedRequests"], 4);
    assert!(status["timeOfFirstFailedRequest"].is_string());
    assert_eq!(
        status["reason"], true,
        "typed boolean in the official types"
    );
    let record = &em.snapshot().integrations[0];
    assert!(
        record
            .disabled_reason
            .as_deref()
            .unwrap()
            .contains("2 consecutive failed")
    );
    assert_eq!(receiver.hits().len(), 4);
    run_script(&api, "not-delivered", "succeed:0").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        receiver.hits().len(),
        4,
        "a disabled integration gets nothing"
    );
    assert_eq!(em.counters().webhook_events_abandoned, 2);
}

#[tokio::test]
async fn timeouts_count_as_failures_and_never_block_the_api() {
    let receiver = Receiver::start().await;
    receiver.answer_with(&[(200, 1500)]);
    let mut config = fast_config();
    config.webhooks.delivery_timeout = Duration::from_millis(500);
    let (em, api) = emulator(config).await;
    add_integration(&api, integration("slow", &receiver.url, &["start"])).await;
    let job_id = api.create_job(scripted_job("slow-receiver", "hang")).await;
    api.start_run(&job_id, json!({})).await;
    // Had the API waited for the delivery, its (timed-out) attempt would be recorded by now.
    assert!(
        em.snapshot().deliveries.is_empty(),
        "start run waited for the webhook"
    );
    receiver.wait_for(2).await;
    eventually(
        "the retry to be recorded",
        Duration::from_secs(2),
        || async { em.snapshot().deliveries.len() == 2 },
    )
    .await;
    let deliveries = em.snapshot().deliveries;
    assert_eq!(
        deliveries[0].error.as_deref(),
        Some("timed out after 500 ms")
    );
    assert_eq!(deliveries[1].status_code, Some(200));
}

//! What a flow run costs in Prefect requests (Prefect Cloud rate-limits them per minute): the
//! protocol's four writes (PENDING, labels, `Submitting`, the pid) and a share of the batched
//! rest (polls, logs, events), with every user-visible line still written. Notifications about
//! runs this process launched read nothing from Prefect.

use crate::helpers::TestApp;
use crate::proxy::{ProxyConfig, RateLimitProxy, proxied};

use std::time::Duration;

use prefect_nf::ids::FlowRunId;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_run_costs_at_most_five_prefect_requests_in_a_long_running_worker() {
    const RUNS: usize = 20;
    let mut app = TestApp::spawn().await;
    app.worker.settings.polling.max_concurrency = RUNS;
    // As `prefect-nf local` does: notifications' lines and events go out in batches.
    app.worker.batch_sends(Duration::from_millis(500));
    let deployment = app.deployment(json!({})).await;
    let mut ids = Vec::new();
    for _ in 0..RUNS {
        ids.push(app.scripted_run(deployment, "succeed:0.5").await);
    }
    let prefect = &app.worker.prefect;
    let (before, refused_before) = (prefect.requests_sent(), prefect.requests_refused());
    assert_eq!(app.dispatch_once().await.dispatch.submitted as usize, RUNS);
    app.wait_until("every job is deleted", Duration::from_secs(60), |a| {
        a.jobs().is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let prefect = &app.worker.prefect;
    let sent = prefect.requests_sent() - before;
    let refused = prefect.requests_refused() - refused_before;
    // Taken: what the server did work for. The test server is SQLite, which refuses (503)
    // writes that collide during a burst; Postgres, as production Prefect runs, does not, so
    // there every request sent is taken (see BENCHMARKS.md).
    let per_run = (sent - refused) as f64 / RUNS as f64;
    println!(
        "prefect requests per flow run: {per_run:.2} taken ({sent} sent, {refused} refused by the busy SQLite server, for {RUNS} runs)"
    );
    assert!(
        per_run <= 5.0,
        "{per_run:.2} Prefect requests taken per flow run"
    );
    for id in ids {
        assert_eq!(app.state_type(id).await, "COMPLETED");
        let logs = app.logs(id).await;
        for line in [
            "submitted to infrastructure",
            "started",
            "concluded with status SUCCESS",
            "Deleted Northflank job",
        ] {
            assert!(logs.iter().any(|l| l.contains(line)), "{line}: {logs:#?}");
        }
    }
}

/// An app whose Prefect calls go through a proxy that refuses the first `refusals` label
/// writes as a busy SQLite server does (503), and one scheduled run of it.
async fn refusing_labels(refusals: u32) -> (RateLimitProxy, TestApp, FlowRunId) {
    let (proxy, app) = proxied(ProxyConfig::unlimited()).await;
    proxy.fail_next("PATCH", "/labels", 503, refusals);
    let deployment = app.deployment(json!({})).await;
    let id = app.scripted_run(deployment, "succeed:0.5").await;
    (proxy, app, id)
}

/// The labels are set once the server accepted a write; a busy test server (SQLite) may refuse
/// every repeat as well, and then all `left` tries that reached it must have been sent.
async fn assert_labelled_or_out_of_tries(
    proxy: &RateLimitProxy,
    app: &TestApp,
    id: FlowRunId,
    left: usize,
) {
    let answers = proxy.answers("PATCH", "/labels");
    if !answers.contains(&204) {
        assert_eq!(answers.len(), left, "tried until out of tries: {answers:?}");
        return;
    }
    let run = app.flow_run_json(id).await;
    assert_eq!(run["labels"]["prefect.worker.name"], "prefect-nf-test");
    assert_eq!(run["labels"]["prefect.work-pool.name"], app.pool.as_str());
}

/// Labels are written once at launch, and a refused write waits for the next batch; a one-shot
/// dispatch (Lambda's) has no next batch after its last send, so that send tries them again
/// after short pauses instead of leaving the run unlabelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_refused_at_launch_and_at_the_last_send_are_still_set_by_a_one_shot_dispatch() {
    // Refused at launch and at the last send.
    let (proxy, app, id) = refusing_labels(2).await;
    // Lambda's dispatch is a process of its own: the webhook's sends are not its sends.
    let dispatcher = app.another_worker("prefect-nf-test");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let summary = prefect_nf::scheduled::invoke(&dispatcher, deadline).await;
    assert_eq!(summary.unwrap().dispatch.submitted, 1);
    // Repeated after a pause until accepted: the busy test server (SQLite) may refuse the
    // repeats as well, and then all three that are left are sent.
    assert_labelled_or_out_of_tries(&proxy, &app, id, 3).await;
}

/// Labels another send has in flight when the last send starts (a notification's, in the same
/// process) count as waiting: the last send waits for that send, and repeats what it had
/// refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_send_waits_for_labels_another_send_has_in_flight() {
    let (proxy, app, id) = refusing_labels(1).await;
    let worker = std::sync::Arc::new(app.another_worker("prefect-nf-test"));
    let mut labels = serde_json::Map::new();
    labels.insert("prefect.worker.name".into(), json!("prefect-nf-test"));
    labels.insert("prefect.work-pool.name".into(), json!(app.pool));
    worker.keep_labels(id, labels);
    let release = proxy.hold("PATCH", "/labels");
    let first = tokio::spawn({
        let worker = worker.clone();
        async move { worker.send_pending().await }
    });
    app.wait_until("the first send's write", Duration::from_secs(10), |_| {
        proxy.held() == 1
    })
    .await;
    let last = tokio::spawn({
        let worker = worker.clone();
        async move { worker.send_last().await }
    });
    // Gives the last send time to run ahead, were it not to wait.
    tokio::time::sleep(Duration::from_millis(300)).await;
    release.release();
    first.await.unwrap();
    last.await.unwrap();
    let answers = proxy.answers("PATCH", "/labels");
    assert!(
        !answers.is_empty(),
        "the last send repeated the refused write"
    );
    assert_labelled_or_out_of_tries(&proxy, &app, id, 3).await;
}

/// In a long-running process the end of a dispatch tick is not its last send: refused labels
/// are tried once there, as with any batch, not repeated after pauses as a process's last send
/// repeats them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_running_process_leaves_refused_labels_to_its_next_batch() {
    let (proxy, app, id) = refusing_labels(10).await;
    app.worker.batch_sends(Duration::from_secs(600));
    let mut labels = serde_json::Map::new();
    labels.insert("prefect.worker.name".into(), json!("prefect-nf-test"));
    app.worker.keep_labels(id, labels);
    app.worker.send_at_invocation_end().await;
    assert_eq!(proxy.failed(), 1, "one try at the tick's end");
    assert_eq!(proxy.forwarded("PATCH", "/labels"), 0);
}

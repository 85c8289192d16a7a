//! `prefect-nf doctor` against the real Prefect servers and the emulator: an installation set
//! up by our own setup code passes every check, and each defect it reports is made for real
//! and seen failing with its fix; the binary's exit status and `--json` with the Lambda's secret.

use std::process::Output;
use std::time::Duration;

use prefect_nf::config::{Credentials, PrefectAuth, Secret};
use prefect_nf::setup::doctor::{self, Check, Report, Status};
use prefect_nf::setup::integration::{self, Registration};
use prefect_nf::setup::{automation, pool};
use prefect_nf::worker::Worker;
use serde_json::{Value, json};

use crate::helpers::{
    self, DISPATCH_TOKEN, NF_TOKEN, Options, PrefectServer, TestApp, WEBHOOK_TOKEN,
};

/// An app without a registered integration (each test writes its own through `setup`).
async fn app(emulator: nf_emulator::Config) -> TestApp {
    TestApp::spawn_with(Options {
        emulator,
        register_webhook: false,
        ..Default::default()
    })
    .await
}

/// What `webhook register --url <app's webhook> --project-id …` writes.
async fn register(app: &TestApp, url: &str, projects: &[&str]) {
    let projects: Vec<String> = projects.iter().map(|p| p.to_string()).collect();
    integration::register(
        &app.worker.northflank,
        &Registration {
            name: doctor::DEFAULT_INTEGRATION,
            url,
            projects: &projects,
            token: WEBHOOK_TOKEN,
        },
    )
    .await
    .expect("webhook register");
}

/// Everything `docs/deploy.md` sets up: the integration and instant dispatch's automation.
async fn set_up(app: &TestApp) {
    register(app, &app.webhook_url, &[&app.project]).await;
    automation::enable(
        &app.worker.prefect,
        &app.pool,
        &app.webhook_url,
        DISPATCH_TOKEN,
    )
    .await
    .expect("instant-dispatch enable");
}

fn options(app: &TestApp) -> doctor::Options {
    doctor::Options {
        url: Some(app.webhook_url.clone()),
        ..Default::default()
    }
}

async fn doctor_with(worker: &Worker, options: &doctor::Options) -> Report {
    let mut report = Report::default();
    doctor::check(worker, options, &mut report).await;
    report
}

async fn run(app: &TestApp) -> Report {
    doctor_with(&app.worker, &options(app)).await
}

/// The one check named `check` (about `subject`, when given).
fn one<'a>(report: &'a Report, check: &str, subject: Option<&str>) -> &'a Check {
    let found: Vec<&Check> = report
        .find(check)
        .into_iter()
        .filter(|c| subject.is_none() || c.subject.as_deref() == subject)
        .collect();
    assert_eq!(found.len(), 1, "{check} {subject:?} in\n{}", report.human());
    found[0]
}

/// `check` failed, saying `says`, with a fix containing `fix`.
fn failed(report: &Report, check: &str, subject: Option<&str>, says: &str, fix: &str) {
    let c = one(report, check, subject);
    assert_eq!(c.status, Status::Fail, "{}", report.human());
    assert!(c.explanation.contains(says), "{c:#?}");
    assert!(c.fix.as_deref().unwrap_or_default().contains(fix), "{c:#?}");
    assert!(!report.passed());
}

fn passed(report: &Report, check: &str, subject: Option<&str>) {
    let c = one(report, check, subject);
    assert_eq!(c.status, Status::Ok, "{}", report.human());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_installation_set_up_as_documented_passes_every_check() {
    let app = app(Default::default()).await;
    set_up(&app).await;
    // A deployment in a second project, covered by the integration as `doctor` asks.
    app.deployment(json!({"project_id": "analytics"})).await;
    register(&app, &app.webhook_url, &[&app.project, "analytics"]).await;

    let report = run(&app).await;
    let text = report.human();
    assert!(report.passed(), "{text}");
    for c in &report.checks {
        assert_eq!(c.status, Status::Ok, "{text}");
    }
    for check in [
        "prefect-api",
        "work-pool",
        "pool-template",
        "job-variables",
        "integration",
        "integration-url",
        "integration-events",
        "integration-projects",
        "integration-status",
        "instant-dispatch",
        "northflank-rate-limit",
        "prefect-rate-limit",
    ] {
        passed(&report, check, None);
    }
    let analytics = one(&report, "project", Some("analytics"));
    assert!(
        analytics
            .explanation
            .contains("deployment 'hello-northflank/dep-"),
        "{analytics:?}"
    );
    let ours = one(&report, "project", Some(&app.project));
    assert!(ours.explanation.contains("the pool's default"), "{ours:?}");
    assert!(
        one(&report, "northflank-rate-limit", None)
            .explanation
            .contains("of 1000 requests left"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_prefect_credentials_fail_with_the_credential_the_server_wants() {
    let app = TestApp::spawn_with(Options {
        prefect: PrefectServer::protected(),
        register_webhook: false,
        ..Default::default()
    })
    .await;
    set_up(&app).await;
    assert!(run(&app).await.passed(), "{}", run(&app).await.human());

    let with = |auth: PrefectAuth| {
        let credentials = Credentials {
            prefect: auth,
            ..app.worker.credentials.clone()
        };
        Worker::new(app.worker.settings.clone(), credentials).unwrap()
    };
    let wrong = with(PrefectAuth::AuthString(Secret::new("admin:wrong")));
    let report = doctor_with(&wrong, &options(&app)).await;
    failed(
        &report,
        "prefect-api",
        None,
        "refused an auth string",
        "PREFECT_SERVER_API_AUTH_STRING",
    );
    for skipped in [
        "work-pool",
        "pool-template",
        "job-variables",
        "instant-dispatch",
    ] {
        assert_eq!(
            one(&report, skipped, None).status,
            Status::Skip,
            "{}",
            report.human()
        );
    }
    // Northflank's side is checked all the same.
    passed(&report, "integration-status", None);

    let none = doctor_with(&with(PrefectAuth::None), &options(&app)).await;
    failed(&none, "prefect-api", None, "HTTP 401", "wants basic auth");
    let key = doctor_with(
        &with(PrefectAuth::ApiKey(Secret::new("pnu_x"))),
        &options(&app),
    )
    .await;
    failed(
        &key,
        "prefect-api",
        None,
        "refused an API key",
        "not an API key",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_pool_or_one_of_another_type_fails() {
    let app = app(Default::default()).await;
    set_up(&app).await;
    let mut worker = app.worker.clone();
    worker.settings.prefect.work_pool = format!("{}-missing", app.pool);
    let report = doctor_with(&worker, &options(&app)).await;
    failed(
        &report,
        "work-pool",
        None,
        "does not exist",
        "prefect-nf work-pool create --name",
    );
    passed(&report, "prefect-api", None);
    assert_eq!(one(&report, "pool-template", None).status, Status::Skip);

    let process = format!("{}-process", app.pool);
    app.post("/work_pools/", json!({"name": process, "type": "process"}))
        .await;
    worker.settings.prefect.work_pool = process;
    let report = doctor_with(&worker, &options(&app)).await;
    failed(
        &report,
        "work-pool",
        None,
        "is of type 'process'",
        "cannot change",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_with_the_python_workers_template_names_the_missing_variables_until_updated() {
    let app = app(Default::default()).await;
    set_up(&app).await;
    let older = helpers::python_worker_template(&app.project);
    let (status, text) = app
        .raw(
            reqwest::Method::PATCH,
            &format!("/work_pools/{}", app.pool),
            Some(&json!({"base_job_template": older})),
        )
        .await;
    assert!(status.is_success(), "{text}");

    let report = run(&app).await;
    let names = prefect_nf::render::gaps::missing(&older).join(", ");
    assert!(
        names.contains("deployment_vcs_project_url")
            && names.contains("build_configuration_docker_credentials")
    );
    failed(
        &report,
        "pool-template",
        None,
        &format!("missing variables (12): {names}"),
        &format!("prefect-nf work-pool update --name {}", app.pool),
    );
    // The fix it gives works.
    pool::update(&app.worker.prefect, &app.pool, None)
        .await
        .unwrap();
    passed(&run(&app).await, "pool-template", None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projects_the_token_cannot_reach_fail_naming_where_they_come_from() {
    let app = app(nf_emulator::Config {
        projects: Some(vec!["test-project".into()]),
        ..Default::default()
    })
    .await;
    set_up(&app).await;
    app.deployment(json!({"project_id": "elsewhere"})).await;
    let report = run(&app).await;
    failed(
        &report,
        "project",
        Some("elsewhere"),
        "Northflank knows no project 'elsewhere'",
        "check the project id in deployment 'hello-northflank/dep-",
    );
    passed(&report, "project", Some("test-project"));
    failed(
        &report,
        "integration-projects",
        None,
        "runs in elsewhere are not reported",
        "--project-id test-project --project-id elsewhere",
    );

    // A token Northflank does not know reaches nothing.
    let mut stranger = app.worker.credentials.clone();
    stranger.northflank_token = Secret::new("not-a-token");
    let worker = Worker::new(app.worker.settings.clone(), stranger).unwrap();
    let report = doctor_with(&worker, &options(&app)).await;
    failed(
        &report,
        "project",
        Some("test-project"),
        "refused the worker's token",
        "NORTHFLANK_API_TOKEN",
    );
    failed(
        &report,
        "integration",
        None,
        "refused the token",
        "NORTHFLANK_API_TOKEN",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_without_a_project_fail_the_job_variables_check() {
    let app = TestApp::spawn_with(Options {
        pool_variables: json!({"project_id": null}),
        register_webhook: false,
        ..Default::default()
    })
    .await;
    set_up(&app).await;
    app.deployment(json!({})).await;
    let report = run(&app).await;
    failed(
        &report,
        "job-variables",
        None,
        "no project_id (neither the pool's default nor the deployment's job variables set one)",
        "prefect-nf render --pool",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_misdirected_integration_fails_until_registered_again() {
    let app = app(Default::default()).await;
    automation::enable(
        &app.worker.prefect,
        &app.pool,
        &app.webhook_url,
        DISPATCH_TOKEN,
    )
    .await
    .unwrap();
    let report = run(&app).await;
    failed(
        &report,
        "integration",
        None,
        "there is no notification integration 'prefect-nf'",
        &format!(
            "prefect-nf webhook register --name 'prefect-nf' --url {} --project-id {}",
            app.webhook_url, app.project
        ),
    );
    for part in [
        "integration-url",
        "integration-events",
        "integration-projects",
        "integration-status",
    ] {
        assert_eq!(one(&report, part, None).status, Status::Skip);
    }

    // Registered for another URL, then edited (as in Northflank's UI) to drop two events.
    register(&app, "http://127.0.0.1:9/old/webhook", &[&app.project]).await;
    let mut body = integration::update_body(&Registration {
        name: doctor::DEFAULT_INTEGRATION,
        url: "http://127.0.0.1:9/old/webhook",
        projects: std::slice::from_ref(&app.project),
        token: WEBHOOK_TOKEN,
    });
    body["events"]["trigger:job-run:abort"] = json!(false);
    body["events"]
        .as_object_mut()
        .unwrap()
        .remove("trigger:job-run:terminate");
    app.worker
        .northflank
        .update_notification_integration("prefect-nf", &body)
        .await
        .unwrap();
    let report = run(&app).await;
    failed(
        &report,
        "integration-url",
        None,
        &format!(
            "posts to http://127.0.0.1:9/old/webhook, not to {}",
            app.webhook_url
        ),
        &format!("--url {}", app.webhook_url),
    );
    failed(
        &report,
        "integration-events",
        None,
        "events off: trigger:job-run:abort, trigger:job-run:terminate",
        "prefect-nf webhook register",
    );
    passed(&report, "integration-projects", None);

    register(&app, &app.webhook_url, &[&app.project]).await;
    assert!(run(&app).await.passed());
}

/// A job run in the project, so that Northflank notifies the integration.
async fn notify(app: &TestApp, name: &str) {
    let nf = &app.worker.northflank;
    let job = json!({
        "name": name,
        "billing": {"deploymentPlan": "nf-compute-20"},
        "deployment": {"external": {"imagePath": "prefecthq/prefect:3-python3.12"}},
        "runtimeEnvironment": {"NF_EMULATOR_SCRIPT": "succeed:0.1"},
        "settings": {"backoffLimit": 0},
    });
    let created = nf.put_job(&app.project, &job).await.unwrap();
    nf.start_run(&app.project, &created.id, &json!({}))
        .await
        .unwrap();
}

fn status_of(app: &TestApp) -> Value {
    let snapshot = app.emulator.snapshot();
    serde_json::to_value(&snapshot.integrations[0].integration.status).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_then_disabled_integration_fails_with_northflanks_status() {
    let mut emulator = nf_emulator::Config::default();
    emulator.webhooks.retries = 0;
    emulator.webhooks.disable_after_failures = 3;
    let app = app(emulator).await;
    set_up(&app).await;
    // A receiver that refuses every notification (as a webhook with the wrong token would).
    let refusing = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/northflank/webhook",
        refusing.local_addr().unwrap()
    );
    drop(refusing);
    register(&app, &url, &[&app.project]).await;
    let options = doctor::Options {
        url: Some(url),
        ..options(&app)
    };

    notify(&app, "doctor-probe-one").await;
    app.wait_until("a failed delivery", Duration::from_secs(10), |app| {
        status_of(app)["numberOfFailedRequests"].as_u64() >= Some(1)
    })
    .await;
    let report = doctor_with(&app.worker, &options).await;
    failed(
        &report,
        "integration-status",
        None,
        "failing: ",
        "make the webhook answer 2xx",
    );
    assert!(
        one(&report, "integration-status", None)
            .explanation
            .contains(
                status_of(&app)["timeOfFirstFailedRequest"]
                    .as_str()
                    .unwrap()
            ),
        "{}",
        report.human()
    );

    notify(&app, "doctor-probe-two").await;
    app.wait_until("the integration disabled", Duration::from_secs(15), |app| {
        status_of(app)["disabled"] == true
    })
    .await;
    let report = doctor_with(&app.worker, &options).await;
    failed(
        &report,
        "integration-status",
        None,
        "Northflank disabled it after failed deliveries",
        "save the integration again",
    );
    // Saving it again, as the fix says, enables it.
    register(&app, &app.webhook_url, &[&app.project]).await;
    passed(&run(&app).await, "integration-status", None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instant_dispatch_on_without_its_automation_fails() {
    let app = app(Default::default()).await;
    register(&app, &app.webhook_url, &[&app.project]).await;
    let report = run(&app).await;
    failed(
        &report,
        "instant-dispatch",
        None,
        "a dispatch token is set, but there is no automation",
        &format!(
            "prefect-nf instant-dispatch enable --url {} --pool {}",
            app.webhook_url, app.pool
        ),
    );

    // Enabled for another address: the block posts elsewhere.
    automation::enable(
        &app.worker.prefect,
        &app.pool,
        "http://127.0.0.1:9",
        DISPATCH_TOKEN,
    )
    .await
    .unwrap();
    failed(
        &run(&app).await,
        "instant-dispatch",
        None,
        "posts to http://127.0.0.1:9/prefect/dispatch",
        "instant-dispatch enable",
    );
    automation::enable(
        &app.worker.prefect,
        &app.pool,
        &app.webhook_url,
        DISPATCH_TOKEN,
    )
    .await
    .unwrap();
    passed(&run(&app).await, "instant-dispatch", None);

    // Off (no dispatch token) while the automation is still there: its calls are refused.
    let mut off = app.worker.clone();
    off.credentials.dispatch_token = None;
    let report = doctor_with(&off, &options(&app)).await;
    failed(
        &report,
        "instant-dispatch",
        None,
        "answers 404",
        "instant-dispatch disable",
    );
    automation::disable(&app.worker.prefect, &app.pool)
        .await
        .unwrap();
    passed(
        &doctor_with(&off, &options(&app)).await,
        "instant-dispatch",
        None,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nearly_spent_northflank_budget_fails() {
    let app = app(nf_emulator::Config {
        rate_limit_per_hour: 100,
        ..Default::default()
    })
    .await;
    set_up(&app).await;
    passed(&run(&app).await, "northflank-rate-limit", None);
    let http = reqwest::Client::new();
    for _ in 0..90 {
        http.get(format!(
            "{}/v1/integrations/notifications",
            app.emulator.base_url()
        ))
        .bearer_auth(NF_TOKEN)
        .send()
        .await
        .unwrap();
    }
    let report = run(&app).await;
    failed(
        &report,
        "northflank-rate-limit",
        None,
        "of 100 requests left, the window resets in",
        "wait for the window to reset",
    );
}

async fn prefect_nf(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_prefect-nf"));
    cmd.args(args);
    for var in [
        "PREFECT_API_URL",
        "PREFECT_API_KEY",
        "PREFECT_API_AUTH_STRING",
        "PFNF_WORK_POOL",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().await.unwrap()
}

/// The binary, reading its credentials from the Lambda's secret (moto): exit 0 and `--json`
/// when all pass, exit 1 and the failure with its fix when not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_reads_the_lambdas_secret_and_exits_1_on_a_failure() {
    let app = app(Default::default()).await;
    set_up(&app).await;
    let arn = helpers::put_secret(
        &helpers::moto_client(),
        &json!({"northflank_api_token": NF_TOKEN, "webhook_token": WEBHOOK_TOKEN,
                "dispatch_token": DISPATCH_TOKEN, "prefect_api_key": ""}),
    )
    .await;
    let moto = std::env::var("PFNF_TEST_MOTO_URL").unwrap();
    let emulator = app.emulator.base_url();
    let env = [
        ("PREFECT_API_URL", app.api.as_str()),
        ("PFNF_WORK_POOL", app.pool.as_str()),
        ("NORTHFLANK_API_URL", emulator.as_str()),
        ("PFNF_SECRET_ID", arn.as_str()),
        ("AWS_ENDPOINT_URL", moto.as_str()),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
    ];
    let out = prefect_nf(&["doctor", "--url", &app.webhook_url, "--json"], &env).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["status"], "pass");
    let credentials = &report["checks"][1];
    assert_eq!(credentials["check"], "credentials");
    assert!(
        credentials["explanation"]
            .as_str()
            .unwrap()
            .contains(&format!("Secrets Manager secret {arn}")),
        "{credentials}"
    );
    assert!(!stdout.contains(WEBHOOK_TOKEN) && !stdout.contains(DISPATCH_TOKEN));

    // The pool named by --pool does not exist: exit 1, a FAIL line and its fix.
    let out = prefect_nf(
        &["doctor", "--url", &app.webhook_url, "--pool", "nowhere"],
        &env,
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("FAIL  work-pool: work pool 'nowhere' does not exist\n      fix: prefect-nf work-pool create --name nowhere"),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.starts_with("ok    prefect-api: ")),
        "{text}"
    );
    assert!(text.trim_end().ends_with("not checked"), "{text}");

    // Northflank does not answer: its checks fail or are skipped, Prefect's still run.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let nowhere = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let mut unreachable: Vec<(&str, &str)> = env
        .iter()
        .map(|&(k, v)| match k {
            "NORTHFLANK_API_URL" => (k, nowhere.as_str()),
            _ => (k, v),
        })
        .collect();
    unreachable.push(("PFNF_RETRY_BASE_MS", "100"));
    let out = prefect_nf(&["doctor", "--timeout", "2", "--json"], &unreachable).await;
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let status = |check: &str| {
        let c = report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["check"] == check);
        c.map(|c| c["status"].as_str().unwrap().to_string())
    };
    assert_eq!(status("project").as_deref(), Some("fail"), "{report:#}");
    assert_eq!(status("integration").as_deref(), Some("fail"));
    assert_eq!(status("northflank-rate-limit").as_deref(), Some("skip"));
    assert_eq!(status("pool-template").as_deref(), Some("ok"));

    // A setting it cannot use is named, with the rule.
    let mut bad = env.to_vec();
    bad.push(("PFNF_POLL_INTERVAL", "ten"));
    let out = prefect_nf(&["doctor", "--json"], &bad).await;
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["status"], "fail");
    assert_eq!(report["checks"][0]["check"], "settings");
    assert!(
        report["checks"][0]["explanation"]
            .as_str()
            .unwrap()
            .contains("PFNF_POLL_INTERVAL=\"ten\" is invalid")
    );
}

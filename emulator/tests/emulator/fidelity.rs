//! Fidelity to the official client's types (`emulator/schema/northflank.json`): fields and
//! query parameters the types do not have are refused with their path, `null` only where the
//! types allow it, partial notification updates, and answers with the fields the types require.
//! `lenient` turns the refusals off.

use nf_emulator::Config;
use serde_json::{Value, json};

use crate::common::{ALL_EVENTS, Api, INTEGRATIONS, PROJECT, emulator, fast_config, integration};

fn jobs() -> String {
    format!("/v1/projects/{PROJECT}/jobs")
}

fn keys(object: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = object
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

fn paths(answer: &crate::common::Answer) -> Vec<String> {
    answer.body["error"]["details"]["fields"]
        .as_array()
        .map(|f| {
            f.iter()
                .map(|i| i["path"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Bodies a strict emulator refuses, each with the paths it must name.
fn refused_bodies() -> Vec<(&'static str, String, Value, Vec<&'static str>)> {
    let job = crate::common::job("strict-job");
    let mut misspelled = job.clone();
    misspelled["settings"] = json!({"backofflimit": 1});
    let mut nested = crate::common::job("nested-job");
    nested["deployment"]["docker"]["customComand"] = json!("x");
    let mut null_description = job.clone();
    null_description["description"] = Value::Null;
    let mut integration_typo = integration("typo", "http://127.0.0.1:9/hook", &ALL_EVENTS);
    integration_typo["secrets"] = json!("s");
    vec![
        // The finding: `backofflimit` passed, so a misspelling in the renderer would too.
        (
            "PUT",
            jobs(),
            misspelled,
            vec!["settings.backofflimit", "settings.backoffLimit"],
        ),
        (
            "POST",
            jobs(),
            nested,
            vec!["deployment.docker.customComand"],
        ),
        ("PUT", jobs(), null_description, vec!["description"]),
        (
            "POST",
            format!("{}/strict-job/runs", jobs()),
            json!({"runtimeEnviroment": {"A": "1"}}),
            vec!["runtimeEnviroment"],
        ),
        (
            "POST",
            INTEGRATIONS.to_owned(),
            integration_typo,
            vec!["secrets"],
        ),
    ]
}

async fn send(api: &Api, method: &str, path: &str, body: Value) -> crate::common::Answer {
    match method {
        "PUT" => api.put(path, body).await,
        _ => api.post(path, body).await,
    }
}

#[tokio::test]
async fn strict_refuses_unknown_fields_and_nulls_and_lenient_accepts_them() {
    let (_em, api) = emulator(fast_config()).await;
    api.create_job(crate::common::job("strict-job")).await;
    for (method, path, body, expected) in refused_bodies() {
        let a = send(&api, method, &path, body.clone()).await;
        assert_eq!(a.status, 400, "{method} {path} {body}: {:?}", a.body);
        assert_eq!(paths(&a), expected, "{}", a.message());
    }
    let a = send(&api, "PUT", &jobs(), refused_bodies().remove(0).2).await;
    assert!(
        a.message().contains(
            "settings.backofflimit: is not a field of PutJobData in @northflank/js-client 0.9.5 (known here: activeDeadlineSeconds, backoffLimit, cron, runOnSourceChange)"
        ),
        "{}",
        a.message()
    );

    let lenient = Config {
        lenient: true,
        ..fast_config()
    };
    let (_em, api) = emulator(lenient).await;
    api.create_job(crate::common::job("strict-job")).await;
    for (method, path, mut body, _) in refused_bodies() {
        // Lenient mode still wants what is required; it only lets the rest through.
        if body["settings"] == json!({"backofflimit": 1}) {
            body["settings"]["backoffLimit"] = json!(0);
        }
        let a = send(&api, method, &path, body.clone()).await;
        assert_eq!(
            a.status, 200,
            "lenient {method} {path} {body}: {:?}",
            a.body
        );
    }
}

#[tokio::test]
async fn notification_updates_are_partial_and_have_no_type() {
    let (em, api) = emulator(fast_config()).await;
    let mut body = integration("Prefect runs", "http://127.0.0.1:9/hook", &ALL_EVENTS);
    body["restricted"] = json!(true);
    body["projects"] = json!([PROJECT]);
    assert_eq!(api.post(INTEGRATIONS, body).await.status, 200);
    let path = format!("{INTEGRATIONS}/prefect-runs");

    let typed = api.post(&path, json!({"type": "DISCORD"})).await;
    assert_eq!(typed.status, 400);
    assert!(
        typed
            .message()
            .contains("type: is not a field of UpdateNotificationData"),
        "{}",
        typed.message()
    );
    // A token rotation: only the secret. Everything else stays as it was.
    let rotated = api.post(&path, json!({"secret": "rotated"})).await;
    assert_eq!(rotated.status, 200, "{:?}", rotated.body);
    let d = &rotated.body["data"];
    assert_eq!(
        (&d["name"], &d["type"], &d["restricted"], &d["projects"]),
        (
            &json!("Prefect runs"),
            &json!("RAW_WEBHOOK"),
            &json!(true),
            &json!([PROJECT])
        )
    );
    assert_eq!(d["events"].as_object().unwrap().len(), ALL_EVENTS.len());
    assert!(em.snapshot().integrations[0].has_secret);
    let renamed = api.post(&path, json!({"name": "Prefect jobs"})).await;
    assert_eq!(
        (&renamed.body["data"]["id"], &renamed.body["data"]["name"]),
        (&json!("prefect-runs"), &json!("Prefect jobs")),
        "the id stays"
    );
    let bad = api
        .post(&path, json!({"webhook": "not a url", "events": []}))
        .await;
    assert_eq!(paths(&bad), ["webhook", "events"], "{}", bad.message());

    let (_em, api) = emulator(Config {
        lenient: true,
        ..fast_config()
    })
    .await;
    let body = integration("loose", "http://127.0.0.1:9/hook", &ALL_EVENTS);
    assert_eq!(api.post(INTEGRATIONS, body).await.status, 200);
    let a = api
        .post(&format!("{INTEGRATIONS}/loose"), json!({"type": "DISCORD"}))
        .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body["data"]["type"], "RAW_WEBHOOK", "lenient ignores it");
}

#[tokio::test]
async fn queries_hold_to_what_the_official_client_sends() {
    let (_em, api) = emulator(fast_config()).await;
    let job = api.create_job(crate::common::job("query-job")).await;
    let logs = format!("{}/{job}/logs", jobs());
    let cases = [
        ("runId=x", vec!["queryType"]),
        ("queryType=tail", vec!["queryType"]),
        ("queryType=range&queryType=range", vec!["queryType"]),
        ("queryType=range&limit=5", vec!["limit"]),
    ];
    for (query, expected) in cases {
        let a = api.get(&format!("{logs}?{query}")).await;
        assert_eq!(a.status, 400, "{query}: {:?}", a.body);
        assert_eq!(paths(&a), expected, "{query}");
        assert!(
            a.message().starts_with("Invalid query: "),
            "{}",
            a.message()
        );
    }
    let a = api
        .get(&format!(
            "{logs}?queryType=range&lineLimit=5&direction=backward"
        ))
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let a = api.get(&format!("{}/{job}?x=1", jobs())).await;
    assert!(
        a.message()
            .contains("x: is not a query parameter of GET /v1/projects/{projectId}/jobs/{jobId} (the official client sends: none)"),
        "{}",
        a.message()
    );
    let listed = api.get(&format!("{}?per_page=5&page=1", jobs())).await;
    assert_eq!(listed.status, 200, "{:?}", listed.body);

    let (_em, api) = emulator(Config {
        lenient: true,
        ..fast_config()
    })
    .await;
    let job = api.create_job(crate::common::job("query-job")).await;
    let a = api
        .get(&format!("{}/{job}/logs?runId=&foo=1", jobs()))
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
}

#[tokio::test]
async fn answers_carry_what_the_types_require_and_no_null_they_forbid() {
    let (_em, api) = emulator(Config {
        default_script: "hang".into(),
        ..fast_config()
    })
    .await;
    let put = api.put(&jobs(), crate::common::job("shape-job")).await;
    assert_eq!(put.body["data"]["status"], json!({}));
    assert_eq!(put.body["data"]["cluster"]["id"], "nf-emulator");
    let got = api.get(&format!("{}/shape-job", jobs())).await.body["data"].clone();
    assert_eq!(
        keys(&got),
        [
            "appId",
            "billing",
            "cluster",
            "createdAt",
            "deployment",
            "disabledCD",
            "disabledCI",
            "id",
            "jobType",
            "name",
            "projectId",
            "settings",
            "tags"
        ],
        "GetJobResult's fields only: {got}"
    );
    assert_eq!(
        got["deployment"],
        json!({"docker": {"configType": "customCommand", "customCommand": "prefect flow-run execute"}})
    );
    assert_eq!(
        got["settings"],
        json!({"backoffLimit": 0}),
        "no null deadline"
    );

    let run = api.start_run("shape-job", json!({})).await;
    let running = api.run("shape-job", &run).await;
    assert!(
        running.get("concludedAt").is_none(),
        "absent, not null: {running}"
    );
    let containers = api.get(&format!("{}/shape-job/containers", jobs())).await;
    assert_eq!(
        containers.body["data"]["runId"],
        json!(run),
        "runId is required"
    );

    let body = integration("shape", "http://127.0.0.1:9/hook", &ALL_EVENTS);
    let created = api.post(INTEGRATIONS, body).await.body["data"].clone();
    assert!(!created.to_string().contains("null"), "{created}");
    assert!(created.get("restrictions").is_none());
    let listed = api.get(INTEGRATIONS).await.body["data"]["notificationIntegrations"][0].clone();
    assert_eq!(
        keys(&listed),
        [
            "createdAt",
            "id",
            "name",
            "status",
            "type",
            "updatedAt",
            "webhook"
        ]
    );
}

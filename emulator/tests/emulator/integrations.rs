//! Notification integrations (§5.1): CRUD, validation, the secret is never returned.

use serde_json::{Value, json};

use crate::common::{ALL_EVENTS, INTEGRATIONS, PROJECT, emulator, fast_config, integration};

#[tokio::test]
async fn integration_crud_never_returns_the_secret() {
    let (em, api) = emulator(fast_config()).await;
    let mut body = integration("Prefect runs", "http://127.0.0.1:9/hook", &ALL_EVENTS);
    body["restricted"] = json!(true);
    body["projects"] = json!([PROJECT]);
    let a = api.post(INTEGRATIONS, body.clone()).await;
    assert_eq!(a.status, 200);
    let d = &a.body["data"];
    assert_eq!(d["id"], "prefect-runs");
    assert_eq!(d["type"], "RAW_WEBHOOK");
    assert_eq!(d["restricted"], true);
    assert_eq!(d["events"]["trigger:job-run:start"], true);
    assert_eq!(
        d["status"],
        json!({"disabled": false, "numberOfFailedRequests": 0}),
        "no nulls: the official types allow none in the status"
    );
    assert!(d["createdAt"].is_string() && d["updatedAt"].is_string());
    assert!(
        !a.body.to_string().contains("s3cret"),
        "secret leaked: {}",
        a.body
    );

    assert_eq!(api.post(INTEGRATIONS, body.clone()).await.status, 409);
    let listed = api
        .get("/v1/teams/t1/integrations/notifications?per_page=1")
        .await;
    assert_eq!(
        listed.body["data"]["notificationIntegrations"][0]["id"], "prefect-runs",
        "{:?}",
        listed
    );
    assert_eq!(listed.body["pagination"]["count"], 1);
    assert!(!listed.body.to_string().contains("s3cret"));
    let got = api.get(&format!("{INTEGRATIONS}/prefect-runs")).await;
    assert!(got.status == 200 && !got.body.to_string().contains("s3cret"));

    // `UpdateNotificationData` has every field optional: the others keep their values.
    let update = json!({"webhook": "http://127.0.0.1:10/other"});
    let updated = api
        .post(&format!("{INTEGRATIONS}/prefect-runs"), update)
        .await;
    assert_eq!(updated.status, 200, "{:?}", updated.body);
    assert_eq!(updated.body["data"]["webhook"], "http://127.0.0.1:10/other");
    assert_eq!(
        (
            &updated.body["data"]["name"],
            &updated.body["data"]["projects"]
        ),
        (&json!("Prefect runs"), &json!([PROJECT]))
    );
    assert!(
        em.snapshot().integrations[0].has_secret,
        "an update without secret keeps it"
    );

    assert_eq!(
        api.delete(&format!("{INTEGRATIONS}/prefect-runs"))
            .await
            .status,
        200
    );
    assert_eq!(
        api.get(&format!("{INTEGRATIONS}/prefect-runs"))
            .await
            .status,
        404
    );
    assert_eq!(
        api.post(
            &format!("{INTEGRATIONS}/prefect-runs"),
            json!({"restricted": false})
        )
        .await
        .status,
        404
    );
}

#[tokio::test]
async fn integration_validation() {
    let (_em, api) = emulator(fast_config()).await;
    let ok = integration("valid-name", "https://example.com/hook", &["start"]);
    let cases: Vec<(Value, &str)> = vec![
        (
            {
                let mut b = ok.clone();
                b["name"] = json!("a".repeat(40));
                b
            },
            "name: must be at most 39",
        ),
        (
            {
                let mut b = ok.clone();
                b["name"] = json!("bad_name");
                b
            },
            "name: must match pattern",
        ),
        (
            {
                let mut b = ok.clone();
                b["type"] = json!("EMAIL");
                b
            },
            "type: must be one of",
        ),
        (
            {
                let mut b = ok.clone();
                b["webhook"] = json!("not a url");
                b
            },
            "webhook: must be an absolute http(s) URL",
        ),
        (
            {
                let mut b = ok.clone();
                b.as_object_mut().unwrap().remove("events");
                b
            },
            "events: is required",
        ),
        (
            {
                let mut b = ok.clone();
                b["events"] = json!(["trigger:job-run:start"]);
                b
            },
            "events: must be an object",
        ),
        (
            {
                let mut b = ok.clone();
                b["events"] = json!({"trigger:job-run:start": "yes"});
                b
            },
            "events.trigger:job-run:start: must be a boolean",
        ),
        (
            {
                let mut b = ok.clone();
                b["projects"] = json!(["bad project"]);
                b
            },
            "projects[0]: must match pattern",
        ),
    ];
    for (body, expected) in cases {
        let a = api.post(INTEGRATIONS, body).await;
        assert_eq!(a.status, 400);
        assert!(
            a.message().contains(expected),
            "{expected} not in {}",
            a.message()
        );
    }
}

//! Jobs API (§2): create/put/get/list/delete, pagination, team twins, projects.

use nf_emulator::Config;
use serde_json::{Value, json};

use crate::common::{PROJECT, emulator, fast_config, job};

#[tokio::test]
async fn create_put_get_and_conflicts() {
    let (em, api) = emulator(fast_config()).await;
    let path = format!("/v1/projects/{PROJECT}/jobs");
    let mut body = job("My Job");
    body["description"] = json!("first");
    body["runtimeEnvironment"] = json!({"SECRET": "s3cr3t"});
    let a = api.post(&path, body.clone()).await;
    assert_eq!(a.status, 200);
    let data = &a.body["data"];
    assert_eq!(data["id"], "my-job");
    assert_eq!(data["appId"], format!("/emulator-team/{PROJECT}/my-job"));
    assert_eq!(data["jobType"], "manual");
    assert_eq!(data["name"], "My Job");
    assert_eq!(
        data["runtimeEnvironment"]["SECRET"], "s3cr3t",
        "create echoes the body"
    );
    let created_at = data["createdAt"].as_str().unwrap().to_owned();
    assert!(
        created_at.ends_with('Z') && created_at.len() == 24,
        "{created_at}"
    );

    let dup = api.post(&path, body.clone()).await;
    assert_eq!(dup.status, 409);
    assert_eq!(
        dup.message(),
        "There is already a job with the same derived identifier"
    );

    body["description"] = json!("second");
    body["settings"]["cron"] = json!({"schedule": "@daily"});
    let put = api.put(&path, body.clone()).await;
    assert_eq!(put.status, 200);
    assert_eq!(put.body["data"]["createdAt"], created_at.as_str());
    assert_eq!(put.body["data"]["jobType"], "cron");

    let got = api.get(&format!("{path}/my-job")).await;
    assert_eq!(got.status, 200);
    let g = &got.body["data"];
    assert_eq!(g["description"], "second");
    assert_eq!(g["projectId"], PROJECT);
    assert_eq!(g["disabledCI"], false);
    assert_eq!(g["disabledCD"], false);
    assert_eq!(g["settings"]["backoffLimit"], 0);
    assert_eq!(g["settings"]["activeDeadlineSeconds"], Value::Null);
    assert_eq!(g["billing"]["deploymentPlan"], "nf-compute-20");
    assert!(
        g.get("runtimeEnvironment").is_none(),
        "GET does not serve secrets"
    );

    let created = api.put(&path, job("put-created")).await;
    assert_eq!(created.status, 200, "PUT creates when missing");
    let c = em.counters();
    assert_eq!((c.jobs_created, c.jobs_updated), (2, 1));
    assert_eq!(api.get(&format!("{path}/missing")).await.status, 404);
}

#[tokio::test]
async fn list_paginates_with_cursor() {
    let (_em, api) = emulator(fast_config()).await;
    for i in 0..5 {
        api.create_job(job(&format!("job-{i}"))).await;
    }
    api.post("/v1/projects/other-project/jobs", job("elsewhere"))
        .await;
    let mut seen = Vec::new();
    let mut query = String::from("per_page=2");
    loop {
        let a = api
            .get(&format!("/v1/projects/{PROJECT}/jobs?{query}"))
            .await;
        assert_eq!(a.status, 200);
        let jobs = a.body["data"]["jobs"].as_array().unwrap();
        let p = &a.body["pagination"];
        assert_eq!(p["count"], jobs.len());
        seen.extend(jobs.iter().map(|j| j["id"].as_str().unwrap().to_owned()));
        for j in jobs {
            assert_eq!(j["jobType"], "manual");
            assert_eq!(j["projectId"], PROJECT);
        }
        match p.get("cursor") {
            Some(cursor) => {
                assert_eq!(p["hasNextPage"], true);
                query = format!("per_page=2&cursor={}", cursor.as_str().unwrap());
            }
            None => {
                assert_eq!(p["hasNextPage"], false);
                break;
            }
        }
    }
    assert_eq!(seen, ["job-0", "job-1", "job-2", "job-3", "job-4"]);
    let page2 = api
        .get(&format!("/v1/projects/{PROJECT}/jobs?per_page=2&page=2"))
        .await;
    assert_eq!(page2.body["data"]["jobs"][0]["id"], "job-2");
    let all = api.get(&format!("/v1/projects/{PROJECT}/jobs")).await;
    assert_eq!(
        all.body["pagination"],
        json!({"hasNextPage": false, "count": 5})
    );
    assert_eq!(
        api.get(&format!("/v1/projects/{PROJECT}/jobs?per_page=101"))
            .await
            .status,
        400
    );
    assert_eq!(
        api.get(&format!("/v1/projects/{PROJECT}/jobs?cursor=zz"))
            .await
            .status,
        400
    );
}

#[tokio::test]
async fn team_twins_and_project_restriction() {
    let config = Config {
        projects: Some(vec![PROJECT.into()]),
        ..fast_config()
    };
    let (_em, api) = emulator(config).await;
    let a = api
        .post(
            &format!("/v1/teams/my-team/projects/{PROJECT}/jobs"),
            job("team-job"),
        )
        .await;
    assert_eq!(a.status, 200);
    assert_eq!(
        a.body["data"]["appId"],
        format!("/my-team/{PROJECT}/team-job")
    );
    assert_eq!(
        api.get(&format!("/v1/projects/{PROJECT}/jobs/team-job"))
            .await
            .status,
        200
    );
    let unknown = api.post("/v1/projects/unknown/jobs", job("x-job")).await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.message(), "Project not found");
    assert_eq!(api.get("/v1/nothing-here").await.status, 404);
}

#[tokio::test]
async fn delete_removes_job() {
    let (em, api) = emulator(fast_config()).await;
    let id = api.create_job(job("to-delete")).await;
    let path = format!("/v1/projects/{PROJECT}/jobs/{id}");
    let a = api.delete(&path).await;
    assert_eq!((a.status, a.body.clone()), (200, json!({"data": {}})));
    assert_eq!(api.get(&path).await.status, 404);
    assert_eq!(api.delete(&path).await.status, 404);
    assert_eq!(em.counters().jobs_deleted, 1);
}

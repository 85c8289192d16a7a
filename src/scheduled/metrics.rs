//! CloudWatch metrics in the embedded metric format (EMF): one JSON line per scheduled
//! invocation that CloudWatch Logs turns into metrics, with no API call and no extra permission.
//! Off unless `PFNF_METRICS_NAMESPACE` is set.
//!
//! Format: <https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html>

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::Summary;

/// The metrics, by name, with their unit and their values in `summary`.
fn values(summary: &Summary) -> [(&'static str, &'static str, u64); 10] {
    let d = &summary.dispatch;
    [
        ("RunsClaimed", "Count", u64::from(d.claimed)),
        ("RunsSubmitted", "Count", u64::from(d.submitted)),
        (
            "RunsCrashed",
            "Count",
            u64::from(d.crashed) + u64::from(summary.reconcile.crashed),
        ),
        ("RunsRescheduled", "Count", u64::from(d.rescheduled)),
        ("RunsDeferred", "Count", u64::from(d.deferred)),
        ("NorthflankRequests", "Count", d.northflank_requests),
        ("Northflank429s", "Count", d.northflank_throttled),
        ("Prefect429s", "Count", d.prefect_throttled),
        ("PrefectPausedMs", "Milliseconds", d.prefect_paused_ms),
        ("PrefectLogsHeld", "Count", d.logs_held),
    ]
}

/// The EMF document for one invocation, with the work pool as the only dimension.
pub fn emf(namespace: &str, work_pool: &str, summary: &Summary, at: DateTime<Utc>) -> Value {
    let values = values(summary);
    let definitions: Vec<Value> = values
        .iter()
        .map(|(name, unit, _)| json!({"Name": name, "Unit": unit}))
        .collect();
    let mut doc = Map::new();
    doc.insert(
        "_aws".into(),
        json!({
            "Timestamp": at.timestamp_millis(),
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": [["WorkPool"]],
                "Metrics": definitions,
            }],
        }),
    );
    doc.insert("WorkPool".into(), json!(work_pool));
    for (name, _, value) in values {
        doc.insert(name.into(), json!(value));
    }
    // Not metrics, but searchable beside them in Logs Insights.
    doc.insert("DurationMs".into(), json!(summary.dispatch.duration_ms));
    doc.insert(
        "PrefectRequests".into(),
        json!(summary.dispatch.prefect_requests),
    );
    Value::Object(doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_declared_metric_has_its_value_and_the_dimension_is_present() {
        let mut summary = Summary {
            dispatch: crate::dispatch::Summary {
                claimed: 3,
                submitted: 2,
                crashed: 1,
                deferred: 5,
                northflank_requests: 9,
                northflank_throttled: 4,
                prefect_throttled: 7,
                prefect_paused_ms: 2500,
                logs_held: 30,
                ..Default::default()
            },
            reconcile: Default::default(),
        };
        summary.reconcile.crashed = 2;
        let at = DateTime::parse_from_rfc3339("2026-11-27T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let doc = emf("PrefectNorthflank", "nf-pool", &summary, at);
        let meta = &doc["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(doc["_aws"]["Timestamp"], 1_795_780_800_000_i64);
        assert_eq!(meta["Namespace"], "PrefectNorthflank");
        for dimension in meta["Dimensions"][0].as_array().unwrap() {
            assert!(doc[dimension.as_str().unwrap()].is_string(), "{dimension}");
        }
        let declared: Vec<&str> = meta["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["Name"].as_str().unwrap())
            .collect();
        for name in &declared {
            assert!(doc[*name].is_u64(), "{name} has no value");
        }
        let got = |name: &str| doc[name].as_u64().unwrap();
        assert_eq!(
            [
                "RunsClaimed",
                "RunsSubmitted",
                "RunsCrashed",
                "RunsDeferred",
                "NorthflankRequests",
                "Northflank429s",
                "Prefect429s",
                "PrefectPausedMs",
                "PrefectLogsHeld",
            ]
            .map(got),
            [3, 2, 3, 5, 9, 4, 7, 2500, 30]
        );
        let unit = |name: &str| {
            meta["Metrics"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["Name"] == name)
                .map(|m| m["Unit"].as_str().unwrap().to_string())
        };
        assert_eq!(unit("PrefectPausedMs").as_deref(), Some("Milliseconds"));
        assert_eq!(unit("Prefect429s").as_deref(), Some("Count"));
        assert!(declared.len() <= 100, "EMF allows 100 metrics per document");
    }
}

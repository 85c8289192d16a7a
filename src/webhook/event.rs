//! Reading a Northflank notification leniently.
//!
//! The `job-run:*` payload is undocumented (northflank-api.md §5.3), so the notification is only
//! a hint: which job (hence which flow run), and perhaps which run and project. The state comes
//! from one GET of the run afterwards.

use serde_json::Value;

/// What a notification says, as far as it can be read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Notification {
    /// e.g. `job-run:success`, from the body or the `…-Event-Type` header.
    pub event: String,
    pub event_id: Option<String>,
    pub job_id: Option<String>,
    pub run_id: Option<String>,
    pub project_id: Option<String>,
}

impl Notification {
    pub fn is_job_run(&self) -> bool {
        self.event.starts_with("job-run:")
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ParseError {
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    #[error("the body is not a JSON object with an `event`")]
    NoEvent,
}

/// Run objects have been seen or guessed under all of these keys.
const RUN_KEYS: &[&str] = &["jobRun", "run", "job_run"];

fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

pub fn parse(
    body: &[u8],
    event_type_header: Option<&str>,
    event_id_header: Option<&str>,
) -> Result<Notification, ParseError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| ParseError::NotJson(e.to_string()))?;
    let Value::Object(root) = &value else {
        return Err(ParseError::NoEvent);
    };
    let event = text(root.get("event"))
        .or_else(|| event_type_header.map(String::from))
        .ok_or(ParseError::NoEvent)?;
    let data = root.get("data").filter(|d| d.is_object());
    let field = |path: &[&str]| -> Option<String> {
        let mut cur = data?;
        for key in path {
            cur = cur.get(*key)?;
        }
        text(Some(cur))
    };
    let run_id = RUN_KEYS
        .iter()
        .find_map(|k| field(&[k, "id"]))
        .or_else(|| field(&["jobRunId"]))
        .or_else(|| field(&["runId"]));
    let job_id = field(&["job", "id"])
        .or_else(|| field(&["job", "name"]))
        .or_else(|| {
            // A run name is `<jobId>-<24 hex>`.
            RUN_KEYS
                .iter()
                .find_map(|k| field(&[k, "runName"]))
                .and_then(|name| {
                    let (job, suffix) = name.rsplit_once('-')?;
                    (suffix.len() == 24 && suffix.chars().all(|c| c.is_ascii_hexdigit()))
                        .then(|| job.to_string())
                })
        });
    Ok(Notification {
        event,
        event_id: event_id_header.map(String::from),
        job_id,
        run_id,
        project_id: field(&["project", "id"]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_best_evidenced_shape() {
        let body = br#"{"event":"job-run:success","data":{"jobRun":{"id":"r1","runName":"pf-x-5fcf67bc56e1913e21d49504","status":"SUCCESS","concluded":true},
            "job":{"id":"pf-x","name":"pf-x"},"project":{"id":"p","name":"P"}}}"#;
        let n = parse(body, None, Some("e1")).unwrap();
        assert_eq!(n.event, "job-run:success");
        assert_eq!(n.job_id.as_deref(), Some("pf-x"));
        assert_eq!(n.run_id.as_deref(), Some("r1"));
        assert_eq!(n.project_id.as_deref(), Some("p"));
        assert_eq!(n.event_id.as_deref(), Some("e1"));
    }

    #[test]
    fn reads_other_run_keys_and_the_run_name() {
        let n = parse(br#"{"event":"job-run:failure","data":{"run":{"id":"r2","runName":"pf-y-0123456789abcdef01234567"}}}"#, None, None).unwrap();
        assert_eq!(n.run_id.as_deref(), Some("r2"));
        assert_eq!(n.job_id.as_deref(), Some("pf-y"));
        let n = parse(
            br#"{"event":"job-run:abort","data":{"job_run":{"id":"r3"},"job":{"name":"pf-z"}}}"#,
            None,
            None,
        )
        .unwrap();
        assert_eq!(
            (n.run_id.as_deref(), n.job_id.as_deref()),
            (Some("r3"), Some("pf-z"))
        );
    }

    #[test]
    fn tolerates_missing_parts_and_rejects_non_objects() {
        let n = parse(br#"{"data":[1,2]}"#, Some("build:start"), None).unwrap();
        assert_eq!(n.event, "build:start");
        assert!(!n.is_job_run());
        assert_eq!(n.job_id, None);
        assert_eq!(parse(b"[1]", None, None), Err(ParseError::NoEvent));
        assert_eq!(
            parse(br#"{"event":5}"#, None, None),
            Err(ParseError::NoEvent)
        );
        assert!(matches!(
            parse(b"{nope", None, None),
            Err(ParseError::NotJson(_))
        ));
    }
}

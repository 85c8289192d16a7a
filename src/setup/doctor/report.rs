//! What `doctor` found: one line per check, each failure with its fix, as text for people and
//! JSON for scripts.

use serde::Serialize;
use serde_json::{Value, json};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// Worth knowing; the installation works.
    Warn,
    Fail,
    /// Not checked, because a check it needs failed first.
    Skip,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
            Status::Skip => "skip",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    /// A stable identifier (`work-pool`, `project`, `integration-events`, …).
    pub check: &'static str,
    /// What it is about, when the check repeats (a project id).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    pub status: Status,
    pub explanation: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    fn new(check: &'static str, status: Status, explanation: impl Into<String>) -> Check {
        Check {
            check,
            subject: None,
            status,
            explanation: explanation.into(),
            fix: None,
        }
    }

    pub fn ok(check: &'static str, explanation: impl Into<String>) -> Check {
        Check::new(check, Status::Ok, explanation)
    }

    pub fn warn(check: &'static str, explanation: impl Into<String>) -> Check {
        Check::new(check, Status::Warn, explanation)
    }

    pub fn fail(
        check: &'static str,
        explanation: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check::new(check, Status::Fail, explanation).with_fix(fix)
    }

    pub fn skip(check: &'static str, because: &str) -> Check {
        Check::new(check, Status::Skip, format!("not checked: {because}"))
    }

    pub fn with_fix(mut self, fix: impl Into<String>) -> Check {
        self.fix = Some(fix.into());
        self
    }

    pub fn about(mut self, subject: impl Into<String>) -> Check {
        self.subject = Some(subject.into());
        self
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    pub fn push(&mut self, check: Check) {
        self.checks.push(check);
    }

    /// Every check passed (warnings allowed): the exit status is 0 exactly then.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.status != Status::Fail)
    }

    pub fn find(&self, check: &str) -> Vec<&Check> {
        self.checks.iter().filter(|c| c.check == check).collect()
    }

    fn count(&self, status: Status) -> usize {
        self.checks.iter().filter(|c| c.status == status).count()
    }

    /// `ok|warn|FAIL|skip  <check>: <explanation>`, a `fix:` line under each that has one, and
    /// a summary.
    pub fn human(&self) -> String {
        let mut out = String::new();
        for c in &self.checks {
            let name = match &c.subject {
                Some(s) => format!("{} {s}", c.check),
                None => c.check.to_string(),
            };
            out.push_str(&format!(
                "{:<5} {name}: {}\n",
                c.status.label(),
                c.explanation
            ));
            if let Some(fix) = &c.fix {
                out.push_str(&format!("      fix: {fix}\n"));
            }
        }
        out.push_str(&format!(
            "{}: {} ok, {} warning(s), {} failed, {} not checked\n",
            if self.passed() { "passed" } else { "failed" },
            self.count(Status::Ok),
            self.count(Status::Warn),
            self.count(Status::Fail),
            self.count(Status::Skip),
        ));
        out
    }

    /// `{"status": "pass"|"fail", "checks": [...]}`.
    pub fn json(&self) -> Value {
        json!({
            "status": if self.passed() { "pass" } else { "fail" },
            "checks": self.checks,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_warning_passes_a_failure_does_not_and_both_print_their_fix() {
        let mut report = Report::default();
        report.push(Check::ok("settings", "fine"));
        report.push(Check::warn("integration-url", "not compared").with_fix("pass --url"));
        assert!(report.passed());
        assert_eq!(report.json()["status"], "pass");
        report.push(Check::fail("project", "HTTP 404", "check the id").about("p-1"));
        report.push(Check::skip(
            "integration-status",
            "the integration is missing",
        ));
        assert!(!report.passed());
        let text = report.human();
        assert!(text.contains("ok    settings: fine\n"), "{text}");
        assert!(text.contains("warn  integration-url: not compared\n      fix: pass --url\n"));
        assert!(text.contains("FAIL  project p-1: HTTP 404\n      fix: check the id\n"));
        assert!(text.contains("skip  integration-status: not checked: the integration is missing"));
        assert!(text.ends_with("failed: 1 ok, 1 warning(s), 1 failed, 1 not checked\n"));
        let json = report.json();
        assert_eq!(json["status"], "fail");
        assert_eq!(json["checks"][2]["subject"], "p-1");
        assert_eq!(json["checks"][2]["status"], "fail");
        assert!(json["checks"][0].get("fix").is_none());
    }
}

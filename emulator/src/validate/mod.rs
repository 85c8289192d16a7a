//! Request-body validation. Every issue names the field path and the broken rule, and all
//! issues of a body are reported at once so one round trip shows everything to fix.

#[cfg(test)]
mod agreement;
mod deployment;
mod integration;
mod job;
pub(crate) mod official;
pub(crate) mod patterns;
mod run;

pub(crate) use integration::{Purpose, validate_integration};
pub(crate) use job::validate_job;
pub(crate) use run::validate_run;

use serde_json::{Map, Value};

use crate::error::Issues;
use patterns::Pattern;

/// The rule checks. `error` owns the report they fill, so that an `ApiError` can carry it
/// without depending on validation.
impl Issues {
    // --- typed accessors: each reports a type mismatch and returns None so callers stop there.

    pub fn object<'v>(&mut self, v: &'v Value, path: &str) -> Option<&'v Map<String, Value>> {
        let found = v.as_object();
        if found.is_none() {
            self.push(path, "must be an object");
        }
        found
    }

    pub fn string<'v>(&mut self, v: &'v Value, path: &str) -> Option<&'v str> {
        let found = v.as_str();
        if found.is_none() {
            self.push(path, "must be a string");
        }
        found
    }

    pub fn boolean(&mut self, v: &Value, path: &str) -> Option<bool> {
        let found = v.as_bool();
        if found.is_none() {
            self.push(path, "must be a boolean");
        }
        found
    }

    pub fn integer(&mut self, v: &Value, path: &str) -> Option<i64> {
        let found = v.as_i64();
        if found.is_none() {
            self.push(path, "must be an integer");
        }
        found
    }

    pub fn array<'v>(&mut self, v: &'v Value, path: &str) -> Option<&'v Vec<Value>> {
        let found = v.as_array();
        if found.is_none() {
            self.push(path, "must be an array");
        }
        found
    }

    /// Length in characters, like the JSON-schema `minLength`/`maxLength` the docs publish.
    pub fn length(&mut self, s: &str, path: &str, min: usize, max: usize) {
        let n = s.chars().count();
        if n < min {
            self.push(
                path,
                format!("must be at least {min} characters long (got {n})"),
            );
        } else if n > max {
            self.push(
                path,
                format!("must be at most {max} characters long (got {n})"),
            );
        }
    }

    pub fn pattern(&mut self, s: &str, path: &str, pattern: &Pattern) {
        if !pattern.is_match(s) {
            self.push(path, pattern.rule());
        }
    }

    pub fn one_of(&mut self, s: &str, path: &str, allowed: &[&str]) {
        if !allowed.contains(&s) {
            self.push(path, format!("must be one of {}", allowed.join(", ")));
        }
    }

    /// An object whose values are all strings (environment variables, build arguments).
    pub fn string_map(&mut self, v: &Value, path: &str) {
        if let Some(map) = self.object(v, path) {
            for (key, value) in map {
                if !value.is_string() {
                    self.push(&join(path, key), "must be a string");
                }
            }
        }
    }

    /// Secret files: `{"/abs/path": {"data": "<base64>", "encoding"?: "utf-8"}}`.
    pub fn file_map(&mut self, v: &Value, path: &str) {
        let Some(map) = self.object(v, path) else {
            return;
        };
        for (key, file) in map {
            let file_path = join(path, key);
            let Some(file) = self.object(file, &file_path) else {
                continue;
            };
            match field(file, "data") {
                Some(data) => {
                    self.string(data, &join(&file_path, "data"));
                }
                None => self.push(&join(&file_path, "data"), "is required"),
            }
            if let Some(encoding) = field(file, "encoding") {
                self.string(encoding, &join(&file_path, "encoding"));
            }
        }
    }

    /// A required field: reports "is required" when absent or null.
    pub fn required<'v>(
        &mut self,
        map: &'v Map<String, Value>,
        key: &str,
        path: &str,
    ) -> Option<&'v Value> {
        let found = field(map, key);
        if found.is_none() {
            self.push(&join(path, key), "is required");
        }
        found
    }

    pub fn opt_str<'v>(
        &mut self,
        map: &'v Map<String, Value>,
        key: &str,
        path: &str,
    ) -> Option<&'v str> {
        field(map, key).and_then(|v| self.string(v, &join(path, key)))
    }

    pub fn req_str<'v>(
        &mut self,
        map: &'v Map<String, Value>,
        key: &str,
        path: &str,
    ) -> Option<&'v str> {
        self.required(map, key, path)
            .and_then(|v| self.string(v, &join(path, key)))
    }

    pub fn opt_bool(&mut self, map: &Map<String, Value>, key: &str, path: &str) {
        if let Some(v) = field(map, key) {
            self.boolean(v, &join(path, key));
        }
    }

    pub fn opt_enum(&mut self, map: &Map<String, Value>, key: &str, path: &str, allowed: &[&str]) {
        if let Some(s) = self.opt_str(map, key, path) {
            self.one_of(s, &join(path, key), allowed);
        }
    }

    /// An optional array of strings, each checked by `each`.
    pub fn opt_str_items(
        &mut self,
        map: &Map<String, Value>,
        key: &str,
        path: &str,
        mut each: impl FnMut(&mut Self, &str, &str),
    ) {
        let path = join(path, key);
        let Some(items) = field(map, key).and_then(|v| self.array(v, &path)) else {
            return;
        };
        for (i, item) in items.iter().enumerate() {
            let item_path = format!("{path}[{i}]");
            if let Some(s) = self.string(item, &item_path) {
                each(self, s, &item_path);
            }
        }
    }
}

/// A field that is present and not null. Optional fields sent as `null` count as absent,
/// because clients that serialize `Option::None` as null should not be punished for it.
pub fn field<'v>(map: &'v Map<String, Value>, key: &str) -> Option<&'v Value> {
    map.get(key).filter(|v| !v.is_null())
}

pub fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// The issues a body starts with: in strict mode, every field the official request type of
/// `endpoint` lacks and every `null` it does not allow (lenient mode ignores both, and counts
/// a `null` as an absent field).
pub fn official_issues(body: &Value, endpoint: &str, strict: bool) -> Issues {
    let mut issues = Issues::default();
    if strict {
        official::check_request(endpoint, body, &mut issues);
    }
    issues
}

/// Shared by jobs and integrations: the body must be a JSON object.
pub fn body_object<'v>(issues: &mut Issues, body: &'v Value) -> Option<&'v Map<String, Value>> {
    let found = body.as_object();
    if found.is_none() {
        issues.push("(body)", "must be a JSON object");
    }
    found
}

//! Typed reads of a resolved job configuration, each failure naming the variable, the value and
//! the rule, so the message in the flow run's logs tells the user what to change.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::RenderError;

const BOOL_RULE: &str =
    "must be true or false (also accepted: yes/no, on/off, y/n, t/f, 1/0, in any case)";

pub(super) struct Fields<'a>(pub &'a Map<String, Value>);

fn invalid(key: &str, value: &Value, rule: impl Into<String>) -> RenderError {
    RenderError::Invalid {
        variable: key.to_string(),
        value: crate::http::excerpt(&value.to_string()),
        rule: rule.into(),
    }
}

impl Fields<'_> {
    fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }

    /// A string; an empty string counts as unset, as the Python worker's truthiness checks do.
    pub fn string(&self, key: &str) -> Result<Option<String>, RenderError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.trim().to_string())),
            Some(v) => Err(invalid(key, v, "must be a string")),
        }
    }

    pub fn bool(&self, key: &str) -> Result<Option<bool>, RenderError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            // Templated values arrive as strings when embedded; accept every spelling the
            // Python worker's pydantic fields accept.
            Some(Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "t" | "yes" | "y" | "on" | "1" => Ok(Some(true)),
                "false" | "f" | "no" | "n" | "off" | "0" => Ok(Some(false)),
                _ => Err(invalid(key, &Value::String(s.clone()), BOOL_RULE)),
            },
            Some(Value::Number(n)) => match n.as_f64() {
                Some(1.0) => Ok(Some(true)),
                Some(0.0) => Ok(Some(false)),
                _ => Err(invalid(key, &Value::Number(n.clone()), BOOL_RULE)),
            },
            Some(v) => Err(invalid(key, v, BOOL_RULE)),
        }
    }

    /// A whole number in `min..=max`; `2.0` counts as `2` (pydantic does the same).
    pub fn integer(&self, key: &str, min: i64, max: i64) -> Result<Option<i64>, RenderError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let n = match v {
            Value::Number(n) => n
                .as_i64()
                .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        };
        match n {
            Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
            Some(_) => Err(invalid(key, v, format!("must be between {min} and {max}"))),
            None => Err(invalid(key, v, "must be a whole number")),
        }
    }

    /// A command: a string, used as it is, or a list of arguments, joined with POSIX shell
    /// quoting so that each argument survives the shell intact.
    pub fn command(&self, key: &str) -> Result<Option<String>, RenderError> {
        match self.get(key) {
            Some(Value::Array(_)) => {
                let args = self.string_list(key)?;
                Ok((!args.is_empty()).then(|| shell_join(&args)))
            }
            _ => self.string(key),
        }
    }

    pub fn string_list(&self, key: &str) -> Result<Vec<String>, RenderError> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .filter(|v| !v.is_null())
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(invalid(key, other, "every item must be a string")),
                })
                .collect(),
            Some(v) => Err(invalid(key, v, "must be a list of strings")),
        }
    }

    /// An environment mapping with Prefect's coercion: values become Python `str()`, `null`
    /// stays `None` (and later unsets the variable).
    pub fn env(&self, key: &str) -> Result<BTreeMap<String, Option<String>>, RenderError> {
        match self.get(key) {
            None => Ok(BTreeMap::new()),
            Some(Value::Object(map)) => Ok(map
                .iter()
                .map(|(k, v)| {
                    let v = match v {
                        Value::Null => None,
                        other => Some(prefect_templating::py_str(other)),
                    };
                    (k.clone(), v)
                })
                .collect()),
            Some(v) => Err(invalid(
                key,
                v,
                "must be a mapping of variable names to values",
            )),
        }
    }

    pub fn object(&self, key: &str) -> Result<Option<Map<String, Value>>, RenderError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Object(m)) => Ok(Some(m.clone())),
            Some(v) => Err(invalid(key, v, "must be a mapping")),
        }
    }
}

/// POSIX shell quoting: safe words stay bare, anything else goes in single quotes.
pub(super) fn shell_join(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            let safe = !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:@%+,".contains(c));
            if safe {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

pub(super) fn invalid_value(key: &str, value: &str, rule: impl Into<String>) -> RenderError {
    invalid(key, &Value::String(value.to_string()), rule)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_join_quotes_what_the_shell_would_split_or_expand() {
        let args: Vec<String> = [
            "python",
            "-c",
            "print('hi there')",
            "$HOME",
            "",
            "a b",
            "x=1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            shell_join(&args),
            r#"python -c 'print('\''hi there'\'')' '$HOME' '' 'a b' x=1"#
        );
    }
}

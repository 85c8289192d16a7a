//! Prefect's `get_from_dict`: dotted paths with `[i]` indexes, e.g. `nested.a.b`, `arr[0].x`, `d.k`.

use serde_json::{Map, Value};

use crate::pychar::{PyInt, parse_py_int};

/// Looks `path` up in `root` exactly as `prefect.utilities.collections.get_from_dict` does; `None` means
/// "not found" (Prefect's default, `NotSet`).
///
/// * `[` becomes `.` and `]` is deleted, then the path is split on `.`: `arr[0].x` is `arr`, `0`, `x`.
///   Hence a key that itself contains a dot (`{"a.b": 1}`) can never be reached, and `a..b` asks for key `""`.
/// * Objects are looked up by exact key only.
/// * Arrays and strings take a Python `int()` index (`-1` is the last item, `1_0` is 10); a non-integer
///   part, an index out of range or any part applied to a number, bool or null is "not found".
/// * Indexing a string yields its one-character substring, as in Python (`{{ s.0 }}` of `"str"` is `"s"`).
pub fn get_from_dict(root: &Value, path: &str) -> Option<Value> {
    let keys = split_path(path);
    let mut keys = keys.iter();
    let first = keys.next()?;
    let start = step(root, first)?;
    walk(start, keys)
}

/// [`get_from_dict`] on a map of values (the job variables) without wrapping it in a `Value`.
pub(crate) fn get_from_map(root: &Map<String, Value>, path: &str) -> Option<Value> {
    let keys = split_path(path);
    let mut keys = keys.iter();
    let first = keys.next()?;
    let start = StepResult::Borrowed(root.get(first.as_str())?);
    walk(start, keys)
}

fn split_path(path: &str) -> Vec<String> {
    path.replace('[', ".")
        .replace(']', "")
        .split('.')
        .map(str::to_owned)
        .collect()
}

/// A step either borrows from the tree or, when indexing a string, creates a new one-character string.
enum StepResult<'a> {
    Borrowed(&'a Value),
    Owned(Value),
}

fn walk<'a>(mut current: StepResult<'a>, keys: std::slice::Iter<'_, String>) -> Option<Value> {
    for key in keys {
        current = match current {
            StepResult::Borrowed(v) => step(v, key)?,
            StepResult::Owned(v) => StepResult::Owned(step(&v, key)?.into_owned()),
        };
    }
    Some(current.into_owned())
}

impl StepResult<'_> {
    fn into_owned(self) -> Value {
        match self {
            Self::Borrowed(v) => v.clone(),
            Self::Owned(v) => v,
        }
    }
}

fn step<'a>(value: &'a Value, key: &str) -> Option<StepResult<'a>> {
    match value {
        // Python falls back to an int key when the string key is absent; JSON object keys are always
        // strings, so that fallback can never find anything.
        Value::Object(map) => map.get(key).map(StepResult::Borrowed),
        Value::Array(items) => {
            let index = python_index(key, items.len())?;
            items.get(index).map(StepResult::Borrowed)
        }
        Value::String(s) => {
            let len = s.chars().count();
            let index = python_index(key, len)?;
            s.chars()
                .nth(index)
                .map(|c| StepResult::Owned(Value::String(c.to_string())))
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => None,
    }
}

/// Python sequence indexing: `int(key)`, negative from the end, `None` when out of range or not an int.
fn python_index(key: &str, len: usize) -> Option<usize> {
    let PyInt::Value(i) = parse_py_int(key) else {
        return None;
    };
    let len = i128::try_from(len).ok()?;
    let resolved = if i < 0 { i + len } else { i };
    if (0..len).contains(&resolved) {
        usize::try_from(resolved).ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn follows_get_from_dict() {
        let v = json!({
            "nested": {"a": {"b": "deep"}},
            "arr": [{"x": 10}, 20, [30, 31]],
            "d": {"k": "v", "0": "zero", "": "empty", "a.b": "dotted"},
            "s": "héllo",
            "n": null,
            "i": 5,
        });
        let cases: &[(&str, Option<Value>)] = &[
            ("nested.a.b", Some(json!("deep"))),
            ("nested.a", Some(json!({"b": "deep"}))),
            ("arr[0].x", Some(json!(10))),
            ("arr.0.x", Some(json!(10))),
            ("arr[-1][0]", Some(json!(30))),
            ("arr[-3].x", Some(json!(10))),
            ("arr[-4]", None),
            ("arr[3]", None),
            ("arr[x]", None),
            ("arr[]", None),
            ("arr[1_0]", None),
            ("arr[0_1]", Some(json!(20))),
            ("arr[99999999999999999999999999999999999999999]", None),
            ("d.k", Some(json!("v"))),
            ("d.0", Some(json!("zero"))),
            ("d[0]", Some(json!("zero"))),
            ("d.", Some(json!("empty"))),
            ("d.a.b", None),
            ("s.1", Some(json!("é"))),
            ("s[-1]", Some(json!("o"))),
            ("s.x", None),
            ("s.9", None),
            ("s.0.0", Some(json!("h"))),
            ("n.x", None),
            ("n", Some(Value::Null)),
            ("i.0", None),
            ("missing", None),
            ("", None),
            ("nested.a.b.c", None),
        ];
        for (path, expected) in cases {
            assert_eq!(&get_from_dict(&v, path), expected, "path {path:?}");
            if let Value::Object(map) = &v {
                assert_eq!(&get_from_map(map, path), expected, "map path {path:?}");
            }
        }
    }
}

//! Placeholder discovery: Prefect's `({{\s*([\w\.\-\[\]$]+)\s*}})` with Python's Unicode `\w` and `\s`.

use std::collections::HashMap;
use std::sync::LazyLock;

use regex::{Captures, Regex};
use serde_json::Value;

use crate::pychar::{SPACE_CLASS, WORD_CLASS};

pub(crate) const BLOCK_DOCUMENT_PREFIX: &str = "prefect.blocks.";
pub(crate) const VARIABLE_PREFIX: &str = "prefect.variables.";
pub(crate) const ENV_VAR_PREFIX: char = '$';

static PLACEHOLDER: LazyLock<Regex> = LazyLock::new(|| {
    let pattern =
        format!(r"(\{{\{{[{SPACE_CLASS}]*([{WORD_CLASS}.\-\[\]$]+)[{SPACE_CLASS}]*\}}\}})");
    // Cannot fail on user input: the pattern is a constant, compiled by every test.
    Regex::new(&pattern).expect("placeholder pattern compiles")
});

/// What a placeholder refers to, decided by the prefix of its name (Prefect's `PlaceholderType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PlaceholderKind {
    /// A job variable (or any key of the values), e.g. `{{ image }}`, `{{ arr[0].x }}`.
    Standard,
    /// `{{ prefect.blocks.<slug>.<name>[.<keypath>] }}`, resolved by [`crate::resolve_references`].
    BlockDocument,
    /// `{{ prefect.variables.<name> }}`, resolved by [`crate::resolve_references`].
    Variable,
    /// `{{ $NAME }}`: the worker process's environment variable `NAME`.
    EnvVar,
}

/// One placeholder found in a string.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Placeholder {
    pub kind: PlaceholderKind,
    /// The whole match, braces and inner whitespace included, e.g. `{{ image }}`.
    pub full_match: String,
    /// The name between the braces, e.g. `image`, `prefect.blocks.secret.token`, `$HOME`.
    pub name: String,
}

impl PlaceholderKind {
    fn of(name: &str) -> Self {
        if name.starts_with(BLOCK_DOCUMENT_PREFIX) {
            Self::BlockDocument
        } else if name.starts_with(VARIABLE_PREFIX) {
            Self::Variable
        } else if name.starts_with(ENV_VAR_PREFIX) {
            Self::EnvVar
        } else {
            Self::Standard
        }
    }
}

/// The distinct placeholders of `s`, in order of first appearance.
///
/// Prefect returns a set; the order here only makes results deterministic. `{{ s | upper }}` and other
/// expressions are not placeholders (they stay literal text).
pub fn find_placeholders(s: &str) -> Vec<Placeholder> {
    let mut found: Vec<Placeholder> = Vec::new();
    for caps in PLACEHOLDER.captures_iter(s) {
        let (Some(full), Some(name)) = (caps.get(1), caps.get(2)) else {
            continue;
        };
        if found.iter().any(|p| p.full_match == full.as_str()) {
            continue;
        }
        found.push(Placeholder {
            kind: PlaceholderKind::of(name.as_str()),
            full_match: full.as_str().to_owned(),
            name: name.as_str().to_owned(),
        });
    }
    found
}

/// The distinct placeholders in every string of a JSON value (object values and array items, not object
/// keys), in document order: for callers that validate a template before rendering it.
pub fn find_placeholders_in(value: &Value) -> Vec<Placeholder> {
    let mut found = Vec::new();
    collect(value, &mut found);
    found
}

fn collect(value: &Value, found: &mut Vec<Placeholder>) {
    match value {
        Value::String(s) => {
            for p in find_placeholders(s) {
                if !found.contains(&p) {
                    found.push(p);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect(v, found)),
        Value::Object(map) => map.values().for_each(|v| collect(v, found)),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// Replaces placeholders in one pass over the original text, so inserted text is never re-templated.
/// Placeholders without a replacement stay as they are.
pub(crate) fn substitute(template: &str, replacements: &HashMap<String, String>) -> String {
    PLACEHOLDER
        .replace_all(template, |caps: &Captures<'_>| {
            let full = caps.get(1).map_or("", |m| m.as_str());
            replacements
                .get(full)
                .cloned()
                .unwrap_or_else(|| full.to_owned())
        })
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(s: &str) -> Vec<(PlaceholderKind, String)> {
        find_placeholders(s)
            .into_iter()
            .map(|p| (p.kind, p.name))
            .collect()
    }

    #[test]
    fn classifies_by_prefix() {
        use PlaceholderKind::*;
        assert_eq!(
            names(
                "{{ a }} {{prefect.blocks.s.n}} {{ prefect.variables.v }} {{ $HOME }} {{ prefect.blocksx }}"
            ),
            vec![
                (Standard, "a".into()),
                (BlockDocument, "prefect.blocks.s.n".into()),
                (Variable, "prefect.variables.v".into()),
                (EnvVar, "$HOME".into()),
                (Standard, "prefect.blocksx".into()),
            ]
        );
    }

    #[test]
    fn matches_like_python_re() {
        assert!(names("{{ s | upper }}").is_empty());
        assert!(names("{{}}").is_empty());
        assert!(names("{ { a } }").is_empty());
        assert_eq!(names("{{{ a }}}")[0].1, "a");
        assert_eq!(names("{{\u{3000}ré-sumé[0]\u{1c}}}")[0].1, "ré-sumé[0]");
        // Python's `\w` excludes combining marks (Rust's `is_alphanumeric` does not).
        assert!(names("{{ न\u{93e}म }}").is_empty());
        assert_eq!(find_placeholders("{{ a }}{{a}}{{ a }}").len(), 2);
    }

    #[test]
    fn substitutes_in_one_pass() {
        let replacements = HashMap::from([
            ("{{ a }}".to_owned(), "{{ b }}".to_owned()),
            ("{{ b }}".to_owned(), "B".to_owned()),
        ]);
        assert_eq!(
            substitute("{{ a }}-{{ b }}-{{ c }}", &replacements),
            "{{ b }}-B-{{ c }}"
        );
    }
}

//! Reading settings from variables: each reader names the variable and the rule when a value
//! cannot be used.

use std::collections::BTreeMap;
use std::time::Duration;

use super::ConfigError;

/// Where settings come from: the environment, a settings file, or a test's map.
pub type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The variable's value, unless it is unset or blank.
pub fn text(get: Lookup, var: &str) -> Option<String> {
    get(var).filter(|v| !v.trim().is_empty())
}

pub fn required(get: Lookup, var: &'static str) -> Result<String, ConfigError> {
    get(var)
        .filter(|v| !v.is_empty())
        .ok_or(ConfigError::Missing { var })
}

pub fn number(get: Lookup, var: &'static str) -> Result<Option<u64>, ConfigError> {
    match text(get, var) {
        None => Ok(None),
        Some(v) => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| ConfigError::Invalid {
                var,
                value: v,
                rule: "must be a whole number",
            }),
    }
}

pub fn seconds(get: Lookup, var: &'static str) -> Result<Option<Duration>, ConfigError> {
    match text(get, var) {
        None => Ok(None),
        Some(v) => match v.trim().parse::<f64>() {
            Ok(x) if x.is_finite() && x >= 0.0 => Ok(Some(Duration::from_secs_f64(x))),
            _ => Err(ConfigError::Invalid {
                var,
                value: v,
                rule: "must be a non-negative number of seconds",
            }),
        },
    }
}

/// Seconds that must not be zero.
pub fn positive_seconds(get: Lookup, var: &'static str) -> Result<Option<Duration>, ConfigError> {
    match seconds(get, var)? {
        Some(d) if d.is_zero() => Err(ConfigError::Invalid {
            var,
            value: "0".into(),
            rule: "must be greater than 0",
        }),
        other => Ok(other),
    }
}

/// A comma-separated list; blank items are dropped.
pub fn list(get: Lookup, var: &str) -> Option<Vec<String>> {
    get(var).map(|v| {
        v.split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(String::from)
            .collect()
    })
}

/// An http(s) URL, as given.
pub fn url(get: Lookup, var: &'static str) -> Result<Option<String>, ConfigError> {
    match text(get, var) {
        None => Ok(None),
        Some(u) if u.starts_with("http://") || u.starts_with("https://") => Ok(Some(u)),
        Some(u) => Err(ConfigError::Invalid {
            var,
            value: u,
            rule: "must start with http:// or https://",
        }),
    }
}

/// Sets `field` when the variable is set.
pub fn set<T>(field: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *field = v;
    }
}

pub fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Parses a settings file of `KEY=VALUE` lines (the variables this page documents): blank lines
/// and `#` comments are skipped, an `export ` prefix and matching quotes around the value are
/// dropped. The local worker reads it with `--env-file`; the environment wins over it.
pub fn parse_env_file(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut values = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!("line {}: expected KEY=VALUE", n + 1));
        };
        let key = key.trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("line {}: {key:?} is not a variable name", n + 1));
        }
        let value = value.trim();
        let unquoted = [('"', '"'), ('\'', '\'')]
            .iter()
            .find_map(|(a, b)| value.strip_prefix(*a)?.strip_suffix(*b))
            .unwrap_or(value);
        values.insert(key.to_string(), unquoted.to_string());
    }
    Ok(values)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A lookup over fixed pairs, as the environment would answer.
    pub fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn env_files_are_key_value_lines() {
        let values = parse_env_file(
            "# settings\nPFNF_WORK_POOL=nf\nexport PREFECT_API_URL=\"http://x/api\"\n\nA='b=c'\n",
        )
        .unwrap();
        assert_eq!(values.get("PFNF_WORK_POOL").map(String::as_str), Some("nf"));
        assert_eq!(
            values.get("PREFECT_API_URL").map(String::as_str),
            Some("http://x/api")
        );
        assert_eq!(values.get("A").map(String::as_str), Some("b=c"));
        assert_eq!(
            parse_env_file("A=1\nnonsense").unwrap_err(),
            "line 2: expected KEY=VALUE"
        );
        assert_eq!(
            parse_env_file("A B=1").unwrap_err(),
            "line 1: \"A B\" is not a variable name"
        );
    }
}

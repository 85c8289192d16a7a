//! Northflank's documented field rules (northflank-api.md §2.2), used to refuse a configuration
//! before it reaches Northflank, and to make free text (tags, description) valid instead of
//! sending it invalid.

use std::sync::LazyLock;

use regex::Regex;

fn re(pattern: &str) -> Regex {
    Regex::new(pattern).expect("static pattern")
}

/// `^[a-zA-Z0-9]+(-[a-zA-Z0-9]+)*$`: tags, plans, ids of saved credentials.
pub static SLUG: LazyLock<Regex> = LazyLock::new(|| re(r"^[a-zA-Z0-9]+(-[a-zA-Z0-9]+)*$"));
/// Plans as documented, plus `_`: the documented GPU plan `nf-gpu-rtx_pro_6000-96-8g` would
/// fail the documented plan pattern, so the stricter check is left to Northflank.
pub static PLAN: LazyLock<Regex> = LazyLock::new(|| re(r"^[a-zA-Z0-9_]+(-[a-zA-Z0-9_]+)*$"));
pub static PROJECT_ID: LazyLock<Regex> = LazyLock::new(|| re(r"^[A-Za-z0-9-]+$"));
pub static CREDENTIALS_ID: LazyLock<Regex> = LazyLock::new(|| re(r"^[A-Za-z0-9-]+$"));
/// A tag or a digest is mandatory.
pub static IMAGE_PATH: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"^(?:(?:https?://)?([a-zA-Z0-9\-]+\.[a-zA-Z0-9\.\-]+)(/v1)?)?(?:/)?([a-zA-Z/-9\.\-_]+)(?::([a-zA-Z/-9\.\-_:]+)|@([a-zA-Z/-9\.\-_:]+))$",
    )
});
pub static INTERNAL_ID: LazyLock<Regex> =
    LazyLock::new(|| re(r"^[a-zA-Z](-?[a-zA-Z0-9]+(-[a-zA-Z0-9]+)*)?$"));
pub static BUILD_SHA: LazyLock<Regex> = LazyLock::new(|| re(r"^([0-9a-fA-F]{40}|latest)$"));
pub static VCS_URL: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"^(https://)?((www(\.[a-zA-Z0-9\-]{2,})+\.)?[a-zA-Z0-9\-]{2,})(\.([a-zA-Z0-9\-]{2,}))+(/([a-zA-Z0-9\-._]{2,}))+?$",
    )
});
pub static SELF_HOSTED_VCS_ID: LazyLock<Regex> =
    LazyLock::new(|| re(r"^([A-Za-z0-9-]+)|([0-9a-f]{24})$"));
pub static DOCKERFILE_PATH: LazyLock<Regex> =
    LazyLock::new(|| re(r"^/([a-zA-Z0-9\-._]+/)*[a-zA-Z0-9\-._]+$"));
pub static DOCKER_WORK_DIR: LazyLock<Regex> =
    LazyLock::new(|| re(r"^/([a-zA-Z0-9\-._]+/)*[a-zA-Z0-9\-._]*$"));

pub const DESCRIPTION_MAX: usize = 200;
pub const TAG_MIN: usize = 3;
pub const TAG_MAX: usize = 100;

pub const VCS_TYPES: &[&str] = &["github", "gitlab", "bitbucket", "self-hosted", "azure"];
pub const DOCKER_CONFIG_TYPES: &[&str] = &[
    "default",
    "customEntrypoint",
    "customCommand",
    "customEntrypointCustomCommand",
];
pub const RUN_ON_SOURCE_CHANGE: &[&str] = &["never", "cd-promote", "always"];
pub const BUILDPACK_BUILDERS: &[&str] = &[
    "HEROKU_24",
    "HEROKU_22",
    "HEROKU_22_CLASSIC",
    "HEROKU_20",
    "HEROKU_18",
    "GOOGLE_22",
    "GOOGLE_V1",
    "CNB_ALPINE",
    "CNB_BIONIC",
    "PAKETO_JAMMY_TINY",
    "PAKETO_JAMMY_BASE",
    "PAKETO_JAMMY_FULL",
    "PAKETO_TINY",
    "PAKETO_BASE",
    "PAKETO_FULL",
];

/// Characters the description pattern allows:
/// `^[a-zA-Z0-9.,?\s\\/'"()[\];`%^&*\-_:!]+$`.
fn description_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c.is_ascii_whitespace() || ".,?\\/'\"()[];`%^&*-_:!".contains(c)
}

/// A description Northflank accepts: disallowed characters become `-`, at most 200 characters;
/// `None` when nothing is left.
pub fn description(text: &str) -> Option<String> {
    let cleaned: String = text
        .chars()
        .map(|c| if description_char(c) { c } else { '-' })
        .take(DESCRIPTION_MAX)
        .collect();
    (!cleaned.trim().is_empty()).then(|| cleaned.trim_end().to_string())
}

/// A tag Northflank accepts: runs of other characters become one `-`, no `-` at either end, at
/// most 100 characters; `None` when fewer than 3 remain.
pub fn tag(text: &str) -> Option<String> {
    let mut out = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    let mut out: String = out.trim_end_matches('-').chars().take(TAG_MAX).collect();
    while out.ends_with('-') {
        out.pop();
    }
    (out.len() >= TAG_MIN).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_paths_need_a_tag_or_digest() {
        for ok in [
            "prefecthq/prefect:3-python3.12",
            "nginx:latest",
            "ghcr.io/o/i@sha256:abc123",
            "registry.example.com/team/etl:1.2",
        ] {
            assert!(IMAGE_PATH.is_match(ok), "{ok}");
        }
        for bad in ["prefecthq/prefect", "", "a b:c"] {
            assert!(!IMAGE_PATH.is_match(bad), "{bad}");
        }
    }

    #[test]
    fn tags_are_made_valid() {
        assert_eq!(tag("my_tag").as_deref(), Some("my-tag"));
        assert_eq!(tag("--Team A!!").as_deref(), Some("Team-A"));
        assert_eq!(tag("ab"), None);
        assert_eq!(tag("é_é"), None);
        assert_eq!(tag(&"x".repeat(150)).map(|t| t.len()), Some(100));
        for t in ["my_tag", "--Team A!!", "a-b-c", "x__y__z"] {
            if let Some(t) = tag(t) {
                assert!(SLUG.is_match(&t), "{t}");
            }
        }
    }

    #[test]
    fn descriptions_are_made_valid() {
        assert_eq!(
            description("run #1 @home <x>").as_deref(),
            Some("run -1 -home -x-")
        );
        assert_eq!(description("   ").as_deref(), None);
        assert_eq!(description(&"é".repeat(300)).map(|d| d.len()), Some(200));
        assert_eq!(
            description("Prefect flow run 'x' (ok): [a];").as_deref(),
            Some("Prefect flow run 'x' (ok): [a];")
        );
    }
}

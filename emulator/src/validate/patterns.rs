//! The documented patterns (§2.2, §5.1). `doc` is the text users see in error messages, copied
//! from the docs; the compiled source differs only where the Rust `regex` crate needs it: the
//! workspace builds `regex` without Unicode tables, so `\s`/`\d` become ASCII classes, and the
//! literal `[` in the description class is escaped (§2.4 caveat).

use std::sync::LazyLock;

use regex::Regex;

pub struct Pattern {
    doc: &'static str,
    hint: &'static str,
    re: LazyLock<Regex>,
}

impl Pattern {
    pub fn is_match(&self, s: &str) -> bool {
        self.re.is_match(s)
    }

    /// The rule text for error messages.
    pub fn rule(&self) -> String {
        if self.hint.is_empty() {
            format!("must match pattern {}", self.doc)
        } else {
            format!("must match pattern {} ({})", self.doc, self.hint)
        }
    }
}

macro_rules! pattern {
    ($name:ident, $doc:expr, $rust:expr, $hint:expr) => {
        pub static $name: Pattern = Pattern {
            doc: $doc,
            hint: $hint,
            re: LazyLock::new(|| Regex::new($rust).expect("documented pattern compiles")),
        };
    };
}

pattern!(
    JOB_NAME,
    r"^[a-zA-Z]((-|\s)?[a-zA-Z0-9]+((-|\s)[a-zA-Z0-9]+)*)?$",
    r"^[a-zA-Z]((-|[[:space:]])?[a-zA-Z0-9]+((-|[[:space:]])[a-zA-Z0-9]+)*)?$",
    "start with a letter; letters and digits separated by single hyphens or spaces"
);
pattern!(
    DESCRIPTION,
    r#"^[a-zA-Z0-9.,?\s\\/'"()[\];`%^&*\-_:!]+$"#,
    r#"^[a-zA-Z0-9.,?[:space:]\\/'"()\[\];`%^&*\-_:!]+$"#,
    "ASCII letters, digits, whitespace and .,?\\/'\"()[];`%^&*-_:! only"
);
pattern!(
    SLUG,
    r"^[a-zA-Z0-9]+(-[a-zA-Z0-9]+)*$",
    r"^[a-zA-Z0-9]+(-[a-zA-Z0-9]+)*$",
    "letters and digits separated by single hyphens"
);
pattern!(
    IMAGE_PATH,
    r"^(?:(?:https?:\/\/)?([a-zA-Z0-9\-]+\.[a-zA-Z0-9\.\-]+)(\/v1)?)?(?:\/)?([a-zA-Z/-9\.\-_]+)(?:\:([a-zA-Z/-9\.\-_\:]+)|\@([a-zA-Z/-9\.\-_\:]+))$",
    r"^(?:(?:https?:\/\/)?([a-zA-Z0-9\-]+\.[a-zA-Z0-9\.\-]+)(\/v1)?)?(?:\/)?([a-zA-Z/-9\.\-_]+)(?:\:([a-zA-Z/-9\.\-_\:]+)|\@([a-zA-Z/-9\.\-_\:]+))$",
    "a tag or digest is required, e.g. prefecthq/prefect:3-python3.12"
);
pattern!(RESOURCE_ID, r"^[A-Za-z0-9-]+$", r"^[A-Za-z0-9-]+$", "");
pattern!(
    INTERNAL_ID,
    r"^[a-zA-Z](-?[a-zA-Z0-9]+(-[a-zA-Z0-9]+)*)?$",
    r"^[a-zA-Z](-?[a-zA-Z0-9]+(-[a-zA-Z0-9]+)*)?$",
    ""
);
pattern!(
    BUILD_SHA,
    r"^[0-9a-f]{40}$|^latest$",
    r"^[0-9a-fA-F]{40}$|^latest$",
    "a 40-character commit SHA or \"latest\""
);
pattern!(
    PROJECT_URL,
    r"^(https:\/\/)?((www(\.[a-zA-Z0-9\-]{2,})+\.)?[a-zA-Z0-9\-]{2,})(\.([a-zA-Z0-9\-]{2,}))+(\/([a-zA-Z0-9\-._]{2,}))+?$",
    r"^(https:\/\/)?((www(\.[a-zA-Z0-9\-]{2,})+\.)?[a-zA-Z0-9\-]{2,})(\.([a-zA-Z0-9\-]{2,}))+(\/([a-zA-Z0-9\-._]{2,}))+?$",
    ""
);
// Copied verbatim: the alternation leaves each branch half-anchored, as published.
pattern!(
    SELF_HOSTED_VCS_ID,
    r"^([A-Za-z0-9-]+)|([0-9a-f]{24})$",
    r"^([A-Za-z0-9-]+)|([0-9a-f]{24})$",
    ""
);
pattern!(
    DOCKERFILE_PATH,
    r"^\/([a-zA-Z0-9-._]+\/)*[a-zA-Z0-9-._]+$",
    r"^\/([a-zA-Z0-9\-._]+\/)*[a-zA-Z0-9\-._]+$",
    "an absolute path such as /Dockerfile"
);
pattern!(
    DOCKER_WORKDIR,
    r"^\/([a-zA-Z0-9-._]+\/)*[a-zA-Z0-9-._]*$",
    r"^\/([a-zA-Z0-9\-._]+\/)*[a-zA-Z0-9\-._]*$",
    "an absolute path such as /"
);
// JSON-schema patterns are unanchored, and this one is published without anchors.
pattern!(
    CRON_SCHEDULE,
    r"(@(annually|yearly|monthly|weekly|daily|hourly))|((((\d+,)+\d+|(\d+(\/|-)\d+)|\d+|\*) ?){5})",
    r"(@(annually|yearly|monthly|weekly|daily|hourly))|(((([0-9]+,)+[0-9]+|([0-9]+(\/|-)[0-9]+)|[0-9]+|\*) ?){5})",
    ""
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_path_requires_tag_or_digest() {
        for ok in [
            "prefecthq/prefect:3-python3.12",
            "nginx:latest",
            "ghcr.io/o/i@sha256:0123abcd",
            "https://registry.example.com/team/image:1.0",
        ] {
            assert!(IMAGE_PATH.is_match(ok), "{ok}");
        }
        for bad in ["prefecthq/prefect", "nginx", "", "ghcr.io/o/i"] {
            assert!(!IMAGE_PATH.is_match(bad), "{bad}");
        }
    }

    #[test]
    fn job_name_pattern() {
        for ok in [
            "pf-0b9f6a2e-1c3d-4e5f-8a9b-0c1d2e3f4a5b",
            "Example Job",
            "abc",
        ] {
            assert!(JOB_NAME.is_match(ok), "{ok}");
        }
        for bad in ["1abc", "a_b", "a--b", "ab-", "a.b", "-ab", "ab  c"] {
            assert!(!JOB_NAME.is_match(bad), "{bad}");
        }
    }

    #[test]
    fn description_pattern_accepts_brackets_and_rejects_symbols() {
        assert!(DESCRIPTION.is_match("Prefect flow run [x] (y); a/b\\c 'q' \"d\" `e` %^&*-_:!"));
        for bad in [
            "a#b", "a@b", "a+b", "a=b", "a<b", "{x}", "a|b", "a~b", "a$b", "é",
        ] {
            assert!(!DESCRIPTION.is_match(bad), "{bad}");
        }
    }

    #[test]
    fn path_patterns_allow_dash_dot_underscore() {
        assert!(DOCKERFILE_PATH.is_match("/my-dir/Docker.file_x"));
        assert!(!DOCKERFILE_PATH.is_match("Dockerfile"));
        assert!(DOCKER_WORKDIR.is_match("/"));
        assert!(!DOCKER_WORKDIR.is_match("/a b"));
    }

    #[test]
    fn other_patterns() {
        assert!(PROJECT_URL.is_match("https://github.com/northflank/gatsby-with-northflank"));
        assert!(!PROJECT_URL.is_match("not a url"));
        assert!(BUILD_SHA.is_match("latest"));
        assert!(BUILD_SHA.is_match(&"a".repeat(40)));
        assert!(!BUILD_SHA.is_match("abc"));
        assert!(CRON_SCHEDULE.is_match("*/5 * * * *") || CRON_SCHEDULE.is_match("0 * * * *"));
        assert!(CRON_SCHEDULE.is_match("@daily"));
        assert!(!CRON_SCHEDULE.is_match("never"));
        assert!(SLUG.is_match("nf-compute-20"));
        assert!(!SLUG.is_match("my_tag"));
    }
}

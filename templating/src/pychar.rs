//! Python's notions of "word character", "whitespace", "printable" and "decimal digit".
//!
//! Prefect's placeholder regex, `repr()` and `int()` follow CPython's Unicode rules, which differ from Rust's
//! `char` methods (e.g. Rust counts combining vowel signs as alphabetic, Python's `\w` does not), so they are
//! rebuilt here from Unicode general categories.

use std::sync::LazyLock;

use regex::Regex;

/// Python `\w` in a `str` pattern: `str.isalnum()` or `_`. `isalnum` is letters (L*) plus characters with a
/// numeric type, which are all in N* (or already in L*).
pub(crate) const WORD_CLASS: &str = r"\p{L}\p{N}_";

/// Python `\s` in a `str` pattern (`str.isspace()`): Rust's `White_Space` set plus the ASCII separators
/// U+001C..U+001F, which CPython treats as whitespace.
pub(crate) const SPACE_CLASS: &str = r"\t\n\x0B\x0C\r\x1C-\x1F \x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000}";

/// `expect` cannot fire on user input: the patterns are constants, compiled by every test that touches them.
fn class_regex(class: &str) -> Regex {
    Regex::new(&format!("^[{class}]$")).expect("constant character class compiles")
}

static NOT_PRINTABLE: LazyLock<Regex> = LazyLock::new(|| class_regex(r"\p{C}\p{Z}"));
static DECIMAL: LazyLock<Regex> = LazyLock::new(|| class_regex(r"\p{Nd}"));

fn matches_class(re: &Regex, c: char) -> bool {
    let mut buf = [0u8; 4];
    re.is_match(c.encode_utf8(&mut buf))
}

/// `str.isprintable()` for one character: everything but the C* and Z* categories, except the ASCII space.
pub(crate) fn is_printable(c: char) -> bool {
    if c.is_ascii() {
        return c == ' ' || c.is_ascii_graphic();
    }
    !matches_class(&NOT_PRINTABLE, c)
}

pub(crate) fn is_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Value of a Unicode decimal digit (category Nd), as `int()` reads it: `int("٣") == 3`.
fn decimal_value(c: char) -> Option<u32> {
    if c.is_ascii() {
        return c.to_digit(10);
    }
    if !matches_class(&DECIMAL, c) {
        return None;
    }
    // Unicode guarantees Nd characters come in contiguous runs of 0..9, so the offset from the start of the
    // run, modulo 10, is the digit's value.
    let mut start = u32::from(c);
    while let Some(prev) = start.checked_sub(1).and_then(char::from_u32) {
        if !matches_class(&DECIMAL, prev) {
            break;
        }
        start -= 1;
    }
    Some((u32::from(c) - start) % 10)
}

/// Outcome of Python's `int(text)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PyInt {
    Value(i128),
    /// A valid integer too large for any list or string index.
    Huge,
    /// `int()` would raise `ValueError`.
    Invalid,
}

/// Python's `int(text)` in base 10: surrounding whitespace, an optional sign, decimal digits of any script,
/// single underscores between digits.
pub(crate) fn parse_py_int(text: &str) -> PyInt {
    let body = text.trim_matches(is_space);
    let (negative, digits) = match body.chars().next() {
        Some('-') => (true, &body[1..]),
        Some('+') => (false, &body[1..]),
        _ => (false, body),
    };
    let mut value: Option<i128> = Some(0);
    let mut previous_was_digit = false;
    let mut any_digit = false;
    for c in digits.chars() {
        if c == '_' {
            if !previous_was_digit {
                return PyInt::Invalid;
            }
            previous_was_digit = false;
            continue;
        }
        let Some(d) = decimal_value(c) else {
            return PyInt::Invalid;
        };
        value = value
            .and_then(|v| v.checked_mul(10))
            .and_then(|v| v.checked_add(i128::from(d)));
        previous_was_digit = true;
        any_digit = true;
    }
    if !any_digit || !previous_was_digit {
        return PyInt::Invalid;
    }
    match value {
        Some(v) if negative => PyInt::Value(-v),
        Some(v) => PyInt::Value(v),
        None => PyInt::Huge,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int_parsing_follows_python() {
        assert_eq!(parse_py_int("0"), PyInt::Value(0));
        assert_eq!(parse_py_int("-1"), PyInt::Value(-1));
        assert_eq!(parse_py_int("007"), PyInt::Value(7));
        assert_eq!(parse_py_int("1_000"), PyInt::Value(1000));
        assert_eq!(parse_py_int(" 12 "), PyInt::Value(12));
        assert_eq!(parse_py_int("٣"), PyInt::Value(3));
        assert_eq!(parse_py_int("１２"), PyInt::Value(12));
        assert_eq!(parse_py_int("𝟗"), PyInt::Value(9));
        for bad in [
            "", "-", "_1", "1_", "1__0", "--1", "1-", "x", "1.0", "²", "½",
        ] {
            assert_eq!(parse_py_int(bad), PyInt::Invalid, "{bad:?}");
        }
        assert_eq!(
            parse_py_int("99999999999999999999999999999999999999999"),
            PyInt::Huge
        );
    }

    #[test]
    fn printable_follows_python() {
        for c in [' ', 'a', '~', 'é', '中', '😀', '\u{300}'] {
            assert!(is_printable(c), "{c:?}");
        }
        for c in [
            '\n', '\x7f', '\u{a0}', '\u{ad}', '\u{200b}', '\u{2028}', '\u{e000}', '\u{378}',
            '\u{feff}',
        ] {
            assert!(!is_printable(c), "{c:?}");
        }
    }

    #[test]
    fn space_follows_python() {
        for c in [
            ' ', '\t', '\u{1c}', '\u{1f}', '\u{85}', '\u{a0}', '\u{3000}',
        ] {
            assert!(is_space(c), "{c:?}");
        }
        for c in ['\u{200b}', 'a', '\u{180e}'] {
            assert!(!is_space(c), "{c:?}");
        }
    }
}

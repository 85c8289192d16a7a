//! `str()` / `repr()` of JSON values, checked against CPython's output for the same `json.loads` input.

use prefect_templating::{py_repr, py_str};
use serde_json::{Value, json};

/// Parses JSON text as Prefect's `json.loads` would see it, then formats it with `str()`.
fn str_of(json_text: &str) -> String {
    let value: Value = serde_json::from_str(json_text).expect("test input is JSON");
    py_str(&value)
}

#[test]
fn numbers_use_python_repr() {
    let cases = [
        ("1.0", "1.0"),
        ("100.0", "100.0"),
        ("1e20", "1e+20"),
        ("1e22", "1e+22"),
        ("1e16", "1e+16"),
        ("1e15", "1000000000000000.0"),
        ("0.0001", "0.0001"),
        ("1e-4", "0.0001"),
        ("0.00001", "1e-05"),
        ("2.5e-5", "2.5e-05"),
        ("0.001234", "0.001234"),
        ("0.1", "0.1"),
        ("0.5", "0.5"),
        ("0.30000000000000004", "0.30000000000000004"),
        ("123456789.125", "123456789.125"),
        ("123456789012345678.0", "1.2345678901234568e+17"),
        ("9007199254740993.0", "9007199254740992.0"),
        ("1.5e300", "1.5e+300"),
        ("1.7976931348623157e308", "1.7976931348623157e+308"),
        ("5e-324", "5e-324"),
        ("-0.0", "-0.0"),
        ("-2.5", "-2.5"),
        ("-3", "-3"),
        ("0", "0"),
        ("12345678901234567890", "12345678901234567890"),
        ("18446744073709551615", "18446744073709551615"),
        ("-9223372036854775808", "-9223372036854775808"),
    ];
    for (input, expected) in cases {
        assert_eq!(str_of(input), expected, "str(json.loads({input:?}))");
    }
}

#[test]
fn constants_are_python_names() {
    assert_eq!(py_str(&json!(true)), "True");
    assert_eq!(py_str(&json!(false)), "False");
    assert_eq!(py_str(&Value::Null), "None");
    assert_eq!(py_repr(&json!(true)), "True");
}

#[test]
fn top_level_string_is_itself_in_str_and_quoted_in_repr() {
    assert_eq!(py_str(&json!("it's")), "it's");
    assert_eq!(py_repr(&json!("abc")), "'abc'");
    assert_eq!(py_repr(&json!("")), "''");
}

#[test]
fn strings_inside_repr_follow_python_quoting_and_escaping() {
    let cases = [
        ("it's", r#""it's""#),
        (r#"say "hi""#, r#"'say "hi"'"#),
        (r#"it's "x""#, r#"'it\'s "x"'"#),
        (r"a\b", r"'a\\b'"),
        ("tab\there\nnl\rcr", r"'tab\there\nnl\rcr'"),
        ("héllo 中 😀", "'héllo 中 😀'"),
        (
            "\u{0}\u{1f}\u{7f}\u{80}\u{a0}\u{ad}",
            r"'\x00\x1f\x7f\x80\xa0\xad'",
        ),
        (
            "\u{200b}\u{2028}\u{feff}\u{e000}\u{f0000}\u{378}",
            r"'\u200b\u2028\ufeff\ue000\U000f0000\u0378'",
        ),
    ];
    for (input, expected) in cases {
        assert_eq!(py_repr(&json!(input)), expected, "repr({input:?})");
        // Inside a container the same rules apply.
        assert_eq!(py_str(&json!([input])), format!("[{expected}]"));
    }
}

#[test]
fn containers_use_python_repr() {
    assert_eq!(py_str(&json!({"k": "v", "n": 1})), "{'k': 'v', 'n': 1}");
    assert_eq!(py_str(&json!([1, "two"])), "[1, 'two']");
    assert_eq!(py_str(&json!([])), "[]");
    assert_eq!(py_str(&json!({})), "{}");
    assert_eq!(
        str_of(r#"{"a":[1,{"b":null}],"c":true,"d":{},"e":[],"f":"it's","g":1.0}"#),
        r#"{'a': [1, {'b': None}], 'c': True, 'd': {}, 'e': [], 'f': "it's", 'g': 1.0}"#
    );
    assert_eq!(py_str(&json!({"it's": ["x\ny"]})), r#"{"it's": ['x\ny']}"#);
}

//! Python's `str()` and `repr()` of JSON values, as Prefect sees them after `json.loads`.
//!
//! Embedded placeholders are filled with `str(value)`, so `"x-{{ d }}"` must produce `x-{'k': 'v', 'n': 1}`
//! byte for byte, not JSON.

use serde_json::{Number, Value};

use crate::pychar::is_printable;

/// Python `str()` of a JSON value: `True`/`False`/`None`, Python float repr, dicts and lists as Python repr.
/// A top-level string is returned as is (`str` of a `str`).
///
/// Dict keys come out in the `Map`'s iteration order; with serde_json's default `Map` that is sorted order,
/// whereas Python keeps the document's insertion order.
pub fn py_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => py_repr(other),
    }
}

/// Python `repr()` of a JSON value: like [`py_str`], but strings are quoted (`'it\'s'` rules included).
pub fn py_repr(v: &Value) -> String {
    let mut out = String::new();
    write_repr(&mut out, v);
    out
}

fn write_repr(out: &mut String, v: &Value) {
    match v {
        Value::Null => out.push_str("None"),
        Value::Bool(true) => out.push_str("True"),
        Value::Bool(false) => out.push_str("False"),
        Value::Number(n) => out.push_str(&number_repr(n)),
        Value::String(s) => write_str_repr(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_repr(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (key, value)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_str_repr(out, key);
                out.push_str(": ");
                write_repr(out, value);
            }
            out.push('}');
        }
    }
}

/// JSON integers stay Python ints (`1`), JSON floats become Python floats (`1.0`): serde_json keeps the two
/// apart exactly as `json.loads` does, except integers beyond u64, which it has already turned into floats.
fn number_repr(n: &Number) -> String {
    if let Some(i) = n.as_i64() {
        return i.to_string();
    }
    if let Some(u) = n.as_u64() {
        return u.to_string();
    }
    match n.as_f64() {
        Some(f) => py_float_repr(f),
        // Only reachable with serde_json's arbitrary_precision, which then keeps the literal text.
        None => n.to_string(),
    }
}

/// Python `repr(float)`: the shortest digits that round-trip, in fixed notation when the decimal exponent is
/// in -4..16 (with `.0` on integral values), otherwise `d.ddde±XX`.
pub(crate) fn py_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "nan".to_owned();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf" } else { "-inf" }.to_owned();
    }
    let sign = if f.is_sign_negative() { "-" } else { "" };
    if f == 0.0 {
        return format!("{sign}0.0");
    }
    // Rust's `{:e}` is also shortest round-trip, so it yields the same digits as CPython's `repr`.
    let sci = format!("{:e}", f.abs());
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    // Python's `decpt`: the value is 0.DIGITS × 10^decpt.
    let decpt = exponent + 1;
    let len = i32::try_from(digits.len()).unwrap_or(i32::MAX);

    let body = if decpt <= -4 || decpt > 16 {
        let (first, rest) = digits.split_at(1.min(digits.len()));
        let dot = if rest.is_empty() { "" } else { "." };
        let exp_sign = if exponent < 0 { '-' } else { '+' };
        format!(
            "{first}{dot}{rest}e{exp_sign}{:02}",
            exponent.unsigned_abs()
        )
    } else if decpt <= 0 {
        format!("0.{}{digits}", "0".repeat(decpt.unsigned_abs() as usize))
    } else if decpt >= len {
        format!("{digits}{}.0", "0".repeat((decpt - len) as usize))
    } else {
        let (int_part, frac_part) = digits.split_at(decpt as usize);
        format!("{int_part}.{frac_part}")
    };
    format!("{sign}{body}")
}

/// Python `repr(str)`: single quotes unless the text has a `'` and no `"`; backslash escapes for the quote,
/// `\\`, `\t`, `\n`, `\r`, other control characters and non-printable characters; printable non-ASCII kept.
fn write_str_repr(out: &mut String, s: &str) {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for c in s.chars() {
        match c {
            _ if c == quote || c == '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            _ if is_printable(c) => out.push(c),
            _ => {
                let code = u32::from(c);
                let escaped = if code <= 0xff {
                    format!("\\x{code:02x}")
                } else if code <= 0xffff {
                    format!("\\u{code:04x}")
                } else {
                    format!("\\U{code:08x}")
                };
                out.push_str(&escaped);
            }
        }
    }
    out.push(quote);
}

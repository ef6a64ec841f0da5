//! The one path by which user values reach the generated script: Python literals.
//!
//! Every value from a workflow file — names, strings, templates, numbers, whole configs — is
//! written into the script by `emit` as a Python literal (`'...'`, numbers, `True`/`False`/
//! `None`, lists, dicts) or, for parsed templates, as calls of the runtime's `_T`/`_R`
//! constructors whose arguments are again literals. Strings are escaped so that only printable
//! ASCII and non-ASCII letters/digits appear raw; quotes, backslashes, control characters, line
//! and paragraph separators and bidi controls are escaped, so nothing a user writes can end a
//! string, a line or change how the source reads.

use crate::template::{Part, Segment, Template};
use serde_json::Value;

/// Data as it is written into the script.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    Str(String),
    List(Vec<Data>),
    Dict(Vec<(String, Data)>),
    /// A parsed template, rendered by the runtime.
    Template(Template),
}

impl From<&Value> for Data {
    fn from(v: &Value) -> Self {
        match v {
            Value::Null => Data::Null,
            Value::Bool(b) => Data::Bool(*b),
            Value::Number(n) => Data::Number(n.clone()),
            Value::String(s) => Data::Str(s.clone()),
            Value::Array(a) => Data::List(a.iter().map(Data::from).collect()),
            Value::Object(o) => {
                Data::Dict(o.iter().map(|(k, v)| (k.clone(), Data::from(v))).collect())
            }
        }
    }
}

impl From<&str> for Data {
    fn from(s: &str) -> Self {
        Data::Str(s.to_string())
    }
}

impl<T: Into<Data>> From<Option<T>> for Data {
    fn from(o: Option<T>) -> Self {
        o.map(Into::into).unwrap_or(Data::Null)
    }
}

impl From<bool> for Data {
    fn from(b: bool) -> Self {
        Data::Bool(b)
    }
}

impl From<u64> for Data {
    fn from(n: u64) -> Self {
        Data::Number(n.into())
    }
}

impl From<f64> for Data {
    fn from(f: f64) -> Self {
        serde_json::Number::from_f64(f)
            .map(Data::Number)
            .unwrap_or(Data::Null)
    }
}

/// Builds a dict literal from `(key, value)` pairs, in order.
pub(crate) fn dict<const N: usize>(entries: [(&str, Data); N]) -> Data {
    Data::Dict(
        entries
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    )
}

/// The bytes a string literal holds as they are: printable ASCII but the quote and backslash.
static AS_IT_IS: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = b' ';
    while b <= b'~' {
        table[b as usize] = b != b'\\' && b != b'\'';
        b += 1;
    }
    table
};

/// Writes `s` as a Python string literal in single quotes.
pub fn string(s: &str, out: &mut String) {
    use std::fmt::Write;
    out.reserve(s.len() + 2);
    out.push('\'');
    let mut rest = s;
    while !rest.is_empty() {
        // The longest run that is written as it is: printable ASCII but the quote and the
        // backslash (most of every string), copied at once rather than a char at a time.
        let plain = rest
            .bytes()
            .position(|b| !AS_IT_IS[b as usize])
            .unwrap_or(rest.len());
        out.push_str(&rest[..plain]);
        rest = &rest[plain..];
        let Some(c) = rest.chars().next() else {
            break;
        };
        rest = &rest[c.len_utf8()..];
        let _ = match c {
            '\\' => out.write_str("\\\\"),
            '\'' => out.write_str("\\'"),
            '\n' => out.write_str("\\n"),
            '\r' => out.write_str("\\r"),
            '\t' => out.write_str("\\t"),
            c if !c.is_ascii() && c.is_alphanumeric() => out.write_char(c),
            c if (c as u32) <= 0xff => write!(out, "\\x{:02x}", c as u32),
            c if (c as u32) <= 0xffff => write!(out, "\\u{:04x}", c as u32),
            c => write!(out, "\\U{:08x}", c as u32),
        };
    }
    out.push('\'');
}

fn number(n: &serde_json::Number, out: &mut String) {
    use std::fmt::Write;
    // JSON numbers are valid Python numbers as serde_json prints them (`1`, `-2.5`, `1e-07`).
    let _ = write!(out, "{n}");
}

/// The literal on one line.
fn inline(d: &Data, out: &mut String) {
    match d {
        Data::Null => out.push_str("None"),
        Data::Bool(true) => out.push_str("True"),
        Data::Bool(false) => out.push_str("False"),
        Data::Number(n) => number(n, out),
        Data::Str(s) => string(s, out),
        Data::List(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                inline(item, out);
            }
            out.push(']');
        }
        Data::Dict(entries) => {
            out.push('{');
            for (i, (k, v)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                string(k, out);
                out.push_str(": ");
                inline(v, out);
            }
            out.push('}');
        }
        Data::Template(t) => template(t, out),
    }
}

fn template(t: &Template, out: &mut String) {
    out.push_str("_T(");
    for (i, part) in t.parts.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        match part {
            Part::Text(s) => string(s, out),
            Part::Ref(r) => {
                out.push_str("_R(");
                for (j, seg) in r.path.iter().enumerate() {
                    if j > 0 {
                        out.push_str(", ");
                    }
                    match seg {
                        Segment::Key(k) => string(k, out),
                        Segment::Index(n) => out.push_str(&n.to_string()),
                    }
                }
                out.push(')');
            }
        }
    }
    out.push(')');
}

const WIDTH: usize = 100;

/// Writes `d` as a Python literal, breaking lists and dicts over lines when they do not fit.
/// `indent` is the current indentation in spaces. Deterministic: the same data, the same text.
pub(crate) fn emit(d: &Data, indent: usize, out: &mut String) {
    let mut one_line = String::new();
    inline(d, &mut one_line);
    let fits = indent + one_line.len() <= WIDTH;
    match d {
        Data::List(items) if !fits && !items.is_empty() => {
            out.push_str("[\n");
            for item in items {
                push_indent(indent + 4, out);
                emit(item, indent + 4, out);
                out.push_str(",\n");
            }
            push_indent(indent, out);
            out.push(']');
        }
        Data::Dict(entries) if !fits && !entries.is_empty() => {
            out.push_str("{\n");
            for (k, v) in entries {
                push_indent(indent + 4, out);
                string(k, out);
                out.push_str(": ");
                emit(v, indent + 4, out);
                out.push_str(",\n");
            }
            push_indent(indent, out);
            out.push('}');
        }
        _ => out.push_str(&one_line),
    }
}

fn push_indent(n: usize, out: &mut String) {
    out.extend(std::iter::repeat_n(' ', n));
}

/// The literal of `d` as a string.
pub(crate) fn to_string(d: &Data) -> String {
    let mut s = String::new();
    emit(d, 0, &mut s);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lit(s: &str) -> String {
        let mut o = String::new();
        string(s, &mut o);
        o
    }

    #[test]
    fn escapes_what_could_break_out() {
        assert_eq!(lit("a'b"), r"'a\'b'");
        assert_eq!(lit("\\"), r"'\\'");
        assert_eq!(lit("x\ny"), r"'x\ny'");
        assert_eq!(lit("\0"), r"'\x00'");
        assert_eq!(lit("\u{2028}"), r"'\u2028'");
        assert_eq!(lit("\u{202e}"), r"'\u202e'");
        assert_eq!(lit("\u{1F600}"), r"'\U0001f600'");
        assert_eq!(lit("héllo 日本"), "'héllo 日本'");
        assert_eq!(lit("'''\"\"\""), r#"'\'\'\'"""'"#);
    }

    /// What `string` writes, one char at a time: the rule it must keep when it copies runs.
    fn by_char(s: &str) -> String {
        let mut out = String::from("'");
        for c in s.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\'' => out.push_str("\\'"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                ' '..='~' => out.push(c),
                c if !c.is_ascii() && c.is_alphanumeric() => out.push(c),
                c if (c as u32) <= 0xff => out.push_str(&format!("\\x{:02x}", c as u32)),
                c if (c as u32) <= 0xffff => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push_str(&format!("\\U{:08x}", c as u32)),
            }
        }
        out.push('\'');
        out
    }

    proptest::proptest! {
        #[test]
        fn runs_are_written_as_each_char_would_be(s in "(?s).{0,40}", t in "[ -~\\\\'\n]{0,40}") {
            proptest::prop_assert_eq!(lit(&s), by_char(&s));
            proptest::prop_assert_eq!(lit(&t), by_char(&t));
        }
    }

    #[test]
    fn values() {
        let v: Value = serde_json::json!({"a": [1, 2.5, true, null], "b": "x"});
        assert_eq!(
            to_string(&Data::from(&v)),
            "{'a': [1, 2.5, True, None], 'b': 'x'}"
        );
    }
}

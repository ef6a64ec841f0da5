//! Text from workflows (names, outputs, log lines, errors) on its way to a person's terminal, and
//! JSON on its way to a program.
//!
//! A workflow controls much of what flowrun prints: written raw, an escape sequence in a node's
//! output could move the cursor, retitle the window, rewrite what is on the screen or hide text
//! (a bidi override reverses what follows it). So everything printed for people goes through
//! [`clean`]/[`clean_line`], which shows such characters as visible escapes (`\x1b`, `\u{202e}`)
//! instead of sending them. JSON for programs stays exact JSON: serde_json escapes C0 controls,
//! and [`json_line`]/[`json_pretty`] also write DEL, C1 controls and bidi controls as `\uXXXX`
//! escapes, so the same data reaches the program and nothing reaches a terminal that shows it.

use serde::Serialize;
use std::borrow::Cow;
use std::io::Write;

/// Characters never sent to a terminal as they are: C0 controls (but tab and, where lines are
/// expected, newline), DEL, C1 controls, and the invisible characters that reorder or separate
/// text (bidi embeddings, overrides, isolates and marks; line and paragraph separators).
fn unsafe_char(c: char, keep_newline: bool) -> bool {
    match c {
        '\t' => false,
        '\n' => !keep_newline,
        '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}' => true,
        '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{2028}' | '\u{2029}' => true,
        '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => true,
        _ => false,
    }
}

fn escape_into(out: &mut String, c: char) {
    use std::fmt::Write as _;
    let n = c as u32;
    let _ = if n < 0x80 {
        write!(out, "\\x{n:02x}")
    } else {
        write!(out, "\\u{{{n:x}}}")
    };
}

fn clean_with(s: &str, keep_newline: bool) -> Cow<'_, str> {
    if !s.chars().any(|c| unsafe_char(c, keep_newline)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if unsafe_char(c, keep_newline) {
            escape_into(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// `s` safe to print on a terminal, keeping its newlines (and tabs).
pub fn clean(s: &str) -> Cow<'_, str> {
    clean_with(s, true)
}

/// `s` safe to print on a terminal as (part of) one line: newlines are escaped too.
pub fn clean_line(s: &str) -> Cow<'_, str> {
    clean_with(s, false)
}

/// Writes strings as serde_json does, plus `\uXXXX` for what [`unsafe_char`] names beyond C0.
struct Safe<F>(F);

impl<F: serde_json::ser::Formatter> serde_json::ser::Formatter for Safe<F> {
    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            if unsafe_char(c, true) {
                w.write_all(&fragment.as_bytes()[start..i])?;
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    write!(w, "\\u{u:04x}")?;
                }
                start = i + c.len_utf8();
            }
        }
        w.write_all(&fragment.as_bytes()[start..])
    }

    // Everything else as the wrapped formatter does it.
    fn begin_array<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.begin_array(w)
    }
    fn end_array<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.end_array(w)
    }
    fn begin_array_value<W: ?Sized + Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.0.begin_array_value(w, first)
    }
    fn end_array_value<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.end_array_value(w)
    }
    fn begin_object<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.begin_object(w)
    }
    fn end_object<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.end_object(w)
    }
    fn begin_object_key<W: ?Sized + Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.0.begin_object_key(w, first)
    }
    fn end_object_key<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.end_object_key(w)
    }
    fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.begin_object_value(w)
    }
    fn end_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.end_object_value(w)
    }
}

fn to_string_with<F: serde_json::ser::Formatter>(v: &impl Serialize, f: F) -> String {
    let mut out = Vec::with_capacity(128);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, Safe(f));
    v.serialize(&mut ser).expect("a JSON value serializes");
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

/// `v` as compact JSON on one line (no trailing newline), terminal-safe (see the module docs).
pub fn json_line(v: &impl Serialize) -> String {
    to_string_with(v, serde_json::ser::CompactFormatter)
}

/// `v` as indented JSON, terminal-safe (see the module docs).
pub fn json_pretty(v: &impl Serialize) -> String {
    to_string_with(v, serde_json::ser::PrettyFormatter::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    const NASTY: &str = "a\x1b]0;pwned\x07b\x1b[2Jc\rd\x7fe\u{9b}31mf\u{202e}g\u{2066}h\ti\nj";

    #[test]
    fn clean_shows_controls_as_escapes() {
        assert_eq!(
            clean(NASTY),
            "a\\x1b]0;pwned\\x07b\\x1b[2Jc\\x0dd\\x7fe\\u{9b}31mf\\u{202e}g\\u{2066}h\ti\nj"
        );
        assert_eq!(clean_line("x\ny"), "x\\x0ay");
        assert!(matches!(clean("plain ✓ text"), Cow::Borrowed(_)));
    }

    #[test]
    fn json_stays_exact_and_terminal_safe() {
        let v = json!({ "k\u{202e}": NASTY, "n": [1, 2.5, null, true] });
        for text in [json_line(&v), json_pretty(&v)] {
            assert!(
                !text.chars().any(|c| unsafe_char(c, true)),
                "nothing unsafe is written raw: {text:?}"
            );
            let back: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(back, v, "the same data: {text}");
        }
        assert!(!json_line(&v).contains('\n'));
        assert_eq!(json_line(&json!("\u{1F600}")), "\"\u{1F600}\"");
    }
}

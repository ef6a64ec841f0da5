//! Redaction of bound connection secrets from everything printed or stored.
//!
//! The executor applies it to what the child prints before anything else sees it, so the store,
//! the terminal, JSONL and the HTTP server all get the redacted text. Protocol frames are parsed
//! first and redacted value by value ([`Redactor::value`]): the JSON around the values is never
//! touched, so a secret of one character cannot break the framing. Printed lines are redacted
//! as text ([`Redactor::line`]).
//!
//! What is matched, for each secret: the value as it is; JSON-escaped once, twice (JSON text
//! inside a JSON string, like a payload preview) and with non-ASCII as `\uXXXX`; as Python's
//! `repr` writes it (a dict printed, `%r`); and, when at least [`MIN_ENCODED`] long, its encodings — standard and URL-safe base64 (padded, unpadded,
//! and the part that is the same whatever the secret's byte offset inside a longer base64 text:
//! the three alignments), hex (lower and upper case), and percent-encoded as Python's
//! `urllib.parse.quote` (safe `/` and safe nothing) and `quote_plus` produce. A match is replaced
//! by `[REDACTED:VARIABLE]`.
//!
//! Where a line or a string ends with the start of a secret (a cut, or a secret printed over two
//! lines), that start is replaced when it is [`MIN_TAIL`] bytes or more; a line (or a line in a
//! string) that begins with the rest of a secret whose start ended the line before is replaced
//! too, whatever its length. Reversed or otherwise transformed values are out of reach.

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use flowrun_events::ErrorInfo;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;
use std::sync::Arc;

/// Secrets shorter than this (in characters) are redacted in strings and text, with a warning,
/// but not in object keys or numbers: `ok` would otherwise turn `input_tokens` into
/// `input_t[REDACTED:…]ens`, `1` every count with a 1 into a string, `200` every HTTP status.
pub const SHORT_SECRET: usize = 8;

/// Shortest start of a secret replaced where a line or string ends without a continuation.
pub const MIN_TAIL: usize = 4;

/// Shortest encoded form (base64, hex, percent) matched: shorter ones are ordinary text.
pub const MIN_ENCODED: usize = 8;

/// Characters Python's `urllib.parse.quote(s, safe="")` leaves as they are.
const QUOTE_SAFE_NONE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'_')
    .remove(b'.')
    .remove(b'-')
    .remove(b'~');
/// `quote(s)` (safe `/`).
const QUOTE_SAFE_SLASH: &AsciiSet = &QUOTE_SAFE_NONE.remove(b'/');
/// `quote_plus(s)`: spaces stay, to become `+`.
const QUOTE_PLUS: &AsciiSet = &QUOTE_SAFE_NONE.remove(b' ');

#[derive(Clone, Debug, Default)]
pub struct Redactor {
    inner: Option<Arc<Inner>>,
}

#[derive(Debug)]
struct Inner {
    /// Every form of every secret, and the index of its secret in `marks`.
    forms: Vec<(String, usize)>,
    /// `[REDACTED:VAR]` per secret.
    marks: Vec<String>,
    /// All forms (leftmost-longest); pattern `i` is `forms[i]`.
    whole: AhoCorasick,
    /// The forms of secrets of [`SHORT_SECRET`] characters or more, with their secret: what is
    /// replaced in an object key or a number.
    long: Option<(AhoCorasick, Vec<usize>)>,
    /// The forms longer than [`MIN_TAIL`], each with its prefix function (Knuth–Morris–Pratt):
    /// with it [`Inner::ending`] finds every start of the form that a text ends with in one
    /// pass over the text's last bytes. (A table of all the forms' prefixes grows with the
    /// square of their length: a 2 KB secret's took tens of seconds to build.)
    prefixes: Vec<(usize, Vec<usize>)>,
}

/// The start of a form: `(form, bytes of it)`.
type Start = (usize, usize);

/// `pi[q]`: the length of the longest proper prefix of `p[..=q]` that is also its suffix.
fn prefix_function(p: &[u8]) -> Vec<usize> {
    let mut pi = vec![0; p.len()];
    let mut k = 0;
    for q in 1..p.len() {
        while k > 0 && p[k] != p[q] {
            k = pi[k - 1];
        }
        if p[k] == p[q] {
            k += 1;
        }
        pi[q] = k;
    }
    pi
}

/// What the previous line of one stream ended with that may be the start of a secret.
/// See [`Redactor::line`].
#[derive(Clone, Debug, Default)]
pub struct Carry(Vec<Start>);

/// The JSON string-body form of `s` (its JSON literal without the quotes).
fn json_escaped(s: &str) -> String {
    let quoted = serde_json::to_string(s).expect("a string serializes");
    quoted[1..quoted.len() - 1].to_string()
}

/// `s` with every non-ASCII character as `\uXXXX` (UTF-16), as Python's `json.dumps` writes it.
fn ascii_escaped(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            for unit in c.encode_utf16(&mut [0; 2]) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

/// The bodies of Python's `repr(s)` (without the quotes), as `print(d)` of a dict or `%r` write
/// a string: backslash, tab, newline and carriage return as escapes, other characters Python
/// does not print as `\xhh`, `\uhhhh` or `\Uhhhhhhhh`; the quote Python picks escaped — `'`,
/// unless the string has a `'` and no `"`. Both quotings are returned (the other one costs
/// nothing and covers a repr made by hand). Which non-ASCII characters Python prints is
/// Unicode's table; the ones a secret plausibly holds are listed in [`python_prints`].
fn python_repr_bodies(s: &str) -> [String; 2] {
    let mut plain = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => plain.push_str("\\\\"),
            '\t' => plain.push_str("\\t"),
            '\n' => plain.push_str("\\n"),
            '\r' => plain.push_str("\\r"),
            c if python_prints(c) => plain.push(c),
            c if (c as u32) < 0x100 => plain.push_str(&format!("\\x{:02x}", c as u32)),
            c if (c as u32) < 0x10000 => plain.push_str(&format!("\\u{:04x}", c as u32)),
            c => plain.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    let single_escaped = plain.replace('\'', "\\'");
    [single_escaped, plain]
}

/// Whether Python's `str.isprintable` holds for `c`, for ASCII exactly and beyond it for the
/// controls, separators and format characters (Unicode categories Cc, Zs but the space, Zl, Zp,
/// Cf, Cs, Co) a pasted secret can carry; other unassigned code points are taken as printable.
fn python_prints(c: char) -> bool {
    let u = c as u32;
    !(u < 0x20
        || (0x7f..=0xa0).contains(&u)
        || u == 0xad
        || (0x600..=0x605).contains(&u)
        || u == 0x61c
        || u == 0x6dd
        || u == 0x70f
        || u == 0x1680
        || u == 0x180e
        || (0x2000..=0x200f).contains(&u)
        || (0x2028..=0x202f).contains(&u)
        || (0x205f..=0x2064).contains(&u)
        || (0x2066..=0x206f).contains(&u)
        || u == 0x3000
        || (0xd800..=0xf8ff).contains(&u)
        || u == 0xfeff
        || (0xfff9..=0xfffb).contains(&u)
        || (0xf0000..).contains(&u)
        || u == 0xe0001
        || (0xe0020..=0xe007f).contains(&u))
}

/// The base64 characters that encode only bytes of `secret` when it starts `offset` bytes (mod
/// 3) into the encoded data: the same whatever surrounds it.
fn base64_part(engine: &impl Engine, secret: &[u8], offset: usize) -> String {
    let mut data = vec![0u8; offset];
    data.extend_from_slice(secret);
    let text = engine.encode(&data);
    let start = (8 * offset).div_ceil(6);
    let end = 8 * (offset + secret.len()) / 6;
    text.get(start..end).unwrap_or_default().to_string()
}

/// Every form of `value` that is matched (see the module comment).
fn forms_of(value: &str) -> Vec<String> {
    let once = json_escaped(value);
    let twice = json_escaped(&once);
    let ascii = ascii_escaped(&once);
    let mut forms = vec![value.to_string(), once, twice, ascii];
    forms.extend(python_repr_bodies(value));
    let bytes = value.as_bytes();
    let mut encoded = Vec::new();
    for (engine, padding) in [(&STANDARD, "="), (&URL_SAFE, "=")] {
        let full = engine.encode(bytes);
        encoded.push(full.trim_end_matches(padding).to_string());
        encoded.push(full);
        for offset in 0..3 {
            encoded.push(base64_part(engine, bytes, offset));
        }
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    encoded.push(hex.to_uppercase());
    encoded.push(hex);
    encoded.push(utf8_percent_encode(value, QUOTE_SAFE_SLASH).to_string());
    encoded.push(utf8_percent_encode(value, QUOTE_SAFE_NONE).to_string());
    encoded.push(
        utf8_percent_encode(value, QUOTE_PLUS)
            .to_string()
            .replace(' ', "+"),
    );
    forms.extend(encoded.into_iter().filter(|f| f.len() >= MIN_ENCODED));
    forms
}

fn automaton<I, P>(kind: MatchKind, patterns: I) -> AhoCorasick
where
    I: IntoIterator<Item = P>,
    P: AsRef<[u8]>,
{
    let patterns: Vec<P> = patterns.into_iter().collect();
    let bytes: usize = patterns.iter().map(|p| p.as_ref().len()).sum();
    // The crate picks a DFA for a few patterns, whatever their length; building one for long
    // secrets' forms took seconds (a 1000-character secret: ~10 s). Past this size, the
    // contiguous NFA: built in linear time, searched a little slower.
    let nfa = (bytes > DFA_MAX_BYTES).then_some(AhoCorasickKind::ContiguousNFA);
    AhoCorasick::builder()
        .match_kind(kind)
        .kind(nfa)
        .build(patterns)
        .expect("literal patterns build")
}

/// Total length of the patterns above which no DFA is built (see [`automaton`]).
const DFA_MAX_BYTES: usize = 4096;

impl Redactor {
    /// `secrets`: `(variable name, value)`; empty values are ignored.
    pub fn new(secrets: &[(String, String)]) -> Redactor {
        let mut forms: Vec<(String, usize)> = Vec::new();
        let mut marks = Vec::new();
        let mut long_secret = Vec::new();
        for (var, value) in secrets.iter().filter(|(_, v)| !v.is_empty()) {
            let secret = marks.len();
            marks.push(format!("[REDACTED:{var}]"));
            long_secret.push(value.chars().count() >= SHORT_SECRET);
            for form in forms_of(value) {
                if !forms.iter().any(|(f, _)| *f == form) {
                    forms.push((form, secret));
                }
            }
        }
        if forms.is_empty() {
            return Redactor::default();
        }
        let whole = automaton(MatchKind::LeftmostLongest, forms.iter().map(|(f, _)| f));
        let long: Vec<&(String, usize)> = forms.iter().filter(|(_, s)| long_secret[*s]).collect();
        let long = (!long.is_empty()).then(|| {
            (
                automaton(MatchKind::LeftmostLongest, long.iter().map(|(f, _)| f)),
                long.iter().map(|(_, s)| *s).collect(),
            )
        });
        let prefixes = forms
            .iter()
            .enumerate()
            .filter(|(_, (f, _))| f.len() > MIN_TAIL)
            .map(|(i, (f, _))| (i, prefix_function(f.as_bytes())))
            .collect();
        Redactor {
            inner: Some(Arc::new(Inner {
                forms,
                marks,
                whole,
                long,
                prefixes,
            })),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.inner.is_none()
    }

    /// Text where only whole secrets are replaced (a message flowrun writes about the child).
    pub fn text(&self, s: String) -> String {
        match &self.inner {
            Some(inner) => inner.whole(s),
            None => s,
        }
    }

    /// How many bytes of `pending` — streamed text not sent yet, which no secret straddles the
    /// start of — may be sent now, to be redacted with [`text`](Self::text): everything when the
    /// stream has ended (`last`), else all but what could be the start of a secret that the
    /// next piece completes (the longest end of `pending` that begins a form, and at least the
    /// last [`MIN_TAIL`] - 1 bytes, which covers the short forms the prefix search leaves out),
    /// moved past a whole secret that straddles that point. So a secret split across pieces is
    /// always redacted whole.
    pub fn releasable(&self, pending: &str, last: bool) -> usize {
        let Some(inner) = &self.inner else {
            return pending.len();
        };
        if last {
            return pending.len();
        }
        let started = inner.ending(pending).iter().map(|(_, k)| *k).max();
        let hold = started.unwrap_or(0).max(MIN_TAIL - 1);
        let mut at = pending.len().saturating_sub(hold);
        while !pending.is_char_boundary(at) {
            at -= 1;
        }
        for m in inner.whole.find_iter(pending) {
            if m.start() < at && m.end() > at {
                at = m.end();
            }
        }
        at
    }

    /// A string value: whole secrets, a secret continued from one line to the next, and the
    /// start of a secret that ends a line or the string.
    pub fn string(&self, s: String) -> String {
        let Some(inner) = &self.inner else { return s };
        let s = inner.whole(s);
        if !s.contains('\n') {
            return inner.line(&s, false, &mut Carry::default());
        }
        let mut carry = Carry::default();
        let lines: Vec<String> = s
            .split('\n')
            .map(|l| inner.line(l, false, &mut carry))
            .collect();
        lines.join("\n")
    }

    /// A printed line of one stream, after `carry` (that stream's state, updated here): whole
    /// secrets; the rest of a secret whose start ended the previous line; the start of a secret
    /// that ends this line ([`MIN_TAIL`] bytes or more). `cut`: the rest of the line was dropped,
    /// so the next line continues nothing.
    pub fn line(&self, s: String, cut: bool, carry: &mut Carry) -> String {
        let Some(inner) = &self.inner else { return s };
        let out = inner.line(&s, true, carry);
        if cut {
            carry.0.clear();
        }
        out
    }

    /// Every string inside `v`, and every key and number that holds a secret of
    /// [`SHORT_SECRET`] characters or more.
    pub fn value(&self, v: &mut Value) {
        let Some(inner) = &self.inner else { return };
        match v {
            Value::String(s) => *s = self.string(std::mem::take(s)),
            Value::Array(items) => items.iter_mut().for_each(|item| self.value(item)),
            Value::Object(map) => {
                if map.keys().any(|k| inner.key(k).is_some()) {
                    let old = std::mem::take(map);
                    for (k, item) in old {
                        let k = inner.key(&k).unwrap_or(k);
                        map.insert(k, item);
                    }
                }
                map.values_mut().for_each(|item| self.value(item));
            }
            Value::Number(n) => {
                if let Some(s) = inner.key(&n.to_string()) {
                    *v = Value::String(s);
                }
            }
            Value::Null | Value::Bool(_) => {}
        }
    }

    /// The message and traceback of an error (its type and node are names, not values).
    pub fn error(&self, e: &mut ErrorInfo) {
        if self.is_empty() {
            return;
        }
        e.message = self.string(std::mem::take(&mut e.message));
        e.traceback = e.traceback.take().map(|t| self.string(t));
    }
}

impl Inner {
    fn whole(&self, s: String) -> String {
        if !self.whole.is_match(&s) {
            return s;
        }
        let marks: Vec<&str> = self.forms.iter().map(|(_, i)| self.mark(*i)).collect();
        self.whole.replace_all(&s, &marks)
    }

    fn mark(&self, secret: usize) -> &str {
        &self.marks[secret]
    }

    /// A key or a number's text, redacted, when it holds a long secret.
    fn key(&self, k: &str) -> Option<String> {
        let (ac, secrets) = self.long.as_ref()?;
        if !ac.is_match(k) {
            return None;
        }
        let marks: Vec<&str> = secrets.iter().map(|s| self.mark(*s)).collect();
        Some(ac.replace_all(k, &marks))
    }

    /// Every start of a form that `s` ends with: `(form, length)` for each proper prefix of a
    /// form longer than [`MIN_TAIL`], at a character boundary, that is a suffix of `s`.
    fn ending(&self, s: &str) -> Vec<Start> {
        let mut out = Vec::new();
        for (i, pi) in &self.prefixes {
            let form = self.forms[*i].0.as_str();
            let (p, n) = (form.as_bytes(), form.len());
            // The longest prefix of the form that the text's last n bytes end with...
            let mut q = 0;
            for &c in &s.as_bytes()[s.len().saturating_sub(n)..] {
                if q == n {
                    q = pi[n - 1];
                }
                while q > 0 && p[q] != c {
                    q = pi[q - 1];
                }
                if p[q] == c {
                    q += 1;
                }
            }
            // ...then every shorter one, down the chain of borders; the whole form is not a
            // start (the whole-form search has it).
            if q == n {
                q = pi[n - 1];
            }
            while q > 0 {
                if form.is_char_boundary(q) {
                    out.push((*i, q));
                }
                q = pi[q - 1];
            }
        }
        out
    }

    /// The longest continuation of `carry` that `line` starts with. `middle`: the line is all
    /// inside a secret that goes on past a line break of its own.
    fn continuation(&self, carry: &Carry, line: &str) -> Option<Continuation> {
        let mut best: Option<Continuation> = None;
        for &(f, k) in &carry.0 {
            let (form, secret) = &self.forms[f];
            // The line break may be the secret's own (a multi-line secret) or not.
            let skip = usize::from(form[k..].starts_with('\n'));
            let rest = &form[k + skip..];
            let found = match rest.find('\n') {
                Some(q) if line == &rest[..q] => Some((line.len(), Some((f, k + skip + q)))),
                Some(_) => None,
                None if !rest.is_empty() && line.starts_with(rest) => Some((rest.len(), None)),
                None => None,
            };
            if let Some((len, middle)) = found {
                if best.as_ref().is_none_or(|b| len > b.len) {
                    best = Some(Continuation {
                        len,
                        secret: *secret,
                        middle,
                    });
                }
            }
        }
        best
    }

    fn line(&self, s: &str, whole: bool, carry: &mut Carry) -> String {
        let mut out = String::new();
        let mut rest = s;
        if let Some(c) = self.continuation(carry, s) {
            out.push_str(self.mark(c.secret));
            if let Some(reached) = c.middle {
                carry.0 = vec![reached];
                return out;
            }
            rest = &s[c.len..];
        }
        if whole {
            out.push_str(&self.whole(rest.to_string()));
        } else {
            out.push_str(rest);
        }
        // A CRLF line ends before its `\r`.
        let cr = out.ends_with('\r');
        if cr {
            out.pop();
        }
        carry.0 = self.ending(&out);
        let tail = carry
            .0
            .iter()
            .filter(|(_, k)| *k >= MIN_TAIL)
            .max_by_key(|(_, k)| *k);
        if let Some(&(f, k)) = tail {
            out.truncate(out.len() - k);
            out.push_str(self.mark(self.forms[f].1));
        }
        if cr {
            out.push('\r');
        }
        out
    }
}

struct Continuation {
    /// Bytes of the line that belong to the secret.
    len: usize,
    secret: usize,
    /// How far into the form the line reaches when it is all inside the secret.
    middle: Option<Start>,
}

#[cfg(test)]
mod tests;

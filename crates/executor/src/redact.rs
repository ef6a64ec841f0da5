//! Redaction of bound connection secrets from everything printed or stored.
//!
//! Applied by the executor to every line and protocol frame the child prints, before anything
//! else sees them, so the store, the terminal, JSONL and the HTTP server all get the redacted
//! text. A secret is replaced by `[REDACTED:VARIABLE]` as it is, in its JSON-escaped form (a
//! secret with a quote or backslash appears escaped inside event JSON) and escaped twice (JSON
//! text inside a JSON string, like the preview of an oversized payload). Where a length limit
//! cut through a secret (a log line over the line limit, a payload preview), what the cut left
//! of its start (4 bytes or more) is replaced too.

use aho_corasick::{AhoCorasick, MatchKind};

#[derive(Clone, Debug, Default)]
pub struct Redactor {
    inner: Option<(AhoCorasick, Vec<String>)>,
    /// What a cut can leave of a secret at the end of a JSON string inside a protocol frame
    /// (the runtime's preview of an oversized payload is cut at a fixed length): a proper
    /// prefix of an escaped form followed by `"`.
    tails: Option<(AhoCorasick, Vec<String>)>,
    /// `(form, replacement)` for every form of every secret, for [`Redactor::cut_tail`].
    forms: Vec<(String, String)>,
}

/// Shortest secret prefix redacted at a cut: what stays is at most 3 bytes of a secret's start.
const MIN_TAIL: usize = 4;

/// The JSON string-body form of `s` (its JSON literal without the quotes).
fn json_escaped(s: &str) -> String {
    let quoted = serde_json::to_string(s).expect("a string serializes");
    quoted[1..quoted.len() - 1].to_string()
}

impl Redactor {
    /// `secrets`: `(variable name, value)`; empty values are ignored.
    ///
    /// Each secret is matched as it is, JSON-escaped (inside event JSON) and JSON-escaped twice
    /// (a JSON text inside a JSON string, like the runtime's preview of an oversized payload).
    pub fn new(secrets: &[(String, String)]) -> Redactor {
        let mut forms: Vec<(String, String)> = Vec::new();
        for (var, value) in secrets {
            if value.is_empty() {
                continue;
            }
            let replacement = format!("[REDACTED:{var}]");
            let once = json_escaped(value);
            let twice = json_escaped(&once);
            for form in [value.clone(), once, twice] {
                if !forms.iter().any(|(f, _)| *f == form) {
                    forms.push((form, replacement.clone()));
                }
            }
        }
        if forms.is_empty() {
            return Redactor::default();
        }
        let build = |pairs: &[(String, String)]| {
            let ac = AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(pairs.iter().map(|(p, _)| p))
                .expect("literal patterns build");
            (ac, pairs.iter().map(|(_, r)| r.clone()).collect())
        };
        let mut tails: Vec<(String, String)> = Vec::new();
        for (form, replacement) in &forms {
            for (k, _) in form.char_indices().filter(|(k, _)| *k >= MIN_TAIL) {
                let pattern = format!("{}\"", &form[..k]);
                if !tails.iter().any(|(p, _)| *p == pattern) {
                    tails.push((pattern, format!("{replacement}\"")));
                }
            }
        }
        Redactor {
            inner: Some(build(&forms)),
            tails: (!tails.is_empty()).then(|| build(&tails)),
            forms,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.inner.is_none()
    }

    /// A protocol frame (JSON): whole secrets, then what a cut left of one at a string's end.
    pub fn bytes(&self, b: Vec<u8>) -> Vec<u8> {
        let b = match &self.inner {
            Some((ac, rep)) if ac.is_match(&b) => ac.replace_all_bytes(&b, rep),
            _ => b,
        };
        match &self.tails {
            Some((ac, rep)) if ac.is_match(&b) => ac.replace_all_bytes(&b, rep),
            _ => b,
        }
    }

    /// A line that was cut after `s` (a log line over the length limit): whole secrets, and a
    /// secret the cut went through, whose start ends the line.
    pub fn cut_tail(&self, s: String) -> String {
        let mut s = self.text(s);
        let mut best: Option<(usize, &str)> = None;
        for (form, replacement) in &self.forms {
            for (k, _) in form.char_indices().filter(|(k, _)| *k >= MIN_TAIL) {
                if s.ends_with(&form[..k]) && best.is_none_or(|(n, _)| k > n) {
                    best = Some((k, replacement));
                }
            }
        }
        if let Some((k, replacement)) = best {
            s.truncate(s.len() - k);
            s.push_str(replacement);
        }
        s
    }

    pub fn text(&self, s: String) -> String {
        match &self.inner {
            Some((ac, rep)) if ac.is_match(&s) => ac.replace_all(&s, rep),
            _ => s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_raw_and_json_escaped() {
        let r = Redactor::new(&[("KEY".into(), "s3cr\"et".into())]);
        assert_eq!(r.text("a s3cr\"et b".into()), "a [REDACTED:KEY] b");
        assert_eq!(
            r.text(r#"{"x":"s3cr\"et"}"#.into()),
            r#"{"x":"[REDACTED:KEY]"}"#
        );
        assert_eq!(r.text("nothing".into()), "nothing");
    }

    #[test]
    fn redacts_twice_escaped() {
        let r = Redactor::new(&[("KEY".into(), "s3cr\"et".into())]);
        // A JSON text inside a JSON string (a payload preview): the secret is escaped twice.
        let inner = serde_json::json!({ "x": "s3cr\"et" }).to_string();
        let outer = serde_json::json!({ "preview": inner }).to_string();
        assert!(outer.contains(r#"s3cr\\\"et"#), "{outer}");
        let redacted = r.text(outer);
        assert_eq!(redacted, r#"{"preview":"{\"x\":\"[REDACTED:KEY]\"}"}"#);
    }

    #[test]
    fn redacts_a_secret_cut_at_the_end_of_a_string_or_line() {
        let r = Redactor::new(&[("KEY".into(), "sk-test-7f3a9c1e5b".into())]);
        assert_eq!(
            String::from_utf8(r.bytes(br#"{"preview":"aaa sk-test-7f3a"}"#.to_vec())).unwrap(),
            r#"{"preview":"aaa [REDACTED:KEY]"}"#
        );
        // Fewer than MIN_TAIL bytes are kept as they are; an unrelated string is untouched.
        assert_eq!(
            r.bytes(br#"{"a":"sk-"}"#.to_vec()),
            br#"{"a":"sk-"}"#.to_vec()
        );
        assert_eq!(
            r.cut_tail("aaa sk-test-7f3a9c1e".into()),
            "aaa [REDACTED:KEY]"
        );
        assert_eq!(
            r.cut_tail("aaa sk-test-7f3a9c1e5b".into()),
            "aaa [REDACTED:KEY]"
        );
        assert_eq!(
            r.cut_tail("sk-test-7f3a9c1e5b and sk-t".into()),
            "[REDACTED:KEY] and [REDACTED:KEY]"
        );
        assert_eq!(r.cut_tail("plain line".into()), "plain line");
        assert!(Redactor::new(&[]).is_empty());
        assert_eq!(Redactor::new(&[]).cut_tail("x".into()), "x");
    }
}

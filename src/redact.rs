//! Redaction of bound connection secrets from everything printed or stored.
//!
//! Applied by the executor to every line and protocol frame the child prints, before anything
//! else sees them, so the store, the terminal, JSONL and the HTTP server all get the redacted
//! text. A secret is replaced by `[REDACTED:VARIABLE]` both as it is and in its JSON-escaped
//! form (a secret with a quote or backslash appears escaped inside event JSON).

use aho_corasick::{AhoCorasick, MatchKind};

#[derive(Clone, Debug, Default)]
pub struct Redactor {
    inner: Option<(AhoCorasick, Vec<String>)>,
}

impl Redactor {
    /// `secrets`: `(variable name, value)`; empty values are ignored.
    pub fn new(secrets: &[(String, String)]) -> Redactor {
        let mut patterns = Vec::new();
        let mut replacements = Vec::new();
        for (var, value) in secrets {
            if value.is_empty() {
                continue;
            }
            let replacement = format!("[REDACTED:{var}]");
            let escaped = serde_json::to_string(value).expect("a string serializes");
            let escaped = &escaped[1..escaped.len() - 1];
            patterns.push(value.clone());
            replacements.push(replacement.clone());
            if escaped != value {
                patterns.push(escaped.to_string());
                replacements.push(replacement);
            }
        }
        if patterns.is_empty() {
            return Redactor { inner: None };
        }
        let ac = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&patterns)
            .expect("literal patterns build");
        Redactor {
            inner: Some((ac, replacements)),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.inner.is_none()
    }

    pub fn bytes(&self, b: Vec<u8>) -> Vec<u8> {
        match &self.inner {
            Some((ac, rep)) if ac.is_match(&b) => ac.replace_all_bytes(&b, rep),
            _ => b,
        }
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
}

//! Trigger data on its way to the child and to the store, held once.
//!
//! The child reads the trigger as JSON text on stdin; the store keeps it whole only up to its
//! field limit (a truncation marker past that). So a large trigger is never held as text, a
//! parsed value, a re-serialized copy and a copy for the store at once: JSON text given by the
//! caller goes to the child as it is when the workflow declares no `inputs` schema (only a
//! schema needs the parsed value, for defaults and validation), and the store gets a marker
//! made from the first bytes instead of a copy of the whole.

use crate::inputs::{self, InputError, InputProblem};
use bytes::Bytes;
use flowrun_events::json::{MAX_DEPTH, parse_bounded};
use flowrun_executor::redact::Redactor;
use serde_json::Value;

/// Trigger data as a caller gives it.
#[derive(Debug, Clone)]
pub enum Trigger {
    /// A parsed value (the HTTP API's body, an earlier execution's stored trigger).
    Value(Value),
    /// JSON text (a file or stdin): one JSON value nested at most
    /// [`MAX_DEPTH`](flowrun_events::json::MAX_DEPTH) levels; empty or blank text is `{}`.
    /// Checked in [`prepare`](super::prepare()); sent to the child as it is when the workflow
    /// has no `inputs` schema.
    Text(Vec<u8>),
}

impl From<Value> for Trigger {
    fn from(v: Value) -> Self {
        Trigger::Value(v)
    }
}

/// Up to this size, JSON text given as is is also parsed for the store (which keeps what fits
/// its field limit, `flowrun_store::DEFAULT_MAX_FIELD_BYTES`, once compacted); past it, only a
/// truncation marker is made (a text this large does not compact to under the limit unless it
/// is nearly all whitespace).
const PARSE_FOR_STORE: usize = 8 << 20;

/// How many bytes of an oversized trigger the store's truncation marker keeps (as the store's
/// own marker does).
const PREVIEW_BYTES: usize = 4096;

/// The trigger, checked against the workflow's `inputs` schema (defaults applied).
#[derive(Debug)]
pub(super) struct Checked {
    /// What the child reads on stdin.
    pub json: Bytes,
    /// The whole value, when it is small enough to store whole (see [`stored`]).
    value: Option<Value>,
}

fn not_json(e: impl std::fmt::Display) -> InputError {
    InputError::Invalid(vec![InputProblem {
        field: None,
        message: format!("not valid JSON: {e}"),
    }])
}

/// Parses JSON text with the runtime's nesting bound; blank text is `{}`. What the trigger data
/// given as text is checked with ([`check`]), and `rerun`/`resume`'s given data is parsed with.
pub fn parse_text(text: &[u8]) -> Result<Value, InputError> {
    if text.trim_ascii().is_empty() {
        return Ok(Value::Object(Default::default()));
    }
    parse_bounded(text, MAX_DEPTH).map_err(|e| {
        // {'name': 'Ada'}: a Python dict, or a shell's quotes the wrong way round.
        let single = text.iter().position(|&b| b == b'\'');
        let double = text.iter().position(|&b| b == b'"');
        match single {
            Some(s) if double.is_none_or(|d| s < d) => not_json(format!(
                "{e} (JSON takes double quotes: '{{\"name\": \"Ada\"}}')"
            )),
            _ => not_json(e),
        }
    })
}

/// Applies the schema (if any) and produces the bytes for the child, serializing at most once.
pub(super) fn check(schema: Option<&Value>, trigger: Trigger) -> Result<Checked, InputError> {
    let value = match trigger {
        Trigger::Text(text) if schema.is_none() => {
            if text.trim_ascii().is_empty() {
                return Ok(Checked {
                    json: Bytes::from_static(b"{}"),
                    value: Some(Value::Object(Default::default())),
                });
            }
            let value = if text.len() <= PARSE_FOR_STORE {
                Some(parse_text(&text)?)
            } else {
                // Valid JSON within the depth bound, checked without building the value.
                parse_bounded::<serde::de::IgnoredAny>(&text, MAX_DEPTH).map_err(not_json)?;
                None
            };
            return Ok(Checked {
                json: Bytes::from(text),
                value,
            });
        }
        Trigger::Text(text) => parse_text(&text)?,
        Trigger::Value(v) => v,
    };
    let value = inputs::prepare(schema, value)?;
    let json = Bytes::from(serde_json::to_vec(&value).expect("a JSON value serializes"));
    let value = (json.len() <= PARSE_FOR_STORE).then_some(value);
    Ok(Checked { json, value })
}

/// The trigger as the store keeps it: the whole value, or, for one too large to keep whole, a
/// truncation marker with the first bytes of its text (secrets in them redacted, including
/// the start of one the cut went through).
pub(super) fn stored(checked: &mut Checked, redactor: &Redactor) -> Value {
    if let Some(v) = checked.value.take() {
        return v;
    }
    let text = &checked.json;
    let mut cut = PREVIEW_BYTES.min(text.len());
    // A cut inside a UTF-8 sequence would lose that character, not more.
    while cut > 0 && cut < text.len() && (text[cut] & 0xC0) == 0x80 {
        cut -= 1;
    }
    let preview = String::from_utf8_lossy(&text[..cut]).into_owned();
    let preview = redactor.line(
        preview,
        true,
        &mut flowrun_executor::redact::Carry::default(),
    );
    flowrun_events::truncated::marker(text.len(), &preview)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_without_schema_goes_to_the_child_as_given() {
        let text = b"{ \"a\" : [1, 2] }\n".to_vec();
        let mut c = check(None, Trigger::Text(text.clone())).unwrap();
        assert_eq!(&c.json[..], &text[..]);
        assert_eq!(stored(&mut c, &Redactor::default()), json!({"a": [1, 2]}));
        let c = check(None, Trigger::Text(b"  \n".to_vec())).unwrap();
        assert_eq!(&c.json[..], b"{}");
    }

    #[test]
    fn text_with_a_schema_gets_its_defaults() {
        let schema = json!({"type": "object", "properties": {"n": {"default": 3}}});
        let c = check(Some(&schema), Trigger::Text(b"{}".to_vec())).unwrap();
        assert_eq!(&c.json[..], br#"{"n":3}"#);
    }

    #[test]
    fn bad_or_deep_text_is_an_input_error() {
        let e = check(None, Trigger::Text(b"{\"a\": ".to_vec())).unwrap_err();
        assert!(e.to_string().contains("not valid JSON"), "{e}");
        assert!(!e.to_string().contains("double quotes"), "{e}");
        // Python's quotes: said so.
        let e = check(None, Trigger::Text(b"{'name': 'Ada'}".to_vec())).unwrap_err();
        assert!(e.to_string().contains("JSON takes double quotes"), "{e}");
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        let e = check(None, Trigger::Text(deep.into_bytes())).unwrap_err();
        assert!(e.to_string().contains("nested more than"), "{e}");
        let ok = format!("{}{}", "[".repeat(300), "]".repeat(300));
        check(None, Trigger::Text(ok.into_bytes())).expect("300 levels, as the runtime allows");
    }

    #[test]
    fn a_large_trigger_is_stored_as_a_redacted_marker() {
        let secret = "s3cret-value-0123456789";
        let mut text = format!("{{\"pad\": \"{}", "x".repeat(PREVIEW_BYTES - 20));
        text.push_str(secret);
        text.push_str(&"y".repeat(PARSE_FOR_STORE));
        text.push_str("\"}");
        let len = text.len();
        let mut c = check(None, Trigger::Text(text.into_bytes())).unwrap();
        let r = Redactor::new(&[("K".into(), secret.into())]);
        let m = stored(&mut c, &r);
        assert_eq!(
            flowrun_events::truncated::original_bytes(&m),
            Some(len as u64)
        );
        let preview = m["preview"].as_str().unwrap();
        assert!(
            preview.ends_with("[REDACTED:K]"),
            "{}",
            &preview[preview.len() - 40..]
        );
        assert!(
            !preview.contains("s3cret-value"),
            "a cut secret's start is redacted"
        );
    }
}

//! JSON text to data, refusing duplicate keys: serde_json's `Value` keeps the last of two equal
//! keys without a word, which would hide a typo such as a second `code` in a node.

use crate::diagnostic::Diagnostic;
use serde::de::{Deserialize, Deserializer, Error, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::fmt;

/// What a JSON value is, in words ("a string", "a list", …), for messages about a value of
/// the wrong type.
pub fn value_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Parses JSON text; errors (syntax, duplicate keys, nesting) carry line and column.
pub(crate) fn parse(text: &str) -> Result<Value, Diagnostic> {
    serde_json::from_str::<Unique>(text)
        .map(|u| u.0)
        .map_err(|e| json_error(&e))
}

struct Unique(Value);

impl<'de> Deserialize<'de> for Unique {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UniqueVisitor).map(Unique)
    }
}

struct UniqueVisitor;

impl<'de> Visitor<'de> for UniqueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JSON data")
    }

    fn visit_bool<E: Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E: Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: Error>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_str<E: Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E: Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E: Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E: Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Unique(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut m = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if m.contains_key(&key) {
                return Err(A::Error::custom(format!("duplicate key `{key}`")));
            }
            let Unique(v) = map.next_value()?;
            m.insert(key, v);
        }
        Ok(Value::Object(m))
    }
}

fn json_error(e: &serde_json::Error) -> Diagnostic {
    let msg = crate::yaml_errors::parser_message(&e.to_string());
    let mut d = Diagnostic::new(format!("invalid JSON: {msg}"));
    if e.line() > 0 {
        // serde_json says column 0 before the first character of a line (an empty file); a
        // column here is 1-based, as an editor's.
        d = d.at(e.line(), Some(e.column().max(1)));
    }
    d
}

/// Fills in `default`s of missing object properties, recursively, also inside a default just
/// filled in, so that applying them again changes nothing: the runtime applies them too (for a
/// script run by hand), and what the runner validated must be what the nodes see. The runtime's
/// `_apply_defaults` is the same rule; a `workflow` node's static `inputs` are checked with it.
pub fn apply_defaults(schema: &Value, data: &mut Value) {
    let (Some(props), Value::Object(obj)) =
        (schema.get("properties").and_then(Value::as_object), data)
    else {
        return;
    };
    for (key, sub) in props {
        if !obj.contains_key(key) {
            let Some(d) = sub.get("default") else {
                continue;
            };
            obj.insert(key.clone(), d.clone());
        }
        apply_defaults(sub, obj.get_mut(key).expect("present"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_is_refused_at_line_1_column_1() {
        let d = parse("").unwrap_err();
        assert_eq!((d.line, d.column), (Some(1), Some(1)), "{d}");
    }

    #[test]
    fn duplicate_keys_are_located() {
        let d = parse("{\"a\": {\"b\": 1,\n \"b\": 2}}").unwrap_err();
        assert!(d.message.contains("duplicate key `b`"), "{d}");
        assert_eq!(d.line, Some(2));
        assert_eq!(
            parse("{\"a\": [1, 2.5, null, true, \"x\"]}").unwrap(),
            serde_json::json!({"a": [1, 2.5, null, true, "x"]})
        );
    }

    #[test]
    fn deep_nesting_is_refused_with_a_place() {
        let text = format!("{{\"a\": {}{}}}", "[".repeat(200), "]".repeat(200));
        let d = parse(&text).unwrap_err();
        assert!(d.message.contains("deeper than 128 levels"), "{d}");
        assert_eq!(d.line, Some(1));
        assert!(d.column.is_some());
    }
}

//! Per node type: which of its fields the runtime gets, and which of them are templates.
//!
//! Each node type's arm turns the typed node into the `params` data its runtime handler reads
//! (see `runtime/nodes/<type>.py`), parsing every templated string on the way. The references
//! found are returned with the field they sit in, for validation and for ordering edges.

use crate::diagnostic::Diagnostic;
use crate::model::*;
use crate::pyliteral::{Data, dict};
use crate::template::{self, Reference};
use serde_json::Value;

/// The runtime params of one node and the template references inside them.
pub struct Params {
    pub data: Data,
    /// `(field path, reference)` for every `{{ }}` in a templated field.
    pub references: Vec<(String, Reference)>,
}

struct Compiler<'a> {
    node: &'a str,
    references: Vec<(String, Reference)>,
    errors: Vec<Diagnostic>,
}

impl Compiler<'_> {
    /// A templated string: plain text stays a string, anything with `{{` becomes a template.
    fn text(&mut self, field: &str, s: &str) -> Data {
        match template::parse(s) {
            Ok(t) if t.is_literal() => Data::Str(s.to_string()),
            Ok(t) => {
                for r in t.references() {
                    self.references.push((field.to_string(), r.clone()));
                }
                Data::Template(t)
            }
            Err(e) => {
                self.errors.push(
                    Diagnostic::new(format!("invalid template: {e}"))
                        .node(self.node)
                        .field(field),
                );
                Data::Null
            }
        }
    }

    /// A JSON value whose strings, at any depth, are templates.
    fn value(&mut self, field: &str, v: &Value) -> Data {
        match v {
            Value::String(s) => self.text(field, s),
            Value::Array(items) => Data::List(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| self.value(&format!("{field}[{i}]"), item))
                    .collect(),
            ),
            Value::Object(map) => Data::Dict(
                map.iter()
                    .map(|(k, item)| (k.clone(), self.value(&format!("{field}.{k}"), item)))
                    .collect(),
            ),
            other => Data::from(other),
        }
    }

    fn error(&mut self, field: &str, message: impl Into<String>) {
        self.errors
            .push(Diagnostic::new(message).node(self.node).field(field));
    }
}

/// Compiles a node's type-specific fields into runtime params.
pub fn compile(node: &Node) -> Result<Params, Vec<Diagnostic>> {
    let mut c = Compiler {
        node: &node.id,
        references: Vec::new(),
        errors: Vec::new(),
    };
    let data = match &node.kind {
        NodeKind::Trigger(_) => Data::Dict(vec![]),
        NodeKind::Set(n) => dict([(
            "fields",
            c.value("fields", &Value::Object(n.fields.clone())),
        )]),
        NodeKind::Template(n) => {
            let t = c.text("template", &n.template);
            dict([("template", t)])
        }
        NodeKind::Code(n) => dict([("code", Data::Str(n.code.clone()))]),
        NodeKind::Condition(n) => {
            let cond = condition(&mut c, &n.condition);
            dict([
                ("if", cond),
                (
                    "then",
                    Data::List(n.then.iter().map(|s| Data::Str(s.clone())).collect()),
                ),
                (
                    "else",
                    Data::List(n.otherwise.iter().map(|s| Data::Str(s.clone())).collect()),
                ),
            ])
        }
        NodeKind::Delay(n) => {
            let ms = match &n.ms {
                Value::Number(num) if num.as_f64().is_some_and(|f| f >= 0.0) => {
                    Data::Number(num.clone())
                }
                Value::String(s) if s.contains("{{") => c.text("ms", s),
                _ => {
                    c.error("ms", "must be a number of milliseconds ≥ 0 or a template");
                    Data::Null
                }
            };
            dict([("ms", ms)])
        }
    };
    if c.errors.is_empty() {
        Ok(Params {
            data,
            references: c.references,
        })
    } else {
        Err(c.errors)
    }
}

fn condition(c: &mut Compiler<'_>, v: &Value) -> Data {
    let Value::Object(map) = v else {
        return c.value("if", v);
    };
    if !map.contains_key("op") {
        return c.value("if", v);
    }
    for key in map.keys() {
        if !["op", "left", "right"].contains(&key.as_str()) {
            c.error(
                &format!("if.{key}"),
                format!("unknown field `{key}` in a comparison; expected `op`, `left`, `right`"),
            );
        }
    }
    let op = match map.get("op") {
        Some(Value::String(op)) if CONDITION_OPS.contains(&op.as_str()) => op.clone(),
        other => {
            c.error(
                "if.op",
                format!(
                    "unknown operator {}; one of: {}",
                    other.map(|v| v.to_string()).unwrap_or_default(),
                    CONDITION_OPS.join(", ")
                ),
            );
            String::new()
        }
    };
    let left = c.value("if.left", map.get("left").unwrap_or(&Value::Null));
    let right = c.value("if.right", map.get("right").unwrap_or(&Value::Null));
    dict([("op", Data::Str(op)), ("left", left), ("right", right)])
}

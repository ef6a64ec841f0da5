//! From a workflow file's text to a [`Workflow`], with errors that name file, line and column.
//!
//! JSON and YAML are parsed straight into the top-level struct so that syntax errors and unknown
//! top-level fields carry the parser's own line and column. Nodes are then converted one by one,
//! so that each problem names its node and field; a `Locator` finds the line of that node and
//! field in the text, since by then the parser's positions are gone.

use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::model::*;
use crate::node_types::NodeType;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Yaml,
}

impl Format {
    /// By extension (`.json`, `.yaml`, `.yml`); for any other name, JSON when the text starts
    /// with `{`, else YAML.
    pub(crate) fn detect(path: &Path, text: &str) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some("yaml") | Some("yml") => Format::Yaml,
            Some("json") => Format::Json,
            _ if text.trim_start().starts_with('{') => Format::Json,
            _ => Format::Yaml,
        }
    }
}

/// A parsed workflow file: the typed workflow, the definition as plain JSON (what is stored as
/// the snapshot), and the text, kept for locating later errors.
#[derive(Debug, Clone)]
pub struct Source {
    pub file: String,
    pub format: Format,
    pub text: String,
    pub workflow: Workflow,
    /// The definition as JSON, as it was written (key order kept).
    pub definition: Value,
}

impl Source {
    /// Fills in file and line of diagnostics that name a node (and field) but no line.
    pub(crate) fn locate(&self, diags: Diagnostics) -> Diagnostics {
        locate_in(&self.text, self.format, &self.file, diags)
    }
}

/// The top-level fields of a workflow file.
const TOP_LEVEL_KEYS: &[&str] = &[
    "id",
    "name",
    "description",
    "inputs",
    "connections",
    "timeout_ms",
    "nodes",
];

fn locate_in(text: &str, format: Format, file: &str, mut diags: Diagnostics) -> Diagnostics {
    let loc = Locator::new(text, format);
    for d in &mut diags.0 {
        d.file.get_or_insert_with(|| file.to_string());
        if d.line.is_none() {
            d.line = loc.find(d.node.as_deref(), d.field.as_deref());
        }
    }
    diags
}

/// Reads and parses a workflow file.
pub fn load_file(path: &Path) -> Result<Source, Diagnostics> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        let mut d = Diagnostic::new(format!("cannot read the workflow file: {e}"));
        d.file = Some(file.clone());
        Diagnostics::from(d)
    })?;
    parse_str(&text, Format::detect(path, &text), &file)
}

/// Parses workflow text. `file` is only used in messages.
pub fn parse_str(text: &str, format: Format, file: &str) -> Result<Source, Diagnostics> {
    let with_file = |mut d: Diagnostic| {
        d.file = Some(file.to_string());
        Diagnostics::from(d)
    };
    // The text as plain data first: syntax errors come from here, with line and column.
    let definition: Value = match format {
        Format::Json => serde_json::from_str(text).map_err(|e| with_file(json_error(&e)))?,
        Format::Yaml => serde_yaml_ng::from_str(text).map_err(|e| with_file(yaml_error(&e)))?,
    };
    let parsed = match format {
        Format::Json => serde_json::from_str::<RawWorkflow>(text).map_err(|e| json_error(&e)),
        Format::Yaml => serde_yaml_ng::from_str::<RawWorkflow>(text).map_err(|e| yaml_error(&e)),
    };
    let mut diags = Vec::new();
    let raw = match parsed {
        Ok(raw) => raw,
        Err(first) => {
            // Unknown top-level fields: report every one, then go on without them, so that one
            // typo at the top does not hide the problems in the nodes.
            let unknown: Vec<String> = definition
                .as_object()
                .map(|o| {
                    o.keys()
                        .filter(|k| !TOP_LEVEL_KEYS.contains(&k.as_str()))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            if unknown.is_empty() {
                return Err(with_file(first));
            }
            for k in &unknown {
                diags.push(
                    Diagnostic::new(format!(
                        "unknown field `{k}`, expected one of {}",
                        TOP_LEVEL_KEYS.join(", ")
                    ))
                    .field(k.clone()),
                );
            }
            let mut cleaned = definition.clone();
            if let Some(o) = cleaned.as_object_mut() {
                o.retain(|k, _| TOP_LEVEL_KEYS.contains(&k.as_str()));
            }
            match serde_json::from_value::<RawWorkflow>(cleaned) {
                Ok(raw) => raw,
                Err(e) => {
                    diags.push(Diagnostic::new(format!("invalid workflow: {e}")));
                    return Err(locate_in(text, format, file, Diagnostics(diags)));
                }
            }
        }
    };
    let mut nodes = Vec::with_capacity(raw.nodes.len());
    for (i, NodeObject(value)) in raw.nodes.into_iter().enumerate() {
        match convert_node(i, value) {
            Ok(n) => nodes.push(n),
            Err(d) => diags.push(d),
        }
    }
    let workflow = Workflow {
        id: raw.id,
        name: raw.name,
        description: raw.description,
        inputs: raw.inputs,
        connections: raw.connections,
        timeout_ms: raw.timeout_ms,
        nodes,
    };
    let source = Source {
        file: file.to_string(),
        format,
        text: text.to_string(),
        workflow,
        definition,
    };
    if diags.is_empty() {
        Ok(source)
    } else {
        Err(source.locate(Diagnostics(diags)))
    }
}

/// Builds a [`Source`] from a definition that arrived as JSON data (an editor's unsaved state).
pub fn from_value(definition: Value, label: &str) -> Result<Source, Diagnostics> {
    let text = serde_json::to_string_pretty(&definition).expect("a JSON value serializes");
    parse_str(&text, Format::Json, label)
}

/// A node as written: a JSON object whose keys must be unique (serde_json's `Value` would keep
/// the last of two equal keys without a word, hiding a typo such as a second `code`).
#[derive(Debug)]
pub(crate) struct NodeObject(pub Value);

impl<'de> serde::Deserialize<'de> for NodeObject {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = NodeObject;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a node object with at least `id` and `type`")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<NodeObject, A::Error> {
                let mut m = Map::new();
                while let Some(key) = map.next_key::<String>()? {
                    if m.contains_key(&key) {
                        let which = match m.get("id") {
                            Some(Value::String(id)) => format!("node '{id}'"),
                            _ => "a node".to_string(),
                        };
                        return Err(serde::de::Error::custom(format!(
                            "{which}: duplicate field `{key}`"
                        )));
                    }
                    let v: Value = map.next_value()?;
                    m.insert(key, v);
                }
                Ok(NodeObject(Value::Object(m)))
            }
        }
        d.deserialize_map(V)
    }
}

fn json_error(e: &serde_json::Error) -> Diagnostic {
    // serde_json appends " at line X column Y" to its message; keep only the message part.
    let msg = e.to_string();
    let msg = match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg,
    };
    let what = if e.is_syntax() || e.is_eof() {
        "invalid JSON"
    } else {
        "invalid workflow"
    };
    let mut d = Diagnostic::new(format!("{what}: {msg}"));
    if e.line() > 0 {
        d = d.at(e.line(), Some(e.column()));
    }
    d
}

fn yaml_error(e: &serde_yaml_ng::Error) -> Diagnostic {
    let msg = e.to_string();
    let msg = match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg,
    };
    let mut d = Diagnostic::new(format!("invalid workflow: {msg}"));
    if let Some(loc) = e.location() {
        d = d.at(loc.line(), Some(loc.column()));
    }
    d
}

// Errors here happen once per bad file; their size does not matter.
#[allow(clippy::result_large_err)]
fn convert_node(index: usize, value: Value) -> Result<Node, Diagnostic> {
    let Value::Object(mut obj) = value else {
        return Err(Diagnostic::new(format!(
            "node #{} must be an object with at least `id` and `type`",
            index + 1
        )));
    };
    let label = match obj.get("id") {
        Some(Value::String(s)) => s.clone(),
        _ => format!("#{}", index + 1),
    };
    let type_name = match obj.remove("type") {
        Some(Value::String(t)) => t,
        Some(_) => {
            return Err(Diagnostic::new("`type` must be a string")
                .node(label)
                .field("type"));
        }
        None => {
            return Err(
                Diagnostic::new(format!("missing `type`; one of: {}", NodeType::names()))
                    .node(label)
                    .field("type"),
            );
        }
    };
    let mut common = Map::new();
    for key in COMMON_KEYS {
        if let Some(v) = obj.remove(*key) {
            common.insert((*key).to_string(), v);
        }
    }
    let common: CommonFields = typed(Value::Object(common), &label)?;
    let Some(node_type) = NodeType::from_name(&type_name) else {
        return Err(Diagnostic::new(format!(
            "unknown node type '{type_name}'; one of: {}",
            NodeType::names()
        ))
        .node(label)
        .field("type"));
    };
    let kind = node_type.parse_fields(Value::Object(obj), &label)?;
    Ok(Node {
        id: common.id,
        name: common.name,
        notes: common.notes,
        after: common.after,
        timeout_ms: common.timeout_ms,
        retry: common.retry.unwrap_or_default(),
        on_error: common.on_error,
        pinned: common.pinned,
        requirements: common.requirements,
        kind,
    })
}

/// Deserializes part of a node, turning serde's message into one that names the field.
#[allow(clippy::result_large_err)]
pub(crate) fn typed<T: DeserializeOwned>(value: Value, node: &str) -> Result<T, Diagnostic> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        // The path says where in the node it went wrong (`retry.max_atempts`, `on_error`); for
        // a missing field it is the enclosing object, and the message names the field.
        let path = e.path().to_string();
        let msg = e.inner().to_string();
        let named = msg
            .starts_with("missing field")
            .then(|| field_in_message(&msg))
            .flatten();
        let field = match (path.as_str(), named) {
            (".", Some(f)) => Some(f),
            (".", None) => field_in_message(&msg),
            (p, Some(f)) => Some(format!("{p}.{f}")),
            (p, None) => Some(p.to_string()),
        };
        let mut d = Diagnostic::new(msg).node(node);
        if let Some(f) = field {
            d = d.field(f);
        }
        d
    })
}

/// serde names fields in backticks: "unknown field `feilds`, expected `fields`" or
/// "missing field `code`".
fn field_in_message(msg: &str) -> Option<String> {
    let start = msg.find('`')? + 1;
    let len = msg[start..].find('`')?;
    Some(msg[start..start + len].to_string())
}

/// Finds the line of a node, or of a field inside a node, in the workflow text.
///
/// Positions are lost once a node is a `serde_json::Value`, so this searches the text: the
/// node is the entry whose `id` is the node id (after the `nodes` key), and the field is the
/// first key of that name inside the node's stretch of lines. Good enough to jump to; when it
/// finds nothing the message still names node and field.
pub(crate) struct Locator<'a> {
    lines: Vec<&'a str>,
    format: Format,
}

impl<'a> Locator<'a> {
    pub(crate) fn new(text: &'a str, format: Format) -> Self {
        Locator {
            lines: text.lines().collect(),
            format,
        }
    }

    fn is_key_line(&self, line: &str, key: &str) -> bool {
        self.key_value(line, key).is_some()
    }

    /// The text after `key:` if the line holds that key (JSON: anywhere in the line, so compact
    /// one-object-per-line JSON works too; YAML: at the start, after an optional `- `).
    fn key_value<'l>(&self, line: &'l str, key: &str) -> Option<&'l str> {
        match self.format {
            Format::Json => {
                let quoted = format!("\"{key}\"");
                line.match_indices(&quoted).find_map(|(at, _)| {
                    let rest = line[at + quoted.len()..].trim_start();
                    rest.strip_prefix(':')
                })
            }
            Format::Yaml => {
                let t = line.trim_start().trim_start_matches("- ").trim_start();
                let t = t.trim_start_matches(['"', '\'']);
                let rest = t.strip_prefix(key)?;
                rest.trim_start_matches(['"', '\''])
                    .trim_start()
                    .strip_prefix(':')
            }
        }
    }

    fn node_id_line(&self, line: &str, id: &str) -> bool {
        match self.format {
            // Every `"id": "…"` in the line: a compact file may hold the workflow's id and
            // several nodes on one line.
            Format::Json => line.match_indices("\"id\"").any(|(at, _)| {
                line[at + 4..]
                    .trim_start()
                    .strip_prefix(':')
                    .map(str::trim_start)
                    .and_then(|v| v.strip_prefix('"'))
                    .and_then(|v| v.find('"').map(|end| &v[..end]))
                    == Some(id)
            }),
            Format::Yaml => self.key_value(line, "id").is_some_and(|value| {
                value
                    .trim()
                    .trim_end_matches(',')
                    .trim()
                    .trim_matches(['"', '\''])
                    == id
            }),
        }
    }

    /// Does this line open the object a node is written in (`- …` in YAML, `{` in JSON)?
    fn opens_object(&self, line: &str) -> bool {
        let t = line.trim();
        match self.format {
            Format::Yaml => t == "-" || t.starts_with("- "),
            Format::Json => t.starts_with('{'),
        }
    }

    /// 1-based line of the node (and field), if found.
    pub(crate) fn find(&self, node: Option<&str>, field: Option<&str>) -> Option<usize> {
        let nodes_start = self
            .lines
            .iter()
            .position(|l| self.is_key_line(l, "nodes"))?;
        let Some(node) = node else {
            let field = field?;
            let top = field.split(['.', '[']).next().unwrap_or(field);
            return self
                .lines
                .iter()
                .position(|l| self.is_key_line(l, top))
                .map(|i| i + 1);
        };
        let node_line =
            (nodes_start..self.lines.len()).find(|&i| self.node_id_line(self.lines[i], node))?;
        let Some(field) = field else {
            return Some(node_line + 1);
        };
        let top = field.split(['.', '[']).next().unwrap_or(field);
        let indent = |l: &str| l.len() - l.trim_start().len();
        // The field may also come before `id` inside the same object: look back to the object's
        // opening line too.
        let begin = if self.opens_object(self.lines[node_line]) {
            node_line
        } else {
            (nodes_start + 1..node_line)
                .rev()
                .find(|&i| self.opens_object(self.lines[i]))
                .unwrap_or(node_line)
        };
        // The node's stretch ends where the next node's object opens (at the same depth), or at
        // the next line holding another `id` as shallow as this one.
        let (begin_indent, id_indent) = (indent(self.lines[begin]), indent(self.lines[node_line]));
        let end = (node_line + 1..self.lines.len())
            .find(|&i| {
                let l = self.lines[i];
                (self.opens_object(l) && indent(l) <= begin_indent)
                    || (self.is_key_line(l, "id") && indent(l) <= id_indent)
            })
            .unwrap_or(self.lines.len());
        (begin..end)
            .find(|&i| self.is_key_line(self.lines[i], top))
            .map(|i| i + 1)
            .or(Some(node_line + 1))
    }
}

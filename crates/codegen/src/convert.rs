//! From a workflow's data to the typed [`Workflow`], field by field and node by node, collecting
//! every problem instead of stopping at the first.
//!
//! Top-level keys starting with `x-` are allowed and ignored (a place for YAML anchors, as in
//! Compose files); any other unknown key is an error, at the top as in the nodes. A node whose
//! fields do not all parse is kept in part ([`Partial`]) so the plan's checks still see its id,
//! `after`, `then`/`else` and code.

use crate::diagnostic::Diagnostic;
use crate::json::value_kind;
use crate::model::*;
use crate::node_types::NodeType;
use crate::plan::{Known, Partial, Written};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// The top-level fields of a workflow file.
const TOP_LEVEL_KEYS: &[&str] = &[
    "id",
    "name",
    "description",
    "inputs",
    "connections",
    "timeout_ms",
    "max_parallel",
    "output",
    "cwd",
    "max_cost_usd",
    "warn_cost_usd",
    "nodes",
];

/// What was read of a workflow.
pub(crate) struct Read {
    /// The workflow with its whole nodes.
    pub workflow: Workflow,
    /// The definition as stored: the data without top-level `x-` keys.
    pub definition: Value,
    pub diagnostics: Vec<Diagnostic>,
    pub known: Known,
    /// Each item of `nodes`: its index in `workflow.nodes`, or what could be read of it.
    pub nodes: Vec<Result<usize, Partial>>,
}

/// The nodes as written, for [`crate::plan::check`], from [`Read::nodes`] and the workflow of
/// [`Read::workflow`].
pub(crate) fn written<'a>(
    nodes: &'a [Result<usize, Partial>],
    workflow: &'a Workflow,
) -> Vec<Written<'a>> {
    nodes
        .iter()
        .map(|n| match n {
            Ok(i) => Written::Whole(&workflow.nodes[*i]),
            Err(p) => Written::Part(p),
        })
        .collect()
}

pub(crate) fn workflow(data: Value) -> Read {
    let mut diags = Vec::new();
    let mut workflow = Workflow {
        id: String::new(),
        name: None,
        description: None,
        inputs: None,
        connections: BTreeMap::new(),
        timeout_ms: None,
        max_parallel: None,
        output: None,
        cwd: None,
        max_cost_usd: None,
        warn_cost_usd: None,
        nodes: Vec::new(),
    };
    let mut top = match data {
        Value::Object(top) => top,
        other => {
            diags.push(Diagnostic::new(format!(
                "a workflow is an object with `id` and `nodes`, not {}",
                value_kind(&other)
            )));
            return Read {
                workflow,
                definition: other,
                diagnostics: diags,
                known: Known {
                    id: false,
                    nodes: false,
                },
                nodes: Vec::new(),
            };
        }
    };
    top.retain(|k, _| !k.starts_with("x-"));
    for k in top.keys() {
        if !TOP_LEVEL_KEYS.contains(&k.as_str()) {
            diags.push(
                Diagnostic::new(format!(
                    "unknown field `{k}`, expected one of {} (or a key starting with `x-`, which is ignored)",
                    TOP_LEVEL_KEYS.join(", ")
                ))
                .field(k.clone()),
            );
        }
    }
    let id = top_field::<String>(&top, "id", &mut diags);
    if id.is_none() && !top.contains_key("id") {
        diags.push(Diagnostic::new("missing field `id`").field("id"));
    }
    workflow.name = top_field(&top, "name", &mut diags).flatten();
    workflow.description = top_field(&top, "description", &mut diags).flatten();
    workflow.inputs = top.get("inputs").cloned().filter(|v| !v.is_null());
    workflow.connections = top_field(&top, "connections", &mut diags).unwrap_or_default();
    workflow.timeout_ms = top_field(&top, "timeout_ms", &mut diags).flatten();
    workflow.max_parallel = top_field(&top, "max_parallel", &mut diags).flatten();
    if workflow.max_parallel == Some(0) {
        diags.push(Diagnostic::new("must be at least 1").field("max_parallel"));
    }
    workflow.output = top.get("output").cloned().filter(|v| !v.is_null());
    workflow.cwd = top_field(&top, "cwd", &mut diags).flatten();
    workflow.max_cost_usd = top_field(&top, "max_cost_usd", &mut diags).flatten();
    workflow.warn_cost_usd = top_field(&top, "warn_cost_usd", &mut diags).flatten();
    let mut nodes = Vec::new();
    let nodes_known = match top.get("nodes") {
        Some(Value::Array(items)) => {
            for (k, item) in items.iter().enumerate() {
                nodes.push(match node(k, item.clone(), &mut diags) {
                    Ok(n) => {
                        workflow.nodes.push(n);
                        Ok(workflow.nodes.len() - 1)
                    }
                    Err(p) => Err(p),
                });
            }
            true
        }
        Some(other) => {
            diags.push(
                Diagnostic::new(format!(
                    "`nodes` is a list of nodes, not {}",
                    value_kind(other)
                ))
                .field("nodes"),
            );
            false
        }
        None => {
            diags.push(Diagnostic::new("missing field `nodes`").field("nodes"));
            false
        }
    };
    let known = Known {
        id: id.is_some(),
        nodes: nodes_known,
    };
    workflow.id = id.unwrap_or_default();
    Read {
        workflow,
        definition: Value::Object(top),
        diagnostics: diags,
        known,
        nodes,
    }
}

/// A top-level field, when present and of the right type (else its error is reported).
fn top_field<T: DeserializeOwned>(
    top: &Map<String, Value>,
    key: &str,
    diags: &mut Vec<Diagnostic>,
) -> Option<T> {
    let value = top.get(key)?.clone();
    serde_path_to_error::deserialize(value)
        .map_err(|e| {
            let (field, msg) = field_and_message(&e);
            let field = match field {
                Some(f) => format!("{key}.{f}"),
                None => key.to_string(),
            };
            diags.push(Diagnostic::new(msg).field(field));
        })
        .ok()
}

/// One item of `nodes`: the node, or (its problems reported) what could be read of it.
fn node(k: usize, value: Value, diags: &mut Vec<Diagnostic>) -> Result<Node, Partial> {
    let Value::Object(mut obj) = value else {
        diags.push(
            Diagnostic::new(format!(
                "a node is an object with at least `id` and `type`, not {}",
                value_kind(&value)
            ))
            .node_at(k, format!("#{}", k + 1)),
        );
        return Err(Partial::default());
    };
    let partial = partial(&obj);
    let label = partial.id.clone().unwrap_or_else(|| format!("#{}", k + 1));
    let before = diags.len();
    let node_type = match obj.remove("type") {
        Some(Value::String(t)) => {
            let found = NodeType::from_name(&t);
            if found.is_none() {
                let message = match closest(&t, NodeType::ALL.iter().map(|t| t.name())) {
                    Some(n) => format!(
                        "unknown node type '{t}', did you mean '{n}'? (one of: {})",
                        NodeType::names()
                    ),
                    None => format!("unknown node type '{t}'; one of: {}", NodeType::names()),
                };
                diags.push(Diagnostic::new(message).node_at(k, &label).field("type"));
            }
            found
        }
        Some(_) => {
            diags.push(
                Diagnostic::new("`type` must be a string")
                    .node_at(k, &label)
                    .field("type"),
            );
            None
        }
        None => {
            diags.push(
                Diagnostic::new(format!("missing `type`; one of: {}", NodeType::names()))
                    .node_at(k, &label)
                    .field("type"),
            );
            None
        }
    };
    let mut common = Map::new();
    for key in COMMON_KEYS {
        if let Some(v) = obj.remove(*key) {
            common.insert((*key).to_string(), v);
        }
    }
    // What parsed of them, wrong fields left out: the checks of the node's settings still see
    // it (`max_concurrent: 0` beside a wrong `fail_fast`), though no node is made of it.
    let common_read: Option<(CommonFields, bool)> =
        read_each_error(k, common, |v| typed(v, &label), diags);
    let common = common_read
        .as_ref()
        .filter(|(_, whole)| *whole)
        .map(|(c, _)| c.clone());
    if let Some(c) = common.as_ref().filter(|c| c.for_each.is_none()) {
        for (field, given) in [
            ("max_concurrent", c.max_concurrent.is_some()),
            ("fail_fast", c.fail_fast.is_some()),
        ] {
            if given {
                diags.push(
                    Diagnostic::new(format!("`{field}` only applies to a node with `for_each`"))
                        .node_at(k, &label)
                        .field(field),
                );
            }
        }
    }
    // The type's own fields can only be checked once the type is known.
    let kind = node_type.and_then(|t| {
        let parse = |v| {
            t.parse_fields(v, &label)
                .map_err(|d| unknown_of(d, t.name()))
        };
        each_error(k, obj, parse, diags)
    });
    match (common, kind) {
        (Some(c), Some(kind)) if diags.len() == before => Ok(Node {
            id: c.id,
            name: c.name,
            notes: c.notes,
            after: c.after,
            timeout_ms: c.timeout_ms,
            retry: c.retry.unwrap_or_default(),
            on_error: c.on_error,
            pinned: c.pinned,
            requirements: c.requirements,
            for_each: c.for_each.map(|items| ForEach {
                items,
                max_concurrent: c.max_concurrent.unwrap_or(1),
                fail_fast: c.fail_fast.unwrap_or(true),
            }),
            repeat: c.repeat,
            kind,
        }),
        _ => Err(Partial {
            common: common_read.map(|(c, _)| c),
            ..partial
        }),
    }
}

/// What the plan's checks can use of a node whatever else is wrong with it.
fn partial(obj: &Map<String, Value>) -> Partial {
    let strings = |key: &str| -> Vec<String> {
        obj.get(key)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let ty = obj.get("type").and_then(Value::as_str);
    let condition = ty == Some(NodeType::Condition.name());
    Partial {
        id: obj.get("id").and_then(Value::as_str).map(String::from),
        after: strings("after"),
        then: if condition { strings("then") } else { vec![] },
        otherwise: if condition { strings("else") } else { vec![] },
        code: (ty == Some(NodeType::Code.name()))
            .then(|| obj.get("code").and_then(Value::as_str).map(String::from))
            .flatten(),
        trigger: ty == Some(NodeType::Trigger.name()),
        common: None,
    }
}

/// Parses the object; when one of its fields is wrong, reports it and parses again without that
/// field, so that every wrong field is reported, not only serde's first. `None` if any was.
fn each_error<T>(
    k: usize,
    obj: Map<String, Value>,
    parse: impl Fn(Value) -> Result<T, Diagnostic>,
    diags: &mut Vec<Diagnostic>,
) -> Option<T> {
    read_each_error(k, obj, parse, diags).and_then(|(t, whole)| whole.then_some(t))
}

/// [`each_error`], and what parsed once the wrong fields were left out, with whether none was.
fn read_each_error<T>(
    k: usize,
    mut obj: Map<String, Value>,
    parse: impl Fn(Value) -> Result<T, Diagnostic>,
    diags: &mut Vec<Diagnostic>,
) -> Option<(T, bool)> {
    let mut removed: Vec<String> = Vec::new();
    let mut unknown_seen = false;
    loop {
        let mut d = match parse(Value::Object(obj.clone())) {
            Ok(t) => return Some((t, removed.is_empty())),
            Err(d) => d,
        };
        d.index = Some(k);
        let key = d
            .field
            .as_deref()
            .map(|f| f.split(['.', '[']).next().unwrap_or(f).to_string());
        // A required field taken out after its own error is already reported; one missing
        // after an unknown field is most likely that field misspelled.
        if d.message.starts_with("missing field")
            && (unknown_seen || key.as_ref().is_some_and(|k| removed.contains(k)))
        {
            return None;
        }
        unknown_seen |= d.message.starts_with("unknown field");
        diags.push(d);
        match key.filter(|key| obj.contains_key(key)) {
            Some(key) => {
                obj.remove(&key);
                removed.push(key);
            }
            None => return None,
        }
    }
}

/// Deserializes part of a node, turning serde's message into one that names the field.
pub(crate) fn typed<T: DeserializeOwned>(value: Value, node: &str) -> Result<T, Diagnostic> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let (field, msg) = field_and_message(&e);
        let mut d = Diagnostic::new(msg).node(node);
        if let Some(f) = field {
            d = d.field(f);
        }
        d
    })
}

/// The field serde's error is about, and its message. The path says where it went wrong
/// (`retry.max_atempts`, `on_error`); for a missing or unknown field it is the enclosing
/// object, and the message names the field.
fn field_and_message(
    e: &serde_path_to_error::Error<serde_json::Error>,
) -> (Option<String>, String) {
    let path = e.path().to_string();
    let msg = crate::diagnostic::in_json_terms(&e.inner().to_string());
    let named = (msg.starts_with("missing field") || msg.starts_with("unknown field"))
        .then(|| field_in_message(&msg))
        .flatten();
    let field = match (path.as_str(), named) {
        (".", named) => named,
        (p, Some(f)) if msg.starts_with("missing field") => Some(format!("{p}.{f}")),
        (p, _) => Some(p.to_string()),
    };
    (field, msg)
}

/// serde's "unknown field `timout_ms`, expected one of `code`, `cwd`" about a node type's own
/// fields lists only those: the fields every node takes (`timeout_ms`, `retry`, `on_error`…) were
/// taken out before. Said again with both, and the closest name when one is a likely typo.
fn unknown_of(mut d: Diagnostic, type_name: &str) -> Diagnostic {
    let Some(rest) = d.message.strip_prefix("unknown field `") else {
        return d;
    };
    let Some((given, expected)) = rest.split_once('`') else {
        return d;
    };
    let own: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    let every = own.iter().chain(crate::model::COMMON_KEYS.iter()).copied();
    let hint = match closest(given, every) {
        Some(f) => format!(", did you mean `{f}`?"),
        None => String::new(),
    };
    let quote = |fields: &[&str]| {
        let q: Vec<String> = fields.iter().map(|f| format!("`{f}`")).collect();
        q.join(", ")
    };
    // As said aloud: an agent, an LLM ("el"), an HTTP request ("aitch").
    let a = if type_name.starts_with(['a', 'e', 'i', 'o', 'u', 'l', 'h']) {
        "an"
    } else {
        "a"
    };
    let own = match own.as_slice() {
        [] => format!("{a} {type_name} node has no fields of its own"),
        fields => format!("{a} {type_name} node takes {}", quote(fields)),
    };
    d.message = format!(
        "unknown field `{given}`{hint} ({own}; every node takes {})",
        quote(crate::model::COMMON_KEYS)
    );
    d
}

/// The name in `names` that `given` is most likely a typo of, if any.
fn closest<'a>(given: &str, names: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    names
        .map(|f| (edit_distance(given, f), f))
        .filter(|&(n, f)| n < f.len() && (n <= 2 || (n == 3 && same_stem(given, f))))
        .min()
        .map(|(_, f)| f)
}

/// `, did you mean 'x'?` when `given` is most likely a typo of one of `names`, else nothing.
pub fn did_you_mean<'a>(given: &str, names: impl Iterator<Item = &'a str>) -> String {
    closest(given, names)
        .map(|n| format!(", did you mean '{n}'?"))
        .unwrap_or_default()
}

/// Levenshtein distance of two short names (field names: a few dozen characters at most).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let here = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != cb)).min(row[j] + 1).min(here + 1);
            prev = here;
        }
    }
    row[b.len()]
}

/// A plural or another ending of the same word (`retries` for `retry`, `timeouts` for
/// `timeout_ms`): three edits apart, but the first four letters the same.
fn same_stem(a: &str, b: &str) -> bool {
    a.chars().zip(b.chars()).take_while(|(x, y)| x == y).count() >= 4
}

/// serde names fields in backticks: "unknown field `feilds`, expected `fields`" or
/// "missing field `code`".
fn field_in_message(msg: &str) -> Option<String> {
    let start = msg.find('`')? + 1;
    let len = msg[start..].find('`')?;
    Some(msg[start..start + len].to_string())
}

#[cfg(test)]
mod tests {
    use crate::source::{Format, parse_str};

    fn errors(text: &str, format: Format) -> Vec<String> {
        let d = parse_str(text, format, "wf").expect_err("invalid");
        d.0.iter().map(|d| d.to_string()).collect()
    }

    /// A misspelt field every node takes is named as such (serde lists only the type's own).
    #[test]
    fn an_unknown_field_names_the_fields_a_node_takes_and_the_closest() {
        let e = errors(
            "id: w\nnodes:\n  - id: b\n    type: code\n    code: return 1\n    timout_ms: 5\n  - id: d\n    type: delay\n    ms: 1\n    on_eror: continue\n    zzz: 1\n",
            Format::Yaml,
        );
        let has = |want: &str| assert!(e.iter().any(|m| m.contains(want)), "{want}: {e:#?}");
        has("unknown field `timout_ms`, did you mean `timeout_ms`? (a code node takes `code`,");
        has(
            "unknown field `on_eror`, did you mean `on_error`? (a delay node takes `ms`; every node takes `id`, `type`,",
        );
        has("unknown field `zzz` (a delay node takes `ms`;");
        let e = errors(
            "id: w\nnodes:\n  - id: b\n    type: code\n    code: return 1\n    retries: 3\n    timeouts: 5\n    coded: 1\n",
            Format::Yaml,
        );
        let has = |want: &str| assert!(e.iter().any(|m| m.contains(want)), "{want}: {e:#?}");
        has("unknown field `retries`, did you mean `retry`?");
        has("unknown field `timeouts`, did you mean `timeout_ms`?");
        has("unknown field `coded`, did you mean `code`?");
        let e = errors(
            "id: w\nnodes:\n  - id: b\n    type: templat\n    template: hi\n  - id: c\n    type: zzz\n",
            Format::Yaml,
        );
        let has = |want: &str| assert!(e.iter().any(|m| m.contains(want)), "{want}: {e:#?}");
        has("unknown node type 'templat', did you mean 'template'? (one of: trigger,");
        has("unknown node type 'zzz'; one of: trigger,");
        // serde's Rust types said as JSON.
        let e = errors(
            "id: w\nnodes:\n  - id: b\n    type: code\n    code: return 1\n    repeat: {until: x, max_iterations: '5'}\n",
            Format::Yaml,
        );
        let has = |want: &str| assert!(e.iter().any(|m| m.contains(want)), "{want}: {e:#?}");
        has("invalid type: string \"5\", expected a whole number ≥ 0");
        assert!(!e.iter().any(|m| m.contains("u32")), "{e:#?}");
        assert_eq!(super::edit_distance("feilds", "fields"), 2);
        assert_eq!(super::edit_distance("", "ms"), 2);
    }

    #[test]
    fn every_wrong_field_of_a_node_is_reported() {
        let e = errors(
            "id: w\nnodes:\n  - id: a\n    type: http_request\n    url: 1\n    method: [x]\n    retry: {factor: z}\n    colour: red\n",
            Format::Yaml,
        );
        for field in ["'url'", "'method'", "'retry.factor'", "'colour'"] {
            assert!(e.iter().any(|m| m.contains(field)), "{field}: {e:#?}");
        }
        assert!(!e.iter().any(|m| m.contains("missing field")), "{e:#?}");
    }

    #[test]
    fn a_node_in_part_is_still_checked_and_can_be_named() {
        let e = errors(
            "id: w\nnodes:\n  - id: c\n    type: condition\n    if: 3\n    iff: x\n    then: [ghost, b]\n  - id: b\n    type: code\n    cod: x\n  - id: d\n    type: code\n    code: return nodes['c'], nodes['nope']\n",
            Format::Yaml,
        );
        assert!(
            e.iter()
                .any(|m| m.starts_with("wf:7: node 'c', field 'then[0]': unknown node 'ghost'")),
            "{e:#?}"
        );
        assert!(e.iter().any(|m| m.contains("`nodes['nope']`")), "{e:#?}");
        assert!(!e.iter().any(|m| m.contains("'b';")), "{e:#?}");
        assert_eq!(e.len(), 4, "{e:#?}");
    }

    #[test]
    fn a_duplicate_key_names_its_node() {
        let e = errors(
            "{\"id\": \"w\", \"nodes\": [\n {\"id\": \"a\", \"type\": \"set\", \"fields\": {}},\n {\"id\": \"b\", \"type\": \"code\",\n  \"code\": \"1\", \"code\": \"2\"}]}",
            Format::Json,
        );
        assert_eq!(e.len(), 1, "{e:#?}");
        assert!(e[0].starts_with("wf:4:"), "{e:#?}");
        assert!(
            e[0].contains("node 'b'") && e[0].contains("duplicate key `code`"),
            "{e:#?}"
        );
    }

    #[test]
    fn the_top_level_is_read_field_by_field() {
        let e = errors(
            "{\"id\": 5, \"name\": [], \"timeout_ms\": \"x\", \"x-tool\": {\"a\": 1}, \"nodes\": {}}",
            Format::Json,
        );
        for field in [
            "field 'id'",
            "field 'name'",
            "field 'timeout_ms'",
            "field 'nodes'",
        ] {
            assert!(e.iter().any(|m| m.contains(field)), "{field}: {e:#?}");
        }
        assert_eq!(e.len(), 4, "{e:#?}");
        let e = errors("[1, 2]", Format::Json);
        assert!(e[0].contains("a workflow is an object"), "{e:#?}");
    }
}

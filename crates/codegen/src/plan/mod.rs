//! Validation and planning: is the workflow well-formed, and in which order do its nodes run?
//!
//! A node runs after the nodes in its `after` list, after every node its templates reference,
//! after any node its code indexes as `nodes['id']`, and after the condition whose `then`/`else`
//! lists it. Among nodes that are ready at the same time, file order wins, so a plain list of
//! nodes runs top to bottom.

mod graph;
mod settings;
use crate::code_refs;
use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::model::*;
use crate::node_types::NodeType;
use crate::params::{self, Params};
use crate::pyliteral::Data;
use crate::template::{EXECUTION_KEYS, NODE_FIELDS, ROOTS, Reference, Segment};
use graph::{cycle_error, topo_order};
use settings::{Settings, node_settings};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

/// A valid workflow, ready to render: node params compiled and the execution order fixed.
#[derive(Debug, Clone)]
pub struct Plan {
    pub workflow: Workflow,
    /// Node indices (into `workflow.nodes`) in execution order.
    pub order: Vec<usize>,
    /// Direct upstream nodes of each node (by index), sorted.
    pub deps: Vec<Vec<usize>>,
    /// `(condition index, branch)` pairs each node is guarded by.
    pub guards: Vec<Vec<(usize, bool)>>,
    /// Runtime params of each node.
    pub params: Vec<Data>,
    /// Each node's compiled `for_each` and `repeat.until` (null when it has none).
    pub for_each: Vec<Data>,
    pub until: Vec<Data>,
    /// The workflow's compiled `output` (null: the last node's output).
    pub output: Data,
    /// Per `workflow` node: the code nodes of its child file and of the files below it, each
    /// `{file, node, code}`, for the runtime to compile before any node runs (filled by
    /// [`crate::compile`]; empty for other nodes and in a shallow compile).
    pub sub_code: Vec<Vec<SubCode>>,
}

/// A code node of a sub-workflow file: where it is and its source.
#[derive(Debug, Clone, PartialEq)]
pub struct SubCode {
    pub file: String,
    pub node: String,
    pub code: String,
}

impl Plan {
    /// Nodes in execution order.
    pub fn ordered_nodes(&self) -> impl Iterator<Item = &Node> {
        self.order.iter().map(|&i| &self.workflow.nodes[i])
    }

    /// The names of the node types the workflow uses, sorted and deduplicated (the runtime
    /// modules its script includes).
    pub fn node_types(&self) -> Vec<&'static str> {
        self.used_node_types()
            .into_iter()
            .map(NodeType::name)
            .collect()
    }

    /// The node types the workflow uses, sorted by name and deduplicated.
    pub(crate) fn used_node_types(&self) -> Vec<NodeType> {
        let mut types: Vec<NodeType> = self
            .workflow
            .nodes
            .iter()
            .map(|n| n.kind.node_type())
            .collect();
        // Sub-workflows' code nodes are compiled here before any node runs: by the code
        // module's start check.
        if self.sub_code.iter().any(|c| !c.is_empty()) {
            types.push(NodeType::Code);
        }
        types.sort_unstable_by_key(|t| t.name());
        types.dedup();
        types
    }

    /// Every requirement specifier of every node, sorted and deduplicated.
    pub fn requirements(&self) -> Vec<String> {
        let mut r: Vec<String> = self
            .workflow
            .nodes
            .iter()
            .flat_map(|n| n.requirements.iter().cloned())
            .collect();
        r.sort();
        r.dedup();
        r
    }
}

fn valid_id(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-')
}

fn valid_env_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

const ID_RULE: &str = "ids are 1–64 characters: lowercase letters, digits, `_` and `-`, starting with a letter or digit";

/// Why one node runs after another, for cycle messages.
#[derive(Debug, Clone)]
enum Edge {
    After,
    Template(String),
    Code,
    Branch {
        condition: String,
        branch: &'static str,
    },
}

impl Edge {
    fn describe(&self) -> String {
        match self {
            Edge::After => "`after`".into(),
            Edge::Template(field) => format!("template in `{field}`"),
            Edge::Code => "`nodes[...]` in `code`".into(),
            Edge::Branch { condition, branch } => format!("listed in `{branch}` of '{condition}'"),
        }
    }
}

/// What the checks see of one node written in the file: all of it, or, when its own fields did
/// not parse, what could still be read of it. A node in part still has its id checked, its
/// `after`, `then`/`else` and code references followed, and other nodes may name it, so that a
/// typo in one node does not hide the workflow's other problems.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Written<'a> {
    Whole(&'a Node),
    Part(&'a Partial),
}

/// What could be read of a node whose own fields did not parse.
#[derive(Debug, Clone, Default)]
pub(crate) struct Partial {
    /// `id`, when it is a string.
    pub id: Option<String>,
    pub after: Vec<String>,
    pub then: Vec<String>,
    pub otherwise: Vec<String>,
    /// `code`, for a `code` node.
    pub code: Option<String>,
    pub trigger: bool,
    /// The fields every node takes, as far as they parsed: their settings are checked.
    pub common: Option<CommonFields>,
}

impl<'a> Written<'a> {
    fn id(self) -> Option<&'a str> {
        match self {
            Written::Whole(n) => Some(&n.id),
            Written::Part(p) => p.id.as_deref(),
        }
    }

    fn after(self) -> &'a [String] {
        match self {
            Written::Whole(n) => &n.after,
            Written::Part(p) => &p.after,
        }
    }

    /// `then` and `else`, for a condition.
    fn branches(self) -> Option<(&'a [String], &'a [String])> {
        match self {
            Written::Whole(Node {
                kind: NodeKind::Condition(c),
                ..
            }) => Some((&c.then, &c.otherwise)),
            Written::Whole(_) => None,
            Written::Part(p) => Some((&p.then, &p.otherwise)),
        }
    }

    fn code(self) -> Option<&'a str> {
        match self {
            Written::Whole(Node {
                kind: NodeKind::Code(c),
                ..
            }) => Some(&c.code),
            Written::Whole(_) => None,
            Written::Part(p) => p.code.as_deref(),
        }
    }

    fn is_trigger(self) -> bool {
        match self {
            Written::Whole(n) => matches!(n.kind, NodeKind::Trigger(_)),
            Written::Part(p) => p.trigger,
        }
    }
}

/// Which top-level fields were read: the checks of a field that could not be read are left out
/// (its own error is already reported).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Known {
    pub id: bool,
    pub nodes: bool,
}

/// Checks the workflow and works out the order its nodes run in. Reports every problem found.
pub(crate) fn plan(workflow: &Workflow) -> Result<Plan, Diagnostics> {
    let written: Vec<Written> = workflow.nodes.iter().map(Written::Whole).collect();
    let known = Known {
        id: true,
        nodes: true,
    };
    check(workflow, &written, known)
}

/// [`plan`] over the nodes as written (`written[i]` is the i-th item of `nodes`); a plan only
/// when every node is whole and nothing is wrong.
pub(crate) fn check(
    workflow: &Workflow,
    written: &[Written],
    known: Known,
) -> Result<Plan, Diagnostics> {
    let mut diags = Vec::new();
    if known.id && !valid_id(&workflow.id) {
        diags.push(
            Diagnostic::new(format!("invalid workflow id '{}': {ID_RULE}", workflow.id))
                .field("id"),
        );
    }
    if known.nodes && written.is_empty() {
        diags.push(Diagnostic::new("a workflow needs at least one node").field("nodes"));
    }
    for (name, conn) in &workflow.connections {
        if !valid_id(name) {
            diags.push(
                Diagnostic::new(format!("invalid connection name '{name}': {ID_RULE}"))
                    .field(format!("connections.{name}")),
            );
        }
        if !valid_env_name(&conn.env) {
            diags.push(
                Diagnostic::new(format!(
                    "'{}' is not an environment variable name (letters, digits and `_`, not starting with a digit)",
                    conn.env
                ))
                .field(format!("connections.{name}.env")),
            );
        }
    }
    if workflow.timeout_ms == Some(0) {
        diags.push(Diagnostic::new("must be at least 1 ms").field("timeout_ms"));
    }

    // A node without a readable id is named by its position.
    let labels: Vec<String> = written
        .iter()
        .enumerate()
        .map(|(i, w)| w.id().map_or_else(|| format!("#{}", i + 1), str::to_string))
        .collect();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, w) in written.iter().enumerate() {
        let Some(id) = w.id() else { continue };
        if !valid_id(id) {
            diags.push(
                Diagnostic::new(format!("invalid node id '{id}': {ID_RULE}"))
                    .node_at(i, id)
                    .field("id"),
            );
        }
        if let Some(first) = index.get(id) {
            // Reported at the second node: the first keeps its id.
            diags.push(
                Diagnostic::new(format!(
                    "duplicate node id '{id}': node ids must be unique (node #{} has it too)",
                    first + 1
                ))
                .node_at(i, id)
                .field("id"),
            );
        } else {
            index.insert(id, i);
        }
    }
    let triggers: Vec<usize> = (0..written.len())
        .filter(|&i| written[i].is_trigger())
        .collect();
    if triggers.len() > 1 {
        let names: Vec<&str> = triggers.iter().map(|&i| labels[i].as_str()).collect();
        diags.push(
            Diagnostic::new(format!(
                "only one trigger node is allowed, found {}",
                names.join(", ")
            ))
            .node_at(triggers[1], names[1])
            .field("type"),
        );
    }

    let n = written.len();
    // deps[i]: (upstream index, why)
    let mut deps: Vec<Vec<(usize, Edge)>> = vec![Vec::new(); n];
    let mut guards: Vec<Vec<(usize, bool)>> = vec![Vec::new(); n];
    let mut params: Vec<Data> = Vec::with_capacity(n);
    let mut for_each: Vec<Data> = Vec::with_capacity(n);
    let mut until: Vec<Data> = Vec::with_capacity(n);
    let mut whole = true;

    for (i, w) in written.iter().enumerate() {
        let label = labels[i].as_str();
        let at = |msg: String, field: &str| Diagnostic::new(msg).node_at(i, label).field(field);
        // `after`
        for (k, dep) in w.after().iter().enumerate() {
            match index.get(dep.as_str()) {
                Some(&j) if j == i => diags.push(at(
                    "a node cannot run after itself".into(),
                    &format!("after[{k}]"),
                )),
                Some(&j) => deps[i].push((j, Edge::After)),
                None => diags.push(at(unknown_node(dep, &index), &format!("after[{k}]"))),
            }
        }
        if let Written::Part(Partial {
            common: Some(c), ..
        }) = w
        {
            node_settings(&Settings::of_common(c), &mut |msg, field| {
                diags.push(at(msg, field))
            });
        }
        if let Written::Whole(node) = w {
            node_settings(&Settings::of(node), &mut |msg, field| {
                diags.push(at(msg, field))
            });
            // Type-specific params and their templates.
            // Names a node's own templates may start with besides the usual roots.
            let scope: &[&str] = match (&node.for_each, &node.repeat) {
                (Some(_), _) => &["item", "index"],
                (None, Some(_)) => &["iteration", "previous"],
                (None, None) => &[],
            };
            match params::modifiers(node) {
                Ok(m) => {
                    for (field, r) in m.references {
                        let extra: &[&str] = if field.starts_with("repeat.until") {
                            &["iteration", "previous", "output"]
                        } else {
                            &[]
                        };
                        match check_reference(&r, node, &index, extra) {
                            Ok(Some(j)) => deps[i].push((j, Edge::Template(field))),
                            Ok(None) => {}
                            Err(msg) => diags.push(at(msg, &field)),
                        }
                    }
                    for_each.push(m.for_each);
                    until.push(m.until);
                }
                Err(errs) => {
                    diags.extend(errs.into_iter().map(|mut d| {
                        d.index = Some(i);
                        d
                    }));
                    for_each.push(Data::Null);
                    until.push(Data::Null);
                }
            }
            match params::compile(node, workflow) {
                Ok(Params { data, references }) => {
                    for (field, r) in references {
                        match check_reference(&r, node, &index, scope) {
                            Ok(Some(j)) => deps[i].push((j, Edge::Template(field))),
                            Ok(None) => {}
                            Err(msg) => diags.push(at(msg, &field)),
                        }
                    }
                    params.push(data);
                }
                Err(errs) => {
                    diags.extend(errs.into_iter().map(|mut d| {
                        d.index = Some(i);
                        d
                    }));
                    params.push(Data::Null);
                }
            }
        } else {
            whole = false;
        }
        if let Some(code) = w.code() {
            for r in code_refs::scan(code) {
                match index.get(r.id) {
                    Some(&j) if j == i => diags.push(at(
                        format!("`{}`: a node cannot read its own output", r.written),
                        "code",
                    )),
                    Some(&j) => deps[i].push((j, Edge::Code)),
                    None => diags.push(at(
                        format!("`{}`: {}", r.written, unknown_node(r.id, &index)),
                        "code",
                    )),
                }
            }
        }
        if let Some((then, otherwise)) = w.branches() {
            for (branch, list, value) in [("then", then, true), ("else", otherwise, false)] {
                for (k, target) in list.iter().enumerate() {
                    let field = format!("{branch}[{k}]");
                    match index.get(target.as_str()) {
                        Some(&j) if j == i => {
                            diags.push(at("a condition cannot list itself".into(), &field))
                        }
                        Some(&j) => {
                            if guards[j].iter().any(|&(c, _)| c == i) {
                                diags.push(at(
                                    format!("'{target}' is listed in both `then` and `else`"),
                                    &field,
                                ));
                            } else {
                                guards[j].push((i, value));
                                deps[j].push((
                                    i,
                                    Edge::Branch {
                                        condition: label.to_string(),
                                        branch,
                                    },
                                ));
                            }
                        }
                        None => diags.push(at(unknown_node(target, &index), &field)),
                    }
                }
            }
        }
    }

    let output = crate::settings::check(workflow, &index, &mut diags);
    // A cycle among the edges that are known is reported with the other problems.
    let order = match topo_order(n, &deps) {
        Ok(order) => Some(order),
        Err(cycle) => {
            diags.push(cycle_error(&cycle, &deps, &labels));
            None
        }
    };
    let (Some(order), true, true) = (order, diags.is_empty(), whole) else {
        return Err(Diagnostics(diags));
    };
    let deps = deps
        .into_iter()
        .map(|d| {
            let mut v: Vec<usize> = d.into_iter().map(|(j, _)| j).collect();
            v.sort_unstable();
            v.dedup();
            v
        })
        .collect();
    Ok(Plan {
        workflow: workflow.clone(),
        order,
        deps,
        guards,
        params,
        for_each,
        until,
        output,
        sub_code: vec![Vec::new(); n],
    })
}

/// Checks a node's own settings: retry, timeout, requirements.
pub(crate) fn unknown_node(id: &str, index: &HashMap<&str, usize>) -> String {
    let mut known: Vec<&str> = index.keys().copied().collect();
    known.sort_unstable();
    format!("unknown node '{id}'; nodes are: {}", known.join(", "))
}

/// Checks one template reference; returns the node it depends on, if any.
fn check_reference(
    r: &Reference,
    node: &Node,
    index: &HashMap<&str, usize>,
    extra: &[&str],
) -> Result<Option<usize>, String> {
    let Some(Segment::Key(root)) = r.path.first() else {
        return Err(format!(
            "`{{{{ {r} }}}}`: a path starts with one of {}",
            roots(extra)
        ));
    };
    match root.as_str() {
        other if extra.contains(&other) => Ok(None),
        "item" | "index" => Err(format!(
            "`{{{{ {r} }}}}`: `{root}` is only in scope in a node with `for_each`"
        )),
        "iteration" | "previous" => Err(format!(
            "`{{{{ {r} }}}}`: `{root}` is only in scope in a node with `repeat`"
        )),
        "output" => Err(format!(
            "`{{{{ {r} }}}}`: `output` is only in scope in `repeat.until`"
        )),
        "trigger" => Ok(None),
        "execution" => match r.path.get(1) {
            Some(Segment::Key(k)) if EXECUTION_KEYS.contains(&k.as_str()) && r.path.len() == 2 => {
                Ok(None)
            }
            _ => Err(format!(
                "`{{{{ {r} }}}}`: `execution` has the keys {}",
                EXECUTION_KEYS.join(", ")
            )),
        },
        "nodes" => {
            let id = r
                .node_id()
                .ok_or_else(|| format!("`{{{{ {r} }}}}`: expected `nodes.<id>.output`"))?;
            let &j = index
                .get(id)
                .ok_or_else(|| format!("`{{{{ {r} }}}}`: {}", unknown_node(id, index)))?;
            if id == node.id {
                return Err(format!("`{{{{ {r} }}}}`: a node cannot use its own output"));
            }
            match r.path.get(2) {
                Some(Segment::Key(f)) if NODE_FIELDS.contains(&f.as_str()) => Ok(Some(j)),
                Some(Segment::Key(f)) => Err(format!(
                    "`{{{{ {r} }}}}`: after `nodes.{id}` comes one of {}{}",
                    NODE_FIELDS.join(", "),
                    crate::convert::did_you_mean(f, NODE_FIELDS.iter().copied())
                )),
                _ => Err(format!(
                    "`{{{{ {r} }}}}`: after `nodes.{id}` comes one of {}",
                    NODE_FIELDS.join(", ")
                )),
            }
        }
        other => Err(format!(
            "`{{{{ {r} }}}}`: unknown root '{other}'; a path starts with one of {}",
            roots(extra)
        )),
    }
}

/// The roots a reference may start at here, for messages.
fn roots(extra: &[&str]) -> String {
    ROOTS
        .iter()
        .chain(extra.iter())
        .copied()
        .collect::<Vec<_>>()
        .join(", ")
}

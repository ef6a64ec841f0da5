//! Validation and planning: is the workflow well-formed, and in which order do its nodes run?
//!
//! A node runs after the nodes in its `after` list, after every node its templates reference,
//! after any node its code indexes as `nodes['id']`, and after the condition whose `then`/`else`
//! lists it. Among nodes that are ready at the same time, file order wins, so a plain list of
//! nodes runs top to bottom.

use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::model::*;
use crate::node_types::NodeType;
use crate::params::{self, Params};
use crate::pyliteral::Data;
use crate::template::{EXECUTION_KEYS, NODE_FIELDS, ROOTS, Reference, Segment};
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

/// Checks the workflow and works out the order its nodes run in. Reports every problem found.
pub(crate) fn plan(workflow: &Workflow) -> Result<Plan, Diagnostics> {
    let mut diags = Vec::new();
    if !valid_id(&workflow.id) {
        diags.push(
            Diagnostic::new(format!("invalid workflow id '{}': {ID_RULE}", workflow.id))
                .field("id"),
        );
    }
    if workflow.nodes.is_empty() {
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

    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, node) in workflow.nodes.iter().enumerate() {
        if !valid_id(&node.id) {
            diags.push(
                Diagnostic::new(format!("invalid node id '{}': {ID_RULE}", node.id))
                    .node(&node.id)
                    .field("id"),
            );
        }
        if index.insert(node.id.as_str(), i).is_some() {
            diags.push(
                Diagnostic::new(format!(
                    "duplicate node id '{}': node ids must be unique",
                    node.id
                ))
                .node(&node.id)
                .field("id"),
            );
        }
    }
    let triggers: Vec<&str> = workflow
        .nodes
        .iter()
        .filter(|n| matches!(n.kind, NodeKind::Trigger(_)))
        .map(|n| n.id.as_str())
        .collect();
    if triggers.len() > 1 {
        diags.push(
            Diagnostic::new(format!(
                "only one trigger node is allowed, found {}",
                triggers.join(", ")
            ))
            .node(triggers[1])
            .field("type"),
        );
    }

    let n = workflow.nodes.len();
    // deps[i]: (upstream index, why)
    let mut deps: Vec<Vec<(usize, Edge)>> = vec![Vec::new(); n];
    let mut guards: Vec<Vec<(usize, bool)>> = vec![Vec::new(); n];
    let mut params: Vec<Data> = Vec::with_capacity(n);

    for (i, node) in workflow.nodes.iter().enumerate() {
        let at = |msg: String, field: &str| Diagnostic::new(msg).node(&node.id).field(field);
        // Per-node settings.
        if node.retry.max_attempts == 0 || node.retry.max_attempts > 100 {
            diags.push(at(
                "`max_attempts` must be between 1 and 100".into(),
                "retry.max_attempts",
            ));
        }
        if !(node.retry.factor.is_finite() && node.retry.factor >= 1.0) {
            diags.push(at("`factor` must be a number ≥ 1".into(), "retry.factor"));
        }
        if node.timeout_ms == Some(0) {
            diags.push(at("must be at least 1 ms".into(), "timeout_ms"));
        }
        for (k, req) in node.requirements.iter().enumerate() {
            if req.trim().is_empty()
                || req.contains(['\n', '\r'])
                || req.trim_start().starts_with('-')
            {
                diags.push(at(
                    format!("'{req}' is not a pip requirement specifier"),
                    &format!("requirements[{k}]"),
                ));
            }
        }
        // `after`
        for (k, dep) in node.after.iter().enumerate() {
            match index.get(dep.as_str()) {
                Some(&j) if j == i => diags.push(at(
                    "a node cannot run after itself".into(),
                    &format!("after[{k}]"),
                )),
                Some(&j) => deps[i].push((j, Edge::After)),
                None => diags.push(at(unknown_node(dep, &index), &format!("after[{k}]"))),
            }
        }
        // Type-specific params and their templates.
        match params::compile(node, workflow) {
            Ok(Params { data, references }) => {
                for (field, r) in references {
                    match check_reference(&r, node, &index) {
                        Ok(Some(j)) => deps[i].push((j, Edge::Template(field))),
                        Ok(None) => {}
                        Err(msg) => diags.push(at(msg, &field)),
                    }
                }
                params.push(data);
            }
            Err(errs) => {
                diags.extend(errs);
                params.push(Data::Null);
            }
        }
        match &node.kind {
            NodeKind::Code(code) => {
                for id in code_mentioned_ids(&code.code) {
                    if let Some(&j) = index.get(id) {
                        if j != i {
                            deps[i].push((j, Edge::Code));
                        }
                    }
                }
            }
            NodeKind::Condition(cond) => {
                for (branch, list, value) in
                    [("then", &cond.then, true), ("else", &cond.otherwise, false)]
                {
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
                                            condition: node.id.clone(),
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
            _ => {}
        }
    }
    if !diags.is_empty() {
        return Err(Diagnostics(diags));
    }

    let order = match topo_order(n, &deps) {
        Ok(order) => order,
        Err(cycle) => {
            let mut text = String::new();
            for w in cycle.windows(2) {
                let (from, to) = (w[0], w[1]);
                let edge = deps[to]
                    .iter()
                    .find(|(j, _)| *j == from)
                    .map(|(_, e)| e.clone())
                    .expect("edge exists");
                text.push_str(&format!(
                    "'{}' → '{}' ({}), ",
                    workflow.nodes[from].id,
                    workflow.nodes[to].id,
                    edge.describe()
                ));
            }
            text.truncate(text.len().saturating_sub(2));
            let names: Vec<&str> = cycle
                .iter()
                .map(|&i| workflow.nodes[i].id.as_str())
                .collect();
            let first = cycle[1];
            let field = deps[first]
                .iter()
                .find(|(j, _)| *j == cycle[0])
                .map(|(_, e)| match e {
                    Edge::After => "after".to_string(),
                    Edge::Template(f) => f.clone(),
                    Edge::Code => "code".to_string(),
                    Edge::Branch { condition, .. } => format!("(branch of {condition})"),
                })
                .unwrap_or_default();
            return Err(
                Diagnostic::new(format!("cycle: {}; because {text}", names.join(" → ")))
                    .node(workflow.nodes[first].id.clone())
                    .field(field)
                    .into(),
            );
        }
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
    })
}

fn unknown_node(id: &str, index: &HashMap<&str, usize>) -> String {
    let mut known: Vec<&str> = index.keys().copied().collect();
    known.sort_unstable();
    format!("unknown node '{id}'; nodes are: {}", known.join(", "))
}

/// Checks one template reference; returns the node it depends on, if any.
fn check_reference(
    r: &Reference,
    node: &Node,
    index: &HashMap<&str, usize>,
) -> Result<Option<usize>, String> {
    let Some(Segment::Key(root)) = r.path.first() else {
        return Err(format!(
            "`{{{{ {r} }}}}`: a path starts with one of {}",
            ROOTS.join(", ")
        ));
    };
    match root.as_str() {
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
                _ => Err(format!(
                    "`{{{{ {r} }}}}`: after `nodes.{id}` comes one of {}",
                    NODE_FIELDS.join(", ")
                )),
            }
        }
        other => Err(format!(
            "`{{{{ {r} }}}}`: unknown root '{other}'; a path starts with one of {}",
            ROOTS.join(", ")
        )),
    }
}

/// The ids Python source indexes `nodes` with (`nodes['id']`, `nodes["id"]`, `nodes.get('id'`),
/// in one pass over the source.
fn code_mentioned_ids(code: &str) -> Vec<&str> {
    let mut ids = Vec::new();
    for prefix in ["nodes['", "nodes[\"", "nodes.get('", "nodes.get(\""] {
        for (at, _) in code.match_indices(prefix) {
            let rest = &code[at + prefix.len()..];
            if let Some(end) = rest.find(['\'', '"']) {
                ids.push(&rest[..end]);
            }
        }
    }
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Kahn's algorithm, taking the lowest file index among ready nodes. On a cycle, returns one
/// cycle as indices, first node repeated at the end.
fn topo_order(n: usize, deps: &[Vec<(usize, Edge)>]) -> Result<Vec<usize>, Vec<usize>> {
    let mut indegree = vec![0usize; n];
    let mut downstream: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, d) in deps.iter().enumerate() {
        let mut ups: Vec<usize> = d.iter().map(|(j, _)| *j).collect();
        ups.sort_unstable();
        ups.dedup();
        indegree[i] = ups.len();
        for j in ups {
            downstream[j].push(i);
        }
    }
    let mut ready: BinaryHeap<Reverse<usize>> =
        (0..n).filter(|&i| indegree[i] == 0).map(Reverse).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(Reverse(i)) = ready.pop() {
        order.push(i);
        for &k in &downstream[i] {
            indegree[k] -= 1;
            if indegree[k] == 0 {
                ready.push(Reverse(k));
            }
        }
    }
    if order.len() == n {
        return Ok(order);
    }
    // Walk upstream from a node left over until a node repeats: that is a cycle.
    let left: Vec<bool> = (0..n).map(|i| indegree[i] > 0).collect();
    let start = (0..n).find(|&i| left[i]).expect("a node is left");
    let mut path = vec![start];
    let mut seen = HashMap::new();
    seen.insert(start, 0);
    let mut cur = start;
    loop {
        let next = deps[cur]
            .iter()
            .map(|(j, _)| *j)
            .filter(|&j| left[j])
            .min()
            .expect("a left node has a left upstream");
        if let Some(&pos) = seen.get(&next) {
            let mut cycle: Vec<usize> = path[pos..].to_vec();
            cycle.push(next);
            // `path` follows upstream edges; a cycle reads better downstream.
            cycle.reverse();
            return Err(cycle);
        }
        seen.insert(next, path.len());
        path.push(next);
        cur = next;
    }
}

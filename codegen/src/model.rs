//! The workflow model: what a workflow file says, as typed Rust values.
//!
//! Parsing goes through [`crate::source`], which turns a file into these types with errors that
//! name the file, line, node and field. Nothing here knows about processes or storage.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// A whole workflow definition.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Workflow {
    pub id: String,
    pub name: Option<String>,
    pub description: Option<String>,
    /// JSON Schema of the trigger data (defaults are applied before a run).
    pub inputs: Option<Value>,
    /// Named secrets, each bound to an environment variable.
    pub connections: BTreeMap<String, Connection>,
    /// Whole-execution timeout; the runner's default applies when absent.
    pub timeout_ms: Option<u64>,
    pub nodes: Vec<Node>,
}

/// The top-level fields of a workflow file, parsed before the nodes so that every node can be
/// checked on its own and reported with its id.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWorkflow {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub inputs: Option<Value>,
    #[serde(default)]
    pub connections: BTreeMap<String, Connection>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    pub nodes: Vec<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Connection {
    /// The environment variable that holds the secret.
    pub env: String,
}

/// One node: the fields every node type shares, plus its type-specific part.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Node {
    pub id: String,
    pub name: Option<String>,
    pub notes: Option<String>,
    /// Explicit ordering edges: this node runs after these.
    pub after: Vec<String>,
    pub timeout_ms: Option<u64>,
    pub retry: Retry,
    pub on_error: OnError,
    /// A fixed output: the node is not executed.
    pub pinned: Option<Value>,
    /// pip requirement specifiers the node's code needs.
    pub requirements: Vec<String>,
    pub kind: NodeKind,
}

/// The fields shared by all node types. `type` is read separately.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CommonFields {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub notes: Option<String>,
    #[serde(default)]
    pub after: Vec<String>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    #[serde(default)]
    pub retry: Option<Retry>,
    #[serde(default)]
    pub on_error: OnError,
    #[serde(default)]
    pub pinned: Option<Value>,
    #[serde(default)]
    pub requirements: Vec<String>,
}

/// Names of the fields in [`CommonFields`] plus `type`; everything else belongs to the node type.
pub(crate) const COMMON_KEYS: &[&str] = &[
    "id",
    "type",
    "name",
    "notes",
    "after",
    "timeout_ms",
    "retry",
    "on_error",
    "pinned",
    "requirements",
];

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    #[serde(default = "one")]
    pub max_attempts: u32,
    #[serde(default)]
    pub backoff_ms: u64,
    #[serde(default = "two")]
    pub factor: f64,
}

fn one() -> u32 {
    1
}
fn two() -> f64 {
    2.0
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            max_attempts: 1,
            backoff_ms: 0,
            factor: 2.0,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    #[default]
    Stop,
    Continue,
}

/// The type-specific part of a node.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum NodeKind {
    Trigger(TriggerNode),
    Set(SetNode),
    Template(TemplateNode),
    Code(CodeNode),
    Condition(ConditionNode),
    Delay(DelayNode),
}

/// Every node type name, in the order the docs list them.
pub const NODE_TYPES: &[&str] = &["trigger", "set", "template", "code", "condition", "delay"];

impl NodeKind {
    pub fn type_name(&self) -> &'static str {
        match self {
            NodeKind::Trigger(_) => "trigger",
            NodeKind::Set(_) => "set",
            NodeKind::Template(_) => "template",
            NodeKind::Code(_) => "code",
            NodeKind::Condition(_) => "condition",
            NodeKind::Delay(_) => "delay",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerNode {}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetNode {
    /// The output object; every string inside may be a template.
    pub fields: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateNode {
    pub template: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeNode {
    /// Python source, run as a function body. Not templated.
    pub code: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConditionNode {
    /// A template (truthiness) or `{ "op", "left", "right" }`.
    #[serde(rename = "if")]
    pub condition: Value,
    #[serde(default)]
    pub then: Vec<String>,
    #[serde(default, rename = "else")]
    pub otherwise: Vec<String>,
}

/// Comparison operators a structured condition may use.
pub const CONDITION_OPS: &[&str] = &[
    "eq",
    "ne",
    "gt",
    "ge",
    "lt",
    "le",
    "contains",
    "not_contains",
    "exists",
    "not_exists",
    "empty",
    "not_empty",
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DelayNode {
    /// Milliseconds, a number or a template yielding one.
    pub ms: Value,
}

impl Workflow {
    pub fn node(&self, id: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.id == id)
    }

    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.id)
    }
}

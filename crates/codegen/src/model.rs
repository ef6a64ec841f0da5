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
    /// How many independent nodes may run at once (default 1: one after another, in order).
    pub max_parallel: Option<u32>,
    /// The execution's output (a value whose strings may be templates); default: the output of
    /// the last node that ran.
    pub output: Option<Value>,
    /// Where every node runs, relative to the workflow file's directory (default: that
    /// directory).
    pub cwd: Option<String>,
    /// No LLM or agent call starts once the execution's cost has reached this (US dollars).
    pub max_cost_usd: Option<f64>,
    /// A warning, once, when the execution's cost reaches this.
    pub warn_cost_usd: Option<f64>,
    pub nodes: Vec<Node>,
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
    /// Run the node once per item of a list.
    pub for_each: Option<ForEach>,
    /// Run the node again until a condition holds.
    pub repeat: Option<Repeat>,
    pub kind: NodeKind,
}

/// `for_each`: the node runs once per item, with `item` and `index` in scope.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ForEach {
    /// A template yielding a list (`"{{ trigger.urls }}"`), or a list.
    pub items: Value,
    /// Items running at once (default 1).
    pub max_concurrent: u32,
    /// After an item fails, start no new item (default true).
    pub fail_fast: bool,
}

/// `repeat`: the node runs again, with `iteration` and `previous` in scope, until `until` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Repeat {
    /// A condition as a `condition` node's `if` takes it (a template's truthiness, or
    /// `{op, left, right}`), with `output` — this iteration's — in scope.
    pub until: Value,
    /// At most this many iterations (1 to 1000); reaching it without `until` is an error.
    pub max_iterations: u32,
}

/// The fields shared by all node types. `type` is read separately.
#[derive(Debug, Clone, Deserialize)]
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
    #[serde(default)]
    pub for_each: Option<Value>,
    #[serde(default)]
    pub max_concurrent: Option<u32>,
    #[serde(default)]
    pub fail_fast: Option<bool>,
    #[serde(default)]
    pub repeat: Option<Repeat>,
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
    "for_each",
    "max_concurrent",
    "fail_fast",
    "repeat",
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

// The type-specific part of a node, declared with everything else per node type in the table of
// `node_types.rs`.
pub use crate::node_types::NodeKind;

impl NodeKind {
    /// The connections this node needs bound, with the field that names each.
    pub fn connections(&self) -> Vec<(&str, String)> {
        match self {
            NodeKind::HttpRequest(n) => n
                .connection
                .iter()
                .map(|c| (c.as_str(), "connection".to_string()))
                .collect(),
            NodeKind::Llm(n) => vec![(n.connection.as_str(), "connection".to_string())],
            NodeKind::Command(CommandNode { connections, .. })
            | NodeKind::Code(CodeNode { connections, .. })
            | NodeKind::Agent(AgentNode { connections, .. }) => connections
                .iter()
                .enumerate()
                .map(|(i, c)| (c.as_str(), format!("connections[{i}]")))
                .collect(),
            NodeKind::Trigger(_)
            | NodeKind::Set(_)
            | NodeKind::Template(_)
            | NodeKind::Condition(_)
            | NodeKind::Delay(_)
            | NodeKind::Workflow(_) => Vec::new(),
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
    /// Connections the code reads from the environment (`os.environ["GROQ_API_KEY"]`): bound
    /// before the run starts, like a `command` node's.
    #[serde(default)]
    pub connections: Vec<String>,
    /// The directory the code runs in, relative to the execution's (templated). The working
    /// directory is the process's, so such a node never runs beside another node.
    #[serde(default)]
    pub cwd: Option<String>,
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
pub(crate) const CONDITION_OPS: &[&str] = &[
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

/// `type: workflow`: runs another workflow file as a linked child execution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowNode {
    /// The child's file, relative to the file that names it (not templated).
    pub workflow: String,
    /// The child's trigger data: an object whose strings may be templates, or one template
    /// yielding an object (`"{{ item }}"`).
    #[serde(default = "empty_object")]
    pub inputs: Value,
}

fn empty_object() -> Value {
    Value::Object(Map::new())
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpRequestNode {
    #[serde(default = "get")]
    pub method: String,
    pub url: String,
    #[serde(default)]
    pub headers: Map<String, Value>,
    #[serde(default)]
    pub query: Map<String, Value>,
    /// A JSON body (templated at any depth).
    #[serde(default)]
    pub json: Option<Value>,
    /// A raw text body (templated).
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default = "yes")]
    pub follow_redirects: bool,
    /// Most redirects followed; one more fails the node with `TooManyRedirects` (default 10).
    #[serde(default)]
    pub max_redirects: Option<u32>,
    /// Statuses ≥ 400 that do not fail the node.
    #[serde(default)]
    pub allow_status: Vec<u16>,
    /// A connection whose secret authenticates the request.
    #[serde(default)]
    pub connection: Option<String>,
    /// How the connection's secret is sent (default: `Authorization: Bearer`).
    #[serde(default)]
    pub auth: Option<HttpAuth>,
    /// Longest response body kept (default 10 MiB).
    #[serde(default)]
    pub max_body_bytes: Option<u64>,
}

fn get() -> String {
    "GET".into()
}
fn yes() -> bool {
    true
}

/// How an `http_request` sends its connection's secret: `"bearer"` (the default), or an object
/// such as `{"type": "header", "name": "X-Api-Key"}` (`query` takes a parameter name too;
/// `basic` sends the secret as `user:password`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HttpAuth {
    /// `bearer`, `header`, `query` or `basic`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Header or query parameter name for `header`/`query`.
    #[serde(default)]
    pub name: Option<String>,
}

impl<'de> Deserialize<'de> for HttpAuth {
    /// `"query"` alone, or `{"type": "query", "name": "key"}`.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        const SHAPE: &str = "`auth` is a type name (\"bearer\", \"header\", \"query\", \"basic\") or an object {\"type\": …, \"name\": …}";
        match Value::deserialize(d)? {
            Value::String(kind) => Ok(HttpAuth { kind, name: None }),
            Value::Object(map) => {
                if let Some(k) = map.keys().find(|k| *k != "type" && *k != "name") {
                    return Err(D::Error::custom(format!(
                        "unknown field `{k}`, expected `type` or `name`"
                    )));
                }
                let kind = match map.get("type") {
                    Some(Value::String(t)) => t.clone(),
                    _ => return Err(D::Error::custom(format!("missing field `type`: {SHAPE}"))),
                };
                let name = match map.get("name") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(n)) => Some(n.clone()),
                    Some(_) => return Err(D::Error::custom("`name` must be a string")),
                };
                Ok(HttpAuth { kind, name })
            }
            _ => Err(D::Error::custom(SHAPE)),
        }
    }
}

/// LLM providers and how each is reached.
pub(crate) const LLM_PROVIDERS: &[&str] = &["groq", "openai", "openai_compatible", "anthropic"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmNode {
    pub provider: String,
    pub model: String,
    pub connection: String,
    #[serde(default)]
    pub messages: Option<Vec<Value>>,
    #[serde(default)]
    pub prompt: Option<String>,
    #[serde(default)]
    pub system: Option<String>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub max_tokens: Option<u64>,
    /// Overrides the provider's default (and its `FLOWRUN_<PROVIDER>_BASE_URL` variable);
    /// `openai_compatible` has no default, so it needs this or `FLOWRUN_OPENAI_COMPATIBLE_BASE_URL`.
    #[serde(default)]
    pub base_url: Option<String>,
    /// USD per million tokens, overriding the shipped price table.
    #[serde(default)]
    pub price: Option<Price>,
    /// Retries inside the node on 429, 5xx and connection errors (default 2).
    #[serde(default)]
    pub max_retries: Option<u32>,
    /// Ask for the answer as a stream and send its text to viewers as it arrives
    /// (`node_delta` events); the output is the same.
    #[serde(default)]
    pub stream: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandNode {
    /// Program and arguments, each templated. Not with `shell: true`.
    #[serde(default)]
    pub argv: Option<Vec<String>>,
    /// A shell command line; needs `shell: true`.
    #[serde(default)]
    pub command: Option<String>,
    #[serde(default)]
    pub shell: bool,
    #[serde(default)]
    pub cwd: Option<String>,
    #[serde(default)]
    pub env: Map<String, Value>,
    #[serde(default)]
    pub stdin: Option<Value>,
    #[serde(default)]
    pub allow_failure: bool,
    /// Longest stdout/stderr kept in the output (default 1 MiB each).
    #[serde(default)]
    pub max_output_bytes: Option<u64>,
    /// Connections whose variables the program gets in its environment.
    #[serde(default)]
    pub connections: Vec<String>,
}

/// A coding-agent CLI an `agent` node can drive: its `agent:` name, what it is called, the
/// executable it runs by default (found on `PATH`), the npm package that installs it, and the
/// price-table provider of its models.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentCli {
    pub agent: &'static str,
    pub name: &'static str,
    pub command: &'static str,
    pub npm_package: &'static str,
    pub(crate) provider: &'static str,
}

/// Every agent CLI, in the order the docs list them.
pub const AGENT_CLIS: &[AgentCli] = &[
    AgentCli {
        agent: "claude_code",
        name: "Claude Code",
        command: "claude",
        npm_package: "@anthropic-ai/claude-code",
        provider: "anthropic",
    },
    AgentCli {
        agent: "codex",
        name: "Codex CLI",
        command: "codex",
        npm_package: "@openai/codex",
        provider: "openai",
    },
    AgentCli {
        agent: "gemini",
        name: "Gemini CLI",
        command: "gemini",
        npm_package: "@google/gemini-cli",
        provider: "google",
    },
];

/// The agent CLI called `agent` (`claude_code`, `codex`, `gemini`).
pub fn agent_cli(agent: &str) -> Option<&'static AgentCli> {
    AGENT_CLIS.iter().find(|a| a.agent == agent)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentNode {
    /// `claude_code`, `codex` or `gemini`.
    pub agent: String,
    /// What the agent is asked to do (templated).
    pub prompt: String,
    /// The directory the agent works in (templated).
    #[serde(default)]
    pub cwd: Option<String>,
    /// The model, as the CLI spells it (templated); the CLI's default when absent.
    #[serde(default)]
    pub model: Option<String>,
    /// Claude Code's `--max-turns`.
    #[serde(default)]
    pub max_turns: Option<u64>,
    /// Passed as the CLI spells it: Claude's `--permission-mode`, Codex's `--sandbox`,
    /// Gemini's `--approval-mode`.
    #[serde(default)]
    pub permission_mode: Option<String>,
    /// Claude's `--allowedTools`, Gemini's `--allowed-tools`.
    #[serde(default)]
    pub allowed_tools: Vec<String>,
    /// A session to continue (templated), e.g. `{{ nodes.plan.output.session_id }}`.
    #[serde(default)]
    pub resume_session: Option<String>,
    /// The executable: a name found on `PATH` or a path; the agent's default when absent.
    /// Not templated: it is checked before anything runs.
    #[serde(default)]
    pub command: Option<String>,
    /// Extra arguments (each templated), after flowrun's own.
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: Map<String, Value>,
    /// Connections whose variables the agent gets in its environment (and no others).
    #[serde(default)]
    pub connections: Vec<String>,
}

impl AgentNode {
    /// The executable the node runs: its `command`, else its CLI's default.
    pub fn executable(&self) -> &str {
        match &self.command {
            Some(c) => c,
            None => agent_cli(&self.agent).map(|a| a.command).unwrap_or(""),
        }
    }
}

impl Workflow {
    pub fn node(&self, id: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.id == id)
    }

    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.id)
    }
}

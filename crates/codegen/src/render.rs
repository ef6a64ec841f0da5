//! Rendering the script: the template in `templates/`, the runtime in `runtime/`, and the plan as
//! Python literal data.
//!
//! The template environment escapes every value it prints through [`pyliteral`], so a value can
//! only reach the script as a literal; the runtime sources and the pre-rendered workflow literal
//! are the only values marked safe. Both the template and the runtime are embedded at build time.

use crate::mock::{Mock, makes_requests};
use crate::node_types::NodeType;
use crate::plan::Plan;
use crate::pyliteral::{self, Data, dict};
use minijinja::value::Value as JValue;
use minijinja::{AutoEscape, Environment, context};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};

const SCRIPT_TEMPLATE: &str = include_str!("../../../templates/script.py.j2");
/// `(file name, text)` of each part of the runtime core, `runtime/core/*.py`.
macro_rules! core_parts {
    ($($name:literal),* $(,)?) => {
        &[$(($name, include_str!(concat!("../../../runtime/core/", $name)))),*]
    };
}

/// The runtime core's parts in script order, which is the order of their names (the snapshot
/// test, `tests/snapshots.rs`, fails unless this lists every file of `runtime/core/` so).
const RUNTIME_CORE: &[(&str, &str)] = core_parts![
    "10_prelude.py",
    "20_json.py",
    "30_templates.py",
    "40_protocol.py",
    "50_errors.py",
    "55_compare.py",
    "60_run.py",
    "62_loops.py",
    "64_schedule.py",
    "66_limits.py",
    "70_http.py",
    "80_main.py",
];

/// The core parts as one text, two blank lines apart like the sections of one Python file;
/// joined once per process (~40 KB).
fn runtime_core() -> &'static str {
    static CORE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    CORE.get_or_init(|| {
        let parts: Vec<&str> = RUNTIME_CORE.iter().map(|(_, p)| p.trim_end()).collect();
        parts.join("\n\n\n")
    })
}

/// Output that replaces a node's execution: a pin from the definition or the command line, or
/// an output reused from an earlier execution. Build one with [`Pin::pinned`] or [`Pin::reused`].
#[derive(Debug, Clone, PartialEq)]
pub struct Pin {
    pub output: Value,
    pub status: PinStatus,
    pub from_execution: Option<String>,
    /// What a reused output cost when it was made, where its own output does not say (a
    /// `workflow` node's child and its children): it counts toward a resume's cost limit.
    pub spent_usd: Option<f64>,
}

/// Why a node's output is fixed rather than computed: the node's status in its `node_end` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PinStatus {
    /// Pinned by the definition (`pinned:`) or by the caller (`--pin`).
    Pinned,
    /// Reused from an earlier execution (resume).
    Reused,
}

impl PinStatus {
    /// The name, as in the script and the events (and serde).
    pub fn as_str(self) -> &'static str {
        match self {
            PinStatus::Pinned => "pinned",
            PinStatus::Reused => "reused",
        }
    }
}

impl Pin {
    /// A fixed output: `pinned:` in the definition, or `--pin`.
    pub fn pinned(output: Value) -> Pin {
        Pin {
            output,
            status: PinStatus::Pinned,
            from_execution: None,
            spent_usd: None,
        }
    }

    /// An output reused from the execution that produced it.
    pub fn reused(output: Value, from_execution: Option<String>) -> Pin {
        Pin {
            output,
            status: PinStatus::Reused,
            from_execution,
            spent_usd: None,
        }
    }
}

/// What varies a rendering besides the plan.
#[derive(Debug, Clone, Default)]
pub struct RenderOptions {
    /// Pins by node id; they win over `pinned` in the definition.
    pub pins: BTreeMap<String, Pin>,
    /// Items of `for_each` nodes reused from an earlier execution (a resume): node id → item
    /// index → the item's output. Only the other items run.
    pub reused_items: BTreeMap<String, BTreeMap<usize, Pin>>,
    /// Overrides the workflow's `max_parallel`.
    pub max_parallel: Option<u32>,
    /// Mocks by node id (workflow tests); they win over pins (see [`crate::mock`]).
    pub mocks: BTreeMap<String, Mock>,
    /// Nodes that make network requests and are neither mocked nor pinned fail at once.
    pub offline: bool,
    /// Nodes the runtime pauses before (the execution ends `paused` there).
    pub break_before: Vec<String>,
    /// Overrides the workflow's `max_cost_usd`.
    pub max_cost_usd: Option<f64>,
    /// That limit is a parent's share for a sub-workflow: a call may not start past it, and
    /// the parent, not the child, answers for a total that ends past it.
    pub cost_limit_is_share: bool,
}

/// A rendered script and the hash of its bytes (its cache key).
#[derive(Debug, Clone)]
pub struct Script {
    pub text: String,
    pub sha256: String,
}

/// The flowrun version written into scripts.
pub(crate) const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The template environment, its template parsed once per process.
fn environment() -> &'static Environment<'static> {
    static ENV: std::sync::OnceLock<Environment<'static>> = std::sync::OnceLock::new();
    ENV.get_or_init(new_environment)
}

fn new_environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_auto_escape_callback(|_| AutoEscape::Custom("python"));
    env.set_formatter(|out, state, value| {
        if value.is_safe() || state.auto_escape() == AutoEscape::None {
            return minijinja::escape_formatter(out, state, value);
        }
        let json: Value = serde_json::to_value(value).map_err(|e| {
            minijinja::Error::new(minijinja::ErrorKind::BadSerialization, e.to_string())
        })?;
        out.write_str(&pyliteral::to_string(&Data::from(&json)))?;
        Ok(())
    });
    env.add_template("script.py", SCRIPT_TEMPLATE)
        .expect("templates/script.py.j2 parses");
    env
}

/// The workflow as the runtime reads it (see `runtime/core/`).
pub(crate) fn workflow_data(plan: &Plan, options: &RenderOptions) -> Data {
    let wf = &plan.workflow;
    let nodes = plan
        .order
        .iter()
        .map(|&i| {
            let node = &wf.nodes[i];
            let mock = options.mocks.get(&node.id);
            let pin = options
                .pins
                .get(&node.id)
                .cloned()
                .or_else(|| node.pinned.clone().map(Pin::pinned))
                .filter(|_| mock.is_none());
            // Only set in tests: a script without mocks has no such keys (and the same bytes).
            let mut extra = Vec::new();
            if let Some(m) = mock {
                extra.push(("mock".to_string(), m.data()));
            } else if options.offline && pin.is_none() && makes_requests(node.kind.type_name()) {
                extra.push(("offline".to_string(), Data::Bool(true)));
            }
            // A sub-workflow's code nodes, checked before any node runs (as this file's are).
            if !plan.sub_code[i].is_empty() {
                let code = plan.sub_code[i].iter().map(|c| {
                    dict([
                        ("file", Data::from(c.file.as_str())),
                        ("node", Data::from(c.node.as_str())),
                        ("code", Data::from(c.code.as_str())),
                    ])
                });
                extra.push(("sub_code".to_string(), Data::List(code.collect())));
            }
            let pinned = pin.as_ref().map_or(Data::Null, |p| pin_data(p, true));
            let ids = |v: &[usize]| {
                Data::List(
                    v.iter()
                        .map(|&j| Data::from(wf.nodes[j].id.as_str()))
                        .collect(),
                )
            };
            let mut data = dict([
                ("id", Data::from(node.id.as_str())),
                ("type", Data::from(node.kind.type_name())),
                ("name", Data::from(node.name.as_deref())),
                ("params", plan.params[i].clone()),
                ("deps", ids(&plan.deps[i])),
                (
                    "guards",
                    Data::List(
                        plan.guards[i]
                            .iter()
                            .map(|&(c, b)| {
                                Data::List(vec![Data::from(wf.nodes[c].id.as_str()), Data::Bool(b)])
                            })
                            .collect(),
                    ),
                ),
                (
                    "retry",
                    dict([
                        ("max_attempts", Data::from(node.retry.max_attempts as u64)),
                        ("backoff_ms", Data::from(node.retry.backoff_ms)),
                        ("factor", Data::from(node.retry.factor)),
                    ]),
                ),
                (
                    "on_error",
                    Data::from(match node.on_error {
                        crate::model::OnError::Stop => "stop",
                        crate::model::OnError::Continue => "continue",
                    }),
                ),
                ("timeout_ms", Data::from(node.timeout_ms)),
                ("pinned", pinned),
                ("for_each", plan.for_each[i].clone()),
                (
                    "max_concurrent",
                    Data::from(node.for_each.as_ref().map(|f| f.max_concurrent as u64)),
                ),
                (
                    "fail_fast",
                    node.for_each
                        .as_ref()
                        .map_or(Data::Null, |f| Data::Bool(f.fail_fast)),
                ),
                (
                    "repeat",
                    match &node.repeat {
                        Some(r) => dict([
                            ("until", plan.until[i].clone()),
                            ("max_iterations", Data::from(r.max_iterations as u64)),
                        ]),
                        None => Data::Null,
                    },
                ),
                (
                    "reuse_items",
                    reused_items(options.reused_items.get(&node.id)),
                ),
            ]);
            if let Data::Dict(fields) = &mut data {
                fields.extend(extra);
            }
            data
        })
        .collect();
    let mut data = dict([
        ("id", Data::from(wf.id.as_str())),
        ("name", Data::from(wf.name.as_deref())),
        ("flowrun_version", Data::from(VERSION)),
        ("inputs", Data::from(wf.inputs.as_ref())),
        (
            "max_parallel",
            Data::from(options.max_parallel.or(wf.max_parallel).map(u64::from)),
        ),
        ("nodes", Data::List(nodes)),
    ]);
    // Only what is set: a workflow without these has the same script bytes as before them.
    let mut extra: Vec<(String, Data)> = Vec::new();
    if !matches!(plan.output, Data::Null) {
        extra.push(("output".into(), plan.output.clone()));
    }
    if !options.break_before.is_empty() {
        let ids = options.break_before.iter().map(|n| Data::from(n.as_str()));
        extra.push(("break_before".into(), Data::List(ids.collect())));
    }
    if let Some(max) = options.max_cost_usd.or(wf.max_cost_usd) {
        extra.push(("max_cost_usd".into(), Data::from(max)));
        extra.push((
            "cost_limit_is_share".into(),
            options.cost_limit_is_share.into(),
        ));
    }
    if let Some(warn) = wf.warn_cost_usd {
        extra.push(("warn_cost_usd".into(), Data::from(warn)));
    }
    if let Data::Dict(fields) = &mut data {
        fields.extend(extra);
    }
    data
}

/// A pin as the script reads it: its output, its status (`status`: a node's own, not an
/// item's), where it came from, and what it cost when the output is not the one to say.
fn pin_data(p: &Pin, status: bool) -> Data {
    let mut d = vec![("output".to_string(), Data::from(&p.output))];
    if status {
        d.push(("status".into(), Data::from(p.status.as_str())));
    }
    d.push((
        "from_execution".into(),
        Data::from(p.from_execution.as_deref()),
    ));
    if let Some(spent) = p.spent_usd {
        d.push(("spent_usd".into(), Data::from(spent)));
    }
    Data::Dict(d)
}

/// `{"<index>": {"output", "from_execution"}}` of the reused items of a `for_each` node.
fn reused_items(items: Option<&BTreeMap<usize, Pin>>) -> Data {
    match items {
        Some(items) if !items.is_empty() => Data::Dict(
            items
                .iter()
                .map(|(i, p)| (i.to_string(), pin_data(p, false)))
                .collect(),
        ),
        _ => Data::Null,
    }
}

/// Scripts rendered lately, by all they are made of: the workflow's id, the node types whose
/// runtime they carry and the workflow literal. `flowrun serve` and `flowrun test` render the
/// same workflow for every execution, and filling the template and hashing its ~100 KB were
/// most of that work (~0.15 ms a request); the literal is made every time, so a changed
/// workflow, sub-workflow or option is a different key. Bounded in bytes (key and script):
/// emptied when the next one would pass [`RENDERED_BYTES`], and a script over a quarter of that
/// (a resume's pins can make the literal large) is not kept at all.
static RENDERED: std::sync::OnceLock<std::sync::Mutex<Rendered>> = std::sync::OnceLock::new();
const RENDERED_BYTES: usize = 16 << 20;

#[derive(Default)]
struct Rendered {
    scripts: HashMap<String, Script>,
    bytes: usize,
}

/// Renders the script for a plan. Deterministic: the same plan and options give the same bytes.
/// The same script again comes from [`RENDERED`].
pub fn render(plan: &Plan, options: &RenderOptions) -> Script {
    let (key, literal_at, types) = render_key(plan, options);
    let kept = RENDERED.get_or_init(Default::default);
    let lock = || {
        kept.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    };
    if let Some(script) = lock().scripts.get(&key) {
        return script.clone();
    }
    let script = render_template(plan, &types, &key[literal_at..]);
    let size = key.len() + script.text.len();
    let mut kept = lock();
    // Another thread may have rendered the same meanwhile: it is kept once.
    if size <= RENDERED_BYTES / 4 && !kept.scripts.contains_key(&key) {
        if kept.bytes + size > RENDERED_BYTES {
            *kept = Rendered::default();
        }
        kept.bytes += size;
        kept.scripts.insert(key, script.clone());
    }
    script
}

/// What [`render`] would render, named without rendering it (hex sha256) for a cache that
/// keeps scripts across processes: the same plan and options in the same `build` give the same
/// key. `build` names the binary that renders: the runtime and templates are compiled into it,
/// so two builds of one version may render the same plan differently.
pub fn script_key(plan: &Plan, options: &RenderOptions, build: &str) -> String {
    let (key, _, _) = render_key(plan, options);
    let mut h = Sha256::new();
    h.update(build.as_bytes());
    h.update(b"\n");
    h.update(key.as_bytes());
    hex(&h.finalize())
}

/// [`render`] without what was rendered before: what a benchmark of rendering measures.
pub fn render_fresh(plan: &Plan, options: &RenderOptions) -> Script {
    let (key, literal_at, types) = render_key(plan, options);
    render_template(plan, &types, &key[literal_at..])
}

/// The key of [`RENDERED`], where the workflow literal starts in it, and the node types.
fn render_key(plan: &Plan, options: &RenderOptions) -> (String, usize, Vec<NodeType>) {
    let types = plan.used_node_types();
    let mut key = plan.workflow.id.clone();
    for t in &types {
        key.push(' ');
        key.push_str(t.name());
    }
    key.push('\n');
    let literal_at = key.len();
    pyliteral::emit(&workflow_data(plan, options), 0, &mut key);
    (key, literal_at, types)
}

fn render_template(plan: &Plan, types: &[NodeType], workflow: &str) -> Script {
    let env = environment();
    let node_modules: Vec<JValue> = types
        .iter()
        .map(|t| {
            // Type names are flowrun's own constants: printed as they are in comments.
            context! {
                name => JValue::from_safe_string(t.name().to_string()),
                source => JValue::from_safe_string(t.runtime_source().trim_end().to_string()),
            }
        })
        .collect();
    let text = env
        .get_template("script.py")
        .and_then(|t| {
            t.render(context! {
                version => JValue::from_safe_string(VERSION.to_string()),
                // Validated as [a-z0-9][a-z0-9_-]*, so it cannot break out of the comment.
                workflow_id => JValue::from_safe_string(plan.workflow.id.clone()),
                runtime_core => JValue::from_safe_string(runtime_core().to_string()),
                node_modules => node_modules,
                workflow => JValue::from_safe_string(workflow.to_string()),
            })
        })
        .expect("the script template renders");
    let mut text = text;
    if !text.ends_with('\n') {
        text.push('\n');
    }
    let sha256 = hex(&Sha256::digest(text.as_bytes()));
    Script { text, sha256 }
}

/// Lowercase hex of bytes.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The hash that identifies a definition snapshot: sha256 of its compact JSON.
pub fn definition_hash(definition: &Value) -> String {
    hex(&Sha256::digest(definition.to_string().as_bytes()))
}

#[cfg(test)]
mod tests;

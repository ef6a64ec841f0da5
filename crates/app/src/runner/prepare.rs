//! Everything that can fail before anything is spawned fails here: validation, pins, trigger
//! input, connections, the agent CLIs, the interpreter and its packages, writing the script.

use super::error::{RunError, Unbound};
use super::options::RunOptions;
use super::scripts::Script;
use super::trigger::{self, Trigger};
use crate::agents::{self, NeededAgent};
use crate::python::{self, Interpreter};
use crate::{paths, requirements};
use flowrun_codegen::{Plan, RenderOptions, Source};
use flowrun_executor::redact::{Redactor, SHORT_SECRET};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A run that is ready to start: valid, its input prepared, its script on disk.
pub struct Prepared {
    pub plan: Plan,
    pub source_file: Option<String>,
    pub definition: Value,
    pub snapshot_hash: String,
    /// The trigger data as the store keeps it: whole, or a truncation marker when it is over
    /// the store's field limit (see [`trigger`](super::trigger)).
    pub trigger: Value,
    /// The trigger data as the child reads it (JSON text), held once and shared.
    pub trigger_json: bytes::Bytes,
    pub script_path: PathBuf,
    /// What the interpreter runs: the compiled script when there is one, else `script_path`.
    pub run_path: PathBuf,
    /// The compiled script to make, when there is none yet: started as the run starts
    /// (`runner::run`), for the runs after it.
    pub bytecode: Option<super::bytecode::PendingBytecode>,
    pub interpreter: Interpreter,
    pub options: RunOptions,
    /// Bound connection variables `(VAR, value)` the child gets.
    pub secrets: Vec<(String, String)>,
    /// Things the person starting the run should know (printed by the CLI before it starts).
    pub warnings: Vec<String>,
    pub redactor: Redactor,
    /// What `redactor` redacts, `(VAR, value)`: the declared connections whose value is known,
    /// then the parent's (a sub-workflow's `parent_secrets`).
    pub redacted: Vec<(String, String)>,
}

/// Looks up a variable in `--env`/`--env-file` values (last wins), then in flowrun's environment.
fn lookup_env(options: &RunOptions, key: &str) -> Option<String> {
    options
        .env
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .or_else(|| std::env::var(key).ok())
        .filter(|v| !v.is_empty())
}

/// Binds every connection a node that will execute uses. Pinned and mocked nodes need none, nor
/// (offline) nodes that would make requests: they fail at once.
pub fn bind_connections(
    plan: &Plan,
    options: &RunOptions,
) -> Result<Vec<(String, String)>, Vec<Unbound>> {
    let mut unbound: BTreeMap<String, Unbound> = BTreeMap::new();
    let mut bound = Vec::new();
    for node in &plan.workflow.nodes {
        if node.pinned.is_some()
            || options.pins.contains_key(&node.id)
            || options.mocks.contains_key(&node.id)
            || (options.offline && flowrun_codegen::mock::makes_requests(node.kind.type_name()))
        {
            continue;
        }
        for (name, _) in node.kind.connections() {
            let Some(conn) = plan.workflow.connections.get(name) else {
                continue;
            };
            match lookup_env(options, &conn.env) {
                Some(v) => {
                    if !bound.iter().any(|(k, _): &(String, String)| *k == conn.env) {
                        bound.push((conn.env.clone(), v));
                    }
                }
                None => {
                    let u = unbound.entry(name.to_string()).or_insert_with(|| Unbound {
                        connection: name.to_string(),
                        env: conn.env.clone(),
                        nodes: Vec::new(),
                    });
                    if !u.nodes.contains(&node.id) {
                        u.nodes.push(node.id.clone());
                    }
                }
            }
        }
    }
    // A workflow that starts sub-workflows passes them its connections (README: a child's are
    // bound from what the parent's nodes see): those its own nodes do not use too, when they
    // have a value — a child that needs one without a value says so itself.
    if crate::subflow::has_sub_workflows(&plan.workflow) {
        for conn in plan.workflow.connections.values() {
            if !bound.iter().any(|(k, _): &(String, String)| *k == conn.env)
                && let Some(v) = lookup_env(options, &conn.env)
            {
                bound.push((conn.env.clone(), v));
            }
        }
    }
    if unbound.is_empty() {
        Ok(bound)
    } else {
        Err(unbound.into_values().collect())
    }
}

/// The agent CLIs that nodes which will run need and that are not there. They are looked for
/// as the child will look: names on the `PATH` it gets (an `--env` value, else flowrun's own),
/// paths relative to the directory it runs in.
pub fn missing_agents(plan: &Plan, options: &RunOptions) -> Vec<NeededAgent> {
    let given = options.env.iter().rev().find(|(k, _)| k == "PATH");
    let path = agents::search_path(given.map(|(_, v)| v.as_str()));
    let cwd = options
        .cwd
        .clone()
        .or_else(|| std::env::current_dir().ok())
        .unwrap_or_else(|| PathBuf::from("/"));
    agents::missing(
        plan,
        // Pinned, mocked and offline agent nodes never start their CLI.
        |node| {
            options.pins.contains_key(node) || options.mocks.contains_key(node) || options.offline
        },
        Some(&path),
        &cwd,
    )
}

/// [`nodes_directory`], which must exist.
fn working_directory(
    source: &Source,
    plan: &Plan,
    given: Option<&Path>,
) -> Result<PathBuf, RunError> {
    let dir = nodes_directory(given, &source.base_dir(), plan.workflow.cwd.as_deref());
    if !dir.is_dir() {
        return Err(RunError::Environment(format!(
            "the working directory {} does not exist (or is not a directory)",
            dir.display()
        )));
    }
    Ok(dir)
}

/// Where a workflow's nodes run: the directory the caller gives (`--cwd`, the API's `cwd`),
/// else the workflow's `cwd` relative to `base` (its file's directory: `Source::base_dir`),
/// else `base`. Absolute; it may not exist.
pub fn nodes_directory(given: Option<&Path>, base: &Path, cwd: Option<&str>) -> PathBuf {
    let here = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let dir = match (given, cwd) {
        (Some(d), _) => here.join(d),
        (None, Some(c)) => here.join(base).join(c),
        (None, None) => here.join(base),
    };
    std::path::absolute(&dir).unwrap_or(dir)
}

/// The longest `NAME=value` an exec takes, its NUL included (Linux: 32 pages).
const MAX_ENV_STRING: usize = 32 * 4096;

/// What the environment variables given may take together in an exec: `ARG_MAX` (read once)
/// less 64 KiB for flowrun's own variables and the interpreter's arguments.
fn exec_room() -> usize {
    static ROOM: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *ROOM.get_or_init(|| {
        // SAFETY: sysconf reads a limit.
        let max = usize::try_from(unsafe { libc::sysconf(libc::_SC_ARG_MAX) })
            .ok()
            .filter(|&n| n > 0)
            .unwrap_or(128 << 10);
        max.saturating_sub(64 << 10)
    })
}

/// Validates the workflow and its input; everything that can fail before spawning fails here.
pub fn prepare(
    source: &Source,
    trigger: impl Into<Trigger>,
    options: RunOptions,
) -> Result<Prepared, RunError> {
    // The trigger is checked once the plan is compiled and the script rendered: the first check
    // of a process waits for its draft's meta-schema validator, built meanwhile
    // (`inputs::start_meta_schema`).
    let meta_schema = source
        .definition
        .get("inputs")
        .filter(|s| !s.is_null())
        .and_then(crate::inputs::start_meta_schema);
    let plan = flowrun_codegen::compile(source).map_err(RunError::Invalid)?;
    for pin in options.pins.keys() {
        if plan.workflow.node(pin).is_none() {
            return Err(RunError::UnknownPin {
                node: pin.clone(),
                nodes: plan.workflow.nodes.iter().map(|n| n.id.clone()).collect(),
            });
        }
    }
    if let Some(node) = options
        .break_before
        .iter()
        .find(|n| plan.workflow.node(n).is_none())
    {
        return Err(RunError::UnknownBreakpoint {
            node: node.clone(),
            nodes: plan.workflow.nodes.iter().map(|n| n.id.clone()).collect(),
        });
    }
    if options.timeout_ms == Some(0) {
        // As the workflow's own `timeout_ms` is checked: 0 would end every execution at once.
        return Err(RunError::Invalid(
            flowrun_codegen::Diagnostic::new("a timeout is at least 1 ms, not 0").into(),
        ));
    }
    if let Some(v) = options.max_cost_usd
        && !(v.is_finite() && v >= 0.0)
    {
        let message = format!("a cost limit is a number of US dollars ≥ 0, not {v}");
        return Err(RunError::Invalid(
            flowrun_codegen::Diagnostic::new(message).into(),
        ));
    }
    // A limit given for the run (the workflow's own is checked with the workflow) holds only if
    // every call counts.
    if options.max_cost_usd.is_some()
        && let Some((node, model)) = flowrun_codegen::unpriced_llm_nodes(&plan.workflow).first()
    {
        let message = format!(
            "node '{node}': {}",
            flowrun_codegen::unpriced_message(model)
        );
        return Err(RunError::Invalid(
            flowrun_codegen::Diagnostic::new(message).into(),
        ));
    }
    // A name with '=' would reach a cold child as another variable (`A=B=v` is `A`) and make a
    // warm one fail; a NUL cannot be passed at all.
    if let Some((name, _)) = options
        .env
        .iter()
        .find(|(k, v)| k.is_empty() || k.contains(['=', '\0']) || v.contains('\0'))
    {
        let message = format!(
            "{name:?} cannot be passed as an environment variable: a name is not empty and has no '=', and neither name nor value has a NUL character"
        );
        return Err(RunError::Invalid(
            flowrun_codegen::Diagnostic::new(message).into(),
        ));
    }
    // The kernel takes no longer `NAME=value` string in an exec (MAX_ARG_STRLEN): a cold start
    // would fail to spawn, a warm one (its environment comes on stdin) would not.
    if let Some((name, value)) = options
        .env
        .iter()
        .find(|(k, v)| k.len() + v.len() + 2 > MAX_ENV_STRING)
    {
        let message = format!(
            "{name:?} cannot be passed as an environment variable: its value is {} bytes, and a variable is at most {} KiB (name=value)",
            value.len(),
            MAX_ENV_STRING >> 10
        );
        return Err(RunError::Invalid(
            flowrun_codegen::Diagnostic::new(message).into(),
        ));
    }
    // Nor more of them together than an exec takes (ARG_MAX: a quarter of the stack limit,
    // each string's pointer included), with room for what flowrun adds to them.
    let together: usize = options
        .env
        .iter()
        .map(|(k, v)| k.len() + v.len() + 2 + 8)
        .sum();
    let room = exec_room();
    if together > room {
        let message = format!(
            "the environment variables given are {} KiB together, and an exec takes at most {} KiB of them here (ARG_MAX, less what flowrun adds)",
            together >> 10,
            room >> 10
        );
        return Err(RunError::Invalid(
            flowrun_codegen::Diagnostic::new(message).into(),
        ));
    }
    if let Some(node) = options
        .mocks
        .keys()
        .find(|m| plan.workflow.node(m).is_none())
    {
        let message = format!("the workflow has no node '{node}' to mock");
        return Err(RunError::Invalid(
            flowrun_codegen::Diagnostic::new(message).into(),
        ));
    }
    let render_options = RenderOptions {
        pins: options.pins.clone(),
        reused_items: options.reused_items.clone(),
        max_parallel: options.max_parallel,
        mocks: options.mocks.clone(),
        offline: options.offline,
        break_before: options.break_before.clone(),
        max_cost_usd: options.max_cost_usd,
        cost_limit_is_share: options.cost_limit_is_share,
    };
    // A workflow that ran before with this build has its script in the cache already: looked up
    // (nothing is written before the trigger is checked), else rendered while the meta-schema
    // thread works.
    let cache = paths::cache_dir();
    let key = super::scripts::key(&plan, &render_options);
    let cached = key
        .as_deref()
        .and_then(|key| super::scripts::cached(&cache, key));
    let script = match cached {
        Some(path) => Script::Cached(path),
        None => Script::Rendered(flowrun_codegen::render(&plan, &render_options)),
    };
    if let Some(thread) = meta_schema {
        let _ = thread.join();
    }
    // Before anything else can fail (a refused trigger is the caller's error, reported as such:
    // exit 2, 422) and before anything is written, probed or installed.
    let mut checked = trigger::check(plan.workflow.inputs.as_ref(), trigger.into())?;
    let mut options = options;
    options.cwd = Some(working_directory(source, &plan, options.cwd.as_deref())?);
    let secrets = bind_connections(&plan, &options).map_err(RunError::Unbound)?;
    let missing = missing_agents(&plan, &options);
    if !missing.is_empty() {
        return Err(RunError::MissingAgents(missing));
    }
    // Redact every declared connection whose value is known, used by a node or not: with
    // --inherit-env the child sees them all.
    let mut known: Vec<(String, String)> = secrets.clone();
    for conn in plan.workflow.connections.values() {
        if let Some(v) = lookup_env(&options, &conn.env) {
            if !known.iter().any(|(k, _)| *k == conn.env) {
                known.push((conn.env.clone(), v));
            }
        }
    }
    let own = known.len();
    for (k, v) in &options.parent_secrets {
        if !known.iter().any(|(kk, vv)| kk == k && vv == v) {
            known.push((k.clone(), v.clone()));
        }
    }
    let redactor = Redactor::new(&known);
    // The parent warned of its own short secrets.
    let warnings = known[..own]
        .iter()
        .filter(|(_, v)| v.chars().count() < SHORT_SECRET)
        .map(|(k, v)| {
            format!(
                "{k} is only {} characters long: every occurrence of that text in output strings, logs and errors will read [REDACTED:{k}] (object keys and numbers are left as they are)",
                v.chars().count()
            )
        })
        .collect();
    let stored_trigger = trigger::stored(&mut checked, &redactor);
    let interpreter = python::discover(options.python.as_deref(), &cache)?;
    let reqs = plan.requirements();
    let interpreter = match requirements::resolve(&cache, &interpreter, &reqs) {
        Ok(i) => i,
        Err(Err(e)) => return Err(RunError::Environment(e)),
        Err(Ok(_)) if options.install_deps => {
            requirements::install(&cache, &interpreter, &reqs).map_err(RunError::Environment)?
        }
        Err(Ok(missing)) => return Err(RunError::MissingPackages(missing)),
    };
    let script_path = match script {
        Script::Cached(path) => path,
        Script::Rendered(script) => {
            super::scripts::write(&cache, key.as_deref(), &script.sha256, &script.text).map_err(
                |e| {
                    RunError::Environment(format!(
                        "cannot write the script to {}: {e}",
                        cache.display()
                    ))
                },
            )?
        }
    };
    let (run_path, bytecode) = super::bytecode::run_path(&interpreter, &script_path);
    Ok(Prepared {
        snapshot_hash: flowrun_codegen::render::definition_hash(&source.definition),
        definition: source.definition.clone(),
        // Absolute, so a later `rerun`/`resume` from another directory still finds the file.
        source_file: Some(source.file.clone())
            .filter(|f| !f.starts_with('<'))
            .map(|f| match std::path::absolute(&f) {
                Ok(p) => p.display().to_string(),
                Err(_) => f,
            }),
        plan,
        trigger: stored_trigger,
        trigger_json: checked.json,
        run_path,
        bytecode,
        script_path,
        interpreter,
        options,
        secrets,
        warnings,
        redactor,
        redacted: known,
    })
}

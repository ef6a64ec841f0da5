//! One execution from start to end: validate, render, find Python, record, execute, finish.
//!
//! This is the glue between the parts: codegen makes the script, the executor runs it, the
//! recorder writes what happens to the store. The CLI and the HTTP server both start executions
//! through here, so they behave the same.

use crate::SharedStore;
use crate::inputs;
use crate::paths;
use crate::python::{self, Interpreter};
use crate::recorder::Recorder;
use crate::requirements;
use flowrun_codegen::model::NodeKind;
use flowrun_codegen::{Diagnostics, Pin, Plan, RenderOptions, Source};
use flowrun_events::{ErrorInfo, ExecStatus, now_ms};
use flowrun_executor::redact::Redactor;
use flowrun_executor::{self, Fanout, Outcome, RunSpec, Sink, StopReason, process::Launch};
use flowrun_store::{Finish, NewExecution};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::watch;

/// Secrets shorter than this are still redacted, with a warning: short values like `test` also
/// occur in ordinary text, which then reads `[REDACTED:…]`.
const SHORT_SECRET: usize = 8;

/// Default whole-execution timeout when neither the workflow nor the caller sets one.
pub const DEFAULT_TIMEOUT_MS: u64 = 60_000;

/// How much later than a node's `timeout_ms` the runner kills a node that times its own call
/// (HTTP, LLM, command), so the call's own timeout fires first and can be retried.
pub const OWN_CALL_SLACK_MS: u64 = 500;

/// What a caller can vary about a run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub python: Option<PathBuf>,
    pub timeout_ms: Option<u64>,
    pub kill_grace_ms: u64,
    pub max_log_bytes: u64,
    pub max_memory_mb: Option<u64>,
    /// `--env K=V` and `--env-file` values, in order.
    pub env: Vec<(String, String)>,
    pub inherit_env: bool,
    pub pins: BTreeMap<String, Pin>,
    pub mode: String,
    /// Re-run or resume of this execution.
    pub parent: Option<(String, &'static str)>,
    pub cwd: Option<PathBuf>,
    /// Install missing `requirements` into a managed virtual environment instead of failing.
    pub install_deps: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            python: None,
            timeout_ms: None,
            kill_grace_ms: 2000,
            max_log_bytes: 10 << 20,
            max_memory_mb: None,
            env: Vec::new(),
            inherit_env: false,
            pins: BTreeMap::new(),
            mode: "test".into(),
            parent: None,
            cwd: None,
            install_deps: false,
        }
    }
}

/// Why a run could not start. Each maps to an exit code of `flowrun run`.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Invalid(Diagnostics),
    #[error("{0}")]
    Input(#[from] inputs::InputError),
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Python(#[from] python::PythonError),
    #[error("{0}")]
    Environment(String),
    #[error("{}", unbound_message(.0))]
    Unbound(Vec<Unbound>),
    #[error("{}", missing_message(.0))]
    MissingPackages(Vec<requirements::Missing>),
}

fn missing_message(list: &[requirements::Missing]) -> String {
    let one = list.len() == 1;
    let mut s = if one {
        "the workflow needs a Python package that is not installed:".to_string()
    } else {
        "the workflow needs Python packages that are not installed:".to_string()
    };
    for m in list {
        s.push_str(&format!("\n  {} ({})", m.requirement, m.reason));
    }
    let reqs: Vec<String> = list
        .iter()
        .map(|m| format!("'{}'", m.requirement))
        .collect();
    s.push_str(&format!(
        "\ninstall {} into a managed environment with `flowrun doctor --fix FILE` or `flowrun run --install-deps FILE`,\nor into your interpreter with: python3 -m pip install {}",
        if one { "it" } else { "them" },
        reqs.join(" ")
    ));
    s
}

impl RunError {
    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::Invalid(_) | RunError::Input(_) | RunError::Usage(_) => 2,
            RunError::Python(_)
            | RunError::Environment(_)
            | RunError::Unbound(_)
            | RunError::MissingPackages(_) => 3,
        }
    }
}

/// A run that is ready to start: valid, its input prepared, its script on disk.
pub struct Prepared {
    pub plan: Plan,
    pub source_file: Option<String>,
    pub definition: Value,
    pub snapshot_hash: String,
    pub trigger: Value,
    pub script_path: PathBuf,
    /// What the interpreter runs: the compiled script when there is one, else `script_path`.
    pub run_path: PathBuf,
    pub interpreter: Interpreter,
    pub options: RunOptions,
    /// Bound connection variables `(VAR, value)` the child gets.
    pub secrets: Vec<(String, String)>,
    /// Things the person starting the run should know (printed by the CLI before it starts).
    pub warnings: Vec<String>,
    pub redactor: Redactor,
}

/// A connection that a node needs and nothing binds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unbound {
    pub connection: String,
    pub env: String,
    pub nodes: Vec<String>,
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

/// Binds every connection a node that will execute uses. Pinned nodes need none.
pub fn bind_connections(
    plan: &Plan,
    options: &RunOptions,
) -> Result<Vec<(String, String)>, Vec<Unbound>> {
    let mut unbound: BTreeMap<String, Unbound> = BTreeMap::new();
    let mut bound = Vec::new();
    for node in &plan.workflow.nodes {
        if node.pinned.is_some() || options.pins.contains_key(&node.id) {
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
    if unbound.is_empty() {
        Ok(bound)
    } else {
        Err(unbound.into_values().collect())
    }
}

/// One message naming every unbound connection and the variable to set.
pub fn unbound_message(list: &[Unbound]) -> String {
    let mut s = format!(
        "{} not bound; set {} (in the environment, with --env KEY=VALUE or in an --env-file):",
        if list.len() == 1 {
            "a connection is".to_string()
        } else {
            format!("{} connections are", list.len())
        },
        if list.len() == 1 {
            "its variable"
        } else {
            "their variables"
        }
    );
    for u in list {
        let nodes: Vec<String> = u.nodes.iter().map(|n| format!("'{n}'")).collect();
        s.push_str(&format!(
            "\n  {}: set {} (used by node{} {})",
            u.connection,
            u.env,
            if u.nodes.len() == 1 { "" } else { "s" },
            nodes.join(", ")
        ));
    }
    s
}

/// Validates the workflow and its input; everything that can fail before spawning fails here.
pub fn prepare(source: &Source, trigger: Value, options: RunOptions) -> Result<Prepared, RunError> {
    let plan = flowrun_codegen::compile(source).map_err(RunError::Invalid)?;
    for pin in options.pins.keys() {
        if plan.workflow.node(pin).is_none() {
            let ids: Vec<&str> = plan.workflow.nodes.iter().map(|n| n.id.as_str()).collect();
            return Err(RunError::Usage(format!(
                "--pin: the workflow has no node '{pin}'; its nodes are: {}",
                ids.join(", ")
            )));
        }
    }
    let trigger = inputs::prepare(plan.workflow.inputs.as_ref(), trigger)?;
    let secrets = bind_connections(&plan, &options).map_err(RunError::Unbound)?;
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
    let redactor = Redactor::new(&known);
    let warnings = known
        .iter()
        .filter(|(_, v)| v.chars().count() < SHORT_SECRET)
        .map(|(k, v)| {
            format!(
                "{k} is only {} characters long: every occurrence of that text in outputs, logs and errors will read [REDACTED:{k}]",
                v.chars().count()
            )
        })
        .collect();
    let cache = paths::cache_dir();
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
    let script = flowrun_codegen::render(
        &plan,
        &RenderOptions {
            pins: options.pins.clone(),
        },
    );
    let script_path = write_script(&cache, &script.sha256, &script.text).map_err(|e| {
        RunError::Environment(format!(
            "cannot write the script to {}: {e}",
            cache.display()
        ))
    })?;
    Ok(Prepared {
        snapshot_hash: flowrun_codegen::render::definition_hash(&source.definition),
        definition: source.definition.clone(),
        source_file: Some(source.file.clone()).filter(|f| !f.starts_with('<')),
        plan,
        trigger,
        run_path: compiled_script(&interpreter, &script_path)
            .unwrap_or_else(|| script_path.clone()),
        script_path,
        interpreter,
        options,
        secrets,
        warnings,
        redactor,
    })
}

/// The script compiled to bytecode for this interpreter, next to it in the cache
/// (`<sha256>.<impl>-<major><minor>.pyc`), compiled on first use. Running the `.pyc` saves the
/// interpreter compiling the ~40 KB script on every run (~7 ms here). `None` when compiling is
/// not possible; the `.py` then runs as it is.
fn compiled_script(interp: &Interpreter, script: &Path) -> Option<PathBuf> {
    let (major, minor, _) = interp.version;
    let tag = format!("{}-{major}{minor}", interp.implementation);
    let pyc = script.with_extension(format!("{tag}.pyc"));
    if pyc.is_file() {
        return Some(pyc);
    }
    let status = std::process::Command::new(&interp.executable)
        .args([
            "-I",
            "-S",
            "-c",
            "import py_compile, sys; py_compile.compile(sys.argv[1], cfile=sys.argv[2], doraise=True)",
        ])
        .arg(script)
        .arg(&pyc)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .ok()?;
    (status.success() && pyc.is_file()).then_some(pyc)
}

/// Scripts are content-addressed: `<cache>/scripts/<sha256>.py`, 0600 in a 0700 directory.
fn write_script(cache: &Path, sha: &str, text: &str) -> std::io::Result<PathBuf> {
    let dir = cache.join("scripts");
    let path = dir.join(format!("{sha}.py"));
    if path.is_file() {
        return Ok(path);
    }
    paths::private_dir(cache)?;
    paths::private_dir(&dir)?;
    paths::write_private(&path, text.as_bytes())?;
    Ok(path)
}

/// A new execution id: 16 random hex digits (prefixes work like git's).
pub fn new_execution_id() -> String {
    let n: u64 = rand::random();
    format!("{n:016x}")
}

/// The child's environment: a small base, `FLOWRUN_*`, then `--env` values; or everything with
/// `--inherit-env`.
fn child_env(p: &Prepared, execution_id: &str) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    if p.options.inherit_env {
        env.extend(std::env::vars().filter(|(k, _)| !k.starts_with("FLOWRUN_")));
    } else {
        for key in ["PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR"] {
            if let Ok(v) = std::env::var(key) {
                env.push((key.to_string(), v));
            }
        }
        if !env.iter().any(|(k, _)| k == "PATH") {
            env.push(("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()));
        }
    }
    // Provider endpoints set for tests and proxies (FLOWRUN_GROQ_BASE_URL, …) pass through.
    env.extend(
        std::env::vars().filter(|(k, _)| k.starts_with("FLOWRUN_") && k.ends_with("_BASE_URL")),
    );
    for (k, v) in &p.secrets {
        env.retain(|(ek, _)| ek != k);
        env.push((k.clone(), v.clone()));
    }
    env.push(("FLOWRUN_EXECUTION_ID".into(), execution_id.to_string()));
    env.push(("FLOWRUN_WORKFLOW_ID".into(), p.plan.workflow.id.clone()));
    env.push(("FLOWRUN_MODE".into(), p.options.mode.clone()));
    env.push((
        "FLOWRUN_MAX_PAYLOAD_BYTES".into(),
        flowrun_store::DEFAULT_MAX_FIELD_BYTES.to_string(),
    ));
    for (k, v) in &p.options.env {
        env.retain(|(ek, _)| ek != k);
        env.push((k.clone(), v.clone()));
    }
    env
}

/// The id and the spec of an execution about to run.
pub fn spec(p: &Prepared, execution_id: &str) -> RunSpec {
    let wf = &p.plan.workflow;
    let mut args = vec!["-I".to_string()];
    if p.plan.requirements().is_empty() {
        // No third-party packages: skip `site` too (user-site and .pth files cost ~100 ms and
        // can change behaviour).
        args.push("-S".into());
    }
    args.push("-u".into());
    args.push(p.run_path.display().to_string());
    let timeout_ms = p
        .options
        .timeout_ms
        .or(wf.timeout_ms)
        .unwrap_or(DEFAULT_TIMEOUT_MS);
    RunSpec {
        execution_id: execution_id.to_string(),
        workflow_id: wf.id.clone(),
        workflow_name: wf.display_name().to_string(),
        mode: p.options.mode.clone(),
        nodes: p.plan.ordered_nodes().map(|n| n.id.clone()).collect(),
        node_timeouts: wf
            .nodes
            .iter()
            .filter_map(|n| {
                n.timeout_ms
                    .map(|t| (n.id.clone(), Duration::from_millis(t)))
            })
            .collect(),
        node_grace: wf
            .nodes
            .iter()
            .filter(|n| n.kind.times_own_call())
            .map(|n| (n.id.clone(), Duration::from_millis(OWN_CALL_SLACK_MS)))
            .collect(),
        launch: Launch {
            program: p.interpreter.executable.clone(),
            args,
            env: child_env(p, execution_id),
            cwd: p.options.cwd.clone(),
            max_memory: p.options.max_memory_mb.map(|mb| mb << 20),
        },
        trigger: serde_json::to_vec(&p.trigger).expect("trigger serializes"),
        nonce: format!("{:032x}", rand::random::<u128>()),
        timeout: Duration::from_millis(timeout_ms),
        kill_grace: Duration::from_millis(p.options.kill_grace_ms),
        max_log_bytes: p.options.max_log_bytes,
        max_line_bytes: 64 * 1024,
        redactor: p.redactor.clone(),
    }
}

/// Writes the execution row (`running`), so it is visible before the child starts.
pub fn record_start(
    store: &SharedStore,
    p: &Prepared,
    execution_id: &str,
    status: ExecStatus,
) -> Result<(), RunError> {
    let wf = &p.plan.workflow;
    let runner_pid = std::process::id() as i32;
    let trigger: Value = if p.redactor.is_empty() {
        p.trigger.clone()
    } else {
        serde_json::from_str(&p.redactor.text(p.trigger.to_string())).unwrap_or(Value::Null)
    };
    store
        .lock()
        .insert_execution(&NewExecution {
            id: execution_id,
            workflow_id: &wf.id,
            workflow_name: wf.display_name(),
            snapshot_hash: &p.snapshot_hash,
            definition: &p.definition,
            source_file: p.source_file.as_deref(),
            mode: &p.options.mode,
            status,
            trigger: &trigger,
            started_at: now_ms(),
            parent_id: p.options.parent.as_ref().map(|(id, _)| id.as_str()),
            relation: p.options.parent.as_ref().map(|(_, r)| *r),
            runner_pid,
            runner_start_time: flowrun_executor::process::process_start_time(runner_pid),
        })
        .map_err(|e| RunError::Environment(e.to_string()))
}

/// Runs a prepared execution whose row exists, recording everything; `viewers` see the events
/// too. Returns the outcome once the row holds the final state.
pub async fn run(
    store: &SharedStore,
    p: &Prepared,
    execution_id: &str,
    viewers: &mut dyn Sink,
    stop: watch::Receiver<Option<StopReason>>,
) -> Outcome {
    let spec = spec(p, execution_id);
    let metered = p
        .plan
        .workflow
        .nodes
        .iter()
        .filter(|n| matches!(n.kind, NodeKind::Llm(_)))
        .map(|n| n.id.clone())
        .collect();
    let mut recorder = Recorder::new(store.clone(), execution_id, &spec.nodes, metered);
    let outcome = {
        let mut sinks = Fanout(vec![&mut recorder, viewers]);
        flowrun_executor::execute(&spec, &mut sinks, stop).await
    };
    let mut outcome = outcome;
    if let Some(e) = recorder.error.take() {
        tracing::warn!("recording execution {execution_id}: {e}");
        if outcome.error.is_none() {
            outcome.error = Some(ErrorInfo::new("StoreError", e));
        }
    }
    let res = store.lock().finish_execution(
        execution_id,
        &Finish {
            status: outcome.status,
            output: outcome.output.as_ref(),
            error: outcome.error.as_ref(),
            finished_at: now_ms(),
            duration_ms: outcome.duration_ms,
            exit: outcome.exit.as_deref(),
            log_bytes: outcome.log_bytes,
            log_bytes_cut: outcome.log_bytes_cut,
            usage: recorder.usage(),
        },
    );
    if let Err(e) = res {
        tracing::error!("recording the end of execution {execution_id}: {e}");
    }
    outcome
}

/// The exit code of `flowrun run` for an execution's status.
pub fn exit_code(status: ExecStatus) -> i32 {
    match status {
        ExecStatus::Success => 0,
        ExecStatus::Timeout => 124,
        ExecStatus::Cancelled | ExecStatus::Interrupted => 130,
        _ => 1,
    }
}

/// Where a re-run or resume takes its definition from.
#[derive(Debug, Clone)]
pub enum AgainSource<'a> {
    /// The definition the earlier execution ran (its snapshot in the store).
    Snapshot,
    /// A workflow file (`--file`).
    File(&'a Path),
    /// A definition sent as data (the HTTP API's `workflow`).
    Definition(Value),
}

/// A re-run or resume, worked out and ready for [`prepare`].
#[derive(Debug)]
pub struct AgainPlan {
    /// The earlier execution (full id).
    pub previous_id: String,
    pub source: Source,
    pub trigger: Value,
    /// The caller's options plus the reused outputs (resume) and the parent link.
    pub options: RunOptions,
    /// What `resume` tells the user: which nodes run again and why, which are reused.
    pub notes: Vec<String>,
}

/// Why a re-run or resume cannot start.
#[derive(Debug, thiserror::Error)]
pub enum AgainError {
    #[error(transparent)]
    Store(#[from] flowrun_store::StoreError),
    #[error("execution {id} is still {status}; wait for it or stop it first")]
    NotFinished { id: String, status: ExecStatus },
    #[error("the definition execution {0} ran is missing from the store")]
    MissingSnapshot(String),
    #[error("{0}")]
    Invalid(Diagnostics),
    #[error(
        "the trigger data of execution {id} ({bytes} bytes) was over the storage limit and was not stored in full; pass the trigger data again (--input-file F)"
    )]
    TriggerTruncated { id: String, bytes: u64 },
}

impl AgainError {
    /// The exit code `flowrun rerun`/`resume` uses for it.
    pub fn exit_code(&self) -> i32 {
        match self {
            AgainError::Store(
                flowrun_store::StoreError::NotFound(_)
                | flowrun_store::StoreError::Ambiguous { .. },
            ) => 2,
            AgainError::Store(_) | AgainError::MissingSnapshot(_) => 3,
            AgainError::NotFinished { .. }
            | AgainError::Invalid(_)
            | AgainError::TriggerTruncated { .. } => 2,
        }
    }
}

/// The shared part of `rerun` and `resume` (CLI and HTTP API): finds the earlier execution
/// (`id` or a unique prefix), checks it has ended, takes its definition (or `source`) and its
/// trigger data (unless `trigger` is given), and for a resume pins the outputs it can reuse.
/// Reads the store only; [`prepare`] comes next.
pub fn plan_again(
    store: &flowrun_store::Store,
    id: &str,
    source: AgainSource<'_>,
    trigger: Option<Value>,
    mut options: RunOptions,
    resume: bool,
) -> Result<AgainPlan, AgainError> {
    let id = store.resolve_id(id)?;
    let previous = store.execution(&id)?;
    if !previous.status.is_final() {
        return Err(AgainError::NotFinished {
            id,
            status: previous.status,
        });
    }
    let previous_definition = store
        .snapshot(&previous.snapshot_hash)?
        .ok_or_else(|| AgainError::MissingSnapshot(id.clone()))?;
    let from_snapshot = matches!(source, AgainSource::Snapshot);
    let source = match source {
        AgainSource::File(f) => flowrun_codegen::load_file(f).map_err(AgainError::Invalid)?,
        AgainSource::Snapshot => flowrun_codegen::source::from_value(
            previous_definition.clone(),
            &format!("<execution {id}>"),
        )
        .map_err(AgainError::Invalid)?,
        AgainSource::Definition(v) => {
            flowrun_codegen::source::from_value(v, "<request>").map_err(AgainError::Invalid)?
        }
    };
    let trigger = match trigger {
        Some(t) => t,
        // What was stored is a truncation marker, not the data: never run with it.
        None if previous.trigger.get("$flowrun_truncated") == Some(&Value::Bool(true)) => {
            return Err(AgainError::TriggerTruncated {
                bytes: previous.trigger["bytes"].as_u64().unwrap_or(0),
                id,
            });
        }
        None => previous.trigger.clone(),
    };
    let mut notes = Vec::new();
    if from_snapshot {
        // The file may have been fixed since: say so rather than silently run the old version.
        if let Some(file) = previous.source_file.as_deref() {
            let changed = flowrun_codegen::load_file(Path::new(file))
                .map(|now| {
                    flowrun_codegen::render::definition_hash(&now.definition)
                        != previous.snapshot_hash
                })
                .unwrap_or(false);
            if changed {
                notes.push(format!(
                    "note: {file} has changed since execution {id} ran; this runs the definition it ran (add --file {file} for the new one)"
                ));
            }
        }
    }
    if resume && previous.status == ExecStatus::Success {
        notes.push(format!(
            "note: execution {id} succeeded, so every node is reused; `flowrun rerun {id}` runs them all again"
        ));
    }
    if resume {
        let plan = flowrun_codegen::compile(&source).map_err(AgainError::Invalid)?;
        let rows = store.nodes(&id)?;
        let r = crate::resume::plan_resume(
            &id,
            &rows,
            &previous_definition,
            &plan,
            &source.definition,
            &options.pins,
            trigger != previous.trigger,
        );
        for (node, why) in &r.reruns {
            let why = match why {
                crate::resume::Rerun::NoOutput(s) if s == "did not run" => {
                    format!("it did not run in {id}")
                }
                crate::resume::Rerun::NoOutput(s) => format!("it ended {s} in {id}"),
                crate::resume::Rerun::Changed => "its definition changed".into(),
                crate::resume::Rerun::New => "it is new".into(),
                crate::resume::Rerun::Upstream(u) => format!("'{u}' runs again"),
                crate::resume::Rerun::Repinned(u) => format!("'{u}' is pinned to a new output"),
                crate::resume::Rerun::TriggerChanged => {
                    "it reads the trigger data, which changed".into()
                }
                crate::resume::Rerun::Truncated => {
                    format!("its output in {id} was too large to store whole")
                }
            };
            notes.push(format!("resume: '{node}' runs ({why})"));
        }
        if !r.pins.is_empty() {
            let names: Vec<&str> = r.pins.keys().map(String::as_str).collect();
            notes.push(format!("resume: reusing {} from {id}", names.join(", ")));
        }
        for (node, pin) in r.pins {
            options.pins.entry(node).or_insert(pin);
        }
    }
    options.parent = Some((id.clone(), if resume { "resume" } else { "rerun" }));
    Ok(AgainPlan {
        previous_id: id,
        source,
        trigger,
        options,
        notes,
    })
}

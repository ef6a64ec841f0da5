//! `flowrun run` and `flowrun stop`.

use super::exit;
use super::progress::{Jsonl, Terminal};
use super::{Exit, open_store};
use clap::{Args, ValueEnum};
use flowrun_app::SharedStore;
use flowrun_app::again::{self, AgainSource};
use flowrun_app::control::StopOutcome;
use flowrun_app::runner::{self, RunOptions};
use flowrun_codegen::Pin;
use flowrun_events::ExecStatus;
use flowrun_executor::{Sink, StopReason};
use serde_json::Value;
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use tokio::sync::watch;

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Workflow file (.json, .yaml or .yml).
    pub file: PathBuf,
    #[command(flatten)]
    pub exec: ExecArgs,
}

/// What every command that starts an execution (`run`, `rerun`, `resume`) takes.
#[derive(Args, Debug)]
pub struct ExecArgs {
    /// Trigger data as JSON.
    #[arg(long, value_name = "JSON", conflicts_with = "input_file")]
    pub input: Option<String>,
    /// Trigger data from a JSON file (`-` for stdin).
    #[arg(long, value_name = "FILE")]
    pub input_file: Option<PathBuf>,
    /// Whole-execution timeout (default: the workflow's `timeout_ms`, else 60000).
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_ms: Option<u64>,
    /// Time between SIGTERM and SIGKILL when stopping.
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    pub kill_grace_ms: u64,
    /// Environment variable for the workflow (repeatable).
    #[arg(long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// dotenv file with environment variables for the workflow (repeatable).
    #[arg(long = "env-file", value_name = "FILE")]
    pub env_file: Vec<PathBuf>,
    /// Pass flowrun's whole environment to the workflow (default: a small base only).
    #[arg(long)]
    pub inherit_env: bool,
    /// Use the JSON in FILE as NODE's output instead of running it (repeatable).
    #[arg(long = "pin", value_name = "NODE=FILE")]
    pub pin: Vec<String>,
    /// Print events as JSON lines on stdout instead of the progress display.
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub events: Option<EventFormat>,
    /// Print the finished execution record as JSON on stdout.
    #[arg(long, conflicts_with = "events")]
    pub json: bool,
    /// Python interpreter (default: $FLOWRUN_PYTHON, $VIRTUAL_ENV, python3 then python on PATH).
    #[arg(long, value_name = "PATH")]
    pub python: Option<PathBuf>,
    /// Cap on stored log bytes per execution (each line also costs 64 bytes of overhead, so a
    /// flood of empty lines is bounded too); the rest is counted.
    #[arg(long, value_name = "BYTES", default_value_t = 10 << 20)]
    pub max_log_bytes: u64,
    /// Install missing `requirements` into a managed virtual environment first.
    #[arg(long)]
    pub install_deps: bool,
    /// Address-space limit for the workflow's process, in MiB.
    #[arg(long, value_name = "MB")]
    pub max_memory_mb: Option<u64>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventFormat {
    Jsonl,
}

/// The trigger data given with `--input`/`--input-file`, if any.
fn given_trigger(args: &ExecArgs) -> Result<Option<Value>, Exit> {
    if let Some(s) = &args.input {
        return parse_json(s, "--input").map(Some);
    }
    if let Some(f) = &args.input_file {
        let text = if f.as_os_str() == "-" {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(|e| Exit::new(2, format!("reading stdin: {e}")))?;
            s
        } else {
            std::fs::read_to_string(f)
                .map_err(|e| Exit::new(2, format!("cannot read {}: {e}", f.display())))?
        };
        return parse_json(&text, &f.display().to_string()).map(Some);
    }
    Ok(None)
}

fn parse_json(text: &str, what: &str) -> Result<Value, Exit> {
    if text.trim().is_empty() {
        return Ok(Value::Object(Default::default()));
    }
    serde_json::from_str(text).map_err(|e| Exit::new(2, format!("{what} is not valid JSON: {e}")))
}

/// `run`'s trigger data: `--input`, `--input-file`, else stdin when it is not a terminal.
fn read_trigger(args: &ExecArgs) -> Result<Value, Exit> {
    if let Some(v) = given_trigger(args)? {
        return Ok(v);
    }
    if std::io::stdin().is_terminal() {
        return Ok(Value::Object(Default::default()));
    }
    let mut s = String::new();
    std::io::stdin()
        .read_to_string(&mut s)
        .map_err(|e| Exit::new(2, format!("reading stdin: {e}")))?;
    parse_json(&s, "the trigger data on stdin")
}

/// Parses a dotenv file: `KEY=value` lines, `#` comments, optional `export `, optional quotes.
pub fn parse_env_file(text: &str, file: &Path) -> Result<Vec<(String, String)>, Exit> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((k, v)) = line.split_once('=') else {
            return Err(Exit::new(
                2,
                format!("{}:{}: expected KEY=VALUE", file.display(), i + 1),
            ));
        };
        let v = v.trim();
        let v = if v.len() >= 2
            && ((v.starts_with('"') && v.ends_with('"'))
                || (v.starts_with('\'') && v.ends_with('\'')))
        {
            let inner = &v[1..v.len() - 1];
            if v.starts_with('"') {
                inner
                    .replace("\\n", "\n")
                    .replace("\\\"", "\"")
                    .replace("\\\\", "\\")
            } else {
                inner.to_string()
            }
        } else {
            v.split(" #").next().unwrap_or(v).trim().to_string()
        };
        out.push((k.trim().to_string(), v));
    }
    Ok(out)
}

fn options(args: &ExecArgs) -> Result<RunOptions, Exit> {
    let mut env = Vec::new();
    for f in &args.env_file {
        let text = std::fs::read_to_string(f)
            .map_err(|e| Exit::new(2, format!("cannot read --env-file {}: {e}", f.display())))?;
        env.extend(parse_env_file(&text, f)?);
    }
    for kv in &args.env {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| Exit::new(2, format!("--env {kv}: expected KEY=VALUE")))?;
        env.push((k.to_string(), v.to_string()));
    }
    let mut pins = std::collections::BTreeMap::new();
    for p in &args.pin {
        let (node, file) = p
            .split_once('=')
            .ok_or_else(|| Exit::new(2, format!("--pin {p}: expected NODE=FILE")))?;
        let text = std::fs::read_to_string(file)
            .map_err(|e| Exit::new(2, format!("--pin {p}: cannot read {file}: {e}")))?;
        let output: Value = serde_json::from_str(&text)
            .map_err(|e| Exit::new(2, format!("--pin {p}: {file} is not valid JSON: {e}")))?;
        pins.insert(node.to_string(), Pin::pinned(output));
    }
    Ok(RunOptions {
        python: args.python.clone(),
        timeout_ms: args.timeout_ms,
        kill_grace_ms: args.kill_grace_ms,
        max_log_bytes: args.max_log_bytes,
        max_memory_mb: args.max_memory_mb,
        env,
        inherit_env: args.inherit_env,
        pins,
        mode: "test".into(),
        parent: None,
        cwd: None,
        install_deps: args.install_deps,
        ..RunOptions::default()
    })
}

pub fn run(args: RunArgs, db: Option<&Path>) -> Result<i32, Exit> {
    let source = flowrun_codegen::load_file(&args.file).map_err(|d| Exit::new(2, d.to_string()))?;
    let trigger = read_trigger(&args.exec)?;
    let opts = options(&args.exec)?;
    let prepared = runner::prepare(&source, trigger, opts).map_err(exit::run_error)?;
    let store = SharedStore::new(open_store(db)?);
    execute_prepared(&store, &prepared, args.exec.events, args.exec.json)
}

/// `rerun` / `resume`: a new execution of an earlier one's definition (or `--file`), with its
/// trigger data unless `--input`/`--input-file` is given. The planning is shared with the HTTP
/// API (`flowrun_app::again`).
pub fn again(
    id: &str,
    file: Option<&Path>,
    exec: ExecArgs,
    resume: bool,
    db: Option<&Path>,
) -> Result<i32, Exit> {
    let store = open_store(db)?;
    let source = file.map_or(AgainSource::Snapshot, AgainSource::File);
    let plan = again::plan_again(
        &store,
        id,
        source,
        given_trigger(&exec)?,
        options(&exec)?,
        resume,
    )
    .map_err(exit::again_error)?;
    for note in &plan.notes {
        eprintln!("{note}");
    }
    let prepared =
        runner::prepare(&plan.source, plan.trigger, plan.options).map_err(exit::run_error)?;
    let store = SharedStore::new(store);
    execute_prepared(&store, &prepared, exec.events, exec.json)
}

/// Records and runs a prepared execution in the foreground, with Ctrl-C and `flowrun stop`
/// wired to stop it; prints what was asked for and returns the exit code.
pub(crate) fn execute_prepared(
    store: &SharedStore,
    prepared: &runner::Prepared,
    events: Option<EventFormat>,
    json: bool,
) -> Result<i32, Exit> {
    for w in &prepared.warnings {
        eprintln!("warning: {w}");
    }
    let id = runner::new_execution_id();
    runner::record_start(store, prepared, &id, ExecStatus::Running).map_err(exit::run_error)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Exit::new(3, format!("cannot start the async runtime: {e}")))?;
    flowrun_executor::process::become_subreaper();
    let types = prepared
        .plan
        .workflow
        .nodes
        .iter()
        .map(|n| (n.id.clone(), n.kind.type_name().to_string()))
        .collect();
    let mut terminal;
    let mut jsonl;
    let viewer: &mut dyn Sink = if events == Some(EventFormat::Jsonl) {
        jsonl = Jsonl::new(std::io::stdout());
        &mut jsonl
    } else {
        terminal = Terminal::new(std::io::stderr().is_terminal(), types);
        &mut terminal
    };
    let finished = rt.block_on(async {
        let (stop_tx, stop_rx) = watch::channel(None);
        let watcher = tokio::spawn(watch_for_stop(store.clone(), id.clone(), stop_tx));
        let finished = runner::run(store, prepared, &id, viewer, stop_rx).await;
        watcher.abort();
        finished
    });
    // This process ran one execution: anything still under it is that execution's.
    flowrun_app::control::end_strays();
    if let Some(e) = &finished.store_error {
        return Err(Exit::new(
            exit::ENVIRONMENT,
            format!(
                "execution {id} could not be recorded completely, so it failed: {e}\nwhat the database holds of it is incomplete (`flowrun show {id}`)"
            ),
        ));
    }
    if finished.ended_elsewhere {
        eprintln!(
            "flowrun: execution {id} was ended by another process first ({}); that end is the one recorded",
            finished.outcome.status
        );
    }
    let outcome = finished.outcome;
    if json {
        let record = flowrun_app::views::record_json(&store.lock(), &id)?;
        // A reader that stops early (`| head`) must not turn a finished run into a panic.
        use std::io::Write;
        let text = serde_json::to_string_pretty(&record).expect("record serializes");
        let _ = writeln!(std::io::stdout(), "{text}");
    } else if events.is_none() {
        if let Some(out) = &outcome.output {
            if outcome.status == ExecStatus::Success {
                eprintln!("output: {}", flowrun_events::preview(out, 400));
            }
        }
        eprintln!("details: flowrun show {id}");
    }
    Ok(exit::status_code(outcome.status))
}

/// Stops the execution on Ctrl-C or SIGTERM, or when another process asks through the store.
async fn watch_for_stop(store: SharedStore, id: String, stop: watch::Sender<Option<StopReason>>) {
    let mut sigterm =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let (requested_tx, mut requested) = tokio::sync::mpsc::unbounded_channel();
    let poller = flowrun_app::control::watch_stop_requests(
        store,
        move || vec![id.clone()],
        move |_| {
            let _ = requested_tx.send(());
        },
    );
    let reason = tokio::select! {
        _ = tokio::signal::ctrl_c() => StopReason::Interrupt,
        _ = async { match sigterm.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending().await } } => StopReason::Terminate,
        _ = requested.recv() => StopReason::Cancel,
        _ = poller => StopReason::Cancel,
    };
    let _ = stop.send(Some(reason));
}

/// `flowrun stop ID`: asks the runner through the store and waits for the execution to end; if
/// its runner is gone, stops the process group itself (see `flowrun_app::control::stop`).
pub fn stop(id: &str, db: Option<&Path>) -> Result<i32, Exit> {
    let mut store = open_store(db)?;
    let id = store.resolve_id(id)?;
    match flowrun_app::control::stop(&mut store, &id)? {
        StopOutcome::AlreadyEnded(status) => println!("execution {id} already ended: {status}"),
        StopOutcome::Stopped(status) => println!("execution {id} stopped: {status}"),
        StopOutcome::Forced => println!("execution {id} stopped: cancelled"),
    }
    Ok(0)
}

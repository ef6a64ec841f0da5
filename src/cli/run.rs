//! `flowrun run`, `flowrun stop` and `flowrun pause`.

use super::progress::{Jsonl, Terminal};
use super::{Exit, open_store, open_store_only, recover};
use super::{exit, input, text};
use clap::{Args, ValueEnum};
use flowrun_app::SharedStore;
use flowrun_app::again::{self, AgainSource};
use flowrun_app::control::{PauseOutcome, StopOutcome};
use flowrun_app::runner::{self, RunError, RunOptions, Trigger};
use flowrun_app::signals::{self, Signals};
use flowrun_codegen::Pin;
use flowrun_events::ExecStatus;
use flowrun_executor::{Sink, StopReason};
use flowrun_store::Request;
use serde_json::Value;
use std::io::IsTerminal;
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
    /// Trigger data as JSON (`-i`).
    #[arg(short, long, value_name = "JSON", conflicts_with = "input_file")]
    pub input: Option<String>,
    /// Trigger data from a JSON file, or `-` to read it from stdin (only then is stdin read).
    #[arg(long, value_name = "FILE")]
    pub input_file: Option<PathBuf>,
    /// Whole-execution timeout (default: the workflow's `timeout_ms`, else 60000).
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_ms: Option<u64>,
    /// Time between SIGTERM and SIGKILL when stopping.
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    pub kill_grace_ms: u64,
    /// Environment variable for the workflow (repeatable): KEY=VALUE, or KEY for the value of
    /// KEY in flowrun's own environment (keeps secrets off the command line).
    #[arg(long = "env", value_name = "KEY[=VALUE]")]
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
    /// Address-space limit for the workflow's process, in MiB (at least 1: a limit of 0 would
    /// only make the interpreter crash as it starts; at most 2^40, which fits in bytes).
    #[arg(long, value_name = "MB", value_parser = clap::value_parser!(u64).range(1..=1 << 40))]
    pub max_memory_mb: Option<u64>,
    /// How many independent nodes may run at once (default: the workflow's `max_parallel`, else 1).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_parallel: Option<u32>,
    /// Pause before NODE (repeatable): the execution ends `paused` there (exit 75), and
    /// `flowrun resume ID` continues it.
    #[arg(long = "break-before", value_name = "NODE")]
    pub break_before: Vec<String>,
    /// No LLM or agent call starts once the execution's cost reaches USD (overrides the
    /// workflow's `max_cost_usd`).
    #[arg(long, value_name = "USD")]
    pub max_cost_usd: Option<f64>,
    /// Directory the nodes run in (default: the workflow's `cwd`, relative to its file, else
    /// the file's directory).
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<PathBuf>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventFormat {
    Jsonl,
}

/// The trigger data of `rerun`/`resume` when `--input`/`--input-file` is given, parsed as `run`
/// parses it (a resume compares it with the earlier execution's), with what gave it.
fn given_trigger(args: &ExecArgs) -> Result<Option<(Value, String)>, Exit> {
    let Some((text, what)) =
        input::trigger_text(args.input.as_deref(), args.input_file.as_deref())?
    else {
        return Ok(None);
    };
    match runner::parse_trigger_text(&text) {
        Ok(v) => Ok(Some((v, what))),
        Err(e) => Err(run_error_of(e.into(), Some(&what))),
    }
}

/// Why a run could not start ([`exit::run_error`]); a refusal of the trigger data given names
/// what gave it: `--input: invalid input: …`, `--input-file F: …`.
fn run_error_of(e: RunError, given: Option<&str>) -> Exit {
    let input_error = matches!(e, RunError::Input(_));
    let mut x = exit::run_error(e);
    if let (true, Some(what)) = (input_error, given) {
        x.message = format!("{what}: {}", x.message);
    }
    x
}

/// The run options, and the names given as `--env KEY=VALUE` (their values are on the command
/// line, where any user can read them with `ps`).
fn options(args: &ExecArgs) -> Result<(RunOptions, Vec<String>), Exit> {
    let (env, on_command_line) = input::env_values(&args.env_file, &args.env)?;
    let mut pins = std::collections::BTreeMap::new();
    for p in &args.pin {
        let (node, output) = input::pin(p)?;
        pins.insert(node, Pin::pinned(output));
    }
    let options = RunOptions {
        python: args.python.clone(),
        timeout_ms: args.timeout_ms,
        kill_grace_ms: args.kill_grace_ms,
        max_log_bytes: args.max_log_bytes,
        max_memory_mb: args.max_memory_mb,
        env,
        inherit_env: args.inherit_env,
        pins,
        reused_items: Default::default(),
        max_parallel: args.max_parallel,
        break_before: args.break_before.clone(),
        max_cost_usd: args.max_cost_usd,
        mode: "test".into(),
        parent: None,
        cwd: args.cwd.clone(),
        install_deps: args.install_deps,
        ..RunOptions::default()
    };
    Ok((options, on_command_line))
}

/// `flowrun run FILE`: trigger data from `--input` or `--input-file` (`-`: stdin), else `{}`.
/// Stdin is never read unless asked for: `run` in a `while read` loop or under a CI runner
/// whose stdin is an open pipe must neither eat the loop's input nor wait for an EOF.
pub fn run(args: RunArgs, db: Option<&Path>) -> Result<i32, Exit> {
    // An existing store is opened on another thread while the workflow is prepared: each takes
    // about a millisecond (the schema check; the database), and a cold run is what a user waits
    // for. When preparing fails, its error is the one reported and the thread ends with the
    // process (SQLite keeps what it wrote whole). Only what a successful prepare goes on to do
    // changes anything: a new database is made, and executions of dead runners are recovered
    // (their processes ended, the notice printed), after it.
    let opening = flowrun_app::paths::database(db).exists().then(|| {
        let db = db.map(Path::to_path_buf);
        std::thread::spawn(move || open_store_only(db.as_deref()))
    });
    let source = super::workflow::load(&args.file).map_err(|d| Exit::new(2, d.to_string()))?;
    let (opts, on_command_line) = options(&args.exec)?;
    // Python starts while the trigger is read, the run prepared and the store opened (most of
    // a cold run is its start); ended unused if preparing fails, or if the execution turns out
    // to start otherwise.
    let _early = runner::start_early(&source, &opts);
    let given = input::trigger_text(args.exec.input.as_deref(), args.exec.input_file.as_deref())?;
    let (trigger, what) = match given {
        Some((text, what)) => (Trigger::Text(text), Some(what)),
        None => (Trigger::Value(Value::Object(Default::default())), None),
    };
    let prepared = runner::prepare(&source, trigger, opts).map_err(|e| {
        let input_error = matches!(e, RunError::Input(_));
        let mut x = run_error_of(e, what.as_deref());
        // Nothing given: say how, rather than leave the reader with what is missing.
        if input_error && what.is_none() {
            x.message = format!(
                "{}\nhint: no trigger data was given: pass it with --input '{}' or --input-file FILE (the workflow's `inputs` schema says what it takes)",
                x.message,
                input_example(&source.definition)
            )
        }
        x
    })?;
    input::warn_secrets_on_command_line([&prepared.plan.workflow], &on_command_line, true);
    let store = match opening {
        Some(opening) => opening
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))?,
        None => open_store_only(db)?,
    };
    let store = SharedStore::new(recover(store)?);
    execute_prepared(&store, &prepared, args.exec.events, args.exec.json)
}

/// The shape of the trigger a workflow takes, for a hint: its required fields without a default
/// (else its first properties), `{"customer": …, "lines": …}`; in single quotes on a shell line,
/// so a name with one (or a control character) gives `{…}`.
fn input_example(definition: &Value) -> String {
    let schema = &definition["inputs"];
    if schema["type"] == "array" {
        return "[…]".into();
    }
    let names = |v: &Value| -> Vec<String> {
        match v {
            Value::Array(a) => a
                .iter()
                .filter_map(|n| n.as_str().map(String::from))
                .collect(),
            Value::Object(m) => m.keys().cloned().collect(),
            _ => Vec::new(),
        }
    };
    let mut keys = names(&schema["required"]);
    keys.retain(|k| schema["properties"][k.as_str()].get("default").is_none());
    if keys.is_empty() {
        keys = names(&schema["properties"]);
    }
    if keys.is_empty()
        || keys
            .iter()
            .any(|k| k.contains('\'') || k.chars().any(char::is_control))
    {
        return "{…}".into();
    }
    let more = if keys.len() > 3 { ", …" } else { "" };
    let fields: Vec<String> = keys
        .iter()
        .take(3)
        .map(|k| format!("{}: …", Value::String(k.clone())))
        .collect();
    format!("{{{}{more}}}", fields.join(", "))
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
    let (options, on_command_line) = options(&exec)?;
    let (given, what) = given_trigger(&exec)?.unzip();
    let mut plan =
        again::plan_again(&store, id, source, given, options, resume).map_err(exit::again_error)?;
    // A definition that had no file (an editor's, run by `flowrun serve`): its relative paths
    // are read from where it ran.
    let ran_in = plan.options.cwd.clone();
    plan.place_unsaved(|| ran_in);
    for note in &plan.notes {
        flowrun_app::say!("{}", text::clean(note));
    }
    let _early = runner::start_early(&plan.source, &plan.options);
    let prepared = runner::prepare(&plan.source, plan.trigger, plan.options)
        .map_err(|e| run_error_of(e, what.as_deref()))?;
    input::warn_secrets_on_command_line([&prepared.plan.workflow], &on_command_line, true);
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
        flowrun_app::say!("warning: {}", text::clean(w));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Exit::new(3, format!("cannot start the async runtime: {e}")))?;
    // Before the execution exists: a Ctrl-C from then on stops it, never kills flowrun.
    let signals = {
        let _in_runtime = rt.enter();
        Signals::new().map_err(|e| Exit::new(3, format!("cannot handle signals: {e}")))?
    };
    let id = runner::new_execution_id();
    runner::record_start(store, prepared, &id, ExecStatus::Running).map_err(exit::run_error)?;
    flowrun_executor::process::become_subreaper();
    let types = prepared
        .plan
        .workflow
        .nodes
        .iter()
        .map(|n| (n.id.clone(), n.kind.type_name().to_string()))
        .collect();
    let mut terminal;
    let mut jsonl = Jsonl::new(std::io::stdout());
    let viewer: &mut dyn Sink = if events == Some(EventFormat::Jsonl) {
        &mut jsonl
    } else {
        terminal = Terminal::new(std::io::stderr().is_terminal(), types);
        &mut terminal
    };
    let finished = rt.block_on(async {
        let (stop_tx, stop_rx) = watch::channel(None);
        let watcher = tokio::spawn(watch_for_stop(store.clone(), id.clone(), stop_tx, signals));
        let finished = runner::run(store, prepared, &id, viewer, stop_rx).await;
        watcher.abort();
        finished
    });
    // This process ran one execution: anything still under it is that execution's.
    flowrun_app::control::end_strays();
    super::stdout_written(jsonl.written());
    if let Some(e) = &finished.store_error {
        return Err(Exit::new(
            exit::ENVIRONMENT,
            format!(
                "execution {id} could not be recorded completely, so it failed: {e}\nwhat the database holds of it is incomplete (`flowrun show {id}`)"
            ),
        ));
    }
    if finished.ended_elsewhere {
        flowrun_app::say!(
            "flowrun: execution {id} was ended by another process first ({}); that end is the one recorded",
            finished.outcome.status
        );
    }
    let outcome = finished.outcome;
    // A reader that stops early (`| head`) must not turn a finished run into a panic (`out!`).
    if json {
        let record = flowrun_app::views::record_json(&store.lock(), &id)?;
        out!("{}", text::json_pretty(&record));
    } else if events.is_none() {
        // The execution's output is what `run` prints (`flowrun run wf.json > out.json`, `| jq`):
        // one line of JSON, indented on a terminal; nothing when it did not succeed.
        if outcome.status == ExecStatus::Success {
            let output = outcome.output.as_ref().unwrap_or(&Value::Null);
            let text = if std::io::stdout().is_terminal() {
                text::json_pretty(output)
            } else {
                text::json_line(output)
            };
            out!("{text}");
        }
        if outcome.status == ExecStatus::Paused {
            flowrun_app::say!("continue with: flowrun resume {id}");
        }
        flowrun_app::say!("details: flowrun show {id}");
    }
    Ok(exit::status_code(outcome.status))
}

/// Stops the execution on Ctrl-C, SIGTERM or SIGHUP (its terminal closed), or when another
/// process asks through the store; pauses it when another process asks for that. A second
/// Ctrl-C or SIGTERM while it stops ends its processes at once instead of after their grace
/// period (not SIGHUP: a closing terminal sends it twice by itself).
async fn watch_for_stop(
    store: SharedStore,
    id: String,
    stop: watch::Sender<Option<StopReason>>,
    mut signals: Signals,
) {
    let reason = tokio::select! {
        r = signals.next() => r,
        _ = stop_requested(store, id, &stop) => StopReason::Cancel,
    };
    let _ = stop.send(Some(reason));
    loop {
        if signals::insists(signals.next().await) {
            let _ = stop.send(Some(reason));
        }
    }
}

/// Passes what other processes ask of execution `id` through the store to its executor: a
/// pause as [`StopReason::Pause`]; returns once a stop is asked (the caller sends that).
pub(super) async fn stop_requested(
    store: SharedStore,
    id: String,
    stop: &watch::Sender<Option<StopReason>>,
) {
    let (requested_tx, mut requested) = tokio::sync::mpsc::unbounded_channel();
    let poller = flowrun_app::control::watch_requests(
        store,
        move || vec![id.clone()],
        move |_, request| {
            let _ = requested_tx.send(request);
        },
    );
    tokio::pin!(poller);
    loop {
        tokio::select! {
            r = requested.recv() => match r {
                Some(Request::Pause) => {
                    let _ = stop.send(Some(StopReason::Pause));
                }
                _ => return,
            },
            _ = &mut poller => return,
        }
    }
}

/// `flowrun pause ID`: asks the runner through the store; the execution pauses once the nodes
/// running now have ended (see `flowrun_app::control::pause`).
pub fn pause(id: &str, db: Option<&Path>) -> Result<i32, Exit> {
    let mut store = open_store(db)?;
    let id = store.resolve_id(id)?;
    let wait = flowrun_app::control::PAUSE_ANSWER_WAIT;
    match flowrun_app::control::pause(&mut store, &id, wait)? {
        PauseOutcome::NotRunning(status) => {
            return Err(Exit::new(
                exit::USAGE,
                format!("execution {id} is {status}, not running: there is nothing to pause"),
            ));
        }
        PauseOutcome::Ended(ExecStatus::Paused)
            if store
                .execution(&id)
                .is_ok_and(|e| e.mode == flowrun_app::testing::run::MODE) =>
        {
            // Its mocks are not stored: a resume would make the calls they stood for.
            out!("execution {id} paused: a case of a workflow test, which its suite reports")
        }
        PauseOutcome::Ended(ExecStatus::Paused) => {
            out!("execution {id} paused; continue it with: flowrun resume {id}")
        }
        PauseOutcome::Ended(status) => out!("execution {id} ended before it paused: {status}"),
        PauseOutcome::Requested => {
            out!("execution {id} pauses once its running nodes have ended (`flowrun show {id}`)")
        }
    }
    Ok(0)
}

/// `flowrun stop ID`: asks the runner through the store and waits for the execution to end; if
/// its runner is gone, stops the process group itself (see `flowrun_app::control::stop`).
pub fn stop(id: Option<&str>, db: Option<&Path>) -> Result<i32, Exit> {
    let mut store = open_store(db)?;
    let Some(id) = id else {
        return Err(which_to_stop(&store));
    };
    let id = store.resolve_id(id)?;
    let slow = || {
        flowrun_app::say!(
            "stopping execution {id}: waiting for its runner, which ends what is left of it after its grace period (`--kill-grace-ms` of the run)…"
        )
    };
    match flowrun_app::control::stop(&mut store, &id, slow)? {
        StopOutcome::AlreadyEnded(status) => out!("execution {id} already ended: {status}"),
        StopOutcome::Stopped(status) => out!("execution {id} stopped: {status}"),
        StopOutcome::Forced => out!("execution {id} stopped: cancelled"),
    }
    Ok(0)
}

/// `flowrun stop` without an id: a usage error listing what runs now (test cases included),
/// newest first, so that the id is at hand.
fn which_to_stop(store: &flowrun_store::Store) -> Exit {
    let mut running = store.unfinished().unwrap_or_default();
    running.sort_by_key(|e| std::cmp::Reverse(e.started_at));
    let now = flowrun_events::now_ms();
    let mut message = String::from("say which execution to stop: flowrun stop ID");
    if running.is_empty() {
        message.push_str("\n(no execution is running or queued now)");
    }
    for e in running.iter().take(10) {
        message.push_str(&format!(
            "\n  {}  {}  {}  started {}",
            e.id,
            text::clean_line(&e.workflow_id),
            e.status,
            super::timefmt::ago(e.started_at, now)
        ));
    }
    if running.len() > 10 {
        message.push_str(&format!(
            "\n  … and {} more (flowrun history --all --status running)",
            running.len() - 10
        ));
    }
    Exit::new(exit::USAGE, message)
}

#[cfg(test)]
mod tests {
    use super::input_example;
    use serde_json::json;

    #[test]
    fn the_hint_shows_what_a_workflow_takes_in_a_form_a_shell_keeps() {
        let of = |inputs| input_example(&json!({ "inputs": inputs }));
        let props = json!({"a": {"type": "string"}, "b": {"type": "string", "default": "x"}});
        for (inputs, hint) in [
            (
                json!({"required": ["a", "b"], "properties": props}),
                r#"{"a": …}"#,
            ),
            (json!({"properties": props}), r#"{"a": …, "b": …}"#),
            (
                json!({"required": ["a", "b", "c", "d"]}),
                r#"{"a": …, "b": …, "c": …, …}"#,
            ),
            (json!({"type": "array"}), "[…]"),
            (json!({"required": ["it's"]}), "{…}"),
            (json!({"required": ["a\nb"]}), "{…}"),
            (json!(null), "{…}"),
        ] {
            assert_eq!(of(inputs.clone()), hint, "{inputs}");
        }
    }
}

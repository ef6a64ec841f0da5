//! How an execution is launched: its id, the child's environment and the executor's spec.

use super::options::{DEFAULT_TIMEOUT_MS, OWN_CALL_SLACK_MS, RunOptions};
use super::prepare::Prepared;
use flowrun_executor::RunSpec;
use flowrun_executor::process::Launch;
use flowrun_executor::spec::NotRun;
use std::path::PathBuf;
use std::time::Duration;

/// A new execution id: 16 random hex digits (prefixes work like git's).
pub fn new_execution_id() -> String {
    let n: u64 = rand::random();
    format!("{n:016x}")
}

/// The child's environment: a small base, `FLOWRUN_*`, then `--env` values; or everything with
/// `--inherit-env`.
fn child_env(p: &Prepared, execution_id: &str) -> Vec<(String, String)> {
    let mut env = base_env(p.options.inherit_env);
    // Provider endpoints set for tests and proxies (FLOWRUN_GROQ_BASE_URL, …) pass through.
    env.extend(own_vars().filter(|(k, _)| k.starts_with("FLOWRUN_") && k.ends_with("_BASE_URL")));
    set_vars(&mut env, &p.secrets);
    env.push(("FLOWRUN_EXECUTION_ID".into(), execution_id.to_string()));
    env.push(("FLOWRUN_WORKFLOW_ID".into(), p.plan.workflow.id.clone()));
    env.push(("FLOWRUN_MODE".into(), p.options.mode.clone()));
    env.push((
        "FLOWRUN_MAX_PAYLOAD_BYTES".into(),
        flowrun_store::DEFAULT_MAX_FIELD_BYTES.to_string(),
    ));
    set_vars(&mut env, &p.options.env);
    env
}

/// This process's environment variables that are text (`std::env::vars` panics on one that
/// is not UTF-8, and a child's environment is text): one that is not is left out, as
/// `std::env::var` would not find it.
fn own_vars() -> impl Iterator<Item = (String, String)> {
    std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
}

/// Sets `vars` in `env`, each in place of any earlier value of its name.
pub(super) fn set_vars(env: &mut Vec<(String, String)>, vars: &[(String, String)]) {
    for (k, v) in vars {
        env.retain(|(ek, _)| ek != k);
        env.push((k.clone(), v.clone()));
    }
}

/// What every child's environment starts with: a small base of flowrun's own, or all of it
/// but `FLOWRUN_*` with `--inherit-env`.
pub(super) fn base_env(inherit: bool) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    if inherit {
        env.extend(own_vars().filter(|(k, _)| !k.starts_with("FLOWRUN_")));
    } else {
        for key in flowrun_executor::process::BASE_ENV {
            if let Ok(v) = std::env::var(key) {
                env.push((key.to_string(), v));
            }
        }
        if !env.iter().any(|(k, _)| k == "PATH") {
            env.push(("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()));
        }
    }
    env
}

/// How `program` is started in `cwd` for a run with `options` (its `args` the interpreter's
/// flags, before the script's path): by [`spec`], and by an early start, which must tell it
/// alike.
pub(super) fn launch(
    options: &RunOptions,
    program: PathBuf,
    with_packages: bool,
    env: Vec<(String, String)>,
    cwd: Option<PathBuf>,
) -> Launch {
    Launch {
        shepherd: shepherd_executable(),
        program,
        args: interpreter_flags(with_packages),
        env,
        cwd,
        max_memory: options.max_memory_mb.map(|mb| mb << 20),
    }
}

/// The interpreter's flags before the script's path: `-S` (no `site`) unless the workflow
/// needs third-party packages.
fn interpreter_flags(with_packages: bool) -> Vec<String> {
    let mut args = vec!["-I".to_string()];
    if !with_packages {
        // No third-party packages: skip `site` too (user-site and .pth files cost ~100 ms and
        // can change behaviour).
        args.push("-S".into());
    }
    args.push("-u".into());
    args
}

/// The id and the spec of an execution about to run.
pub fn spec(p: &Prepared, execution_id: &str) -> RunSpec {
    let wf = &p.plan.workflow;
    let mut launch = launch(
        &p.options,
        p.interpreter.executable.clone(),
        !p.plan.requirements().is_empty(),
        child_env(p, execution_id),
        p.options.cwd.clone(),
    );
    let run = super::bytecode::path_now(
        &p.run_path,
        &p.script_path,
        p.interpreter.bytecode_magic.as_deref(),
    );
    launch.args.push(run.display().to_string());
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
        upstream: p
            .plan
            .order
            .iter()
            .map(|&i| {
                let ups = p.plan.deps[i]
                    .iter()
                    .map(|&j| wf.nodes[j].id.clone())
                    .collect();
                (wf.nodes[i].id.clone(), ups)
            })
            .collect(),
        looping: wf
            .nodes
            .iter()
            .filter(|n| n.for_each.is_some() || n.repeat.is_some())
            .map(|n| n.id.clone())
            .collect(),
        max_parallel: p.options.max_parallel.or(wf.max_parallel).unwrap_or(1) as usize,
        continue_on_error: wf
            .nodes
            .iter()
            .filter(|n| n.on_error == flowrun_codegen::model::OnError::Continue)
            .map(|n| n.id.clone())
            .collect(),
        mocked: p.options.mocks.keys().cloned().collect(),
        not_run: not_run(p),
        break_before: p.options.break_before.clone(),
        launch,
        trigger: p.trigger_json.clone(),
        nonce: format!("{:032x}", rand::random::<u128>()),
        timeout: Duration::from_millis(timeout_ms),
        kill_grace: Duration::from_millis(p.options.kill_grace_ms),
        max_log_bytes: p.options.max_log_bytes,
        max_line_bytes: 64 * 1024,
        redactor: p.redactor.clone(),
    }
}

/// The executable that runs as the execution's shepherd (see `flowrun_executor::shepherd`):
/// `flowrun-shepherd` next to this binary (built and installed with it: it links the shepherd
/// only, so each execution's exec of it is ~1 ms of CPU cheaper), else this binary itself.
/// `FLOWRUN_SHEPHERD` names another one (for embedding the library in a program that is not
/// `flowrun`). Looked up once per process.
fn shepherd_executable() -> std::path::PathBuf {
    static FOUND: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    FOUND
        .get_or_init(|| {
            let me = flowrun_executable();
            if std::env::var_os("FLOWRUN_SHEPHERD").is_some() {
                return me;
            }
            let sibling = me.with_file_name("flowrun-shepherd");
            if same_build(&sibling) { sibling } else { me }
        })
        .clone()
}

/// The build mark of the `flowrun-shepherd` this binary goes with (see `build.rs`).
static SHEPHERD_BUILD: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

/// Says which `flowrun-shepherd` may be used: one whose file holds `mark` (the binary's
/// `main` calls this first; without it, no other file is used as the shepherd).
pub fn use_shepherd_built_as(mark: &'static str) {
    let _ = SHEPHERD_BUILD.set(mark);
}

/// Is `file` an executable `flowrun-shepherd` of this build? Read once per process, in pieces,
/// up to the mark (in its read-only data, before any debug information): ~0.5 MB at most for a
/// release build, and never more than a piece in memory.
fn same_build(file: &std::path::Path) -> bool {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let Some(mark) = SHEPHERD_BUILD.get().map(|m| m.as_bytes()) else {
        return false;
    };
    let executable =
        std::fs::metadata(file).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if !executable {
        return false;
    }
    let Ok(mut f) = std::fs::File::open(file) else {
        return false;
    };
    let finder = memchr::memmem::Finder::new(mark);
    let mut buf = vec![0u8; 64 << 10];
    // What the last piece ended with: the mark may straddle two pieces.
    let mut kept = 0;
    loop {
        let n = match f.read(&mut buf[kept..]) {
            Ok(0) | Err(_) => return false,
            Ok(n) => n,
        };
        let end = kept + n;
        if finder.find(&buf[..end]).is_some() {
            return true;
        }
        kept = (mark.len() - 1).min(end);
        buf.copy_within(end - kept..end, 0);
    }
}

/// The `flowrun` executable (a `workflow` node's child runner starts it again):
/// `FLOWRUN_SHEPHERD` when set (a program embedding the library that answers `__shepherd` and
/// flowrun's commands), else this binary.
pub(crate) fn flowrun_executable() -> std::path::PathBuf {
    std::env::var_os("FLOWRUN_SHEPHERD")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::current_exe().ok())
        .unwrap_or_else(|| "flowrun".into())
}

/// What the plan lets end without running (see [`NotRun`]).
fn not_run(p: &Prepared) -> NotRun {
    use flowrun_codegen::PinStatus;
    let wf = &p.plan.workflow;
    let pinned_as = |status: PinStatus| {
        p.options
            .pins
            .iter()
            .filter(move |(_, pin)| pin.status == status)
            .map(|(id, _)| id.clone())
    };
    NotRun {
        pinned: wf
            .nodes
            .iter()
            .filter(|n| n.pinned.is_some())
            .map(|n| n.id.clone())
            .chain(pinned_as(PinStatus::Pinned))
            .collect(),
        reused: pinned_as(PinStatus::Reused).collect(),
        reused_items: p
            .options
            .reused_items
            .iter()
            .map(|(id, items)| {
                let indexes = items.keys().filter_map(|&i| u32::try_from(i).ok());
                (id.clone(), indexes.collect())
            })
            .collect(),
        guarded: p
            .plan
            .guards
            .iter()
            .enumerate()
            .filter(|(_, g)| !g.is_empty())
            .map(|(i, _)| wf.nodes[i].id.clone())
            .collect(),
    }
}

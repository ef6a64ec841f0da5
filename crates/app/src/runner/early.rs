//! A one-shot run's interpreter started while the run is prepared (`flowrun_executor::early`).

use super::launch::{base_env, launch, set_vars};
use super::options::RunOptions;
use super::prepare::nodes_directory;
use crate::{paths, python};
use flowrun_codegen::Source;
use serde_json::Value;

/// Ends the interpreter started early when dropped, unless an execution took it.
#[must_use = "the interpreter started early is ended when this is dropped"]
pub struct EarlyStart(bool);

impl Drop for EarlyStart {
    fn drop(&mut self) {
        if self.0 {
            flowrun_executor::early::discard();
        }
    }
}

/// Starts the interpreter the execution of `source` with `options` will run in, before it is
/// prepared, when that can be told from them: a workflow without third-party packages (they
/// take another interpreter and flags) run by this process's next execution. What it cannot
/// tell (a variable read as a process starts, given in the workflow's connections, say) only
/// makes the execution start cold, as without this. `FLOWRUN_EARLY_START=0` turns it off (for
/// benchmarks and tests that compare the two).
pub fn start_early(source: &Source, options: &RunOptions) -> EarlyStart {
    if std::env::var_os("FLOWRUN_EARLY_START").is_some_and(|v| v == "0")
        || needs_packages(&source.definition)
    {
        return EarlyStart(false);
    }
    // Should its shepherd be killed, the interpreter comes to this process, not to init.
    crate::control::become_subreaper();
    let cache = paths::cache_dir();
    let Ok(interpreter) = python::discover(options.python.as_deref(), &cache) else {
        return EarlyStart(false);
    };
    let bootstrap = match bootstrap_file(&cache) {
        Ok(path) => path,
        Err(e) => {
            tracing::debug!("no early start: {e}");
            return EarlyStart(false);
        }
    };
    // The execution's environment, but what only the prepared run knows (connections, its id):
    // what is read as a process starts comes from here.
    let mut env = base_env(options.inherit_env);
    set_vars(&mut env, &options.env);
    // Where `prepare` will put the run (`working_directory`).
    let cwd = nodes_directory(
        options.cwd.as_deref(),
        &source.base_dir(),
        source.definition.get("cwd").and_then(Value::as_str),
    );
    let launch = launch(options, interpreter.executable, false, env, Some(cwd));
    match flowrun_executor::early::start(launch, &bootstrap) {
        Ok(()) => EarlyStart(true),
        Err(e) => {
            tracing::debug!("no early start: {e}");
            EarlyStart(false)
        }
    }
}

/// `<cache>/early-<hash>.py`, holding the bootstrap of this build: checked as it is read
/// (whatever else is there, a link included, is replaced: it would be handed every execution's
/// environment), written privately when missing, and those of other builds removed then.
fn bootstrap_file(cache: &std::path::Path) -> std::io::Result<std::path::PathBuf> {
    use sha2::Digest;
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let source = flowrun_executor::early::BOOTSTRAP.as_bytes();
    let hash = sha2::Sha256::digest(source);
    let hex: String = hash[..8].iter().map(|b| format!("{b:02x}")).collect();
    let name = format!("early-{hex}.py");
    let path = cache.join(&name);
    let mut held = Vec::with_capacity(source.len() + 1);
    let read = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .and_then(|f| f.take(source.len() as u64 + 1).read_to_end(&mut held));
    if read.is_ok() && held == source {
        return Ok(path);
    }
    paths::private_dir(cache)?;
    paths::write_private(&path, source)?;
    for entry in std::fs::read_dir(cache)?.flatten() {
        let other = entry.file_name();
        let other = other.to_string_lossy();
        if other.starts_with("early-") && other.ends_with(".py") && other != name.as_str() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(path)
}

/// Whether a node of `definition` lists `requirements`.
fn needs_packages(definition: &Value) -> bool {
    let nodes = definition.get("nodes").and_then(Value::as_array);
    nodes.is_some_and(|nodes| {
        nodes.iter().any(|n| {
            n.get("requirements")
                .and_then(Value::as_array)
                .is_some_and(|r| !r.is_empty())
        })
    })
}

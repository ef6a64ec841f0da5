//! The `flowrun` command line.

/// `println!` for what a command prints on stdout. A reader that went away (a closed pipe) is
/// not an error: the inspection commands end by SIGPIPE before this sees it, and `run`, `stop`
/// and the others that must finish their work go on (it panicked: exit 101 after a stop was
/// done). Any other failure (a full disk, `> /dev/full`) is: said on stderr, exit 3, so that
/// `flowrun run wf > out.json && use out.json` does not go on with an empty file.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        $crate::cli::stdout_written(writeln!(std::io::stdout(), $($arg)*));
    }};
}

/// What [`out!`] does with the result of a write to stdout.
pub(crate) fn stdout_written(result: std::io::Result<()>) {
    if let Err(e) = result.and_then(|()| std::io::Write::flush(&mut std::io::stdout()))
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        flowrun_app::say!("flowrun: cannot write to stdout: {e}");
        std::process::exit(exit::ENVIRONMENT);
    }
}

mod doctor;
mod exit;
mod github;
mod input;
mod inspect;
mod inspect_parts;
mod inspect_subs;
mod junit_file;
mod logs;
mod maintain;
mod progress;
mod run;
mod serve;
mod sub;
mod test;
mod text;
mod timefmt;
mod workflow;

use clap::{Parser, Subcommand};
pub(crate) use exit::Exit;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "flowrun",
    version,
    about = "Run workflow test executions locally: fast, safe and inspectable."
)]
pub struct Cli {
    /// SQLite database (default: $FLOWRUN_DB, else the XDG data directory).
    #[arg(long, global = true, value_name = "PATH")]
    pub db: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

/// The exit codes of `run`, `rerun` and `resume`, as `--help` shows them.
const RUN_EXIT_CODES: &str = "Exit codes: 0 success, 1 the workflow failed, 2 invalid workflow, input or usage, 3 environment problem (no interpreter, missing packages, unbound connections, a missing agent CLI, the store), 75 paused (flowrun resume ID continues it), 124 timeout, 130 stopped";

/// The exit codes of `test`, as `--help` shows them.
const TEST_EXIT_CODES: &str = "Exit codes: 0 every case passed, 1 a case failed, 2 an invalid test file or workflow, or a --filter no case matches, 3 the store or the runtime could not be opened or no Python interpreter was found, 130 interrupted (Ctrl-C, SIGTERM)";

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a workflow: validate, generate the script, execute it and record everything.
    #[command(after_help = RUN_EXIT_CODES)]
    Run(run::RunArgs),
    /// Check workflow and test files, code nodes compiled; errors name the file, line, node and
    /// field. Exit 2 if any is invalid.
    Validate {
        /// Workflow files (.json, .yaml or .yml).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// One JSON document on stdout: per file, whether it is valid and every problem found.
        #[arg(long)]
        json: bool,
        /// Python interpreter that compiles code nodes (default: as `run` finds it:
        /// $FLOWRUN_PYTHON, $VIRTUAL_ENV, python3 then python on PATH).
        #[arg(long, value_name = "PATH")]
        python: Option<PathBuf>,
    },
    /// Print (or write with -o) the Python script generated for a workflow.
    Codegen {
        /// Workflow file (.json, .yaml or .yml).
        file: PathBuf,
        /// Write the script to this file instead of stdout.
        #[arg(short, long, value_name = "OUT")]
        output: Option<PathBuf>,
    },
    /// List executions, newest first.
    History(inspect::HistoryArgs),
    /// Show one execution with every node's status, timing, input, output and error.
    Show {
        /// Execution id or a unique prefix of one.
        id: String,
        /// The whole record as JSON (stable fields, see the README).
        #[arg(long)]
        json: bool,
    },
    /// Print the log lines of an execution.
    Logs {
        /// Execution id or a unique prefix of one.
        id: String,
        /// Keep printing new lines until the execution ends.
        #[arg(short, long)]
        follow: bool,
        /// Only the lines of this node, or of one of its items or iterations as lines are
        /// labelled: `each[2]`, `draft#3`.
        #[arg(long, value_name = "NODE")]
        node: Option<String>,
        /// One JSON object per line, as `run --events jsonl` prints log events.
        #[arg(long)]
        json: bool,
    },
    /// Stop a running execution (from any process).
    Stop {
        /// Execution id or a unique prefix of one (without one, lists what could be stopped).
        id: Option<String>,
    },
    /// Pause a running execution (from any process): the nodes running now finish, no new one
    /// starts, and it ends `paused`; `flowrun resume ID` continues it.
    Pause {
        /// Execution id or a unique prefix of one.
        id: String,
    },
    /// Run an execution again with the same definition and trigger data (unless overridden).
    #[command(after_help = RUN_EXIT_CODES)]
    Rerun {
        /// Execution id or a unique prefix of one.
        id: String,
        /// Run this workflow file instead of the definition the execution ran.
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
        #[command(flatten)]
        exec: run::ExecArgs,
    },
    /// Run again from the failed node on, reusing the outputs of the nodes that succeeded.
    #[command(after_help = RUN_EXIT_CODES)]
    Resume {
        /// Execution id or a unique prefix of one.
        id: String,
        /// A changed workflow file: changed nodes and their dependants run again.
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
        #[command(flatten)]
        exec: run::ExecArgs,
    },
    /// Delete old executions (with their nodes, events and unused definition snapshots).
    Prune(maintain::PruneArgs),
    /// Check the Python interpreter, cache, database and workflow files (valid, requirements
    /// installed, connections bound); `--fix` installs missing requirements into a managed
    /// virtual environment.
    Doctor {
        /// Workflow files whose requirements to check.
        files: Vec<PathBuf>,
        /// Install missing requirements into a managed virtual environment.
        #[arg(long)]
        fix: bool,
        /// The report as JSON.
        #[arg(long)]
        json: bool,
        /// Python interpreter to check (default: as `run` finds it).
        #[arg(long, value_name = "PATH")]
        python: Option<PathBuf>,
        /// A variable as `run --env` takes it (KEY or KEY=VALUE), for checking connections.
        #[arg(long = "env", value_name = "KEY[=VALUE]")]
        env: Vec<String>,
        /// A dotenv file as `run --env-file` takes it, for checking connections.
        #[arg(long = "env-file", value_name = "FILE")]
        env_file: Vec<PathBuf>,
    },
    /// Serve the local HTTP API with Server-Sent Events for editors (see docs/api.md).
    Serve(serve::ServeArgs),
    /// Run workflow test files (*.test.yaml, *.test.json): mocked nodes, assertions, snapshots;
    /// exit 0 all passed, 1 a case failed, 2 an invalid test file or workflow.
    #[command(after_help = TEST_EXIT_CODES)]
    Test(test::TestArgs),
    /// Runs one child execution of a `workflow` node (started by the node's handler).
    #[command(name = "__sub", hide = true)]
    Sub(sub::SubArgs),
    /// Delete executions by id (or unique prefix).
    Delete {
        /// Execution ids or unique prefixes.
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

/// Opens the store, first recovering executions that dead runners left `running`.
pub(crate) fn open_store(db: Option<&std::path::Path>) -> Result<flowrun_store::Store, Exit> {
    recover(open_store_only(db)?)
}

/// Opens the store (and brings its schema up to date), nothing else: [`recover`] follows.
pub(crate) fn open_store_only(db: Option<&std::path::Path>) -> Result<flowrun_store::Store, Exit> {
    flowrun_app::control::open(db).map_err(|e| Exit::new(3, e.to_string()))
}

/// Recovers executions that dead runners left `running`, and says so.
pub(crate) fn recover(mut store: flowrun_store::Store) -> Result<flowrun_store::Store, Exit> {
    for id in flowrun_app::control::recover(&mut store) {
        flowrun_app::say!(
            "flowrun: execution {id} was left running by a flowrun process that is gone; marked interrupted"
        );
    }
    Ok(store)
}

pub fn main() -> i32 {
    let cli = Cli::parse();
    if !matches!(
        cli.command,
        Command::Run(_)
            | Command::Stop { .. }
            | Command::Pause { .. }
            | Command::Rerun { .. }
            | Command::Resume { .. }
            | Command::Test(_)
            | Command::Sub(_)
    ) {
        // Inspection commands end quietly when their reader goes away (`flowrun logs | head`).
        // Not for `run`: there a closed pipe to the child must be an error, not our death.
        // SAFETY: setting a signal disposition before any thread starts.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FLOWRUN_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        // It reports a failed write with eprintln!, which panics on a closed stderr (exit 101
        // after a recorded run: see `out!`).
        .log_internal_errors(false)
        .init();
    let db = cli.db.clone();
    let result = match cli.command {
        Command::Run(args) => run::run(args, db.as_deref()),
        Command::Validate {
            files,
            json,
            python,
        } => workflow::validate(&files, json, python.as_deref()),
        Command::Codegen { file, output } => workflow::codegen(&file, output.as_deref()),
        Command::History(args) => inspect::history(args, db.as_deref()),
        Command::Show { id, json } => inspect::show(&id, json, db.as_deref()),
        Command::Logs {
            id,
            follow,
            node,
            json,
        } => logs::logs(&id, follow, node.as_deref(), json, db.as_deref()),
        Command::Stop { id } => run::stop(id.as_deref(), db.as_deref()),
        Command::Pause { id } => run::pause(&id, db.as_deref()),
        Command::Rerun { id, file, exec } => {
            run::again(&id, file.as_deref(), exec, false, db.as_deref())
        }
        Command::Resume { id, file, exec } => {
            run::again(&id, file.as_deref(), exec, true, db.as_deref())
        }
        Command::Doctor {
            files,
            fix,
            json,
            python,
            env,
            env_file,
        } => input::env_values(&env_file, &env).and_then(|(env, _)| {
            doctor::doctor(&files, fix, json, python.as_deref(), env, db.as_deref())
        }),
        Command::Prune(args) => maintain::prune(args, db.as_deref()),
        Command::Serve(args) => serve::serve(args, db.as_deref()),
        Command::Delete { ids } => maintain::delete(&ids, db.as_deref()),
        Command::Test(args) => test::test(args, db.as_deref()),
        Command::Sub(args) => sub::sub(args, db.as_deref()),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            if !e.message.is_empty() {
                flowrun_app::say!("error: {}", text::clean(&e.message));
            }
            e.code
        }
    }
}

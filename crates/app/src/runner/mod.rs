//! One execution from start to end: validate, render, find Python, record, execute, finish.
//!
//! This is the glue between the parts: codegen makes the script, the executor runs it, the
//! recorder writes what happens to the store. The CLI and the HTTP server both start executions
//! through here, so they behave the same.
//!
//! - [`prepare`](prepare()): everything that can fail before spawning ([`RunError`]);
//! - [`record_start`], then [`run`]: the execution row, the child, the final state;
//! - `launch`: the child's environment and the executor's spec; `options`: [`RunOptions`].

mod bytecode;
mod early;
mod error;
mod execute;
mod launch;
mod options;
mod prepare;
mod scripts;
mod trigger;

pub use bytecode::PendingBytecode;
pub use early::{EarlyStart, start_early};
pub use error::{RunError, Unbound, pip_install_command};
pub use execute::{Finished, record_start, run};
pub(crate) use launch::flowrun_executable;
pub use launch::{new_execution_id, spec, use_shepherd_built_as};
pub use options::{DEFAULT_TIMEOUT_MS, OWN_CALL_SLACK_MS, RunOptions};
pub use prepare::{Prepared, bind_connections, missing_agents, nodes_directory, prepare};
pub use trigger::{Trigger, parse_text as parse_trigger_text};

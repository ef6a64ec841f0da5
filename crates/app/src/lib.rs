//! flowrun's application layer: what the CLI and the HTTP server both do, written once.
//!
//! One execution end to end ([`runner`]: validate, render, find Python, record, execute,
//! finish), the sink that records it ([`recorder`]), stopping, killing and recovering
//! executions ([`control`]), the agent CLIs that `agent` nodes run ([`agents`]), what a resume
//! may reuse ([`resume`]), workflow tests ([`testing`]), a queue of concurrent
//! executions with live event buffers ([`queue`]), the Python environment ([`python`],
//! [`requirements`]), trigger inputs ([`inputs`]) and where files live ([`paths`]).
//!
//! It knows neither flags nor HTTP: errors are typed, and each front end words them for its
//! own users.

pub mod again;
pub mod agents;
pub mod code_check;
pub mod control;
pub mod files;
pub mod inputs;
pub mod paths;
pub mod python;
pub mod queue;
pub(crate) mod recorder;
pub mod requirements;
pub(crate) mod resume;
pub mod runner;
mod shared;
pub mod signals;
pub mod subflow;
pub(crate) mod synthetic;
pub mod testing;
pub mod views;

pub use shared::{SharedStore, lock};

/// `eprintln!` for what the front ends tell their user on stderr, which never fails: a reader
/// of stderr that went away (`flowrun run … 2>&1 | head -1`) must not turn a finished run into
/// a panic (exit 101) after it was recorded. (The CLI's stdout has its own, `out!`: there a
/// write that fails for another reason than a closed pipe is an error.)
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

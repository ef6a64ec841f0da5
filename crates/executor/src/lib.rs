//! The executor: runs one generated script as a child process and turns what it prints into
//! events, enforcing the execution and node deadlines and stop requests.
//!
//! It knows processes and the stdout protocol; it knows nothing of SQL. Everything it learns goes
//! to a [`Sink`] (the store recorder, the terminal, a JSONL writer, the HTTP server) in order.
//!
//! - [`spec`]: what one execution needs; [`process`]: the child's process group and lifeline;
//! - [`protocol`]: framing stdout into events, result and log lines; `read`: the reader tasks;
//! - `state`: what the frames mean; `run`: the loop with deadlines and stops; [`sink`]: viewers;
//! - [`redact`]: secrets cut out of everything the child prints.

pub mod background;
mod child;
pub mod early;
pub mod helper;
mod ledger;
mod order;
pub mod process;
pub mod protocol;
mod read;
pub mod redact;
mod run;
pub mod sched;
pub mod shepherd;
pub mod sink;
pub mod spec;
mod state;
pub mod strays;
pub mod tree;
pub mod warm;

pub use run::{Outcome, execute};
pub use sink::{Fanout, NodeDetail, Quiet, Sink};
pub use spec::{RunSpec, StopReason};
pub use state::LOG_LINE_OVERHEAD;

//! flowrun: runs workflow test executions locally.
//!
//! Data flows one way: a definition is compiled to a script by `flowrun_codegen`; the
//! [`executor`] runs it as a child process and turns its output into [`events`]; sinks take the
//! events to the [`store`] (through the [`recorder`]), the terminal ([`progress`]) and other
//! viewers. [`runner`] ties one execution together for the CLI ([`cli`]).

pub mod cli;
pub mod events;
pub mod executor;
pub mod inputs;
pub mod paths;
pub mod progress;
pub mod python;
pub mod recorder;
pub mod recovery;
pub mod redact;
pub mod requirements;
pub mod resume;
pub mod runner;
pub mod server;
pub mod store;
pub mod timefmt;

//! flowrun's shared vocabulary: what every layer says about an execution.
//!
//! The executor turns what the child prints into [`Event`]s; the store records them; the
//! terminal, `--events jsonl` and the HTTP server's Server-Sent Events show them — one type, so
//! every viewer sees the same thing (see `docs/events.md`). Statuses ([`ExecStatus`],
//! [`NodeStatus`]), errors ([`ErrorInfo`] with an [`ErrorKind`] for the ones flowrun makes
//! itself), how executions relate ([`Relation`]) and the marker for cut payloads
//! ([`truncated`]) are defined here once.

mod error;
mod event;
pub mod json;
mod relation;
mod status;
pub mod truncated;

pub use error::{ErrorInfo, ErrorKind};
pub use event::{Envelope, Event, Part, Stream, now_ms, preview};
pub use relation::Relation;
pub use status::{ExecStatus, NodeStatus};

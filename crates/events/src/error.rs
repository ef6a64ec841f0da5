//! Errors as recorded and shown: a kind, a message, and where it came from.

use serde::{Deserialize, Serialize};

/// An error as recorded: what kind, what it says, and where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorInfo {
    /// The node that failed, for execution-level errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(rename = "type")]
    pub kind: String,
    pub message: String,
    /// Absent when there is none: an empty one, as the runtime writes for the errors it makes
    /// itself (`Paused`, `Cancelled`, `CostLimit`), is read as none.
    #[serde(
        default,
        deserialize_with = "traceback_if_any",
        skip_serializing_if = "Option::is_none"
    )]
    pub traceback: Option<String>,
    /// What a failed call spent before it failed (an `agent` node whose CLI reported an error
    /// after using tokens): counted in the execution's totals like a success's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
}

/// A traceback as written, `None` for a blank one.
fn traceback_if_any<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let tb = Option::<String>::deserialize(d)?;
    Ok(tb.filter(|t| !t.trim().is_empty()))
}

impl ErrorInfo {
    pub fn new(kind: impl Into<String>, message: impl Into<String>) -> Self {
        ErrorInfo {
            node: None,
            kind: kind.into(),
            message: message.into(),
            traceback: None,
            usage: None,
            cost_usd: None,
        }
    }
}

/// The kinds of error flowrun itself records (a node's own errors carry their Python exception
/// name, or the type a node file chose, in [`ErrorInfo::kind`] instead).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The execution or a node ran past its deadline.
    Timeout,
    /// Stopped by request, Ctrl-C or SIGTERM, or never started because of one.
    Cancelled,
    /// The runner that ran the execution ended before it did.
    Interrupted,
    /// The child broke the protocol: no result, a malformed one, one contradicting the events.
    ProtocolError,
    /// The child process ended while a node ran.
    ProcessExited,
    /// The interpreter could not be started.
    SpawnError,
    /// What happened could not be recorded.
    StoreError,
    /// A bug in flowrun, recorded rather than left `running`.
    InternalError,
    /// The workflow failed without saying why.
    Error,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Timeout => "Timeout",
            ErrorKind::Cancelled => "Cancelled",
            ErrorKind::Interrupted => "Interrupted",
            ErrorKind::ProtocolError => "ProtocolError",
            ErrorKind::ProcessExited => "ProcessExited",
            ErrorKind::SpawnError => "SpawnError",
            ErrorKind::StoreError => "StoreError",
            ErrorKind::InternalError => "InternalError",
            ErrorKind::Error => "Error",
        }
    }
}

impl ErrorInfo {
    /// An error of a kind flowrun records itself.
    pub fn of(kind: ErrorKind, message: impl Into<String>) -> Self {
        ErrorInfo::new(kind.as_str(), message)
    }

    /// Is this an error of `kind`?
    pub fn is(&self, kind: ErrorKind) -> bool {
        self.kind == kind.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blank_traceback_is_none() {
        let read = |tb: &str| {
            let e: ErrorInfo = serde_json::from_str(&format!(
                r#"{{"type": "Paused", "message": "m", "traceback": {tb}}}"#
            ))
            .unwrap();
            e.traceback
        };
        assert_eq!(read(r#""""#), None);
        assert_eq!(read(r#"" \n""#), None);
        assert_eq!(read("null"), None);
        assert_eq!(read(r#""Traceback …""#).as_deref(), Some("Traceback …"));
        let e: ErrorInfo = serde_json::from_str(r#"{"type": "Paused", "message": "m"}"#).unwrap();
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"type":"Paused","message":"m"}"#
        );
    }
}

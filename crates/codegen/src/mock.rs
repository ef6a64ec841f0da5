//! Mocks: a node's outcome fixed by a workflow test (`flowrun test`) instead of running the node.
//!
//! A mock is one outcome per attempt — an output or an error — the last one repeating for any
//! further attempt. The runtime goes through the node's usual steps (templates rendered into
//! its input, `node_start`/`node_end` per attempt, `retry`, `on_error`) but takes each attempt's
//! outcome from the mock instead of calling the node's handler: an output ends the attempt
//! `mocked`, an error ends it `error` (and is retried like any failure). Any node type can be
//! mocked.
//!
//! Offline runs ([`crate::RenderOptions::offline`]): a node of a type that makes network requests
//! ([`makes_requests`]) that is neither mocked nor pinned fails at once, before any request,
//! with an error naming it.

use crate::pyliteral::{Data, dict};
use serde_json::Value;

/// What one mocked attempt gives.
#[derive(Debug, Clone, PartialEq)]
pub enum MockOutcome {
    /// The attempt succeeds with this output (status `mocked`).
    Output(Value),
    /// The attempt fails with this error (status `error`).
    Error { kind: String, message: String },
}

/// A node's mocked outcomes, one per attempt; the last repeats for further attempts. For a node
/// with `for_each` or `repeat`, either the same for every item (iteration) or, [`Mock::each`],
/// its own for each one in order, the last repeating for those after it.
#[derive(Debug, Clone, PartialEq)]
pub struct Mock {
    attempts: Vec<MockOutcome>,
    each: Vec<Mock>,
}

impl Mock {
    /// Outcomes per attempt (an empty list means one `null` output).
    pub fn new(attempts: Vec<MockOutcome>) -> Mock {
        let attempts = if attempts.is_empty() {
            vec![MockOutcome::Output(Value::Null)]
        } else {
            attempts
        };
        Mock {
            attempts,
            each: Vec::new(),
        }
    }

    /// One mock per item (iteration), in order; the last repeats. None of them is an `each`.
    pub fn each(parts: Vec<Mock>) -> Mock {
        let parts: Vec<Mock> = parts.into_iter().map(|p| Mock::new(p.attempts)).collect();
        // The first one's, for what reads a mock as one (none of the runtime's calls does).
        let first = parts.first().map_or_else(Vec::new, |p| p.attempts.clone());
        Mock {
            attempts: Mock::new(first).attempts,
            each: parts,
        }
    }

    /// The mocks of each item (iteration) in order, when they differ; empty when every one has
    /// [`Mock::attempts`].
    pub fn parts(&self) -> &[Mock] {
        &self.each
    }

    /// The same output for every attempt.
    pub fn output(output: Value) -> Mock {
        Mock::new(vec![MockOutcome::Output(output)])
    }

    pub fn attempts(&self) -> &[MockOutcome] {
        &self.attempts
    }

    /// The mock as the runtime reads it: `{"attempts": [{"output": …} | {"error": {…}}]}`, and
    /// `"each": [{"attempts": …}, …]` when items (iterations) have their own.
    pub(crate) fn data(&self) -> Data {
        if self.each.is_empty() {
            return self.attempts_data();
        }
        let each = self.each.iter().map(Mock::attempts_data).collect();
        dict([
            ("attempts", Data::List(Vec::new())),
            ("each", Data::List(each)),
        ])
    }

    fn attempts_data(&self) -> Data {
        let attempts = self
            .attempts
            .iter()
            .map(|a| match a {
                MockOutcome::Output(v) => dict([("output", Data::from(v))]),
                MockOutcome::Error { kind, message } => dict([(
                    "error",
                    dict([
                        ("type", Data::from(kind.as_str())),
                        ("message", Data::from(message.as_str())),
                    ]),
                )]),
            })
            .collect();
        dict([("attempts", Data::List(attempts))])
    }
}

/// Node types that make network requests of their own: refused in an offline run unless mocked.
/// By name, so that a type added later (`agent`) is covered the day it lands.
const REQUEST_TYPES: &[&str] = &["http_request", "llm", "agent"];

/// Does a node of this type make network requests of its own (`http_request`, `llm`, `agent`)?
/// `code` and `command` nodes can too, but flowrun cannot know: offline does not cover them.
pub fn makes_requests(type_name: &str) -> bool {
    REQUEST_TYPES.contains(&type_name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_empty_mock_is_one_null_output() {
        assert_eq!(
            Mock::new(vec![]).attempts(),
            &[MockOutcome::Output(Value::Null)]
        );
        assert_eq!(
            Mock::output(json!(1)).attempts(),
            &[MockOutcome::Output(json!(1))]
        );
    }

    #[test]
    fn request_types() {
        assert!(makes_requests("llm") && makes_requests("http_request") && makes_requests("agent"));
        assert!(!makes_requests("code") && !makes_requests("set"));
    }
}

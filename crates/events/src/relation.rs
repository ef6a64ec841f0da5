//! How an execution relates to the one it came from.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why an execution has a parent: `rerun` (the same definition and trigger again),
/// `resume` (again from the failed node, reusing earlier outputs) or `sub` (a child execution
/// started by a `workflow` node of the parent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Relation {
    Rerun,
    Resume,
    Sub,
}

impl Relation {
    pub fn as_str(self) -> &'static str {
        match self {
            Relation::Rerun => "rerun",
            Relation::Resume => "resume",
            Relation::Sub => "sub",
        }
    }

    pub fn parse(s: &str) -> Option<Relation> {
        [Relation::Rerun, Relation::Resume, Relation::Sub]
            .into_iter()
            .find(|r| r.as_str() == s)
    }
}

impl fmt::Display for Relation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

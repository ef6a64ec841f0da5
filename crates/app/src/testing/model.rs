//! What a test file holds once read, and what running its cases gives.

use super::expect::{Check, Mismatch};
use super::path::Path as JPath;
use flowrun_codegen::{Mock, Source};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// A test file, valid, with its workflow loaded.
#[derive(Debug)]
pub struct TestFile {
    /// The path as found (for messages and reports).
    pub file: String,
    /// Its directory: the workflow's path is relative to it.
    pub dir: PathBuf,
    /// `__snapshots__/<file name>.snap.json` beside it.
    pub snapshot_file: PathBuf,
    pub source: Arc<Source>,
    pub cases: Vec<Case>,
}

#[derive(Debug)]
pub struct Case {
    pub name: String,
    pub line: Option<usize>,
    pub trigger: Value,
    /// `Some(assertion on the message)` when the case expects the workflow's `inputs` schema to
    /// refuse the trigger (`refused: true` is `exists`): nothing is run. Its path is `refused`.
    pub refused: Option<Expectation>,
    pub mocks: BTreeMap<String, Mock>,
    pub expect: Vec<Expectation>,
    /// `Some(ignored paths)` when the case is snapshot-tested.
    pub snapshot: Option<Vec<JPath>>,
    /// `Some(reason)` (maybe empty) when the case is skipped.
    pub skip: Option<String>,
    pub timeout_ms: Option<u64>,
    pub env: Vec<(String, String)>,
}

/// One `expect` entry.
#[derive(Debug)]
pub struct Expectation {
    /// As written (the key in `expect`).
    pub text: String,
    pub path: JPath,
    pub line: Option<usize>,
    pub(crate) check: Check,
}

/// A case chosen to run: file and case index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CaseRef {
    pub file: usize,
    pub case: usize,
}

/// How a case ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Passed,
    /// Failed, then passed on a retry.
    Flaky,
    Failed,
    Skipped,
    /// Its execution started and was stopped by the interruption of the run (Ctrl-C,
    /// SIGTERM): it neither passed nor failed, and unlike a skipped case it ran.
    Interrupted,
}

/// What went wrong in one run of a case.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Failure {
    /// An `expect` entry did not hold.
    Assertion {
        path: String,
        line: Option<usize>,
        #[serde(flatten)]
        mismatch: Mismatch,
    },
    /// The snapshot differs (a unified diff, stored → actual) or is missing.
    Snapshot { message: String, diff: String },
    /// The case could not run (trigger data, connections, interpreter, …).
    Setup { message: String },
}

/// One run (attempt) of a case.
#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    /// The execution, to inspect with `show` (none when the case could not start).
    pub execution_id: Option<String>,
    pub status: Option<String>,
    /// The execution's error, in words (`Type in node 'x': message`), when it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The case asserts the status, and that assertion held: the error is what was expected,
    /// not why the case failed (a text report does not print it as the failure's cause).
    #[serde(skip)]
    pub error_expected: bool,
    pub duration_ms: f64,
    pub failures: Vec<Failure>,
    /// Why the execution failed, as a CI log shows it without the database: the last lines of
    /// its traceback, and the last lines the failing node printed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traceback: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub last_logs: Vec<String>,
}

impl Attempt {
    /// An attempt with no execution behind it (refused, not started), failing with `failures`.
    pub(crate) fn without_execution(failures: Vec<Failure>, duration_ms: f64) -> Attempt {
        Attempt {
            execution_id: None,
            status: None,
            error: None,
            error_expected: false,
            duration_ms,
            failures,
            traceback: None,
            last_logs: Vec::new(),
        }
    }

    /// The execution's error when it is not what the case expected: a text report prints it
    /// as part of why the case failed.
    pub fn unexpected_error(&self) -> Option<&String> {
        self.error.as_ref().filter(|_| !self.error_expected)
    }
}

/// What happened to a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotNote {
    Matched,
    Written,
    Updated,
}

/// A case's result, after any retries.
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    #[serde(skip)]
    pub at: CaseRef,
    pub name: String,
    pub line: Option<usize>,
    pub verdict: Verdict,
    /// Why it was skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip_reason: Option<String>,
    pub attempts: Vec<Attempt>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotNote>,
    /// The snapshot to write for this case (new or updated), kept until the run ends.
    #[serde(skip)]
    pub snapshot_write: Option<Value>,
}

impl CaseResult {
    /// The result of a case whose run failed by a bug in flowrun (`what` it said): failed,
    /// saying so.
    pub(crate) fn broken(at: CaseRef, case: &Case, what: String) -> CaseResult {
        CaseResult {
            at,
            name: case.name.clone(),
            line: case.line,
            verdict: Verdict::Failed,
            skip_reason: None,
            attempts: vec![Attempt::without_execution(
                vec![Failure::Setup {
                    message: format!("flowrun failed running this case (a bug): {what}"),
                }],
                0.0,
            )],
            snapshot: None,
            snapshot_write: None,
        }
    }

    /// The last attempt (the one that decided).
    pub fn last(&self) -> Option<&Attempt> {
        self.attempts.last()
    }

    pub fn duration_ms(&self) -> f64 {
        self.attempts.iter().map(|a| a.duration_ms).sum()
    }
}

/// Counts for the summary line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub passed: usize,
    pub failed: usize,
    pub flaky: usize,
    pub skipped: usize,
    pub interrupted: usize,
}

impl Totals {
    pub fn of(results: &[CaseResult]) -> Totals {
        let mut t = Totals::default();
        for r in results {
            match r.verdict {
                Verdict::Passed => t.passed += 1,
                Verdict::Flaky => t.flaky += 1,
                Verdict::Failed => t.failed += 1,
                Verdict::Skipped => t.skipped += 1,
                Verdict::Interrupted => t.interrupted += 1,
            }
        }
        t
    }

    /// `N passed, N failed` (`, N flaky`, `, N interrupted`, `, N skipped` when not zero).
    pub fn line(&self) -> String {
        let mut s = format!("{} passed, {} failed", self.passed, self.failed);
        if self.flaky > 0 {
            s.push_str(&format!(", {} flaky", self.flaky));
        }
        if self.interrupted > 0 {
            s.push_str(&format!(", {} interrupted", self.interrupted));
        }
        if self.skipped > 0 {
            s.push_str(&format!(", {} skipped", self.skipped));
        }
        s
    }
}

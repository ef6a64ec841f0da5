//! Workflow tests (`flowrun test`): test files that run a workflow's cases with mocked nodes and
//! check what each execution recorded.
//!
//! - [`load`]: finding and reading test files, every problem located (file, line, case, path);
//! - [`expect`]: the assertions; [`refused`]: triggers the workflow's `inputs` refuses;
//!   [`snapshot`]: snapshots beside the test file;
//! - [`select`]: `filter` and partitions; [`run`](mod@run): running the cases through
//!   [`crate::runner`] as executions of mode `test-suite`, concurrently, with retries;
//! - [`record`]: a case written from a stored execution; [`report`]: JUnit XML and JSON.
//!
//! Like the rest of this crate it knows no flag and prints nothing: the CLI does.

pub mod expect;
mod live;
pub mod load;
mod located;
pub(crate) mod mocks;
pub mod model;
pub mod path;
mod readback;
pub mod record;
mod refused;
pub mod report;
pub mod run;
pub mod select;
pub mod snapshot;

pub use load::{Problem, discover, is_test_file};
pub use model::*;
pub use run::{MODE, Settings, Suite, SuiteOutcome};
pub use select::{Partition, select};

/// Finds and reads the test files under `paths` and their stored snapshots; every problem of
/// every file at once. `updating` (`--update-snapshots`): a snapshot file that holds none (not
/// JSON, say a merge's conflict markers) is taken as empty, to be written anew, and said in
/// `Suite::replaced`.
pub fn load_suite(paths: &[std::path::PathBuf], updating: bool) -> Result<Suite, Vec<Problem>> {
    let found = discover(paths).map_err(|p| vec![p])?;
    let mut files = Vec::new();
    let mut problems = Vec::new();
    for f in &found {
        match load::load(f) {
            Ok(t) => files.push(t),
            Err(p) => problems.extend(p),
        }
    }
    let mut snapshots = Vec::new();
    let mut replaced = Vec::new();
    for f in &files {
        let any = f.cases.iter().any(|c| c.snapshot.is_some());
        let mut read = |file: &std::path::Path| match snapshot::load_lenient(file)? {
            (m, Some(broken)) if updating => {
                replaced.push(format!("replacing {}: {broken}", file.display()));
                Ok(m)
            }
            (_, Some(broken)) => Err(format!(
                "{broken}; `flowrun test --update-snapshots` writes it anew"
            )),
            (m, None) => Ok(m),
        };
        match any.then(|| read(&f.snapshot_file)).transpose() {
            Ok(s) => snapshots.push(s.unwrap_or_default()),
            Err(message) => problems.push(Problem {
                file: f.snapshot_file.display().to_string(),
                line: None,
                case: None,
                path: None,
                message,
                within: None,
            }),
        }
    }
    if problems.is_empty() {
        Ok(Suite {
            files,
            snapshots,
            replaced,
        })
    } else {
        Err(problems)
    }
}

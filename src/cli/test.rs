//! `flowrun test`: runs workflow test files (see `flowrun_app::testing`), prints each case as it
//! ends, writes the reports asked for, and maps the outcome to an exit code: 0 every case
//! passed (flaky ones included), 1 a case failed, 2 an invalid test file, workflow or usage,
//! 3 the environment (database), 130 interrupted.

use super::github::{annotate, annotations, gh_path, github};
use super::junit_file::{writable, write_junit};
use super::text::{clean_line, json_pretty};
use super::{Exit, open_store};
use clap::Args;
use flowrun_app::SharedStore;
use flowrun_app::signals::{self, Signals};
use flowrun_app::testing::{
    self, CaseResult, Failure, Partition, Problem, Settings, Suite, Totals, Verdict,
    record::RecordError, report,
};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::watch;

const USAGE: i32 = super::exit::USAGE;

#[derive(Args, Debug)]
pub struct TestArgs {
    /// Test files (*.test.yaml, *.test.yml, *.test.json) or directories to search for them
    /// (default: .).
    /// With --record-from: the test file to add the case to.
    pub paths: Vec<PathBuf>,
    /// Cases running at once (default: the number of CPUs).
    #[arg(short = 'j', long = "jobs", value_name = "N", value_parser = clap::value_parser!(u64).range(1..=256))]
    pub jobs: Option<u64>,
    /// Run one shard: hash:K/N (by a stable hash of each case) or count:K/N (even runs in order).
    #[arg(long, value_name = "hash:K/N|count:K/N", value_parser = parse_partition)]
    pub partition: Option<Partition>,
    /// Run a failed case again up to N times; one that then passes is reported flaky.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub retries: u32,
    /// Only the cases whose name or test file's path contains TEXT; given several times, the
    /// cases any of them picks.
    #[arg(long, value_name = "TEXT", value_parser = non_empty_filter)]
    pub filter: Vec<String>,
    /// Write a JUnit XML report to FILE.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// The results as one JSON document on stdout (the progress goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// Fail at once every http_request, llm and agent node that has no mock (no request is made).
    #[arg(long)]
    pub offline: bool,
    /// Write the snapshots that differ or are missing instead of failing.
    #[arg(long)]
    pub update_snapshots: bool,
    /// Write a test case from a stored execution: its trigger, the outputs of its http_request,
    /// llm and agent nodes as mocks, its output as a snapshot.
    #[arg(long, value_name = "ID", conflicts_with_all = ["junit", "json", "partition", "filter", "update_snapshots"])]
    pub record_from: Option<String>,
    /// With --record-from: the new case's name.
    #[arg(long, value_name = "NAME", requires = "record_from")]
    pub name: Option<String>,
    /// Python interpreter (default: as `run` finds it).
    #[arg(long, value_name = "PATH")]
    pub python: Option<PathBuf>,
    /// Environment variable for every case: KEY (its value from flowrun's environment) or KEY=VALUE
    /// (repeatable; a case's own `env` wins).
    #[arg(long = "env", value_name = "KEY[=VALUE]")]
    pub env: Vec<String>,
    /// Whole-execution timeout of each case that sets no `timeout_ms` of its own (a case's own
    /// wins; without either, the workflow's `timeout_ms`, else 60000).
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_ms: Option<u64>,
    /// Start every case cold (a new interpreter) instead of forking it from a warm template of
    /// its interpreter.
    #[arg(long)]
    pub cold: bool,
}

/// `--filter ""` is refused saying why (clap's own check said no value was given, when one was).
fn non_empty_filter(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err(
            "empty: it would pick every case (give part of a case's name or of a test file's path)"
                .into(),
        );
    }
    Ok(s.to_string())
}

fn parse_partition(s: &str) -> Result<Partition, String> {
    s.parse()
}

/// Where the human report goes: stdout, or stderr when stdout carries the JSON.
fn out(json: bool) -> Box<dyn Write> {
    if json {
        Box::new(std::io::stderr())
    } else {
        Box::new(std::io::stdout())
    }
}

fn print_problems(problems: &[Problem], json: bool) {
    for p in problems {
        // Each line of its own, cleaned: a test file's keys and names are in these messages,
        // and a line they started could be a CI log's command (GitHub reads stderr too).
        let text = p.to_string();
        let mut lines = text.lines();
        flowrun_app::say!("error: {}", clean_line(lines.next().unwrap_or("")));
        for line in lines {
            flowrun_app::say!("  {}", clean_line(line));
        }
        if github() && p.within.is_none() {
            annotate(
                json,
                "error",
                &p.file,
                p.line,
                "invalid test file",
                &p.message,
            );
        }
        // An invalid workflow is annotated where each of its problems is, in its own file.
        for d in p.within.iter().flat_map(|w| &w.0).filter(|_| github()) {
            annotate(
                json,
                "error",
                d.file.as_deref().unwrap_or(&p.file),
                d.line,
                &format!("invalid workflow (of {})", gh_path(&p.file)),
                &d.detail(),
            );
        }
    }
}

/// Prints the `--json` document on stdout (a run's, or an invalid suite's). A reader that went
/// away (`| head`) is not an error of the tests; a document that cannot be written otherwise
/// is (`out!`: exit 3).
/// As every `--json` of the CLI: what a test file or an execution named can move no cursor and
/// reorder no text on a terminal (`json_pretty` writes such characters as `\uXXXX`).
fn print_document(doc: &serde_json::Value) {
    out!("{}", json_pretty(doc));
}

/// Nothing was run: the reports asked for say why (a CI job reads them whatever the exit code,
/// and an empty report file would not parse), then `exit`.
fn unrun(
    args: &TestArgs,
    junit: impl FnOnce() -> String,
    json: impl FnOnce() -> serde_json::Value,
    exit: Exit,
) -> Exit {
    if let Some(f) = &args.junit {
        if let Err(e) = write_junit(f, &junit()) {
            return e;
        }
    }
    if args.json {
        print_document(&json());
    }
    exit
}

/// The suite cannot run at all (no store, no interpreter, nothing to run): [`unrun`].
fn not_run(args: &TestArgs, code: i32, message: String) -> Exit {
    let junit = || report::junit_not_run(&message);
    let json = || report::json_not_run(&message);
    unrun(args, junit, json, Exit::new(code, message.clone()))
}

pub fn test(args: TestArgs, db: Option<&Path>) -> Result<i32, Exit> {
    if let Some(id) = &args.record_from {
        return record(id, &args, db);
    }
    // As `run` takes them: `--env KEY` (its value from our environment) or `--env KEY=VALUE`.
    let (env, on_command_line) = super::input::env_values(&[], &args.env)?;
    let paths = if args.paths.is_empty() {
        vec![PathBuf::from(".")]
    } else {
        args.paths.clone()
    };
    // A report that cannot be written is known now, not after every case has run.
    let dir_like = |f: &&Path| f.is_dir() || f.as_os_str().as_encoded_bytes().ends_with(b"/");
    if let Some(f) = args.junit.as_deref().filter(dir_like) {
        return Err(Exit::new(
            USAGE,
            format!(
                "--junit {}: a directory; give the report's file name (as in --junit {})",
                f.display(),
                f.join("junit.xml").display()
            ),
        ));
    }
    if let Some(f) = &args.junit {
        writable(f)?;
    }
    let suite = match testing::load_suite(&paths, args.update_snapshots) {
        Ok(s) => s,
        Err(problems) => {
            print_problems(&problems, args.json);
            return Err(unrun(
                &args,
                || report::junit_invalid(&problems),
                || report::json_invalid(&problems),
                Exit::new(USAGE, report::invalid_line(&problems)),
            ));
        }
    };
    for note in &suite.replaced {
        flowrun_app::say!("{}", clean_line(note));
    }
    if suite.files.is_empty() {
        let shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        return Err(not_run(
            &args,
            USAGE,
            format!(
                "no test files (*.test.yaml, *.test.yml, *.test.json) under {}",
                shown.join(", ")
            ),
        ));
    }
    // A filter that matches nothing is a mistake (a typo in a CI job), not a suite that passed,
    // even beside one that does; an empty shard is not: more shards than cases leaves some empty.
    let unmatched: Vec<String> = args
        .filter
        .iter()
        .filter(|f| testing::select(&suite.files, std::slice::from_ref(f), None).is_empty())
        .map(|f| format!("--filter {}", clean_line(f)))
        .collect();
    if !unmatched.is_empty() {
        let it = if unmatched.len() == 1 {
            "it"
        } else {
            "any of them"
        };
        return Err(not_run(
            &args,
            USAGE,
            format!(
                "{}: no case's name or test file's path contains {it}",
                unmatched.join(", ")
            ),
        ));
    }
    let chosen = testing::select(&suite.files, &args.filter, args.partition);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let jobs = args.jobs.map_or(cpus, |j| j as usize);
    super::input::warn_secrets_on_command_line(
        suite.files.iter().map(|f| &f.source.workflow),
        &on_command_line,
        false,
    );
    let on_ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    let settings = Settings {
        jobs,
        retries: args.retries,
        offline: args.offline,
        update_snapshots: args.update_snapshots,
        write_new_snapshots: !on_ci,
        python: args.python.clone(),
        env,
        timeout_ms: args.timeout_ms,
    };
    // Every case that runs needs the interpreter: without one the suite cannot run, which is
    // not a case failing (exit 1) but the environment (3), as for `run`.
    let executes = chosen.iter().any(|at| {
        let case = &suite.files[at.file].cases[at.case];
        case.refused.is_none() && case.skip.is_none()
    });
    if executes {
        let cache = flowrun_app::paths::cache_dir();
        if let Err(e) = flowrun_app::python::discover(args.python.as_deref(), &cache) {
            return Err(not_run(&args, 3, e.to_string()));
        }
    }
    let store = match open_store(db) {
        Ok(s) => SharedStore::new(s),
        Err(e) => return Err(not_run(&args, e.code, e.message)),
    };
    flowrun_app::control::become_subreaper();
    if !args.cold {
        flowrun_app::control::enable_warm_starts(flowrun_app::control::WarmPolicy::Batch);
    }
    let rt = runtime_for(jobs, cpus)
        .enable_all()
        .build()
        .map_err(|e| not_run(&args, 3, format!("cannot start the async runtime: {e}")))?;
    let suite = Arc::new(suite);
    let (stop_tx, stop_rx) = watch::channel(None);
    let json = args.json;
    let outcome = rt.block_on(async {
        // SIGTERM is how CI cancels a job (and `timeout`, `docker stop`), SIGHUP a closed
        // terminal: the report, the JUnit and JSON documents and the snapshots of the cases
        // that ended are written for them too. A second signal ends the cases' processes at
        // once instead of after their grace period (Ctrl-C or SIGTERM: a closing terminal sends
        // SIGHUP twice by itself). Listened for before any case starts.
        let signals = Signals::new();
        let watcher = tokio::spawn(async move {
            let Ok(mut signals) = signals else {
                return std::future::pending().await;
            };
            let reason = signals.next().await;
            let _ = stop_tx.send(Some(reason));
            // The grace the cases run with (`flowrun test` sets none of its own).
            let grace = flowrun_app::runner::RunOptions::default().kill_grace_ms;
            let grace = std::time::Duration::from_millis(grace);
            flowrun_app::say!("{}", super::progress::stopping_line(reason, grace));
            loop {
                if signals::insists(signals.next().await) {
                    let _ = stop_tx.send(Some(reason));
                }
            }
        });
        let s = suite.clone();
        let mut w = out(json);
        let o = testing::run::run(
            &store,
            suite.clone(),
            &chosen,
            &settings,
            stop_rx.clone(),
            |r| {
                print_case(&mut w, &s, r, settings.retries);
            },
        )
        .await;
        watcher.abort();
        o
    });
    flowrun_app::control::end_strays();
    let results = &outcome.results;
    let mut w = out(json);
    for e in &outcome.snapshot_errors {
        let _ = writeln!(w, "error: {}", clean_line(e));
    }
    for d in &outcome.snapshots_dropped {
        let _ = writeln!(w, "{}", clean_line(d));
    }
    if github() {
        annotations(&suite, results, json);
    }
    if let Some(f) = &args.junit {
        write_junit(f, &report::junit(&suite, results))?;
    }
    if json {
        let doc = report::json(&suite, &outcome);
        print_document(&doc);
    }
    let written = outcome.snapshots_written;
    if written > 0 {
        // New ones and ones replaced, said apart: a replaced one changed what a case expects.
        let updated = results
            .iter()
            .filter(|r| {
                matches!(
                    r.snapshot,
                    Some(flowrun_app::testing::model::SnapshotNote::Updated)
                )
            })
            .count()
            .min(written);
        let what = match (written - updated, updated) {
            (new, 0) => format!("{new} snapshot(s) written"),
            (0, changed) => format!("{changed} snapshot(s) updated"),
            (new, changed) => format!("{new} snapshot(s) written, {changed} updated"),
        };
        let _ = writeln!(w, "{what} (commit the __snapshots__ directories)");
    }
    let totals = Totals::of(results);
    let _ = writeln!(w, "{}", outcome.summary());
    let interrupted = outcome.interrupted.is_some();
    Ok(if interrupted {
        130
    } else if totals.failed > 0 || !outcome.snapshot_errors.is_empty() {
        1
    } else {
        0
    })
}

/// One case's lines. A test file's names and reasons and what an execution says (its error,
/// what it output) are shown, not obeyed: controls as escapes, each on its own line of the
/// report, so none moves the cursor or starts a line of its own (a CI log's `::error::`).
fn print_case(w: &mut dyn Write, suite: &Suite, r: &CaseResult, retries: u32) {
    let file = clean_line(&suite.files[r.at.file].file);
    let name = clean_line(&r.name);
    let ms = r.duration_ms();
    let _ = match r.verdict {
        Verdict::Passed => writeln!(w, "✓ {file} › {name} ({ms:.0} ms)"),
        Verdict::Skipped => {
            let why = r.skip_reason.as_deref().filter(|s| !s.is_empty());
            writeln!(
                w,
                "○ {file} › {name} (skipped{})",
                why.map(|s| format!(": {}", clean_line(s)))
                    .unwrap_or_default()
            )
        }
        Verdict::Interrupted => {
            let _ = writeln!(w, "⊘ {file} › {name} (interrupted after {ms:.0} ms)");
            match r.last().and_then(|a| a.execution_id.as_ref()) {
                Some(id) => writeln!(w, "    stopped while it ran; details: flowrun show {id}"),
                None => Ok(()),
            }
        }
        Verdict::Flaky => writeln!(
            w,
            "↻ {file} › {name} (flaky: passed on attempt {} of {}, {ms:.0} ms)",
            r.attempts.len(),
            retries + 1
        ),
        Verdict::Failed => {
            let at = r.line.map(|l| format!(":{l}")).unwrap_or_default();
            let _ = writeln!(w, "✗ {file}{at} › {name} ({ms:.0} ms)");
            if let Some(a) = r.last() {
                for f in &a.failures {
                    let mut text = report::describe(f);
                    if matches!(f, Failure::Snapshot { diff, .. } if diff.is_empty()) {
                        text.push_str(
                            " (write it with `flowrun test --update-snapshots` and commit it)",
                        );
                    }
                    for line in text.lines() {
                        let _ = writeln!(w, "    {}", clean_line(line));
                    }
                }
                if let Some(e) = a.unexpected_error() {
                    let _ = writeln!(
                        w,
                        "    the execution failed: {}",
                        clean_line(&e.to_string())
                    );
                    for block in report::why_it_failed(a) {
                        for line in block.lines() {
                            let _ = writeln!(w, "    {}", clean_line(line));
                        }
                    }
                }
                if let Some(id) = &a.execution_id {
                    let _ = writeln!(w, "    details: flowrun show {id}");
                }
            }
            if r.attempts.len() > 1 {
                writeln!(w, "    (failed {} attempts)", r.attempts.len())
            } else {
                Ok(())
            }
        }
    };
}

/// `flowrun test --record-from ID [FILE] [--name NAME]`.
fn record(id: &str, args: &TestArgs, db: Option<&Path>) -> Result<i32, Exit> {
    if args.paths.len() > 1 {
        return Err(Exit::new(
            USAGE,
            "--record-from writes one test file: give at most one FILE",
        ));
    }
    if let Some(f) = args.paths.first() {
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        if !testing::is_test_file(&name) {
            return Err(Exit::new(
                USAGE,
                format!(
                    "{}: a test file's name ends with .test.yaml, .test.yml or .test.json",
                    f.display()
                ),
            ));
        }
    }
    let store = open_store(db)?;
    let id = store.resolve_id(id)?;
    let done = testing::record::record_from(
        &store,
        &id,
        args.paths.first().map(PathBuf::as_path),
        args.name.as_deref(),
    )
    .map_err(|e| match e {
        RecordError::Store(s) => Exit::from(s),
        e => Exit::new(USAGE, e.to_string()),
    })?;
    let mocked = if done.mocked.is_empty() {
        "no node mocked".to_string()
    } else {
        format!("mocked: {}", done.mocked.join(", "))
    };
    let mut w = std::io::stdout();
    let _ = writeln!(
        w,
        "{} {}: case \"{}\" from execution {id} ({}); snapshot in {}",
        if done.created { "wrote" } else { "added to" },
        clean_line(&done.test_file.display().to_string()),
        clean_line(&done.case),
        clean_line(&mocked),
        clean_line(&done.snapshot_file.display().to_string())
    );
    let _ = writeln!(
        w,
        "replay it offline: flowrun test {} --offline",
        clean_line(&done.test_file.display().to_string())
    );
    Ok(0)
}

/// The runtime that drives the cases: one thread when `jobs` is 1 or the machine has two CPUs
/// or fewer (`cpus`), else up to four workers. What a case costs this process (reading its
/// child's events, recording them, checking the result: ~1.7 ms of CPU for
/// examples/hello.json, nearly half of it in the kernel) is small beside its execution, and on
/// two cores the executions, their template and this process already take both: a second
/// runtime thread only adds hand-offs between threads, each a wake-up that waits for a core.
/// Measured on 2 CPUs, 100 cases of hello.json, alternated run by run: `-j 1` 334 → 315 ms,
/// `-j 2` 331 → 300, `-j 4` 341 → 283, and `-j 1 --cold` 1559 → 1448 (docs/performance.md,
/// item 16). With more CPUs and cases side by side, their work may spread over several
/// workers. Preparing a case runs on tokio's blocking threads either way; reading a small one
/// back runs on the runtime's own thread when it has one (`testing::readback::read_back`).
fn runtime_for(jobs: usize, cpus: usize) -> tokio::runtime::Builder {
    if jobs <= 1 || cpus <= 2 {
        return tokio::runtime::Builder::new_current_thread();
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(jobs.clamp(1, 4));
    builder
}

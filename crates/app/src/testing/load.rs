//! Finding and reading test files: every problem is reported at once, each with the file, the
//! line, the case and the path it is about.

use super::expect::{Check, check_path, check_status, node_ids};
use super::located::{self, Located};
use super::path::{Path as JPath, Seg};
use super::{mocks, model::*, refused, snapshot};
use flowrun_codegen::{Mock, Plan};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A problem with a test file (or the workflow it names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    pub line: Option<usize>,
    pub case: Option<String>,
    /// Where in the file: `cases[0].expect["output.text"]`, `workflow`, …
    pub path: Option<String>,
    pub message: String,
    /// When the problem is that the workflow it names is invalid: the workflow's own
    /// diagnostics, each at its place in the workflow file (GitHub annotates them there).
    pub within: Option<Box<flowrun_codegen::Diagnostics>>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        f.write_str(":")?;
        if let Some(c) = &self.case {
            write!(f, " case {}:", Value::String(c.clone()))?;
        }
        if let Some(p) = &self.path {
            write!(f, " {p}:")?;
        }
        write!(f, " {}", self.message)
    }
}

impl Problem {
    /// As `flowrun validate` reports problems: this one at its place in the test file (an
    /// invalid workflow said there, "the workflow ./wf.json is invalid:"), then, for an invalid
    /// workflow, each of its problems at its place in its own file.
    pub fn into_diagnostics(self) -> Vec<flowrun_codegen::Diagnostic> {
        let message = match &self.within {
            Some(_) => self.message.lines().next().unwrap_or_default().to_string(),
            None => self.message,
        };
        let mut d = flowrun_codegen::Diagnostic::new(match &self.case {
            Some(c) => format!("case {}: {message}", Value::String(c.clone())),
            None => message,
        });
        (d.file, d.line, d.field) = (Some(self.file), self.line, self.path);
        let mut out = vec![d];
        out.extend(self.within.into_iter().flat_map(|w| w.0));
        out
    }
}

/// Is this file name a test file's (`*.test.yaml`, `*.test.yml`, `*.test.json`)?
pub fn is_test_file(name: &str) -> bool {
    [".test.yaml", ".test.yml", ".test.json"]
        .iter()
        .any(|s| name.ends_with(s))
}

/// The test files under `paths` (files as given; directories searched, skipping hidden ones,
/// `target`, `node_modules` and `__snapshots__`; links to test files included), sorted, each
/// once.
pub fn discover(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Problem> {
    let mut out = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).map_err(|e| cannot_read(p, e))?;
        if meta.is_dir() {
            walk(p, &mut out)?;
        } else {
            out.push(p.clone());
        }
    }
    out.sort();
    // One file named twice (`a.test.yaml ./a.test.yaml`, or a directory and a file in it)
    // runs once, under the first of its names. A link is not followed: its `workflow:` is
    // relative to its own directory, so it is a test file of its own.
    let mut seen = std::collections::HashSet::new();
    out.retain(|p| {
        let dir = p.parent().filter(|d| !d.as_os_str().is_empty());
        let dir = std::fs::canonicalize(dir.unwrap_or(Path::new(".")));
        let key = match (dir, p.file_name()) {
            (Ok(d), Some(name)) => d.join(name),
            _ => p.clone(),
        };
        seen.insert(key)
    });
    Ok(out)
}

fn cannot_read(path: &Path, e: std::io::Error) -> Problem {
    Problem {
        file: path.display().to_string(),
        line: None,
        case: None,
        path: None,
        message: format!("cannot read: {e}"),
        within: None,
    }
}

/// A directory that cannot be read is a problem, not a directory without tests: a CI job would
/// pass running fewer cases than it has.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), Problem> {
    let mut entries = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| cannot_read(dir, e))? {
        entries.push(e.map_err(|e| cannot_read(dir, e))?);
    }
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().to_string();
        let ty = e.file_type().map_err(|err| cannot_read(&e.path(), err))?;
        if ty.is_dir() {
            let skip = name.starts_with('.')
                || ["target", "node_modules", "__snapshots__"].contains(&name.as_str());
            if !skip {
                walk(&e.path(), out)?;
            }
        } else if is_test_file(&name) && (ty.is_file() || ty.is_symlink()) {
            // A link to a test file counts (one to a directory is not followed: no loops); what
            // it points to is read as any test file is, and refused if it is not a regular file.
            // Its `workflow:` is relative to the link's directory, as for any file found there.
            out.push(e.path());
        }
    }
    Ok(())
}

/// Collects the problems of one file.
pub(super) struct Reader<'a> {
    file: String,
    pub(super) located: &'a Located,
    problems: Vec<Problem>,
}

impl Reader<'_> {
    pub(super) fn problem(&mut self, path: &JPath, case: Option<&str>, message: impl Into<String>) {
        self.problems.push(Problem {
            file: self.file.clone(),
            line: self.located.line(path),
            case: case.map(str::to_string),
            path: (!path.0.is_empty()).then(|| path.to_string()),
            message: message.into(),
            within: None,
        });
    }

    /// Fields of `obj` not in `known` are problems.
    fn unknown_fields(
        &mut self,
        obj: &Map<String, Value>,
        at: &JPath,
        case: Option<&str>,
        known: &[&str],
    ) {
        for k in obj.keys() {
            // Top-level `x-…` keys hold YAML anchors, as in workflow files.
            let anchors = at.0.is_empty() && k.starts_with("x-");
            if !(known.contains(&k.as_str()) || anchors) {
                self.problem(
                    &at.key(k),
                    case,
                    format!(
                        "unknown field '{k}'{} (one of: {})",
                        flowrun_codegen::did_you_mean(k, known.iter().copied()),
                        known.join(", ")
                    ),
                );
            }
        }
    }
}

/// Reads a test file and the workflow it names.
pub fn load(path: &Path) -> Result<TestFile, Vec<Problem>> {
    let file = path.display().to_string();
    let fail = |line, message: String| {
        vec![Problem {
            file: file.clone(),
            line,
            case: None,
            path: None,
            message,
            within: None,
        }]
    };
    let text = flowrun_codegen::read_text_file(
        path,
        "test file",
        "a test file is a .test.yaml, .test.yml or .test.json file",
    )
    .map_err(|e| fail(None, e))?;
    let json = path.extension().is_some_and(|e| e == "json");
    let located = located::parse(&text, json).map_err(|(line, m)| fail(line, m))?;
    let mut r = Reader {
        file: file.clone(),
        located: &located,
        problems: Vec::new(),
    };
    let root = JPath::default();
    let Value::Object(top) = &located.value else {
        return Err(fail(
            Some(1),
            "expected a mapping with `workflow` and `cases`".into(),
        ));
    };
    if top.contains_key("nodes") && !top.contains_key("cases") {
        return Err(fail(
            Some(1),
            "this is a workflow, not a test file: a test file names one (`workflow: ./file`) \
             and lists `cases:` to run against it"
                .into(),
        ));
    }
    r.unknown_fields(top, &root, None, &["workflow", "cases", "mock"]);
    let dir = path.parent().unwrap_or(Path::new("")).to_path_buf();
    let loaded = match top.get("workflow") {
        Some(Value::String(w)) => {
            // `./w.json` beside `examples/t.test.yaml` is `examples/w.json` (not `examples/./w.json`).
            let wpath: PathBuf = dir
                .join(w)
                .components()
                .filter(|c| !matches!(c, std::path::Component::CurDir))
                .collect();
            match flowrun_codegen::load_file(&wpath)
                .and_then(|s| crate::inputs::compile(&s).map(|p| (s, p)))
            {
                Ok(sp) => Some(sp),
                Err(d) => {
                    r.problem(
                        &root.key("workflow"),
                        None,
                        format!("the workflow {w} is invalid:\n{d}"),
                    );
                    if let Some(p) = r.problems.last_mut() {
                        p.within = Some(Box::new(d));
                    }
                    None
                }
            }
        }
        Some(_) => {
            r.problem(
                &root.key("workflow"),
                None,
                "expected the workflow file's path (relative to this file)",
            );
            None
        }
        None => {
            r.problem(
                &root,
                None,
                "missing field `workflow`: the workflow file to test, relative to this file",
            );
            None
        }
    };
    let plan = loaded.as_ref().map(|(_, p)| p);
    let shared_mocks = match top.get("mock") {
        Some(m) => read_mocks(&mut r, m, &root.key("mock"), None, plan),
        None => BTreeMap::new(),
    };
    let mut cases = Vec::new();
    match top.get("cases") {
        Some(Value::Array(list)) if !list.is_empty() => {
            for (i, c) in list.iter().enumerate() {
                let at = root.key("cases").child(Seg::Index(i));
                if let Some(case) = read_case(&mut r, c, &at, plan, &shared_mocks) {
                    if cases.iter().any(|k: &Case| k.name == case.name) {
                        let name = case.name.clone();
                        r.problem(
                            &at.key("name"),
                            Some(&name),
                            "two cases have this name; names are unique in a file",
                        );
                    }
                    cases.push(case);
                }
            }
        }
        Some(Value::Array(_)) => r.problem(
            &root.key("cases"),
            None,
            "the list of cases is empty: a test file tests something",
        ),
        Some(_) => r.problem(&root.key("cases"), None, "expected a list of cases"),
        None => r.problem(&root, None, "missing field `cases`"),
    }
    if !r.problems.is_empty() {
        let mut problems = r.problems;
        problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
        return Err(problems);
    }
    let (source, _) = loaded.expect("no problem, so the workflow loaded");
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    Ok(TestFile {
        file,
        snapshot_file: dir.join("__snapshots__").join(format!("{name}.snap.json")),
        dir,
        source: Arc::new(source),
        cases,
    })
}

fn read_mocks(
    r: &mut Reader,
    v: &Value,
    at: &JPath,
    case: Option<&str>,
    plan: Option<&Plan>,
) -> BTreeMap<String, Mock> {
    let mut out = BTreeMap::new();
    let Value::Object(m) = v else {
        r.problem(at, case, "expected a mapping of node id to its mock");
        return out;
    };
    for (node, mv) in m {
        let here = at.key(node);
        // A loop node's mock is each item's (or iteration's) outcome, not its list of them: the
        // advice about writing a list output is not the same for it.
        let part =
            plan.and_then(|p| p.workflow.node(node))
                .and_then(|n| match (&n.for_each, &n.repeat) {
                    (Some(_), _) => Some("item"),
                    (_, Some(_)) => Some("iteration"),
                    _ => None,
                });
        let mock = match mocks::parse(mv, part) {
            Ok(m) => m,
            Err(e) => {
                r.problem(&here, case, e);
                continue;
            }
        };
        if let Some(plan) = plan {
            match plan.workflow.node(node) {
                None => {
                    r.problem(
                        &here,
                        case,
                        format!(
                            "the workflow has no node '{node}' to mock; its nodes are: {}",
                            node_ids(plan)
                        ),
                    );
                    continue;
                }
                Some(n) if mocks::most_attempts(&mock) > n.retry.max_attempts as usize => {
                    r.problem(
                        &here,
                        case,
                        format!(
                            "{} attempts are mocked, but node '{node}' makes at most {} (its retry.max_attempts): a list gives one outcome per attempt; {}",
                            mocks::most_attempts(&mock),
                            n.retry.max_attempts,
                            mocks::list_output(part)
                        ),
                    );
                    continue;
                }
                Some(_) => {}
            }
        }
        out.insert(node.clone(), mock);
    }
    out
}

const CASE_FIELDS: &[&str] = &[
    "name",
    "trigger",
    "refused",
    "mock",
    "expect",
    "snapshot",
    "ignore",
    "skip",
    "timeout_ms",
    "env",
];

fn read_case(
    r: &mut Reader,
    v: &Value,
    at: &JPath,
    plan: Option<&Plan>,
    shared: &BTreeMap<String, Mock>,
) -> Option<Case> {
    let Value::Object(c) = v else {
        r.problem(
            at,
            None,
            "expected a case: a mapping with name, trigger, mock, expect, …",
        );
        return None;
    };
    // Without a name the case is still read, so that its other problems are reported too.
    let (name, named) = match c.get("name") {
        Some(Value::String(s)) if !s.trim().is_empty() => (s.clone(), true),
        _ => {
            r.problem(at, None, "a case needs a name (a non-empty string)");
            (String::new(), false)
        }
    };
    let case = named.then_some(name.as_str());
    r.unknown_fields(c, at, case, CASE_FIELDS);
    // Any JSON value, as `flowrun run --input` takes (a workflow whose `inputs` is a list's
    // schema is given a list); none is `{}`, as for a run.
    let trigger = match c.get("trigger") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(t) => t.clone(),
    };
    let mut mocks = shared.clone();
    if let Some(m) = c.get("mock") {
        mocks.extend(read_mocks(r, m, &at.key("mock"), case, plan));
    }
    let mut expect = Vec::new();
    match c.get("expect") {
        None => {}
        Some(Value::Object(e)) => {
            for (text, assertion) in e {
                let here = at.key("expect").key(text);
                let path = match JPath::parse(text).and_then(|p| check_path(&p, plan).map(|_| p)) {
                    Ok(p) => p,
                    Err(m) => {
                        r.problem(&here, case, m);
                        continue;
                    }
                };
                match Check::parse(assertion).and_then(|c| check_status(&path, &c).map(|_| c)) {
                    Ok(check) => expect.push(Expectation {
                        line: r.located.line(&here),
                        text: text.clone(),
                        path,
                        check,
                    }),
                    Err(m) => r.problem(&here, case, m),
                }
            }
        }
        Some(_) => r.problem(
            &at.key("expect"),
            case,
            "expected a mapping of path to assertion",
        ),
    }
    let mut ignore = Vec::new();
    let snapshot = match c.get("snapshot") {
        None | Some(Value::Bool(false)) => false,
        Some(Value::Bool(true)) => true,
        Some(Value::Object(s)) => {
            r.unknown_fields(s, &at.key("snapshot"), case, &["ignore"]);
            ignore.extend(read_ignore(
                r,
                s.get("ignore"),
                &at.key("snapshot").key("ignore"),
                case,
                plan,
            ));
            true
        }
        Some(_) => {
            r.problem(
                &at.key("snapshot"),
                case,
                "expected true, false or {ignore: [paths]}",
            );
            false
        }
    };
    if c.contains_key("ignore") {
        if !snapshot {
            r.problem(
                &at.key("ignore"),
                case,
                "ignore: paths left out of the snapshot, but this case has no `snapshot: true`",
            );
        }
        ignore.extend(read_ignore(
            r,
            c.get("ignore"),
            &at.key("ignore"),
            case,
            plan,
        ));
    }
    let skip = match c.get("skip") {
        None | Some(Value::Bool(false)) => None,
        Some(Value::Bool(true)) => Some(String::new()),
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            r.problem(
                &at.key("skip"),
                case,
                "expected true or a reason (a string)",
            );
            None
        }
    };
    let timeout_ms = match c.get("timeout_ms") {
        None => None,
        Some(t) => match t.as_u64().filter(|t| *t > 0) {
            Some(t) => Some(t),
            None => {
                r.problem(
                    &at.key("timeout_ms"),
                    case,
                    "expected a positive number of milliseconds",
                );
                None
            }
        },
    };
    let mut env = Vec::new();
    match c.get("env") {
        None => {}
        Some(Value::Object(m)) => {
            for (k, v) in m {
                match v {
                    Value::String(s) => env.push((k.clone(), s.clone())),
                    Value::Number(_) | Value::Bool(_) => env.push((k.clone(), v.to_string())),
                    _ => r.problem(&at.key("env").key(k), case, "expected a text value"),
                }
            }
        }
        Some(_) => r.problem(
            &at.key("env"),
            case,
            "expected a mapping of variable to value",
        ),
    }
    let refused = refused::read(r, c, at, case, plan, &trigger);
    if !named {
        return None;
    }
    Some(Case {
        name,
        line: r.located.line(at),
        trigger,
        refused,
        mocks,
        expect,
        snapshot: snapshot.then_some(ignore),
        skip,
        timeout_ms,
        env,
    })
}

fn read_ignore(
    r: &mut Reader,
    v: Option<&Value>,
    at: &JPath,
    case: Option<&str>,
    plan: Option<&Plan>,
) -> Vec<JPath> {
    let Some(Value::Array(list)) = v else {
        if v.is_some() {
            r.problem(at, case, "expected a list of paths");
        }
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, p) in list.iter().enumerate() {
        let checked = p
            .as_str()
            .map(|p| JPath::parse(p).and_then(|p| snapshot::ignore_path(p, plan)));
        match checked {
            Some(Ok(p)) => out.push(p),
            Some(Err(e)) => r.problem(&at.child(Seg::Index(i)), case, e),
            None => r.problem(&at.child(Seg::Index(i)), case, "expected a path (a string)"),
        }
    }
    out
}

//! A test case written from a stored execution: its trigger data, the outcomes of its nodes that
//! make requests (`http_request`, `llm`, `agent`, and `workflow`, whose child's requests a case
//! cannot mock; per attempt when they were retried; a loop node's, when all its items or
//! iterations that ran went the same way, as one of them) as mocks,
//! its status as an assertion and what it gave as a snapshot. Record once against the real API,
//! replay offline from then on.

use super::located;
use super::mocks;
use super::path::{Path as JPath, Seg};
use super::readback::record_view;
use super::snapshot;
use flowrun_codegen::mock::makes_requests;
use flowrun_codegen::{Mock, MockOutcome};
use flowrun_events::Part;
use flowrun_store::{NodeRow, Store, StoreError, StoredEvent};
use serde_json::{Map, Value, json};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("execution {0} has not ended yet")]
    NotFinished(String),
    #[error(
        "execution {0} ran a definition that has no file (sent by an editor): there is no workflow file for a test to name"
    )]
    NoFile(String),
    #[error("the workflow file {0}, which execution {1} ran, is not found from here")]
    WorkflowMissing(String, String),
    #[error(
        "{what} of execution {id} was cut when it was stored (too large): it cannot be replayed"
    )]
    Truncated { id: String, what: String },
    #[error(
        "the workflow {file} (as it is now) refuses the trigger of execution {id}, so a case of it could not run: {message}\nrecord an execution of the workflow as it is now, or write the case by hand with `refused: true`"
    )]
    Refused {
        file: String,
        id: String,
        message: String,
    },
    #[error(
        "node '{node}' of execution {id} ran {parts} that ended differently, and a mock gives each the same outcome: no case of it could replay this execution\n{advice}"
    )]
    Loop {
        id: String,
        node: String,
        parts: &'static str,
        advice: &'static str,
    },
    #[error("{0}")]
    TestFile(String),
}

/// What was written.
#[derive(Debug)]
pub struct Recorded {
    pub test_file: PathBuf,
    pub created: bool,
    pub case: String,
    /// The mocked nodes.
    pub mocked: Vec<String>,
    pub snapshot_file: PathBuf,
}

fn truncated(v: &Value) -> bool {
    flowrun_events::truncated::is_marker(v)
        || match v {
            Value::Array(a) => a.iter().any(truncated),
            Value::Object(m) => m.values().any(truncated),
            _ => false,
        }
}

/// Writes a case recorded from execution `id` (a full id) into `test_file` (default:
/// `<workflow name>.test.yaml` beside the workflow), creating it if needed, and its snapshot.
pub fn record_from(
    store: &Store,
    id: &str,
    test_file: Option<&Path>,
    name: Option<&str>,
) -> Result<Recorded, RecordError> {
    let e = store.execution(id)?;
    if !e.status.is_final() {
        return Err(RecordError::NotFinished(id.into()));
    }
    let workflow = PathBuf::from(
        e.source_file
            .clone()
            .ok_or_else(|| RecordError::NoFile(id.into()))?,
    );
    if !workflow.is_file() {
        return Err(RecordError::WorkflowMissing(
            workflow.display().to_string(),
            id.into(),
        ));
    }
    let cut = |what: &str| RecordError::Truncated {
        id: id.into(),
        what: what.into(),
    };
    if truncated(&e.trigger) {
        return Err(cut("the trigger data"));
    }
    // A case must run against the workflow as it is now: a trigger its `inputs` schema refuses
    // (changed since the run) would make the whole test file invalid.
    let schema = flowrun_codegen::load_file(&workflow)
        .ok()
        .and_then(|s| crate::inputs::compile(&s).ok())
        .and_then(|p| p.workflow.inputs);
    if let Some(message) = super::refused::refusal(schema.as_ref(), &e.trigger) {
        return Err(RecordError::Refused {
            file: workflow.display().to_string(),
            id: id.into(),
            message,
        });
    }
    let definition = store.snapshot(&e.snapshot_hash)?.unwrap_or(Value::Null);
    // A node as the definition that ran has it (Null when it has none by that id).
    let in_definition = |node: &str| {
        definition["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|n| n["id"] == node)
            .unwrap_or(&Value::Null)
    };
    let pinned_in_definition = |node: &str| in_definition(node).get("pinned").is_some();
    let type_of = |node: &str| {
        in_definition(node)["type"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    let looping = |node: &str| {
        let n = in_definition(node);
        n.get("for_each").is_some() || n.get("repeat").is_some()
    };
    let ends = store.events(id, 0, Some("node_end"))?;
    let rows = store.nodes(id)?;
    let mut mock_map = Map::new();
    let mut mocked_ok = Vec::new();
    for row in rows.iter().filter(|r| r.part.is_none()) {
        use flowrun_events::NodeStatus::*;
        let node = &row.node_id;
        // A sub-workflow's requests are made by its child's nodes, which a case of this
        // workflow cannot mock: the node that runs it is mocked instead.
        let kind = type_of(node);
        let requests = makes_requests(&kind) || kind == "workflow";
        let wanted = match row.status {
            Success | Error | Timeout if requests => true,
            Pinned => !pinned_in_definition(node),
            Reused | Mocked => true,
            _ => false,
        };
        if !wanted {
            continue;
        }
        // A for_each or repeat node's mock is each item's (iteration's) outcome: recorded only
        // when every one that ran went the same way (items after a failure are skipped, by
        // fail_fast), and not at all when none ran.
        let parts: Vec<&NodeRow> = rows
            .iter()
            .filter(|r| r.node_id == *node && r.part.is_some())
            .filter(|r| r.status != Skipped)
            .collect();
        if looping(node) && parts.is_empty() {
            continue;
        }
        let attempts = if let Some((first, rest)) = parts.split_first() {
            let one = outcomes(&ends, first).map_err(|w| cut(&w))?;
            for other in rest {
                if outcomes(&ends, other).map_err(|w| cut(&w))? != one {
                    let (parts, advice) = match first.part {
                        Some(Part::Iteration(_)) => ("repeat iterations", "write the case by hand"),
                        _ => (
                            "for_each items",
                            "mock what it iterates over instead, or write the case by hand",
                        ),
                    };
                    return Err(RecordError::Loop {
                        id: id.into(),
                        node: node.clone(),
                        parts,
                        advice,
                    });
                }
            }
            one
        } else {
            outcomes(&ends, row).map_err(|w| cut(&w))?
        };
        if row.status.has_output() {
            mocked_ok.push(node.clone());
        }
        mock_map.insert(node.clone(), mocks::to_value(&Mock::new(attempts)));
    }
    let mocked: Vec<String> = mock_map.keys().cloned().collect();
    // What the replay will record: the mocked nodes' statuses, and the values that held this
    // execution's id ignored (a replay has its own).
    let mut view = record_view(store, id)?;
    for n in &mocked_ok {
        view["nodes"][n]["status"] = json!("mocked");
        for parts in ["items", "iterations"] {
            if let Some(Value::Array(list)) = view["nodes"][n].get_mut(parts) {
                for part in list.iter_mut().filter(|p| p.get("status").is_some()) {
                    part["status"] = json!("mocked");
                }
            }
        }
    }
    let mut ignore = Vec::new();
    find_id(
        &snapshot::of_record(&view, &[]),
        id,
        &JPath::default(),
        &mut ignore,
    );
    let snap = snapshot::of_record(&view, &ignore);
    let case_name = name
        .map(str::to_string)
        .unwrap_or_else(|| format!("recorded from execution {id}"));
    let mut case = Map::new();
    case.insert("name".into(), json!(case_name));
    case.insert("trigger".into(), e.trigger.clone());
    if !mock_map.is_empty() {
        case.insert("mock".into(), Value::Object(mock_map));
    }
    case.insert("expect".into(), json!({"status": e.status.as_str()}));
    if ignore.is_empty() {
        case.insert("snapshot".into(), json!(true));
    } else {
        let paths: Vec<String> = ignore.iter().map(|p| p.to_string()).collect();
        case.insert("snapshot".into(), json!({"ignore": paths}));
    }
    let test_file = test_file.map(Path::to_path_buf).unwrap_or_else(|| {
        let stem = workflow
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default();
        workflow.with_file_name(format!("{stem}.test.yaml"))
    });
    let created = !test_file.exists();
    write_case(&test_file, &workflow, &case_name, Value::Object(case))?;
    let file_name = test_file
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let snapshot_file = test_file
        .parent()
        .unwrap_or(Path::new(""))
        .join("__snapshots__")
        .join(format!("{file_name}.snap.json"));
    snapshot::write(&snapshot_file, &[(case_name.clone(), snap)], None)
        .map_err(RecordError::TestFile)?;
    Ok(Recorded {
        test_file,
        created,
        case: case_name,
        mocked,
        snapshot_file,
    })
}

/// A node's (or one item's or iteration's) outcomes, attempt by attempt: the failures a retry
/// followed, then how it ended. Err: what of it was cut when stored (too large to replay).
fn outcomes(ends: &[StoredEvent], row: &NodeRow) -> Result<Vec<MockOutcome>, String> {
    let (item, iteration) = Part::fields(row.part);
    let part_of = |ev: &StoredEvent| {
        let field = |k: &str| ev.data.get(k).and_then(Value::as_u64);
        field("item") == item.map(u64::from) && field("iteration") == iteration.map(u64::from)
    };
    let node = row.node_id.as_str();
    let mut attempts: Vec<MockOutcome> = ends
        .iter()
        .filter(|ev| ev.node_id.as_deref() == Some(node) && ev.data["retrying"] == true)
        .filter(|ev| part_of(ev))
        // A retry withdrawn (the run was ending) left its attempt the row's: counted once.
        .filter(|ev| ev.data["attempt"].as_u64() != Some(u64::from(row.attempt)))
        .map(|ev| error_outcome(&ev.data["error"]))
        .collect();
    if row.status.has_output() {
        let out = row.output.clone().unwrap_or(Value::Null);
        if truncated(&out) {
            return Err(match row.part {
                None => format!("the output of node '{node}'"),
                Some(_) => format!("an item's output of node '{node}'"),
            });
        }
        attempts.push(MockOutcome::Output(out));
    } else {
        let err = row
            .error
            .as_ref()
            .map(|e| json!({"type": e.kind, "message": e.message}));
        attempts.push(error_outcome(&err.unwrap_or(Value::Null)));
    }
    Ok(attempts)
}

fn error_outcome(e: &Value) -> MockOutcome {
    MockOutcome::Error {
        kind: e["type"].as_str().unwrap_or("Error").to_string(),
        message: e["message"].as_str().unwrap_or("").to_string(),
    }
}

/// Paths of the strings in `v` that hold `id`.
fn find_id(v: &Value, id: &str, at: &JPath, out: &mut Vec<JPath>) {
    match v {
        Value::String(s) if s.contains(id) => out.push(at.clone()),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, x)| find_id(x, id, &at.child(Seg::Index(i)), out)),
        Value::Object(m) => m.iter().for_each(|(k, x)| find_id(x, id, &at.key(k), out)),
        _ => {}
    }
}

/// The workflow's path as a test file in `dir` names it.
fn relative(workflow: &Path, dir: &Path) -> String {
    let abs = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let (w, d) = (abs(workflow), abs(dir));
    let (wc, dc): (Vec<_>, Vec<_>) = (w.components().collect(), d.components().collect());
    let common = wc.iter().zip(&dc).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<String> = vec!["..".into(); dc.len() - common];
    parts.extend(
        wc[common..]
            .iter()
            .map(|c| c.as_os_str().to_string_lossy().to_string()),
    );
    let rel = parts.join("/");
    if rel.starts_with("..") {
        rel
    } else {
        format!("./{rel}")
    }
}

/// Adds `case` to a test file: a new YAML file, a JSON file rewritten, or the case's YAML
/// appended to a file whose `cases` list is its last block.
fn write_case(file: &Path, workflow: &Path, name: &str, case: Value) -> Result<(), RecordError> {
    let bad = |m: String| RecordError::TestFile(format!("{}: {m}", file.display()));
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let wref = relative(workflow, dir);
    let json = file.extension().is_some_and(|e| e == "json");
    if !file.exists() {
        let text = if json {
            let doc = json!({"workflow": wref, "cases": [case]});
            serde_json::to_string_pretty(&doc).expect("json") + "\n"
        } else {
            format!(
                "workflow: {}\ncases:\n{}",
                yaml_scalar(&wref),
                yaml_item(&case, 2)
            )
        };
        // Created, never written through a file (or a link) that appeared since the look above.
        return std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(file)
            .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()))
            .map_err(|e| bad(e.to_string()));
    }
    let hint = "a test file is a .test.yaml, .test.yml or .test.json file";
    let text = flowrun_codegen::read_text_file(file, "test file", hint).map_err(bad)?;
    let located = located::parse(&text, json).map_err(|(_, m)| bad(m))?;
    let names_it = located.value["workflow"].as_str().is_some_and(|w| {
        std::fs::canonicalize(dir.join(w)).ok() == std::fs::canonicalize(workflow).ok()
    });
    if !names_it {
        return Err(bad(format!(
            "it tests another workflow than {}",
            workflow.display()
        )));
    }
    let cases = located.value["cases"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if cases.iter().any(|c| c["name"] == name) {
        return Err(bad(format!(
            "it has a case named \"{name}\" already (name the new one with `--name`)"
        )));
    }
    let text = if json {
        let mut doc = located.value.clone();
        match doc.get_mut("cases") {
            Some(Value::Array(list)) => list.push(case),
            _ => doc["cases"] = json!([case]),
        }
        serde_json::to_string_pretty(&doc).expect("json") + "\n"
    } else {
        let root = JPath::default();
        let cases_line = located.line(&root.key("cases")).unwrap_or(0);
        let last_key = located
            .value
            .as_object()
            .into_iter()
            .flatten()
            .all(|(k, _)| k == "cases" || located.line(&root.key(k)).unwrap_or(0) < cases_line);
        let first = root.key("cases").child(Seg::Index(0));
        let first_line = located
            .line(&first)
            .filter(|l| *l > cases_line && !cases.is_empty());
        let (true, Some(first_line)) = (last_key, first_line) else {
            return Err(bad(
                "its `cases` is not a block list at the end of the file: add the case by hand"
                    .into(),
            ));
        };
        let item = text.lines().nth(first_line - 1).unwrap_or("");
        let indent = item.len() - item.trim_start().len();
        let mut t = text.clone();
        if !t.ends_with('\n') {
            t.push('\n');
        }
        t + &yaml_item(&case, indent)
    };
    // Whole or not at all: a crash or a full disk never leaves the user's file cut short.
    // A link to a test file (which counts as one) is written through: its target is the file.
    let target = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
    crate::files::write_atomically(&target, &text).map_err(|e| bad(e.to_string()))
}

fn yaml_scalar(s: &str) -> String {
    serde_yaml_ng::to_string(s)
        .expect("yaml")
        .trim_end()
        .to_string()
}

/// `value` as one item of a block list, indented by `indent`.
fn yaml_item(value: &Value, indent: usize) -> String {
    let body = serde_yaml_ng::to_string(value).expect("yaml");
    let pad = " ".repeat(indent);
    let mut out = String::new();
    for (i, line) in body.lines().enumerate() {
        let lead = if i == 0 { "- " } else { "  " };
        out.push_str(&format!("{pad}{lead}{line}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("a/b")).unwrap();
        std::fs::write(d.path().join("a/w.json"), "{}").unwrap();
        assert_eq!(
            relative(&d.path().join("a/w.json"), &d.path().join("a")),
            "./w.json"
        );
        assert_eq!(
            relative(&d.path().join("a/w.json"), &d.path().join("a/b")),
            "../w.json"
        );
    }

    #[test]
    fn yaml_items_read_back() {
        let case = json!({"name": "x: y", "trigger": {"q": "a\nb"}, "mock": {"ask": [{"error": {"type": "E", "message": "m"}}, {"content": "ok"}]}});
        let text = format!("cases:\n{}", yaml_item(&case, 2));
        let back: Value = serde_yaml_ng::from_str(&text).unwrap();
        assert_eq!(back["cases"][0], case);
    }
}

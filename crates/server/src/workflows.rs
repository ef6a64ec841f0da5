//! Saved workflows: every `.json`, `.yaml` and `.yml` file directly in `--workflows DIR` but
//! hidden files and test files (`*.test.yaml`, kept beside their workflows), read again on every
//! request (an editor saves them while the server runs).

use flowrun_codegen::model::Workflow;
use flowrun_codegen::{Diagnostic, Diagnostics, Plan, Source};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// One workflow file and what became of it.
pub struct Entry {
    /// The workflow's `id`, or the file name without extension when the file does not parse.
    pub id: String,
    pub file: PathBuf,
    pub source: Option<Source>,
    pub plan: Option<Plan>,
    /// What `flowrun validate` would report but for compiling code nodes (only `POST
    /// /api/validate` does that: an interpreter per workflow listed would cost too much);
    /// empty when valid.
    pub errors: Vec<Diagnostic>,
}

impl Entry {
    pub fn is_valid(&self) -> bool {
        self.errors.is_empty() && self.plan.is_some()
    }

    pub fn diagnostics(&self) -> Diagnostics {
        Diagnostics(self.errors.clone())
    }
}

fn is_workflow_file(p: &Path) -> bool {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    p.is_file()
        && p.extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "json" | "yaml" | "yml"))
        && !name.starts_with('.')
        // The test files kept beside their workflows (`hello.test.yaml`) are not workflows.
        && !flowrun_app::testing::is_test_file(name)
}

/// Loads and checks one file the way `flowrun validate` does, its code nodes not compiled.
pub fn load(path: &Path) -> Entry {
    match flowrun_codegen::load_file(path) {
        Ok(source) => check(path, source),
        Err(d) => unparsed(path, d),
    }
}

/// A file (or request) whose definition does not even parse: listed under its file name.
pub fn unparsed(path: &Path, d: Diagnostics) -> Entry {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    Entry {
        id: stem,
        file: path.to_path_buf(),
        source: None,
        plan: None,
        errors: d.0,
    }
}

/// Checks a parsed definition the way `flowrun validate` does (plan and input schema), its code
/// nodes not compiled.
pub fn check(path: &Path, source: Source) -> Entry {
    let mut errors = Vec::new();
    let plan = match flowrun_app::inputs::compile(&source) {
        Ok(plan) => Some(plan),
        Err(d) => {
            errors = d.0;
            None
        }
    };
    Entry {
        id: source.workflow.id.clone(),
        file: path.to_path_buf(),
        source: Some(source),
        plan,
        errors,
    }
}

/// Every workflow file of `dir`, by file name. A second file with an id already taken is
/// reported invalid.
pub fn scan(dir: Option<&Path>) -> std::io::Result<Vec<Entry>> {
    let Some(dir) = dir else {
        return Ok(Vec::new());
    };
    let files = workflow_files(dir)?;
    let mut seen: HashSet<String> = HashSet::new();
    let mut out = Vec::new();
    let mut first_file: Vec<(String, PathBuf)> = Vec::new();
    for f in files {
        let mut e = load(&f);
        if !seen.insert(e.id.clone()) {
            let other = first_file
                .iter()
                .find(|(id, _)| *id == e.id)
                .map(|(_, p)| p.display().to_string())
                .unwrap_or_default();
            let mut d = Diagnostic::new(format!(
                "workflow id '{}' is already used by {other}; ids must be unique in the directory",
                e.id
            ));
            d.file = Some(f.display().to_string());
            d.field = Some("id".into());
            e.errors.push(d);
        } else {
            first_file.push((e.id.clone(), f.clone()));
        }
        out.push(e);
    }
    Ok(out)
}

/// The workflow files of `dir`, in name order: the order [`scan`] lists them in, and the first
/// of two with one id is the one that counts.
fn workflow_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| is_workflow_file(p))
        .collect();
    files.sort();
    Ok(files)
}

/// The entry for workflow `id` (the first file that has it, as [`scan`] lists them), loaded
/// and checked now; the other files are only asked their id ([`id_of`]), so a request for one
/// workflow costs one compilation however many the directory holds.
pub fn find(dir: Option<&Path>, id: &str) -> std::io::Result<Option<Entry>> {
    let Some(dir) = dir else {
        return Ok(None);
    };
    let files = workflow_files(dir)?;
    // Loaded again, not from what `id_of` read: the file may have changed in between.
    Ok(files
        .iter()
        .filter(|f| id_of(f) == id)
        .map(|f| load(f))
        .find(|e| e.id == id))
}

/// An editor's definition read as if it were saved: in the directory of the workflow file with
/// its id, else in the workflows directory (where `PUT` would save it). Its relative paths (a
/// sub-workflow's file, its nodes' working directory) then mean what they mean in the file, not
/// whatever directory the server was started in.
pub fn placed(dir: Option<&Path>, source: Source) -> Source {
    match placement(dir, &source.workflow.id) {
        Some(at) => source.placed_in(at),
        None => source,
    }
}

/// Where [`placed`] puts a definition of workflow `id`: the directory of its file in `dir`, else
/// `dir`; None without a workflows directory.
pub fn placement(dir: Option<&Path>, id: &str) -> Option<PathBuf> {
    let dir = dir?;
    let file = workflow_files(dir)
        .ok()
        .and_then(|files| files.into_iter().find(|f| id_of(f) == id));
    Some(
        file.as_deref()
            .and_then(Path::parent)
            .map_or_else(|| dir.to_path_buf(), Path::to_path_buf),
    )
}

/// The id a file's entry has (its workflow's `id`, or its name when it does not parse), parsed
/// once per version of the file: its size, modification and change times and inode. The id is
/// the file's own content; what it compiles to may depend on other files (sub-workflows), so
/// only the id is kept. A file whose change time is under two seconds old is read every time:
/// two writes of the same size within one tick of the file system's clock have the same stamp
/// (and the modification time can be set back; the change time cannot).
fn id_of(path: &Path) -> String {
    use std::collections::HashMap;
    use std::os::unix::fs::MetadataExt;
    use std::sync::{Mutex, OnceLock};
    type Stamp = (u64, i64, i64, i64, i64, u64);
    static IDS: OnceLock<Mutex<HashMap<PathBuf, (Stamp, String)>>> = OnceLock::new();
    const KEEP: usize = 4096;
    let settled = |m: &std::fs::Metadata| {
        let changed = std::time::UNIX_EPOCH
            + std::time::Duration::new(m.ctime().max(0) as u64, m.ctime_nsec().max(0) as u32);
        changed
            .elapsed()
            .is_ok_and(|age| age >= std::time::Duration::from_secs(2))
    };
    let stamp = std::fs::metadata(path).ok().filter(settled).map(|m| {
        let stamp: Stamp = (
            m.len(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec(),
            m.ino(),
        );
        stamp
    });
    let ids = IDS.get_or_init(Mutex::default);
    let lock = || ids.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(stamp) = stamp
        && let Some((seen, id)) = lock().get(path)
        && *seen == stamp
    {
        return id.clone();
    }
    // Only a parsed file's id is kept: one that could not be read (no descriptor left, an I/O
    // error) or parsed is asked again next time.
    let (id, keep) = match flowrun_codegen::load_file(path) {
        Ok(source) => (source.workflow.id, true),
        Err(d) => (unparsed(path, d).id, false),
    };
    if let Some(stamp) = stamp.filter(|_| keep) {
        let mut ids = lock();
        if ids.len() >= KEEP {
            ids.clear();
        }
        ids.insert(path.to_path_buf(), (stamp, id.clone()));
    }
    id
}

/// Is `var` set (not empty) in the server's environment?
pub fn bound_here(var: &str) -> bool {
    std::env::var(var).is_ok_and(|v| !v.is_empty())
}

/// The JSON an editor needs to show a workflow and build its run form.
pub fn describe(e: &Entry, detail: bool) -> Value {
    describe_with(e, detail, &bound_here, &AgentLookup::default())
}

/// Where a run of a definition would look for its agent CLIs: the `PATH` and the directory a
/// request gives (`env.PATH`, `cwd`), else the server's own `PATH` and the workflow's
/// directory.
#[derive(Default)]
pub struct AgentLookup<'a> {
    pub path: Option<&'a str>,
    pub cwd: Option<&'a Path>,
}

/// The agent CLIs that `wf`'s nodes need, each with whether it is found, looked for as a run
/// looks before it starts (`runner::missing_agents`).
fn agents(wf: &Workflow, base: &Path, lookup: &AgentLookup) -> Vec<Value> {
    let path = flowrun_app::agents::search_path(lookup.path);
    let cwd = flowrun_app::runner::nodes_directory(lookup.cwd, base, wf.cwd.as_deref());
    flowrun_app::agents::needed(wf, |_| false, Some(&path), &cwd)
        .into_iter()
        .map(|a| {
            json!({"agent": a.agent, "name": a.name, "command": a.command,
                   "npm_package": a.npm_package, "nodes": a.nodes,
                   "available": a.path.is_some(),
                   "path": a.path.map(|p| p.display().to_string())})
        })
        .collect()
}

/// [`describe`], with `bound` telling which variables bind a connection and `lookup` where
/// agent CLIs are looked for.
pub fn describe_with(
    e: &Entry,
    detail: bool,
    bound: &dyn Fn(&str) -> bool,
    lookup: &AgentLookup,
) -> Value {
    let wf = e.source.as_ref().map(|s| &s.workflow);
    let mut connections = Vec::new();
    if let Some(wf) = wf {
        for (name, conn) in &wf.connections {
            let nodes: Vec<&str> = wf
                .nodes
                .iter()
                .filter(|n| n.kind.connections().iter().any(|(c, _)| c == name))
                .map(|n| n.id.as_str())
                .collect();
            let required = wf
                .nodes
                .iter()
                .any(|n| n.pinned.is_none() && n.kind.connections().iter().any(|(c, _)| c == name));
            connections.push(json!({
                "name": name,
                "env": conn.env,
                "required": required,
                "bound": bound(&conn.env),
                "nodes": nodes,
            }));
        }
    }
    let inputs = wf.and_then(|w| w.inputs.clone());
    let defaults = inputs.as_ref().map(|schema| {
        let mut data = Value::Object(Default::default());
        flowrun_app::inputs::apply_defaults(schema, &mut data);
        data
    });
    let missing: Vec<&str> = connections
        .iter()
        .filter(|c| c["required"] == true && c["bound"] == false)
        .filter_map(|c| c["name"].as_str())
        .collect();
    let agents = match (wf, &e.source) {
        (Some(wf), Some(source)) => agents(wf, &source.base_dir(), lookup),
        _ => Vec::new(),
    };
    let agents_found = agents.iter().all(|a| a["available"] == true);
    let mut v = json!({
        "id": e.id,
        "name": wf.map(|w| w.display_name().to_string()).unwrap_or_else(|| e.id.clone()),
        "description": wf.and_then(|w| w.description.clone()),
        "file": e.file.display().to_string(),
        "valid": e.is_valid(),
        "errors": e.errors,
        "inputs": inputs,
        "defaults": defaults,
        "timeout_ms": wf.and_then(|w| w.timeout_ms),
        "connections": connections,
        "agents": agents,
        "ready": e.is_valid() && missing.is_empty() && agents_found,
    });
    // The steps in run order, in the list too: the page offers them as breakpoints.
    {
        let order: Vec<Value> = match (&e.plan, wf) {
            (Some(plan), _) => plan
                .ordered_nodes()
                .map(|n| json!({"id": n.id, "type": n.kind.type_name(), "name": n.name}))
                .collect(),
            (None, Some(wf)) => wf
                .nodes
                .iter()
                .map(|n| json!({"id": n.id, "type": n.kind.type_name(), "name": n.name}))
                .collect(),
            _ => Vec::new(),
        };
        v["nodes"] = Value::Array(order);
    }
    if detail {
        v["definition"] = e
            .source
            .as_ref()
            .map(|s| s.definition.clone())
            .unwrap_or(Value::Null);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, id: &str, pad: &str) {
        let text = format!(
            r#"{{"id": "{id}", "nodes": [{{"id": "a", "type": "code", "code": "return 1{pad}"}}]}}"#
        );
        std::fs::write(dir.join(name), text).unwrap();
    }

    #[test]
    fn find_sees_a_file_change_its_id_and_keeps_the_first_of_a_duplicate() {
        let dir = tempfile::tempdir().unwrap();
        let d = Some(dir.path());
        write(dir.path(), "a.json", "first", "");
        write(dir.path(), "b.json", "other", "");
        assert_eq!(
            find(d, "first").unwrap().unwrap().file,
            dir.path().join("a.json")
        );
        // Read from what was kept once the file has settled; a change after that, of the same
        // size and with its modification time set back (an editor or `touch -r` can), is seen
        // all the same: its change time tells.
        std::thread::sleep(std::time::Duration::from_millis(2100));
        assert_eq!(find(d, "first").unwrap().unwrap().id, "first");
        let mtime = std::fs::metadata(dir.path().join("a.json"))
            .unwrap()
            .modified()
            .unwrap();
        write(dir.path(), "a.json", "fresh", "");
        let f = std::fs::File::options()
            .write(true)
            .open(dir.path().join("a.json"));
        f.unwrap().set_modified(mtime).unwrap();
        assert!(find(d, "first").unwrap().is_none());
        assert!(find(d, "fresh").unwrap().unwrap().is_valid());
        // And once that change has settled too.
        std::thread::sleep(std::time::Duration::from_millis(2100));
        assert!(find(d, "first").unwrap().is_none());
        assert!(find(d, "fresh").unwrap().unwrap().is_valid());
        // A second file with the id: the first in name order is the one, as in `scan`.
        write(dir.path(), "0.json", "other", " ");
        let found = find(d, "other").unwrap().unwrap();
        assert_eq!(found.file, dir.path().join("0.json"));
        let listed = scan(d).unwrap();
        assert_eq!(
            listed.iter().find(|e| e.id == "other").unwrap().file,
            found.file
        );
        // A file that does not parse is found by its name, with its diagnostics.
        std::fs::write(dir.path().join("broken.json"), "{").unwrap();
        let broken = find(d, "broken").unwrap().unwrap();
        assert!(!broken.is_valid());
        std::fs::remove_file(dir.path().join("a.json")).unwrap();
        assert!(find(d, "fresh").unwrap().is_none());
    }
}

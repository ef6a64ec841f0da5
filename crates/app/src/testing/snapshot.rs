//! Snapshots: what a case's execution gave — its status, output, error and each node's status —
//! kept in `__snapshots__/<test file name>.snap.json` beside the test file (one JSON object, a
//! key per case name), compared on later runs. Paths a case ignores are replaced by
//! `"[ignored]"` on both sides.

use super::expect::same;
use super::path::Path as JPath;
use flowrun_codegen::Plan;
use serde_json::{Map, Value, json};
use std::path::Path;

/// What an ignored value reads as in a snapshot.
pub const IGNORED: &str = "[ignored]";

/// The snapshot of an execution record (as the assertions see it), with `ignore` applied.
pub(crate) fn of_record(record: &Value, ignore: &[JPath]) -> Value {
    let error = record.get("error").filter(|e| !e.is_null()).map(
        |e| json!({"type": e.get("type"), "message": e.get("message"), "node": e.get("node")}),
    );
    let nodes: Map<String, Value> = record
        .get("nodes")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(id, n)| (id.clone(), n.get("status").cloned().unwrap_or(Value::Null)))
                .collect()
        })
        .unwrap_or_default();
    let mut v = json!({
        "status": record.get("status"),
        "output": record.get("output"),
        "error": error,
        "nodes": nodes,
    });
    apply_ignores(&mut v, ignore);
    v
}

/// A path that a case's snapshot ignores, checked against what a snapshot holds (an ignore
/// that names nothing would leave the snapshot failing, or a typo silently checking nothing):
/// `status`, `output…`, `error` with its `type`, `message` and `node`, and `nodes.<id>` of a
/// node the workflow has. A node is kept as its bare status, so `nodes.<id>.status` stands for
/// `nodes.<id>`. The path to apply.
pub(crate) fn ignore_path(p: JPath, plan: Option<&Plan>) -> Result<JPath, String> {
    const ERROR_FIELDS: &[&str] = &["type", "message", "node"];
    let key = |i: usize| p.key_at(i);
    match (p.first_key(), p.0.len()) {
        (Some("status"), 1) | (Some("error"), 1) | (Some("nodes"), 1) | (Some("output"), _) => {
            Ok(p)
        }
        (Some("status"), _) => Err("a snapshot's `status` is a string: ignore `status`".into()),
        (Some("error"), 2) if key(1).is_some_and(|f| ERROR_FIELDS.contains(&f)) => Ok(p),
        (Some("error"), _) => Err(format!(
            "a snapshot keeps an error's {}: ignore `error` or one of them",
            ERROR_FIELDS.join(", ")
        )),
        (Some("nodes"), n) => {
            let Some(id) = key(1) else {
                return Err("`nodes.<id>`: a node's id".into());
            };
            super::expect::known_node(plan, id)?;
            match (n, key(2)) {
                (2, _) => Ok(p),
                (3, Some("status")) => Ok(JPath(p.0[..2].to_vec())),
                _ => Err(format!(
                    "a snapshot keeps only each node's status: ignore `nodes.{id}` (its status); \
                     a node's output is not in the snapshot"
                )),
            }
        }
        (root, _) => {
            let fields = ["status", "output", "error", "nodes"];
            let root = root.unwrap_or("");
            Err(format!(
                "unknown field '{root}' of a snapshot{} (one of: {})",
                flowrun_codegen::did_you_mean(root, fields.into_iter()),
                fields.join(", ")
            ))
        }
    }
}

pub(crate) fn apply_ignores(v: &mut Value, ignore: &[JPath]) {
    for p in ignore {
        if let Some(slot) = p.get_mut(v) {
            *slot = Value::String(IGNORED.into());
        }
    }
}

/// The snapshots stored for a test file (none when the file does not exist yet). Errors do not
/// name the file: the caller does.
/// Read as workflow files are: a regular file of at most 16 MiB (a FIFO or a link to a device
/// put there would block or fill memory).
pub(crate) fn load(file: &Path) -> Result<Map<String, Value>, String> {
    match load_lenient(file)? {
        (_, Some(broken)) => Err(broken),
        (m, None) => Ok(m),
    }
}

/// [`load`], but a file that reads and holds no snapshots (not JSON — a merge's conflict
/// markers —, not an object) is taken as empty, with what is wrong with it: for
/// `--update-snapshots`, which writes it anew. A file that cannot be read is still an error.
pub(crate) fn load_lenient(file: &Path) -> Result<(Map<String, Value>, Option<String>), String> {
    match std::fs::metadata(file) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Map::new(), None)),
        _ => {}
    }
    let text = flowrun_codegen::read_text_file(
        file,
        "snapshot file",
        "snapshots are kept in a JSON file",
    )?;
    Ok(match serde_json::from_str(&text) {
        Ok(Value::Object(m)) => (m, None),
        Ok(_) => (
            Map::new(),
            Some("expected a JSON object of case name to snapshot".into()),
        ),
        Err(_) if conflicted(&text) => (
            Map::new(),
            Some("not valid JSON: it holds a merge's conflict markers (<<<<<<<)".into()),
        ),
        Err(e) => (Map::new(), Some(format!("not valid JSON: {e}"))),
    })
}

/// Does the text hold a merge's conflict markers, each at the start of a line?
fn conflicted(text: &str) -> bool {
    let starts = |m: &str| text.lines().any(|l| l.starts_with(m));
    starts("<<<<<<< ") && starts("=======") && starts(">>>>>>> ")
}

/// Does `actual` match the stored snapshot (with `ignore` applied to the stored one too, in
/// case it was written before the path was ignored)? `Err(diff)` when not.
pub(crate) fn compare(stored: &Value, actual: &Value, ignore: &[JPath]) -> Result<(), String> {
    let mut stored = stored.clone();
    apply_ignores(&mut stored, ignore);
    if same(&stored, actual) {
        return Ok(());
    }
    Err(diff(&stored, actual))
}

/// A unified diff, stored snapshot → actual, of the pretty JSON.
pub(crate) fn diff(stored: &Value, actual: &Value) -> String {
    let a = pretty(stored);
    let b = pretty(actual);
    similar::TextDiff::from_lines(&a, &b)
        .unified_diff()
        .context_radius(3)
        .header("snapshot", "actual")
        .to_string()
}

fn pretty(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).expect("json");
    s.push('\n');
    s
}

/// What [`write`] did to a snapshot file besides writing `writes`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Entries dropped: of cases that are gone or keep no snapshot any more.
    pub dropped: Vec<String>,
    /// The file was removed: no case of its test file keeps a snapshot.
    pub removed: bool,
}

/// Writes a test file's snapshots: `writes` (case name → snapshot) over what is stored; with
/// `keep` set, only entries for those case names stay (the file's snapshot cases, in their
/// order), and a file left with none is removed (unread: nothing in it is wanted). A file whose
/// text would not change is not written. Errors say what could not be done to which file.
pub(crate) fn write(
    file: &Path,
    writes: &[(String, Value)],
    keep: Option<&[String]>,
) -> Result<Pruned, String> {
    let remove = || match std::fs::remove_file(file) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(format!("cannot remove {}: {e}", file.display())),
    };
    // Two runs of the same test file at once (shards of a suite, a `--filter` each) each read,
    // merge and write it: under one lock, so that neither writes over what the other added.
    let cannot = |e: std::io::Error| format!("cannot write {}: {e}", file.display());
    let dir = file.parent().unwrap_or(Path::new("."));
    let _locked = match lock_dir(dir, writes.is_empty()) {
        Ok(l) => l,
        Err(e) => return Err(cannot(e)),
    };
    if writes.is_empty() && keep.is_some_and(|k| k.is_empty()) {
        return Ok(Pruned {
            dropped: Vec::new(),
            removed: remove()?,
        });
    }
    // Updating (`keep`) writes the file anew: one that holds no snapshots is replaced.
    let before = match keep {
        Some(_) => load_lenient(file).map(|(m, _)| m),
        None => load(file),
    }
    .map_err(|e| format!("cannot update {}: {e}", file.display()))?;
    let mut stored = before.clone();
    for (name, v) in writes {
        stored.insert(name.clone(), v.clone());
    }
    let out: Map<String, Value> = match keep {
        Some(names) => names
            .iter()
            .filter_map(|n| stored.get(n).map(|v| (n.clone(), v.clone())))
            .collect(),
        None => stored,
    };
    let dropped = before
        .keys()
        .filter(|k| !out.contains_key(*k))
        .cloned()
        .collect();
    if out.is_empty() && keep.is_some() {
        return Ok(Pruned {
            dropped,
            removed: remove()?,
        });
    }
    let text = pretty(&Value::Object(out));
    // Compared as text: the order of the entries counts (the cases' order).
    if std::fs::read_to_string(file).is_ok_and(|t| t == text) {
        return Ok(Pruned::default());
    }
    // Written whole, then renamed: a reader never sees half a file (nor a link planted in the
    // directory has it written through).
    crate::files::write_atomically(file, &text).map_err(cannot)?;
    Ok(Pruned {
        dropped,
        removed: false,
    })
}

/// An exclusive lock on the snapshots' directory (made first, unless nothing would be written
/// in it), held until the value is dropped; `None` when there is no directory to lock. The
/// directory, not the file: the file is replaced by a rename, and a lock file would be one more
/// file to commit.
fn lock_dir(
    dir: &Path,
    only_removing: bool,
) -> std::io::Result<Option<nix::fcntl::Flock<std::fs::File>>> {
    lock_dir_within(dir, only_removing, LOCK_WAIT)
}

fn lock_dir_within(
    dir: &Path,
    only_removing: bool,
    wait: std::time::Duration,
) -> std::io::Result<Option<nix::fcntl::Flock<std::fs::File>>> {
    if !only_removing {
        std::fs::create_dir_all(dir)?;
    }
    let mut d = match std::fs::File::open(dir) {
        Ok(d) => d,
        Err(e) if only_removing && e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    // Another run writing there holds it for moments; one suspended (Ctrl-Z) or hung holding
    // it would hold this one for good, uninterruptibly: said, and given up after a while.
    let started = std::time::Instant::now();
    let mut said = false;
    loop {
        match nix::fcntl::Flock::lock(d, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(locked) => return Ok(Some(locked)),
            Err((back, nix::errno::Errno::EWOULDBLOCK)) => d = back,
            Err((_, e)) => return Err(e.into()),
        }
        if started.elapsed() >= wait {
            return Err(std::io::Error::other(format!(
                "another process has held {} locked for {:.0} s (a flowrun test suspended or hung?); nothing was written",
                dir.display(),
                wait.as_secs_f64()
            )));
        }
        if !said {
            crate::say!(
                "waiting for {}: another process is writing snapshots there",
                dir.display()
            );
            said = true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// How long [`lock_dir`] waits for another writer of the same snapshots.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_to_snapshot_with_ignores() {
        let record = json!({"status": "success", "output": {"a": 1, "id": "e1"}, "error": null,
            "duration_ms": 5.0, "nodes": {"x": {"status": "mocked", "output": 1}}});
        let ignore = [
            JPath::parse("output.id").unwrap(),
            JPath::parse("output.nope").unwrap(),
        ];
        let s = of_record(&record, &ignore);
        assert_eq!(
            s,
            json!({"status": "success", "output": {"a": 1, "id": "[ignored]"}, "error": null,
                   "nodes": {"x": "mocked"}})
        );
        let mut other = record.clone();
        other["output"]["id"] = json!("e2");
        assert_eq!(compare(&s, &of_record(&other, &ignore), &ignore), Ok(()));
        other["output"]["a"] = json!(2);
        let d = compare(&s, &of_record(&other, &ignore), &ignore).unwrap_err();
        assert!(
            d.contains("-    \"a\": 1,") && d.contains("+    \"a\": 2,"),
            "{d}"
        );
    }

    /// Runs writing new snapshots of the same test file at once (shards, `--filter`s) keep each
    /// other's: each reads, merges and writes under the directory's lock.
    #[test]
    fn writers_at_once_keep_each_others_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir
            .path()
            .join("__snapshots__")
            .join("t.test.yaml.snap.json");
        for round in 0..5 {
            let start = std::sync::Barrier::new(8);
            std::thread::scope(|s| {
                for i in 0..8 {
                    let (f, start) = (&f, &start);
                    s.spawn(move || {
                        start.wait();
                        write(f, &[(format!("r{round} c{i}"), json!(i))], None).unwrap();
                    });
                }
            });
            let stored = load(&f).unwrap();
            assert_eq!(stored.len(), 8 * (round + 1), "{stored:?}");
        }
    }

    /// A writer that holds the lock for good (suspended, hung) is waited for a while, not for
    /// ever.
    #[test]
    fn a_lock_held_for_good_is_given_up_on() {
        let dir = tempfile::tempdir().unwrap();
        let held = nix::fcntl::Flock::lock(
            std::fs::File::open(dir.path()).unwrap(),
            nix::fcntl::FlockArg::LockExclusive,
        )
        .unwrap();
        let wait = std::time::Duration::from_millis(200);
        let e = lock_dir_within(dir.path(), false, wait).unwrap_err();
        assert!(e.to_string().contains("has held"), "{e}");
        drop(held);
        assert!(lock_dir_within(dir.path(), false, wait).unwrap().is_some());
    }

    #[test]
    fn write_merges_and_prunes() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir
            .path()
            .join("__snapshots__")
            .join("t.test.yaml.snap.json");
        write(&f, &[("b".into(), json!(2)), ("a".into(), json!(1))], None).unwrap();
        write(
            &f,
            &[("c".into(), json!(3))],
            Some(&["a".into(), "c".into()]),
        )
        .unwrap();
        let text = std::fs::read_to_string(&f).unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&text).unwrap(),
            json!({"a": 1, "c": 3})
        );
        assert!(
            text.find("\"a\"").unwrap() < text.find("\"c\"").unwrap(),
            "in case order"
        );
        // Nothing to write, nothing stale: the file is left as it is (a rewrite is a new file,
        // renamed over it); another order is a change; none left: removed, unread.
        use std::os::unix::fs::MetadataExt;
        let inode = || std::fs::metadata(&f).unwrap().ino();
        let first = inode();
        let kept = ["a".to_string(), "c".to_string()];
        assert_eq!(write(&f, &[], Some(&kept)).unwrap(), Pruned::default());
        assert_eq!(inode(), first, "not rewritten");
        let reordered = ["c".to_string(), "a".to_string()];
        write(&f, &[], Some(&reordered)).unwrap();
        assert_ne!(inode(), first, "rewritten in the new order");
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(text.find("\"c\"").unwrap() < text.find("\"a\"").unwrap());
        assert_eq!(
            write(&f, &[], Some(&["c".into()])).unwrap().dropped,
            vec!["a".to_string()]
        );
        std::fs::write(&f, "not JSON").unwrap();
        let gone = write(&f, &[], Some(&[])).unwrap();
        assert!(gone.removed && !f.exists());
        assert!(!write(&f, &[], Some(&[])).unwrap().removed);
        assert!(!f.exists(), "no file is made for nothing");
    }

    #[test]
    fn writing_goes_through_no_planted_link() {
        let dir = tempfile::tempdir().unwrap();
        let snaps = dir.path().join("__snapshots__");
        std::fs::create_dir(&snaps).unwrap();
        let victim = dir.path().join("victim.txt");
        std::fs::write(&victim, "precious").unwrap();
        // The temporary name the writer used to take: `.<file>.tmp<pid>`.
        let f = snaps.join("t.test.yaml.snap.json");
        let planted = snaps.join(format!(".t.test.yaml.snap.json.tmp{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        write(&f, &[("a".into(), json!(1))], None).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert!(std::fs::symlink_metadata(&f).unwrap().file_type().is_file());
        assert_eq!(load(&f).unwrap()["a"], json!(1));
    }

    #[test]
    fn a_snapshot_file_that_is_a_pipe_is_refused_not_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t.test.yaml.snap.json");
        nix::unistd::mkfifo(&f, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let e = load(&f).unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
        assert!(write(&f, &[("a".into(), json!(1))], None).is_err());
    }
}

//! The script cache, under `<cache>/scripts/` (0700; every file 0600):
//!
//! - `<sha256>.py`: the scripts, content-addressed (and their `.pyc`, `bytecode.rs`);
//! - `keys/<key>`: a link to the script that a plan, its options and the build of flowrun that
//!   renders them make, so that a workflow that ran before is not rendered again. Filling the
//!   template and hashing the ~135 KB it makes was ~0.4 ms of a cold `flowrun run`'s CPU for the
//!   three-step benchmark (and grows with the workflow: 4 ms for 500 nodes); a lookup is one
//!   `readlink` and one `lstat`.
//!
//! The key names the build (the binary's size, times and inode: the runtime and templates are
//! compiled into it), because two builds of the same version (a developer's, after editing
//! `runtime/`) render the same plan differently and share the cache.

use crate::paths;
use std::path::{Path, PathBuf};

/// A run's script: found in the cache, or rendered now (and written once the run is sure to
/// start).
pub(super) enum Script {
    Cached(PathBuf),
    Rendered(flowrun_codegen::Script),
}

/// Scripts the cache keeps (with their bytecode, ~270 KB each): an editor that runs every edit
/// makes a new one each time. Past it, the oldest are removed, down to four fifths of it.
const MAX_SCRIPTS: usize = 500;

/// Keys the cache keeps: several builds may each have a key for the same script. Past it, the
/// oldest go, down to four fifths (a key removed costs one rendering).
const MAX_KEYS: usize = 4 * MAX_SCRIPTS;

/// A script younger than this is never removed: a run may be about to start it.
const SCRIPT_MIN_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

/// The name in the cache of the script for `plan` and `options` rendered by this build, or
/// `None` when this build cannot be told apart from another (then nothing is looked up).
pub(super) fn key(
    plan: &flowrun_codegen::Plan,
    options: &flowrun_codegen::RenderOptions,
) -> Option<String> {
    build().map(|b| flowrun_codegen::script_key(plan, options, b))
}

/// This binary, as the file it was started from: version, size, modification and change times,
/// device and inode.
fn build() -> Option<&'static str> {
    static BUILD: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    BUILD
        .get_or_init(|| {
            use std::os::unix::fs::MetadataExt;
            let m = std::fs::metadata(std::env::current_exe().ok()?).ok()?;
            // The change time too: a copy over the same file with its old size and modification
            // time kept (`cp` then `touch -r`) changes it, and nothing can set it back.
            Some(format!(
                "{} {} {}.{} {}.{} {}:{}",
                env!("CARGO_PKG_VERSION"),
                m.len(),
                m.mtime(),
                m.mtime_nsec(),
                m.ctime(),
                m.ctime_nsec(),
                m.dev(),
                m.ino()
            ))
        })
        .as_deref()
}

/// The cached script `key` links to, if it is still there.
pub(super) fn cached(cache: &Path, key: &str) -> Option<PathBuf> {
    let target = std::fs::read_link(cache.join("scripts").join("keys").join(key)).ok()?;
    // Only what `write` makes: `../<sha256>.py`.
    let name = target.file_name()?.to_str()?;
    let sha = name.strip_suffix(".py")?;
    if target.parent() != Some(Path::new(".."))
        || sha.len() != 64
        || !sha
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let path = cache.join("scripts").join(name);
    path.symlink_metadata()
        .ok()
        .filter(std::fs::Metadata::is_file)?;
    Some(path)
}

/// Writes the script (unless it is there already) and, given its key, links the key to it.
/// Failing to link is no error: the next run renders it again.
pub(super) fn write(
    cache: &Path,
    key: Option<&str>,
    sha: &str,
    text: &str,
) -> std::io::Result<PathBuf> {
    let dir = cache.join("scripts");
    let path = dir.join(format!("{sha}.py"));
    let added = !path.is_file();
    if added {
        paths::private_dir(cache)?;
        paths::private_dir(&dir)?;
        paths::write_private(&path, text.as_bytes())?;
    }
    if let Some(key) = key {
        let _ = link(&dir, key, sha);
    }
    if added {
        evict(&dir);
    } else if key.is_some() {
        // Another build's key for a script already here: keys grow without scripts.
        evict_keys(&dir.join("keys"));
    }
    Ok(path)
}

/// `keys/<key>` → `../<sha>.py`, replaced whole (a link made aside and renamed over it).
fn link(dir: &Path, key: &str, sha: &str) -> std::io::Result<()> {
    let keys = dir.join("keys");
    paths::private_dir(&keys)?;
    // Its own name in this process too: `serve` may link the same key from two threads.
    static MADE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let aside = keys.join(format!(".tmp-{key}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_file(&aside);
    std::os::unix::fs::symlink(format!("../{sha}.py"), &aside)?;
    std::fs::rename(&aside, keys.join(key)).inspect_err(|_| {
        let _ = std::fs::remove_file(&aside);
    })
}

/// Removes the oldest scripts (`<sha>.py` and its `<sha>.*.pyc`) past [`MAX_SCRIPTS`], then
/// the keys whose script is gone and the oldest past [`MAX_KEYS`]. Only when a script is
/// added: a run of a cached one reads no directory.
fn evict(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    // Each script's files and the newest time one of them was written.
    let mut scripts: std::collections::HashMap<String, (std::time::SystemTime, Vec<PathBuf>)> =
        std::collections::HashMap::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some((sha, _)) = name.split_once('.') else {
            continue;
        };
        let Ok(written) = e.metadata().and_then(|m| m.modified()) else {
            continue;
        };
        let s = scripts
            .entry(sha.to_string())
            .or_insert((written, Vec::new()));
        s.0 = s.0.max(written);
        s.1.push(e.path());
    }
    if scripts.len() > MAX_SCRIPTS {
        let mut by_age: Vec<(std::time::SystemTime, Vec<PathBuf>)> =
            scripts.into_values().collect();
        by_age.sort_by_key(|(t, _)| *t);
        let excess = by_age.len() - MAX_SCRIPTS * 4 / 5;
        let now = std::time::SystemTime::now();
        for (written, files) in by_age.into_iter().take(excess) {
            if now.duration_since(written).unwrap_or_default() < SCRIPT_MIN_AGE {
                break;
            }
            for f in files {
                let _ = std::fs::remove_file(f);
            }
        }
    }
    evict_keys(&dir.join("keys"));
}

fn evict_keys(keys: &Path) {
    let Ok(entries) = std::fs::read_dir(keys) else {
        return;
    };
    let mut kept = Vec::new();
    for e in entries.flatten() {
        let path = e.path();
        // `metadata` follows the link: gone with its script (or not a link of ours at all).
        if std::fs::metadata(&path).is_err() {
            let _ = std::fs::remove_file(&path);
            continue;
        }
        if let Ok(made) = e.metadata().and_then(|m| m.modified()) {
            kept.push((made, path));
        }
    }
    if kept.len() > MAX_KEYS {
        kept.sort();
        for (_, path) in kept.iter().take(kept.len() - MAX_KEYS * 4 / 5) {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests;

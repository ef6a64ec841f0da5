//! Writing a user's files (a saved workflow, a test file's snapshots) whole or not at all.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Writes `text` to `path` whole or not at all: to a new file created exclusively under a random
/// name in the same directory (a link planted at a predictable name is never written through),
/// synced, then renamed over `path`. An existing file keeps its permissions; a new one gets what
/// the umask leaves of 0666, as a file an editor writes.
pub fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let existing = std::fs::metadata(path)
        .ok()
        .map(|m| m.permissions().mode() & 0o777);
    let mut tmp = tempfile::Builder::new()
        .prefix(".flowrun-write-")
        .permissions(std::fs::Permissions::from_mode(existing.unwrap_or(0o666)))
        .tempfile_in(dir)?;
    tmp.write_all(text.as_bytes())?;
    tmp.as_file().sync_all()?;
    if let Some(mode) = existing {
        // As it was, not as the umask would make a new file.
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))?;
    }
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

//! Where flowrun keeps its database and caches.

use std::path::{Path, PathBuf};

/// The database: `--db`, else `$FLOWRUN_DB`, else `<XDG data dir>/flowrun/flowrun.db`.
pub fn database(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    if let Some(p) = std::env::var_os("FLOWRUN_DB").filter(|v| !v.is_empty()) {
        return PathBuf::from(p);
    }
    dirs::data_dir()
        .unwrap_or_else(|| PathBuf::from("."))
        .join("flowrun")
        .join("flowrun.db")
}

/// The cache directory: `$FLOWRUN_CACHE_DIR`, else `<XDG cache dir>/flowrun`.
pub fn cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("FLOWRUN_CACHE_DIR").filter(|v| !v.is_empty()) {
        return PathBuf::from(p);
    }
    dirs::cache_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("flowrun")
}

/// Creates `dir` (and parents) and makes it private to this user (0700).
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let meta = std::fs::metadata(dir)?;
    if meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically with mode 0600 (temp file in the same directory, renamed).
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().expect("a file path has a parent");
    let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
    // tempfile creates files with mode 0600 already.
    tmp.write_all(bytes)?;
    tmp.as_file().sync_data().ok();
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

//! The bearer token and its file.
//!
//! The token survives a restart: a page or editor that holds it keeps working when the server
//! comes back. What the server does with the token file it is given (or its default one):
//!
//! | the path | what happens |
//! |---|---|
//! | does not exist | a new token is written (mode 0600, atomically) |
//! | a regular file of ours, mode 0600, holding a token (64 hex digits) | that token is used again |
//! | a regular file of ours holding a token, another mode | a new token replaces it (the old one may have been read by others), with a warning |
//! | an empty regular file of ours (`mktemp`) | a new token is written |
//! | not a regular file (directory, symbolic link, FIFO, …), another user's, or a file that holds something else | refused: nothing is started and nothing is overwritten |

use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Hex digits in a token (32 random bytes).
pub const TOKEN_LEN: usize = 64;

/// A random bearer token: 32 bytes from the OS generator, as hex.
pub fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `$FLOWRUN_CACHE_DIR/serve/`, else `$XDG_RUNTIME_DIR/flowrun/`, else `<cache dir>/serve/`;
/// one file per port, so several servers do not overwrite each other's token.
pub fn default_token_file(port: u16) -> PathBuf {
    let name = format!("serve-{port}.token");
    if std::env::var_os("FLOWRUN_CACHE_DIR").is_some_and(|v| !v.is_empty()) {
        return flowrun_app::paths::cache_dir().join("serve").join(name);
    }
    if let Some(run) = std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        return PathBuf::from(run).join("flowrun").join(name);
    }
    flowrun_app::paths::cache_dir().join("serve").join(name)
}

/// Where the token came from.
#[derive(Debug, PartialEq, Eq)]
pub enum Origin {
    /// The file held a good token: the same one as before the restart.
    Reused,
    /// There was no token: a new one was written.
    Written,
    /// The file held a token with a mode other than 0600: a new one replaced it.
    Replaced { mode: u32 },
}

/// Why the token file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    /// The path or what is there is not for a token; nothing was changed.
    #[error("token file {}: {reason}", .path.display())]
    Refused { path: PathBuf, reason: String },
    #[error("cannot {what} the token file {}: {source}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

fn refused(path: &Path, reason: impl Into<String>) -> TokenFileError {
    TokenFileError::Refused {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn io<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> TokenFileError + 'a {
    move |source| TokenFileError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

fn is_token(text: &str) -> bool {
    let t = text.strip_suffix('\n').unwrap_or(text);
    t.len() == TOKEN_LEN && t.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn kind(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_symlink() {
        "a symbolic link"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else {
        "not a regular file"
    }
}

/// What is at `path` now: `Some(token)` when it can be used again, `None` when a new one is due
/// (and the mode it had, when it held a token with the wrong mode).
fn existing(path: &Path) -> Result<(Option<String>, Option<u32>), TokenFileError> {
    // O_NOFOLLOW: a symbolic link is refused, not followed; O_NONBLOCK: a FIFO does not hang the
    // open. Every check is on the opened file, so nothing can be swapped in between.
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((None, None)),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(refused(
                path,
                "is a symbolic link; give the path of a regular file (or of none yet)",
            ));
        }
        Err(e) => return Err(io("open", path)(e)),
    };
    let meta = file.metadata().map_err(io("read", path))?;
    if !meta.file_type().is_file() {
        return Err(refused(
            path,
            format!(
                "is {}, not a regular file; remove it or give another path",
                kind(&meta)
            ),
        ));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(refused(
            path,
            format!(
                "belongs to another user (uid {}, not {me}); remove it or give another path",
                meta.uid()
            ),
        ));
    }
    if meta.len() == 0 {
        return Ok((None, None));
    }
    let mut bytes = Vec::new();
    if meta.len() <= 1024 {
        (&file)
            .take(1024)
            .read_to_end(&mut bytes)
            .map_err(io("read", path))?;
    }
    let text = std::str::from_utf8(&bytes).unwrap_or("");
    if !is_token(text) {
        return Err(refused(
            path,
            "exists and does not hold a flowrun token (64 hex digits); it is not overwritten: remove it or give another path",
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode != 0o600 {
        return Ok((None, Some(mode)));
    }
    Ok((Some(text.trim_end().to_string()), None))
}

/// The token for this start: the one in `path` when it can be used again (see the module's
/// table), else a new one written there with mode 0600. `own_dir`: the directory is flowrun's
/// (the default path) and is made private (0700) whatever it was; otherwise it is only created
/// (private) when missing.
pub fn load_or_create(path: &Path, own_dir: bool) -> Result<(String, Origin), TokenFileError> {
    if path.file_name().is_none() || path.as_os_str().as_encoded_bytes().ends_with(b"/") {
        return Err(refused(
            path,
            "is not a file path (it names a directory); give the path of a file, like ./flowrun.token",
        ));
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if own_dir || !dir.exists() {
        flowrun_app::paths::private_dir(dir).map_err(io("create the directory of", path))?;
    }
    let (old, bad_mode) = existing(path)?;
    if let Some(token) = old {
        return Ok((token, Origin::Reused));
    }
    let token = new_token();
    // write_private wants a parent it can create a temporary file in.
    let target = dir.join(path.file_name().expect("checked above"));
    flowrun_app::paths::write_private(&target, format!("{token}\n").as_bytes())
        .map_err(io("write", path))?;
    let origin = match bad_mode {
        Some(mode) => Origin::Replaced { mode },
        None => Origin::Written,
    };
    Ok((token, origin))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_64_hex_digits() {
        let t = new_token();
        assert!(is_token(&t) && is_token(&format!("{t}\n")));
        assert!(!is_token(&t[1..]));
        assert!(!is_token(&format!("{t}\n\n")));
        assert!(!is_token(&t.to_uppercase()));
        assert!(!is_token(""));
    }
}

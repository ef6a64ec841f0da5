//! The template's code: its source, the memory file it is handed in, and that source compiled
//! once per interpreter and kept in the cache directory, so that a template starts without
//! compiling its ~45 KB of source: ~8 ms of the ~30 ms a template takes to be ready here, which
//! `flowrun test`'s first cases wait for ([`super::Policy::Batch`]).
//!
//! `<cache>/warm-<interpreter>-<source>.pyc`: named by a hash of the interpreter (its resolved
//! path, inode and mtime: a reinstalled or upgraded one is another) and one of the template's
//! source (another build of flowrun is another), so that no template runs another's code or
//! code compiled for another interpreter. It is written by the interpreter itself (a `-I -S`
//! helper given the source on stdin, through a private file of its own renamed into place)
//! after the first template of that interpreter started from source, beside it; the files of
//! other builds for that interpreter are removed then, once a week old. A template started from
//! a `.pyc` that does not become ready (a damaged file, a magic number the interpreter refuses,
//! code that never says ready) is started again from source at once, and that file removed and
//! written anew — unless it was killed as it started (the process ending, a Ctrl-C).
//!
//! The `.pyc` is trusted as the scripts' own `.pyc` files beside it are (`flowrun_app`'s
//! `runner::bytecode`): the cache directory is private to its user. It is read through no link
//! and only when it is a regular file of this user's.

use super::template::Template;
use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The template's source: embedded, and handed to the interpreter in a sealed memory file
/// ([`memory_file`]) — or that source compiled, which is kept in the cache directory
/// (this module). Its parts, in this order (`template.py` says what each holds).
pub(super) const SOURCE: &str = concat!(
    include_str!("../../../../runtime/warm/template.py"),
    include_str!("../../../../runtime/warm/supervise.py"),
    include_str!("../../../../runtime/warm/spares.py"),
    include_str!("../../../../runtime/warm/serve.py"),
);

/// `code` ([`SOURCE`] or it compiled) in a memory file sealed against any change,
/// close-on-exec, at a descriptor above `above` (the ones a template's start puts in place).
pub(super) fn memory_file(code: &[u8], above: RawFd) -> std::io::Result<OwnedFd> {
    use nix::fcntl::{FcntlArg, SealFlag, fcntl};
    use nix::sys::memfd::{MFdFlags, memfd_create};
    use std::io::Write;
    let fd = memfd_create(
        c"flowrun-warm-template",
        MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
    )?;
    let mut file = std::fs::File::from(fd);
    file.write_all(code)?;
    let seals = SealFlag::F_SEAL_WRITE
        | SealFlag::F_SEAL_GROW
        | SealFlag::F_SEAL_SHRINK
        | SealFlag::F_SEAL_SEAL;
    fcntl(&file, FcntlArg::F_ADD_SEALS(seals))?;
    let high = fcntl(&file, FcntlArg::F_DUPFD_CLOEXEC(above + 1))?;
    // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that nothing else owns.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(high) })
}

/// The most a compiled template may hold (it is 30-57 KB by version): anything larger is not
/// ours.
const MAX_LEN: u64 = 1 << 20;

/// Writes the template's code, compiled by the interpreter that runs this, to `argv[1]`. Its
/// frames are named `/flowrun-warm-template`: the basename a template started from source gives
/// them (the link it runs, removed once read), and a path no execution's directory can answer
/// for when a traceback looks its lines up.
const COMPILE: &str = "import marshal, os, sys
from importlib.util import MAGIC_NUMBER
code = compile(sys.stdin.buffer.read(), '/flowrun-warm-template', 'exec', dont_inherit=True)
tmp = '%s.tmp-%d' % (sys.argv[1], os.getpid())
fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
try:
    with os.fdopen(fd, 'wb') as f:
        f.write(MAGIC_NUMBER + bytes(12) + marshal.dumps(code))
    os.replace(tmp, sys.argv[1])
except BaseException:
    os.unlink(tmp)
    raise";

/// A compile to run once the template it is for has started ([`begin`]).
pub(super) struct Pending {
    program: PathBuf,
    env: Vec<(String, String)>,
    pyc: PathBuf,
}

/// Starts a template for `program`, from its compiled code in `cache` when there is one that
/// works, else from source; then also the compile the next template of that interpreter can
/// start from, when there was none.
pub(super) async fn start(
    cache: Option<&Path>,
    program: &Path,
    args: &[String],
    env: &[(String, String)],
) -> std::io::Result<(Template, Option<Pending>)> {
    let Some(pyc) = cache.and_then(|c| file_for(c, program)) else {
        let t = Template::start(program, args, env, SOURCE.as_bytes()).await?;
        return Ok((t, None));
    };
    if let Some(code) = read(&pyc) {
        match Template::start(program, args, env, &code).await {
            Ok(t) => return Ok((t, None)),
            // Killed as it started (the process ending, a Ctrl-C): nothing to say of the file.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return Err(e),
            // Anything else: the file may be what it could not run (a damaged one, a magic
            // number it refuses: 20-60 ms here; code that never says ready: the time it is
            // given). Compiled again, it costs ~30 ms of CPU once; kept, every start from it.
            Err(e) => {
                tracing::debug!("a warm template did not start from {pyc:?}: {e}");
                let _ = std::fs::remove_file(&pyc);
            }
        }
    }
    let t = Template::start(program, args, env, SOURCE.as_bytes()).await?;
    let compile = Pending {
        program: program.to_path_buf(),
        env: env.to_vec(),
        pyc,
    };
    Ok((t, Some(compile)))
}

/// Compiles the template's code for the cache on a thread of its own (a Python of its own,
/// ~30 ms of CPU, once per interpreter), unless one for that file is running already or the
/// process is ending ([`crate::background`]).
pub(super) fn begin(compile: Pending) {
    let pyc = compile.pyc.clone();
    crate::background::start(&pyc, "flowrun-compile", move || {
        if let Err(e) = write(&compile) {
            tracing::debug!(
                "the warm template was not compiled to {:?}: {e}",
                compile.pyc
            );
        }
    });
}

/// `<cache>/warm-<interpreter>-<source>.pyc` for `program`; None when it cannot be found.
fn file_for(cache: &Path, program: &Path) -> Option<PathBuf> {
    use sha2::Digest;
    let resolved = std::fs::canonicalize(program).ok()?;
    let meta = std::fs::metadata(&resolved).ok()?;
    let mut interp = sha2::Sha256::new();
    interp.update(resolved.as_os_str().as_encoded_bytes());
    interp.update(meta.ino().to_le_bytes());
    interp.update(meta.mtime().to_le_bytes());
    interp.update(meta.mtime_nsec().to_le_bytes());
    let source = sha2::Sha256::digest(SOURCE.as_bytes());
    Some(cache.join(format!(
        "warm-{}-{}.pyc",
        hex(&interp.finalize()[..8]),
        hex(&source[..8])
    )))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The file's bytes when it is a regular file of this user's, reached through no link, and
/// not larger than a compiled template can be.
fn read(path: &Path) -> Option<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    let meta = file.metadata().ok()?;
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    if !meta.is_file() || meta.uid() != me || meta.len() > MAX_LEN {
        return None;
    }
    let mut code = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_LEN).read_to_end(&mut code).ok()?;
    (code.len() > 16).then_some(code)
}

/// How old another build's compiled template for the same interpreter must be before it is
/// removed: two builds that share a cache (a release and a development build) would otherwise
/// remove each other's on every start, and compile again each time.
const OTHER_BUILDS_KEPT: std::time::Duration = std::time::Duration::from_secs(7 * 86400);

/// How old a compile's own file must be before it counts as left by one cut short.
const LEFT_AFTER: std::time::Duration = std::time::Duration::from_secs(3600);

/// Has the interpreter compile the template's source to the file, with the variables a process
/// reads as it starts that the template has (a `LD_LIBRARY_PATH` it needs, say), after
/// [`tidy`]ing the directory.
fn write(compile: &Pending) -> std::io::Result<()> {
    use std::io::Write;
    tidy(&compile.pyc);
    let mut cmd = std::process::Command::new(&compile.program);
    cmd.args(["-I", "-S", "-c", COMPILE])
        .arg(&compile.pyc)
        .env_clear()
        .envs(compile.env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = crate::process::spawn_helper(&mut cmd)?;
    let fed = child
        .stdin
        .take()
        .map(|mut input| input.write_all(SOURCE.as_bytes()));
    let status = child.wait()?;
    if !status.success() || !matches!(fed, Some(Ok(()))) {
        return Err(std::io::Error::other(format!("the compile ended {status}")));
    }
    Ok(())
}

/// Removes what other builds left for `pyc`'s interpreter long ago, and what compiles cut
/// short left (a compile that fails removes its own file; one killed cannot).
fn tidy(pyc: &Path) {
    let name = pyc.file_name().unwrap_or_default().to_string_lossy();
    // `warm-<interpreter>-`: what this interpreter had.
    let ours = &name[..name.len().min("warm-".len() + 17)];
    let Some(Ok(dir)) = pyc.parent().map(std::fs::read_dir) else {
        return;
    };
    for entry in dir.flatten() {
        let other = entry.file_name();
        let other = other.to_string_lossy();
        if !other.starts_with(ours) || other == name {
            continue;
        }
        let age = entry
            .metadata()
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.elapsed().ok())
            .unwrap_or_default();
        let cut_short = other.contains(".tmp-");
        if (cut_short && age > LEFT_AFTER) || (!cut_short && age > OTHER_BUILDS_KEPT) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_is_a_link_a_fifo_or_too_short_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.pyc");
        std::fs::write(&real, vec![1u8; 64]).unwrap();
        assert_eq!(read(&real).map(|c| c.len()), Some(64));
        let link = dir.path().join("link.pyc");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert_eq!(read(&link), None);
        let short = dir.path().join("short.pyc");
        std::fs::write(&short, b"0123456789abcdef").unwrap();
        assert_eq!(read(&short), None);
        let fifo = dir.path().join("fifo.pyc");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert_eq!(read(&fifo), None);
    }

    #[test]
    fn the_file_is_named_by_the_interpreter_and_the_source() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("python-a");
        let b = dir.path().join("python-b");
        std::fs::write(&a, b"a").unwrap();
        std::fs::write(&b, b"b").unwrap();
        let (fa, fb) = (
            file_for(dir.path(), &a).unwrap(),
            file_for(dir.path(), &b).unwrap(),
        );
        assert_ne!(fa, fb);
        assert_eq!(fa, file_for(dir.path(), &a).unwrap());
        let name = fa.file_name().unwrap().to_string_lossy().to_string();
        assert!(
            name.starts_with("warm-") && name.ends_with(".pyc"),
            "{name}"
        );
        assert_eq!(name.len(), "warm-".len() + 16 + 1 + 16 + ".pyc".len());
        assert_eq!(file_for(dir.path(), &dir.path().join("missing")), None);
        // The interpreter changed in place (reinstalled: another mtime): another file.
        let f = std::fs::File::options().write(true).open(&a).unwrap();
        f.set_modified(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1))
            .unwrap();
        assert_ne!(file_for(dir.path(), &a).unwrap(), fa);
    }
}

//! When the write-ahead log is copied back into the database (a checkpoint), and by whom.
//!
//! SQLite's own rule checkpoints in the commit that takes the log past a size, whichever
//! commit that is. For a short `flowrun run` that was the commit recording the execution's start
//! or its end, every fourth run or so: three fsyncs and ~100 page writes (about 3 ms here)
//! between the user pressing Enter and the interpreter starting, or between its last event and
//! the prompt. The log is kept short all the same (a process that opens the database while no
//! other has it open reads every valid frame to rebuild its index), but the copy is moved to
//! moments when the runner has nothing else to do, or nothing a user waits on: just after the
//! child is spawned, while the interpreter starts, and after a batch of its events is recorded
//! while it runs ([`Store::checkpoint_in_background`], called by the recorder). A log that
//! grows past [`HARD_FRAMES`] anyway (writers side by side, one that records no execution) is
//! checkpointed in its commit, as SQLite would.
//!
//! The recorder's copies are made by a thread of the store's own, on a connection of its own
//! ([`Store::checkpoint_in_background`]): a warm execution is over in about a millisecond, less
//! than the copy's fsyncs take on a disk like this VM's (~1 ms each), so a copy made in the
//! runner's thread held up the execution's events and end, and the next case of a `flowrun
//! test` (12 copies in 100 cases, ~3.5 ms each: a tenth of the suite). SQLite lets a passive
//! checkpoint run beside a writer; the runner goes on committing while the log is copied.

use crate::Store;
use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};

/// Frames at which the runner checkpoints when it next has a quiet moment. An execution writes
/// ~45; 200 checkpoints every ~4 executions (and measured ~0.6 ms less per `flowrun run` than
/// SQLite's 1000, which makes every open read ~2.5 MB of log).
pub const SOFT_FRAMES: i32 = 200;

/// Frames at which a commit checkpoints by itself (SQLite's default).
pub const HARD_FRAMES: i32 = 1000;

/// The log's length in frames after the last commit of this process (0 once a copy took all of
/// it). One per process, not per connection: the hook SQLite calls is a plain function. A
/// process writes through one connection (its store's checkpointing thread only copies; tests
/// may hold several: for them this only decides when a checkpoint is tried, never what is
/// kept, and they run one process each under nextest).
static FRAMES: AtomicI32 = AtomicI32::new(0);

/// Has the log grown past [`SOFT_FRAMES`] since it was last copied back?
fn due() -> bool {
    FRAMES.load(Ordering::Relaxed) >= SOFT_FRAMES
}

/// A file's device and inode: which file a path named when it was read.
pub(crate) fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

fn after_commit(wal: &rusqlite::hooks::Wal, frames: i32) -> rusqlite::Result<()> {
    FRAMES.store(frames, Ordering::Relaxed);
    if frames >= HARD_FRAMES {
        // As SQLite's automatic checkpoint: passive, and a busy database is not an error of
        // the commit that just succeeded.
        if let Ok((log, copied)) = wal.checkpoint_v2(rusqlite::hooks::CheckpointMode::PASSIVE) {
            if log == copied {
                FRAMES.store(0, Ordering::Relaxed);
            }
        }
    }
    Ok(())
}

/// Replaces SQLite's automatic checkpoint on `conn` with the rule above.
pub(crate) fn install(conn: &rusqlite::Connection) {
    conn.wal_hook(Some(after_commit));
}

/// Copies the log back (passive: it waits for no reader or writer), noting when it copied all
/// of it; a database another process is using is checkpointed later, by whoever is next. What
/// SQLite calls the log is its length when the copy began: a commit made meanwhile (the
/// store's thread copies beside the runner) leaves the count it set, so that the copy is asked
/// for again and the log can start over once all of it is in.
fn checkpoint(conn: &Connection) {
    let before = FRAMES.load(Ordering::Relaxed);
    let copied = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        ))
    });
    // (-1, -1: not a log at all, a database not in WAL mode.)
    if let Ok((0, log, done)) = copied {
        if log >= 0 && log == done {
            let _ = FRAMES.compare_exchange(before, 0, Ordering::Relaxed, Ordering::Relaxed);
        }
    }
}

/// The store's checkpointing thread: started at its first copy, it opens its own connection and
/// copies the log each time it is asked and the copy is still due; it ends when its store is
/// dropped (its sender with it). A process that exits meanwhile cuts a copy short, which SQLite
/// recovers from as from a crash: the log keeps every frame until a copy has finished.
pub(crate) struct Background {
    asks: SyncSender<()>,
}

impl Background {
    /// None when the file at `path` is no longer the store's (`file`: its device and inode as
    /// the store opened it): the thread would copy another database's log.
    fn start(path: PathBuf, file: Option<(u64, u64)>) -> Option<Background> {
        if file.is_none() || file_id(&path) != file {
            return None;
        }
        // One ask waits at most: asks while a copy is waiting to start add nothing to it.
        let (asks, asked) = sync_channel::<()>(1);
        std::thread::Builder::new()
            .name("flowrun-wal".into())
            .spawn(move || {
                let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
                let Ok(conn) = Connection::open_with_flags(&path, flags) else {
                    return;
                };
                // Closing it must not copy the log as the last connection would (fsyncs the
                // ending process would wait for).
                let _ = conn.set_db_config(
                    rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
                    true,
                );
                while asked.recv().is_ok() {
                    // An ask that waited while the last copy ran may find nothing due now.
                    if due() {
                        checkpoint(&conn);
                    }
                }
            })
            .ok()?;
        Some(Background { asks })
    }
}

impl Store {
    /// Copies the log back if it has grown past [`SOFT_FRAMES`], here and now. Never fails.
    #[cfg(test)]
    pub(crate) fn checkpoint_if_due(&self) {
        if due() {
            checkpoint(&self.conn);
        }
    }

    /// Has the store's thread copy the log back if it has grown past [`SOFT_FRAMES`], and
    /// returns at once: for a moment when the caller would otherwise wait (a child just
    /// spawned, a batch of its events recorded) but must not wait for the copy itself. Where
    /// the thread cannot be started (or the file is no longer the store's), copies here, as
    /// it does from the next ask on when the thread could not open the database. Never fails.
    pub fn checkpoint_in_background(&mut self) {
        if !due() {
            return;
        }
        if self.background.is_none() {
            self.background = Background::start(self.path.clone(), self.file);
        }
        match &self.background {
            Some(b) => match b.asks.try_send(()) {
                Ok(()) | Err(TrySendError::Full(())) => {}
                // Its connection could not be opened: it is not started again.
                Err(TrySendError::Disconnected(())) => checkpoint(&self.conn),
            },
            None => checkpoint(&self.conn),
        }
    }

    /// The log's length in frames after this process's last commit.
    #[cfg(test)]
    fn wal_frames() -> i32 {
        FRAMES.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One commit of one small row: a frame or two of log.
    fn commit(store: &Store, i: i64) {
        store
            .connection()
            .execute("INSERT INTO wal_test (x) VALUES (?1)", [i])
            .unwrap();
    }

    #[test]
    fn commits_leave_the_log_to_the_quiet_moment_and_a_long_one_is_copied_in_its_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("flowrun.db")).unwrap();
        store
            .connection()
            .execute_batch("CREATE TABLE wal_test (x INTEGER)")
            .unwrap();
        // Past the soft limit, no commit copies the log back (SQLite's own rule at 200 would).
        let mut last = Store::wal_frames();
        for i in 0..300 {
            commit(&store, i);
            let now = Store::wal_frames();
            assert!(
                now > last,
                "frame count went from {last} to {now} at commit {i}"
            );
            last = now;
        }
        assert!(last >= SOFT_FRAMES, "{last}");
        // The quiet moment copies it all; the next commit starts the log again.
        store.checkpoint_if_due();
        assert_eq!(Store::wal_frames(), 0);
        commit(&store, -1);
        assert!(Store::wal_frames() < 5, "{}", Store::wal_frames());
        // Below the soft limit it does nothing.
        store.checkpoint_if_due();
        commit(&store, -2);
        assert!(Store::wal_frames() >= 2);
        // Without a quiet moment, the log never grows far past the hard limit.
        let mut most = 0;
        for i in 0..2 * HARD_FRAMES as i64 {
            commit(&store, i);
            most = most.max(Store::wal_frames());
        }
        assert!(
            (HARD_FRAMES - 10..HARD_FRAMES + 10).contains(&most),
            "the log reached {most} frames"
        );
        let rows: i64 = store
            .connection()
            .query_row("SELECT count(*) FROM wal_test", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 302 + 2 * HARD_FRAMES as i64);
    }

    /// The copy asked for in the background is made by the store's own thread while the caller
    /// goes on committing (and asking, as the recorder does), and the log starts again after it.
    #[test]
    fn a_copy_in_the_background_is_made_beside_the_commits() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("flowrun.db")).unwrap();
        store
            .connection()
            .execute_batch("CREATE TABLE wal_test (x INTEGER)")
            .unwrap();
        // Below the soft limit nothing is asked, and no thread started.
        store.checkpoint_in_background();
        assert!(store.background.is_none());
        for i in 0..SOFT_FRAMES as i64 {
            commit(&store, i);
        }
        store.checkpoint_in_background();
        assert!(store.background.is_some(), "the thread is started");
        // A thread of this process's own, named once it runs (nextest runs each test in a
        // process of its own).
        let named = || {
            std::fs::read_dir("/proc/self/task")
                .unwrap()
                .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
                .any(|c| c.trim() == "flowrun-wal")
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !named() {
            assert!(
                std::time::Instant::now() < deadline,
                "no thread of the store's"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        // The log starts again once a copy took all of it: at the first commit after it, long
        // before the commits reach the hard limit, which would copy it in a commit (20 ms
        // between commits: ~16 s for the thread).
        let mut i = 0;
        loop {
            commit(&store, i);
            store.checkpoint_in_background();
            i += 1;
            if Store::wal_frames() < 10 {
                break;
            }
            assert!(
                Store::wal_frames() < HARD_FRAMES - 10,
                "not copied in the background"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let rows: i64 = store
            .connection()
            .query_row("SELECT count(*) FROM wal_test", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, SOFT_FRAMES as i64 + i);
        // Dropping the store ends its thread; the database opens again whole.
        drop(store);
        let again = Store::open(&dir.path().join("flowrun.db")).unwrap();
        let rows: i64 = again
            .connection()
            .query_row("SELECT count(*) FROM wal_test", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, SOFT_FRAMES as i64 + i);
    }

    /// A database file replaced under an open store (moved away, another put in its place) is
    /// not the one the thread would copy: the store copies its own log itself.
    #[test]
    fn a_replaced_file_is_not_copied_by_the_thread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flowrun.db");
        let mut store = Store::open(&path).unwrap();
        store
            .connection()
            .execute_batch("CREATE TABLE wal_test (x INTEGER)")
            .unwrap();
        for i in 0..SOFT_FRAMES as i64 {
            commit(&store, i);
        }
        std::fs::rename(&path, dir.path().join("moved.db")).unwrap();
        std::fs::write(&path, b"").unwrap();
        store.checkpoint_in_background();
        assert!(store.background.is_none(), "no thread for another file");
        assert_eq!(Store::wal_frames(), 0, "copied here instead");
    }
}

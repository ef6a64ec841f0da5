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
//! while it runs ([`Store::checkpoint_if_due`], called by the recorder). A log that grows past
//! [`HARD_FRAMES`] anyway (writers side by side, one that records no execution) is
//! checkpointed in its commit, as SQLite would.

use crate::Store;
use std::sync::atomic::{AtomicI32, Ordering};

/// Frames at which the runner checkpoints when it next has a quiet moment. An execution writes
/// ~45; 200 checkpoints every ~4 executions (and measured ~0.6 ms less per `flowrun run` than
/// SQLite's 1000, which makes every open read ~2.5 MB of log).
pub const SOFT_FRAMES: i32 = 200;

/// Frames at which a commit checkpoints by itself (SQLite's default).
pub const HARD_FRAMES: i32 = 1000;

/// The log's length in frames after the last commit of this process. One per process, not per
/// connection: the hook SQLite calls is a plain function. A process holds one connection (tests
/// may hold several; for them this only decides when a checkpoint is tried, never what is kept).
static FRAMES: AtomicI32 = AtomicI32::new(0);

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

impl Store {
    /// Copies the log back into the database if it has grown past [`SOFT_FRAMES`]: for a moment
    /// when the caller would otherwise wait (a child just spawned). Never fails: a database
    /// another process is using is checkpointed later, by whoever is next.
    pub fn checkpoint_if_due(&self) {
        if FRAMES.load(Ordering::Relaxed) < SOFT_FRAMES {
            return;
        }
        let copied = self
            .conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            });
        if let Ok((0, log, done)) = copied {
            if log == done {
                FRAMES.store(0, Ordering::Relaxed);
            }
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
}

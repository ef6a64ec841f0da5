//! Locks shared between the tasks of one process, all handled one way.

use flowrun_store::Store;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, TryLockError};

/// Locks `m`, also when a thread panicked while holding it: every value kept behind these locks
/// (the store connection, queues, event buffers) stays consistent between statements, so a
/// panic elsewhere must not take the rest of a long-lived server down with it.
///
/// A lock held elsewhere is waited for off the async workers ([`off_workers`]): a holder can be
/// waiting in its turn for the database, up to 30 s.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.try_lock() {
        Ok(guard) => guard,
        Err(TryLockError::Poisoned(p)) => p.into_inner(),
        Err(TryLockError::WouldBlock) => {
            off_workers(|| m.lock().unwrap_or_else(PoisonError::into_inner))
        }
    }
}

/// The store, shared by whatever records into it in this process (one connection per process).
///
/// An execution's task writes it from an async worker (a hand-over to another thread per write
/// would be a wake-up on the way of every answer), and a write can wait: for another task's
/// write, or up to 30 s for another process that holds the database. Either wait gives the
/// worker's other tasks to another thread first ([`off_workers`]), so that `serve` keeps
/// answering whatever does not need the store, however few its workers.
#[derive(Clone)]
pub struct SharedStore {
    store: Arc<Mutex<Store>>,
    /// The database's path, known without the lock: an execution that starts while the one
    /// before it is read back (`flowrun test`) needs it before anything else of the store.
    path: Arc<Path>,
}

impl SharedStore {
    pub fn new(store: Store) -> SharedStore {
        // It fails only on a closed connection, whose timeout then stays.
        let _ = store.on_busy(wait_while_busy);
        SharedStore {
            path: store.path().into(),
            store: Arc::new(Mutex::new(store)),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, Store> {
        lock(&self.store)
    }

    /// The database's file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The store's wait for a database another process holds, off the async workers.
fn wait_while_busy(attempt: i32) -> bool {
    match flowrun_store::busy_pause(attempt) {
        Some(pause) => {
            off_workers(|| std::thread::sleep(pause));
            true
        }
        None => false,
    }
}

/// Runs `f`, which may block, without holding up the other tasks of a multi-thread runtime
/// when called on one of its workers: tokio moves them to another thread first. Elsewhere (a
/// blocking thread, a current-thread runtime, no runtime) it just runs `f`.
pub(crate) fn off_workers<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Values kept for the whole process by a key that fully determines them (a schema's text, a
/// snapshot's hash): built once, shared by every execution. Emptied when it holds `keep`
/// entries, so it never grows without bound.
pub(crate) struct Memo<V> {
    map: OnceLock<Mutex<HashMap<String, V>>>,
    keep: usize,
}

impl<V: Clone> Memo<V> {
    pub(crate) const fn new(keep: usize) -> Memo<V> {
        Memo {
            map: OnceLock::new(),
            keep,
        }
    }

    /// The value for `key`, made by `make` (outside the lock) when there is none; what `make`
    /// fails with is returned and nothing kept.
    pub(crate) fn get_or<E>(&self, key: &str, make: impl FnOnce() -> Result<V, E>) -> Result<V, E> {
        let map = self.map.get_or_init(Mutex::default);
        if let Some(v) = lock(map).get(key) {
            return Ok(v.clone());
        }
        let v = make()?;
        let mut map = lock(map);
        if map.len() >= self.keep {
            map.clear();
        }
        map.insert(key.to_string(), v.clone());
        Ok(v)
    }
}

/// What a panic said (its `&str` or `String` payload), for a report of a bug.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into())
}

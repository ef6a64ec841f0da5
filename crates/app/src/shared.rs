//! Locks shared between the tasks of one process, all handled one way.

use flowrun_store::Store;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

/// Locks `m`, also when a thread panicked while holding it: every value kept behind these locks
/// (the store connection, queues, event buffers) stays consistent between statements, so a
/// panic elsewhere must not take the rest of a long-lived server down with it.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The store, shared by whatever records into it in this process (one connection per process).
#[derive(Clone)]
pub struct SharedStore(Arc<Mutex<Store>>);

impl SharedStore {
    pub fn new(store: Store) -> SharedStore {
        SharedStore(Arc::new(Mutex::new(store)))
    }

    pub fn lock(&self) -> MutexGuard<'_, Store> {
        lock(&self.0)
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

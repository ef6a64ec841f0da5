//! Locks shared between the tasks of one process, all handled one way.

use flowrun_store::Store;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

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

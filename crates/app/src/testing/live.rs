//! Stop and pause requests for the executions of a running suite. `flowrun stop ID` (or the
//! API of a server sharing the store) reaches a case's execution as it reaches one of `flowrun
//! run`, within [`crate::control::REQUEST_POLL`], instead of waiting out
//! [`crate::control::STOP_ANSWER_WAIT`] for a runner that never looks; the suite's own
//! interruption (Ctrl-C, SIGTERM) reaches every case's execution through the same channel.

use crate::SharedStore;
use crate::control::watch_requests;
use flowrun_executor::StopReason;
use flowrun_store::Request;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use tokio::task::JoinHandle;

type Stop = watch::Sender<Option<StopReason>>;

/// The executions of the suite that run now, each with the stop channel its executor watches.
#[derive(Default)]
pub(super) struct LiveCases {
    cases: Mutex<HashMap<String, Stop>>,
}

/// A case's execution registered in [`LiveCases`] until this drops.
pub(super) struct Entered {
    live: Arc<LiveCases>,
    id: String,
}

impl Drop for Entered {
    fn drop(&mut self) {
        crate::lock(&self.live.cases).remove(&self.id);
    }
}

impl LiveCases {
    /// Starts passing on what concerns the suite's executions: the suite's stop (to every
    /// case's execution) and what other processes ask of one through the store. The two tasks
    /// run until aborted.
    pub(super) fn watch(
        self: &Arc<Self>,
        store: SharedStore,
        mut suite: watch::Receiver<Option<StopReason>>,
    ) -> [JoinHandle<()>; 2] {
        let live = self.clone();
        let forward = tokio::spawn(async move {
            while suite.changed().await.is_ok() {
                let reason = *suite.borrow();
                if let Some(reason) = reason {
                    for stop in crate::lock(&live.cases).values() {
                        let _ = stop.send(Some(reason));
                    }
                }
            }
        });
        let (ids, asked) = (self.clone(), self.clone());
        let requests = tokio::spawn(watch_requests(
            store,
            move || crate::lock(&ids.cases).keys().cloned().collect(),
            move |id, request| {
                let reason = match request {
                    Request::Stop => StopReason::Cancel,
                    Request::Pause => StopReason::Pause,
                };
                if let Some(stop) = crate::lock(&asked.cases).get(&id) {
                    let _ = stop.send(Some(reason));
                }
            },
        ));
        [forward, requests]
    }

    /// Registers execution `id`; its stop channel starts with the suite's stop, read under the
    /// same lock the forwarding takes, so a suite stop is never missed between the two.
    pub(super) fn enter(
        self: &Arc<Self>,
        id: &str,
        suite: &watch::Receiver<Option<StopReason>>,
    ) -> (Entered, watch::Receiver<Option<StopReason>>) {
        let mut cases = crate::lock(&self.cases);
        let (stop, watched) = watch::channel(*suite.borrow());
        cases.insert(id.to_string(), stop);
        let entered = Entered {
            live: self.clone(),
            id: id.to_string(),
        };
        (entered, watched)
    }
}

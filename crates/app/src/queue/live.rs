//! One execution's live view in `serve`: its events so far and a channel for the next ones,
//! its stop and pause requests, its end, and the record a waiting caller gets (see the parent
//! module for how subscribers use it).

use crate::SharedStore;
use flowrun_events::{Envelope, Event, ExecStatus, Part, now_ms};
use flowrun_executor::{Sink, StopReason};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, watch};

/// Events of one execution as they happen.
pub struct Live {
    pub id: String,
    state: Mutex<LiveState>,
    tx: broadcast::Sender<Arc<Envelope>>,
    stop: watch::Sender<Option<StopReason>>,
    pub(super) done: watch::Sender<Option<ExecStatus>>,
    /// The final record, for a caller that waits for it ([`Live::final_record`]).
    record: Mutex<FinalRecord>,
}

/// The record of an execution as it ended, made by its own task when someone waits for it: that
/// task has just written the end and holds nothing else, while the caller would need another
/// thread to read the store (`?wait=true` answers every request with a record).
enum FinalRecord {
    NotWanted,
    Wanted,
    Made(Value),
}

struct LiveState {
    events: Vec<Arc<Envelope>>,
    /// The text streamed so far by each node (or item or iteration) that streams now, for
    /// viewers that join while it arrives; gone at the node's end.
    streams: BTreeMap<(String, Option<Part>), String>,
}

/// The most streamed text of one node kept for viewers that join late.
const MAX_STREAM_KEPT: usize = 1 << 20;

/// Events kept past which the memory an execution held is given back to the system after it
/// ends ([`Live::trim_after`]): ~200 bytes each on the heap, so 10,000 are ~2 MB.
const TRIM_AFTER_EVENTS: usize = 10_000;

/// When after such an end, each after the one before: the viewers still reading it, the
/// waiting caller and the store's writes let go of its events in the moments after it, or, for
/// a slow reader of its stream, minutes later; the pages are free only once all have.
const TRIM_AFTER: [std::time::Duration; 4] = [
    std::time::Duration::from_secs(1),
    std::time::Duration::from_secs(5),
    std::time::Duration::from_secs(30),
    std::time::Duration::from_secs(120),
];

impl Live {
    pub(super) fn new(id: &str) -> (Arc<Live>, watch::Receiver<Option<StopReason>>) {
        let (stop, stop_rx) = watch::channel(None);
        let live = Arc::new(Live {
            id: id.to_string(),
            state: Mutex::new(LiveState {
                events: Vec::new(),
                streams: BTreeMap::new(),
            }),
            tx: broadcast::channel(1024).0,
            stop,
            done: watch::channel(None).0,
            record: Mutex::new(FinalRecord::NotWanted),
        });
        (live, stop_rx)
    }

    pub(super) fn push(&self, env: Envelope) {
        let env = Arc::new(env);
        let mut st = crate::lock(&self.state);
        match &env.event {
            Event::NodeStart {
                node,
                item,
                iteration,
                ..
            }
            | Event::NodeEnd {
                node,
                item,
                iteration,
                ..
            } => {
                st.streams
                    .remove(&(node.clone(), Part::from_fields(*item, *iteration)));
            }
            _ => {}
        }
        st.events.push(env.clone());
        // No receiver is fine: the buffer has it.
        let _ = self.tx.send(env);
    }

    /// A `node_delta`: kept as the text so far of its node, and sent to every subscriber.
    fn push_delta(&self, env: Envelope) {
        let mut st = crate::lock(&self.state);
        if let Event::NodeDelta {
            node,
            text,
            item,
            iteration,
            ..
        } = &env.event
        {
            let kept = st
                .streams
                .entry((node.clone(), Part::from_fields(*item, *iteration)))
                .or_default();
            if kept.len() + text.len() <= MAX_STREAM_KEPT {
                kept.push_str(text);
            }
        }
        let _ = self.tx.send(Arc::new(env));
    }

    /// After an execution that kept many events, gives the memory the allocator then holds
    /// free back to the system: 1, 6, 36 and 156 s later ([`TRIM_AFTER`]), a few milliseconds
    /// each on a blocking thread; rounds started close together are one. A server keeps every
    /// event of a running
    /// execution here (viewers that join late get them all): a loud execution's 160,000 log
    /// lines took it from 13 to 112 MB, and glibc's allocator kept those pages, once freed, for
    /// as long as the server ran (trimmed: ~19 MB).
    pub(super) fn trim_after(&self) {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        {
            use std::sync::atomic::{AtomicBool, Ordering};
            /// A round of trims runs; `AGAIN`: start it over (another large execution ended).
            static RUNNING: AtomicBool = AtomicBool::new(false);
            static AGAIN: AtomicBool = AtomicBool::new(false);
            if crate::lock(&self.state).events.len() < TRIM_AFTER_EVENTS {
                return;
            }
            AGAIN.store(true, Ordering::SeqCst);
            if RUNNING.swap(true, Ordering::SeqCst) {
                return;
            }
            tokio::spawn(async {
                let mut step = 0;
                loop {
                    if AGAIN.swap(false, Ordering::SeqCst) {
                        step = 0;
                    }
                    let Some(&wait) = TRIM_AFTER.get(step) else {
                        RUNNING.store(false, Ordering::SeqCst);
                        // One that ended as this round ended, and found it still running.
                        if AGAIN.load(Ordering::SeqCst) && !RUNNING.swap(true, Ordering::SeqCst) {
                            continue;
                        }
                        return;
                    };
                    tokio::time::sleep(wait).await;
                    step += 1;
                    let _ = tokio::task::spawn_blocking(|| {
                        // SAFETY: malloc_trim only returns the allocator's free pages.
                        unsafe {
                            libc::malloc_trim(0);
                        }
                    })
                    .await;
                }
            });
        }
    }

    /// The events after `after` so far, then the text streamed so far by what streams now
    /// (`node_delta` with `so_far`), and a receiver for every later event and delta.
    pub fn subscribe(
        &self,
        after: u64,
    ) -> (Vec<Arc<Envelope>>, broadcast::Receiver<Arc<Envelope>>) {
        let st = crate::lock(&self.state);
        let rx = self.tx.subscribe();
        let mut backlog = Self::tail(&st.events, after);
        backlog.extend(self.so_far(&st));
        (backlog, rx)
    }

    /// The text streamed so far by each node that streams now, as `node_delta` events with
    /// `so_far` (their `seq` is the last event's).
    fn so_far(&self, st: &LiveState) -> Vec<Arc<Envelope>> {
        let seq = st.events.len() as u64;
        st.streams
            .iter()
            .map(|((node, part), text)| {
                let (item, iteration) = Part::fields(*part);
                Arc::new(Envelope {
                    seq,
                    execution_id: self.id.clone(),
                    event: Event::NodeDelta {
                        node: node.clone(),
                        text: text.clone(),
                        ts: now_ms(),
                        item,
                        iteration,
                        so_far: true,
                    },
                })
            })
            .collect()
    }

    /// After a lag: the events after `after` and the text streamed so far, as at subscribing.
    pub fn catch_up(&self, after: u64) -> Vec<Arc<Envelope>> {
        let st = crate::lock(&self.state);
        let mut list = Self::tail(&st.events, after);
        list.extend(self.so_far(&st));
        list
    }

    /// The events after `after` so far.
    pub fn since(&self, after: u64) -> Vec<Arc<Envelope>> {
        let st = crate::lock(&self.state);
        Self::tail(&st.events, after)
    }

    fn tail(events: &[Arc<Envelope>], after: u64) -> Vec<Arc<Envelope>> {
        // seq is 1, 2, 3, … so event n sits at index n - 1.
        let start = (after as usize).min(events.len());
        events[start..].to_vec()
    }

    /// Becomes `Some(status)` once the execution has ended and the store holds its final state.
    pub fn done(&self) -> watch::Receiver<Option<ExecStatus>> {
        self.done.subscribe()
    }

    /// Waits for the end and returns the execution's record as [`views::record_json`] makes
    /// it, built by the execution's task right after it recorded the end. `None` when it was
    /// too late to ask (the task had looked already) or the record could not be read: then
    /// read the store, which holds the same. For one caller: the record is handed over, not
    /// copied.
    ///
    /// [`views::record_json`]: crate::views::record_json
    pub async fn final_record(&self) -> Option<Value> {
        {
            let mut r = crate::lock(&self.record);
            if matches!(*r, FinalRecord::NotWanted) {
                *r = FinalRecord::Wanted;
            }
        }
        super::wait_done(self.done()).await?;
        match std::mem::replace(&mut *crate::lock(&self.record), FinalRecord::NotWanted) {
            FinalRecord::Made(v) => Some(v),
            _ => None,
        }
    }

    /// In the execution's task, once the end is recorded: the record, if someone waits for it.
    pub(super) fn make_record(&self, store: &SharedStore) {
        let mut r = crate::lock(&self.record);
        if matches!(*r, FinalRecord::Wanted)
            && let Ok(v) = crate::views::record_json(&store.lock(), &self.id)
        {
            *r = FinalRecord::Made(v);
        }
    }

    pub(super) fn cancel(&self) {
        self.ask(StopReason::Cancel);
    }

    /// A stop because the server is shutting down (which the execution's error says).
    pub(super) fn shut_down(&self) {
        self.ask(StopReason::Shutdown);
    }

    pub(super) fn pause(&self) {
        self.ask(StopReason::Pause);
    }

    /// Tells the executor, once: a pause may become a stop, nothing else changes what was asked.
    fn ask(&self, reason: StopReason) {
        self.stop.send_if_modified(|v| {
            let takes =
                v.is_none() || (*v == Some(StopReason::Pause) && reason != StopReason::Pause);
            if takes {
                *v = Some(reason);
            }
            takes
        });
    }
}

/// The sink the executor feeds: every event goes to the live buffer and its subscribers.
pub(super) struct LiveSink(pub(super) Arc<Live>);

impl Sink for LiveSink {
    fn event(&mut self, envelope: &Envelope) {
        self.0.push(envelope.clone());
    }
    fn delta(&mut self, envelope: &Envelope) {
        self.0.push_delta(envelope.clone());
    }
}

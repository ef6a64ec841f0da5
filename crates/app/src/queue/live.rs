//! One execution's live view in `serve`: its events so far and a channel for the next ones,
//! its stop and pause requests, its end, and the record a waiting caller gets (see the parent
//! module for how subscribers use it).

use crate::SharedStore;
use flowrun_events::{Envelope, Event, ExecStatus, Part, now_ms};
use flowrun_executor::{Sink, StopReason};
use serde_json::Value;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, watch};

/// What follows a subscriber's backlog: every later event and delta.
pub type Subscription = broadcast::Receiver<Arc<Envelope>>;

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
    /// The latest events: at most [`MAX_KEPT_BYTES`] of them by [`approx_bytes`] (and at least
    /// [`MIN_KEPT`]); what came before is in the store ([`Live::first_kept`]).
    events: VecDeque<Arc<Envelope>>,
    kept_bytes: usize,
    /// What every event pushed held, by [`approx_bytes`]: past [`TRIM_AFTER_BYTES`] the memory
    /// is given back after the end ([`Live::trim_after`]).
    pushed_bytes: usize,
    /// The `seq` of `events[0]` (events are numbered 1, 2, 3, …).
    first: u64,
    /// The text streamed so far by each node (or item or iteration) that streams now, for
    /// viewers that join while it arrives; gone at the node's end.
    streams: BTreeMap<(String, Option<Part>), String>,
}

/// The most streamed text of one node kept for viewers that join late.
const MAX_STREAM_KEPT: usize = 1 << 20;

/// What the events of one execution kept in memory may hold, by [`approx_bytes`]: the log cap
/// bounds its log lines, but not the starts and ends of its items and iterations (a `for_each`
/// over a list of a million is two million events). A viewer that joins later reads the events
/// let go from the store, which has them by then.
const MAX_KEPT_BYTES: usize = 16 << 20;

/// Events kept past [`MAX_KEPT_BYTES`] when they are few: the last moments of an execution,
/// which the store may not have written yet (a late viewer waits for the store to have them
/// otherwise) — up to [`HARD_MAX_KEPT_BYTES`], which large events (a failed item's error holds
/// up to 256 KiB) would pass.
const MIN_KEPT: usize = 4096;
const HARD_MAX_KEPT_BYTES: usize = 64 << 20;

/// What an event holds on the heap, roughly: its strings and a fixed part.
fn approx_bytes(env: &Envelope) -> usize {
    let error = |e: &Option<flowrun_events::ErrorInfo>| {
        e.as_ref().map_or(0, |e| {
            e.kind.len() + e.message.len() + e.traceback.as_ref().map_or(0, String::len)
        })
    };
    let own = match &env.event {
        Event::ExecutionStart { nodes, .. } => nodes.iter().map(|n| n.len() + 24).sum(),
        Event::NodeStart { node, .. } => node.len(),
        Event::NodeEnd {
            node,
            output_preview,
            error: e,
            reason,
            ..
        } => {
            node.len()
                + output_preview.as_ref().map_or(0, String::len)
                + reason.as_ref().map_or(0, String::len)
                + error(e)
        }
        Event::Log { node, line, .. } => node.as_ref().map_or(0, String::len) + line.len(),
        Event::NodeDelta { node, text, .. } => node.len() + text.len(),
        Event::ExecutionEnd {
            error: e, output, ..
        } => error(e) + output.as_ref().map_or(0, |o| o.to_string().len()),
    };
    own + env.execution_id.len() + 160
}

/// Events kept past which the memory an execution held is given back to the system after it
/// ends ([`Live::trim_after`]): ~200 bytes each on the heap, so 10,000 are ~2 MB.
const TRIM_AFTER_EVENTS: usize = 10_000;
/// Or past this many bytes of them, whatever their number (large errors).
const TRIM_AFTER_BYTES: usize = 8 << 20;

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
                events: VecDeque::new(),
                kept_bytes: 0,
                pushed_bytes: 0,
                first: 1,
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
        let bytes = approx_bytes(&env);
        st.kept_bytes += bytes;
        st.pushed_bytes = st.pushed_bytes.saturating_add(bytes);
        st.events.push_back(env.clone());
        while st.kept_bytes > MAX_KEPT_BYTES
            && (st.events.len() > MIN_KEPT || st.kept_bytes > HARD_MAX_KEPT_BYTES)
        {
            if let Some(old) = st.events.pop_front() {
                st.kept_bytes = st.kept_bytes.saturating_sub(approx_bytes(&old));
                st.first += 1;
            }
        }
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
            let (had, bytes) = {
                let st = crate::lock(&self.state);
                ((st.first - 1) as usize + st.events.len(), st.pushed_bytes)
            };
            if had < TRIM_AFTER_EVENTS && bytes < TRIM_AFTER_BYTES {
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
    /// (`node_delta` with `so_far`), and a receiver for every later event and delta. `None`
    /// when events after `after` were let go ([`Live::first_kept`]): read them from the store
    /// first.
    pub fn subscribe(&self, after: u64) -> Option<(Vec<Arc<Envelope>>, Subscription)> {
        let st = crate::lock(&self.state);
        let rx = self.tx.subscribe();
        let mut backlog = Self::tail(&st, after)?;
        backlog.extend(self.so_far(&st));
        Some((backlog, rx))
    }

    /// The first event kept in memory: those before it are read from the store.
    pub fn first_kept(&self) -> u64 {
        crate::lock(&self.state).first
    }

    /// The text streamed so far by each node that streams now, as `node_delta` events with
    /// `so_far` (their `seq` is the last event's).
    fn so_far(&self, st: &LiveState) -> Vec<Arc<Envelope>> {
        let seq = st.first - 1 + st.events.len() as u64;
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

    /// After a lag: the events after `after` and the text streamed so far, as at subscribing
    /// (`None`: some were let go, as for [`Live::subscribe`]).
    pub fn catch_up(&self, after: u64) -> Option<Vec<Arc<Envelope>>> {
        let st = crate::lock(&self.state);
        let mut list = Self::tail(&st, after)?;
        list.extend(self.so_far(&st));
        Some(list)
    }

    /// The events after `after` so far (`None`: some were let go).
    pub fn since(&self, after: u64) -> Option<Vec<Arc<Envelope>>> {
        Self::tail(&crate::lock(&self.state), after)
    }

    fn tail(st: &LiveState, after: u64) -> Option<Vec<Arc<Envelope>>> {
        // seq is 1, 2, 3, …: event n sits at index n - first.
        if after.saturating_add(1) < st.first {
            return None;
        }
        // (Saturating: a client's `Last-Event-ID` may be the largest seq there is.)
        let start = usize::try_from(after.saturating_add(1) - st.first)
            .unwrap_or(usize::MAX)
            .min(st.events.len());
        Some(st.events.range(start..).cloned().collect())
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

#[cfg(test)]
mod tests {
    use super::*;
    use flowrun_events::Stream;

    fn log(seq: u64, bytes: usize) -> Envelope {
        Envelope {
            seq,
            execution_id: "e".into(),
            event: Event::Log {
                node: Some("n".into()),
                stream: Stream::Stdout,
                level: None,
                line: "x".repeat(bytes),
                ts: 0,
                item: None,
                iteration: None,
            },
        }
    }

    /// The buffer keeps the latest events up to its budget (and at least [`MIN_KEPT`]); a
    /// subscriber from before them is sent to the store, one from within them gets the rest.
    #[test]
    fn the_buffer_keeps_the_latest_events_within_its_budget() {
        let (live, _stop) = Live::new("e");
        let n = 3 * MIN_KEPT as u64;
        for seq in 1..=n {
            live.push(log(seq, 2000));
        }
        let first = live.first_kept();
        assert!(first > 1, "nothing let go");
        let st = crate::lock(&live.state);
        assert!(st.kept_bytes <= MAX_KEPT_BYTES, "{}", st.kept_bytes);
        assert_eq!(st.first - 1 + st.events.len() as u64, n);
        drop(st);
        assert!(live.subscribe(0).is_none());
        assert!(live.catch_up(first - 2).is_none());
        let (backlog, _rx) = live.subscribe(first - 1).unwrap();
        assert_eq!(backlog.first().map(|e| e.seq), Some(first));
        assert_eq!(backlog.last().map(|e| e.seq), Some(n));
        assert_eq!(live.since(n - 1).unwrap().len(), 1);
        assert!(live.since(n).unwrap().is_empty());
        // Large events: bounded in bytes too, however few.
        let (large, _stop) = Live::new("l");
        for seq in 1..=2000 {
            large.push(log(seq, 256 << 10));
        }
        let st = crate::lock(&large.state);
        assert!(st.kept_bytes <= HARD_MAX_KEPT_BYTES, "{}", st.kept_bytes);
        drop(st);
        // Small events: all kept.
        let (small, _stop) = Live::new("s");
        for seq in 1..=1000 {
            small.push(log(seq, 10));
        }
        assert_eq!(small.first_kept(), 1);
        assert_eq!(small.subscribe(0).unwrap().0.len(), 1000);
    }
}

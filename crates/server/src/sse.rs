//! `GET /api/executions/{id}/events`: an execution's events as Server-Sent Events.
//!
//! Each message is `id: <seq>`, `event: <kind>`, `data: <the event JSON>` — the objects
//! `flowrun run --events jsonl` prints. A client that sends `Last-Event-ID: N` (or
//! `?last_event_id=N`) gets the events after `N`: first what happened already, then the live
//! ones, without a gap and without a duplicate. After `execution_end` comes one `event: end`
//! (data `{"execution_id", "status"}`, no id) and the stream closes. A client that reconnects
//! after that with a `Last-Event-ID` at or past `execution_end` gets `204 No Content`, which tells
//! an `EventSource` to stop reconnecting. A comment line after 10 s without a message keeps idle
//! connections open, and `X-Accel-Buffering: no` keeps proxies from holding events back.
//!
//! Executions this server runs are followed through their live buffer (see `flowrun_app::queue`);
//! any other (run by `flowrun run`, or ended) through the store, polled every 100 ms and read a
//! page ([`PAGE_BYTES`]) at a time. What a stream holds for a client that does not read is
//! bounded by [`BUFFER_BYTES`] of events (one event at least, however long): the stream waits
//! for the client, and reads nothing more meanwhile.

use crate::AppState;
use crate::api::Segment;
use crate::api::error::{ApiError, blocking};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use flowrun_app::queue::{Live, wait_done};
use flowrun_events::{Envelope, ExecStatus};
use serde::Deserialize;
use serde_json::json;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, mpsc, watch};

/// The longest a stream stays silent: a comment line then keeps the connection (and any proxy or
/// client idle timeout of more than 10 s) from closing it.
pub const HEARTBEAT: Duration = Duration::from_secs(10);

/// The most event text a stream keeps for its client, sent but not yet taken by the connection
/// (which buffers up to ~400 KB more itself): a client that stops reading holds this much, not
/// the execution's whole record.
pub const BUFFER_BYTES: usize = 256 << 10;

/// The most event text read from the store at once for one stream.
pub const PAGE_BYTES: usize = 128 << 10;

/// A message with the share of [`BUFFER_BYTES`] it holds, given back when the connection takes
/// it.
type Held = (SseEvent, OwnedSemaphorePermit);

/// A stream's messages on their way to its connection: each holds its share of
/// [`BUFFER_BYTES`] until the connection takes it, so a client that stops reading holds that
/// much of the server's memory, whatever comes after.
pub(crate) struct Outbox {
    tx: mpsc::Sender<Held>,
    room: Arc<Semaphore>,
}

impl Outbox {
    /// An outbox and the stream of what is pushed into it, for an [`Sse`] response.
    pub(crate) fn new() -> (
        Outbox,
        impl futures_util::Stream<Item = Result<SseEvent, Infallible>>,
    ) {
        let (tx, rx) = mpsc::channel::<Held>(256);
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            // The permit goes back as the connection takes the message.
            rx.recv()
                .await
                .map(|(e, _permit)| (Ok::<_, Infallible>(e), rx))
        });
        let room = Arc::new(Semaphore::new(BUFFER_BYTES));
        (Outbox { tx, room }, stream)
    }

    /// Sends one message (of `bytes` of text) once the client has taken enough of the ones
    /// before it. False when the client is gone.
    pub(crate) async fn push(&self, ev: SseEvent, bytes: usize) -> bool {
        let share = bytes.clamp(1, BUFFER_BYTES) as u32;
        let Ok(permit) = self.room.clone().acquire_many_owned(share).await else {
            return false;
        };
        self.tx.send((ev, permit)).await.is_ok()
    }

    /// Resolves when the client is gone.
    pub(crate) async fn closed(&self) {
        self.tx.closed().await
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    last_event_id: Option<String>,
}

/// Where a stream is: the last seq sent, and whether `execution_end` went out.
struct Cursor {
    out: Outbox,
    last: u64,
    ended: bool,
    /// Followed live: the execution's end, after which a client that takes nothing for
    /// [`LET_GO`] is let go.
    live_done: Option<watch::Receiver<Option<ExecStatus>>>,
}

/// How long a stream of an execution that has ended waits for a client to take its next
/// message (the connection's buffers may still grow for a few seconds after the client stopped
/// reading). Then it ends without `end`: an `EventSource` reconnects with its `Last-Event-ID`
/// and is served from the store a page at a time, where a stream that waited on would keep the
/// finished execution's whole in-memory record (every event) for a client that may never read.
pub const LET_GO: Duration = Duration::from_secs(10);

impl Cursor {
    async fn push(&self, ev: SseEvent, bytes: usize) -> bool {
        let Some(done) = &self.live_done else {
            return self.out.push(ev, bytes).await;
        };
        let done = done.clone();
        tokio::select! {
            sent = self.out.push(ev, bytes) => sent,
            _ = async { wait_done(done).await; tokio::time::sleep(LET_GO).await } => false,
        }
    }

    /// Sends one event unless it was sent already. False when the client is gone.
    async fn send(&mut self, seq: u64, kind: &str, data: String) -> bool {
        if seq <= self.last {
            return true;
        }
        let bytes = data.len();
        let ev = SseEvent::default()
            .id(seq.to_string())
            .event(kind)
            .data(data);
        if !self.push(ev, bytes).await {
            return false;
        }
        self.last = seq;
        if kind == "execution_end" {
            self.ended = true;
        }
        true
    }

    async fn send_envelope(&mut self, env: &Envelope) -> bool {
        if env.event.is_live_only() {
            // A `node_delta`: no id (it is not numbered and not stored), and only to a client
            // that has every event before it.
            if env.seq != self.last {
                return true;
            }
            let mut v = serde_json::to_value(env).expect("events serialize");
            if let Some(o) = v.as_object_mut() {
                o.remove("seq");
            }
            let data = v.to_string();
            let bytes = data.len();
            let ev = SseEvent::default().event(env.event.kind()).data(data);
            return self.push(ev, bytes).await;
        }
        let data = serde_json::to_string(env).expect("events serialize");
        self.send(env.seq, env.event.kind(), data).await
    }

    async fn send_all(&mut self, list: &[Arc<Envelope>]) -> bool {
        for env in list {
            if !self.send_envelope(env).await {
                return false;
            }
        }
        true
    }
}

pub async fn events(
    State(app): State<AppState>,
    Segment(id): Segment,
    headers: HeaderMap,
    q: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = crate::api::query(q)?;
    // The header wins over the query: it is what a reconnecting EventSource sends.
    let given = headers
        .get("last-event-id")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .or(q.last_event_id);
    let after = match given.as_deref().map(str::trim) {
        None | Some("") => 0,
        Some(s) => s.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!(
                "Last-Event-ID '{s}': expected an event seq (a number)"
            ))
        })?,
    };
    let store = app.store.clone();
    let reconnect = given.is_some();
    let (id, finished) = blocking(move || {
        let store = store.lock();
        let id = store.resolve_id(&id)?;
        // Ended, and the client has everything up to `execution_end`: nothing more will come.
        let finished = reconnect
            && store.execution(&id)?.status.is_final()
            && !store.has_events_after(&id, after)?;
        Ok((id, finished))
    })
    .await?;
    if finished {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let (out, stream) = Outbox::new();
    tokio::spawn(produce(app, id, after, out));
    let mut resp = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(HEARTBEAT))
        .into_response();
    resp.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(resp)
}

async fn produce(app: AppState, id: String, after: u64, out: Outbox) {
    let mut cur = Cursor {
        out,
        last: after,
        ended: false,
        live_done: None,
    };
    let status = match app.executions.live(&id) {
        Some(live) => {
            cur.live_done = Some(live.done());
            follow_live(&app, &id, &live, &mut cur).await
        }
        None => follow_store(&app, &id, &mut cur).await,
    };
    let Some(status) = status else {
        return; // the client went away, or the server is shutting down
    };
    let data = json!({"execution_id": id, "status": status}).to_string();
    let bytes = data.len();
    cur.push(SseEvent::default().event("end").data(data), bytes)
        .await;
}

/// Follows an execution of this server. Returns its final status, or `None` if the client left.
/// Its events come from its live buffer, and those the buffer let go (a long execution's first
/// ones) from the store first.
async fn follow_live(
    app: &AppState,
    id: &str,
    live: &Live,
    cur: &mut Cursor,
) -> Option<ExecStatus> {
    let done = live.done();
    'follow: loop {
        if !from_store_until_kept(app, id, live, cur).await {
            return None;
        }
        let Some((backlog, mut rx)) = live.subscribe(cur.last) else {
            continue;
        };
        if !cur.send_all(&backlog).await {
            return None;
        }
        while !cur.ended {
            tokio::select! {
                // What the channel holds goes first: the execution is marked done only after its
                // last event and delta were pushed, and a delta left in the channel when `done`
                // won the race would be lost (only events are in the buffer read below).
                biased;
                r = rx.recv() => match r {
                    Ok(env) if env.event.is_live_only() && env.seq <= cur.last => {
                        if !cur.send_envelope(&env).await {
                            return None;
                        }
                    }
                    // (Checked: a client's `Last-Event-ID` may be the largest seq there is.)
                    Ok(env) if cur.last.checked_add(1) == Some(env.seq) && !env.event.is_live_only() => {
                        if !cur.send_envelope(&env).await {
                            return None;
                        }
                    }
                    Ok(env) if env.seq <= cur.last => {}
                    // A gap (cannot happen while the buffer and the channel agree) or a slow
                    // reader that lagged: the buffer has the events since, and the text
                    // streamed so far — or, if it let some go meanwhile, the store has them.
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        match live.catch_up(cur.last) {
                            Some(list) => {
                                if !cur.send_all(&list).await {
                                    return None;
                                }
                            }
                            None => continue 'follow,
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                _ = wait_done(done.clone()) => break,
                _ = cur.out.closed() => return None,
            }
        }
        break;
    }
    // Ended: whatever is still in the buffer (events pushed just before `done`); the store has
    // everything by now if the buffer let some of it go.
    match live.since(cur.last) {
        Some(list) => {
            if !cur.send_all(&list).await {
                return None;
            }
        }
        None => return follow_store(app, id, cur).await,
    }
    wait_done(done).await
}

/// Sends what the store has of the events the live buffer let go, up to the first it keeps.
/// False when the client left.
async fn from_store_until_kept(app: &AppState, id: &str, live: &Live, cur: &mut Cursor) -> bool {
    while cur.last.saturating_add(1) < live.first_kept() {
        let store = app.store.clone();
        let idc = id.to_string();
        let after = cur.last;
        let Ok(events) =
            blocking(move || Ok(store.lock().events_text(&idc, after, PAGE_BYTES)?)).await
        else {
            return false;
        };
        if events.is_empty() {
            if live.done().borrow().is_some() {
                // Ended, and the store does not have them: it failed to write them (the
                // execution's record says so). What it has comes next.
                cur.last = live.first_kept() - 1;
                return true;
            }
            // Not written yet (the store was busy): it will be.
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = cur.out.closed() => return false,
            }
        }
        for (seq, kind, text) in events {
            if !cur.send(seq, &kind, stored_json(seq, id, &text)).await {
                return false;
            }
        }
    }
    true
}

/// The event JSON as `--events jsonl` prints it, from a stored event: the envelope fields, then
/// the event's own fields exactly as recorded.
fn stored_json(seq: u64, execution_id: &str, data: &str) -> String {
    let head = json!({"seq": seq, "execution_id": execution_id}).to_string();
    match data.trim().strip_prefix('{') {
        Some(rest) if rest.trim_start().starts_with('}') => head,
        Some(rest) => format!("{},{rest}", &head[..head.len() - 1]),
        None => head,
    }
}

/// Follows an execution through the store (ended, or run by another process).
async fn follow_store(app: &AppState, id: &str, cur: &mut Cursor) -> Option<ExecStatus> {
    let mut shutdown = app.shutdown.clone();
    loop {
        let store = app.store.clone();
        let idc = id.to_string();
        let after = cur.last;
        // The status is read first: once it is final, every event is already stored.
        let (status, events) = blocking(move || {
            let store = store.lock();
            let status = store.execution(&idc)?.status;
            Ok((status, store.events_text(&idc, after, PAGE_BYTES)?))
        })
        .await
        .ok()?;
        // A page that may not be the last: the next one at once.
        let more = events.iter().map(|(_, _, text)| text.len()).sum::<usize>() >= PAGE_BYTES;
        for (seq, kind, text) in events {
            let data = stored_json(seq, id, &text);
            if !cur.send(seq, &kind, data).await {
                return None;
            }
        }
        if more {
            continue;
        }
        if status.is_final() {
            return Some(status);
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = shutdown.wait_for(|v| *v) => return None,
            _ = cur.out.closed() => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn stored_events_get_their_envelope() {
        assert_eq!(
            super::stored_json(
                3,
                "ab",
                r#"{"event":"log","line":"x","duration_ms":30.637883}"#
            ),
            r#"{"seq":3,"execution_id":"ab","event":"log","line":"x","duration_ms":30.637883}"#
        );
        assert_eq!(
            super::stored_json(1, "ab", "{}"),
            r#"{"seq":1,"execution_id":"ab"}"#
        );
    }
}

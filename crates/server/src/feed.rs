//! `GET /api/events`: one server-wide stream of execution summaries, so a history view refreshes
//! itself: `execution_start` when an execution appears, `execution_end` when it has ended,
//! `execution_deleted` when this server deleted one.
//!
//! It covers every execution of the store, also those other processes start (`flowrun run`):
//! one task polls the store every [`POLL`] for executions it has not seen and for the end of
//! those it saw running, and broadcasts what changed to every client.

use crate::AppState;
use crate::sse::{HEARTBEAT, Outbox};
use axum::extract::State;
use axum::http::HeaderValue;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use flowrun_app::SharedStore;
use flowrun_events::{ExecStatus, now_ms};
use flowrun_store::HistoryFilter;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, watch};

/// How often the store is looked at.
pub const POLL: Duration = Duration::from_millis(250);

/// How far back a poll looks for executions it has not seen: a runner writes its row with the
/// time it started, which may be a little before the poll that comes after.
const WINDOW_MS: i64 = 60_000;

/// The longest text (a name, an error's message or traceback) a message carries in full; a
/// longer one is cut, ending in `…`.
pub const MAX_TEXT_CHARS: usize = 1000;

/// One message of the stream: its SSE event name and data.
#[derive(Debug, Clone)]
pub struct Message {
    pub kind: &'static str,
    pub data: String,
}

pub struct Feed {
    tx: broadcast::Sender<Arc<Message>>,
}

impl Feed {
    pub fn new() -> Arc<Feed> {
        Arc::new(Feed {
            tx: broadcast::channel(1024).0,
        })
    }

    fn send(&self, kind: &'static str, mut data: Value) {
        // Each message is small, whatever the execution holds (a name of megabytes, an error's
        // traceback): the channel keeps the last 1,024 for its slowest client.
        cut_texts(&mut data, MAX_TEXT_CHARS);
        // No client is fine.
        let _ = self.tx.send(Arc::new(Message {
            kind,
            data: data.to_string(),
        }));
    }

    /// This server deleted an execution.
    pub fn deleted(&self, id: &str) {
        self.send(
            "execution_deleted",
            json!({"event": "execution_deleted", "id": id}),
        );
    }

    fn summary(&self, kind: &'static str, e: &flowrun_store::Execution) {
        let mut v = flowrun_app::views::summary_json(e);
        v["event"] = json!(kind);
        self.send(kind, v);
    }
}

/// What the poller knows: each execution it has seen lately, with its status.
struct Seen {
    status: ExecStatus,
    started_at: i64,
}

/// Polls the store until the server shuts down.
pub async fn poll(feed: Arc<Feed>, store: SharedStore, mut shutdown: watch::Receiver<bool>) {
    let mut seen: Option<HashMap<String, Seen>> = None;
    loop {
        let st = store.clone();
        let feed2 = feed.clone();
        let mut known = seen.take();
        let res = tokio::task::spawn_blocking(move || {
            // The first look only learns what is there.
            let feed = if known.is_none() { None } else { Some(&*feed2) };
            let map = known.get_or_insert_with(HashMap::new);
            if let Err(e) = step(&st, map, feed) {
                tracing::warn!("server-wide events: {e}");
            }
            known
        })
        .await;
        seen = res.ok().flatten();
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = shutdown.wait_for(|v| *v) => return,
        }
    }
}

/// One look at the store: what appeared and what ended since the last one. `feed` is `None`
/// on the first look, which only learns what is there.
fn step(
    store: &SharedStore,
    seen: &mut HashMap<String, Seen>,
    feed: Option<&Feed>,
) -> Result<(), flowrun_store::StoreError> {
    let now = now_ms();
    let store = store.lock();
    // Ids and statuses first: a whole row is read only for an execution that is new or whose
    // status changed (a busy server has hundreds in the window, most of them unchanged, and
    // the store is locked meanwhile).
    let listed = store.statuses(&HistoryFilter {
        since: Some(now - WINDOW_MS),
        limit: 2000,
        ..HistoryFilter::default()
    })?;
    let in_window: std::collections::HashSet<&str> =
        listed.iter().map(|(id, ..)| id.as_str()).collect();
    // Those seen running that are no longer in the window (long runs), and what changed in it.
    let mut changed: Vec<String> = seen
        .iter()
        .filter(|(id, s)| !s.status.is_final() && !in_window.contains(id.as_str()))
        .map(|(id, _)| id.clone())
        .collect();
    changed.extend(
        listed
            .iter()
            .filter(|(id, status, _)| seen.get(id).is_none_or(|s| s.status != *status))
            .map(|(id, ..)| id.clone()),
    );
    let mut rows = Vec::new();
    for id in changed {
        match store.execution(&id) {
            Ok(e) => rows.push(e),
            Err(flowrun_store::StoreError::NotFound(_)) => {
                seen.remove(&id);
            }
            Err(e) => return Err(e),
        }
    }
    if feed.is_none() {
        for e in store.unfinished()? {
            rows.push(e);
        }
    }
    drop(store);
    rows.sort_by_key(|e| (e.started_at, e.id.clone()));
    for e in rows {
        let before = seen.get(&e.id).map(|s| s.status);
        if let Some(feed) = feed {
            if before.is_none() {
                feed.summary("execution_start", &e);
            }
            if e.status.is_final() && before.is_none_or(|s| !s.is_final()) {
                feed.summary("execution_end", &e);
            }
        }
        seen.insert(
            e.id.clone(),
            Seen {
                status: e.status,
                started_at: e.started_at,
            },
        );
    }
    seen.retain(|_, s| !s.status.is_final() || s.started_at >= now - 2 * WINDOW_MS);
    Ok(())
}

/// `GET /api/events`.
pub async fn events(State(app): State<AppState>, _: crate::api::NoQuery) -> Response {
    let mut rx = app.feed.tx.subscribe();
    let mut shutdown = app.shutdown.clone();
    // What a client has not read yet is bounded in bytes (`Outbox`): one that stops reading
    // then lags here, and gets `lagged` when it reads again.
    let (out, stream) = Outbox::new();
    tokio::spawn(async move {
        loop {
            let (ev, bytes) = tokio::select! {
                m = rx.recv() => match m {
                    Ok(m) => (SseEvent::default().event(m.kind).data(&m.data), m.data.len()),
                    // Too slow: some messages are gone; the client reloads its list.
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        let data = json!({"event": "lagged", "missed": n}).to_string();
                        (SseEvent::default().event("lagged").data(&data), data.len())
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                // (The guard `wait_for` gives is not `Send`: dropped at once.)
                _ = async { let _ = shutdown.wait_for(|v| *v).await; } => return,
                _ = out.closed() => return,
            };
            if !out.push(ev, bytes).await {
                return;
            }
        }
    });
    let mut resp = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(HEARTBEAT))
        .into_response();
    resp.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}

/// Cuts every text of `v` longer than `max` characters to its first `max`, then `…`.
fn cut_texts(v: &mut Value, max: usize) {
    match v {
        Value::String(s) => {
            if let Some((at, _)) = s.char_indices().nth(max) {
                s.truncate(at);
                s.push('…');
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|x| cut_texts(x, max)),
        Value::Object(m) => m.values_mut().for_each(|x| cut_texts(x, max)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_texts_are_cut_on_a_character() {
        let mut v = json!({"name": "é".repeat(5), "error": {"message": "abc", "n": 7}});
        cut_texts(&mut v, 3);
        assert_eq!(
            v,
            json!({"name": "ééé…", "error": {"message": "abc", "n": 7}})
        );
    }
}

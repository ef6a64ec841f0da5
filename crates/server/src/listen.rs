//! Accepting connections so that clients who never finish a request cannot shut out the user.
//!
//! `axum::serve` waits forever for a request head and accepts until the process runs out of file
//! descriptors; a few hundred connections that trickle their heads a byte at a time (slowloris)
//! then leave the server unable to accept its own user's requests. Here instead:
//!
//! - A request head must arrive within [`HEADER_READ_TIMEOUT`] of the connection being ready for
//!   it (its start, or the end of the previous response on a kept-alive connection); the timer is
//!   not reset by bytes that trickle in. Heads are capped at [`MAX_HEAD_BYTES`] (`431` beyond).
//! - At most [`connection_cap`] connections are open at once, below the file-descriptor limit.
//!   When a new connection arrives at the cap, the oldest connection that has not yet sent a
//!   request with the token is closed to make room (the attacker's, not the user's: the user's
//!   requests carry the token, and an attacker does not have it). Only when every open connection
//!   has shown the token does the server stop accepting until one closes.
//! - On shutdown it stops accepting, lets requests in progress finish and closes idle
//!   connections; the caller bounds how long that may take.

use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tower_service::Service;

/// How long a connection may take to send a complete request head. Real clients send it in one
/// write, within milliseconds; 10 s leaves room for a stalled machine and still frees a slot held
/// by a slow sender quickly. Kept-alive connections that send nothing are closed after the same
/// time.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The most connections at once: plenty for one user's browser tabs and editors (a browser opens
/// at most 6 per host), and a bound on memory (each connection's buffer holds at most
/// [`MAX_HEAD_BYTES`] of head).
pub const MAX_CONNECTIONS: usize = 512;

/// The largest request head (request line and headers) read.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// File descriptors kept free besides connections: the store, the runtime, standard streams…
const FD_RESERVE: u64 = 32;
/// …and per running execution: its stdin, stdout and stderr pipes, the lifeline, with room.
const FD_PER_EXECUTION: u64 = 8;

/// The connection cap for this process: [`MAX_CONNECTIONS`], or fewer when the file-descriptor
/// limit (`ulimit -n`) leaves less room after what `max_concurrent` executions need.
pub fn connection_cap(max_concurrent: usize) -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        limit.rlim_cur
    } else {
        1024
    };
    let reserve = FD_RESERVE + FD_PER_EXECUTION * max_concurrent as u64;
    let room = soft.saturating_sub(reserve).min(MAX_CONNECTIONS as u64) as usize;
    room.max(16)
}

/// Put in every request's extensions: lets the security check mark the connection as one that
/// showed the token, which is then never closed to make room.
#[derive(Clone)]
pub struct ConnMark(Arc<Slot>);

impl ConnMark {
    pub fn authenticated(&self) {
        self.0.authenticated.store(true, Ordering::Relaxed);
    }
}

#[derive(Default)]
struct Slot {
    authenticated: AtomicBool,
    /// Asked to close to make room.
    shed: AtomicBool,
    close_now: Notify,
}

/// The open connections, oldest first.
#[derive(Default)]
struct Registry {
    open: Mutex<BTreeMap<u64, Arc<Slot>>>,
    /// One waiter (the accept loop): a connection closed.
    closed: Notify,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<Slot>>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn len(&self) -> usize {
        self.lock().len()
    }

    /// Asks the oldest connection that has not shown the token to close. False if there is none.
    fn shed_oldest(&self) -> bool {
        let open = self.lock();
        let victim = open
            .values()
            .find(|s| !s.authenticated.load(Ordering::Relaxed) && !s.shed.load(Ordering::Relaxed));
        match victim {
            Some(slot) => {
                slot.shed.store(true, Ordering::Relaxed);
                slot.close_now.notify_one();
                true
            }
            None => false,
        }
    }
}

/// Takes a connection out of the registry when its task ends, however it ends.
struct Leave(Arc<Registry>, u64);

impl Drop for Leave {
    fn drop(&mut self) {
        self.0.lock().remove(&self.1);
        self.0.closed.notify_one();
    }
}

/// Is this accept error about a lack of file descriptors or memory (that closing a connection can
/// help), rather than about the one connection that failed?
fn out_of_resources(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Serves `router` on `listener` until `stop` becomes true, then stops accepting and returns
/// once every connection has closed (idle ones at once, busy ones when their response is done).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    cap: usize,
    mut stop: watch::Receiver<bool>,
) {
    let registry = Arc::new(Registry::default());
    let (closing_tx, closing_rx) = watch::channel(false);
    let mut next_id: u64 = 0;
    'accept: loop {
        // Room for one more: close a connection that never showed the token, or wait.
        while registry.len() >= cap {
            registry.shed_oldest();
            tokio::select! {
                _ = registry.closed.notified() => {}
                _ = stop.wait_for(|v| *v) => break 'accept,
            }
        }
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.wait_for(|v| *v) => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) if out_of_resources(&e) => {
                tracing::warn!("accept: {e}; closing a connection that never showed the token");
                registry.shed_oldest();
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                    _ = stop.wait_for(|v| *v) => break,
                }
                continue;
            }
            Err(e) => {
                tracing::debug!("accept: {e}");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let slot = Arc::new(Slot::default());
        let id = next_id;
        next_id += 1;
        registry.lock().insert(id, slot.clone());
        let leave = Leave(registry.clone(), id);
        tokio::spawn(connection(
            stream,
            router.clone(),
            slot,
            closing_rx.clone(),
            leave,
        ));
    }
    drop(listener);
    let _ = closing_tx.send(true);
    while registry.len() > 0 {
        // Every connection task notifies as it ends; the timeout only guards a lost wake-up.
        let _ = tokio::time::timeout(Duration::from_millis(100), registry.closed.notified()).await;
    }
}

async fn connection(
    stream: tokio::net::TcpStream,
    router: Router,
    slot: Arc<Slot>,
    mut closing: watch::Receiver<bool>,
    _leave: Leave,
) {
    let mark = ConnMark(slot.clone());
    let service = hyper::service::service_fn(move |mut req: axum::http::Request<Incoming>| {
        req.extensions_mut().insert(mark.clone());
        router.clone().call(req.map(axum::body::Body::new))
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let mut graceful = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!("connection: {e}");
                }
                return;
            }
            // Dropping the connection closes its socket.
            _ = slot.close_now.notified() => return,
            _ = closing.wait_for(|v| *v), if !graceful => {
                graceful = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

//! Reading the child's stdout and stderr: each stream is framed by its own task into a bounded
//! channel, so memory stays bounded (backpressure stops the child, not us) and a child that
//! prints while we still write its stdin cannot deadlock us.
//!
//! The channel bounds the number of batches; a [`Budget`] bounds their bytes: a batch holds
//! permits for what its frames weigh until the run loop has handled it, so a child printing
//! megabyte-sized protocol lines as fast as it can never has more than [`BUDGET_BYTES`] of them
//! queued, however large each one is.

use crate::protocol::{Frame, Framer};
use flowrun_events::Stream;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

/// Bytes of framed output queued between the readers and the run loop, at most (plus one
/// batch: a single frame heavier than this takes the whole budget and waits for it).
pub(crate) const BUDGET_BYTES: usize = 8 << 20;

/// Permits are kibibytes, so a budget fits the semaphore's `u32`.
const PERMIT_BYTES: usize = 1024;

/// The byte budget shared by an execution's two readers.
pub(crate) type Budget = Arc<Semaphore>;

pub(crate) fn budget() -> Budget {
    Arc::new(Semaphore::new(BUDGET_BYTES / PERMIT_BYTES))
}

/// Most frames in one channel message (about: one more piece may add up to [`FRAME_PIECE`]). A
/// 64 KiB read of empty lines frames into 65536 lines; sent in batches, the bounded channel holds
/// a bounded number of frames.
const MAX_FRAMES_PER_MSG: usize = 1024;

/// Reads are framed in pieces this size, so a batch never grows far past the limit above.
const FRAME_PIECE: usize = 1024;

pub(crate) enum Msg {
    /// Frames of one stream, and the budget they hold until they are handled.
    Frames(Stream, Vec<Frame>, Option<OwnedSemaphorePermit>),
    /// The stream has ended (its pipe closed).
    Closed(Stream),
}

/// Sends a batch once the budget has room for it. False when the run loop is gone.
async fn send(tx: &mpsc::Sender<Msg>, budget: &Budget, stream: Stream, frames: Vec<Frame>) -> bool {
    let bytes: usize = frames.iter().map(Frame::weight).sum();
    let permits = bytes
        .div_ceil(PERMIT_BYTES)
        .min(BUDGET_BYTES / PERMIT_BYTES) as u32;
    let permit = if permits == 0 {
        None
    } else {
        match budget.clone().acquire_many_owned(permits).await {
            Ok(p) => Some(p),
            Err(_) => return false,
        }
    };
    tx.send(Msg::Frames(stream, frames, permit)).await.is_ok()
}

pub(crate) async fn read_stream<R: AsyncRead + Unpin>(
    mut r: R,
    mut framer: Framer,
    stream: Stream,
    tx: mpsc::Sender<Msg>,
    budget: Budget,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut frames = Vec::new();
        for piece in buf[..n].chunks(FRAME_PIECE) {
            framer.push(piece, &mut frames);
            if frames.len() >= MAX_FRAMES_PER_MSG {
                let batch = std::mem::take(&mut frames);
                if !send(&tx, &budget, stream, batch).await {
                    return;
                }
            }
        }
        if !frames.is_empty() && !send(&tx, &budget, stream, frames).await {
            return;
        }
    }
    let mut frames = Vec::new();
    framer.finish(&mut frames);
    if !frames.is_empty() {
        send(&tx, &budget, stream, frames).await;
    }
    let _ = tx.send(Msg::Closed(stream)).await;
}

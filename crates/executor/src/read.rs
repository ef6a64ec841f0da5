//! Reading the child's stdout and stderr: each stream is framed by its own task into a bounded
//! channel, so memory stays bounded (backpressure stops the child, not us) and a child that
//! prints while we still write its stdin cannot deadlock us.

use crate::protocol::{Frame, Framer};
use flowrun_events::Stream;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;

/// Most frames in one channel message (about: one more piece may add up to [`FRAME_PIECE`]). A
/// 64 KiB read of empty lines frames into 65536 lines; sent in batches, the bounded channel holds
/// a bounded number of frames.
const MAX_FRAMES_PER_MSG: usize = 1024;

/// Reads are framed in pieces this size, so a batch never grows far past the limit above.
const FRAME_PIECE: usize = 1024;

pub(crate) enum Msg {
    Frames(Stream, Vec<Frame>),
    Closed,
}

pub(crate) async fn read_stream<R: AsyncRead + Unpin>(
    mut r: R,
    mut framer: Framer,
    stream: Stream,
    tx: mpsc::Sender<Msg>,
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
                if tx.send(Msg::Frames(stream, batch)).await.is_err() {
                    return;
                }
            }
        }
        if !frames.is_empty() && tx.send(Msg::Frames(stream, frames)).await.is_err() {
            return;
        }
    }
    let mut frames = Vec::new();
    framer.finish(&mut frames);
    if !frames.is_empty() {
        let _ = tx.send(Msg::Frames(stream, frames)).await;
    }
    let _ = tx.send(Msg::Closed).await;
}

//! Putting the child's stdout and stderr back in the order they were written.
//!
//! The two streams reach the runner through separate pipes, read by separate tasks, so what
//! arrives first is not what was written first: a node's line on stderr could be recorded after
//! the next node's end (its attribution was always right: the runtime marks stderr at each
//! boundary, `Frame::At`). The marks also give the order back. The runtime writes each
//! boundary as a pair, under one lock: its mark on stderr, then its event on stdout
//! (`node_start` and `node_end`, and only those). So the k-th mark and the k-th such event are
//! the same moment of the execution, and
//!
//! - a boundary event on stdout is handled once the stderr before its mark has been: its mark
//!   was written first, so it is in the pipe already and arrives at once;
//! - a stderr frame after the k-th mark is handled once the k-th boundary event has been
//!   (written right after that mark).
//!
//! Everything else keeps its stream's order, and the streams interleave freely between
//! boundaries. A stream that ends releases what the other held back. A mark that never comes
//! (a node pointed fd 2 elsewhere: its marks go there) would hold stdout back for good, as would
//! a budget of queued frames (`read::BUDGET_BYTES`) exhausted by one stream while the other
//! waits: after [`GIVE_UP_AFTER`] with nothing released, twice, and nothing heard from stderr
//! in between, the rest of the execution is handled as it arrives (as before this module).

use crate::protocol::Frame;
use flowrun_events::Stream;
use std::collections::VecDeque;
use std::time::{Duration, Instant};
use tokio::sync::OwnedSemaphorePermit;

/// How long a frame may be held back waiting for the other stream. Its partner was written
/// before it (or microseconds after), so in a healthy execution the wait is a task switch.
pub(crate) const GIVE_UP_AFTER: Duration = Duration::from_millis(200);

/// Frames of one stream as read, with the reader's budget they hold until handled.
struct Batch {
    frames: VecDeque<Frame>,
    _permit: Option<OwnedSemaphorePermit>,
}

#[derive(Default)]
struct Queue {
    batches: VecDeque<Batch>,
    closed: bool,
    /// Boundaries handled: marks (stderr) or boundary events (stdout).
    boundaries: u64,
}

impl Queue {
    fn front(&self) -> Option<&Frame> {
        self.batches.front().and_then(|b| b.frames.front())
    }

    /// Ended, and all it sent handled: nothing of it is still to come.
    fn done(&self) -> bool {
        self.closed && self.batches.is_empty()
    }

    fn pop(&mut self) -> Option<Frame> {
        let batch = self.batches.front_mut()?;
        let frame = batch.frames.pop_front();
        if batch.frames.is_empty() {
            self.batches.pop_front(); // its budget goes back to the readers
        }
        frame
    }
}

/// The frames of both streams, released in the order they were written.
#[derive(Default)]
pub(crate) struct Order {
    out: Queue,
    err: Queue,
    /// Since when something has been held back (None: nothing is).
    held_since: Option<Instant>,
    /// Given up: frames are released as they come.
    unordered: bool,
    /// Batches of stderr taken so far, and how many there were when the wait first ran out.
    err_batches: u64,
    err_batches_then: Option<u64>,
}

/// Whether a stdout frame is a boundary event: one the runtime wrote right after a mark on
/// stderr. The runtime writes its events' fields in a fixed order, `event` first.
fn is_boundary(frame: &Frame) -> bool {
    match frame {
        Frame::Event(json) => {
            json.starts_with(br#"{"event":"node_start""#)
                || json.starts_with(br#"{"event":"node_end""#)
        }
        _ => false,
    }
}

impl Order {
    /// Takes a batch of `stream`'s frames.
    pub(crate) fn push(
        &mut self,
        stream: Stream,
        frames: Vec<Frame>,
        permit: Option<OwnedSemaphorePermit>,
    ) {
        if frames.is_empty() {
            return;
        }
        if stream == Stream::Stderr {
            self.err_batches += 1;
        }
        self.queue(stream).batches.push_back(Batch {
            frames: frames.into(),
            _permit: permit,
        });
    }

    /// `stream` has ended: once what it sent is handled, nothing of the other waits for it.
    pub(crate) fn close(&mut self, stream: Stream) {
        self.queue(stream).closed = true;
    }

    /// Hands `handle` every frame that may be handled now, in order.
    pub(crate) fn release(&mut self, mut handle: impl FnMut(Stream, Frame)) {
        let mut any = false;
        loop {
            let mut moved = false;
            // stderr up to its next mark, and past it once stdout's event for it is handled.
            while self.err.front().is_some()
                && (self.unordered || self.out.done() || self.err.boundaries <= self.out.boundaries)
            {
                let frame = self.err.pop().expect("a front frame");
                if matches!(frame, Frame::At(_)) {
                    self.err.boundaries += 1;
                }
                handle(Stream::Stderr, frame);
                moved = true;
            }
            // stdout, a boundary event once stderr's mark for it is handled.
            while let Some(front) = self.out.front() {
                let boundary = is_boundary(front);
                if boundary
                    && !(self.unordered
                        || self.err.done()
                        || self.err.boundaries > self.out.boundaries)
                {
                    break;
                }
                let frame = self.out.pop().expect("a front frame");
                if boundary {
                    self.out.boundaries += 1;
                }
                handle(Stream::Stdout, frame);
                moved = true;
            }
            if !moved {
                break;
            }
            any = true;
        }
        // The wait is counted from the last frame released: a stream that stays one boundary
        // ahead of the other for a whole long execution is not waiting for nothing.
        let held = self.out.front().is_some() || self.err.front().is_some();
        self.held_since = match (held, self.held_since) {
            (false, _) => None,
            (true, Some(since)) if !any => Some(since),
            (true, _) => Some(Instant::now()),
        };
    }

    /// When to give up waiting (see [`GIVE_UP_AFTER`]), if something is held back.
    pub(crate) fn give_up_at(&self) -> Option<Instant> {
        self.held_since.map(|since| since + GIVE_UP_AFTER)
    }

    /// The wait ran out ([`give_up_at`](Self::give_up_at)). The first time, the readers may
    /// only not have had their turn (this process was busy: the timer and the mark were both
    /// ready when it looked again), so it waits once more; it gives up if stderr said nothing
    /// meanwhile.
    pub(crate) fn waited(&mut self, handle: impl FnMut(Stream, Frame)) {
        if self.err_batches_then != Some(self.err_batches) {
            self.err_batches_then = Some(self.err_batches);
            self.held_since = Some(Instant::now());
            return;
        }
        self.give_up(handle);
    }

    /// Stops waiting, for the rest of the execution: what is held back and all that follows is
    /// released as it comes.
    pub(crate) fn give_up(&mut self, handle: impl FnMut(Stream, Frame)) {
        if !self.unordered {
            tracing::debug!("stdout and stderr are handled as they arrive from now on");
        }
        self.finish(handle);
    }

    /// Both streams are done (or no longer read): releases what is left.
    pub(crate) fn finish(&mut self, handle: impl FnMut(Stream, Frame)) {
        self.unordered = true;
        self.release(handle);
    }

    fn queue(&mut self, stream: Stream) -> &mut Queue {
        match stream {
            Stream::Stderr => &mut self.err,
            _ => &mut self.out,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(s: &str) -> Frame {
        Frame::Line {
            text: s.into(),
            cut: 0,
        }
    }
    fn start(node: &str) -> Frame {
        Frame::Event(format!(r#"{{"event":"node_start","node":"{node}"}}"#).into_bytes())
    }
    fn end(node: &str) -> Frame {
        Frame::Event(format!(r#"{{"event":"node_end","node":"{node}"}}"#).into_bytes())
    }
    fn at(node: Option<&str>) -> Frame {
        Frame::At(node.map(String::from))
    }

    /// stderr of two nodes, `a` and `b`, each writing a line; `b`'s end mark not yet written.
    fn stderr_of_a_and_b() -> Vec<Frame> {
        vec![
            at(Some("a")),
            line("a-err"),
            at(None),
            at(Some("b")),
            line("b-err"),
        ]
    }

    /// What `release` hands out, as short labels.
    fn drain(order: &mut Order) -> Vec<String> {
        let mut got = Vec::new();
        order.release(|stream, f| got.push(label(stream, f)));
        got
    }

    fn label(stream: Stream, f: Frame) -> String {
        let s = if stream == Stream::Stdout {
            "out"
        } else {
            "err"
        };
        match f {
            Frame::Line { text, .. } => format!("{s}:{text}"),
            Frame::Event(j) => {
                let v: serde_json::Value = serde_json::from_slice(&j).unwrap();
                format!(
                    "{s}:{}:{}",
                    v["event"].as_str().unwrap(),
                    v["node"].as_str().unwrap()
                )
            }
            Frame::At(n) => format!("{s}:at:{}", n.unwrap_or_else(|| "-".into())),
            other => format!("{s}:{other:?}"),
        }
    }

    /// Two nodes, each writing a line to stderr; the whole stdout arrives before any stderr.
    #[test]
    fn stderr_read_late_goes_back_between_its_node_boundaries() {
        let mut o = Order::default();
        o.push(
            Stream::Stdout,
            vec![start("a"), end("a"), start("b"), line("b-out"), end("b")],
            None,
        );
        assert!(
            drain(&mut o).is_empty(),
            "the first boundary waits for its mark"
        );
        assert!(o.give_up_at().is_some());
        let mut both = stderr_of_a_and_b();
        both.push(at(None));
        o.push(Stream::Stderr, both, None);
        assert_eq!(
            drain(&mut o),
            [
                "err:at:a",
                "out:node_start:a",
                "err:a-err",
                "err:at:-",
                "out:node_end:a",
                "err:at:b",
                "out:node_start:b",
                "out:b-out",
                "err:b-err",
                "err:at:-",
                "out:node_end:b",
            ]
        );
        assert_eq!(o.give_up_at(), None);
    }

    /// The whole stderr arrives first: its lines wait for their node's start, and the line
    /// written after a node ended waits for that end.
    #[test]
    fn stderr_read_early_waits_for_the_boundary_before_it() {
        let mut o = Order::default();
        o.push(
            Stream::Stderr,
            vec![
                line("before any node"),
                at(Some("a")),
                line("a-err"),
                at(None),
                line("between"),
            ],
            None,
        );
        assert_eq!(drain(&mut o), ["err:before any node", "err:at:a"]);
        o.push(Stream::Stdout, vec![start("a")], None);
        assert_eq!(drain(&mut o), ["out:node_start:a", "err:a-err", "err:at:-"]);
        o.push(Stream::Stdout, vec![line("a-out"), end("a")], None);
        assert_eq!(
            drain(&mut o),
            ["out:a-out", "out:node_end:a", "err:between"]
        );
    }

    /// A stream that ended with frames still queued (read to its end before the other) keeps
    /// the order of what it sent; only then does it hold nothing back.
    #[test]
    fn a_stream_read_to_its_end_early_still_orders_what_it_sent() {
        let mut o = Order::default();
        o.push(Stream::Stderr, stderr_of_a_and_b(), None);
        o.close(Stream::Stderr);
        assert_eq!(drain(&mut o), ["err:at:a"]);
        o.push(Stream::Stdout, vec![start("a"), end("a")], None);
        assert_eq!(
            drain(&mut o),
            [
                "out:node_start:a",
                "err:a-err",
                "err:at:-",
                "out:node_end:a",
                "err:at:b"
            ]
        );
        o.push(Stream::Stdout, vec![start("b"), end("b"), start("c")], None);
        assert_eq!(
            drain(&mut o),
            [
                "out:node_start:b",
                "err:b-err",
                "out:node_end:b",
                "out:node_start:c"
            ]
        );
    }

    /// A stream that ends releases what the other held back.
    #[test]
    fn an_ended_stream_holds_nothing_back() {
        let mut o = Order::default();
        o.push(Stream::Stdout, vec![start("a"), line("x")], None);
        assert!(drain(&mut o).is_empty());
        o.close(Stream::Stderr);
        assert_eq!(drain(&mut o), ["out:node_start:a", "out:x"]);

        let mut o = Order::default();
        o.push(Stream::Stderr, vec![at(Some("a")), line("late")], None);
        assert_eq!(drain(&mut o), ["err:at:a"]);
        o.close(Stream::Stdout);
        assert_eq!(drain(&mut o), ["err:late"]);
    }

    /// Marks that never come (fd 2 pointed elsewhere by a node): once given up, everything is
    /// released as it comes, with no wait per boundary.
    #[test]
    fn giving_up_releases_everything_from_then_on() {
        let mut o = Order::default();
        o.push(Stream::Stdout, vec![start("a"), end("a")], None);
        assert!(drain(&mut o).is_empty());
        let mut got = Vec::new();
        o.give_up(|s, f| got.push(label(s, f)));
        assert_eq!(got, ["out:node_start:a", "out:node_end:a"]);
        o.push(Stream::Stdout, vec![start("b")], None);
        o.push(Stream::Stderr, vec![line("late")], None);
        assert_eq!(drain(&mut o), ["err:late", "out:node_start:b"]);
        assert_eq!(o.give_up_at(), None);
    }

    /// The first time the wait runs out, it waits again (the readers may not have had their
    /// turn); it gives up only when stderr said nothing in between.
    #[test]
    fn a_wait_that_runs_out_gives_up_only_when_stderr_stayed_silent() {
        let mut o = Order::default();
        o.push(Stream::Stdout, vec![start("a")], None);
        assert!(drain(&mut o).is_empty());
        let mut got = Vec::new();
        o.waited(|s, f| got.push(label(s, f)));
        assert!(got.is_empty(), "{got:?}");
        o.push(Stream::Stderr, vec![line("busy, not marked")], None);
        assert_eq!(drain(&mut o), ["err:busy, not marked"]);
        o.waited(|s, f| got.push(label(s, f)));
        assert!(got.is_empty(), "stderr spoke meanwhile: {got:?}");
        o.waited(|s, f| got.push(label(s, f)));
        assert_eq!(got, ["out:node_start:a"]);
    }

    /// Events that are not boundaries (a log event, the result) never wait.
    #[test]
    fn other_events_and_the_result_do_not_wait() {
        let mut o = Order::default();
        let log = Frame::Event(br#"{"event":"log","node":"a","line":"x"}"#.to_vec());
        o.push(
            Stream::Stdout,
            vec![log, Frame::ResultStart, Frame::ResultEnd],
            None,
        );
        assert_eq!(drain(&mut o).len(), 3);
    }
}

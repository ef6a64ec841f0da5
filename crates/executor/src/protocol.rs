//! Framing the child's stdout: protocol lines versus everything else, in bounded memory.
//!
//! The child writes `@@flowrun:<nonce>:event <json>` lines, and the final result between
//! `@@flowrun:<nonce>:result-start` and `@@flowrun:<nonce>:result-end` lines. Every other line
//! is output of the workflow's nodes. Only lines carrying this execution's nonce count, so a node
//! that prints something that looks like a marker cannot forge events.
//!
//! The framer is fed chunks as they arrive and never holds more than one line, itself capped: an
//! ordinary line keeps its first `max_line` bytes and counts the rest; a protocol line may be up
//! to `max_frame` bytes (payloads are already capped by the runtime) and is reported as oversized
//! past that. A trailing line without a newline is delivered by [`Framer::finish`].
//!
//! A marker counts anywhere in a line, not only at its start: output written straight to fd 1
//! (by a subprocess, say) may leave a line unfinished when the runtime prints its next event, so
//! the event follows that output on the same line. Ordinary lines are scanned for the marker as
//! bytes arrive, also past the cap, so a marker after megabytes of unfinished output is found.

/// One thing read from the child's stdout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// An ordinary output line, UTF-8 decoded lossily, without its line ending. `cut` bytes past
    /// the per-line cap were dropped.
    Line {
        text: String,
        cut: u64,
    },
    /// The JSON text of an event.
    Event(Vec<u8>),
    ResultStart,
    /// A line between result-start and result-end: the result JSON.
    ResultLine(Vec<u8>),
    ResultEnd,
    /// `at <node>` / `at -` on stderr: the stderr lines that follow belong to that node (or to
    /// none). stdout and stderr are separate pipes, so only a mark in stderr itself can say.
    At(Option<String>),
    /// A protocol line longer than `max_frame`: dropped, its size counted.
    Oversized {
        bytes: u64,
    },
}

impl Frame {
    /// Whether the frame is the runtime's own (an event or its result, marked with the
    /// execution's nonce), not a line any process of the execution could print.
    pub fn is_runtimes(&self) -> bool {
        !matches!(self, Frame::Line { .. })
    }

    /// Roughly the bytes the frame holds (what it weighs against the reader's budget).
    pub fn weight(&self) -> usize {
        match self {
            Frame::Line { text, .. } => text.len() + 32,
            Frame::Event(b) | Frame::ResultLine(b) => b.len() + 32,
            Frame::At(n) => n.as_ref().map_or(0, String::len) + 32,
            Frame::ResultStart | Frame::ResultEnd | Frame::Oversized { .. } => 32,
        }
    }
}

enum Kind {
    /// Not enough bytes yet to tell.
    Unknown,
    Plain,
    Marker,
    Result,
}

pub struct Framer {
    prefix: Vec<u8>,
    finder: memchr::memmem::Finder<'static>,
    /// The last `prefix.len() - 1` bytes of the current ordinary line (kept or cut), to find a
    /// marker that starts in one chunk and ends in the next.
    tail: Vec<u8>,
    max_line: usize,
    max_frame: usize,
    buf: Vec<u8>,
    /// Bytes of the current line not kept in `buf`.
    cut: u64,
    kind: Kind,
    in_result: bool,
}

impl Framer {
    pub fn new(nonce: &str, max_line: usize, max_frame: usize) -> Framer {
        let prefix = format!("@@flowrun:{nonce}:").into_bytes();
        Framer {
            finder: memchr::memmem::Finder::new(&prefix).into_owned(),
            tail: Vec::new(),
            prefix,
            max_line,
            max_frame,
            buf: Vec::new(),
            cut: 0,
            kind: Kind::Unknown,
            in_result: false,
        }
    }

    /// Feeds a chunk, appending complete frames to `out`.
    pub fn push(&mut self, mut chunk: &[u8], out: &mut Vec<Frame>) {
        while !chunk.is_empty() {
            match memchr::memchr(b'\n', chunk) {
                Some(i) => {
                    self.take(&chunk[..i], out);
                    self.end_line(out);
                    chunk = &chunk[i + 1..];
                }
                None => {
                    self.take(chunk, out);
                    chunk = &[];
                }
            }
        }
    }

    /// Delivers a last line that had no newline.
    pub fn finish(&mut self, out: &mut Vec<Frame>) {
        if !self.buf.is_empty() || self.cut > 0 {
            self.end_line(out);
        }
    }

    fn limit(&self) -> usize {
        match self.kind {
            Kind::Plain => self.max_line,
            Kind::Unknown => self.max_line.max(self.prefix.len()),
            Kind::Marker | Kind::Result => self.max_frame,
        }
    }

    /// Adds bytes of the current line (no newline among them).
    fn take(&mut self, bytes: &[u8], out: &mut Vec<Frame>) {
        if bytes.is_empty() {
            return;
        }
        if matches!(self.kind, Kind::Unknown) {
            let need = self.prefix.len().saturating_sub(self.buf.len());
            let head = &bytes[..need.min(bytes.len())];
            self.buf.extend_from_slice(head);
            let rest = &bytes[head.len()..];
            if self.buf.len() >= self.prefix.len() || !self.prefix.starts_with(&self.buf) {
                self.classify();
            }
            if !rest.is_empty() {
                self.take(rest, out);
            }
            return;
        }
        if matches!(self.kind, Kind::Plain) && self.marker_in_plain(bytes, out) {
            return;
        }
        let room = self.limit().saturating_sub(self.buf.len());
        let keep = room.min(bytes.len());
        self.buf.extend_from_slice(&bytes[..keep]);
        self.cut += (bytes.len() - keep) as u64;
    }

    /// Looks for a marker starting in the tail of the ordinary line so far or in `bytes`. If there
    /// is one, delivers the ordinary part as a line, continues with the marker and returns true.
    fn marker_in_plain(&mut self, bytes: &[u8], out: &mut Vec<Frame>) -> bool {
        let keep_tail = self.prefix.len() - 1;
        // A marker that began in earlier bytes of this line.
        let mut window = self.tail.clone();
        window.extend_from_slice(&bytes[..keep_tail.min(bytes.len())]);
        let (earlier, at) = match self.finder.find(&window) {
            Some(i) if i < self.tail.len() => (self.tail.len() - i, 0),
            _ => match self.finder.find(bytes) {
                Some(j) => (0, j),
                None => {
                    window.extend_from_slice(&bytes[keep_tail.min(bytes.len())..]);
                    let from = window.len().saturating_sub(keep_tail);
                    self.tail = window.split_off(from);
                    return false;
                }
            },
        };
        // The ordinary part of the line: what came before the marker.
        let start = std::mem::take(&mut self.tail);
        let start = start[start.len() - earlier..].to_vec();
        let from_cut = (earlier as u64).min(self.cut);
        self.cut -= from_cut;
        let from_buf = earlier - from_cut as usize;
        self.buf.truncate(self.buf.len() - from_buf);
        let room = self.limit().saturating_sub(self.buf.len());
        let keep = room.min(at);
        self.buf.extend_from_slice(&bytes[..keep]);
        self.cut += (at - keep) as u64;
        let text = std::mem::take(&mut self.buf);
        let cut = std::mem::take(&mut self.cut);
        if !text.is_empty() || cut > 0 {
            out.push(Frame::Line {
                text: String::from_utf8_lossy(&text).into_owned(),
                cut,
            });
        }
        // The marker line: its first bytes, then the rest as a protocol line.
        self.buf = start;
        self.kind = Kind::Marker;
        self.take(&bytes[at..], out);
        true
    }

    fn classify(&mut self) {
        self.kind = if self.buf.starts_with(&self.prefix) {
            Kind::Marker
        } else if self.in_result {
            Kind::Result
        } else {
            Kind::Plain
        };
        if matches!(self.kind, Kind::Plain) {
            let from = self.buf.len().saturating_sub(self.prefix.len() - 1);
            self.tail = self.buf[from..].to_vec();
        }
        if matches!(self.kind, Kind::Plain) && self.buf.len() > self.max_line {
            self.cut += (self.buf.len() - self.max_line) as u64;
            self.buf.truncate(self.max_line);
        }
    }

    fn end_line(&mut self, out: &mut Vec<Frame>) {
        if matches!(self.kind, Kind::Unknown) {
            self.classify();
        }
        let mut line = std::mem::take(&mut self.buf);
        let cut = std::mem::take(&mut self.cut);
        let kind = std::mem::replace(&mut self.kind, Kind::Unknown);
        if line.last() == Some(&b'\r') && cut == 0 {
            line.pop();
        }
        match kind {
            Kind::Marker => {
                if cut > 0 {
                    out.push(Frame::Oversized {
                        bytes: line.len() as u64 + cut,
                    });
                    return;
                }
                let rest = &line[self.prefix.len()..];
                if let Some(node) = rest.strip_prefix(b"at ") {
                    let node = String::from_utf8_lossy(node).into_owned();
                    out.push(Frame::At((node != "-").then_some(node)));
                } else if let Some(json) = rest.strip_prefix(b"event ") {
                    out.push(Frame::Event(json.to_vec()));
                } else if rest == b"result-start" {
                    self.in_result = true;
                    out.push(Frame::ResultStart);
                } else if rest == b"result-end" {
                    self.in_result = false;
                    out.push(Frame::ResultEnd);
                } else {
                    // Our nonce but an unknown verb: keep it visible as output.
                    out.push(Frame::Line {
                        text: String::from_utf8_lossy(&line).into_owned(),
                        cut,
                    });
                }
            }
            Kind::Result => {
                if cut > 0 {
                    out.push(Frame::Oversized {
                        bytes: line.len() as u64 + cut,
                    });
                } else {
                    out.push(Frame::ResultLine(line));
                }
            }
            Kind::Plain | Kind::Unknown => {
                self.tail.clear();
                // A marker later in the line was split off as the bytes arrived (`take`).
                out.push(Frame::Line {
                    text: String::from_utf8_lossy(&line).into_owned(),
                    cut,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(input: &[&[u8]]) -> Vec<Frame> {
        let mut f = Framer::new("abc", 8, 64);
        let mut out = Vec::new();
        for c in input {
            f.push(c, &mut out);
        }
        f.finish(&mut out);
        out
    }

    fn line(s: &str, cut: u64) -> Frame {
        Frame::Line {
            text: s.into(),
            cut,
        }
    }

    #[test]
    fn splits_events_and_lines_across_chunks() {
        let out = frames(&[b"hel", b"lo\n@@flowrun:a", b"bc:event {\"x\":1}\nbye"]);
        assert_eq!(
            out,
            vec![
                line("hello", 0),
                Frame::Event(b"{\"x\":1}".to_vec()),
                line("bye", 0)
            ]
        );
    }

    #[test]
    fn wrong_nonce_is_plain_output_and_capped() {
        let out = frames(&[b"@@flowrun:xyz:event {}\n"]);
        assert_eq!(out, vec![line("@@flowru", 14)]);
    }

    #[test]
    fn caps_long_lines_and_counts_the_cut() {
        let out = frames(&[b"0123456789", b"abcdef\nok\n"]);
        assert_eq!(out, vec![line("01234567", 8), line("ok", 0)]);
    }

    #[test]
    fn result_block() {
        let out = frames(&[
            b"@@flowrun:abc:result-start\n{\"status\":\"success\"}\n@@flowrun:abc:result-end\n",
        ]);
        assert_eq!(
            out,
            vec![
                Frame::ResultStart,
                Frame::ResultLine(b"{\"status\":\"success\"}".to_vec()),
                Frame::ResultEnd
            ]
        );
    }

    #[test]
    fn marker_after_unfinished_output() {
        let mut f = Framer::new("abc", 64, 64);
        let mut out = Vec::new();
        f.push(b"partial@@flowrun:abc:event {}\n", &mut out);
        assert_eq!(out, vec![line("partial", 0), Frame::Event(b"{}".to_vec())]);
    }

    #[test]
    fn marker_after_output_longer_than_the_line_cap() {
        // 20 bytes of unfinished output (cap 8), then an event on the same line.
        let out = frames(&[b"0123456789", b"0123456789@@flowrun:abc:event {}\nok\n"]);
        assert_eq!(
            out,
            vec![
                line("01234567", 12),
                Frame::Event(b"{}".to_vec()),
                line("ok", 0)
            ]
        );
    }

    #[test]
    fn marker_split_across_chunks_after_the_cap() {
        let mut input: Vec<&[u8]> = vec![b"0123456789abcdef@@flo"];
        input.extend([b"wrun:a".as_slice(), b"bc:", b"event {\"x\":1}\n"]);
        assert_eq!(
            frames(&input),
            vec![line("01234567", 8), Frame::Event(b"{\"x\":1}".to_vec())]
        );
        // Split inside the part of the line that was kept.
        assert_eq!(
            frames(&[b"ab@@f", b"lowrun:abc:event {}\n"]),
            vec![line("ab", 0), Frame::Event(b"{}".to_vec())]
        );
    }

    #[test]
    fn marker_starting_inside_a_false_start() {
        assert_eq!(
            frames(&[b"@@@flowrun:abc:result-start\n"]),
            vec![line("@", 0), Frame::ResultStart]
        );
        assert_eq!(
            frames(&[b"@@@", b"flowrun:abc:event {}\n"]),
            vec![line("@", 0), Frame::Event(b"{}".to_vec())]
        );
    }

    #[test]
    fn wrong_nonce_then_right_one_on_the_same_line() {
        let mut f = Framer::new("abc", 8, 64);
        let mut out = Vec::new();
        f.push(b"@@flowrun:xyz:event {}@@flowrun:abc:event {}\n", &mut out);
        assert_eq!(
            out,
            vec![line("@@flowru", 14), Frame::Event(b"{}".to_vec())]
        );
    }

    proptest::proptest! {
        /// However the bytes are split into chunks, the frames are the same.
        #[test]
        fn chunking_does_not_change_frames(
            pieces in proptest::collection::vec(
                proptest::sample::select(vec![
                    "x", "yyyyyyyyyyy", "\n", "\r\n", "@", "@@flo", "@@flowrun:abc:",
                    "@@flowrun:xyz:", "event {}", "result-start", "result-end", "\u{e9}",
                ]),
                0..40,
            ),
            cuts in proptest::collection::vec(0usize..400, 0..8),
        ) {
            let input: Vec<u8> = pieces.concat().into_bytes();
            let whole = frames(&[&input]);
            let mut at: Vec<usize> = cuts.into_iter().map(|c| c % (input.len() + 1)).collect();
            at.sort();
            let mut chunks: Vec<&[u8]> = Vec::new();
            let mut from = 0;
            for c in at {
                chunks.push(&input[from..c]);
                from = c;
            }
            chunks.push(&input[from..]);
            proptest::prop_assert_eq!(frames(&chunks), whole);
        }
    }

    #[test]
    fn oversized_marker_line() {
        let mut big = b"@@flowrun:abc:event ".to_vec();
        big.extend(std::iter::repeat_n(b'x', 100));
        big.push(b'\n');
        assert_eq!(frames(&[&big]), vec![Frame::Oversized { bytes: 120 }]);
    }

    #[test]
    fn short_prefix_of_marker_then_newline() {
        assert_eq!(frames(&[b"@@flo\n"]), vec![line("@@flo", 0)]);
        assert_eq!(frames(&[b"\n\n"]), vec![line("", 0), line("", 0)]);
    }

    #[test]
    fn non_utf8_is_decoded_lossily() {
        assert_eq!(frames(&[b"a\xffb\n"]), vec![line("a\u{fffd}b", 0)]);
    }
}

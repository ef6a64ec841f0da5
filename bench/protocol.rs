//! Throughput of the stdout protocol parser (`flowrun::executor::protocol::Framer`).
//!
//! A 100 MB synthetic stream of mixed output: ordinary log lines of varying length (some with
//! non-ASCII text, some long), `@@flowrun:<nonce>:event` lines with node_start / log / node_end
//! JSON, a few lines carrying another nonce (forgery attempts, which are plain lines), and a
//! result block at the end. It is fed in 64 KiB chunks, as read from the pipe, and the frames
//! are dropped after each chunk, as the executor hands them on. A second case feeds each chunk
//! in 1 KiB pieces, which is what the executor's reader actually does (so a batch of frames stays
//! bounded). Target: ≥ 500 MB/s.
//!
//! Run: `cargo bench --bench protocol` (or `bench/run.sh`).

use divan::counter::BytesCount;
use flowrun_executor::protocol::{Frame, Framer};

const NONCE: &str = "4f9c2a7e1b3d5f60718293a4b5c6d7e8";
const STREAM_BYTES: usize = 100_000_000;
const CHUNK: usize = 64 * 1024;
/// What the runner uses (`runner.rs`: `max_line_bytes`, `RunSpec::MAX_FRAME`).
const MAX_LINE: usize = 64 * 1024;
const MAX_FRAME: usize = 64 << 20;

fn main() {
    check();
    divan::main();
}

/// The stream frames as intended: events, plain lines (forged markers among them) and a result.
fn check() {
    let mut framer = Framer::new(NONCE, MAX_LINE, MAX_FRAME);
    let mut frames = Vec::new();
    framer.push(&stream()[..4 << 20], &mut frames);
    let events = frames
        .iter()
        .filter(|f| matches!(f, Frame::Event(_)))
        .count();
    let forged = frames
        .iter()
        .filter(|f| matches!(f, Frame::Line { text, .. } if text.starts_with("@@flowrun:0000")))
        .count();
    assert!(
        events > 1000 && forged > 100,
        "events {events}, forged {forged}"
    );
    let tail = stream();
    let mut frames = Vec::new();
    framer.push(&tail[tail.len() - 200..], &mut frames);
    assert!(
        frames.contains(&Frame::ResultEnd),
        "the result block is framed"
    );
}

/// A deterministic stream of about `STREAM_BYTES` bytes.
fn stream() -> &'static [u8] {
    static STREAM: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    STREAM.get_or_init(|| {
        let mut out = Vec::with_capacity(STREAM_BYTES + 4096);
        let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let words = [
            "fetching", "page", "rows", "ok", "retrying", "user", "token", "élan", "naïve",
            "—", "processed", "batch", "status=200", "latency_ms=12", "🙂", "done",
        ];
        let nodes = ["trigger", "prepare", "compute", "answer", "fetch_users"];
        let mut seq = 0u64;
        while out.len() < STREAM_BYTES {
            let r = next();
            match r % 10 {
                // Ordinary output: 1 to 30 words.
                0..=5 => {
                    let n = 1 + (next() % 30) as usize;
                    for i in 0..n {
                        if i > 0 {
                            out.push(b' ');
                        }
                        out.extend_from_slice(words[(next() % words.len() as u64) as usize].as_bytes());
                    }
                    out.push(b'\n');
                }
                // A long line (a dumped payload), 2–16 KiB.
                6 if r % 7 == 0 => {
                    let n = 2048 + (next() % 14336) as usize;
                    out.extend(std::iter::repeat_n(b'x', n));
                    out.push(b'\n');
                }
                // Something that looks like a marker but carries another nonce.
                6 => {
                    out.extend_from_slice(
                        b"@@flowrun:00000000000000000000000000000000:event {\"event\":\"forged\"}\n",
                    );
                }
                // Events.
                _ => {
                    seq += 1;
                    let node = nodes[(next() % nodes.len() as u64) as usize];
                    out.extend_from_slice(format!("@@flowrun:{NONCE}:event ").as_bytes());
                    let json = match next() % 3 {
                        0 => format!(
                            "{{\"event\":\"node_start\",\"node\":\"{node}\",\"attempt\":1,\"ts\":{}}}",
                            1_795_624_612_717u64 + seq
                        ),
                        1 => format!(
                            "{{\"event\":\"log\",\"node\":\"{node}\",\"stream\":\"stdout\",\"ts\":{},\"text\":\"row {seq} processed\"}}",
                            1_795_624_612_717u64 + seq
                        ),
                        _ => format!(
                            "{{\"event\":\"node_end\",\"node\":\"{node}\",\"status\":\"success\",\"attempt\":1,\"duration_ms\":0.31,\"ts\":{},\"input\":{{\"name\":\"bench\",\"n\":10}},\"output\":{{\"squares\":[0,1,4,9,16,25,36,49,64,81],\"total\":285}}}}",
                            1_795_624_612_717u64 + seq
                        ),
                    };
                    out.extend_from_slice(json.as_bytes());
                    out.push(b'\n');
                }
            }
        }
        out.extend_from_slice(format!("@@flowrun:{NONCE}:result-start\n").as_bytes());
        out.extend_from_slice(b"{\"status\":\"success\",\"output\":{\"total\":285}}\n");
        out.extend_from_slice(format!("@@flowrun:{NONCE}:result-end\n").as_bytes());
        out
    })
}

/// Frames the whole stream, `piece` bytes at a time within 64 KiB chunks; returns the number of
/// frames so nothing is optimised away.
fn frame_all(data: &[u8], piece: usize) -> usize {
    let mut framer = Framer::new(NONCE, MAX_LINE, MAX_FRAME);
    let mut frames: Vec<Frame> = Vec::new();
    let mut count = 0;
    for chunk in data.chunks(CHUNK) {
        for p in chunk.chunks(piece) {
            framer.push(p, &mut frames);
        }
        count += frames.len();
        frames.clear();
    }
    framer.finish(&mut frames);
    count + frames.len()
}

/// 100 MB fed in 64 KiB chunks.
#[divan::bench(sample_count = 10, sample_size = 1)]
fn framer_100mb_64k_chunks(b: divan::Bencher) {
    let data = stream();
    b.counter(BytesCount::new(data.len()))
        .bench(|| frame_all(divan::black_box(data), CHUNK));
}

/// The same, each 64 KiB chunk pushed in 1 KiB pieces as the executor's reader does.
#[divan::bench(sample_count = 10, sample_size = 1)]
fn framer_100mb_1k_pieces(b: divan::Bencher) {
    let data = stream();
    b.counter(BytesCount::new(data.len()))
        .bench(|| frame_all(divan::black_box(data), 1024));
}

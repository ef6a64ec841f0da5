//! `--events jsonl`: the events as JSON lines on stdout (docs/events.md), for programs.

use flowrun_events::Envelope;
use flowrun_executor::{Sink, StopReason};
use std::io::Write;
use std::time::Duration;

/// `--events jsonl`: each event as one line of JSON on stdout, flushed at once.
pub struct Jsonl<W: Write> {
    out: W,
    /// The first write that failed: the execution goes on (a reader that went away does not
    /// stop it), and the caller says so once it has ended ([`Jsonl::written`]).
    failed: Option<std::io::Error>,
}

impl<W: Write> Jsonl<W> {
    pub fn new(out: W) -> Self {
        Jsonl { out, failed: None }
    }

    /// Whether every event was written, as [`crate::cli::stdout_written`] takes it.
    pub fn written(&mut self) -> std::io::Result<()> {
        self.failed.take().map_or(Ok(()), Err)
    }
}

impl<W: Write + Send> Sink for Jsonl<W> {
    fn event(&mut self, env: &Envelope) {
        let mut line = super::super::text::json_line(env);
        line.push('\n');
        if let Err(e) = self
            .out
            .write_all(line.as_bytes())
            .and_then(|()| self.out.flush())
        {
            self.failed.get_or_insert(e);
        }
    }
    /// On stderr: stdout holds the events only, and a program reading them sees the stop in
    /// the events that follow.
    fn stopping(&mut self, reason: StopReason, grace: Duration) {
        flowrun_app::say!("{}", super::stopping_line(reason, grace));
    }
}

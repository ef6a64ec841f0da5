//! The signals that stop what a command runs: Ctrl-C (SIGINT), SIGTERM (CI cancelling a job,
//! `timeout`, `docker stop`) and SIGHUP (the terminal closed, an ssh session dropped), each
//! taken as the stop it means.

use flowrun_executor::StopReason;
use tokio::signal::unix::{Signal, SignalKind, signal};

/// SIGINT, SIGTERM and SIGHUP, listened for from when this is made: their default action
/// (ending the process at once, leaving its executions to be found dead) no longer applies.
pub(crate) struct Signals {
    int: Option<Signal>,
    term: Option<Signal>,
    hup: Option<Signal>,
}

impl Signals {
    pub(crate) fn new() -> Signals {
        Signals {
            int: signal(SignalKind::interrupt()).ok(),
            term: signal(SignalKind::terminate()).ok(),
            hup: signal(SignalKind::hangup()).ok(),
        }
    }

    /// The next of them to arrive, as the stop it asks for.
    pub(crate) async fn next(&mut self) -> StopReason {
        async fn recv(s: &mut Option<Signal>) {
            match s.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            _ = recv(&mut self.int) => StopReason::Interrupt,
            _ = recv(&mut self.term) => StopReason::Terminate,
            _ = recv(&mut self.hup) => StopReason::Hangup,
        }
    }
}

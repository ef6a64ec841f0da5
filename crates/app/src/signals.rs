//! The signals that stop what a front end runs: Ctrl-C (SIGINT), SIGTERM (CI cancelling a job,
//! `timeout`, `docker stop`, a service manager) and SIGHUP (the terminal closed, an ssh session
//! dropped), each taken as the stop it means — for `flowrun run`, `test` and `serve` alike.

use flowrun_executor::StopReason;
use tokio::signal::unix::{Signal, SignalKind, signal};

/// SIGINT, SIGTERM and SIGHUP, listened for from when this is made: their default action
/// (ending the process at once, its executions left to be found dead) no longer applies. Make
/// it before anything runs, so that no signal finds the default still there.
pub struct Signals {
    int: Signal,
    term: Signal,
    /// None when SIGHUP was ignored as this process started (`nohup flowrun …`): it stays so.
    hup: Option<Signal>,
}

impl Signals {
    /// Needs a tokio runtime (its signal driver). Fails when SIGINT or SIGTERM cannot be had.
    pub fn new() -> std::io::Result<Signals> {
        Ok(Signals {
            hup: (!hangup_ignored())
                .then(|| signal(SignalKind::hangup()).ok())
                .flatten(),
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
        })
    }

    /// The next of them to arrive, as the stop it asks for.
    pub async fn next(&mut self) -> StopReason {
        let hup = async {
            match self.hup.as_mut() {
                Some(s) => s.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = self.int.recv() => StopReason::Interrupt,
            _ = self.term.recv() => StopReason::Terminate,
            _ = hup => StopReason::Hangup,
        }
    }
}

/// Whether a signal that comes while a stop is under way asks for it to be over at once: Ctrl-C
/// or SIGTERM given again, yes (whoever asks twice wants it now); SIGHUP, no — a closing
/// terminal sends it twice on its own (the kernel, then the shell to its jobs).
pub fn insists(reason: StopReason) -> bool {
    matches!(reason, StopReason::Interrupt | StopReason::Terminate)
}

/// Was SIGHUP ignored when this process started (`nohup`)? A handler installed over that would
/// undo what the user asked for.
fn hangup_ignored() -> bool {
    // SAFETY: sigaction with a null new action only reads the current one into `old`.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGHUP, std::ptr::null(), &mut old) == 0
            && old.sa_sigaction == libc::SIG_IGN
    }
}

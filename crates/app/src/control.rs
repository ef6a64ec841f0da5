//! After a runner died: executions it left `running` become `interrupted`, and whatever of their
//! process group still lives is killed.
//!
//! Runs whenever a flowrun command opens the store. A runner counts as gone when no process has
//! its recorded pid with its recorded start time (so a reused pid is not mistaken for it).

use crate::events::{ErrorInfo, ExecStatus, NodeStatus, now_ms};
use crate::executor::process::{is_same_process, signal_group};
use crate::store::Store;
use nix::sys::signal::Signal;

/// Marks executions of dead runners `interrupted`. Returns their ids.
pub fn recover(store: &mut Store) -> Vec<String> {
    let Ok(unfinished) = store.unfinished() else {
        return Vec::new();
    };
    let mut done = Vec::new();
    for e in unfinished {
        let Some((pid, start)) = e.runner else {
            continue;
        };
        if is_same_process(pid, start) {
            continue;
        }
        if let Some(p) = e.process {
            if group_is_ours(p.pid, p.start_time) {
                signal_group(p.pgid, Signal::SIGKILL);
            }
        }
        let err = ErrorInfo::new(
            "Interrupted",
            format!("the flowrun process running this execution (pid {pid}) ended before it did"),
        );
        if let Ok(true) = store.mark_abandoned(
            &e.id,
            ExecStatus::Interrupted,
            &err,
            NodeStatus::Cancelled,
            now_ms(),
        ) {
            done.push(e.id);
        }
    }
    done
}

/// May the group led by `pid` be signalled? Yes when its leader is still the recorded process,
/// and yes when no process has that pid any more: the kernel never hands out a pid that is still
/// in use as a process group id, so a group without its leader can only hold the execution's own
/// survivors. No when the pid now belongs to a different process (the group is gone and the pid
/// was reused).
pub fn group_is_ours(pid: i32, start_time: Option<u64>) -> bool {
    match crate::executor::process::process_start_time(pid) {
        None => true,
        Some(_) => is_same_process(pid, start_time),
    }
}

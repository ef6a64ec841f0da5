//! The scheduler's time slice of flowrun's own processes, and the default for what runs the
//! workflow.
//!
//! The runner and a cold execution's shepherd work in short bursts between waits: a few frames
//! read and recorded, a child reaped, an exit passed on. On a machine whose cores are all busy,
//! each of those wakeups used to wait for a slice of the task already running (Linux's EEVDF
//! scheduler runs a woken task first only when its deadline — its eligible time plus its slice —
//! comes before the running task's). The runner and shepherd of one cold execution switch in and
//! out 13-26 times (`perf stat`), so their overhead under a CPU hog was 2-3x what it is idle. A short slice (Linux 6.12's custom slice
//! for normal tasks, `sched_attr.sched_runtime`, settable without privilege) gives such a task
//! an early deadline on each wakeup, so its burst runs at once; it takes no larger share of the
//! CPU (its slices are short, and it is as fair as before), and it is inherited by what the
//! runner starts. So the interpreter of an execution, its template and everything a workflow
//! starts get the default back ([`reset`]): the workflow's own code competes as any process
//! does, warm or cold, and as the hand-written baseline it is measured against.
//!
//! On an older kernel, or where the call is refused, nothing changes and nothing fails.

/// The policies of normal tasks (not real-time or deadline ones).
const NORMAL: [libc::c_int; 3] = [libc::SCHED_OTHER, libc::SCHED_BATCH, libc::SCHED_IDLE];

/// The scheduling policy a child of this process gets, and whether its niceness is raised to at
/// least 0 as it starts: with SCHED_RESET_ON_FORK (which no child inherits) a real-time policy
/// becomes SCHED_OTHER and a negative niceness 0. None when this process's cannot be read.
pub(crate) fn of_a_child() -> Option<(libc::c_int, bool)> {
    // SAFETY: reads this process's policy; no memory is passed.
    let ours = unsafe { libc::sched_getscheduler(0) };
    if ours < 0 {
        return None;
    }
    let reset = ours & libc::SCHED_RESET_ON_FORK != 0;
    let policy = ours & !libc::SCHED_RESET_ON_FORK;
    match reset && !NORMAL.contains(&policy) {
        true => Some((libc::SCHED_OTHER, reset)),
        false => Some((policy, reset)),
    }
}

/// The slice asked for flowrun's own processes: the kernel's least (0.1 ms).
const SHORT_SLICE_NS: u64 = 100_000;

/// Asks for a short slice for the calling thread and the threads and processes it starts
/// from now on (the runner calls it first thing, before its runtime's threads exist).
pub fn shorten() -> bool {
    set_runtime(SHORT_SLICE_NS)
}

/// Back to the default slice, for the calling thread. Async-signal-safe (two system calls):
/// for the child of a fork, before it execs what runs a workflow.
pub fn reset() -> bool {
    set_runtime(0)
}

/// Sets `sched_runtime` (the requested slice of a normal task; 0: the default) and keeps the
/// rest of the thread's policy (its niceness, SCHED_BATCH or SCHED_IDLE) as it is.
fn set_runtime(ns: u64) -> bool {
    // SAFETY: the kernel fills and reads a `sched_attr` of the size given, which it is; no
    // other memory is touched.
    unsafe {
        let mut attr: libc::sched_attr = std::mem::zeroed();
        let size = std::mem::size_of::<libc::sched_attr>() as libc::c_uint;
        if libc::syscall(libc::SYS_sched_getattr, 0, &mut attr as *mut _, size, 0) != 0 {
            return false;
        }
        if !NORMAL.contains(&(attr.sched_policy as libc::c_int)) {
            return false; // a real-time or deadline policy is not ours to change
        }
        if attr.sched_runtime == ns {
            return true;
        }
        attr.size = size;
        // Only what this size of `sched_attr` can carry (utilization clamps need a larger one).
        attr.sched_flags &= libc::SCHED_FLAG_RESET_ON_FORK as u64;
        attr.sched_runtime = ns;
        libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const _, 0) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A kernel that knows custom slices takes and reports them (as `sched_runtime`, which
    /// otherwise reports the default slice); `reset` undoes `shorten`. (In a thread of its
    /// own: the attribute is per thread.)
    #[test]
    fn a_short_slice_is_set_and_reset() {
        std::thread::spawn(|| {
            let runtime = || unsafe {
                let mut attr: libc::sched_attr = std::mem::zeroed();
                let size = std::mem::size_of::<libc::sched_attr>() as libc::c_uint;
                assert_eq!(
                    libc::syscall(libc::SYS_sched_getattr, 0, &mut attr as *mut _, size, 0),
                    0
                );
                attr.sched_runtime
            };
            let default = runtime();
            assert!(shorten());
            if default == 0 {
                // Before Linux 6.12 a normal task has no slice to choose, and none is reported.
                eprintln!("this kernel has no custom slices: nothing to check");
                assert_eq!(runtime(), 0);
                return;
            }
            assert_eq!(runtime(), SHORT_SLICE_NS);
            assert!(reset());
            assert_eq!(runtime(), default);
        })
        .join()
        .unwrap();
    }
}

//! The executor: runs one generated script as a child process and turns what it prints into
//! events, enforcing the execution and node deadlines and stop requests.
//!
//! It knows processes and the stdout protocol; it knows nothing of SQL. Everything it learns goes
//! to a [`Sink`] (the store recorder, the terminal, a JSONL writer, the HTTP server) in order.
//!
//! Concurrency: stdin is written by its own task while two reader tasks frame stdout and stderr
//! into a bounded channel, so a child that prints a lot while we still write a large trigger
//! cannot deadlock us, and memory stays bounded (backpressure stops the child, not us).

use crate::order::Order;
use crate::process::{self, ProcessInfo};
use crate::protocol::{Frame, Framer};
use crate::read::{Msg, read_stream};
use crate::sink::Sink;
use crate::spec::{RunSpec, StopReason};
use crate::state::{State, round_ms};
use crate::{strays, tree};
use flowrun_events::{ErrorInfo, ErrorKind, Event, ExecStatus, NodeStatus, Part, Stream, now_ms};
use nix::sys::signal::Signal;
use serde_json::Value;
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, watch};
use tokio::time::sleep_until;

/// How an execution ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: ExecStatus,
    pub output: Option<Value>,
    pub error: Option<ErrorInfo>,
    pub duration_ms: f64,
    /// How the child process ended, in words (`exit code 1`, `killed by SIGKILL`).
    pub exit: Option<String>,
    pub log_bytes: u64,
    pub log_bytes_cut: u64,
    /// How many events its stream has (the last one's `seq`): with `log_bytes`, what reading
    /// the execution back will cost.
    pub events: u64,
}

fn describe_exit(status: &std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        format!("exit code {code}")
    } else if let Some(sig) = status.signal() {
        match Signal::try_from(sig) {
            Ok(s) => format!("killed by {}", s.as_str()),
            Err(_) => format!("killed by signal {sig}"),
        }
    } else {
        "ended".into()
    }
}

/// Why the runner is ending the process itself.
#[derive(Clone, PartialEq, Eq, Debug)]
enum Ending {
    Timeout,
    /// This node ran past its deadline.
    NodeTimeout(String, Option<Part>),
    Cancel(StopReason),
}

/// How long to keep reading after the child exited, for grandchildren that still hold its pipes.
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(500);

/// How long the shepherd has to end the tree after its lifeline closed before the runner does it.
const SHEPHERD_ANSWER: Duration = Duration::from_millis(300);

/// Runs the execution to its end. Never panics on anything the child does.
pub async fn execute(
    spec: &RunSpec,
    sink: &mut dyn Sink,
    mut stop: watch::Receiver<Option<StopReason>>,
) -> Outcome {
    let started = Instant::now();
    let mut st = State::new(spec, sink, started);
    st.emit(Event::ExecutionStart {
        workflow_id: spec.workflow_id.clone(),
        workflow_name: spec.workflow_name.clone(),
        mode: spec.mode.clone(),
        nodes: spec.nodes.clone(),
        ts: now_ms(),
    });

    let mut launch = spec.launch.clone();
    // The nonce goes first on stdin, not in the environment: `/proc/<pid>/environ` would show
    // it to every process of the user.
    launch
        .env
        .push(("FLOWRUN_NONCE_ON_STDIN".into(), "1".into()));
    if let Some(bytes) = launch.max_memory {
        // The runtime names the limit when a node hits it (MemoryError).
        launch
            .env
            .push(("FLOWRUN_MAX_MEMORY_MB".into(), (bytes >> 20).to_string()));
    }
    let nonce_line = format!("{}\n", spec.nonce);
    let trigger = spec.trigger.clone();
    // A tenth of the timeout at most waiting for a warm template being started (it counts
    // against the execution's time, as a cold start's interpreter does).
    let wait = spec.timeout / 10;
    let spawned = match process::spawn(&launch, &[nonce_line.as_bytes(), &trigger], wait).await {
        Ok(s) => s,
        Err(e) => {
            let error = ErrorInfo::of(
                ErrorKind::SpawnError,
                format!("could not start {}: {e}", launch.program.display()),
            );
            return finish(st, ExecStatus::Error, None, Some(error), None);
        }
    };
    let process::Spawned {
        mut child,
        info,
        lifeline,
        stdin_written,
    } = spawned;
    // Dropped to end everything: the shepherd then kills the execution's whole tree.
    let mut lifeline = Some(lifeline);
    st.sink.spawned(&info);

    let mut stdin = child.stdin.take().expect("stdin is piped");
    // All of it in the pipe already (a warm start's spawn writes what fits): closed now, so the
    // child reads its end at once rather than when a writer task gets to run.
    let writer = (stdin_written < nonce_line.len() + trigger.len()).then(|| {
        tokio::spawn(async move {
            // What the spawn did not put in the pipe already. A child that exits without
            // reading stdin closes the pipe: that is not our error.
            let mut skip = stdin_written;
            for part in [nonce_line.as_bytes(), &trigger[..]] {
                let done = skip.min(part.len());
                skip -= done;
                let _ = stdin.write_all(&part[done..]).await;
            }
            let _ = stdin.shutdown().await;
        })
    });
    let (tx, mut rx) = mpsc::channel::<Msg>(64);
    let budget = crate::read::budget();
    let out_framer = Framer::new(&spec.nonce, spec.max_line_bytes, RunSpec::MAX_FRAME);
    // stderr carries only `at` marks (which node the lines after it belong to).
    let err_framer = Framer::new(&spec.nonce, spec.max_line_bytes, RunSpec::MAX_FRAME);
    tokio::spawn(read_stream(
        child.stdout.take().expect("stdout is piped"),
        out_framer,
        Stream::Stdout,
        tx.clone(),
        budget.clone(),
    ));
    tokio::spawn(read_stream(
        child.stderr.take().expect("stderr is piped"),
        err_framer,
        Stream::Stderr,
        tx,
        budget,
    ));

    let exec_deadline = started + spec.timeout;
    let mut open_streams = 2;
    // The two streams' frames, put back in the order they were written (`order`).
    let mut order = Order::default();
    let mut exit: Option<std::process::ExitStatus> = None;
    let mut drain_deadline: Option<Instant> = None;
    let mut ending: Option<Ending> = None;
    let mut kill_at: Option<Instant> = None;
    // Whether anyone can still stop us: once the stop handle is gone, its `changed()` fails at
    // once, every time, and must not be polled again.
    let mut stop_open = true;
    // When the shepherd has not ended the tree this long after the lifeline closed (it may be
    // stopped or killed), the runner ends the tree itself.
    let mut tree_kill_at: Option<Instant> = None;
    let far = started + Duration::from_secs(100 * 365 * 86400);
    // The two deadlines every turn of the loop waits for are made once and moved when they
    // change (five timers made, registered and dropped per turn were 1-2% of the CPU samples
    // of a warm `flowrun test` of 100 cases, nearly all of them in the runner's thread); the
    // rare ones are made only when their branch is enabled.
    let exec_sleep = sleep_until(exec_deadline.into());
    tokio::pin!(exec_sleep);
    let node_sleep = sleep_until(far.into());
    tokio::pin!(node_sleep);
    let at = |when: Option<Instant>| async move { sleep_until(when.unwrap_or(far).into()).await };
    // A pause is a SIGUSR1 that the runtime's handler takes; until the runtime has installed it
    // (before it says anything: its first event), the interpreter ignores SIGUSR1, so a pause
    // asked for while it starts would be lost. Such a pause is asked again at its first event.
    let mut heard = false;
    let mut pause_unheard = false;
    let ask_pause = |pid: i32| {
        // For the interpreter only (a cold execution's shepherd passes it on; a warm one's pid
        // is its interpreter's): the runtime starts no new node, and ends `paused` once the
        // running ones have ended.
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGUSR1);
    };

    while exit.is_none() || open_streams > 0 {
        let node_deadline = st.next_deadline();
        let node_at = node_deadline.as_ref().map_or(far, |d| d.0).into();
        if node_sleep.deadline() != node_at {
            node_sleep.as_mut().reset(node_at);
        }
        tokio::select! {
            // Not once both streams have closed: with their readers gone `recv()` answers at
            // once, every time, and the loop would spin while the child outlives its streams
            // (a warm one's end comes after its interpreter's teardown, on the same cores).
            msg = rx.recv(), if open_streams > 0 => match msg {
                Some(Msg::Frames(stream, frames, budget)) => {
                    if !heard && stream == Stream::Stdout && frames.iter().any(Frame::is_runtimes) {
                        heard = true;
                        if std::mem::take(&mut pause_unheard) && exit.is_none() {
                            ask_pause(info.pid);
                        }
                    }
                    order.push(stream, frames, budget);
                    order.release(|s, f| st.frame(s, f));
                    if rx.is_empty() {
                        st.sink.flush();
                    }
                }
                Some(Msg::Closed(stream)) => {
                    open_streams -= 1;
                    order.close(stream);
                    order.release(|s, f| st.frame(s, f));
                    // Frames that came with the end: recorded while the child ends.
                    if rx.is_empty() {
                        st.sink.flush();
                    }
                }
                None => open_streams = 0,
            },
            _ = at(order.give_up_at()), if order.give_up_at().is_some() => {
                order.waited(|s, f| st.frame(s, f));
                st.sink.flush();
            }
            status = child.wait(), if exit.is_none() => {
                exit = Some(status.unwrap_or_else(|_| std::os::unix::process::ExitStatusExt::from_raw(0)));
                drain_deadline = Some(Instant::now() + DRAIN_AFTER_EXIT);
            }
            _ = &mut exec_sleep, if ending.is_none() && exit.is_none() => {
                ending = Some(Ending::Timeout);
                kill_at = Some(begin_stop(&info, lifeline.as_ref(), spec.kill_grace));
            }
            _ = &mut node_sleep, if ending.is_none() && exit.is_none() && node_deadline.is_some() => {
                let (node, part) = node_deadline.map(|d| d.1).unwrap_or_default();
                ending = Some(Ending::NodeTimeout(node, part));
                kill_at = Some(begin_stop(&info, lifeline.as_ref(), spec.kill_grace));
            }
            // Also while the processes have their grace period: a stop asked again then (a
            // second Ctrl-C: whoever asks twice wants it over now) ends it.
            changed = stop.changed(), if stop_open && exit.is_none() && (ending.is_none() || kill_at.is_some()) => {
                let reason = *stop.borrow();
                if changed.is_err() {
                    // The stop handle is gone; nobody can stop us any more. Keep running.
                    stop_open = false;
                } else if ending.is_some() {
                    if reason.is_some_and(|r| r != StopReason::Pause) {
                        kill_at = Some(Instant::now());
                    }
                } else if reason == Some(StopReason::Pause) {
                    if !st.pause_requested {
                        st.pause_requested = true;
                        pause_unheard = !heard;
                        ask_pause(info.pid);
                    }
                } else if let Some(reason) = reason {
                    ending = Some(Ending::Cancel(reason));
                    kill_at = Some(begin_stop(&info, lifeline.as_ref(), spec.kill_grace));
                    st.sink.stopping(reason, spec.kill_grace);
                }
            }
            _ = at(kill_at), if kill_at.is_some() => {
                // The grace period is over: the shepherd (or the warm template) kills the
                // whole tree when its lifeline closes, wherever in it a process hides.
                lifeline = None;
                kill_at = None;
                tree_kill_at = Some(Instant::now() + SHEPHERD_ANSWER);
            }
            _ = at(tree_kill_at), if tree_kill_at.is_some() && exit.is_none() => {
                tree_kill_at = None;
                let (pid, start) = (info.pid, info.start_time);
                let _ = tokio::task::spawn_blocking(move || {
                    tree::kill_tree(pid, start, Duration::from_secs(2))
                })
                .await;
                process::signal_group(info.pgid, Signal::SIGKILL);
            }
            _ = at(drain_deadline), if drain_deadline.is_some() => {
                // A grandchild holds our pipes open after the child is gone: end the group.
                process::signal_group(info.pgid, Signal::SIGKILL);
                drain_deadline = None;
                open_streams = 0;
                // Take what the readers already framed, without waiting for more (one stream
                // may have closed while frames of the other are still queued behind it).
                while let Ok(msg) = rx.try_recv() {
                    if let Msg::Frames(stream, frames, budget) = msg {
                        order.push(stream, frames, budget);
                    }
                }
            }
        }
    }
    // Whatever is still held back waits for nothing now: both streams are done.
    order.finish(|s, f| st.frame(s, f));
    if let Some(writer) = writer {
        writer.abort();
    }
    // Nothing of the group outlives the execution, however it ended (the shepherd has ended the
    // rest of the tree before it exited).
    drop(lifeline);
    process::kill_group_and_wait(info.pgid, Duration::from_secs(2)).await;
    // A shepherd that ended by a signal may have been killed before it could end the tree: what
    // it left came here (see `strays`).
    // So may a warm execution's, when its template died or had to be killed.
    if (exit.is_none_or(|e| e.signal().is_some()) || child.lost()) && process::is_subreaper() {
        let _ = tokio::task::spawn_blocking(|| strays::sweep(Duration::from_secs(10))).await;
    }
    if child.lost() {
        crate::warm::retire_dead();
    }

    // Ended by a stop's signal that this runner had not taken as a stop: the stop is its end,
    // not a crash of the script. Either `flowrun stop` ended it while this runner could not
    // look (frozen by Ctrl-Z, say: it kills the group of a runner that does not answer, after
    // asking through the store), or the stop was still on its way here: one stop signals a
    // whole tree (a parent's stop reaches a sub-workflow's runner and that runner's child
    // alike), and on a busy machine the child's death can be seen first.
    let by_signal = exit.and_then(|e| e.signal());
    let stop_signal = [libc::SIGTERM, libc::SIGKILL, libc::SIGINT, libc::SIGHUP];
    if ending.is_none()
        && st.result.is_none()
        && by_signal.is_some_and(|s| stop_signal.contains(&s))
    {
        let mut asked = None;
        if by_signal == Some(libc::SIGKILL) {
            asked = st.sink.asked_to_stop();
        }
        if asked.is_none() && stop_open {
            asked = StopReason::in_flight(&mut stop).await;
        }
        ending = asked.map(Ending::Cancel);
    }
    let exit_text = exit.as_ref().map(describe_exit);
    let runtime_secs = started.elapsed().as_secs_f64();
    match ending {
        Some(Ending::Cancel(reason)) => {
            let how = reason.describe();
            // The node it was stopped in, as a timeout names it: where a hung run hung.
            let running = st.current_node();
            st.close_running(how, |_, _| {
                (
                    NodeStatus::Cancelled,
                    ErrorInfo::of(ErrorKind::Cancelled, how),
                )
            });
            let mut e = ErrorInfo::of(
                ErrorKind::Cancelled,
                format!("{how} after {runtime_secs:.1} s"),
            );
            e.node = running;
            finish(st, ExecStatus::Cancelled, None, Some(e), exit_text)
        }
        Some(Ending::Timeout) => {
            let ms = spec.timeout.as_millis();
            let mut e = ErrorInfo::of(
                ErrorKind::Timeout,
                format!("the execution exceeded its timeout of {ms} ms"),
            );
            e.node = st.current_node();
            st.close_running("the execution timed out", |_, _| {
                (
                    NodeStatus::Timeout,
                    ErrorInfo::of(
                        ErrorKind::Timeout,
                        format!("the execution timeout of {ms} ms expired while this node ran"),
                    ),
                )
            });
            finish(st, ExecStatus::Timeout, None, Some(e), exit_text)
        }
        Some(Ending::NodeTimeout(node, timed_out)) => {
            let ms = spec
                .node_timeouts
                .get(&node)
                .map(|d| d.as_millis())
                .unwrap_or(0);
            // The node's own timeout, or one item's or iteration's (a `for_each` or `repeat`
            // node's applies to each).
            let which = match timed_out {
                Some(p) => format!("{} {} of node '{node}'", p.kind(), p.number()),
                None => format!("node '{node}'"),
            };
            let msg = format!("{which} exceeded its timeout of {ms} ms");
            let mut e = ErrorInfo::of(ErrorKind::Timeout, msg.clone());
            e.node = Some(node.clone());
            // Nodes running beside the one that timed out are stopped with it, and so are the
            // node's other items or iterations: they did not time out themselves.
            st.close_running(&format!("{which} timed out"), |n, part| {
                if n == node && (part.is_none() || part == timed_out) {
                    (NodeStatus::Timeout, ErrorInfo::of(ErrorKind::Timeout, &msg))
                } else {
                    (
                        NodeStatus::Cancelled,
                        ErrorInfo::of(
                            ErrorKind::Cancelled,
                            format!("stopped because {which} timed out"),
                        ),
                    )
                }
            });
            finish(st, ExecStatus::Timeout, None, Some(e), exit_text)
        }
        None => {
            let exit_desc = exit_text.clone().unwrap_or_else(|| "ended".into());
            match st.result.take() {
                Some(Ok(r)) => {
                    let contradiction = if st.second_result {
                        Some("a second result followed it".to_string())
                    } else if r.status == "success" {
                        st.ledger.contradicts_success()
                    } else if r.status == "paused" {
                        st.ledger
                            .still_running()
                            .map(|n| format!("node '{n}' never ended"))
                            .or_else(|| {
                                (!st.pause_requested && spec.break_before.is_empty())
                                    .then(|| "nobody asked for a pause".to_string())
                            })
                    } else {
                        None
                    };
                    if let Some(why) = contradiction {
                        // A result the events disprove is not believed: the record stays true.
                        let running = st.current_node();
                        st.close_running("the script's result was not believed", |_, _| {
                            (
                                NodeStatus::Error,
                                ErrorInfo::of(
                                    ErrorKind::ProtocolError,
                                    "the script ended without ending this node",
                                ),
                            )
                        });
                        let mut e = ErrorInfo::of(
                            ErrorKind::ProtocolError,
                            format!("the script reported {}, but {why}", r.status),
                        );
                        e.node = running;
                        return finish(st, ExecStatus::Error, None, Some(e), exit_text);
                    }
                    let status = match r.status.as_str() {
                        "success" if exit.is_some_and(|e| e.success()) => ExecStatus::Success,
                        "success" => {
                            let e = ErrorInfo::of(
                                ErrorKind::ProtocolError,
                                format!("the script reported success but ended with {exit_desc}"),
                            );
                            return finish(st, ExecStatus::Error, r.output, Some(e), exit_text);
                        }
                        "paused" => ExecStatus::Paused,
                        _ => ExecStatus::Error,
                    };
                    if status == ExecStatus::Error {
                        // Nodes running beside the one that failed are waited for only a moment
                        // (runtime/core/64_schedule.py): those still running were stopped with
                        // the execution.
                        // So may a `for_each` node's items (runtime/core/62_loops.py): the node
                        // the error names, left running with them, failed with that error.
                        let failed = r.error.as_ref().and_then(|e| e.node.clone());
                        let ending = match &failed {
                            Some(n) => format!("node '{n}' failed"),
                            None => "the execution failed".to_string(),
                        };
                        st.close_running(&ending, |n, part| {
                            if part.is_none()
                                && failed.as_deref() == Some(n)
                                && let Some(e) = &r.error
                            {
                                let mut e = e.clone();
                                e.node = None;
                                return (NodeStatus::Error, e);
                            }
                            let why = match &failed {
                                Some(n) => format!("stopped because node '{n}' failed"),
                                None => "stopped because the execution failed".to_string(),
                            };
                            (
                                NodeStatus::Cancelled,
                                ErrorInfo::of(ErrorKind::Cancelled, why),
                            )
                        });
                    }
                    if status == ExecStatus::Error && r.error.is_none() {
                        let e = ErrorInfo::of(
                            ErrorKind::Error,
                            format!("the workflow failed ({exit_desc})"),
                        );
                        return finish(st, status, r.output, Some(e), exit_text);
                    }
                    finish(st, status, r.output, r.error, exit_text)
                }
                other => {
                    let why = match other {
                        Some(Err(e)) => e,
                        _ if st.in_result => "the result was cut off before its end marker".into(),
                        _ => "no result was printed".into(),
                    };
                    let running = st.current_node();
                    let mut msg = format!("the script ended with {exit_desc} and {why}");
                    if let Some(n) = &running {
                        msg.push_str(&format!(" while node '{n}' was running"));
                    }
                    if let Some(bytes) = spec.launch.max_memory {
                        // Past RLIMIT_AS, allocations fail: code that does not handle that
                        // crashes (SIGSEGV, SIGABRT) instead of raising MemoryError.
                        msg.push_str(&format!(
                            " (it ran with an address-space limit of {} MiB, --max-memory-mb: \
                             it may have run out of memory)",
                            bytes >> 20
                        ));
                    }
                    let mut e = ErrorInfo::of(ErrorKind::ProtocolError, msg.clone());
                    e.node = running;
                    st.close_running(&format!("the process ended with {exit_desc}"), |_, _| {
                        (
                            NodeStatus::Error,
                            ErrorInfo::of(
                                ErrorKind::ProcessExited,
                                format!("the process ended with {exit_desc} during this node"),
                            ),
                        )
                    });
                    finish(st, ExecStatus::Error, None, Some(e), exit_text)
                }
            }
        }
    }
}

/// The most of the output `execution_end` carries; a larger one is a truncation marker there
/// (the record has it whole, up to the store's limit).
pub const END_OUTPUT_MAX_BYTES: usize = 64 << 10;

/// The output as `execution_end` carries it.
fn end_output(v: &Value) -> Value {
    let text = v.to_string();
    if text.len() <= END_OUTPUT_MAX_BYTES {
        return v.clone();
    }
    let preview: String = text.chars().take(200).collect();
    flowrun_events::truncated::marker(text.len(), &preview)
}

/// SIGTERM to the group and to whoever passes it on to every process of the tree (also those
/// that left the group): the shepherd of a cold execution, the template of a warm one (told
/// through the lifeline). Returns when to end everything.
fn begin_stop(info: &ProcessInfo, lifeline: Option<&OwnedFd>, grace: Duration) -> Instant {
    process::signal_group(info.pgid, Signal::SIGTERM);
    if info.warm {
        if let Some(fd) = lifeline {
            let _ = nix::unistd::write(fd, b"t");
        }
    } else {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(info.pid), Signal::SIGTERM);
    }
    Instant::now() + grace
}

fn finish(
    mut st: State<'_>,
    status: ExecStatus,
    output: Option<Value>,
    error: Option<ErrorInfo>,
    exit: Option<String>,
) -> Outcome {
    // The output of an execution is the output of its last node, which only a success has: a
    // failed run's "last successful output" would read as if it were the answer.
    let output = output.filter(|_| status == ExecStatus::Success);
    let duration_ms = round_ms(st.started.elapsed().as_secs_f64() * 1000.0);
    st.emit(Event::ExecutionEnd {
        status,
        duration_ms: Some(duration_ms),
        error: error.clone(),
        output: output.as_ref().map(end_output),
        ts: now_ms(),
    });
    st.sink.flush();
    Outcome {
        status,
        output,
        error,
        duration_ms,
        exit,
        log_bytes: st.log_bytes,
        log_bytes_cut: st.log_bytes_cut,
        events: st.seq,
    }
}

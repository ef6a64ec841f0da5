//! A warm start: the runner's pipes go to the template, which forks the execution and
//! supervises it; the runner gets its lifeline and waits for the template's report of its end
//! ([`Supervised`]).

use super::handle::Handle;
use super::supervised::Supervised;
use super::template::Request;
use super::{Key, Pool};
use crate::process::{Launch, Proc, ProcessInfo, Spawned, hold_in_pipe, over_exec_limit, prefill};
use nix::fcntl::OFlag;
use nix::unistd::pipe2;
use std::os::fd::AsRawFd;
use tokio::net::unix::pipe;

/// Starts the execution from the template for its interpreter. Any error means: start it cold.
/// Nothing of the workflow runs before its stdin is written, which is the last thing done here,
/// once the execution is ours: the interpreter may be up already (a spare is up before the
/// request), so an error until then drops its lifeline — the template ends what it forked —
/// before the cold start can run the workflow again.
pub(crate) async fn spawn(
    pool: &'static Pool,
    launch: &Launch,
    stdin: &[&[u8]],
    wait: std::time::Duration,
) -> std::io::Result<Spawned> {
    let Some((script, flags)) = launch.args.split_last() else {
        return Err(std::io::Error::other("no script to run"));
    };
    if !crate::process::is_subreaper() {
        // Should the template die, its executions would be re-parented past us, and we could
        // neither wait for them nor end what they leave.
        return Err(std::io::Error::other(
            "this process is not a child subreaper",
        ));
    }
    let key = Key {
        program: launch.program.clone(),
        flags: flags.to_vec(),
        env: super::at_start(&launch.env),
    };
    if over_exec_limit(launch) {
        // A cold start cannot exec it (E2BIG): neither may a warm one run it.
        return Err(std::io::Error::other(
            "the environment and arguments are over what an exec takes",
        ));
    }
    // The environment goes to the interpreter on its own stdin, ahead of what the workflow
    // reads there, never through the template: what the template has held, every later fork
    // can read in its own memory (secrets included).
    let env = env_block(&launch.env);
    let (in_r, in_w) = pipe2(OFlag::O_CLOEXEC)?;
    // All of the environment must fit in the empty pipe (written before anything can read it);
    // a larger one than the system lets a pipe hold starts cold.
    hold_in_pipe(&in_w, env.len())?;
    let (out_r, out_w) = pipe2(OFlag::O_CLOEXEC)?;
    let (err_r, err_w) = pipe2(OFlag::O_CLOEXEC)?;
    let cwd = match &launch.cwd {
        Some(c) => c.clone(),
        None => std::env::current_dir()?,
    };
    let req = Request {
        script,
        cwd,
        max_memory: launch.max_memory,
    };
    let fds = [in_r.as_raw_fd(), out_w.as_raw_fd(), err_w.as_raw_fd()];
    let (handle, nudge) = pool
        .with_template(&key, script, wait, async |t| {
            Ok((t.fork(&req, fds).await?, t.nudge()))
        })
        .await?;
    // The execution has its own copies now; ours would keep its pipes open past its end.
    drop((in_r, out_w, err_w));
    let Handle {
        pid,
        lifeline,
        status,
        pidfd,
        template,
        own,
    } = handle;
    // From here on, an error drops the lifeline: the template kills what it forked.
    let waiter = Supervised::new(pid, status, pidfd, template, nudge, own)?;
    let stdin_pipe = pipe::Sender::from_owned_fd(in_w)?;
    let stdout_pipe = pipe::Receiver::from_owned_fd(out_r)?;
    let stderr_pipe = pipe::Receiver::from_owned_fd(err_r)?;
    // Now, not when a writer task gets to it: the interpreter is waiting for it.
    if prefill(&stdin_pipe, &[&env]) != env.len() {
        return Err(std::io::Error::other(
            "the environment did not fit in the warm start's stdin",
        ));
    }
    // Read while the interpreter sets itself up from that environment, not before it has it:
    // it is alive until it has its stdin, written next.
    let info = ProcessInfo {
        pid,
        pgid: pid,
        start_time: crate::process::process_start_time(pid),
        warm: true,
    };
    let stdin_written = prefill(&stdin_pipe, stdin);
    let proc = Proc::warm(
        Box::pin(stdin_pipe),
        Box::pin(stdout_pipe),
        Box::pin(stderr_pipe),
        waiter,
    );
    Ok(Spawned {
        child: proc,
        info,
        lifeline,
        stdin_written,
    })
}

/// The environment as the interpreter reads it first on stdin (`_read_env` in
/// runtime/warm/template.py): its length in 8 bytes, big-endian, then `[[name, value], …]`,
/// in the order a cold start's exec has them.
fn env_block(env: &[(String, String)]) -> Vec<u8> {
    let json = serde_json::to_vec(&crate::process::exec_env(env)).expect("strings serialize");
    let mut out = (json.len() as u64).to_be_bytes().to_vec();
    out.extend(json);
    out
}

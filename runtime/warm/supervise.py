# ---------------------------------------------------------------------------
# flowrun warm template, part 2: supervision (runtime/warm/supervise.py)
#
# Run as one source (the template's: read from descriptor 4) with template.py before it and spares.py and serve.py
# after it.  The template is the parent of every execution it forks (W) and a
# child subreaper, and does for them what `flowrun __shepherd` does for a cold
# execution (crates/executor/src/shepherd.rs): it watches each one's lifeline,
# passes a stop on to its whole tree, and once W has ended kills whatever W
# left (re-parented here), then tells the runner how W ended.  One process and
# one poll for all of them, instead of a shepherd exec'd for each.
# ---------------------------------------------------------------------------
import select

# The executions forked and not yet ended, spares included: W's pid -> _Execution.
_RUNNING = {}
# Descriptor -> (what it is, the execution): what the poll below watches besides the socket.
_WATCHED = {}
_POLL = select.poll()
_POLL_IN = select.POLLIN | select.POLLHUP | select.POLLERR


class _Execution:
    """One W, and the template's ends of its lifeline, status pipe and pidfd."""

    __slots__ = ("pid", "lifeline", "status_fd", "pidfd", "raw")

    def __init__(self, pid, lifeline, status_fd, pidfd):
        self.pid = pid
        self.lifeline = lifeline
        self.status_fd = status_fd
        self.pidfd = pidfd
        self.raw = None  # W's wait status, once reaped


def _watch(fd, kind, ex):
    _WATCHED[fd] = (kind, ex)
    _POLL.register(fd, _POLL_IN)


def _unwatch(fd):
    if _WATCHED.pop(fd, None) is not None:
        _POLL.unregister(fd)
    os.close(fd)


def _fork_execution():
    """Forks W, registered for supervision before it runs anything.  Returns (0, None) in W —
    its own session and a child subreaper; the caller closes the template's descriptors there
    before anything of a workflow runs — and (W, (lifeline's write end, status's read end,
    pidfd)) here: the runner's, to be sent and then closed (the pidfd stays the template's
    too)."""
    life_r, life_w = os.pipe()
    status_r, status_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.setsid()
        if not _subreaper():
            os._exit(70)
        return 0, None
    try:
        # Never blocking: an event polled for a descriptor closed since, whose number a new one
        # took in the same turn, finds nothing to read.
        os.set_blocking(life_r, False)
        pidfd = os.pidfd_open(pid)
    except BaseException:
        # Not supervised, so not run: W waits for its environment on stdin, and is killed here.
        os.kill(pid, _signal.SIGKILL)
        os.waitpid(pid, 0)
        for fd in (life_r, life_w, status_r, status_w):
            os.close(fd)
        raise
    ex = _Execution(pid, life_r, status_w, pidfd)
    _RUNNING[pid] = ex
    _watch(life_r, "lifeline", ex)
    _watch(pidfd, "ended", ex)
    return pid, (life_w, status_r, pidfd)


def _close_ends(ends):
    """The template's copies of the runner's ends, once sent (or not: then W's lifeline closes
    and W is ended)."""
    os.close(ends[0])
    os.close(ends[1])


def _on_lifeline(ex):
    """The runner wrote to W's lifeline ("t": stop) or closed it (end everything)."""
    try:
        data = os.read(ex.lifeline, 64)
    except BlockingIOError:
        return
    except OSError:
        data = b""
    if data:
        if b"t" in data:
            _signal_tree(ex, _signal.SIGTERM)
        return
    _unwatch(ex.lifeline)
    ex.lifeline = None
    # W first: what it leaves comes here as it dies, and is ended with the rest (_on_end).
    _signal_tree(ex, _signal.SIGKILL)


def _signal_tree(ex, sig):
    """`sig` to W's group and to every process under W, wherever its group (W is their
    subreaper, so what left its group is still under it), as the shepherd passes a stop on
    (crates/executor/src/tree.rs, signal_descendants).  Only while W is not reaped, so that its
    pid and group id are still its own; W itself through its pidfd."""
    if ex.raw is not None:
        return  # ended: what it left is ended by _on_end
    try:
        os.killpg(ex.pid, sig)
    except OSError:
        pass
    try:
        _signal.pidfd_send_signal(ex.pidfd, sig)
    except OSError:
        pass
    for p in _descendants(ex.pid):
        try:
            os.kill(p, sig)
        except OSError:
            pass


def _descendants(pid):
    """Every process under `pid`."""
    return _walk([pid])[1:]


def _walk(roots, before=None):
    """Every process of the trees under `roots` (each thread's children, as /proc lists them),
    roots first.  `before(p)` runs on each before its children are read; False: it is gone."""
    out, todo = [], list(roots)
    while todo and len(out) < 100000:
        p = todo.pop()
        if before is not None and not before(p):
            continue
        out.append(p)
        try:
            tasks = os.listdir("/proc/%d/task" % p)
        except OSError:
            continue
        for t in tasks:
            try:
                with open("/proc/%d/task/%s/children" % (p, t), "rb") as f:
                    todo.extend(int(k) for k in f.read().split())
            except (OSError, ValueError):
                continue
    return out


def _reap():
    """Reaps every child that has ended: an execution's status is kept for _on_end, what else
    ended (what an execution left, killed by _end_leftovers) is just gone."""
    while True:
        try:
            pid, raw = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        except InterruptedError:
            continue
        if pid == 0:
            return
        ex = _RUNNING.get(pid)
        if ex is not None:
            ex.raw = raw


def _raise_nofile():
    """Raises this process's soft limit of descriptors to its hard limit: an execution (the same
    user) can lower it, with prlimit, below what polling and reading /proc take.  False when
    even the hard limit leaves too few for what it watches (and a few to read /proc with)."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard == resource.RLIM_INFINITY or hard >= len(_WATCHED) + 32
    except (OSError, ValueError):
        return False


def _give_up():
    """The template can no longer supervise: its descriptor limit was taken away for good, or
    what an execution left outruns it.  It ends itself, and only itself: its executions, what
    they left and what they run are re-parented to the runner, a subreaper, which waits for them
    and ends what is left (crates/executor/src/warm/supervised.rs).  An execution of the same
    template fails for none of that."""
    os.kill(os.getpid(), _signal.SIGKILL)


# Executions that ended and whose leftovers are being ended: their reports wait for that, done
# one round per turn of the poll, so that the other executions' stops, ends and requests are
# served in between (a fork storm left behind takes many rounds).
_ENDING = []
_ROUNDS = [0]
# Rounds before the template gives up, as many as the shepherd tries
# (crates/executor/src/shepherd.rs, finish).
_MAX_ROUNDS = 500


def _session(pid):
    """The session of `pid` (/proc/<pid>/stat), or None."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            return int(f.read().rpartition(b")")[2].split()[3])
    except (OSError, ValueError, IndexError):
        return None


def _leftovers_round():
    """One round of ending what ended executions left: every child of the template that is none
    of its executions and in none of their sessions — what an ended W left, re-parented here
    (a process of a running W that left it, by CLONE_PARENT or because W stopped being a
    subreaper, waits for its W's end) — is frozen (SIGSTOP: nothing forks meanwhile) with all
    that is under it, then killed, as the runner's sweep does (crates/executor/src/strays.rs).
    True when none is left, False when some were, None when they cannot be seen."""
    _reap()
    try:
        with open("/proc/self/task/%d/children" % os.getpid(), "rb") as f:
            kids = [int(k) for k in f.read().split()]
    except (OSError, ValueError):
        # Not "nothing left": what is there cannot be seen.
        return False if _raise_nofile() else None
    left = [k for k in kids if k not in _RUNNING and _session(k) not in _RUNNING]
    if not left:
        return True
    # Our children, not reaped: their pids are their own. Each process is frozen as soon as it
    # is found, before its children are read, so that a storm cannot fork faster than the walk
    # goes (a child forked in the moment before the stop lands comes here when its parent is
    # killed, for the next round); then all of them are killed.
    doomed = _freeze_trees(left)
    for p in doomed:
        try:
            os.kill(p, _signal.SIGKILL)
        except OSError:
            pass
    return False


def _freeze_trees(roots):
    """SIGSTOPs each of `roots` and everything under it, each process before its children are
    read; returns all of them."""
    def stop(p):
        try:
            os.kill(p, _signal.SIGSTOP)
            return True
        except OSError:
            return False
    return _walk(roots, stop)


def _end_leftovers():
    """A round for what ended, if anything did: once none is left, the runner is told how each
    W ended (its wait status, as text) and the executions are forgotten; when what they left
    cannot be ended (too many rounds, or it cannot be seen), each report says so ("lost") and
    the template gives up: the runner ends the rest.  The loop polls without waiting while
    anything is being ended."""
    if not _ENDING:
        return
    done = _leftovers_round()
    if done is False and _ROUNDS[0] < _MAX_ROUNDS:
        _ROUNDS[0] += 1
        return
    for ex in _ENDING:
        try:
            os.write(ex.status_fd, b"%d\n" % ex.raw if done else b"%d lost\n" % ex.raw)
        except OSError:
            pass  # the runner let the execution go (a spare it did not use)
        os.close(ex.status_fd)
    del _ENDING[:]
    _ROUNDS[0] = 0
    if not done:
        _give_up()


def _on_end(ex):
    """W ended: reaped, and its report waits until what it left is ended (_end_leftovers)."""
    _reap()
    if ex.raw is None:
        return  # not ended after all (an event for a descriptor whose number was reused)
    del _RUNNING[ex.pid]
    _unwatch(ex.pidfd)
    if ex.lifeline is not None:
        _unwatch(ex.lifeline)
    _ENDING.append(ex)


def _supervise(fd):
    """One event of the poll that is not the socket's."""
    kind, ex = _WATCHED.get(fd, (None, None))
    if kind == "lifeline":
        _on_lifeline(ex)
    elif kind == "ended":
        _on_end(ex)

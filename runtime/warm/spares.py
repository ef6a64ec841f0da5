# ---------------------------------------------------------------------------
# flowrun warm template, part 2: spares (runtime/warm/spares.py)
#
# Run as one `-c` source with template.py before it and serve.py after it
# (crates/executor/src/warm/template.rs).  The executions' S and W made ahead
# of their requests: see "Spares" in template.py's header.
# ---------------------------------------------------------------------------
# The spares made and in the runner's hands (pids of S), until it says they are gone (used or
# let go).  Two: the one an execution takes, and one for the execution that comes right after it
# (`flowrun test`'s next case) while the one taken is being replaced.
_MADE = set()
_MAX_SPARES = 2


def _make_spare(sock):
    """Makes the next execution's S and W now, ahead of its request, so that its start costs
    neither a clone, a fork nor the shepherd's exec: S (the runner's child, by clone) forks W,
    which waits on a socket for its request (_spare_wait), and execs the shepherd with
    `--spare`, which waits on another for the execution's descriptors.  Made when the runner
    says an execution ended: not while one runs, whose two cores it would take (the clone, S's
    fork and the shepherd's exec cost ~2 ms of CPU), but while the runner records its end and a
    caller prepares the next request; with what the last request named (shepherd,
    interpreter).  Both sockets go to the runner ({"spare": S, "scripts": what W holds
    prepared}), which gives a request for one of those scripts to the spare itself, without
    the template, and reaps S however the spare ends.  Without clone (no ctypes, an unknown
    architecture) or prctl there is none.  Returns, in the spare's W only, its socket."""
    if _LAST is None or _PRCTL is None:
        return None
    w_ours, w_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    h_ours, h_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s = _clone_parent()
    if s == 0:
        try:
            return _spare_s(sock, (w_ours, h_ours), w_theirs, h_theirs)
        except SystemExit:
            raise
        except BaseException:
            os._exit(70)
    w_theirs.close()
    h_theirs.close()
    try:
        if s is not None:
            report = {"spare": s, "scripts": list(_PREPARED)}
            socket.send_fds(sock, [json.dumps(report).encode("utf-8")],
                            [w_ours.fileno(), h_ours.fileno()])
            _MADE.add(s)
    finally:
        # The runner's now: a spare whose report did not reach it ends (its sockets close).
        w_ours.close()
        h_ours.close()
    return None


def _spare_s(sock, ours, w_sock, h_sock):
    """In a spare's S: as _shepherd_side, but before any request.  Returns only in W, with its
    socket."""
    os.setsid()
    # The template's ends of this spare's sockets: its shepherd and W must see them close when
    # the runner lets the spare go, and the template's socket.
    for other in (sock,) + ours:
        os.close(other.detach())
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, _SHEPHERD_SIGNALS)
    if not _subreaper():
        os._exit(70)
    worker = os.fork()
    if worker == 0:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        h_sock.close()
        return w_sock
    w_sock.close()
    os.dup2(_high(h_sock.fileno()), 3, inheritable=True)
    os.closerange(4, _MAX_FD)
    shepherd, program, args = _LAST
    argv = [shepherd, "__shepherd", "3", "--adopt", str(worker), "--spare", "--", program] + args
    try:
        os.execve(shepherd, argv, {})
    finally:
        _end_tree()
        os._exit(127)


def _spare_wait(conn):
    """In a spare's W: waits for its execution's request and descriptors (from the runner),
    then becomes that execution's W as one forked for it would.  Ends quietly when the runner
    lets the spare go or goes (its end of the socket closes)."""
    try:
        msg, fds, _flags, _addr = socket.recv_fds(conn, 1 << 20, 3)
        req = json.loads(msg.decode("utf-8")) if msg else None
        entry = _PREPARED[req["script"]] if req else None
        if entry is None or len(fds) != 3:
            os._exit(0)
        return entry[2], _worker_setup(req, fds, None)
    except BaseException:
        os._exit(70)

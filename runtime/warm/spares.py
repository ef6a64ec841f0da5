# ---------------------------------------------------------------------------
# flowrun warm template, part 2: spares (runtime/warm/spares.py)
#
# Run as one `-c` source with template.py before it and serve.py after it
# (crates/executor/src/warm/template.rs).  The executions' S and W made ahead
# of their requests: see "Spares" in template.py's header.
# ---------------------------------------------------------------------------
# The spares (see _make_spare), oldest first: (pid of S, W's socket, the shepherd's socket,
# _SERIAL when made).  Two: the one an execution takes, and one for the execution that comes
# right after it (`flowrun test`'s next case) while the one taken is being replaced.
_SPARES = []
_MAX_SPARES = 2


def _make_spare(sock):
    """Makes the next execution's S and W now, ahead of its request, so that its start costs
    neither a clone, a fork nor the shepherd's exec: S (the runner's child, by clone) forks W,
    which waits on a socket for its request (_spare_wait), and execs the shepherd with
    `--spare`, which waits on another for the execution's descriptors.  Made when the runner
    says an execution ended (b"spare"), with what the last request named (shepherd,
    interpreter): not while one runs, whose two cores it would take (the clone, S's fork and
    the shepherd's exec cost ~2 ms of CPU), but while the runner records its end and a caller
    prepares the next request.  Reported to the runner ({"spare": S}), which reaps a spare
    that ends unused (its template let it go, or went away).  It is used only for a
    script prepared before it was made (_use_spare); without clone (no ctypes, an unknown
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
    if s is None:
        w_ours.close()
        h_ours.close()
        return None
    _SPARES.append((s, w_ours, h_ours, _SERIAL[0]))
    sock.send(json.dumps({"spare": s}).encode("utf-8"))
    return None


def _spare_s(sock, ours, w_sock, h_sock):
    """In a spare's S: as _shepherd_side, but before any request.  Returns only in W, with its
    socket."""
    os.setsid()
    # The template's ends: of this spare's sockets, and of the older spares' (whose shepherds
    # and Ws must see them close when the template lets them go, not when this one ends).
    for other in (sock,) + ours + tuple(x for spare in _SPARES for x in spare[1:3]):
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
    """In a spare's W: waits for its execution's request and descriptors, then becomes that
    execution's W as one forked for it would.  Ends quietly when the template retires the
    spare or goes (its end of the socket closes)."""
    try:
        msg, fds, _flags, _addr = socket.recv_fds(conn, 1 << 20, 3)
        req = json.loads(msg.decode("utf-8")) if msg else None
        entry = _PREPARED[req["script"]] if req else None
        if entry is None or len(fds) != 3:
            os._exit(0)
        return entry[2], _worker_setup(req, fds, None)
    except BaseException:
        os._exit(70)


def _running(pid):
    """Is `pid` there and not a zombie?"""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            state = f.read().rpartition(b")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")


def _use_spare(msg, fds, serial, sock):
    """Gives the request to the oldest spare made after the script was prepared (its W holds
    the prepared module) and still there; returns its S, or None.  A spare found unable to
    serve is retired: let go, and reported so that the runner reaps it."""
    while _SPARES:
        s = _give(_SPARES.pop(0), msg, fds, serial, sock)
        if s is not None:
            return s
    return None


def _give(spare, msg, fds, serial, sock):
    """The request to one spare: its S, or None (the spare retired).  The shepherd gets the
    descriptors first, then W the request as the runner sent it (the same bytes: if the
    runner's message fitted a socket, it fits this one).  W runs nothing of the workflow
    before it has its request and the runner has written its stdin, so a failure here leaves
    nothing of it behind: a retired spare's W ends at once (its socket closes), and its
    shepherd, which may hold the execution's descriptors, ends with it."""
    s, w_sock, h_sock, made = spare
    used = False
    try:
        if serial <= made and _running(s):
            socket.send_fds(h_sock, [b"go"], list(fds))
            socket.send_fds(w_sock, [msg], list(fds[:3]))
            used = True
    except OSError:
        pass
    finally:
        w_sock.close()
        h_sock.close()
    if used:
        return s
    # Its sockets closed: its shepherd ends W, reaps it and exits (the runner reaps S).
    sock.send(json.dumps({"retired": s}).encode("utf-8"))
    return None

# ---------------------------------------------------------------------------
# flowrun warm template, part 3: spares (runtime/warm/spares.py)
#
# Run as one source (the template's: read from descriptor 4) after template.py and supervise.py, before serve.py
# (crates/executor/src/warm/template.rs).  Executions' W made ahead of their
# requests: see "Spares" in template.py's header.
# ---------------------------------------------------------------------------
import select

# The spares made and in the runner's hands (pids of W), until it says they are gone (used or
# let go).  Two: the one an execution takes, and one for the execution that comes right after it
# (`flowrun test`'s next case) while the one taken is being replaced.
_MADE = set()
_MAX_SPARES = 2


def _make_spare(sock):
    """Forks the next execution's W now, ahead of its request, so that its start costs no fork:
    W waits on a socket for its request (_spare_wait).  Made when the runner says an execution
    ended: not while one runs, whose two cores the fork and W's copy-on-write faults would take,
    but while the runner records its end and a caller prepares the next request.  The socket and
    W's lifeline, status pipe and pidfd go to the runner ({"spare": W, "scripts": what W holds
    prepared}), which gives a request for one of those scripts to the spare itself, without the
    template; a spare it lets go sees its socket and lifeline close and ends.  Returns, in the
    spare's W only, its socket's descriptor."""
    if not _PREPARED:
        return None
    _take_pages()
    ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
    pid, ends = _fork_execution()
    if pid == 0:
        # W keeps its socket, at 3, and nothing else of the template's.
        conn = theirs.detach()
        os.close(ours.detach())
        sock.detach()
        os.dup2(conn, 3, inheritable=False)
        os.closerange(4, _MAX_FD)
        return 3
    theirs.close()
    try:
        report = {"spare": pid, "scripts": list(_PREPARED)}
        _send_fds(sock, _dumps(report), [ours.fileno()] + list(ends))
        _MADE.add(pid)
    except OSError:
        pass  # the runner is gone: W's lifeline closes below, and W is ended
    finally:
        ours.close()
        _close_ends(ends)
    return None


def _spare_wait(conn):
    """In a spare's W: waits for its execution's request and descriptors (from the runner),
    then becomes that execution's W as one forked for it would.  Ends quietly when the runner
    lets the spare go or goes (its end of the socket closes)."""
    try:
        _prefault(conn)
        sock = _socket.socket(fileno=conn)
        msg, fds = _recv_fds(sock, 1 << 20, 3)
        sock.detach()
        req = _loads(msg) if msg else None
        entry = _PREPARED[req["script"]] if req else None
        if entry is None or len(fds) != 3:
            os._exit(0)
        return entry[2], _worker_setup(req, fds)
    except BaseException:
        os._exit(70)


# The pages an execution writes, as (address, count) runs, and where the next execution writes
# what it learns (None: nothing to learn).  A fork pays a copy-on-write fault for each page of
# the template it first writes (reference counts: ~600 pages, ~1 ms of a w3 execution); a spare
# takes those faults while it waits (_prefault), off the request's path.  Which pages is learned
# from an execution (_learn_pages, as it ends) after each script the template prepares, through
# a file in a private directory the runner made for this template (FLOWRUN_WARM_DIR).
_PAGES = [[], None]
_PAGES_DIR = os.environ.get("FLOWRUN_WARM_DIR") or None
if _PAGES_DIR is not None and not os.path.isabs(_PAGES_DIR):
    _PAGES_DIR = None  # a relative $TMPDIR would be the workflow's directory in W
_PAGE = os.sysconf("SC_PAGE_SIZE")
_PAGES_MAX = (64 << 20) // _PAGE  # what a spare may copy ahead at most
_RUNS_MAX = 4096  # runs taken from what an execution learned (a template has ~2,000 such pages)
# The template's own writable private mappings when it last prepared a script: all an execution
# scans (what lies outside them is not the template's, and a large heap would cost its time).
_MAPS = []


def _writable_private():
    """The (start, end) of this process's writable private mappings."""
    out = []
    with open("/proc/self/maps", "rb") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[1][:2] == b"rw" and parts[1][3:4] == b"p":
                lo, _, hi = parts[0].partition(b"-")
                out.append((int(lo, 16), int(hi, 16)))
    return out


def _learn_pages():
    """In W as it ends, when there is something to learn: the runs of pages it has its own copy
    of (pagemap: present and exclusively mapped), written for the template.  Costs ~1 ms, once
    per script prepared; never fails the execution."""
    path = _PAGES[1]
    if path is None or _MADVISE is None:
        return
    try:
        import struct
        runs = []
        fd = os.open("/proc/self/pagemap", os.O_RDONLY)
        try:
            for lo, hi in _MAPS:
                data = os.pread(fd, ((hi - lo) // _PAGE) * 8, (lo // _PAGE) * 8)
                start = None
                for i, v in enumerate(struct.unpack("%dQ" % (len(data) // 8), data)):
                    mine = (v >> 63) & 1 and (v >> 56) & 1
                    if mine and start is None:
                        start = i
                    elif not mine and start is not None:
                        runs.append("%x %x" % (lo + start * _PAGE, i - start))
                        start = None
                if start is not None:
                    runs.append("%x %x" % (lo + start * _PAGE, len(data) // 8 - start))
        finally:
            os.close(fd)
        tmp = "%s.%d" % (path, os.getpid())
        with open(tmp, "w") as f:
            f.write("\n".join(runs))
        os.rename(tmp, path)
    except BaseException:
        pass


def _take_pages():
    """In the template, before it makes a spare: what an execution learned, if it has, kept
    where it lies within the template's own writable private mappings (the rest is not the
    template's to copy), up to _PAGES_MAX pages."""
    path = _PAGES[1]
    if path is None:
        return
    # Workflow code runs in W and may put anything there: a regular file only (not a FIFO to
    # block on, not a link), read without waiting.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return
    try:
        os.unlink(path)
        text = os.read(fd, _RUNS_MAX * 32) if _stat.S_ISREG(os.fstat(fd).st_mode) else b""
    except OSError:
        return
    finally:
        os.close(fd)
    maps = _writable_private()
    runs, total = [], 0
    # Bounded: a workflow could write any number of lines there, each checked against the maps.
    for line in text.splitlines()[:_RUNS_MAX]:
        try:
            lo, count = (int(x, 16) for x in line.split())
        except ValueError:
            continue
        hi = lo + count * _PAGE
        if count > 0 and total + count <= _PAGES_MAX and any(a <= lo and hi <= b for a, b in maps):
            runs.append((lo, count))
            total += count
    _PAGES[:] = [runs, None]


# Pages a spare copies ahead between two yields of its core (~0.2 ms of faults).
_PREFAULT_SLICE = 64


def _prefault(conn):
    """In a spare's W, before it waits: copies the pages an execution is known to write
    (MADV_POPULATE_WRITE, Linux 5.14; elsewhere nothing happens).  It yields its core every
    _PREFAULT_SLICE pages: the execution the runner hands the spare before this one is often
    woken on this core meanwhile, and the scheduler lets a running task of equal weight finish
    its slice first (1.5 ms on two cores, most of the copy) unless it yields.  And it stops
    there once something is waiting on `conn`, its socket (its request, or the runner letting it
    go): on two busy cores a spare often still copies when its request comes (a quarter of a
    warm suite's cases, 0.36 ms each on average), and an execution then faults only the pages
    it writes, as it writes them, instead of waiting for the whole copy first."""
    if _MADVISE is None:
        return
    asked = select.poll()
    asked.register(conn, select.POLLIN | select.POLLHUP)
    copied = 0
    for lo, count in _PAGES[0]:
        _MADVISE(ctypes.c_void_p(lo), ctypes.c_size_t(count * _PAGE), 23)
        copied += count
        if copied >= _PREFAULT_SLICE:
            if asked.poll(0):
                return
            os.sched_yield()
            copied = 0

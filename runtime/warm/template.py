# ---------------------------------------------------------------------------
# flowrun warm template (runtime/warm/template.py)
#
# One long-lived interpreter per interpreter and requirement set, started by
# `flowrun serve` / `flowrun test` (crates/executor/src/warm/) with the same
# flags a cold execution gets (-I [-S] -u) and, as one source read from a
# sealed memory file at descriptor 4 (by a link to /proc/self/fd/4 named
# `flowrun-warm-template`), this file followed by supervise.py, spares.py and
# serve.py (the request loop, and where W starts).  It imports what every execution's runtime needs, then waits on
# fd 3, a SOCK_SEQPACKET socket to the runner, for requests: one JSON message
# per execution with the execution's stdin, stdout and stderr pipes attached
# (SCM_RIGHTS).
#
# Per request it forks W, the execution, and supervises it (supervise.py): the
# template is a child subreaper and W's parent, and does for all its
# executions what a cold execution's `flowrun __shepherd` does for one:
#
#   runner ─► template (subreaper) ─fork─► W (setsid, subreaper) ─► what the
#                                                 workflow starts
#
#   W: starts a session (its pid is the execution's process group and
#      session), becomes a child subreaper, so that what its tree orphans
#      stays in its tree while it runs; puts the execution's pipes on 0/1/2,
#      closes every other descriptor, applies the memory limit, replaces the
#      environment (read first from its stdin, never sent to the template),
#      changes directory, reseeds random, and runs the script's main as its
#      last line would (this file's frames left by returning), the script
#      being `__main__`; then ends as a cold interpreter would (threads
#      joined, atexit, streams flushed, the exit status of SystemExit) but
#      with os._exit: freeing every preloaded module at finalization costs
#      more than the execution.
#   The template answers {"pid": W} with three descriptors for the runner:
#      the write end of W's lifeline (closed: W's tree is killed; a "t"
#      written: SIGTERM to all of it, wherever its processes' groups), the
#      read end of its status pipe (W's wait status, written once W has
#      ended and everything it left is gone), and a pidfd of W.  When W ends,
#      what it left is re-parented here: every child of the template that is
#      not one of its executions is such a leftover, and is killed.  If the
#      template itself dies, its executions are re-parented to the runner (a
#      subreaper), which then waits for them itself and ends what they leave
#      (crates/executor/src/warm/supervised.rs).
#
# The runner's {"prepare": path} (a script it will ask for next, whose first
# executions start cold meanwhile), or else the first request for a script,
# prepares it in the template (_prepare): the
# modules its nodes import (from a fixed list) are loaded, its top level is
# run — definitions and the WORKFLOW literal only, the generated script calls
# main under `if __name__ == "__main__"` — and the runtime's prepare_for_fork
# hooks do once what every execution would repeat (compiling code nodes), so
# a fork starts at main.
#
# Spares (spares.py: _make_spare): when the runner says an execution ended (a
# {"gone": [...]} message naming the spares it used or let go since), the
# template forks executions' W ahead of their requests, up to two in the
# runner's hands — each waits for its request on a socket — and hands the
# runner that socket with the three descriptors above ({"spare": W,
# "scripts": [...]}, the scripts W holds prepared).  The runner gives a
# request for one of those scripts to the spare itself: W gets the request
# and the execution's pipes, and neither the template nor a fork is left
# between the request and the workflow's first line.  Other requests come
# here and are served as below; the runner lets go of the spares that do not
# hold their script (it closes their descriptors: W ends, the template reaps
# it).
#
# The template itself never runs workflow code, so nothing an execution does
# (globals, sys.modules, environment, cwd, files, threads) can reach the next
# one: each starts from the same pristine fork.  It answers {"error": "..."}
# to a request it cannot serve; once the runner's end of the socket closes it
# serves no more, and exits when the last of its executions has ended.
# Stdlib only, Python 3.9+, Linux (pidfd_open: 5.3).
# ---------------------------------------------------------------------------
import os
import stat as _stat
import sys
import time
import _json
import _signal
import _socket
import marshal

# Preloaded for every execution: what this file and the runtime of any workflow use.  What only some
# node types import (http.client and urllib for `http_request` and `llm`, subprocess for
# `command` and `agent`, threading for loops and parallel nodes...) is imported here when a
# script that needs it first arrives (_NODE_MODULES, _prepare): every fork copies the page
# tables of all that is loaded and every exit tears them down, ~0.7 ms per execution for the
# full set, which a plain workflow should not pay.
import gc
import resource

# The memory file this source was read from (descriptor 4, through the link the runner made
# in this template's directory): read whole before it runs, held by nothing forked from here,
# and the link gone, so that the name this file's frames carry opens nothing.  (Only when
# started as the template: a test that loads this file has a descriptor 4 of its own.)
if len(sys.argv) == 1 and os.path.basename(sys.argv[0]) == "flowrun-warm-template":
    try:
        os.close(4)
    except OSError:
        pass
    try:
        if os.readlink(sys.argv[0]) == "/proc/self/fd/4":
            os.unlink(sys.argv[0])
    except OSError:
        pass

# What the runtime imports for each node type it runs (runtime/nodes/, runtime/core/70_http.py):
# preloaded once a script with such a node arrives.  Were this table to fall behind the runtime,
# an execution would import the missing module itself: slower, never wrong.  Not what only a
# failure needs: a failing code node imports `traceback` (and with `linecache` `tokenize`, `re`,
# `enum`: ~6 ms) itself, as it does cold; preloaded, that was ~6 ms of the first request's wait
# for its template and pages that every execution's fork mapped and its exit unmapped.
_HTTP_MODULES = ("base64", "email.utils", "http.client", "io", "socket", "urllib.parse",
                 "urllib.request", "zlib")
_NODE_MODULES = {
    "http_request": _HTTP_MODULES,
    "llm": _HTTP_MODULES,
    "agent": ("json", "re", "selectors", "signal", "subprocess"),
    "command": ("selectors", "subprocess"),
    "workflow": ("json", "subprocess"),
}
# Nodes side by side, for_each and repeat run in threads.
_THREAD_MODULES = ("threading",)

try:
    import ctypes
    _LIBC = ctypes.PyDLL(None, use_errno=True)
    _PRCTL = _LIBC.prctl
    _PRCTL.restype = ctypes.c_int
    _MADVISE = _LIBC.madvise
    _MADVISE.restype = ctypes.c_int
except Exception:
    _PRCTL = _MADVISE = None
try:
    _CLEARENV = _LIBC.clearenv  # glibc and musl have it; a libc without it costs only speed
except Exception:
    _CLEARENV = None
_MAX_FD = 65536


# Messages with the runner: JSON through the C accelerator and descriptors through `_socket`
# directly, as the runtime does (runtime/core/20_json.py).  `json` imports `re` and `enum`,
# `socket` imports `enum` and `selectors`, `signal` `enum` too: ~10 ms of a template's start,
# which a suite's first warm cases wait for, and pages every fork maps and every exit unmaps.
class _StrictJson:
    strict = True
    object_hook = object_pairs_hook = None
    parse_float = float
    parse_int = int

    @staticmethod
    def parse_constant(name):
        raise ValueError("%s is not JSON" % name)


try:
    _SCAN = _json.make_scanner(_StrictJson())
    _ENCODE = _json.make_encoder(None, None, _json.encode_basestring_ascii, None, ":", ",",
                                 False, False, False)
except (AttributeError, TypeError):  # pragma: no cover - an interpreter without them
    _SCAN = _ENCODE = None


def _loads(data):
    """A message of the runner's (serde_json's: strict JSON, UTF-8) as a value."""
    text = data.decode("utf-8")
    if _SCAN is None:  # pragma: no cover
        import json
        return json.loads(text)
    try:
        value, end = _SCAN(text, 0)
    except Exception:  # StopIteration; SystemError where json.decoder is not loaded (3.11)
        raise ValueError("a message that is not JSON") from None
    if text[end:].strip(" \t\n\r"):
        raise ValueError("a message with more than one JSON value")
    return value


def _dumps(value):
    """A message for the runner: ASCII JSON, as json.dumps(value, separators=(",", ":"))."""
    if _ENCODE is None:  # pragma: no cover
        import json
        return json.dumps(value).encode("ascii")
    return "".join(_ENCODE(value, 0)).encode("ascii")


def _send_fds(sock, data, fds):
    """One message with `fds` attached (SCM_RIGHTS: C ints; `array` would import `collections`)."""
    rights = b"".join(fd.to_bytes(4, sys.byteorder, signed=True) for fd in fds)
    sock.sendmsg([data], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, rights)])


def _recv_fds(sock, size, most):
    """One message and the descriptors attached to it, at most `most` of them."""
    data, ancillary, _flags, _addr = sock.recvmsg(size, _socket.CMSG_LEN(most * 4))
    fds = []
    for level, kind, payload in ancillary:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            fds.extend(int.from_bytes(payload[i:i + 4], sys.byteorder, signed=True)
                       for i in range(0, len(payload) - 3, 4))
    return data, fds


def _set_by_start():
    """What the interpreter set in its own environment as it started (PEP 538's LC_CTYPE, when
    the locale is C): a cold start of an execution would set the same (the variables that
    decide it are this template's key), so W sets it again over the execution's environment."""
    try:
        with open("/proc/self/environ", "rb") as f:
            given = set(f.read().split(b"\0"))
    except OSError:
        return []
    return [(k, v) for k, v in os.environb.items() if k + b"=" + v not in given]


_SET_BY_START = _set_by_start()
_PREPARED = {}  # script path -> (mtime_ns, size, (module, main)): see _prepare
_PREPARED_MAX = 16
_FUNCTION = type(lambda: None)


def _rename_function(value):
    if isinstance(value, _FUNCTION) and value.__module__ == "__flowrun_warm__":
        value.__module__ = "__main__"


def _modules_for(workflow):
    """The modules the runtime will import to run `workflow` (the script's WORKFLOW)."""
    names = set()
    nodes = workflow.get("nodes") or ()
    if (workflow.get("max_parallel") or 1) > 1:
        names.update(_THREAD_MODULES)
    for node in nodes:
        names.update(_NODE_MODULES.get(node.get("type"), ()))
        if node.get("for_each") is not None or node.get("repeat") is not None:
            names.update(_THREAD_MODULES)
    return sorted(names)


def _prepare(path):
    """The script as a module that has run up to its `main` (definitions and WORKFLOW only: the
    generated script calls main under `if __name__ == "__main__"`, and nothing else at its top
    level runs or reads anything of an execution), and what its nodes import loaded here;
    with the code of its last line, `main(WORKFLOW)`.  Cached per path, size and mtime; a fork
    gets its own copy of the module, so nothing one execution does to it reaches another."""
    st = os.stat(path)
    hit = _PREPARED.get(path)
    if hit is not None and hit[0] == st.st_mtime_ns and hit[1] == st.st_size:
        _PREPARED[path] = _PREPARED.pop(path)  # the latest used last: the oldest goes first
        return hit[2]
    with open(path, "rb") as f:
        data = f.read()
    if path.endswith(".pyc"):
        code = marshal.loads(data[16:])  # 16-byte header, then the marshalled code
    else:
        code = compile(data, path, "exec", dont_inherit=True)
    module = type(sys)("__flowrun_warm__")
    module.__file__ = path
    module.__builtins__ = __builtins__
    exec(code, module.__dict__)
    try:
        names = _modules_for(module.__dict__.get("WORKFLOW") or {})
    except Exception:
        names = ()  # a surprise in WORKFLOW: the execution imports what it needs itself
    for name in names:
        try:
            __import__(name)
        except Exception:
            pass  # the execution will say so itself
    # Work every execution of this script would repeat, done once here (runtime/core/80_main.py).
    hook = module.__dict__.get("prepare_for_fork")
    if callable(hook):
        try:
            hook(module.__dict__.get("WORKFLOW") or {})
        except Exception:
            pass
    # What a cold `python script` names __main__: its classes, their methods and its functions
    # say so too (an exception's module shows in a formatted traceback, pickle looks it up).
    module.__name__ = "__main__"
    for value in list(module.__dict__.values()):
        if isinstance(value, type) and value.__module__ == "__flowrun_warm__":
            value.__module__ = "__main__"
            for member in list(vars(value).values()):
                _rename_function(getattr(member, "__func__", member))
        else:
            _rename_function(value)
    # The script's last line, `main(WORKFLOW)`, as a code object of the script's own file and
    # line: W runs it, so its outermost frame is the one a cold run has (a stack printed by a
    # node, an uncaught exception's traceback).
    if hasattr(code, "co_lines"):  # 3.10+: without importing dis (~2 ms of a template's start)
        last = max(line for _, _, line in code.co_lines() if line is not None)
    else:
        import dis
        last = max(line for _, line in dis.findlinestarts(code) if line is not None)
    main = compile("\n" * (last - 1) + "main(WORKFLOW)\n", code.co_filename, "exec",
                   dont_inherit=True)
    _PREPARED.pop(path, None)
    if len(_PREPARED) >= _PREPARED_MAX:
        _PREPARED.pop(next(iter(_PREPARED)))
    _PREPARED[path] = (st.st_mtime_ns, st.st_size, (module, main))
    _PAGES[1] = _PAGES_DIR and os.path.join(_PAGES_DIR, "pages")  # learn them again (spares.py)
    _MAPS[:] = _writable_private() if _PAGES_DIR else []
    # Objects that exist now are never collected in an execution: a collection there would
    # write to (and so copy) every page that holds one. Unfrozen first, so that the cycles of a
    # module evicted above are collected here rather than kept for good.
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    return (module, main)


def _subreaper():
    """prctl(PR_SET_CHILD_SUBREAPER, 1) on this process; False where it cannot be done."""
    if _PRCTL is None:
        return False
    return _PRCTL(36, ctypes.c_ulong(1), ctypes.c_ulong(0), ctypes.c_ulong(0),
                  ctypes.c_ulong(0)) == 0


# What a node can change about its template, or a spare, from outside, by a system call on
# another process of its user — limits (prlimit), niceness (setpriority), CPUs
# (sched_setaffinity), scheduling policy (sched_setscheduler) — and every process forked from it
# would inherit.  _COLD: as the template started, which is how a cold interpreter starts (taken
# before it raises its own descriptor limit); _OWN: as it serves.  Set by _template_main.
_RLIMITS = [getattr(resource, n) for n in sorted(dir(resource)) if n.startswith("RLIMIT_")]
_COLD = None
_OWN = None


def _attrs():
    def get(f, *args):
        try:
            return f(*args)
        except (AttributeError, OSError, ValueError):
            return None

    return (tuple(get(resource.getrlimit, r) for r in _RLIMITS),
            get(os.getpriority, os.PRIO_PROCESS, 0),
            get(os.sched_getaffinity, 0),
            get(os.sched_getscheduler, 0))


def _restore(want):
    """Puts back what differs from `want` (an _attrs()); True when all of it is as wanted.  A
    hard limit lowered or a niceness raised cannot be undone without privilege (~6 us when
    nothing changed)."""
    now = _attrs()
    if want is None or now == want:
        return True
    limits, nice, cpus, policy = want
    for r, have, lim in zip(_RLIMITS, now[0], limits):
        if lim is not None and have != lim:
            try:
                resource.setrlimit(r, lim)
            except (OSError, ValueError):
                pass
    for ok, put in ((now[1] == nice, lambda: os.setpriority(os.PRIO_PROCESS, 0, nice)),
                    (now[2] == cpus, lambda: os.sched_setaffinity(0, cpus)),
                    (now[3] == policy, lambda: os.sched_setscheduler(0, policy, os.sched_param(0)))):
        if not ok:
            try:
                put()
            except (OSError, TypeError):
                pass
    return _attrs() == want


def _worker_setup(req, fds):
    """In W: the execution's descriptors (all others closed), limits, environment, directory and
    randomness; dumpable again, as a cold interpreter is (the template is not: see
    _template_main).  Its session and subreaper were set up as it was forked (_fork_execution)."""
    for target, fd in enumerate(fds[:3]):
        os.dup2(fd, target, inheritable=True)
    os.closerange(3, _MAX_FD)
    # Only now: while W held the template's socket and other executions' pipes, no process of
    # the user could open them through /proc/W/fd.
    if _PRCTL is not None:
        _PRCTL(4, ctypes.c_ulong(1), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))
    # A cold interpreter's limits and scheduling, not the template's (its descriptor limit is
    # raised) nor what a node set on a spare: what cannot be put back stays (see _answer).
    _restore(_COLD)
    limit = req.get("max_memory")
    if limit:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    _replace_environ(_read_env())
    for name, value in _SET_BY_START:
        os.environb[name] = value
    time.tzset()
    if req.get("cwd"):
        os.chdir(req["cwd"])
    # `random`, if a node type's modules brought it in (email.utils does), would otherwise give
    # every execution the template's sequence; not preloaded for its own sake: it imports
    # `warnings`, which changes how a warning is printed (with its source line) from a cold run.
    rnd = sys.modules.get("random")
    if rnd is not None:
        rnd.seed()
    sys.argv = [req["script"]]
    return req["script"]


def _read_env():
    """The execution's environment, which the runner writes first on W's stdin (its length in 8
    bytes, then JSON pairs; crates/executor/src/warm/spawn.rs): never in a request to the
    template, whose memory every later fork inherits, secrets and all."""
    size = int.from_bytes(_read_exactly(8), "big")
    return _loads(_read_exactly(size))


def _read_exactly(n):
    data = b""
    while len(data) < n:
        chunk = os.read(0, n - len(data))
        if not chunk:
            raise EOFError("stdin ended inside the environment")
        data += chunk
    return data


def _replace_environ(pairs):
    """os.environ and the C environment become exactly `pairs`, in their order (a name given
    twice keeps its first place and its last value, as dict() does).  os.environ.clear() would
    unsetenv the template's variables one at a time, each a scan of the C array: ~0.15 ms of
    W's start with a shell's forty.  clearenv drops them all at once; os.putenv checks each new
    one as os.environ would (a NUL or a '=' in a name raises).  Without ctypes: clear()."""
    if _CLEARENV is None:
        os.environ.clear()
        os.environ.update(dict(pairs))
        return
    _CLEARENV()
    data = os.environ._data
    data.clear()
    for name, value in pairs:
        os.putenv(name, value)
        data[os.environ.encodekey(name)] = os.environ.encodevalue(value)


def _start(req, fds):
    """In the template: forks W for the request.  Returns ("template", (W, the runner's three
    descriptors)) in the template and ("worker", ((module, main), script)) in W."""
    prepared = _prepare(req["script"])
    pid, ends = _fork_execution()
    if pid == 0:
        try:
            return ("worker", (prepared, _worker_setup(req, fds)))
        except BaseException:
            os._exit(70)
    return ("template", (pid, ends))

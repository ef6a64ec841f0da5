# ---------------------------------------------------------------------------
# flowrun warm template (runtime/warm/template.py)
#
# One long-lived interpreter per interpreter and requirement set, started by
# `flowrun serve` / `flowrun test` (crates/executor/src/warm/) with the same
# flags a cold execution gets (-I [-S] -u) and, as one `-c` source, this file
# followed by spares.py and serve.py (the request loop, and where W starts).  It
# imports what every execution's runtime needs, then waits on fd 3, a SOCK_SEQPACKET
# socket to the runner, for requests: one JSON message per execution with four
# descriptors attached (SCM_RIGHTS): the execution's stdin, stdout and stderr
# pipes and the read end of its lifeline.
#
# Per request it makes S so that the execution is NOT the template's child:
#
#   template ─clone(CLONE_PARENT)─► S ─fork─► W
#                    S's parent is the template's parent, the runner, exactly
#                    like a cold execution's shepherd is the runner's child.
#                    Where that system call is not available (no ctypes, an
#                    unknown architecture), through an intermediate process:
#                    template ─fork─► A ─fork─► S, A exits at once, and S is
#                    re-parented to the nearest child subreaper above the
#                    template, the runner (flowrun serve and flowrun test are
#                    subreapers).
#   S: setsid (pgid = sid = its pid), becomes a child subreaper (prctl, which
#      survives exec), blocks the signals the shepherd handles (they stay
#      pending across the exec), forks W, puts the execution's pipes on
#      0/1/2 and the lifeline on 3, closes everything else, then execs
#      `flowrun __shepherd 3 --adopt W -- python …`: the same Rust shepherd as
#      a cold start (lifeline watched without the GIL, signals passed on,
#      what is left killed when W ends), supervising W instead of spawning.
#   W: takes the template's signal mask back, dup2s the pipes onto 0/1/2,
#      closes every other descriptor, applies the memory limit, replaces the
#      environment (read first from its stdin, never sent to the template),
#      changes directory, reseeds random, and runs at once —
#      while S execs the shepherd: whatever W starts and orphans meanwhile is
#      S's child already, a W that ended first is reaped when the shepherd
#      starts.  Without prctl (no ctypes) S passes `--release 4`, a pipe on
#      which W waits for the shepherd's "g" before it runs anything.  W calls
#      the script's main as its last line would (this file's frames left by
#      returning), the script being `__main__`, then ends as a cold
#      interpreter would (threads joined, atexit, streams flushed, the exit
#      status of SystemExit) but with os._exit: freeing every preloaded module
#      at finalization costs more than the execution.
#
# The first request for a script prepares it in the template (_prepare): the
# modules its nodes import (from a fixed list) are loaded, its top level is
# run — definitions and the WORKFLOW literal only, the generated script calls
# main under `if __name__ == "__main__"` — and the runtime's prepare_for_fork
# hooks do once what every execution would repeat (compiling code nodes), so
# a fork starts at main.
#
# Spares (spares.py: _make_spare): when the runner says an execution ended (a
# {"gone": [...]} message naming the spares it used or let go since), the
# template makes executions' S and W ahead of their requests, up to two in the
# runner's hands — S execs the shepherd with `--spare` and waits for the
# execution's descriptors on a socket, W waits for its request on another —
# and hands both sockets to the runner ({"spare": S, "scripts": [...]}, the
# scripts W holds prepared).  The runner gives a request for one of those
# scripts to the spare itself: the shepherd gets the four descriptors, W the
# request and three of them, and neither the template nor a clone, fork or
# exec is left between the request and the workflow's first line.  Other
# requests come here and are served as below; the runner lets go of the
# spares that do not hold their script (it closes their sockets: the
# shepherd ends W and exits) and reaps them.
#
# The template itself never runs workflow code, so nothing an execution does
# (globals, sys.modules, environment, cwd, files, threads) can reach the
# next one: each starts from the same pristine fork.  The template answers
# {"pid": S} once S is the runner's child (at once, or once A is reaped), or
# {"error": "..."}; it exits when the runner's end of the socket closes.
# Stdlib only, Python 3.9+.
# ---------------------------------------------------------------------------
import os
import stat as _stat
import sys
import time
import _json
import socket
import marshal

# Preloaded for every execution: what this file and the runtime of any workflow use.  What only some
# node types import (http.client and urllib for `http_request` and `llm`, subprocess for
# `command` and `agent`, threading for loops and parallel nodes...) is imported here when a
# script that needs it first arrives (_NODE_MODULES, _prepare): every fork copies the page
# tables of all that is loaded and every exit tears them down, ~0.7 ms per execution for the
# full set, which a plain workflow should not pay.
import gc
import json
import resource
import signal

# What the runtime imports for each node type it runs (runtime/nodes/, runtime/core/70_http.py):
# preloaded once a script with such a node arrives.  Were this table to fall behind the runtime,
# an execution would import the missing module itself: slower, never wrong.
_HTTP_MODULES = ("base64", "email.utils", "http.client", "io", "socket", "urllib.parse",
                 "urllib.request", "zlib")
_NODE_MODULES = {
    "http_request": _HTTP_MODULES,
    "llm": _HTTP_MODULES,
    "agent": ("json", "re", "selectors", "signal", "subprocess"),
    "command": ("selectors", "subprocess"),
    "workflow": ("json", "subprocess"),
    # A failing code node's traceback (runtime/core/50_errors.py).
    "code": ("linecache", "traceback"),
}
# Nodes side by side, for_each and repeat run in threads.
_THREAD_MODULES = ("threading",)

try:
    import ctypes
    _LIBC = ctypes.PyDLL(None, use_errno=True)
    _PRCTL = _LIBC.prctl
    _PRCTL.restype = ctypes.c_int
    _SYSCALL = _LIBC.syscall
    _SYSCALL.restype = ctypes.c_long
    _MADVISE = _LIBC.madvise
    _MADVISE.restype = ctypes.c_int
except Exception:
    _SYSCALL = _PRCTL = _MADVISE = None
try:
    _CLEARENV = _LIBC.clearenv  # glibc and musl have it; a libc without it costs only speed
except Exception:
    _CLEARENV = None
# clone's number; its first argument (the flags) is the only one used, the rest are null.  On
# another architecture S is made through an intermediate process (prctl works everywhere).
_SYS_CLONE = {"x86_64": 56, "aarch64": 220, "riscv64": 220}.get(os.uname().machine)
_CLONE_PARENT = 0x00008000
# The signals the shepherd handles (crates/executor/src/shepherd.rs, `handled`).
_SHEPHERD_SIGNALS = (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT,
                     signal.SIGUSR1)

_MAX_FD = 65536
_PREPARED = {}  # script path -> (mtime_ns, size, (module, main)): see _prepare
_PREPARED_MAX = 16
# (shepherd, program, args) of the last request: what a spare is made with.
_LAST = None
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


def _high(fd):
    """A copy of fd at 10 or above, so moving descriptors onto 0..4 never overwrites one."""
    import fcntl
    return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)


def _shepherd_side(req, fds, sock):
    """In S (the future shepherd).  Returns only in W, with what W must run."""
    os.setsid()
    os.close(sock.detach())
    # Until the shepherd is in charge, what it handles waits: blocked here, pending across the
    # exec, read from its signalfd once it starts (a stop that comes this early ends the tree
    # through the shepherd rather than ending S alone). W takes the template's mask back.
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, _SHEPHERD_SIGNALS)
    # S becomes the subreaper before W exists (the attribute survives exec): then W runs at
    # once, while S execs the shepherd, and whatever W starts and orphans in the meantime is
    # S's child all the same; the shepherd reaps a W that ended before it was up, and the
    # lifeline and the runner's signals wait in their descriptor and S's group.  Without
    # prctl, W waits for the shepherd's "g" on a release pipe.
    released = _subreaper()
    rel_r, rel_w = (None, None) if released else os.pipe()
    worker = os.fork()
    if worker == 0:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        if released:
            return _worker_setup(req, fds, None)
        os.close(rel_w)
        # Prepared while the shepherd starts (nothing of the workflow runs before the "g").
        script = _worker_setup(req, fds, rel_r)
        go = os.read(rel_r, 1)
        if go != b"g":
            os._exit(70)  # the shepherd never took over: run nothing
        os.close(rel_r)
        return script
    extra = []
    if not released:
        os.close(rel_r)
        extra = [rel_w]
    high = [_high(fd) for fd in list(fds) + extra]
    for target, fd in enumerate(high):
        os.dup2(fd, target, inheritable=True)
    os.closerange(len(high), _MAX_FD)
    shepherd = req["shepherd"]
    argv = [shepherd, "__shepherd", "3", "--adopt", str(worker)]
    if not released:
        argv += ["--release", "4"]
    argv += ["--", req["program"]] + list(req["args"])
    try:
        # The shepherd adopts W and starts nothing: it needs no environment.
        os.execve(shepherd, argv, {})
    finally:
        # No shepherd (its binary gone, say): W may be running already, so do its last duty
        # before going — end the group and everything orphaned to S, the subreaper.
        _end_tree()
        os._exit(127)


def _end_tree():
    """Kills every child S has or is given (W first; what W started, as it is orphaned to S, the
    subreaper), until none is left."""
    children = "/proc/self/task/%d/children" % os.getpid()
    for _ in range(1000):
        try:
            with open(children) as f:
                pids = [int(p) for p in f.read().split()]
        except (OSError, ValueError):
            pids = []
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        except ChildProcessError:
            if not pids:
                return
        time.sleep(0.001)


def _subreaper():
    """prctl(PR_SET_CHILD_SUBREAPER, 1) on this process; False where it cannot be done."""
    if _PRCTL is None:
        return False
    return _PRCTL(36, ctypes.c_ulong(1), ctypes.c_ulong(0), ctypes.c_ulong(0),
                  ctypes.c_ulong(0)) == 0


def _worker_setup(req, fds, keep):
    """In W: the execution's descriptors (all others closed but `keep`, the release pipe, if
    any), limits, environment, directory and randomness; dumpable again, as a cold interpreter
    is (the template is not: see _template_main)."""
    if _PRCTL is not None:
        _PRCTL(4, ctypes.c_ulong(1), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))
    for target, fd in enumerate(fds[:3]):
        os.dup2(fd, target, inheritable=True)
    if keep is None:
        os.closerange(3, _MAX_FD)
    else:
        os.closerange(3, keep)
        os.closerange(keep + 1, _MAX_FD)
    limit = req.get("max_memory")
    if limit:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    _replace_environ(_read_env())
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
    return json.loads(_read_exactly(size).decode("utf-8"))


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


def _clone_parent():
    """clone(CLONE_PARENT | SIGCHLD): a copy of this process whose parent is the template's
    parent (the runner), made directly instead of through an intermediate process that exits.
    Returns 0 in the copy, its pid here, or None when this is not available (no ctypes, an
    unknown architecture, a refusing kernel or sandbox): then the intermediate process it is.

    A raw system call, not fork(): neither the interpreter's nor libc's fork handlers run, which
    is sound only because the template is single-threaded and holds no lock here, and because the
    copy (S) only makes system calls, forks W with os.fork (which sets everything up properly for
    W) and execs the shepherd.  The GIL stays held across the call (PyDLL)."""
    if _SYSCALL is None or _SYS_CLONE is None:
        return None
    pid = _SYSCALL(_SYS_CLONE, ctypes.c_ulong(_CLONE_PARENT | signal.SIGCHLD), None, None,
                   None, None)
    return pid if pid >= 0 else None


def _in_s(prepared, req, fds, sock):
    """In S, however it was made: returns only in W, with what W runs; S itself execs the
    shepherd or ends, never back into the template's loop."""
    try:
        return ("worker", (prepared, _shepherd_side(req, fds, sock)))
    except SystemExit:
        raise
    except BaseException:
        os._exit(70)


def _start(req, fds, sock):
    """In the template: makes S (directly, or through A) and through it W.  Returns ("template",
    pid of S) in the template and ("worker", ((module, main), script)) in W."""
    global _LAST
    prepared = _prepare(req["script"])
    # What a spare's shepherd is exec'd with: the interpreter and its flags (not the script,
    # which is the request's).
    _LAST = (req["shepherd"], req["program"], list(req["args"])[:-1])
    s = _clone_parent()
    if s == 0:
        return _in_s(prepared, req, fds, sock)
    if s is not None:
        return ("template", s)
    r, w = os.pipe()
    a = os.fork()
    if a == 0:
        os.close(r)
        s = -1
        try:
            s = os.fork()
        except BaseException:
            os._exit(71)
        if s == 0:
            os.close(w)
            return _in_s(prepared, req, fds, sock)
        os.write(w, str(s).encode("ascii"))
        os._exit(0)
    os.close(w)
    data = b""
    while True:
        chunk = os.read(r, 32)
        if not chunk:
            break
        data += chunk
    os.close(r)
    os.waitpid(a, 0)
    if not data:
        raise OSError("the intermediate process did not report the execution's pid")
    return ("template", int(data))

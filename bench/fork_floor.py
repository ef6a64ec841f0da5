"""The least a warm execution could cost on this machine right now (standard library only; run
with the real interpreter, -I -S):

  fork_floor.py N OUT.json [SCRIPT TRIGGER.json [SHEPHERD]]

An interpreter with what a warm template always has loaded (json, socket, signal, resource,
ctypes, ...) forks N times, one after another; each child starts a session, writes a line
to a pipe and exits; the parent reads the line and reaps the child ("fork").

With a generated script (`flowrun codegen`), it is first prepared as a warm template prepares
it (loaded up to its `main`, its code nodes compiled, its objects frozen), and each child then
runs the workflow on TRIGGER as its execution would: the trigger on stdin, its output on a
pipe the parent reads to the end, then exits ("run"). No shepherd, no runner, no store, no
HTTP: a warm execution through `flowrun serve` does all of this and more, so its time is never
below this one.

With the shepherd binary (`target/release/flowrun-shepherd`) too, each case is made the way a
warm execution's processes are (runtime/warm/spares.py): a copy of this interpreter (S) starts
a session, becomes a subreaper, forks the one that runs the workflow (W) and execs the
shepherd over itself, which supervises W, reaps it and exits ("shepherd"). What it adds to
"run" is the price of a shepherd per execution, whoever implements it.

Measured in the same run as the rows it sits under, it says how fast the machine is at the
moment (a VM's speed drifts by 1.5x within an hour), which an absolute target in milliseconds
cannot. Writes {"fork_ms": [...], "run_ms": [...], "shepherd_ms": [...], "cpu_ms": {...}}
(cpu_ms: the children's CPU, user and system, a case) and prints medians and p99s.
"""

import ctypes
import gc
import json
import marshal  # noqa: F401  (loaded, as in a template: its pages are the child's to copy)
import os
import resource  # noqa: F401
import signal  # noqa: F401
import socket  # noqa: F401
import statistics
import sys
import time

_PR_SET_CHILD_SUBREAPER = 36


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))]


def fork_once(_case):
    r, w = os.pipe()
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            os.write(w, b"done\n")
        finally:
            os._exit(0)
    os.close(w)
    os.read(r, 16)
    os.waitpid(pid, 0)
    dt = (time.perf_counter() - t0) * 1000.0
    os.close(r)
    return dt


def prepare(path):
    """The script as the warm template holds it (runtime/warm/template.py, _prepare)."""
    with open(path, "rb") as f:
        code = compile(f.read(), path, "exec", dont_inherit=True)
    module = type(sys)("__flowrun_warm__")
    module.__file__ = path
    module.__builtins__ = __builtins__
    exec(code, module.__dict__)
    module.__dict__["prepare_for_fork"](module.__dict__["WORKFLOW"])
    gc.collect()
    gc.freeze()
    return module


class Case:
    """One execution of the prepared workflow, with or without a shepherd around it."""

    def __init__(self, module, trigger, shepherd=None):
        self.module, self.trigger, self.shepherd = module, trigger, shepherd
        self.prctl = ctypes.CDLL(None, use_errno=True).prctl if shepherd else None

    def _run(self, stdin, out):
        """In W: the workflow, then exit (as a warm W ends: os._exit after flushing)."""
        try:
            os.dup2(stdin, 0)
            os.dup2(out, 1)
            os.dup2(out, 2)
            os.closerange(3, 256)
            os.environ["FLOWRUN_NONCE"] = "0123456789abcdef"
            self.module.main(self.module.WORKFLOW)
        except SystemExit:
            pass
        finally:
            sys.stdout.flush()
            os._exit(0)

    def _s(self, stdin, out, lifeline):
        """In S: what a spare's S does before its exec (runtime/warm/spares.py, _spare_s)."""
        try:
            os.setsid()
            self.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
            worker = os.fork()
            if worker == 0:
                self._run(stdin, out)
            os.dup2(lifeline, 3, inheritable=True)
            os.closerange(4, 256)
            argv = [self.shepherd, "__shepherd", "3", "--adopt", str(worker), "--",
                    sys.executable]
            os.execve(self.shepherd, argv, {})
        finally:
            os._exit(127)

    def __call__(self, _case):
        (ri, wi), (ro, wo), (lr, lw) = os.pipe(), os.pipe(), os.pipe()
        t0 = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            if self.shepherd:
                self._s(ri, wo, lr)
            os.setsid()
            self._run(ri, wo)
        for fd in (ri, wo, lr):
            os.close(fd)
        os.write(wi, self.trigger)
        os.close(wi)
        out = b""
        while True:  # a few KB: the pipe never fills up
            chunk = os.read(ro, 65536)
            if not chunk:
                break
            out += chunk
        _, status = os.waitpid(pid, 0)
        dt = (time.perf_counter() - t0) * 1000.0
        os.close(ro)
        os.close(lw)  # the lifeline, held until the shepherd is gone
        result = out.partition(b":result-start\n")[2]
        if status != 0 or not result.startswith(b'{"status":"success"'):
            sys.exit("the workflow did not succeed (status %d): %r" % (status, out[-300:]))
        return dt


def measure(n, case):
    for k in range(5):
        case(k)
    t = os.times()
    cpu0 = t.children_user + t.children_system
    times = [case(k) for k in range(n)]
    t = os.times()
    return times, (t.children_user + t.children_system - cpu0) * 1000.0 / n


def main():
    n, out = int(sys.argv[1]), sys.argv[2]
    kinds = [("fork", "fork and exit", fork_once)]
    if len(sys.argv) > 4:
        module = prepare(sys.argv[3])
        with open(sys.argv[4], "rb") as f:
            trigger = f.read()
        kinds.append(("run", "fork and run the workflow", Case(module, trigger)))
        if len(sys.argv) > 5:
            kinds.append(("shepherd", "the same under a shepherd of its own",
                          Case(module, trigger, sys.argv[5])))
    result, parts = {"cpu_ms": {}}, []
    for key, what, case in kinds:
        times, cpu = measure(n, case)
        result[key + "_ms"], result["cpu_ms"][key] = times, cpu
        parts.append("%s: median %.2f ms, p99 %.2f ms, %.2f ms of CPU"
                     % (what, statistics.median(times), pct(times, 99), cpu))
    with open(out, "w") as f:
        json.dump(result, f)
    print("; ".join(parts))


main()

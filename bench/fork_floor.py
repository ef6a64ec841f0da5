"""The least a warm execution could cost on this machine right now (standard library only; run
with the real interpreter, -I -S):

  fork_floor.py N OUT.json [SCRIPT TRIGGER.json]

An interpreter with what a warm template always has loaded (json, socket, signal, resource,
ctypes, ...) forks N times, one after another; each child starts a session, writes a line
to a pipe and exits; the parent reads the line and reaps the child ("fork").

With a generated script (`flowrun codegen`), it is first prepared as a warm template prepares
it (loaded up to its `main`, its code nodes compiled, its objects frozen), and each child then
runs the workflow on TRIGGER as its execution would: the trigger on stdin, its output on a
pipe the parent reads to the end, then exits ("run"). No shepherd, no runner, no store, no
HTTP: a warm execution through `flowrun serve` does all of this and more, so its time is never
below this one.

The template does what this loop does, and more: it also watches each execution's lifeline
and pidfd in a poll, ends what the execution leaves and reports its end
(runtime/warm/supervise.py), and the runner checks and records it.

Measured in the same run as the rows it sits under, it says how fast the machine is at the
moment (a VM's speed drifts by 1.5x within an hour), which an absolute target in milliseconds
cannot. Writes {"fork_ms": [...], "run_ms": [...], "cpu_ms": {...}}
(cpu_ms: the children's CPU, user and system, a case) and prints medians and p99s.
"""

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
    """One execution of the prepared workflow."""

    def __init__(self, module, trigger):
        self.module, self.trigger = module, trigger

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

    def __call__(self, _case):
        (ri, wi), (ro, wo) = os.pipe(), os.pipe()
        t0 = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            os.setsid()
            self._run(ri, wo)
        for fd in (ri, wo):
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

"""The least a warm execution could cost on this machine right now (standard library only; run
with the real interpreter, -I -S):

  fork_floor.py N OUT.json [SCRIPT TRIGGER.json]

An interpreter with what a warm template always has loaded (json, socket, signal, resource,
ctypes, ...) forks N times, one after another; each child starts a session, writes a line
to a pipe and exits; the parent reads the line and reaps the child ("fork_ms").

With a generated script (`flowrun codegen`), it is first prepared as a warm template prepares
it (loaded up to its `main`, its code nodes compiled, its objects frozen), and each child then
runs the workflow on TRIGGER as its execution would: the trigger on stdin, stdout and stderr
to pipes the parent reads to the end, then exits ("run_ms"). No shepherd, no runner, no
store, no HTTP: a warm execution through `flowrun serve` does all of this and more, so its
time is never below this one. Measured in the same run as the serve rows, it says how fast
the machine is at the moment (a VM's speed drifts by 1.5x within an hour), which an absolute
target in milliseconds cannot. Writes {"fork_ms": [...], "run_ms": [...]} and prints medians
and 99th percentiles.
"""

import ctypes  # noqa: F401  (loaded, as in a template: its pages are the child's to copy)
import gc  # noqa: F401
import json
import marshal  # noqa: F401
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


def once():
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


def run_once(module, trigger):
    (ri, wi), (ro, wo), (re_, we) = os.pipe(), os.pipe(), os.pipe()
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            for fd, target in ((ri, 0), (wo, 1), (we, 2)):
                os.dup2(fd, target)
            os.closerange(3, 256)
            os.environ["FLOWRUN_NONCE"] = "0123456789abcdef"
            module.main(module.WORKFLOW)
        except SystemExit:
            pass
        finally:
            sys.stdout.flush()
            os._exit(0)
    for fd in (ri, wo, we):
        os.close(fd)
    os.write(wi, trigger)
    os.close(wi)
    out = b""
    while True:  # the output is a few KB: the pipes never fill up
        chunk = os.read(ro, 65536)
        if not chunk:
            break
        out += chunk
    os.read(re_, 65536)
    os.waitpid(pid, 0)
    dt = (time.perf_counter() - t0) * 1000.0
    os.close(ro)
    os.close(re_)
    result = out.partition(b":result-start\n")[2]
    if b":result-end" not in out or not result.startswith(b'{"status":"success"'):
        sys.exit("the workflow did not succeed: %r" % out[-300:])
    return dt


def main():
    n, out = int(sys.argv[1]), sys.argv[2]
    for _ in range(5):
        once()
    result = {"fork_ms": [once() for _ in range(n)]}
    line = "fork and exit: median %.2f ms, p99 %.2f ms" % (
        statistics.median(result["fork_ms"]), pct(result["fork_ms"], 99))
    if len(sys.argv) > 4:
        module = prepare(sys.argv[3])
        with open(sys.argv[4], "rb") as f:
            trigger = f.read()
        for _ in range(5):
            run_once(module, trigger)
        result["run_ms"] = [run_once(module, trigger) for _ in range(n)]
        line += "; fork and run the workflow: median %.2f ms, p99 %.2f ms" % (
            statistics.median(result["run_ms"]), pct(result["run_ms"], 99))
    with open(out, "w") as f:
        json.dump(result, f)
    print(line)


main()

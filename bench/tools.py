"""Helpers for bench/run.sh (standard library only; run with the real interpreter, -I -S).

  tools.py hyperfine OUT.json ROUND.json...   merge interleaved hyperfine rounds, print medians,
                                              ratios and PASS/MISS against the targets
  tools.py peak-rss N STDIN -- CMD...         run CMD N times with STDIN on stdin, polling the
                                              VmHWM of that process itself (not its children)
  tools.py divan OUT.json DIVAN.txt...        parse divan's tables, print medians against targets
  tools.py count-success                      count a `flowrun history --json` array on stdin
  tools.py alternate N STDIN OUT.json -- A... -- B...
                                              run commands A and B one after the other, N times
                                              each (A, B, A, B...), STDIN on stdin, output
                                              discarded; write {"a": [s...], "b": [s...]}
"""

import json
import os
import re
import statistics
import subprocess
import sys
import time


def fmt_ms(s):
    return "%.1f ms" % (s * 1000)


def verdict(ok):
    return "PASS" if ok else "MISS"


def hyperfine(out, rounds):
    times = {}
    order = []
    for path in rounds:
        with open(path) as f:
            for r in json.load(f)["results"]:
                name = r["command"]
                if name not in times:
                    times[name] = []
                    order.append(name)
                times[name].extend(r["times"])
    summary = {}
    print("  %-10s %9s %9s %9s %9s %6s" % ("command", "median", "mean", "min", "stddev", "runs"))
    for name in order:
        t = times[name]
        s = {
            "median": statistics.median(t),
            "mean": statistics.fmean(t),
            "min": min(t),
            "stddev": statistics.stdev(t) if len(t) > 1 else 0.0,
            "runs": len(t),
            "times": t,
        }
        summary[name] = s
        print("  %-10s %9s %9s %9s %9s %6d" % (
            name, fmt_ms(s["median"]), fmt_ms(s["mean"]), fmt_ms(s["min"]), fmt_ms(s["stddev"]), s["runs"]))
    flow = summary["flowrun"]["median"]
    base = summary["baseline"]["median"]
    naive = summary["naive"]["median"]
    r1 = flow / base
    r2 = naive / flow
    print("  flowrun / baseline = %.2f   (target <= 1.3)  %s" % (r1, verdict(r1 <= 1.3)))
    print("  naive / flowrun    = %.1fx  (target >= 5x)   %s" % (r2, verdict(r2 >= 5)))
    print("  flowrun - baseline = %.1f ms of runner overhead per execution" % ((flow - base) * 1000))
    with open(out, "w") as f:
        json.dump({"commands": summary, "flowrun_over_baseline": r1, "naive_over_flowrun": r2}, f, indent=1)


def vmhwm_kib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def peak_rss(n, stdin_path, cmd):
    peaks = []
    walls = []
    for _ in range(n):
        with open(stdin_path, "rb") as stdin:
            start = time.monotonic()
            p = subprocess.Popen(cmd, stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            peak = 0
            while p.poll() is None:
                v = vmhwm_kib(p.pid)
                if v is not None and v > peak:
                    peak = v
                time.sleep(0.0002)
            walls.append(time.monotonic() - start)
        if p.returncode != 0:
            print("  command failed with exit code %d: %s" % (p.returncode, " ".join(cmd)))
            sys.exit(1)
        peaks.append(peak)
    mib = [k / 1024 for k in peaks]
    print(json.dumps({
        "runs": n,
        "median_mib": round(statistics.median(mib), 1),
        "max_mib": round(max(mib), 1),
        "min_mib": round(min(mib), 1),
        "median_wall_s": round(statistics.median(walls), 3),
    }))


UNITS = {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}
SCALE = {"": 1.0, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
VALUE = re.compile(r"(\d+(?:\.\d+)?)\s*(ns|µs|us|ms|s|([KMGT]?)(B/s|item/s))(?=\s|$)")
NAME = re.compile(r"^([│ ]*)[├╰]─ (\S+)")

# name -> (label, kind, target, comparison)
TARGETS = {
    "protocol/framer_100mb_64k_chunks": ("Framer, 100 MB in 64 KiB chunks", "MB/s", 500, ">="),
    "protocol/framer_100mb_1k_pieces": ("Framer, same, 1 KiB pieces (as the executor)", "MB/s", 500, ">="),
    "codegen/codegen_500_nodes": ("codegen of 500 nodes (parse+validate+render)", "ms", 10, "<="),
    "codegen/steps/parse": ("  of which parse", "ms", None, None),
    "codegen/steps/validate_and_plan": ("  of which validate + plan", "ms", None, None),
    "codegen/steps/render_script": ("  of which render", "ms", None, None),
    "store/writes/batched_100": ("store: node rows, 100 per apply", "rows/s", 50000, ">="),
    "store/writes/recorder_pattern_100": ("store: node rows, 2 applies per node (info)", "rows/s", None, None),
    "store/history/newest_50_of_100k": ("history: newest 50 of 100k", "ms", 20, "<="),
    "store/history/newest_50_of_one_workflow": ("history --workflow: newest 50", "ms", 20, "<="),
    "store/history/newest_50_failed": ("history --status error: newest 50", "ms", 20, "<="),
}


def parse_divan(text):
    """{full name: {"median_s": .., "median_rate": (value, unit) or None}}"""
    results = {}
    stack = []
    suite = None
    last = None
    for line in text.splitlines():
        if not line.strip() or line.startswith("Timer precision"):
            continue
        if not line.startswith(("│", "├", "╰", " ")):
            suite = line.split()[0]
            stack = []
            continue
        m = NAME.match(line)
        values = VALUE.findall(line)
        if m:
            depth = len(m.group(1)) // 3
            stack = stack[:depth] + [m.group(2)]
            if values:
                name = "/".join([suite] + stack)
                v, unit = values[2][0], values[2][1]
                results[name] = {"median_s": float(v) * UNITS[unit], "rate": None}
                last = name
            else:
                last = None
        elif last and values and values[0][3]:
            v, prefix, unit = values[2][0], values[2][2], values[2][3]
            results[last]["rate"] = float(v) * SCALE[prefix]
            results[last]["rate_unit"] = unit
    return results


def divan(out, files):
    results = {}
    for path in files:
        with open(path) as f:
            results.update(parse_divan(f.read()))
    print("  %-48s %14s %14s  %s" % ("benchmark (median)", "measured", "target", ""))
    for name, (label, kind, target, cmp) in TARGETS.items():
        r = results.get(name)
        if r is None:
            print("  %-48s %14s" % (label, "(not run)"))
            continue
        if kind == "ms":
            value = r["median_s"] * 1000
            shown = "%.2f ms" % value
        elif kind == "MB/s":
            value = (r["rate"] or 0) / 1e6
            shown = "%.0f MB/s" % value
        else:
            value = r["rate"] or 0
            shown = "%.0f /s" % value
        r["value"] = value
        r["unit"] = kind
        if target is None:
            print("  %-48s %14s" % (label, shown))
            continue
        ok = value >= target if cmp == ">=" else value <= target
        r["target"] = "%s %s %s" % (cmp, target, kind)
        r["pass"] = ok
        print("  %-48s %14s %14s  %s" % (label, shown, "%s %s %s" % ("≥" if cmp == ">=" else "≤", target, kind), verdict(ok)))
    with open(out, "w") as f:
        json.dump(results, f, indent=1)


def alternate(n, stdin_path, out, a, b):
    """On a machine whose load shifts (a CPU hog's share moves with the scheduler's state), runs
    of one command after all runs of another see different machines; alternating them one by
    one makes both see the same."""
    times = {"a": [], "b": []}
    for i in range(n + 2):
        for key, argv in (("a", a), ("b", b)):
            with open(stdin_path, "rb") as stdin:
                t0 = time.perf_counter()
                subprocess.run(argv, stdin=stdin, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, check=True)
                dt = time.perf_counter() - t0
            if i >= 2:  # two unmeasured rounds to warm the caches
                times[key].append(dt)
    with open(out, "w") as f:
        json.dump(times, f)


def count_success():
    rows = json.load(sys.stdin)
    print(sum(1 for r in rows if r.get("status") == "success"), len(rows))


def main():
    cmd = sys.argv[1]
    if cmd == "hyperfine":
        hyperfine(sys.argv[2], sys.argv[3:])
    elif cmd == "peak-rss":
        n, stdin_path = int(sys.argv[2]), sys.argv[3]
        assert sys.argv[4] == "--"
        peak_rss(n, stdin_path, sys.argv[5:])
    elif cmd == "divan":
        divan(sys.argv[2], sys.argv[3:])
    elif cmd == "count-success":
        count_success()
    elif cmd == "alternate":
        n, stdin_path, out = int(sys.argv[2]), sys.argv[3], sys.argv[4]
        rest = sys.argv[5:]
        assert rest[0] == "--" and rest.count("--") == 2, "alternate N STDIN OUT -- A... -- B..."
        cut = rest.index("--", 1)
        alternate(n, stdin_path, out, rest[1:cut], rest[cut + 1:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()

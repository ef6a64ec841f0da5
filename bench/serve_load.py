"""Executions through a running `flowrun serve`, one after another on one kept-alive connection
(standard library only; run with the real interpreter, -I -S).

  serve_load.py URL TOKEN WORKFLOW N TRIGGER.json OUT.json

POSTs /api/workflows/WORKFLOW/executions?wait=true N times (after 5 unmeasured ones) and writes
{"http_ms": [...], "exec_ms": [...], "start": {"warm": k, "cold": m}}: the end-to-end time of
each request, and the execution's own `duration_ms` (from its start as the runner records it —
spawning the child included — to its end). Prints the medians and 99th percentiles.
"""

import http.client
import json
import statistics
import sys
import time
import urllib.parse


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))]


def main():
    url, token, workflow, n, trigger_path, out = sys.argv[1:7]
    n = int(n)
    with open(trigger_path) as f:
        body = json.dumps({"trigger": json.load(f)})
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    headers = {"Authorization": "Bearer " + token, "Content-Type": "application/json"}
    path = "/api/workflows/%s/executions?wait=true" % workflow
    http_ms, exec_ms, starts = [], [], {}
    for i in range(n + 5):
        t0 = time.perf_counter()
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        dt = (time.perf_counter() - t0) * 1000.0
        rec = json.loads(data)
        if resp.status != 200 or rec.get("status") != "success":
            sys.exit("execution failed: %s %s" % (resp.status, data[:300]))
        if i < 5:
            continue
        http_ms.append(dt)
        exec_ms.append(rec["duration_ms"])
        starts[rec.get("start")] = starts.get(rec.get("start"), 0) + 1
    with open(out, "w") as f:
        json.dump({"http_ms": http_ms, "exec_ms": exec_ms, "start": starts}, f)
    print("median %.2f ms, p99 %.2f ms end to end; execution %.2f ms median, %.2f ms p99; starts %s"
          % (statistics.median(http_ms), pct(http_ms, 99), statistics.median(exec_ms),
             pct(exec_ms, 99), json.dumps(starts, sort_keys=True)))


main()

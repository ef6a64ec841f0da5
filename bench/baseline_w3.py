# The three steps of bench/w3.json written by hand: what the same work costs in plain Python,
# read from stdin and printed as JSON, with no runner around it.
import json
import sys

trigger = json.loads(sys.stdin.read() or "{}")
trigger.setdefault("name", "bench")
trigger.setdefault("n", 10)
prepare = {"name": trigger["name"], "n": trigger["n"]}
n = prepare["n"]
compute = {"squares": [i * i for i in range(n)], "total": sum(i * i for i in range(n))}
answer = {"greeting": "hello %s" % prepare["name"], "total": compute["total"]}
print(json.dumps({"prepare": prepare, "compute": compute, "answer": answer}))

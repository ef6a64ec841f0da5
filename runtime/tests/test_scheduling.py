"""Scheduling: retry, on_error, skip spreading, guards, pinned.
Run: python3 -m unittest discover -s runtime/tests"""
import os
import tempfile
import unittest

from harness import T, node, ref, run, workflow

COUNTING = (
    "path = trigger['counter']\n"
    "n = int(open(path).read() or 0) + 1 if __import__('os').path.exists(path) else 1\n"
    "open(path, 'w').write(str(n))\n"
    "if n < 3:\n"
    "    raise RuntimeError('attempt %d failed' % n)\n"
    "return {'attempts': n}\n"
)


class Retry(unittest.TestCase):
    def test_succeeds_on_third_attempt(self):
        with tempfile.TemporaryDirectory() as d:
            counter = os.path.join(d, "n")
            wf = workflow([node("flaky", "code", {"code": COUNTING},
                                retry={"max_attempts": 4, "backoff_ms": 10, "factor": 3})])
            r = run(wf, {"counter": counter})
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual([e["attempt"] for e in r.starts("flaky")], [1, 2, 3])
        ends = r.ends("flaky")
        self.assertEqual([e["status"] for e in ends], ["error", "error", "success"])
        self.assertEqual([e.get("retrying") for e in ends], [True, True, None])
        self.assertEqual([e.get("retry_in_ms") for e in ends], [10, 30, None])
        self.assertEqual(ends[0]["error"]["message"], "attempt 1 failed")
        self.assertEqual(ends[2]["output"], {"attempts": 3})
        self.assertEqual(ends[2]["attempt"], 3)
        # the retry waits happened between attempts
        self.assertGreaterEqual(r.starts("flaky")[2]["ts"] - r.starts("flaky")[0]["ts"], 40)
        self.assertEqual(r.result["nodes"], [
            {"id": "flaky", "status": "success", "attempt": 3, "duration_ms": ends[2]["duration_ms"]}])

    def test_exhausted_retries_fail(self):
        wf = workflow([node("f", "code", {"code": "raise ValueError('no')"},
                            retry={"max_attempts": 2, "backoff_ms": 0, "factor": 2.0})])
        r = run(wf)
        self.assertEqual(r.returncode, 1)
        ends = r.ends("f")
        self.assertEqual(len(ends), 2)
        self.assertTrue(ends[0]["retrying"])
        self.assertEqual(ends[0]["retry_in_ms"], 0)
        self.assertNotIn("retrying", ends[1])
        self.assertEqual(r.result["error"]["node"], "f")
        self.assertEqual(r.result["error"]["type"], "ValueError")


class UnknownType(unittest.TestCase):
    def test_missing_handler_fails_the_node(self):
        r = run(workflow([node("x", "no_such_type", {})]))
        self.assertEqual(r.returncode, 1)
        self.assertIn("no handler for node type 'no_such_type'", r.end("x")["error"]["message"])


class OnError(unittest.TestCase):
    def test_continue_runs_downstream_which_sees_the_error(self):
        wf = workflow([
            node("ok", "set", {"fields": {"v": 1}}),
            node("bad", "code", {"code": "return 1/0"}, deps=["ok"], on_error="continue"),
            node("after", "code", {"code": "e = nodes['bad']\nreturn [e['status'], e['output'], e['error']['type']]"},
                 deps=["bad"]),
            node("tpl", "set", {"fields": {"v": T(ref("nodes.bad.output"))}}, deps=["bad"]),
        ])
        r = run(wf)
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(r.result["status"], "success")
        self.assertIsNone(r.result["error"])
        self.assertEqual(r.end("bad")["status"], "error")
        self.assertEqual(r.output("after"), ["error", None, "ZeroDivisionError"])
        self.assertEqual(r.output("tpl"), {"v": None})
        self.assertEqual(r.result["output"], {"v": None})

    def test_reading_into_failed_node_explains(self):
        wf = workflow([
            node("bad", "code", {"code": "raise KeyError('k')"}, on_error="continue"),
            node("use", "set", {"fields": {"v": T(ref("nodes.bad.output.x"))}}, deps=["bad"]),
        ])
        r = run(wf)
        msg = r.end("use")["error"]["message"]
        self.assertIn("it is null (node bad has status error: KeyError", msg)

    def test_stop_ends_the_run(self):
        wf = workflow([
            node("a", "set", {"fields": {"v": 1}}),
            node("b", "code", {"code": "raise RuntimeError('boom')"}, deps=["a"]),
            node("c", "set", {"fields": {"v": 2}}, deps=["b"]),
            node("d", "set", {"fields": {"v": 3}}),
        ])
        r = run(wf)
        self.assertEqual(r.returncode, 1)
        self.assertEqual(r.result["status"], "error")
        self.assertEqual(r.result["error"]["node"], "b")
        self.assertEqual(r.result["error"]["message"], "boom")
        self.assertIn("RuntimeError: boom", r.result["error"]["traceback"])
        self.assertEqual(r.result["output"], {"v": 1})
        self.assertEqual(r.ends("c"), [])
        self.assertEqual(r.starts("d"), [])
        self.assertEqual([n["id"] for n in r.result["nodes"]], ["a", "b"])
        self.assertEqual(r.result["nodes"][1]["status"], "error")


class Branches(unittest.TestCase):
    def wf(self):
        return workflow([
            node("check", "condition", {"if": {"op": "ge", "left": T(ref("trigger.n")), "right": 10},
                                        "then": ["big"], "else": ["small"]}),
            node("big", "set", {"fields": {"size": "big"}}, deps=["check"], guards=[["check", True]]),
            node("small", "set", {"fields": {"size": "small"}}, deps=["check"], guards=[["check", False]]),
            node("after_big", "template", {"template": T("size: ", ref("nodes.big.output.size"))}, deps=["big"]),
            node("after_small", "template", {"template": T("size: ", ref("nodes.small.output.size"))},
                 deps=["small"]),
        ])

    def test_then_branch(self):
        r = run(self.wf(), {"n": 12})
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(r.output("check"), {"result": True})
        self.assertEqual(r.output("after_big"), {"text": "size: big"})
        for skipped in ("small", "after_small"):
            end = r.end(skipped)
            self.assertEqual((end["status"], end["attempt"], end["output"], end["error"]),
                             ("skipped", 0, None, None))
            self.assertEqual(r.starts(skipped), [])
        self.assertEqual(r.result["output"], {"text": "size: big"})

    def test_else_branch(self):
        r = run(self.wf(), {"n": 3})
        self.assertEqual(r.end("big")["status"], "skipped")
        self.assertEqual(r.end("after_big")["status"], "skipped")
        self.assertEqual(r.output("after_small"), {"text": "size: small"})
        # the last *successful* node gives the result output
        self.assertEqual(r.result["output"], {"text": "size: small"})
        self.assertEqual([n["status"] for n in r.result["nodes"]],
                         ["success", "skipped", "success", "skipped", "success"])

    def test_failed_condition_skips_guarded_nodes(self):
        wf = workflow([
            node("check", "condition", {"if": {"op": "gt", "left": "a", "right": 1}, "then": ["x"], "else": []},
                 on_error="continue"),
            node("x", "set", {"fields": {}}, deps=["check"], guards=[["check", True]]),
            node("y", "set", {"fields": {"ran": True}}),
        ])
        r = run(wf)
        self.assertEqual(r.end("check")["status"], "error")
        self.assertEqual(r.end("x")["status"], "skipped")
        self.assertEqual(r.output("y"), {"ran": True})


class Pinned(unittest.TestCase):
    def test_pinned_and_reused(self):
        wf = workflow([
            node("ask", "code", {"code": "raise RuntimeError('must not run')"},
                 pinned={"output": {"content": "pinned!"}, "status": "pinned", "from_execution": None}),
            node("old", "code", {"code": "raise RuntimeError('must not run')"},
                 pinned={"output": [1, 2], "status": "reused", "from_execution": "exec-0"}),
            node("use", "set", {"fields": {"c": T(ref("nodes.ask.output.content")), "o": T(ref("nodes.old.output[1]"))}},
                 deps=["ask", "old"]),
        ])
        r = run(wf)
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(r.starts("ask"), [])
        ask = r.end("ask")
        self.assertEqual((ask["status"], ask["attempt"], ask["duration_ms"], ask["output"]),
                         ("pinned", 0, 0.0, {"content": "pinned!"}))
        self.assertNotIn("from_execution", ask)
        old = r.end("old")
        self.assertEqual((old["status"], old["from_execution"]), ("reused", "exec-0"))
        self.assertEqual(r.output("use"), {"c": "pinned!", "o": 2})

    def test_pinned_last_node_is_result_output(self):
        wf = workflow([node("a", "set", {"fields": {}}, pinned={"output": "P", "status": "pinned",
                                                                 "from_execution": None})])
        r = run(wf)
        self.assertEqual(r.result["output"], "P")
        self.assertEqual(r.result["nodes"], [{"id": "a", "status": "pinned", "attempt": 0, "duration_ms": 0.0}])


class Parallel(unittest.TestCase):
    def test_ready_nodes_start_in_plan_order_in_the_record(self):
        # Each node runs in a thread of its own; the record must not depend on which of them the
        # interpreter happened to run first (a pinned node ends without starting).
        nodes = [node("n%d" % i, "set", {"fields": {"i": i}}) for i in range(12)]
        nodes[5]["pinned"] = {"output": 5}
        wf = workflow(nodes)
        wf["max_parallel"] = 12
        for _ in range(10):
            r = run(wf)
            self.assertEqual(r.returncode, 0, r)
            first = []
            for e in r.events:
                if e["event"] in ("node_start", "node_end") and e["node"] not in first:
                    first.append(e["node"])
            self.assertEqual(first, ["n%d" % i for i in range(12)])


if __name__ == "__main__":
    unittest.main()

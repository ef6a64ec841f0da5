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



ITEMS = (
    "import time\n"
    "if item == 'fail':\n"
    "    time.sleep(0.2)\n"
    "    raise ValueError('item failed')\n"
    "if item == 'hang':\n"
    "    time.sleep(float(trigger['hang_s']))\n"
    "return item\n"
)


class ForEachFailFast(unittest.TestCase):
    def each(self, on_error="stop"):
        n = node("each", "code", {"code": ITEMS}, on_error=on_error)
        n["for_each"] = ["hang", "fail", "later", "last"]
        n["max_concurrent"] = 2
        return workflow([n, node("after", "set", {"fields": {}}, deps=["each"])])

    def test_a_failed_item_ends_the_execution_without_waiting_for_a_hung_one(self):
        # Item 0 would sleep 100 s: the failure of item 1 ends the execution after the grace,
        # the unstarted items recorded skipped, and the node left to the runner (still
        # running, with item 0): its error is the execution's, naming it.
        r = run(self.each(), {"hang_s": 100}, timeout=20)
        self.assertEqual(r.returncode, 1, r)
        ends = {e.get("item"): e for e in r.ends("each")}
        self.assertEqual(ends[1]["status"], "error")
        self.assertEqual((ends[2]["status"], ends[3]["status"]), ("skipped", "skipped"))
        self.assertNotIn(0, ends)
        self.assertNotIn(None, ends)  # the node's own end: the runner's, with this error
        err = r.result["error"]
        self.assertEqual((err["node"], err["type"]), ("each", "ItemsFailed"))
        self.assertIn("item 1: ValueError: item failed", err["message"])
        self.assertEqual(r.starts("after"), [])

    def test_after_on_error_continue_the_items_still_running_are_waited_for(self):
        # The execution goes on after the node: its items all end first.
        r = run(self.each("continue"), {"hang_s": 2.5}, timeout=20)
        self.assertEqual(r.returncode, 0, r)
        ends = {e.get("item"): e for e in r.ends("each")}
        self.assertEqual((ends[0]["status"], ends[None]["status"]), ("success", "error"))
        self.assertEqual(r.end("after")["status"], "success")

    def test_after_a_failed_item_no_node_starts(self):
        # The failure ends the run: a node that becomes ready during the items' grace (after a
        # 1 s delay, the grace being 2 s) never starts, as after a node's own failure.
        each = self.each()
        each["nodes"][0]["deps"] = []
        each["nodes"][1] = node("deploy", "set", {"fields": {}}, deps=["wait"])
        each["nodes"].insert(1, node("wait", "delay", {"ms": 1000}))
        each["max_parallel"] = 2
        r = run(each, {"hang_s": 100}, timeout=20)
        self.assertEqual(r.returncode, 1, r)
        self.assertEqual(r.result["error"]["node"], "each")
        self.assertEqual(r.end("wait")["status"], "success")
        self.assertEqual(r.starts("deploy"), [])


class RetryWhileFailing(unittest.TestCase):
    """No retry starts once another node has failed for good: the run is ending."""

    def beside(self, flaky_code, backoff_ms, bad_code):
        """`flaky` (3 attempts) beside `bad`, which fails for good: the run, which fails."""
        wf = workflow([
            node("flaky", "code", {"code": flaky_code},
                 retry={"max_attempts": 3, "backoff_ms": backoff_ms, "factor": 1}),
            node("bad", "code", {"code": bad_code}),
        ])
        wf["max_parallel"] = 2
        r = run(wf, timeout=20)
        self.assertEqual(r.returncode, 1, r)
        self.assertEqual(r.result["error"]["node"], "bad")
        return r

    def test_a_retry_waiting_is_withdrawn_when_another_node_fails(self):
        r = self.beside("raise ValueError('flaky')", 30000,
                        "import time\ntime.sleep(0.3)\nraise ValueError('no')")
        self.assertEqual([e["attempt"] for e in r.starts("flaky")], [1])
        ends = r.ends("flaky")
        self.assertEqual([(e["attempt"], e.get("retrying"), e.get("reason")) for e in ends],
                         [(1, True, None), (1, None, "not retried: node 'bad' failed")])
        self.assertEqual(ends[1]["error"]["message"], "flaky")
        # The backoff was cut short: well within the 30 s it asked for.
        self.assertLess(r.result["duration_ms"], 10000)

    def test_an_attempt_failing_after_another_node_did_is_its_last(self):
        r = self.beside("import time\ntime.sleep(0.3)\nraise ValueError('flaky')", 0,
                        "raise ValueError('no')")
        self.assertEqual([(e["attempt"], e.get("retrying"), e.get("reason")) for e in r.ends("flaky")],
                         [(1, None, "not retried: node 'bad' failed")])

    def test_on_error_continue_fails_nothing_else(self):
        wf = workflow([
            node("flaky", "code", {"code": COUNTING},
                 retry={"max_attempts": 3, "backoff_ms": 300, "factor": 1}),
            node("soft", "code", {"code": "raise ValueError('no')"}, on_error="continue"),
        ])
        wf["max_parallel"] = 2
        with tempfile.TemporaryDirectory() as d:
            r = run(wf, {"counter": os.path.join(d, "n")}, timeout=20)
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual([e["status"] for e in r.ends("flaky")], ["error", "error", "success"])


class AfterTheResult(unittest.TestCase):
    def test_nothing_goes_out_after_the_result(self):
        # A node left running by a failure beside it prints on and on; once the result is out,
        # none of it may follow (an event after the result is a protocol error on the record).
        wf = workflow([
            node("chatty", "code", {"code": "import time\nwhile True:\n    print('x')\n    time.sleep(0.001)\n"}),
            # Its atexit handler keeps the process up a moment after the result.
            node("bad", "code", {"code": "import atexit, time\natexit.register(time.sleep, 0.5)\n"
                                         "time.sleep(0.3)\nraise ValueError('no')\n"}),
        ])
        wf["max_parallel"] = 2
        r = run(wf, timeout=20)
        self.assertEqual(r.returncode, 1, r)
        self.assertEqual(r.result["error"]["node"], "bad")
        raw = r.stdout.split(b"\n")
        end = raw.index(("@@flowrun:%s:result-end" % r.nonce).encode())
        self.assertEqual([l for l in raw[end + 1:] if l.startswith(b"@@flowrun:")], [])

if __name__ == "__main__":
    unittest.main()

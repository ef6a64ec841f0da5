"""Mocked nodes (workflow tests) and offline runs: runtime/core/60_run.py."""
import unittest

from harness import T, node, ref, run, workflow


def mocked(n, *attempts):
    n["mock"] = {"attempts": list(attempts)}
    return n


class Mocks(unittest.TestCase):
    def test_a_mocked_output_replaces_the_handler_and_templates_still_render(self):
        wf = workflow([
            mocked(node("ask", "code", {"code": "raise RuntimeError('must not run')", "q": T(ref("trigger.q"))}),
                   {"output": {"content": "mocked!"}}),
            node("use", "set", {"fields": {"c": T(ref("nodes.ask.output.content"))}}, deps=["ask"]),
        ])
        r = run(wf, trigger={"q": "why?"})
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual([s["attempt"] for s in r.starts("ask")], [1])
        ask = r.end("ask")
        self.assertEqual((ask["status"], ask["attempt"], ask["output"]), ("mocked", 1, {"content": "mocked!"}))
        self.assertEqual(r.output("use"), {"c": "mocked!"})
        self.assertEqual(r.result["status"], "success")

    def test_a_template_error_still_fails_a_mocked_node(self):
        wf = workflow([mocked(node("ask", "set", {"fields": {"q": T(ref("trigger.missing"))}}),
                              {"output": 1})])
        r = run(wf, trigger={})
        self.assertEqual(r.end("ask")["status"], "error")
        self.assertIn("missing", r.end("ask")["error"]["message"])

    def test_a_list_per_attempt_goes_through_retries(self):
        n = node("ask", "set", {"fields": {}}, retry={"max_attempts": 3, "backoff_ms": 1, "factor": 1})
        wf = workflow([mocked(n, {"error": {"type": "RateLimit", "message": "429"}},
                              {"error": {"type": "Timeout", "message": "slow"}},
                              {"output": "third time"})])
        r = run(wf)
        self.assertEqual(r.returncode, 0, r)
        ends = r.ends("ask")
        self.assertEqual([(e["status"], e["attempt"], e.get("retrying", False)) for e in ends],
                         [("error", 1, True), ("error", 2, True), ("mocked", 3, False)])
        self.assertEqual((ends[0]["error"]["type"], ends[0]["error"]["message"]), ("RateLimit", "429"))
        self.assertEqual(ends[2]["output"], "third time")
        self.assertEqual([s["attempt"] for s in r.starts("ask")], [1, 2, 3])

    def test_a_mocked_failure_is_retried_without_waiting_its_backoff(self):
        n = node("ask", "set", {"fields": {}}, retry={"max_attempts": 2, "backoff_ms": 600000, "factor": 1})
        wf = workflow([mocked(n, {"error": {"type": "RateLimit", "message": "429"}}, {"output": "ok"})])
        r = run(wf)
        self.assertEqual(r.returncode, 0, r)
        first = r.ends("ask")[0]
        self.assertEqual((first["retrying"], first["retry_in_ms"]), (True, 0))
        self.assertEqual(r.end("ask")["status"], "mocked")

    def test_the_last_outcome_repeats_and_an_error_fails_the_run(self):
        n = node("ask", "set", {"fields": {}}, retry={"max_attempts": 2, "backoff_ms": 0, "factor": 1})
        wf = workflow([mocked(n, {"error": {"type": "Boom", "message": "down"}}),
                       node("after", "set", {"fields": {}}, deps=["ask"])])
        r = run(wf)
        self.assertEqual(r.returncode, 1, r)
        self.assertEqual([e["status"] for e in r.ends("ask")], ["error", "error"])
        self.assertEqual(r.result["error"]["type"], "Boom")
        self.assertEqual(r.result["error"]["node"], "ask")
        self.assertEqual(r.ends("after"), [])

    def test_a_mocked_node_on_a_branch_not_taken_is_skipped(self):
        wf = workflow([
            node("check", "condition", {"if": False, "then": ["ask"], "else": []}),
            mocked(node("ask", "set", {"fields": {}}, deps=["check"], guards=[["check", True]]), {"output": 1}),
        ])
        r = run(wf)
        self.assertEqual(r.end("ask")["status"], "skipped")

    def test_a_mocked_for_each_node_ends_mocked_with_its_items(self):
        n = mocked(node("each", "code", {"code": "raise RuntimeError('must not run')"}),
                   {"output": "m"})
        n["for_each"] = [1, 2]
        r = run(workflow([n]))
        self.assertEqual(r.returncode, 0, r)
        ends = r.ends("each")
        self.assertEqual([(e.get("item"), e["status"]) for e in ends],
                         [(0, "mocked"), (1, "mocked"), (None, "mocked")])
        self.assertEqual(ends[-1]["output"], ["m", "m"])


class Offline(unittest.TestCase):
    def test_an_offline_node_fails_at_once_naming_itself(self):
        n = node("fetch", "http_request", {"method": "GET", "url": "http://127.0.0.1:9/"},
                 retry={"max_attempts": 3, "backoff_ms": 10000, "factor": 1}, on_error="continue")
        n["offline"] = True
        wf = workflow([n, node("after", "set", {"fields": {"ok": True}})])
        r = run(wf)
        ends = r.ends("fetch")
        self.assertEqual(len(ends), 1, "not retried")
        self.assertEqual(ends[0]["error"]["type"], "Offline")
        self.assertIn("fetch", ends[0]["error"]["message"])
        self.assertIn("http_request", ends[0]["error"]["message"])
        self.assertEqual(r.output("after"), {"ok": True})


if __name__ == "__main__":
    unittest.main()

"""stdout protocol, serialization, trigger handling, lifeline.
Run: python3 -m unittest discover -s runtime/tests"""
import json
import os
import unittest

import harness
from harness import NONCE, T, build_script, node, ref, run, workflow


class Framing(unittest.TestCase):
    def test_event_shapes_and_exit_code(self):
        r = run(workflow([node("a", "set", {"fields": {"x": 1}})]))
        self.assertEqual(r.returncode, 0)
        start, end = r.events
        self.assertEqual(sorted(start), ["attempt", "event", "node", "ts"])
        self.assertEqual(sorted(end), ["attempt", "duration_ms", "error", "event", "input", "node",
                                       "output", "status", "ts"])
        self.assertIsInstance(end["ts"], int)
        self.assertGreater(end["ts"], 1500000000000)
        self.assertIsInstance(end["duration_ms"], float)
        self.assertEqual(sorted(r.result), ["duration_ms", "error", "nodes", "output", "status"])
        self.assertEqual(r.result_count, 1)
        self.assertEqual(r.plain, [])
        # protocol lines are exactly: events, result-start, json, result-end
        lines = r.stdout.split(b"\n")
        self.assertEqual(lines[-4], ("@@flowrun:%s:result-start" % NONCE).encode())
        self.assertEqual(lines[-2], ("@@flowrun:%s:result-end" % NONCE).encode())
        self.assertEqual(lines[-1], b"")

    def test_prints_without_newline_stay_separate(self):
        src = ("import sys\n"
               "print('no newline', end='')\n"
               "sys.stderr.write('err partial')\n"
               "log('mid')\n"
               "sys.stdout.write('again')\n"
               "sys.stdout.buffer.write(b'bytes-partial')\n"
               "return 1\n")
        wf = workflow([node("p", "code", {"code": src})])
        for args in (("-I", "-S", "-u"), ("-I", "-S")):
            r = run(wf, args=args)
            self.assertEqual(r.returncode, 0, r)
            self.assertEqual(r.plain, ["no newline", "againbytes-partial"], args)
            self.assertEqual([e["event"] for e in r.events],
                             ["node_start", "node_input", "log", "node_end"])
            self.assertEqual(r.stderr, "err partial\n")
            self.assertEqual(r.stderr_marks, ["p", "-"])

    def test_a_slow_kind_of_node_sends_its_input_before_its_call(self):
        # A command's rendered params, before it runs; a set node (instant) sends none.
        r = run(workflow([node("s", "set", {"fields": {"x": 1}}),
                          node("c", "command", {"argv": ["true"]})]))
        self.assertEqual(r.returncode, 0, r)
        kinds = [(e["event"], e["node"]) for e in r.events]
        self.assertEqual(kinds, [("node_start", "s"), ("node_end", "s"), ("node_start", "c"),
                                 ("node_input", "c"), ("node_end", "c")])
        sent = r.events[3]
        self.assertEqual(sorted(sent), ["attempt", "event", "input", "node"])
        self.assertEqual(sent["input"]["argv"], ["true"])
        self.assertEqual(sent["input"], r.events[4]["input"])

    def test_fake_markers_are_plain_output(self):
        src = ("print('@@flowrun:deadbeef:event {\"event\":\"node_end\",\"node\":\"x\"}')\n"
               "print('@@flowrun::result-start')\n"
               "print('@@flowrun:%s')\n"
               "return 'ok'\n") % "event"
        r = run(workflow([node("p", "code", {"code": src})]))
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(r.plain, ['@@flowrun:deadbeef:event {"event":"node_end","node":"x"}',
                                   "@@flowrun::result-start", "@@flowrun:event"])
        self.assertEqual(len(r.events), 3)  # node_start, node_input, node_end

    def test_secrets_of_the_protocol_are_not_visible_to_nodes(self):
        # The nonce comes on stdin: not in os.environ, not in /proc/self/environ (which keeps
        # what the process started with), not on stdin for a node to read again.
        src = ("import os, sys\n"
               "with open('/proc/self/environ', 'rb') as f:\n"
               "    environ = f.read().decode('utf-8', 'replace')\n"
               "return [os.environ.get('FLOWRUN_NONCE_ON_STDIN'), %r in environ,\n"
               "        %r in repr(dict(os.environ)), sys.stdin.read(), os.environ.get('FLOWRUN_MODE')]"
               ) % (NONCE, NONCE)
        r = run(workflow([node("p", "code", {"code": src})]))
        self.assertEqual(r.output("p"), [None, False, False, "", "test"])

    def test_run_by_hand_without_nonce(self):
        r = run(workflow([node("a", "set", {"fields": {"x": 1}})]), nonce=None, args=())
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(len(r.nonce), 16)
        self.assertEqual(r.result["output"], {"x": 1})

    def test_log_from_threads_does_not_interleave(self):
        src = ("import threading\n"
               "def work(i):\n"
               "    for j in range(50):\n"
               "        log('t%d-%d' % (i, j), 'x' * 2000)\n"
               "ts = [threading.Thread(target=work, args=(i,)) for i in range(4)]\n"
               "[t.start() for t in ts]\n"
               "[t.join() for t in ts]\n")
        r = run(workflow([node("p", "code", {"code": src})]))
        self.assertEqual(len(r.logs()), 200)


class Serialization(unittest.TestCase):
    def test_non_json_values(self):
        src = ("import math\n"
               "d = {'self': None}\n"
               "d['self'] = d\n"
               "l = [1]\n"
               "l.append(l)\n"
               "return {'nan': float('nan'), 'inf': [float('inf'), -math.inf], 'bytes': b'ab\\xffc',\n"
               "        'set': {3}, 'tuple': (1, 2), 'obj': object.__new__(type('Thing', (), {'__repr__': lambda s: '<Thing>'})),\n"
               "        'keys': {1: 'a', None: 'b', (1, 2): 'c', 2.5: 'd'}, 'cycle': d, 'lcycle': l,\n"
               "        'big': 10 ** 30, 'shared': [l[:1], l[:1]]}\n")
        r = run(workflow([node("p", "code", {"code": src})]))
        self.assertEqual(r.returncode, 0, r)
        out = r.output("p")
        self.assertIsNone(out["nan"])
        self.assertEqual(out["inf"], [None, None])
        self.assertEqual(out["bytes"], "ab\ufffdc")
        self.assertEqual(out["set"], "{3}")
        self.assertEqual(out["tuple"], [1, 2])
        self.assertEqual(out["obj"], "<Thing>")
        self.assertEqual(out["keys"], {"1": "a", "null": "b", "(1, 2)": "c", "2.5": "d"})
        self.assertEqual(out["cycle"], {"self": "<cycle>"})
        self.assertEqual(out["lcycle"], [1, "<cycle>"])
        self.assertEqual(out["big"], 10 ** 30)
        self.assertEqual(out["shared"], [[1], [1]])
        self.assertEqual(r.result["output"], out)

    def test_interpolating_odd_values(self):
        wf = workflow([
            node("p", "code", {"code": "return {'n': float('nan'), 's': {1}, 'b': b'x'}"}),
            node("t", "template", {"template": T("n=", ref("nodes.p.output.n"), " s=", ref("nodes.p.output.s"),
                                                 " b=", ref("nodes.p.output.b"))}, deps=["p"]),
        ])
        r = run(wf)
        self.assertEqual(r.output("t"), {"text": "n=null s={1} b=x"})

    def test_unicode_round_trip(self):
        weird = "line\u2028sep\u2029para nul\x00 emoji \U0001F600 cr\r lf\n tab\t quote\" back\\ é"
        wf = workflow([
            node("s", "set", {"fields": {"w": T(ref("trigger.w")), "t": T("[", ref("trigger.w"), "]")}}),
            node("c", "code", {"code": "return nodes['s']['output']['w'] + %r" % weird}, deps=["s"]),
        ])
        r = run(wf, {"w": weird})
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(r.output("s"), {"w": weird, "t": "[" + weird + "]"})
        self.assertEqual(r.output("c"), weird + weird)
        self.assertEqual(r.result["output"], weird + weird)

    def test_lone_surrogate_never_breaks_utf8(self):
        r = run(workflow([node("c", "code", {"code": "return 'a\\ud800b'"})]))
        self.assertEqual(r.returncode, 0, r)
        out = r.output("c")
        self.assertTrue(out.startswith("a") and out.endswith("b") and "\ufffd" in out, out)

    def test_payload_truncation(self):
        wf = workflow([
            node("big", "code", {"code": "return {'data': 'é' * 3000}"}),
            node("len", "code", {"code": "return len(nodes['big']['output']['data'])"}, deps=["big"]),
            node("echo", "set", {"fields": {"d": T(ref("nodes.big.output.data"))}}, deps=["len"]),
            node("fail", "code", {"code": "raise ValueError('x' * 5000)"}, on_error="continue"),
        ])
        r = run(wf, env={"FLOWRUN_MAX_PAYLOAD_BYTES": "2000"})
        self.assertEqual(r.returncode, 0, r)
        out = r.output("big")
        full = json.dumps({"data": "é" * 3000}, ensure_ascii=False, separators=(",", ":"))
        self.assertEqual(out["$flowrun_truncated"], True)
        self.assertEqual(out["bytes"], len(full.encode("utf-8")))
        self.assertEqual(out["preview"], full[:1024])
        self.assertEqual(r.output("len"), 3000)  # downstream sees everything
        self.assertTrue(r.end("echo")["input"]["$flowrun_truncated"])
        self.assertEqual(r.end("len")["input"]["$flowrun_truncated"], True)
        # errors keep their shape, long strings are cut
        err = r.end("fail")["error"]
        self.assertEqual(err["type"], "ValueError")
        self.assertIn("[flowrun: truncated, 5000 bytes in total]", err["message"])
        self.assertLessEqual(len(json.dumps(err, ensure_ascii=False).encode()), 2000)
        # result output (echo is the last success) is capped too
        self.assertTrue(r.result["output"]["$flowrun_truncated"])

    def test_small_payloads_untouched_by_default(self):
        r = run(workflow([node("c", "code", {"code": "return 'x' * 100000"})]))
        self.assertEqual(r.output("c"), "x" * 100000)


class TriggerData(unittest.TestCase):
    def test_invalid_json(self):
        for bad in (b"{not json", b'{"a": NaN}', b"[1,", b"\xff\xfe"):
            r = run(workflow([node("a", "set", {"fields": {}})]), bad)
            self.assertEqual(r.returncode, 1, bad)
            self.assertEqual(r.events, [])
            self.assertEqual(r.result["status"], "error")
            self.assertEqual(r.result["error"]["type"], "InvalidTrigger")
            self.assertIsNone(r.result["error"]["node"])
            self.assertIn("trigger data is not valid", r.result["error"]["message"])
            self.assertEqual(r.result["nodes"], [])
        r = run(workflow([node("a", "set", {"fields": {}})]), b'{"a": 1} x')
        self.assertIn("Extra data: line 1 column 10", r.result["error"]["message"])

    def test_defaults_applied(self):
        inputs = {"type": "object", "properties": {
            "query": {"type": "string", "default": "hi"},
            "given": {"type": "string", "default": "unused"},
            "opts": {"type": "object", "properties": {"temp": {"type": "number", "default": 0.5},
                                                      "list": {"type": "array", "default": [1, {"a": 2}]}}},
            "absent_obj": {"type": "object", "properties": {"x": {"default": 1}}},
        }}
        wf = workflow([node("trigger", "trigger"),
                       node("c", "code", {"code": "trigger['opts']['list'][1]['a'] = 99\nreturn 1"})],
                      inputs=inputs)
        r = run(wf, {"given": "yes", "opts": {}})
        self.assertEqual(r.output("trigger"), {"given": "yes", "query": "hi",
                                               "opts": {"temp": 0.5, "list": [1, {"a": 2}]}})
        r = run(wf, b"")
        self.assertEqual(r.output("trigger"), {"query": "hi", "given": "unused"})

    def test_defaults_inside_a_default_are_filled_in_once(self):
        # As the runner fills them in before it validates: a second pass changes nothing.
        inputs = {"type": "object", "properties": {
            "o": {"type": "object", "default": {}, "properties": {
                "n": {"type": "integer", "default": 3},
                "deep": {"type": "object", "default": {"k": 1}, "properties": {"m": {"default": [1]}}}}}}}
        wf = workflow([node("trigger", "trigger")], inputs=inputs)
        want = {"o": {"n": 3, "deep": {"k": 1, "m": [1]}}}
        self.assertEqual(run(wf, b"").output("trigger"), want)
        self.assertEqual(run(wf, want).output("trigger"), want)


if __name__ == "__main__":
    unittest.main()

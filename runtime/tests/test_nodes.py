"""Node types and templates.  Run: python3 -m unittest discover -s runtime/tests"""
import json
import os
import subprocess
import sys
import tempfile
import unittest

from harness import PYTHON, R, T, build_script, node, ref, run, workflow


class TriggerNode(unittest.TestCase):
    def test_output_and_input_are_the_trigger_data(self):
        r = run(workflow([node("trigger", "trigger")]), {"a": [1, 2], "b": None})
        self.assertEqual(r.returncode, 0, r)
        end = r.end("trigger")
        self.assertEqual(end["status"], "success")
        self.assertEqual(end["output"], {"a": [1, 2], "b": None})
        self.assertEqual(end["input"], {"a": [1, 2], "b": None})
        self.assertEqual(r.result["output"], {"a": [1, 2], "b": None})

    def test_empty_stdin_is_empty_object(self):
        r = run(workflow([node("trigger", "trigger")]), b"  \n ")
        self.assertEqual(r.output("trigger"), {})


class SetNode(unittest.TestCase):
    def test_whole_string_reference_keeps_json_type(self):
        trig = {"n": 5, "f": 1.5, "b": True, "z": None, "o": {"k": [1, "x"]}, "l": [1, 2], "s": "txt"}
        fields = dict((k, T(R("trigger", k))) for k in trig)
        fields["nested"] = {"list": [T(R("trigger", "o", "k", 1)), 7, T(R("trigger", "l", -1))]}
        r = run(workflow([node("s", "set", {"fields": fields})]), trig)
        out = r.output("s")
        for k, v in trig.items():
            self.assertEqual(out[k], v, k)
            self.assertIs(type(out[k]), type(v), k)
        self.assertEqual(out["nested"], {"list": ["x", 7, 2]})

    def test_interpolation_renders_text(self):
        trig = {"n": 5, "f": 1.5, "b": True, "z": None, "o": {"k": [1, "é"]}, "s": "txt"}
        text = T("n=", R("trigger", "n"), " f=", R("trigger", "f"), " b=", R("trigger", "b"),
                 " z=", R("trigger", "z"), " o=", R("trigger", "o"), " s=", R("trigger", "s"))
        r = run(workflow([node("s", "set", {"fields": {"t": text, "empty": T(), "lit": T("only")}})]), trig)
        out = r.output("s")
        self.assertEqual(out["t"], 'n=5 f=1.5 b=true z=null o={"k": [1, "é"]} s=txt')
        self.assertEqual(out["empty"], "")
        self.assertEqual(out["lit"], "only")

    def test_reference_to_upstream_node_output(self):
        wf = workflow([
            node("a", "set", {"fields": {"items": [{"id": 1}, {"id": 2}]}}),
            node("b", "set", {"fields": {"second": T(ref("nodes.a.output.items[1].id")),
                                         "all": T(ref("nodes.a.output"))}}, deps=["a"]),
        ])
        r = run(wf)
        self.assertEqual(r.output("b"), {"second": 2, "all": {"items": [{"id": 1}, {"id": 2}]}})
        self.assertEqual(r.end("b")["input"], {"fields": r.output("b")})

    def test_execution_scope(self):
        wf = workflow([node("s", "set", {"fields": {"e": T(R("execution"))}})], id="wf-1")
        r = run(wf)
        self.assertEqual(r.output("s")["e"], {"id": "exec-test", "mode": "test", "workflow_id": "wf-1"})

    def test_missing_key_names_path_key_and_existing_keys(self):
        wf = workflow([
            node("ask", "set", {"fields": {"content": "hi", "model": "m"}}),
            node("use", "set", {"fields": {"text": T("> ", ref("nodes.ask.output.contnet"))}}, deps=["ask"]),
        ])
        r = run(wf)
        self.assertEqual(r.returncode, 1)
        err = r.end("use")["error"]
        self.assertEqual(err["type"], "TemplateError")
        msg = err["message"]
        for piece in ("nodes.ask.output.contnet", "'contnet'", "content, model", "fields.text"):
            self.assertIn(piece, msg)
        self.assertEqual(r.result["error"]["node"], "use")
        self.assertEqual(r.result["error"]["message"], msg)
        self.assertNotIn("script.py", err["traceback"])

    def test_index_and_type_errors(self):
        cases = [
            (ref("trigger.l[5]"), "index 5 out of range in trigger.l (array of length 2)"),
            (ref("trigger.s.x"), "cannot read key 'x' of trigger.s: it is a string"),
            (ref("trigger.l.x"), "cannot read key 'x' of trigger.l: it is an array"),
            (ref("nodes.ghost.output"), "node 'ghost' has no result"),
        ]
        for r_, expected in cases:
            r = run(workflow([node("s", "set", {"fields": {"v": T(r_)}})]), {"l": [1, 2], "s": "x"})
            self.assertIn(expected, r.end("s")["error"]["message"])

    def test_many_keys_are_capped(self):
        trig = dict(("k%02d" % i, i) for i in range(25))
        r = run(workflow([node("s", "set", {"fields": {"v": T(ref("trigger.nope"))}})]), trig)
        msg = r.end("s")["error"]["message"]
        self.assertIn("k00, k01", msg)
        self.assertIn("(15 more)", msg)
        self.assertNotIn("k20", msg)


class TemplateNode(unittest.TestCase):
    def test_text_and_single_ref_conversion(self):
        wf = workflow([
            node("a", "template", {"template": T("Hello ", R("trigger", "name"), "!")}),
            node("b", "template", {"template": T(R("trigger", "n"))}),
            node("c", "template", {"template": T(R("trigger", "o"))}),
            node("d", "template", {"template": T(R("trigger", "name"))}),
            node("e", "template", {"template": T()}),
        ])
        r = run(wf, {"name": "Ann", "n": 3, "o": {"a": True}})
        self.assertEqual(r.output("a"), {"text": "Hello Ann!"})
        self.assertEqual(r.output("b"), {"text": "3"})
        self.assertEqual(r.output("c"), {"text": '{"a": true}'})
        self.assertEqual(r.output("d"), {"text": "Ann"})
        self.assertEqual(r.output("e"), {"text": ""})


class CodeNode(unittest.TestCase):
    def test_return_log_and_input(self):
        src = (
            "total = trigger['a'] + nodes['s']['output']['b']\n"
            "log('total is', total, {'k': [1]})\n"
            "log('careful', level='warning')\n"
            "log('dbg', level='debug')\n"
            "return {'total': total, 'exec': execution['mode'], 'st': nodes['s']['status']}\n"
        )
        wf = workflow([
            node("s", "set", {"fields": {"b": 2}}),
            node("c", "code", {"code": src}, deps=["trigger", "s"]),
        ])
        r = run(wf, {"a": 40})
        self.assertEqual(r.output("c"), {"total": 42, "exec": "test", "st": "success"})
        self.assertEqual(r.end("c")["input"], {"trigger": {"a": 40}, "s": {"b": 2}})
        logs = r.logs()
        self.assertEqual([(l["node"], l["level"], l["message"]) for l in logs], [
            ("c", "info", 'total is 42 {"k": [1]}'),
            ("c", "warning", "careful"),
            ("c", "debug", "dbg"),
        ])
        self.assertIsInstance(logs[0]["ts"], int)

    def test_no_return_gives_null_and_empty_body(self):
        wf = workflow([node("a", "code", {"code": "x = 1\n"}), node("b", "code", {"code": "# nothing\n"})])
        r = run(wf)
        self.assertEqual(r.returncode, 0, r)
        self.assertIsNone(r.output("a"))
        self.assertIsNone(r.output("b"))

    def test_functions_closures_and_imports_work(self):
        src = (
            "import math\n"
            "def sq(x):\n"
            "    return x * x\n"
            "k = 3\n"
            "vals = [sq(i) + k for i in range(3)]\n"
            "return {'vals': vals, 'pi': round(math.pi, 2), 'lam': (lambda: k)()}\n"
        )
        r = run(workflow([node("c", "code", {"code": src})]))
        self.assertEqual(r.output("c"), {"vals": [3, 4, 7], "pi": 3.14, "lam": 3})

    def test_mutations_do_not_leak(self):
        wf = workflow([
            node("s", "set", {"fields": {"l": [1]}}),
            node("c", "code", {"code": "nodes['s']['output']['l'].append(2)\ntrigger['x'] = 1\nreturn 0"},
                 deps=["s"]),
            node("d", "set", {"fields": {"l": T(ref("nodes.s.output.l")), "t": T(R("trigger"))}}, deps=["c"]),
        ])
        r = run(wf)
        self.assertEqual(r.output("d"), {"l": [1], "t": {}})

    def test_mutations_through_the_frame_do_not_leak_either(self):
        # Code that does not name `nodes` gets it uncopied — unless it could reach it another
        # way (locals(), a frame): then it gets its own copy, as code that names it does.
        wf = workflow([
            node("s", "set", {"fields": {"l": [1]}}),
            node("c", "code", {"code": "locals()['no' + 'des']['s']['output']['l'].append(2)\nreturn 0"},
                 deps=["s"]),
            node("f", "code", {"code": "import sys\nsys._getframe(0).f_locals['no' + 'des']['s']['output']['l'].append(3)\nreturn 0"},
                 deps=["c"]),
            node("d", "set", {"fields": {"l": T(ref("nodes.s.output.l"))}}, deps=["f"]),
        ])
        r = run(wf)
        self.assertEqual(r.output("d"), {"l": [1]})

    def test_syntax_error_names_node_and_line_and_nothing_runs(self):
        # The broken node comes after a command: nothing runs, not even the command (its side
        # effects would be for a run bound to fail).
        src = "x = 1\ny = 2\nreturn (x +\n"
        r = run(workflow([
            node("first", "command", {"argv": ["echo", "ran"]}),
            node("bad", "code", {"code": src}, deps=["first"]),
        ]))
        self.assertEqual(r.returncode, 1)
        self.assertEqual([e for e in r.events if e["event"] in ("node_start", "node_end")], [])
        err = r.result["error"]
        self.assertEqual(err["node"], "bad")
        self.assertEqual(err["type"], "SyntaxError")
        self.assertTrue(err["message"].startswith("its source does not compile, so no node ran: "),
                        err["message"])
        self.assertIn("<node bad>", err["message"])
        self.assertIn("line 3", err["message"])
        self.assertIn('File "<node bad>", line 3', err["traceback"])
        self.assertIn("return (x +", err["traceback"])
        self.assertNotIn("script.py", err["traceback"])

    def test_compile_time_errors_and_deep_nesting_stop_the_run_too(self):
        # Errors Python finds only as it compiles (not as it parses), and a source too deeply
        # nested to parse (a RecursionError, not a SyntaxError), name the node all the same.
        for src, kind in (("nonlocal x\n", "SyntaxError"), ("from os import *\n", "SyntaxError"),
                          ("break\n", "SyntaxError"), ("await f()\n", "SyntaxError"),
                          ("return " + "1+" * 200000 + "1\n", "RecursionError")):
            r = run(workflow([node("first", "command", {"argv": ["echo", "ran"]}),
                              node("bad", "code", {"code": src}, deps=["first"])]))
            self.assertEqual(r.returncode, 1, r)
            self.assertEqual(r.starts("first"), [], src[:20])
            err = r.result["error"]
            self.assertEqual((err["node"], err["type"]), ("bad", kind), err)
            self.assertTrue(err["message"].startswith("its source does not compile"), err)

    def test_check_mode_lists_every_problem_and_runs_nothing(self):
        # `script --check` (flowrun validate): every code node that does not compile, a
        # sub-workflow's with its file and node, as one JSON line; no stdin read, no node run.
        wf = workflow([
            node("first", "command", {"argv": ["echo", "the-command-ran"]}),
            node("a", "code", {"code": "x = (1,\nreturn x"}, deps=["first"]),
            node("fine", "code", {"code": "return 1"}),
            node("b", "code", {"code": "if True:\nreturn 1"}),
            node("sub", "workflow", {"workflow": "child.yaml"}),
        ])
        wf["nodes"][4]["sub_code"] = [{"file": "/w/child.yaml", "node": "deep", "code": "def f(:\n  pass"}]
        # As crates/app/src/code_check.rs runs it: the script in a file, no environment, no stdin.
        with tempfile.TemporaryDirectory(prefix="flowrun-rt-") as d:
            path = os.path.join(d, "script.py")
            with open(path, "w", encoding="utf-8") as f:
                f.write(build_script(wf))
            r = subprocess.run([PYTHON, "-I", "-S", path, "--check"], stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={}, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.decode().splitlines()
        self.assertEqual(len(lines), 1, r.stdout)
        problems = json.loads(lines[0])["problems"]
        self.assertEqual([p["error"]["node"] for p in problems], ["a", "b", "sub"])
        self.assertEqual(problems[0]["where"], {"error": "'(' was never closed", "line": 1, "column": 5})
        self.assertEqual(problems[1]["where"]["line"], 2)
        self.assertEqual((problems[2]["where"]["file"], problems[2]["where"]["node"]), ("/w/child.yaml", "deep"))
        self.assertTrue(problems[2]["error"]["message"].startswith("code node 'deep' of /w/child.yaml"))
        self.assertNotIn(b"the-command-ran", r.stdout + r.stderr)
        self.assertNotIn(b"@@flowrun", r.stdout + r.stderr)

    def test_syntax_errors_of_nodes_that_will_not_run_stop_nothing(self):
        # Pinned and mocked code nodes never run their source, so it is not checked; one that
        # parses but warns (an invalid escape) is no error either.
        bad = "return (\n"
        pinned = node("pinned", "code", {"code": bad}, pinned={"output": 1})
        mocked = node("mocked", "code", {"code": bad}, deps=["pinned"])
        mocked["mock"] = {"attempts": [{"output": 2}]}
        warns = node("warns", "code", {"code": "return len('\\d')"}, deps=["mocked"])
        r = run(workflow([pinned, mocked, warns]))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.output("warns"), 2)

    @unittest.skipUnless(sys.version_info >= (3, 11), "exception groups are 3.11+")
    def test_an_exception_groups_traceback_has_the_user_lines_inside_it(self):
        # Only the sources a traceback shows are put into linecache (not every code node's):
        # the lines of an exception inside a group, raised apart from it, are still shown.
        src = ("def f():\n    raise ValueError('inner')\nerrs = []\ntry:\n    f()\n"
               "except ValueError as e:\n    errs.append(e)\nraise ExceptionGroup('g', errs)\n")
        r = run(workflow([node("other", "code", {"code": "return 1"}),
                          node("grp", "code", {"code": src}, deps=["other"])]))
        tb = r.end("grp")["error"]["traceback"]
        self.assertIn("raise ExceptionGroup('g', errs)", tb)
        self.assertIn("    raise ValueError('inner')", tb)

    def test_runtime_error_traceback_has_user_lines(self):
        src = "a = 1\n\ndef f(v):\n    return v / 0\nreturn f(a)\n"
        r = run(workflow([node("boom", "code", {"code": src})]))
        err = r.end("boom")["error"]
        self.assertEqual(err["type"], "ZeroDivisionError")
        self.assertEqual(err["message"], "division by zero")
        tb = err["traceback"]
        self.assertTrue(tb.startswith("Traceback (most recent call last):\n"), tb)
        self.assertIn('File "<node boom>", line 5, in boom', tb)
        self.assertIn("    return f(a)", tb)
        self.assertIn('File "<node boom>", line 4, in f', tb)
        self.assertIn("    return v / 0", tb)
        self.assertNotIn("script.py", tb)
        self.assertTrue(tb.rstrip().endswith("ZeroDivisionError: division by zero"))

    def test_user_traceback_print_shows_source(self):
        src = ("import traceback\n"
               "try:\n"
               "    {}['missing']\n"
               "except KeyError:\n"
               "    return traceback.format_exc()\n")
        r = run(workflow([node("c", "code", {"code": src})]))
        self.assertIn('File "<node c>", line 3, in c\n    {}[\'missing\']', r.output("c"))

    def test_sys_exit_is_a_node_error(self):
        wf = workflow([node("c", "code", {"code": "import sys\nsys.exit(3)"}, on_error="continue"),
                       node("d", "set", {"fields": {"ok": True}})])
        r = run(wf)
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(r.end("c")["error"]["type"], "SystemExit")
        self.assertEqual(r.output("d"), {"ok": True})

    def test_bad_log_level_fails(self):
        r = run(workflow([node("c", "code", {"code": "log('x', level='loud')"})]))
        self.assertIn("level must be one of", r.end("c")["error"]["message"])

    def test_declared_connections_are_read_from_the_environment(self):
        conn = {"name": "groq", "env": "FLOWRUN_TEST_GROQ_KEY"}
        src = "import os\nreturn os.environ['FLOWRUN_TEST_GROQ_KEY'][::-1]"
        wf = workflow([node("c", "code", {"code": src, "connections": [conn]})])
        r = run(wf, env={"FLOWRUN_TEST_GROQ_KEY": "gsk-123"})
        self.assertEqual(r.output("c"), "321-ksg")
        # Unbound (the runner refuses that before it starts; run by hand it is a clear error
        # before the code runs, not a KeyError from inside it).
        r = run(wf)
        err = r.end("c")["error"]
        self.assertEqual(err["type"], "ConnectionNotBound", err)
        self.assertIn("FLOWRUN_TEST_GROQ_KEY", err["message"])

    def test_odd_node_id(self):
        r = run(workflow([node("9-lives", "code", {"code": "return 1/0"})]))
        self.assertIn('File "<node 9-lives>", line 1', r.end("9-lives")["error"]["traceback"])


class ConditionNode(unittest.TestCase):
    CASES = [
        ("eq", 1, 1.0, True), ("eq", 1, True, False), ("eq", "a", "a", True), ("eq", [1, {"a": 2}], [1, {"a": 2}], True),
        ("ne", "a", "b", True), ("ne", None, None, False),
        ("gt", 3, 2, True), ("ge", 2, 2, True), ("lt", "a", "b", True), ("le", 2.5, 2, False),
        ("contains", "hello", "ell", True), ("contains", [1, 2], 2, True), ("contains", {"k": 1}, "k", True),
        ("not_contains", [1, 2], 3, True), ("not_contains", "abc", "a", False),
        ("exists", 0, None, True), ("exists", None, None, False), ("not_exists", None, None, True),
        ("empty", "", None, True), ("empty", [], None, True), ("empty", {}, None, True), ("empty", 0, None, False),
        ("not_empty", [0], None, True), ("not_empty", None, None, False),
    ]
    TRUTHY = [(False, False), (None, False), (0, False), ("", False), ([], False), ({}, False),
              (1, True), ("false", True), ([0], True), ({"a": 1}, True)]

    def test_ops(self):
        nodes = []
        for i, (op, left, right, _) in enumerate(self.CASES):
            nodes.append(node("c%d" % i, "condition", {
                "if": {"op": op, "left": T(R("trigger", "v", i, 0)), "right": T(R("trigger", "v", i, 1))},
                "then": [], "else": []}))
        for i, (value, _) in enumerate(self.TRUTHY):
            nodes.append(node("t%d" % i, "condition", {"if": T(R("trigger", "t", i)), "then": [], "else": []}))
        trig = {"v": [[c[1], c[2]] for c in self.CASES], "t": [v for v, _ in self.TRUTHY]}
        r = run(workflow(nodes), trig)
        self.assertEqual(r.returncode, 0, r)
        for i, case in enumerate(self.CASES):
            self.assertEqual(r.output("c%d" % i), {"result": case[3]}, case)
        for i, (value, expected) in enumerate(self.TRUTHY):
            self.assertEqual(r.output("t%d" % i), {"result": expected}, value)
        self.assertEqual(r.end("c0")["input"]["if"], {"op": "eq", "left": 1, "right": 1.0})

    def test_exists_on_missing_reference_is_false(self):
        wf = workflow([
            node("c", "condition", {"if": {"op": "exists", "left": T(ref("trigger.user.name"))}, "then": [], "else": []}),
            node("d", "condition", {"if": {"op": "empty", "left": T(ref("trigger.nope"))}, "then": [], "else": []}),
        ])
        r = run(wf, {})
        self.assertEqual(r.output("c"), {"result": False})
        self.assertEqual(r.output("d"), {"result": True})

    def test_incomparable_types_fail_clearly(self):
        wf = workflow([node("c", "condition", {"if": {"op": "gt", "left": T(ref("trigger.a")), "right": 3},
                                               "then": [], "else": []})])
        r = run(wf, {"a": "abc"})
        err = r.end("c")["error"]
        self.assertEqual(err["type"], "TypeError")
        self.assertIn('cannot compare a string "abc" with a number 3', err["message"])
        r = run(workflow([node("c", "condition", {"if": {"op": "contains", "left": 5, "right": 3},
                                                  "then": [], "else": []})]))
        self.assertIn("left must be a string, an array or an object", r.end("c")["error"]["message"])

    def test_truthy_missing_reference_fails(self):
        r = run(workflow([node("c", "condition", {"if": T(ref("trigger.flag")), "then": [], "else": []})]))
        self.assertEqual(r.end("c")["status"], "error")
        self.assertIn("in if", r.end("c")["error"]["message"])


class DelayNode(unittest.TestCase):
    def test_sleeps(self):
        r = run(workflow([node("d", "delay", {"ms": T(R("trigger", "ms"))})]), {"ms": 60})
        end = r.end("d")
        self.assertEqual(end["output"], {})
        self.assertGreaterEqual(end["duration_ms"], 55)
        self.assertEqual(end["input"], {"ms": 60})

    def test_bad_value(self):
        r = run(workflow([node("d", "delay", {"ms": -5})]))
        self.assertIn("non-negative", r.end("d")["error"]["message"])
        r = run(workflow([node("d", "delay", {"ms": "20"})]))
        self.assertEqual(r.end("d")["status"], "success")



def _serve(routes):
    """A threaded HTTP server on 127.0.0.1 answering GET path -> (headers, body)
    from `routes`; returns (base URL, server)."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            headers, body = routes[self.path]
            self.send_response(200)
            for k, v in headers:
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return "http://127.0.0.1:%d" % server.server_address[1], server


def _http_node(url, **params):
    p = {"method": "GET", "url": url, "headers": {}, "query": {}, "follow_redirects": True,
         "max_redirects": 10, "allow_status": [], "connection": None, "auth": None,
         "max_body_bytes": 10 << 20}
    p.update(params)
    return node("h", "http_request", p)


class HttpRequestNode(unittest.TestCase):
    """What httpbin does not send (tests/it/httpbin.rs covers the rest)."""

    def setUp(self):
        import gzip
        import zlib
        raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        text = "é" * 3000
        routes = {
            "/raw-deflate": ([("Content-Encoding", "deflate"), ("Content-Type", "text/plain; charset=utf-8")],
                             raw.compress(text.encode("utf-8")) + raw.flush()),
            "/two-members": ([("Content-Encoding", "gzip")],
                             gzip.compress(b'{"a": ') + gzip.compress(b'1}')),
            "/untyped-text": ([], "naïve".encode("utf-8")),
            "/untyped-bytes": ([], b"\xff\xfe\x00binary"),
            "/brotli": ([("Content-Encoding", "br"), ("Content-Type", "text/plain")], b"\x0b\x02\x80hi\x03"),
            "/gzip-bomb": ([("Content-Encoding", "gzip"), ("Content-Type", "text/plain")],
                           gzip.compress(b"x" * (8 << 20))),
        }
        self.base, self.server = _serve(routes)
        self.text = text

    def tearDown(self):
        self.server.shutdown()
        self.server.server_close()

    def fetch(self, path, **params):
        r = run(workflow([_http_node(self.base + path, **params)]))
        end = r.end("h")
        self.assertEqual(end["status"], "success", end)
        return end["output"]

    def test_raw_deflate_and_multi_member_gzip_are_decoded(self):
        self.assertEqual(self.fetch("/raw-deflate")["body"], self.text)
        self.assertEqual(self.fetch("/two-members")["body"], {"a": 1})

    def test_a_body_without_content_type_is_text_only_when_it_is_utf8(self):
        self.assertEqual(self.fetch("/untyped-text")["body"], "naïve")
        out = self.fetch("/untyped-bytes")
        self.assertIsNone(out["body"])
        self.assertEqual(out["body_base64"], "//4AYmluYXJ5")
        self.assertIsNone(out["content_type"])

    def test_an_encoding_the_stdlib_cannot_decode_comes_back_as_it_came(self):
        out = self.fetch("/brotli")
        self.assertIsNone(out["body"])
        self.assertEqual(out["body_base64"], "CwKAaGkD")
        self.assertEqual(out["headers"]["content-encoding"], "br")

    def test_max_body_bytes_bounds_the_decoded_body(self):
        out = self.fetch("/gzip-bomb", max_body_bytes=1000)
        self.assertEqual(out["body"], "x" * 1000)
        self.assertEqual(out["body_truncated_at"], 1000)


if __name__ == "__main__":
    unittest.main()

"""The early start's bootstrap (runtime/early.py): what the interpreter runs until the runner
hands it its execution (crates/executor/src/early.rs writes what it reads).  Each test starts
a real interpreter on it, as the runner does (`-I -S -u FILE`).
Run: python3 -m unittest discover -s runtime/tests"""
import os
import subprocess
import tempfile
import unittest

from harness import PYTHON

BOOTSTRAP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "early.py")


def header(script, env):
    """The script's path and the environment, NUL-separated, after their length (8 bytes)."""
    body = os.fsencode(script) + b"".join(b"\0" + k + b"\0" + v for k, v in env)
    return len(body).to_bytes(8, "big") + body


START_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "TZ": "UTC", "EARLY_ONLY": "1"}


def start(env=None):
    return subprocess.Popen([PYTHON, "-I", "-S", "-u", BOOTSTRAP], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=START_ENV if env is None else env)


SCRIPT = """\
# -*- coding: latin-1 -*-
import os, sys
print(sorted(os.environ.items()))
print(sys.argv == [__file__], __cached__, type(__loader__).__name__)
print(sorted(n for n in globals() if not n.startswith('__')))
print(sys.stdin.read())
print(os.popen('echo $GIVEN').read().strip())
print('\xe9')
sys.exit(int(os.environ.get('STATUS', '0')))
"""


class Bootstrap(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.script = os.path.join(self.dir.name, "script.py")
        with open(self.script, "w", encoding="latin-1") as f:
            f.write(SCRIPT)

    def tearDown(self):
        self.dir.cleanup()

    def run_it(self, script, env, stdin=b"", start_env=None):
        p = start(start_env)
        out, err = p.communicate(header(script, env) + stdin, timeout=30)
        return p.returncode, out.decode("utf-8"), err.decode("utf-8")

    def test_it_runs_the_script_as_python_file_does_with_the_environment_given(self):
        env = [(b"GIVEN", b"secret value"), (b"LANG", b"C.UTF-8"), (b"PATH", b"/usr/bin:/bin"),
               (b"STATUS", b"3")]
        for script in (self.script, self.compiled()):
            code, out, err = self.run_it(script, env, b"the trigger")
            self.assertEqual(code, 3, err)
            lines = out.splitlines()
            # Exactly the environment given (EARLY_ONLY, the one it started with, is gone),
            # for a child too.
            self.assertEqual(lines[0], repr(sorted((k.decode(), v.decode()) for k, v in env)))
            loader = "SourcelessFileLoader" if script.endswith(".pyc") else "SourceFileLoader"
            self.assertEqual(lines[1], "True None " + loader)
            # __main__ holds the script's names only, none of the bootstrap's.
            self.assertEqual(lines[2], "['os', 'sys']")
            self.assertEqual(lines[3], "the trigger")
            self.assertEqual(lines[4], "secret value")
            self.assertEqual(lines[5], "\xe9")

    def test_what_the_interpreter_set_as_it_started_stays_and_the_time_zone_follows(self):
        # No locale: the interpreter sets LC_CTYPE as it starts (PEP 538), as a cold start of
        # the execution would; the time zone given is the one the script's `time` uses.
        show = os.path.join(self.dir.name, "show.py")
        with open(show, "w") as f:
            f.write("import os, time\nprint(os.environ.get('LC_CTYPE'), time.tzname[0])\n")
        code, out, err = self.run_it(show, [(b"PATH", b"/usr/bin:/bin"), (b"TZ", b"Asia/Tokyo")],
                                     start_env={"PATH": "/usr/bin:/bin", "TZ": "UTC"})
        self.assertEqual(code, 0, err)
        cold = subprocess.run([PYTHON, "-I", "-S", "-u", show], capture_output=True, text=True,
                              env={"PATH": "/usr/bin:/bin", "TZ": "Asia/Tokyo"})
        self.assertEqual(out, cold.stdout)
        self.assertTrue(out.startswith("C.UTF-8 "), out)
        self.assertEqual(out.split()[1], "JST")

    def compiled(self):
        """The script compiled by the interpreter under test (its own magic number)."""
        pyc = self.script + "c"
        subprocess.run([PYTHON, "-I", "-S", "-c", "import py_compile, sys; "
                        "py_compile.compile(sys.argv[1], cfile=sys.argv[2], doraise=True)",
                        self.script, pyc], check=True)
        return pyc

    def test_stdin_closed_before_its_execution_ends_it_quietly(self):
        for given in (b"", b"\0\0\0", header(self.script, [])[:12]):
            p = start()
            out, err = p.communicate(given, timeout=30)
            self.assertEqual((p.returncode, out, err), (0, b"", b""))

    def test_a_failing_script_fails_as_it_would_cold(self):
        bad = os.path.join(self.dir.name, "bad.py")
        with open(bad, "w") as f:
            f.write("def f():\n    raise ValueError('from the script')\nf()\n")
        code, _out, err = self.run_it(bad, [])
        self.assertEqual(code, 1)
        self.assertIn("ValueError: from the script", err)
        self.assertIn('File "%s", line 2, in f' % bad, err)


if __name__ == "__main__":
    unittest.main()

"""command nodes with shell=true: every template value is quoted for its
place in the line (one word, inside "...", inside '...'), so hostile values
stay data. The quoting list is what codegen (crates/codegen/src/shell.rs)
emits for the line."""
import os
import tempfile
import unittest

from harness import R, T, node, run, workflow

HOSTILE = [
    "x'; echo INJECTED >&2; echo '",
    'x"; echo INJECTED >&2; echo "',
    "$(echo INJECTED >&2)",
    "`echo INJECTED >&2`",
    "a\nb; echo INJECTED >&2",
    "; echo INJECTED >&2",
    "; touch PWNED", "$(touch PWNED)", "`touch PWNED`", "x\ntouch PWNED", "> PWNED",
    "&& echo INJECTED >&2",
    "| cat >&2",
    "*", "?", "[a-z]*", "~", "~root", "{a,b}",
    "$HOME", "${HOME}", "$((1+1))", "!", "#", "# x",
    "\\", "a\\", "\\'", '\\"', "'", '"', "''", '""',
    "", " ", "-n", "--help", "-e \\x41",
    "héllo wörld ✓ 日本語 🚀",
    "LD_PRELOAD=/nope x",
    "\t tab\r\n",
]


def shell_node(id, parts, quoting, cwd):
    return node(id, "command", {
        "argv": None, "command": T(*parts), "command_quoting": quoting,
        "shell": True, "cwd": cwd, "env": {}, "stdin": None,
        "allow_failure": False, "max_output_bytes": 1048576, "connections": [],
    })


class ShellQuoting(unittest.TestCase):
    def run_lines(self, parts, quoting, values=HOSTILE):
        """One command node per value, all in one run: `parts(v)` is the line with `v` the
        reference to its value. Returns [(value, stdout, command line run)]."""
        with tempfile.TemporaryDirectory() as d:
            # A file for an unquoted glob to find.
            open(os.path.join(d, "decoy"), "w").close()
            nodes = [shell_node("c%d" % i, parts(R("trigger", "v", i)), quoting, d)
                     for i in range(len(values))]
            r = run(workflow(nodes), {"v": values})
            left = sorted(os.listdir(d))
        self.assertEqual(left, ["decoy"], "the lines created files: %r" % (left,))
        self.assertEqual(r.returncode, 0, r)
        self.assertNotIn("INJECTED", r.stderr)
        out = []
        for i, value in enumerate(values):
            o = r.output("c%d" % i)
            self.assertNotIn("INJECTED", o["stderr"], value)
            out.append((value, o["stdout"], r.end("c%d" % i)["input"]["command"]))
        return out

    def test_a_value_is_one_word(self):
        for value, out, line in self.run_lines(
                lambda v: ["printf '[%s]\\n' ", v, " --x=", v, "."], ["word", "word"]):
            self.assertEqual(out, "[%s]\n[--x=%s.]\n" % (value, value), (value, line))

    def test_a_value_inside_double_quotes(self):
        home = os.environ.get("HOME", "")
        for value, out, line in self.run_lines(
                lambda v: ["printf '[%s]\\n' \"<", v, ">\" \"$HOME-", v, "\""],
                ["double", "double"]):
            self.assertEqual(out, "[<%s>]\n[%s-%s]\n" % (value, home, value), (value, line))

    def test_a_value_inside_single_quotes(self):
        for value, out, line in self.run_lines(
                lambda v: ["printf '[%s]\\n' '<", v, ">'"], ["single"]):
            self.assertEqual(out, "[<%s>]\n" % value, (value, line))

    def test_a_value_inside_command_substitution(self):
        for value, out, line in self.run_lines(
                lambda v: ["printf '[%s]\\n' \"$(printf '%s' ", v, ")\""], ["word"]):
            self.assertEqual(out, "[%s]\n" % value.rstrip("\n"), (value, line))

    def test_non_string_values_are_their_json_text(self):
        [(_, out, _)] = self.run_lines(lambda v: ["printf '[%s]\\n' ", v], ["word"],
                                       [{"a": ["b'c", 1]}])
        self.assertEqual(out, '[{"a": ["b\'c", 1]}]\n')

    def test_a_missing_quoting_list_is_an_error_not_an_unquoted_value(self):
        wf = workflow([shell_node("cmd", ["echo ", R("trigger", "v")], None, None)])
        r = run(wf, {"v": "; echo INJECTED"})
        self.assertEqual(r.returncode, 1)
        self.assertIn("quoting", r.end("cmd")["error"]["message"])


if __name__ == "__main__":
    unittest.main()

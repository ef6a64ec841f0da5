"""The warm template's learned pages (runtime/warm/spares.py: _learn_pages, _take_pages,
_prefault): what one execution writes is read back by the template only where it lies in the
template's own writable private mappings, whatever the file holds.
Run: python3 -m unittest discover -s runtime/tests"""
import os
import socket
import tempfile
import unittest

WARM = os.path.join(os.path.dirname(__file__), "..", "warm")


def template(pages_dir):
    """template.py and spares.py (serve.py, which starts serving, left out) in a namespace of
    their own, with FLOWRUN_WARM_DIR as the runner sets it."""
    os.environ["FLOWRUN_WARM_DIR"] = pages_dir
    try:
        source = ""
        for name in ("template.py", "spares.py"):
            with open(os.path.join(WARM, name)) as f:
                source += f.read()
        ns = {"__name__": "flowrun_warm_test"}
        exec(compile(source, "template", "exec"), ns)
        return ns
    finally:
        del os.environ["FLOWRUN_WARM_DIR"]


class WithTemplate(unittest.TestCase):
    """A test case with the template's namespace (`self.ns`) and its private directory."""

    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.ns = template(self.dir.name)

    def tearDown(self):
        self.dir.cleanup()


class LearnedPages(WithTemplate):
    def setUp(self):
        super().setUp()
        self.path = os.path.join(self.dir.name, "pages")
        # As after a script is prepared.
        self.ns["_PAGES"][1] = self.path
        self.ns["_MAPS"][:] = self.ns["_writable_private"]()

    def test_what_an_execution_learns_the_template_takes_and_a_spare_copies(self):
        self.ns["_learn_pages"]()
        self.assertTrue(os.path.exists(self.path))
        self.ns["_take_pages"]()
        runs, learning = self.ns["_PAGES"]
        self.assertIsNone(learning, "learned once per script")
        self.assertFalse(os.path.exists(self.path), "the file is taken")
        self.assertGreater(sum(n for _, n in runs), 0)
        maps = self.ns["_writable_private"]()
        for lo, n in runs:
            self.assertTrue(any(a <= lo and lo + n * self.ns["_PAGE"] <= b for a, b in maps),
                            (lo, n))
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with ours, theirs:
            self.ns["_prefault"](theirs.fileno())  # writes nothing visible; must not fail

    def test_a_spare_stops_copying_ahead_once_its_request_is_there(self):
        # Runs of one page each, counted instead of copied.
        slice_ = self.ns["_PREFAULT_SLICE"]
        lo, _ = self.ns["_writable_private"]()[0]
        self.ns["_PAGES"][0] = [(lo, 1)] * (4 * slice_)
        calls = []
        self.ns["_MADVISE"] = lambda *args: calls.append(args) or 0
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with ours, theirs:
            self.ns["_prefault"](theirs.fileno())
            self.assertEqual(len(calls), 4 * slice_, "nothing waiting: all of it")
            del calls[:]
            ours.send(b'{"script": "x"}')
            self.ns["_prefault"](theirs.fileno())
            self.assertEqual(len(calls), slice_, "a request waiting: one slice, not the rest")
            self.assertEqual(theirs.recv(64), b'{"script": "x"}', "the request is left to read")
            del calls[:]
            ours.close()  # the runner lets the spare go
            self.ns["_prefault"](theirs.fileno())
            self.assertEqual(len(calls), slice_, "let go: it stops too")

    def test_a_file_of_anything_else_is_ignored_line_by_line(self):
        lo, hi = self.ns["_writable_private"]()[0]
        inside = (lo, 1)
        lines = [
            "not hex at all",
            "1 2 3",
            "%x 0" % lo,                       # an empty run
            "%x %x" % (hi, 4),                 # past the mapping's end
            "10 5",                            # not mapped here
            "%x %x" % (lo, 1 << 40),           # far too many pages
            "%x %x" % inside,
        ]
        with open(self.path, "wb") as f:
            f.write(("\n".join(lines) + "\n").encode() + b"\0\xff\xfe 12\n")
        self.ns["_take_pages"]()
        self.assertEqual(self.ns["_PAGES"][0], [inside])

    def test_a_fifo_or_a_link_there_is_not_waited_on_nor_followed(self):
        os.mkfifo(self.path)
        self.ns["_take_pages"]()  # would block for good on open() without O_NONBLOCK
        self.assertEqual(self.ns["_PAGES"], [[], None])
        target = os.path.join(self.dir.name, "elsewhere")
        lo, _ = self.ns["_writable_private"]()[0]
        with open(target, "w") as f:
            f.write("%x 1\n" % lo)
        os.symlink(target, self.path)
        self.ns["_PAGES"][1] = self.path
        self.ns["_take_pages"]()
        self.assertEqual(self.ns["_PAGES"][0], [], "a link is not followed")

    def test_an_execution_scans_only_the_templates_mappings(self):
        self.ns["_MAPS"][:] = self.ns["_MAPS"][:1]
        self.ns["_learn_pages"]()
        self.ns["_take_pages"]()
        lo, hi = self.ns["_MAPS"][0]
        for start, n in self.ns["_PAGES"][0]:
            self.assertTrue(lo <= start and start + n * self.ns["_PAGE"] <= hi)

    def test_without_a_file_nothing_changes(self):
        self.ns["_take_pages"]()
        self.assertEqual(self.ns["_PAGES"], [[], self.path])


if __name__ == "__main__":
    unittest.main()

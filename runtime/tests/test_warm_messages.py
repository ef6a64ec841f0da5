"""The warm template's messages with the runner (runtime/warm/template.py: _loads, _dumps,
_send_fds, _recv_fds), written without `json` and `socket` (their imports cost a template's
start ~10 ms): checked against those two, which the template used before.
Run: python3 -m unittest discover -s runtime/tests"""
import json
import os
import socket
import unittest

from test_warm_pages import WithTemplate


class Messages(WithTemplate):
    def test_json_reads_and_writes_as_the_json_module_does(self):
        loads, dumps = self.ns["_loads"], self.ns["_dumps"]
        # Through the C accelerator, not the `json` fallback (which this test process has loaded).
        self.assertIsNotNone(self.ns["_SCAN"])
        self.assertIsNotNone(self.ns["_ENCODE"])
        values = [
            {"seq": 7, "script": "/tmp/ä b/x.pyc", "cwd": None, "max_memory": 1 << 40},
            [["PATH", "/usr/bin"], ["NAME", "Zoë \u2603 \U0001f600"], ["EMPTY", ""]],
            {"error": 'quote " backslash \\ newline \n tab \t nul \x00', "f": 1.5e-7},
            {"gone": [], "nested": {"a": [True, False, None, -3]}},
        ]
        for value in values:
            # What serde_json sends (compact, UTF-8) and what json.dumps writes both read back.
            for text in (json.dumps(value, ensure_ascii=False, separators=(",", ":")),
                         json.dumps(value)):
                self.assertEqual(loads(text.encode("utf-8")), value)
            out = dumps(value)
            self.assertEqual(json.loads(out.decode("ascii")), value)
            self.assertEqual(out, json.dumps(value, separators=(",", ":")).encode("ascii"))

    def test_json_refuses_what_is_not_one_strict_value(self):
        loads = self.ns["_loads"]
        for bad in (b"", b"{", b'{"a": 1} {"b": 2}', b"NaN", b"[1, Infinity]", b"\xff"):
            with self.assertRaises(ValueError, msg=bad):
                loads(bad)
        self.assertEqual(loads(b'{"a": 1}\n'), {"a": 1})

    def test_descriptors_pass_as_with_the_socket_module(self):
        ns = self.ns
        ours, theirs = ns["_socket"].socketpair(ns["_socket"].AF_UNIX,
                                                 ns["_socket"].SOCK_SEQPACKET)
        std_ours = socket.socket(fileno=os.dup(ours.fileno()))
        std_theirs = socket.socket(fileno=os.dup(theirs.fileno()))
        r, w = os.pipe()
        try:
            # Ours to the socket module's, and back.
            ns["_send_fds"](ours, b'{"pid":1}', [r, w])
            msg, fds, _flags, _addr = socket.recv_fds(std_theirs, 1 << 20, 8)
            self.assertEqual((msg, len(fds)), (b'{"pid":1}', 2))
            os.write(fds[1], b"x")
            self.assertEqual(os.read(r, 1), b"x")
            socket.send_fds(std_theirs, [b"req"], fds)
            msg, got = ns["_recv_fds"](ours, 1 << 20, 3)
            self.assertEqual((msg, len(got)), (b"req", 2))
            os.write(got[1], b"y")
            self.assertEqual(os.read(fds[0], 1), b"y")
            # No descriptors at all, and more than asked for (the kernel drops the rest).
            ns["_send_fds"](ours, b"none", [])
            self.assertEqual(ns["_recv_fds"](theirs, 1 << 20, 3), (b"none", []))
            socket.send_fds(std_theirs, [b"four"], [r, w, r, w])
            msg, few = ns["_recv_fds"](ours, 1 << 20, 2)
            self.assertEqual((msg, len(few)), (b"four", 2))
            for fd in fds + got + few:
                os.close(fd)
        finally:
            for s in (ours, theirs, std_ours, std_theirs):
                s.close()
            os.close(r)
            os.close(w)


if __name__ == "__main__":
    unittest.main()

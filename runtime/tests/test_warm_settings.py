"""What the warm template puts back before it forks (runtime/warm/template.py: _attrs,
_restore): the limits and scheduling a node can change from outside, on the template or on a
spare.  Each check runs in a child process, whose own settings it changes.
Run: python3 -m unittest discover -s runtime/tests"""
import os
import resource
import unittest

from test_warm_pages import WithTemplate


def in_child(check):
    """Runs check() in a forked child: its exit status says whether it held."""
    pid = os.fork()
    if pid == 0:
        try:
            check()
            os._exit(0)
        except BaseException:
            import traceback
            traceback.print_exc()
            os._exit(1)
    return os.waitpid(pid, 0)[1] == 0


class Settings(WithTemplate):
    def test_what_a_node_changed_is_put_back(self):
        ns = self.ns

        def check():
            want = ns["_attrs"]()
            soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
            resource.setrlimit(resource.RLIMIT_FSIZE, (1000, hard))
            cpus = os.sched_getaffinity(0)
            if len(cpus) > 1:
                os.sched_setaffinity(0, {min(cpus)})
            os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
            assert ns["_attrs"]() != want
            assert ns["_restore"](want) is True
            assert ns["_attrs"]() == want, (ns["_attrs"](), want)
            assert resource.getrlimit(resource.RLIMIT_FSIZE) == (soft, hard)

        self.assertTrue(in_child(check))

    def test_what_cannot_be_put_back_is_said(self):
        ns = self.ns

        def check():
            limits, nice, cpus, policy = ns["_attrs"]()
            # A soft limit above the hard one: what no process can set, privileged or not.
            i = ns["_RLIMITS"].index(resource.RLIMIT_NOFILE)
            soft, hard = limits[i]
            if hard == resource.RLIM_INFINITY:
                hard = 1 << 20
            limits = limits[:i] + ((hard + 1, hard),) + limits[i + 1:]
            assert ns["_restore"]((limits, nice, cpus, policy)) is False
            assert ns["_restore"](None) is True, "nothing wanted: nothing to do"

        self.assertTrue(in_child(check))


if __name__ == "__main__":
    unittest.main()

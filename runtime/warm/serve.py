# ---------------------------------------------------------------------------
# flowrun warm template, part 4: the loop and W's end (runtime/warm/serve.py)
#
# Run as one source (the template's: read from descriptor 4) after template.py, supervise.py and spares.py: its last lines are
# where W, the execution, starts running the script.
# ---------------------------------------------------------------------------
def _serve(sock):
    """Answers requests and supervises executions (supervise.py) until the runner has closed its
    end and the last execution has ended.  Returns only in a worker."""
    serving = True
    _POLL.register(sock.fileno(), _POLL_IN)
    while serving or _RUNNING or _ENDING:
        try:
            # Without waiting while what ended executions left is being ended, a round a turn.
            events = _POLL.poll(1 if _ENDING else None)
        except OSError:
            # More descriptors watched than the limit an execution lowered allows.
            if not _raise_nofile():
                _give_up()
            continue
        for fd, _events in events:
            if fd != sock.fileno():
                _supervise(fd)
                continue
            try:
                msg, fds = _recv_fds(sock, 1 << 20, 8)
            except InterruptedError:
                continue
            except OSError:
                msg, fds = b"", []
            if not msg:
                # The runner is gone, or retired this template: no more requests. What runs
                # goes on; a runner that is gone closed their lifelines, which ends them.
                serving = False
                _POLL.unregister(sock.fileno())
                for fd in fds:
                    os.close(fd)
                continue
            worker = _answer(sock, msg, fds)
            if worker is not None:
                sock.detach()
                return worker
        _end_leftovers()
    _end_template()


class _Retire(Exception):
    pass


def _answer(sock, msg, fds):
    """One message of the runner's: a request (with the execution's three pipes) or a nudge.
    Returns what W runs, in W only."""
    if not fds:
        # The runner's nudge: an execution ended, the time to make the next ones' spares (see
        # _make_spare); it names the spares it used or let go of since the last one.  Or a
        # script to prepare ahead: its first executions start cold meanwhile.
        try:
            nudge = _loads(msg)
            if "prepare" in nudge:
                _prepare(nudge["prepare"])
                return None
            _MADE.difference_update(nudge["gone"])
        except Exception:
            return None
        while len(_MADE) < _MAX_SPARES and _restore(_OWN):
            count = len(_MADE)
            try:
                spare = _make_spare(sock)
            except Exception:
                break  # no descriptors or processes to spare now: requests are forked
            if spare is not None:
                return _spare_wait(spare)  # in the spare's W only
            if len(_MADE) == count:
                break  # none can be made
        return None
    reply, ends = {}, None
    try:
        req = _loads(msg)
        if not _restore(_OWN):
            # Changed from outside beyond what it can undo (a hard limit lowered, a niceness
            # raised): every W would inherit it.  An answer without `seq` retires the template
            # (crates/executor/src/warm/template.rs); this execution and the next start cold.
            raise _Retire("its limits or scheduling were changed from outside")
        reply["seq"] = req.get("seq")
        if len(fds) != 3:
            raise ValueError("expected 3 descriptors, got %d" % len(fds))
        kind, value = _start(req, fds)
        if kind == "worker":
            return value
        reply["pid"], ends = value
    except _Retire as e:
        reply = {"retire": str(e)}
    except Exception as e:
        reply["error"] = ("%s: %s" % (type(e).__name__, e))[:2000]
    for fd in fds:
        os.close(fd)
    try:
        _send_fds(sock, _dumps(reply), list(ends or ()))
    except OSError:
        pass  # the runner is gone: the execution's lifeline closes below, and it is ended
    if ends is not None:
        _close_ends(ends)
    return None


def _end_template():
    """The runner is done with this template: what it learned goes, and so does it.  The
    directory is removed through a descriptor, never by following a path an execution could
    have changed (its W knows the path and runs workflow code): a link put in its place is not
    followed, and what is inside is unlinked, never followed either."""
    if _PAGES_DIR is not None:
        try:
            fd = os.open(_PAGES_DIR, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            fd = None  # gone, or no longer the directory it was
        if fd is not None:
            try:
                _empty(fd, 16)
                os.rmdir(_PAGES_DIR)
            except OSError:
                pass
            finally:
                os.close(fd)
    os._exit(0)


def _empty(fd, depth):
    """Removes what the directory open at `fd` holds, through descriptors only (no link is
    followed): files, and directories an execution may have made there, `depth` levels deep."""
    for name in os.listdir(fd):
        try:
            os.unlink(name, dir_fd=fd)
            continue
        except OSError:
            pass
        if depth <= 0:
            continue
        try:
            sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                          dir_fd=fd)
        except OSError:
            continue
        try:
            os.fchmod(sub, 0o700)  # one an execution made unwritable
        except OSError:
            pass
        try:
            _empty(sub, depth - 1)
        except OSError:
            pass
        finally:
            os.close(sub)
        try:
            os.rmdir(name, dir_fd=fd)
        except OSError:
            pass


def _template_main():
    # Not dumpable (PR_SET_DUMPABLE 0), as the runner is not: an execution is the same user's
    # process and must not trace the template (and run code in it, outside any execution) or
    # read its memory through /proc. Its W are made dumpable again (_worker_setup).
    if _PRCTL is not None:
        _PRCTL(4, ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))
    # A pause request (SIGUSR1, see runtime/core/66_limits.py) that reaches an execution before
    # its runtime installed the handler is ignored, as in a cold start, not fatal (the runner
    # asks again at the runtime's first event: crates/executor/src/run.rs).
    _signal.signal(_signal.SIGUSR1, _signal.SIG_IGN)
    sock = _socket.socket(fileno=3)
    # Supervising executions takes being their subreaper and pidfds (Linux 5.3): without them the
    # runner starts every execution cold.
    try:
        os.close(os.pidfd_open(os.getpid()))  # not only in the library: in the kernel too
        supervised = _subreaper()
    except (AttributeError, OSError):
        supervised = False
    if not supervised:
        sock.send(_dumps({"error": "no pidfd_open or no child subreaper here"}))
        os._exit(0)
    global _COLD, _OWN
    _COLD = _attrs()
    # As many descriptors as it may: three per execution it supervises.
    _raise_nofile()
    _OWN = _attrs()
    sock.send(_dumps({"ready": os.getpid()}))
    return _serve(sock)


# An unhandled KeyboardInterrupt, as _finish is told: no value a SystemExit could carry.
_INTERRUPTED = object()


def _finish(status):
    """Ends W the way the interpreter would after the script — non-daemon threads joined,
    atexit handlers run, streams flushed, the exit status of SystemExit (its code's low byte,
    as C's exit takes it; anything but an int printed, and 1), an unhandled Ctrl-C by SIGINT
    itself — but with os._exit, since freeing every preloaded module at finalization costs more
    than the execution."""
    try:
        if "threading" in sys.modules:
            sys.modules["threading"]._shutdown()
        import atexit
        atexit._run_exitfuncs()
    except BaseException:
        pass
    interrupted = status is _INTERRUPTED
    if interrupted:
        status = 128 + _signal.SIGINT  # should the signal not end it (blocked): as a shell says
    elif status is None:
        status = 0
    elif isinstance(status, int):
        # CPython reads the code as a C long (out of range: -1) and exits with it.
        status = status & 0xFF if -(1 << 63) <= status < (1 << 63) else 0xFF
    else:
        try:
            sys.stderr.write(str(status) + "\n")
        except BaseException:
            pass
        status = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass
    _learn_pages()
    if interrupted:
        # Like the interpreter after an unhandled Ctrl-C: end by the signal itself.
        _signal.signal(_signal.SIGINT, _signal.SIG_DFL)
        os.kill(os.getpid(), _signal.SIGINT)
    os._exit(status)


_prepared, _script = _template_main()
# From here on this process is W, the execution: the prepared script becomes `__main__`, as it
# is under a cold `python script`, and its last line, `main(WORKFLOW)`, runs right from here, so
# that the stack a node sees is a cold one's with this file's frame under it.
sys.modules["__main__"] = _prepared[0]
del _template_main, _serve, _answer, _start
try:
    exec(_prepared[1], _prepared[0].__dict__)
    _status = 0
except SystemExit as _e:
    _status = _e.code
except KeyboardInterrupt:
    _status = _INTERRUPTED
except BaseException:
    _kind, _value, _tb = sys.exc_info()
    sys.excepthook(_kind, _value, _tb.tb_next)  # from the script's frame on, as cold
    _status = 1
_finish(_status)

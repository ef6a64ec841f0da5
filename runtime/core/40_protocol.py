# ---------------------------------------------------------------------------
# runtime/core/40_protocol.py: JSON output, always strict, one line
# ---------------------------------------------------------------------------

def _sanitize_key(k):
    if isinstance(k, str):
        return k
    if k is None:
        return "null"
    if k is True:
        return "true"
    if k is False:
        return "false"
    if isinstance(k, int):
        return str(int(k))
    if isinstance(k, float):
        return repr(float(k))
    if isinstance(k, (bytes, bytearray)):
        return bytes(k).decode("utf-8", "replace")
    return _safe_repr(k)


def _safe_repr(v):
    try:
        return repr(v)
    except Exception:
        return "<unrepresentable %s>" % type(v).__name__


def _sanitize(v, stack, depth):
    """Turn anything into strict-JSON-able data (see module doc)."""
    t = type(v)
    if v is None or t is str or t is bool or t is int:
        return v
    if t is float:
        return v if v - v == 0.0 else None  # NaN and +-Infinity -> null
    if depth > _SANITIZE_MAX_DEPTH:
        return "<too deep>"
    if isinstance(v, dict):
        if id(v) in stack:
            return "<cycle>"
        stack.add(id(v))
        try:
            out = {}
            for k, x in list(v.items()):
                out[_sanitize_key(k)] = _sanitize(x, stack, depth + 1)
        finally:
            stack.discard(id(v))
        return out
    if isinstance(v, (list, tuple)):
        if id(v) in stack:
            return "<cycle>"
        stack.add(id(v))
        try:
            out = [_sanitize(x, stack, depth + 1) for x in v]
        finally:
            stack.discard(id(v))
        return out
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).decode("utf-8", "replace")
    if isinstance(v, bool):
        return bool(v)
    if isinstance(v, int):
        return int(v)
    if isinstance(v, float):
        f = float(v)
        return f if f - f == 0.0 else None
    if isinstance(v, str):
        return str(v)
    return _safe_repr(v)


def _dumps(v):
    """Compact strict JSON text of any value, nested at most _SANITIZE_MAX_DEPTH levels (deeper
    is "<too deep>"): the runner refuses a deeper event whole, and would lose the node's end."""
    try:
        text = _encode_json(v, ",", ":")
    except (TypeError, ValueError, RecursionError):
        return _encode_json(_sanitize(v, set(), 0), ",", ":")
    # Fewer brackets than levels allowed (counted at C speed, strings' included) cannot be too
    # deep: only a value with that many containers is walked.
    if text.count("[") + text.count("{") > _SANITIZE_MAX_DEPTH and _too_deep(v):
        return _encode_json(_sanitize(v, set(), 0), ",", ":")
    return text


def _too_deep(v):
    """Whether containers nest more than _SANITIZE_MAX_DEPTH levels in v (without recursion)."""
    todo = [(v, 0)]
    while todo:
        x, depth = todo.pop()
        if depth > _SANITIZE_MAX_DEPTH:
            return True
        if isinstance(x, dict):
            todo.extend((y, depth + 1) for y in x.values() if isinstance(y, (dict, list, tuple)))
        elif isinstance(x, (list, tuple)):
            todo.extend((y, depth + 1) for y in x if isinstance(y, (dict, list, tuple)))
    return False


def _payload(v):
    """JSON text of an event/result payload, replaced by a truncation marker
    when it is larger than FLOWRUN_MAX_PAYLOAD_BYTES."""
    text = _dumps(v)
    limit = _STATE.max_payload
    if len(text) * 4 <= limit:
        return text
    size = len(text.encode("utf-8", "surrogatepass"))
    if size <= limit:
        return text
    return _dumps({"$flowrun_truncated": True, "bytes": size, "preview": text[:_PREVIEW_CHARS]})


def _cut(text, n):
    if len(text) <= n:
        return text
    total = len(text.encode("utf-8", "surrogatepass"))
    return text[:n] + "\n... [flowrun: truncated, %d bytes in total]" % total


def _fit_text(text):
    """text, cut so that its JSON form stays within the payload cap."""
    limit = _STATE.max_payload
    if len(text) * 6 <= limit:
        return text
    n = max(256, limit // 4)
    while True:
        cut = _cut(text, n)
        if len(_dumps(cut).encode("utf-8", "surrogatepass")) <= limit or n <= 256:
            return cut
        n //= 2


def _error_payload(err):
    """Errors keep their shape ({type, message, traceback[, node]}) so the
    runner can always parse them: oversized message/traceback strings are
    cut instead of replacing the whole object."""
    if err is None:
        return "null"
    text = _dumps(err)
    limit = _STATE.max_payload
    if len(text) * 4 <= limit or len(text.encode("utf-8", "surrogatepass")) <= limit:
        return text
    err = dict(err)
    n = max(256, limit // 8)
    while True:
        for k in ("message", "traceback"):
            if isinstance(err.get(k), str):
                err[k] = _cut(err[k], n)
        text = _dumps(err)
        if len(text.encode("utf-8", "surrogatepass")) <= limit or n <= 256:
            return text
        n //= 2


# ---------------------------------------------------------------------------
# Output streams and the protocol writer
# ---------------------------------------------------------------------------

class _BinTracker(object):
    """Proxy for sys.stdout.buffer that keeps the line-start state of its
    text proxy up to date."""

    def __init__(self, owner, raw):
        self._owner = owner
        self._raw = raw

    def write(self, data):
        if _STATE.by_thread and getattr(_OUTPUT_OWNER, "node", None) is not None:
            _node_output(self._owner.name, bytes(data).decode("utf-8", "replace"))
            return len(data)
        try:
            self._owner._stream.flush()  # keep order with buffered text
        except Exception:
            pass
        n = self._raw.write(data)
        if data:
            self._owner.at_line_start = bytes(data[-1:]) == b"\n"
        return n

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def __getattr__(self, name):
        return getattr(self._raw, name)


class _LineTracker(object):
    """Proxy for sys.stdout / sys.stderr: forwards everything, remembers
    whether the last character written ended a line."""

    def __init__(self, stream, name):
        self._stream = stream
        self.name = name
        self.at_line_start = True
        self._buffer = None

    def write(self, s):
        if _STATE.by_thread and getattr(_OUTPUT_OWNER, "node", None) is not None:
            _node_output(self.name, s)
            return len(s)
        n = self._stream.write(s)
        if s:
            self.at_line_start = s[-1] == "\n"
        return n

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    @property
    def buffer(self):
        if self._buffer is None:
            self._buffer = _BinTracker(self, self._stream.buffer)
        return self._buffer

    def __getattr__(self, name):
        return getattr(self._stream, name)


class _State(object):
    def __init__(self):
        self.prefix = b""
        self.max_payload = _DEFAULT_MAX_PAYLOAD
        self.out = None
        self.err = None
        self.lock = None
        # Nodes run side by side: their output is attributed per thread (_node_output).
        self.by_thread = False
        # The result is out: nothing more goes out, whichever thread is still running (a node
        # or item left running by a failure, see 64_schedule.py and 62_loops.py).
        self.closed = False
        # Guards the run's shared results when nodes or items run in threads.
        self.run_lock = _thread.allocate_lock()


_STATE = _State()

# Which node (and item or iteration) the current thread runs, for attributing its output.
_OUTPUT_OWNER = _thread._local()

# Longest partial line kept per thread and stream before it goes out as a line of its own.
_NODE_LINE_MAX = 65536


def _node_output(stream, text):
    """Output of a node running beside others: each complete line goes out as a
    `log` event naming the node and the stream."""
    pending = getattr(_OUTPUT_OWNER, "pending", None)
    if pending is None:
        pending = _OUTPUT_OWNER.pending = {}
    buf = pending.get(stream, "") + text
    lines = buf.split("\n")
    rest = lines.pop()
    if len(rest) > _NODE_LINE_MAX:
        lines.append(rest)
        rest = ""
    pending[stream] = rest
    for line in lines:
        emit_log(_OUTPUT_OWNER.node, None, line, stream, getattr(_OUTPUT_OWNER, "part", None))


def _flush_node_output():
    """Sends what the current thread's node printed without a final newline."""
    pending = getattr(_OUTPUT_OWNER, "pending", None)
    if not pending or getattr(_OUTPUT_OWNER, "node", None) is None:
        return
    for stream in sorted(pending):
        if pending[stream]:
            emit_log(_OUTPUT_OWNER.node, None, pending[stream], stream,
                     getattr(_OUTPUT_OWNER, "part", None))
    pending.clear()


def _now_ms():
    return int(time.time() * 1000)


def _write_all(data):
    while data:
        try:
            n = os.write(1, data)
        except BlockingIOError:
            import select
            select.select([], [1], [], 1.0)
            continue
        except BrokenPipeError:
            os._exit(1)  # nobody reads the protocol any more
        data = data[n:]


def _flush_streams():
    for s in (sys.stdout, sys.stderr, _STATE.out, _STATE.err):
        if s is not None:
            try:
                s.flush()
            except Exception:
                pass


def _encode(text):
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: never emit invalid UTF-8
        return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace").encode("utf-8")


def _emit_lines(lines, stderr_mark=None, last=False):
    """Write protocol lines (bytes, without newline) so that the first one
    starts at the beginning of a line, after everything printed so far.
    `stderr_mark` (bytes) goes to stderr first, as a line of its own: stdout
    and stderr reach the runner through separate pipes, so it is what tells
    the runner which node the stderr lines around it belong to.  `last`: the
    result, after which nothing is written (an event after it would be a
    protocol error on the record)."""
    lock = _STATE.lock
    if lock is not None:
        lock.acquire()
    try:
        if _STATE.closed:
            return
        _STATE.closed = last
        _flush_streams()
        err = _STATE.err
        if err is not None and not err.at_line_start:
            try:
                err._stream.write("\n")
                err._stream.flush()
                err.at_line_start = True
            except Exception:
                pass
        if stderr_mark is not None:
            _write_fd(2, _STATE.prefix + stderr_mark + b"\n")
        data = b"\n".join(lines) + b"\n"
        out = _STATE.out
        if out is not None and not out.at_line_start:
            data = b"\n" + data
        _write_all(data)
        if out is not None:
            out.at_line_start = True
    finally:
        if lock is not None:
            lock.release()


def _emit_event(fields, stderr_mark=None):
    """fields: list of (key, json_text) pairs."""
    body = ",".join('"' + k + '":' + v for k, v in fields)
    _emit_lines([_STATE.prefix + b"event " + _encode("{" + body + "}")], stderr_mark)


def _write_fd(fd, data):
    while data:
        try:
            n = os.write(fd, data)
        except BlockingIOError:
            import select
            select.select([], [fd], [], 1.0)
            continue
        except OSError:
            return
        data = data[n:]


def _ms(value):
    value = float(value)
    if value - value != 0.0:
        value = 0.0
    return repr(round(value, 3))


def emit_log(node_id, level, message, stream=None, part=None):
    fields = [
        ("event", '"log"'),
        ("node", _dumps(node_id)),
        ("level", _dumps(level)),
        ("message", _dumps(_fit_text(message))),
        ("ts", str(_now_ms())),
    ]
    if stream is not None:
        fields.append(("stream", _dumps(stream)))
    if part is not None:
        fields.append((part[0], str(int(part[1]))))
    _emit_event(fields)


_LOG_LEVELS = {"info": "info", "warning": "warning", "warn": "warning",
               "error": "error", "debug": "debug"}

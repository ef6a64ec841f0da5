# ---------------------------------------------------------------------------
# flowrun runtime: core
#
# The generated script is the concatenation of this file, one file per node
# type used by the workflow (runtime/nodes/<type>.py, sorted by type name) and
# a `WORKFLOW = {...}` literal followed by `main(WORKFLOW)`.  Everything lives
# in one module namespace, so:
#
#   * node files never import this file; they use its globals directly;
#   * names private to a node file are prefixed `_<type>_` to avoid clashes;
#   * top-level imports here stay cheap (os, sys, time, and the C module _json);
#     anything else is imported inside the function that needs it (startup
#     time matters: the `json` package alone pulls in `re` and `enum`, ~7 ms,
#     so JSON goes through the C accelerator `_json` directly, with a fallback
#     to `json` where `_json` is missing).
#
# Node file API (what runtime/nodes/<type>.py may use):
#
#   HANDLERS["<type>"] = handler         register the node type
#   handler(ctx, params) -> output       params are already rendered (every
#                                        _T replaced by its value), unless the
#                                        handler has `handler.raw_params = True`
#                                        (it then calls render() itself)
#   ctx.id, ctx.node (the WORKFLOW node dict), ctx.attempt, ctx.scope
#   ({"trigger", "nodes", "execution"}), ctx.input (what node_end records as
#   "input"; defaults to the rendered params, a handler may replace it),
#   ctx.log(*args, level="info"), ctx.timeout_ms
#   render(value, scope, lenient=False)  evaluate templates inside value
#   to_text(value)                       text form used for interpolation
#   plain_copy(value)                    deep copy of dicts/lists
#   NodeError(message, error_type=None)  a failure reported without a Python
#                                        traceback of the runtime itself
#
# The protocol, scheduling and data rules are the contract in DESIGN.md
# ("Child-process protocol"); runtime/README.md lists the decisions taken
# here, and runtime/tests/ shows each of them at work.
# ---------------------------------------------------------------------------
import os
import sys
import time

HANDLERS = {}

_DEFAULT_MAX_PAYLOAD = 1048576
_PREVIEW_CHARS = 1024
_SANITIZE_MAX_DEPTH = 400
_OK_STATUSES = ("success", "pinned", "reused")
_MAX_BACKOFF_MS = 86400000  # a day: the runner's timeouts end such a run anyway


# ---------------------------------------------------------------------------
# JSON codec on top of the C accelerator
# ---------------------------------------------------------------------------

def _json_default(o):
    if isinstance(o, (bytes, bytearray, memoryview)):
        return bytes(o).decode("utf-8", "replace")
    return _safe_repr(o)


def _reject_constant(name):
    raise ValueError("%s is not valid JSON" % name)


class _ScanContext(object):
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = staticmethod(_reject_constant)


try:
    import _json

    def _encode_json(value, item_sep, key_sep):
        """JSON text; raises ValueError (NaN, cycle), TypeError (odd key) or
        RecursionError, which callers turn into the sanitized form."""
        enc = _json.make_encoder({}, _json_default, _json.encode_basestring, None,
                                 key_sep, item_sep, False, False, False)
        return "".join(enc(value, 0))

    _json_scan = _json.make_scanner(_ScanContext())

    def _decode_json(text):
        """Strict JSON (no NaN/Infinity) -> value; ValueError with position."""
        ws = " \t\n\r"
        i = 0
        n = len(text)
        while i < n and text[i] in ws:
            i += 1
        try:
            value, end = _json_scan(text, i)
        except StopIteration as e:
            raise ValueError("Expecting value: %s" % _json_pos(text, e.value))
        except SystemError:
            # CPython 3.11's scanner cannot build its JSONDecodeError unless
            # json.decoder is already imported: parse again with `json` for
            # the proper message (error path only).
            import json
            return json.loads(text, parse_constant=_reject_constant)
        while end < n and text[end] in ws:
            end += 1
        if end != n:
            raise ValueError("Extra data: %s" % _json_pos(text, end))
        return value
except (ImportError, AttributeError, TypeError):  # pragma: no cover - no _json
    def _encode_json(value, item_sep, key_sep):
        import json
        return json.dumps(value, ensure_ascii=False, allow_nan=False, default=_json_default,
                          separators=(item_sep, key_sep))

    def _decode_json(text):
        import json
        return json.loads(text, parse_constant=_reject_constant)


def _json_pos(text, pos):
    line = text.count("\n", 0, pos) + 1
    col = pos - text.rfind("\n", 0, pos)
    return "line %d column %d (char %d)" % (line, col, pos)


def _quote(s):
    """JSON string literal of a str."""
    return _encode_json(s, ",", ":")


# ---------------------------------------------------------------------------
# Templates
# ---------------------------------------------------------------------------

class _R(object):
    """A reference path: root ('trigger', 'nodes', 'execution'), then keys
    (str) and list indexes (int)."""

    __slots__ = ("path",)

    def __init__(self, *path):
        self.path = path

    def __repr__(self):
        return "_R(" + ", ".join(repr(p) for p in self.path) + ")"


class _T(object):
    """A template: literal text parts (str) and references (_R)."""

    __slots__ = ("parts",)

    def __init__(self, *parts):
        self.parts = parts

    def __repr__(self):
        return "_T(" + ", ".join(repr(p) for p in self.parts) + ")"


class NodeError(Exception):
    """A node failure whose message says it all: its traceback is just the
    `Type: message` line, not the runtime's own frames."""

    def __init__(self, message, error_type=None):
        Exception.__init__(self, message)
        if error_type:
            self.error_type = error_type


class TemplateError(NodeError):
    """A template reference that cannot be resolved."""

    def __init__(self, ref_text, detail):
        NodeError.__init__(self, detail)
        self.ref_text = ref_text
        self.detail = detail
        self.loc = []  # param location, innermost first (filled while unwinding)

    def __str__(self):
        msg = "template {{ " + self.ref_text + " }}"
        if self.loc:
            msg += " in " + _path_text(tuple(reversed(self.loc)))
        return msg + ": " + self.detail


def _is_plain_key(key):
    if not key or key.isdigit():
        return False
    for c in key:
        if not (c.isalnum() or c == "_" or c == "-"):
            return False
    return True


def _path_text(path):
    """('nodes','ask','output','a',0) -> 'nodes.ask.output.a[0]'"""
    out = ""
    for p in path:
        if isinstance(p, int) and not isinstance(p, bool):
            out += "[%d]" % p
        elif isinstance(p, str) and _is_plain_key(p):
            out += ("." + p) if out else p
        else:
            out += "[" + _quote(p if isinstance(p, str) else str(p)) + "]"
    return out


def _json_type(v):
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, (int, float)):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, (list, tuple)):
        return "an array"
    if isinstance(v, dict):
        return "an object"
    return "a " + type(v).__name__


def _key_list(d):
    keys = [str(k) for k in d]
    if not keys:
        return "the object is empty"
    text = ", ".join(keys[:10])
    if len(keys) > 10:
        text += ", ... (%d more)" % (len(keys) - 10)
    return "available keys: " + text


def _null_hint(path, i, scope):
    """Why is the value at path[:i] null?  Explains failed/skipped nodes."""
    if path[0] == "nodes" and i == 3 and len(path) > 2:
        entry = scope.get("nodes", {}).get(path[1])
        if isinstance(entry, dict) and entry.get("status") not in _OK_STATUSES:
            hint = " (node %s has status %s" % (path[1], entry.get("status"))
            err = entry.get("error")
            if isinstance(err, dict):
                hint += ": %s: %s" % (err.get("type"), err.get("message"))
            return hint + ")"
    return ""


def _resolve(ref, scope, lenient):
    path = ref.path
    if not path:
        raise TemplateError("", "empty reference")
    root = path[0]
    if root not in scope:
        if lenient:
            return None
        raise TemplateError(_path_text(path), "unknown root %r (expected trigger, nodes or execution)" % (root,))
    cur = scope[root]
    for i in range(1, len(path)):
        key = path[i]
        is_index = isinstance(key, int) and not isinstance(key, bool)
        if isinstance(cur, dict):
            if key in cur:
                cur = cur[key]
                continue
            if is_index and str(key) in cur:
                cur = cur[str(key)]
                continue
            if lenient:
                return None
            where = _path_text(path[:i])
            if root == "nodes" and i == 1:
                detail = "node %r has no result (it has not run before this node); finished nodes: %s" % (
                    key, ", ".join(str(k) for k in cur) or "none")
            else:
                detail = "key %r not found in %s; %s" % (
                    key if not is_index else str(key), where, _key_list(cur))
            raise TemplateError(_path_text(path), detail)
        elif isinstance(cur, (list, tuple)):
            idx = None
            if is_index:
                idx = key
            elif isinstance(key, str) and key.isdigit():
                idx = int(key)
            if idx is not None and -len(cur) <= idx < len(cur):
                cur = cur[idx]
                continue
            if lenient:
                return None
            where = _path_text(path[:i])
            if idx is None:
                detail = "cannot read key %r of %s: it is an array (length %d), not an object" % (key, where, len(cur))
            else:
                detail = "index %d out of range in %s (array of length %d)" % (idx, where, len(cur))
            raise TemplateError(_path_text(path), detail)
        else:
            if lenient:
                return None
            where = _path_text(path[:i])
            what = ("index %d" % key) if is_index else ("key %r" % (key,))
            detail = "cannot read %s of %s: it is %s" % (what, where, _json_type(cur))
            if cur is None:
                detail += _null_hint(path, i, scope)
            raise TemplateError(_path_text(path), detail)
    return cur


def plain_copy(value, _memo=None):
    """Deep copy of dicts and lists (tuples become lists); other values are
    shared.  Cycles are preserved."""
    t = type(value)
    if t is str or t is int or t is float or t is bool or value is None:
        return value
    if isinstance(value, dict):
        if _memo is None:
            _memo = {}
        got = _memo.get(id(value))
        if got is not None:
            return got
        out = {}
        _memo[id(value)] = out
        for k, v in value.items():
            out[k] = plain_copy(v, _memo)
        return out
    if isinstance(value, (list, tuple)):
        if _memo is None:
            _memo = {}
        got = _memo.get(id(value))
        if got is not None:
            return got
        out = []
        _memo[id(value)] = out
        for v in value:
            out.append(plain_copy(v, _memo))
        return out
    return value


def to_text(value):
    """Text form of a value inside an interpolated template: strings as they
    are, anything else as JSON like json.dumps(v, ensure_ascii=False) (", "
    and ": " separators).  A value JSON cannot represent is first turned into
    what the events show for it (bytes -> decoded text, set/object -> repr),
    so interpolating it gives the same text as interpolating that."""
    if isinstance(value, str):
        return value
    if not (value is None or isinstance(value, (bool, int, float, dict, list, tuple))):
        value = _sanitize(value, set(), 0)
        if isinstance(value, str):
            return value
    try:
        return _encode_json(value, ", ", ": ")
    except (TypeError, ValueError, RecursionError):
        return _encode_json(_sanitize(value, set(), 0), ", ", ": ")


def _render_template(tpl, scope, lenient):
    parts = tpl.parts
    if len(parts) == 1 and type(parts[0]) is _R:
        return plain_copy(_resolve(parts[0], scope, lenient))
    chunks = []
    for p in parts:
        if type(p) is str:
            chunks.append(p)
        elif type(p) is _R:
            chunks.append(to_text(_resolve(p, scope, lenient)))
        else:
            chunks.append(to_text(p))
    return "".join(chunks)


def render(value, scope, lenient=False):
    """Return a plain-data copy of value with every _T (and bare _R)
    evaluated against scope = {"trigger", "nodes", "execution"}.  A reference
    that cannot be resolved raises TemplateError, or gives None if lenient."""
    t = type(value)
    if t is _T:
        return _render_template(value, scope, lenient)
    if t is _R:
        return plain_copy(_resolve(value, scope, lenient))
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            try:
                out[k] = render(v, scope, lenient)
            except TemplateError as e:
                e.loc.append(k)
                raise
        return out
    if isinstance(value, (list, tuple)):
        out = []
        for i, v in enumerate(value):
            try:
                out.append(render(v, scope, lenient))
            except TemplateError as e:
                e.loc.append(i)
                raise
        return out
    return value


# ---------------------------------------------------------------------------
# JSON output: always strict, one line
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
    """Compact strict JSON text of any value."""
    try:
        return _encode_json(v, ",", ":")
    except (TypeError, ValueError, RecursionError):
        return _encode_json(_sanitize(v, set(), 0), ",", ":")


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

    def __init__(self, stream):
        self._stream = stream
        self.at_line_start = True
        self._buffer = None

    def write(self, s):
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


_STATE = _State()


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


def _emit_lines(lines, stderr_mark=None):
    """Write protocol lines (bytes, without newline) so that the first one
    starts at the beginning of a line, after everything printed so far.
    `stderr_mark` (bytes) goes to stderr first, as a line of its own: stdout
    and stderr reach the runner through separate pipes, so it is what tells
    the runner which node the stderr lines around it belong to."""
    lock = _STATE.lock
    if lock is not None:
        lock.acquire()
    try:
        _flush_streams()
        err = _STATE.err
        if err is not None and not err.at_line_start:
            try:
                err.write("\n")
                err.flush()
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


def emit_log(node_id, level, message):
    _emit_event([
        ("event", '"log"'),
        ("node", _dumps(node_id)),
        ("level", _dumps(level)),
        ("message", _dumps(_fit_text(message))),
        ("ts", str(_now_ms())),
    ])


_LOG_LEVELS = {"info": "info", "warning": "warning", "warn": "warning",
               "error": "error", "debug": "debug"}


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------

_CODE_SOURCES = {}  # "<node ID>" -> source, for linecache (see register_source)


def register_source(filename, source, eager=False):
    """Make `source` visible to tracebacks under `filename`.  Importing
    linecache costs ~7 ms, so unless `eager` (the source itself formats
    tracebacks) the registration happens now only if linecache is already
    loaded, and otherwise when the runtime formats a node error."""
    _CODE_SOURCES[filename] = source
    if eager and "linecache" not in sys.modules:
        import linecache  # noqa: F401
    if "linecache" in sys.modules:
        _linecache_put(sys.modules["linecache"], filename, source)


def _linecache_put(linecache, filename, source):
    lines = source.splitlines(True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    linecache.cache[filename] = (len(source), None, lines, filename)


def _own_file():
    return _own_file.__code__.co_filename


def _format_traceback(exc):
    if isinstance(exc, NodeError):
        return "%s: %s\n" % (_error_type(exc), exc)
    import linecache
    import traceback
    for fn, src in _CODE_SOURCES.items():
        if fn not in linecache.cache:
            _linecache_put(linecache, fn, src)
    own = _own_file()
    tbs = []
    tb = exc.__traceback__
    while tb is not None:
        tbs.append(tb)
        tb = tb.tb_next
    start = None
    for t in tbs:
        if t.tb_frame.f_code.co_filename != own:
            start = t
            break
    if start is None and isinstance(exc, SyntaxError):
        return "".join(traceback.format_exception_only(type(exc), exc))
    if start is None:
        start = exc.__traceback__
    return "".join(traceback.format_exception(type(exc), exc, start))


def _error_type(exc):
    return getattr(exc, "error_type", None) or type(exc).__name__


def _memory_message(message):
    """MemoryError usually has no message: say what ran out, and name the limit when the runner
    set one (`flowrun run --max-memory-mb`, passed as FLOWRUN_MAX_MEMORY_MB)."""
    text = "out of memory"
    limit = os.environ.get("FLOWRUN_MAX_MEMORY_MB")
    if limit:
        text += (" (the workflow's process is limited to %s MiB of address space"
                 " by --max-memory-mb)" % limit)
    return text + (": " + message if message else "")


def _error_info(exc):
    try:
        message = str(exc)
    except Exception:
        message = _safe_repr(exc)
    if isinstance(exc, SystemExit):
        message = "sys.exit(%s) called in the node" % ("" if exc.code is None else _safe_repr(exc.code))
    elif isinstance(exc, MemoryError):
        message = _memory_message(message)
    try:
        tb = _format_traceback(exc)
    except Exception as e2:  # never let formatting hide the real error
        tb = "%s: %s\n(traceback unavailable: %s)\n" % (_error_type(exc), message, _safe_repr(e2))
    return {"type": _error_type(exc), "message": message, "traceback": tb}


# ---------------------------------------------------------------------------
# Nodes
# ---------------------------------------------------------------------------

class _Ctx(object):
    """What a handler gets besides its params."""

    def __init__(self, node, scope, attempt):
        self.node = node
        self.id = node.get("id")
        self.scope = scope
        self.attempt = attempt
        self.input = None
        self.timeout_ms = node.get("timeout_ms")

    def log(self, *args, **kwargs):
        level = kwargs.pop("level", "info")
        if kwargs:
            raise TypeError("log() got unexpected keyword arguments: " + ", ".join(sorted(kwargs)))
        lv = _LOG_LEVELS.get(str(level).lower())
        if lv is None:
            raise ValueError("log(): level must be one of info, warning, error, debug (got %r)" % (level,))
        emit_log(self.id, lv, " ".join(to_text(a) for a in args))

    def dep_outputs(self):
        """{dep id: output} of the node's direct upstream nodes."""
        out = {}
        nodes = self.scope["nodes"]
        for dep in self.node.get("deps") or ():
            entry = nodes.get(dep)
            if entry is not None:
                out[dep] = entry.get("output")
            elif dep == "trigger":
                out[dep] = self.scope["trigger"]
        return out


def _skip_reason(node, results):
    for dep in node.get("deps") or ():
        entry = results.get(dep)
        if entry is not None and entry["status"] == "skipped":
            return "upstream node %s was skipped" % dep
    for guard in node.get("guards") or ():
        cond, branch = guard[0], guard[1]
        entry = results.get(cond)
        if entry is None or entry["status"] not in _OK_STATUSES:
            return "condition %s did not run successfully" % cond
        out = entry["output"]
        result = out.get("result") if isinstance(out, dict) else None
        if bool(result) != bool(branch):
            return "condition %s is %s" % (cond, "true" if result else "false")
    return None


class _Run(object):
    def __init__(self, workflow, trigger, execution):
        self.workflow = workflow
        self.results = {}
        self.scope = {"trigger": trigger, "nodes": self.results, "execution": execution}
        self.summaries = []
        self.last_output = None
        self.error = None
        self.fatal = False

    def node_end(self, node_id, status, attempt, duration, input_, output, error, extra=None):
        fields = [
            ("event", '"node_end"'),
            ("node", _dumps(node_id)),
            ("status", _dumps(status)),
            ("attempt", str(int(attempt))),
            ("duration_ms", _ms(duration)),
            ("ts", str(_now_ms())),
            ("input", _payload(input_)),
            ("output", _payload(output)),
            ("error", _error_payload(error)),
        ]
        if extra:
            for k, v in extra:
                fields.append((k, _dumps(v)))
        # stderr written from here on belongs to no node (until the next node_start).
        _emit_event(fields, b"at -")

    def finish(self, node_id, status, attempt, duration, output, error):
        self.results[node_id] = {"output": output, "status": status, "error": error}
        self.summaries.append({"id": node_id, "status": status, "attempt": attempt,
                               "duration_ms": round(duration, 3)})
        if status in _OK_STATUSES:
            self.last_output = output

    def run_all(self):
        for node in self.workflow.get("nodes") or ():
            self.run_node(node)
            if self.error is not None:
                break

    def run_node(self, node):
        nid = node["id"]
        pinned = node.get("pinned")
        if pinned is not None:
            status = pinned.get("status") or "pinned"
            output = pinned.get("output")
            extra = None
            if pinned.get("from_execution") is not None:
                extra = [("from_execution", pinned["from_execution"])]
            self.node_end(nid, status, 0, 0.0, None, output, None, extra)
            self.finish(nid, status, 0, 0.0, output, None)
            return
        if _skip_reason(node, self.results) is not None:
            self.node_end(nid, "skipped", 0, 0.0, None, None, None)
            self.finish(nid, "skipped", 0, 0.0, None, None)
            return

        retry = node.get("retry") or {}
        try:
            max_attempts = max(1, int(retry.get("max_attempts") or 1))
            backoff = float(retry.get("backoff_ms") or 0)
            factor = retry.get("factor")
            factor = 2.0 if factor is None else float(factor)
        except (TypeError, ValueError):
            max_attempts, backoff, factor = 1, 0.0, 2.0
        handler = HANDLERS.get(node.get("type"))
        attempt = 0
        while True:
            attempt += 1
            _emit_event([("event", '"node_start"'), ("node", _dumps(nid)),
                         ("attempt", str(attempt)), ("ts", str(_now_ms()))],
                        b"at " + _encode(nid))
            ctx = _Ctx(node, self.scope, attempt)
            t0 = time.perf_counter()
            error = None
            output = None
            try:
                if handler is None:
                    raise NodeError("no handler for node type %r in this script" % (node.get("type"),))
                params = node.get("params") or {}
                if not getattr(handler, "raw_params", False):
                    params = render(params, self.scope)
                    ctx.input = params
                output = handler(ctx, params)
            except KeyboardInterrupt as e:
                error = _error_info(e)
                self.fatal = True
            except (Exception, SystemExit) as e:
                error = _error_info(e)
            duration = (time.perf_counter() - t0) * 1000.0
            if error is None:
                self.node_end(nid, "success", attempt, duration, ctx.input, output, None)
                self.finish(nid, "success", attempt, duration, output, None)
                return
            if attempt < max_attempts and not self.fatal:
                try:
                    wait = backoff * (factor ** (attempt - 1))
                except (OverflowError, ZeroDivisionError):
                    wait = _MAX_BACKOFF_MS
                if not (wait >= 0):  # NaN or negative
                    wait = 0.0
                wait_ms = int(round(min(wait, _MAX_BACKOFF_MS)))
                self.node_end(nid, "error", attempt, duration, ctx.input, None, error,
                              [("retrying", True), ("retry_in_ms", wait_ms)])
                if wait_ms:
                    time.sleep(wait_ms / 1000.0)
                continue
            self.node_end(nid, "error", attempt, duration, ctx.input, None, error)
            self.finish(nid, "error", attempt, duration, None, error)
            if self.fatal or node.get("on_error", "stop") != "continue":
                self.error = dict(error, node=nid)
            return


# ---------------------------------------------------------------------------
# HTTP, shared by the http_request and llm node types (stdlib only; urllib is
# imported here, on first use, because it costs ~40 ms of startup)
# ---------------------------------------------------------------------------

class HttpResponse(object):
    def __init__(self, status, reason, headers, body, url):
        self.status = status
        self.reason = reason
        self.headers = headers  # list of (name, value), names lower-cased
        self.body = body        # bytes
        self.url = url          # final URL after redirects

    def header(self, name):
        name = name.lower()
        for k, v in self.headers:
            if k == name:
                return v
        return None

    def text(self):
        charset = "utf-8"
        ctype = self.header("content-type") or ""
        for part in ctype.split(";")[1:]:
            k, _, v = part.strip().partition("=")
            if k.lower() == "charset" and v:
                charset = v.strip('"')
        try:
            return self.body.decode(charset, "replace")
        except LookupError:
            return self.body.decode("utf-8", "replace")

    def json(self):
        return _decode_json(self.text())


def connection_secret(conn):
    """The value bound to a connection ({"name", "env"}), or a NodeError."""
    value = os.environ.get(conn.get("env") or "")
    if not value:
        raise NodeError("connection %s is not bound: set the environment variable %s"
                        % (conn.get("name"), conn.get("env")), "ConnectionNotBound")
    return value


def http_call(method, url, headers=None, body=None, timeout_ms=None,
              follow_redirects=True, max_redirects=10, max_body_bytes=None):
    """One HTTP request. Returns an HttpResponse for every status (4xx/5xx
    too); raises NodeError for connection problems and timeouts."""
    import socket
    import urllib.error
    import urllib.request

    class _Redirects(urllib.request.HTTPRedirectHandler):
        max_redirections = max_redirects

        def redirect_request(self, req, fp, code, msg, hdrs, newurl):
            if not follow_redirects:
                return None
            return urllib.request.HTTPRedirectHandler.redirect_request(
                self, req, fp, code, msg, hdrs, newurl)

    opener = urllib.request.build_opener(_Redirects)
    req = urllib.request.Request(url, data=body, method=method.upper())
    for k, v in (headers or {}).items():
        req.add_header(str(k), to_text(v))
    timeout = None if timeout_ms is None else max(0.001, timeout_ms / 1000.0)
    try:
        try:
            resp = opener.open(req, timeout=timeout)
        except urllib.error.HTTPError as e:
            resp = e
        status = resp.getcode() if hasattr(resp, "getcode") else resp.code
        reason = getattr(resp, "reason", "") or ""
        hdrs = [(k.lower(), v) for k, v in resp.headers.items()] if resp.headers else []
        if max_body_bytes is None:
            data = resp.read()
        else:
            data = resp.read(max_body_bytes + 1)
        final_url = resp.geturl() if hasattr(resp, "geturl") else url
        resp.close()
    except urllib.error.HTTPError as e:  # a redirect loop, or too many redirects
        raise NodeError("%s %s: %s" % (method.upper(), url, e), "HttpError")
    except urllib.error.URLError as e:
        reason = e.reason
        if isinstance(reason, socket.timeout) or "timed out" in str(reason):
            raise NodeError("%s %s: timed out after %s ms" % (method.upper(), url, timeout_ms), "Timeout")
        raise NodeError("%s %s: could not connect: %s" % (method.upper(), url, reason), "ConnectionError")
    except (socket.timeout, TimeoutError):
        raise NodeError("%s %s: timed out after %s ms" % (method.upper(), url, timeout_ms), "Timeout")
    except (ConnectionError, OSError) as e:
        raise NodeError("%s %s: connection failed: %s" % (method.upper(), url, e), "ConnectionError")
    except ValueError as e:  # unknown url type and the like
        raise NodeError("%s %s: %s" % (method.upper(), url, e), "ValueError")
    return HttpResponse(status, reason, hdrs, data, final_url)


def retry_after_ms(resp, default_ms):
    """Milliseconds a Retry-After header asks for (seconds or an HTTP date)."""
    value = resp.header("retry-after")
    if not value:
        return default_ms
    try:
        return max(0, int(float(value) * 1000))
    except ValueError:
        pass
    try:
        import email.utils
        when = email.utils.parsedate_to_datetime(value).timestamp()
        return max(0, int((when - time.time()) * 1000))
    except Exception:
        return default_ms


# ---------------------------------------------------------------------------
# Startup
# ---------------------------------------------------------------------------

def _apply_defaults(schema, data):
    """Fill missing properties that have a "default", recursively."""
    if not isinstance(schema, dict) or not isinstance(data, dict):
        return
    props = schema.get("properties")
    if not isinstance(props, dict):
        return
    for name, sub in props.items():
        if not isinstance(sub, dict):
            continue
        if name not in data:
            if "default" in sub:
                data[name] = plain_copy(sub["default"])
        elif isinstance(data[name], dict):
            _apply_defaults(sub, data[name])


def _read_trigger():
    """Returns (data, None) or (None, message)."""
    stdin = sys.stdin
    if stdin is None:
        return {}, None
    try:
        if stdin.isatty():
            return {}, None  # run by hand without `< trigger.json`
        raw = stdin.buffer.read()
    except (OSError, ValueError, AttributeError):
        return {}, None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        return None, "trigger data is not valid UTF-8: %s" % e
    if not text.strip():
        return {}, None
    try:
        return _decode_json(text), None
    except ValueError as e:
        return None, "trigger data is not valid JSON: %s" % e
    except RecursionError:
        return None, "trigger data is not valid JSON: nested too deeply"


def _lifeline(fd):
    try:
        while os.read(fd, 1):
            pass
    except BaseException:
        pass
    try:
        import signal
        os.killpg(os.getpgid(0), getattr(signal, "SIGKILL", 9))
    finally:
        os._exit(137)


def _start_lifeline(value):
    try:
        fd = int(value)
        os.fstat(fd)
    except (TypeError, ValueError, OSError):
        return  # not a usable fd: watching it would kill us at once
    try:
        os.set_inheritable(fd, False)
    except OSError:
        pass
    import _thread
    _thread.start_new_thread(_lifeline, (fd,))


def _install_streams():
    """Wrap sys.stdout/sys.stderr to track line starts; make them UTF-8 with
    backslashreplace so that printing any text never fails a node."""
    import _thread
    _STATE.lock = _thread.allocate_lock()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(encoding="utf-8", errors="backslashreplace")
        except Exception:
            pass
    if sys.stdout is not None and not isinstance(sys.stdout, _LineTracker):
        sys.stdout = _LineTracker(sys.stdout)
    if isinstance(sys.stdout, _LineTracker):
        _STATE.out = sys.stdout
    if sys.stderr is not None and not isinstance(sys.stderr, _LineTracker):
        sys.stderr = _LineTracker(sys.stderr)
    if isinstance(sys.stderr, _LineTracker):
        _STATE.err = sys.stderr


def _emit_result(status, output, error, duration, summaries):
    body = ",".join([
        '"status":' + _dumps(status),
        '"output":' + _payload(output),
        '"error":' + _error_payload(error),
        '"duration_ms":' + _ms(duration),
        '"nodes":' + _dumps(summaries),
    ])
    _emit_lines([_STATE.prefix + b"result-start", _encode("{" + body + "}"),
                  _STATE.prefix + b"result-end"])


def main(workflow):
    t0 = time.perf_counter()
    nonce = os.environ.pop("FLOWRUN_NONCE", None) or os.urandom(8).hex()
    lifeline = os.environ.pop("FLOWRUN_LIFELINE_FD", None)
    _STATE.prefix = ("@@flowrun:" + nonce + ":").encode("utf-8")
    try:
        mp = int(os.environ.get("FLOWRUN_MAX_PAYLOAD_BYTES") or _DEFAULT_MAX_PAYLOAD)
        _STATE.max_payload = mp if mp > 0 else _DEFAULT_MAX_PAYLOAD
    except ValueError:
        _STATE.max_payload = _DEFAULT_MAX_PAYLOAD
    if lifeline:
        _start_lifeline(lifeline)
    _install_streams()

    execution = {
        "id": os.environ.get("FLOWRUN_EXECUTION_ID") or os.urandom(16).hex(),
        "mode": os.environ.get("FLOWRUN_MODE") or "manual",
        "workflow_id": workflow.get("id"),
    }
    run = None
    try:
        trigger, problem = _read_trigger()
        if problem is not None:
            error = {"node": None, "type": "InvalidTrigger", "message": problem, "traceback": ""}
            _emit_result("error", None, error, (time.perf_counter() - t0) * 1000.0, [])
            sys.exit(1)
        _apply_defaults(workflow.get("inputs"), trigger)
        run = _Run(workflow, trigger, execution)
        run.run_all()
        status = "error" if run.error is not None else "success"
        _emit_result(status, run.last_output, run.error,
                     (time.perf_counter() - t0) * 1000.0, run.summaries)
        code = 1 if run.error is not None else 0
    except SystemExit:
        raise
    except BaseException as e:  # a bug in the runtime or an interrupt
        error = _error_info(e)
        error = {"node": None, "type": error["type"], "message": "flowrun runtime failure: " + error["message"],
                 "traceback": error["traceback"]}
        _emit_result("error", run.last_output if run else None, error,
                     (time.perf_counter() - t0) * 1000.0, run.summaries if run else [])
        code = 1
    sys.exit(code)

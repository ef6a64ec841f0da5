# ---------------------------------------------------------------------------
# runtime/core/30_templates.py: templates
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

    def __init__(self, message, error_type=None, spent=None):
        Exception.__init__(self, message)
        if error_type:
            self.error_type = error_type
        # {"usage": {...}, "cost_usd": x}: what a failed call spent, counted like a success's.
        self.spent = spent


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

# ---------------------------------------------------------------------------
# runtime/core/20_json.py: JSON codec on top of the C accelerator
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

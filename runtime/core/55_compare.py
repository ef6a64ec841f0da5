# ---------------------------------------------------------------------------
# runtime/core/55_compare.py: the condition operators, shared by the
# condition node and `repeat`'s `until`
#
# A condition is either a value/template (Python truthiness: false, null, 0,
# "", [], {} are false) or {"op": OP, "left": A, "right": B}. The operator form
# is recognised on the unrendered value, so a template that yields an object
# with an "op" key is just a truthy value; for exists / not_exists / empty /
# not_empty a `left` reference that cannot be resolved (missing key, null
# parent) counts as null instead of failing.
# ---------------------------------------------------------------------------

_cmp_LENIENT_OPS = ("exists", "not_exists", "empty", "not_empty")
_cmp_ORDER_OPS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}


def _cmp_is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _cmp_equal(a, b):
    """JSON equality: true is not 1, 1 == 1.0, arrays/objects compared deeply."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if _cmp_is_number(a) and _cmp_is_number(b):
        return a == b
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_cmp_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return False
        return all(_cmp_equal(a[k], b[k]) for k in a)
    if type(a) is not type(b) and not (isinstance(a, str) and isinstance(b, str)):
        return False
    return a == b


def _cmp_describe(v):
    text = to_text(v) if not isinstance(v, str) else _quote(v)
    if len(text) > 60:
        text = text[:57] + "..."
    return "%s %s" % (_json_type(v), text) if v is not None else "null"


def _cmp_contains(left, right, op):
    if isinstance(left, str):
        if not isinstance(right, str):
            raise NodeError("condition %s: left is a string, so right must be a string too, got %s"
                            % (op, _cmp_describe(right)), "TypeError")
        return right in left
    if isinstance(left, (list, tuple)):
        return any(_cmp_equal(x, right) for x in left)
    if isinstance(left, dict):
        if not isinstance(right, str):
            raise NodeError("condition %s: left is an object, so right must be a key (string), got %s"
                            % (op, _cmp_describe(right)), "TypeError")
        return right in left
    raise NodeError("condition %s: left must be a string, an array or an object, got %s"
                    % (op, _cmp_describe(left)), "TypeError")


def _cmp_order(left, right, op):
    ok = ((_cmp_is_number(left) and _cmp_is_number(right))
          or (isinstance(left, str) and isinstance(right, str)))
    if not ok:
        raise NodeError("condition %s: cannot compare %s with %s (both must be numbers or both strings)"
                        % (op, _cmp_describe(left), _cmp_describe(right)), "TypeError")
    if op == "gt":
        return left > right
    if op == "ge":
        return left >= right
    if op == "lt":
        return left < right
    return left <= right


def _cmp_eval(op, left, right):
    if op == "eq":
        return _cmp_equal(left, right)
    if op == "ne":
        return not _cmp_equal(left, right)
    if op in _cmp_ORDER_OPS:
        return _cmp_order(left, right, op)
    if op == "contains":
        return _cmp_contains(left, right, op)
    if op == "not_contains":
        return not _cmp_contains(left, right, op)
    if op == "exists":
        return left is not None
    if op == "not_exists":
        return left is None
    empty = left is None or (isinstance(left, (str, list, tuple, dict)) and len(left) == 0)
    if op == "empty":
        return empty
    if op == "not_empty":
        return not empty
    raise NodeError("condition: unknown op %r (expected one of eq, ne, gt, ge, lt, le, contains, "
                    "not_contains, exists, not_exists, empty, not_empty)" % (op,), "ValueError")




def evaluate_condition(raw, scope):
    """(result, what was evaluated) of a condition: a value/template or an
    {op, left, right} form. Template errors name the part ("left", "right")."""
    if isinstance(raw, dict) and "op" in raw:
        op = render(raw.get("op"), scope)
        lenient = op in _cmp_LENIENT_OPS
        try:
            left = render(raw.get("left"), scope, lenient)
        except TemplateError as e:
            e.loc.append("left")
            raise
        try:
            right = render(raw.get("right"), scope)
        except TemplateError as e:
            e.loc.append("right")
            raise
        return bool(_cmp_eval(op, left, right)), {"op": op, "left": left, "right": right}
    value = render(raw, scope)
    return bool(value), value

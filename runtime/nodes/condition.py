# ---------------------------------------------------------------------------
# node type: condition — evaluates `if`  ->  {"result": bool}
# params: {"if": X, "then": [ids], "else": [ids]}
#
# X is either a value/template (Python truthiness: false, null, 0, "", [], {}
# are false) or {"op": OP, "left": A, "right": B}.  The branch not taken is
# skipped by the scheduler through the guards the codegen put on the
# then/else nodes; this handler only computes the result.
#
# Params are rendered here (raw_params): the operator form is recognised on
# the unrendered value, so a template that yields an object with an "op" key
# is just a truthy value; and for exists / not_exists / empty / not_empty a
# `left` reference that cannot be resolved (missing key, null parent) counts as
# null instead of failing the node.
# ---------------------------------------------------------------------------

_condition_LENIENT_OPS = ("exists", "not_exists", "empty", "not_empty")
_condition_ORDER_OPS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}


def _condition_is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _condition_equal(a, b):
    """JSON equality: true is not 1, 1 == 1.0, arrays/objects compared deeply."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if _condition_is_number(a) and _condition_is_number(b):
        return a == b
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_condition_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return False
        return all(_condition_equal(a[k], b[k]) for k in a)
    if type(a) is not type(b) and not (isinstance(a, str) and isinstance(b, str)):
        return False
    return a == b


def _condition_describe(v):
    text = to_text(v) if not isinstance(v, str) else _quote(v)
    if len(text) > 60:
        text = text[:57] + "..."
    return "%s %s" % (_json_type(v), text) if v is not None else "null"


def _condition_contains(left, right, op):
    if isinstance(left, str):
        if not isinstance(right, str):
            raise NodeError("condition %s: left is a string, so right must be a string too, got %s"
                            % (op, _condition_describe(right)), "TypeError")
        return right in left
    if isinstance(left, (list, tuple)):
        return any(_condition_equal(x, right) for x in left)
    if isinstance(left, dict):
        if not isinstance(right, str):
            raise NodeError("condition %s: left is an object, so right must be a key (string), got %s"
                            % (op, _condition_describe(right)), "TypeError")
        return right in left
    raise NodeError("condition %s: left must be a string, an array or an object, got %s"
                    % (op, _condition_describe(left)), "TypeError")


def _condition_order(left, right, op):
    ok = ((_condition_is_number(left) and _condition_is_number(right))
          or (isinstance(left, str) and isinstance(right, str)))
    if not ok:
        raise NodeError("condition %s: cannot compare %s with %s (both must be numbers or both strings)"
                        % (op, _condition_describe(left), _condition_describe(right)), "TypeError")
    if op == "gt":
        return left > right
    if op == "ge":
        return left >= right
    if op == "lt":
        return left < right
    return left <= right


def _condition_eval(op, left, right):
    if op == "eq":
        return _condition_equal(left, right)
    if op == "ne":
        return not _condition_equal(left, right)
    if op in _condition_ORDER_OPS:
        return _condition_order(left, right, op)
    if op == "contains":
        return _condition_contains(left, right, op)
    if op == "not_contains":
        return not _condition_contains(left, right, op)
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


def node_condition(ctx, params):
    scope = ctx.scope
    raw = params.get("if")
    recorded = {"if": None, "then": params.get("then") or [], "else": params.get("else") or []}
    ctx.input = recorded
    if isinstance(raw, dict) and "op" in raw:
        op = render(raw.get("op"), scope)
        lenient = op in _condition_LENIENT_OPS
        try:
            left = render(raw.get("left"), scope, lenient)
        except TemplateError as e:
            e.loc.extend(["left", "if"])
            raise
        try:
            right = render(raw.get("right"), scope)
        except TemplateError as e:
            e.loc.extend(["right", "if"])
            raise
        recorded["if"] = {"op": op, "left": left, "right": right}
        return {"result": bool(_condition_eval(op, left, right))}
    try:
        value = render(raw, scope)
    except TemplateError as e:
        e.loc.append("if")
        raise
    recorded["if"] = value
    return {"result": bool(value)}


node_condition.raw_params = True
HANDLERS["condition"] = node_condition

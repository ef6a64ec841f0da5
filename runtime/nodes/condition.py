# ---------------------------------------------------------------------------
# node type: condition — evaluates `if`  ->  {"result": bool}
# params: {"if": X, "then": [ids], "else": [ids]}
#
# X is a condition as runtime/core/55_compare.py evaluates it: a value or
# template (truthiness) or {"op": OP, "left": A, "right": B}. The branch not
# taken is skipped by the scheduler through the guards the codegen put on the
# then/else nodes; this handler only computes the result. Params are rendered
# by evaluate_condition (raw_params).
# ---------------------------------------------------------------------------


def node_condition(ctx, params):
    recorded = {"if": None, "then": params.get("then") or [], "else": params.get("else") or []}
    ctx.input = recorded
    try:
        result, recorded["if"] = evaluate_condition(params.get("if"), ctx.scope)
    except TemplateError as e:
        e.loc.append("if")
        raise
    return {"result": result}


node_condition.raw_params = True
HANDLERS["condition"] = node_condition

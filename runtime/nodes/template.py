# ---------------------------------------------------------------------------
# node type: template — renders a text template
# params: {"template": _T(...)}  (already rendered)  ->  {"text": str}
# ---------------------------------------------------------------------------

def node_template(ctx, params):
    value = params.get("template")
    if value is None and "template" not in params:
        value = ""
    return {"text": to_text(value)}


HANDLERS["template"] = node_template

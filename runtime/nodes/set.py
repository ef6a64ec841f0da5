# ---------------------------------------------------------------------------
# node type: set — builds an object from templated fields
# params: {"fields": {...}}  (already rendered)
# ---------------------------------------------------------------------------

def node_set(ctx, params):
    fields = params.get("fields")
    if fields is None:
        return {}
    if not isinstance(fields, dict):
        raise NodeError("set: fields must be an object, got %s" % _json_type(fields), "TypeError")
    return fields


HANDLERS["set"] = node_set

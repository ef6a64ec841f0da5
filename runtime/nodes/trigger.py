# ---------------------------------------------------------------------------
# node type: trigger — exposes the trigger data (params: {})
# ---------------------------------------------------------------------------

def node_trigger(ctx, params):
    data = ctx.scope["trigger"]
    ctx.input = data
    return data


HANDLERS["trigger"] = node_trigger

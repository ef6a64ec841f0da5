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

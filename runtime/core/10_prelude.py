# ---------------------------------------------------------------------------
# flowrun runtime: core (runtime/core/10_prelude.py, the first of its parts)
#
# The generated script is the concatenation of the core's parts
# (runtime/core/*.py, in the order of their names), one file per node type
# used by the workflow (runtime/nodes/<type>.py, sorted by type name) and a
# `WORKFLOW = {...}` literal followed by `main(WORKFLOW)`.  Everything lives
# in one module namespace, so:
#
#   * parts and node files never import each other; they use each other's
#     globals directly.  At import time a part may use only what earlier
#     parts define (a class's base class, a constant); inside a function any
#     global of any part is fine;
#   * names private to a node file are prefixed `_<type>_` to avoid clashes;
#   * top-level imports stay cheap (_thread, os, sys, time here, and the C module
#     _json in 20_json.py); anything else is imported inside the function
#     that needs it (startup time matters: the `json` package alone pulls in
#     `re` and `enum`, ~7 ms, so JSON goes through the C accelerator `_json`
#     directly, with a fallback to `json` where `_json` is missing).
#
# The parts, in script order:
#
#   10_prelude.py    this comment, the imports, HANDLERS, shared constants
#   20_json.py       strict JSON codec on the C module _json
#   30_templates.py  _R/_T, render, to_text, plain_copy, NodeError
#   40_protocol.py   JSON-able output, payload caps, stream tracking and the
#                    protocol writer (events, log lines, stderr marks)
#   50_errors.py     error info and tracebacks of node failures
#   55_compare.py    the condition operators (condition nodes, repeat's until)
#   60_run.py        running one node: _Ctx, skips (the join rule), retries
#   62_loops.py      for_each (items) and repeat (iterations)
#   64_schedule.py   which node runs when: in order, or up to max_parallel
#   66_limits.py     pause, breakpoints and cost limits
#   70_http.py       HTTP helpers shared by the http_request and llm nodes
#   80_main.py       startup: nonce, trigger data, result, main()
#
# Node file API (what runtime/nodes/<type>.py may use):
#
#   HANDLERS["<type>"] = handler         register the node type
#   handler(ctx, params) -> output       params are already rendered (every
#                                        _T replaced by its value), unless the
#                                        handler has `handler.raw_params = True`
#                                        (it then calls render() itself)
#   ctx.id, ctx.node (the WORKFLOW node dict), ctx.attempt, ctx.scope
#   ({"trigger", "nodes", "execution"}, plus "item"/"index" in a for_each
#   node and "iteration"/"previous" in a repeat node), ctx.input (the node's recorded
#   "input", sent as `node_input` when set; defaults to the rendered params, a handler may
#   replace it: assign a whole value, since changing it in place is seen only at node_end),
#   ctx.log(*args, level="info"), ctx.timeout_ms, ctx.dep_outputs()
#   render(value, scope, lenient=False)  evaluate templates inside value
#   to_text(value)                       text form used for interpolation
#   plain_copy(value)                    deep copy of dicts/lists
#   NodeError(message, error_type=None)  a failure reported without a Python
#                                        traceback of the runtime itself
#   TemplateError                        NodeError of an unresolvable reference
#   register_source(filename, source)    source lines for tracebacks (code)
#   http_call, HttpResponse, connection_secret, retry_after_ms
#                                        HTTP and secrets (70_http.py)
#   program_env(params, hidden=())       the environment of a program a node
#                                        runs, with its connections and env
#   _dumps(v), _quote(s), _json_type(v)  compact JSON, a JSON string literal,
#                                        "a string"/"an object"/... for messages
#   FORK_PREPARE.append(fn)              fn(WORKFLOW) does, once in a warm
#                                        template, work every execution of the
#                                        script would repeat (see 80_main.py)
#   START_CHECKS.append(fn)              fn(WORKFLOW) yields, before any node
#                                        runs, what would fail a node for sure (a
#                                        code node's syntax) as (error naming the
#                                        node, where): the first fails the run and
#                                        no node runs; `--check` lists them all
#
# The protocol, scheduling and data rules are the contract in docs/design.md
# ("Child-process protocol"); runtime/README.md lists the decisions taken
# here, and runtime/tests/ shows each of them at work.
# ---------------------------------------------------------------------------
import _thread
import os
import sys
import time

HANDLERS = {}
FORK_PREPARE = []
START_CHECKS = []
# True in `script --check` (80_main.py: check_only), which compiles what a run's start check
# leaves to the execution for its cost (a sub-workflow's source over _code_PREPARE_MAX).
CHECK_ONLY = False

_DEFAULT_MAX_PAYLOAD = 1048576
_PREVIEW_CHARS = 1024
_SANITIZE_MAX_DEPTH = 400
_OK_STATUSES = ("success", "pinned", "reused", "mocked")
_MAX_BACKOFF_MS = 86400000  # a day: the runner's timeouts end such a run anyway
# How often a retry's backoff looks whether the run is ending (60_run.py: _Run.backoff).
_BACKOFF_SLICE_S = 0.05

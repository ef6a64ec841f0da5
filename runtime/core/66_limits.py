# ---------------------------------------------------------------------------
# runtime/core/66_limits.py: pause, breakpoints and cost limits
#
# Pause: the runner sends SIGUSR1 (through the shepherd, to this process only).
# The handler just sets a flag; the scheduler starts no new node once it is set,
# lets the running ones finish, and the execution ends `paused` (exit 0) with
# an error of type Paused saying before which node. `break_before` (a list of
# node ids in WORKFLOW) pauses the same way before the first of them that would
# run. The runner believes a `paused` result only when it asked for a pause or
# gave breakpoints.
#
# Cost: `max_cost_usd` / `warn_cost_usd` in WORKFLOW. The running total is the
# sum of `cost_usd` of the llm and agent calls that ended (mocked ones too), and
# of what sub-workflows spent (each runs with what is left as its own limit); in
# a resume, what the outputs it reuses cost when they were made (_cost_reused).
# Before such a call or child starts, a total at or past the limit fails the
# node with CostLimit and ends the execution (not retried, whatever on_error
# says): no call starts past the limit. Calls running when it is reached finish;
# a run whose total ended past the limit without a call refused (calls side by
# side, or a last call costing more than was left) ends `error` CostLimit too
# (_cost_overrun). Crossing the warning threshold logs one `warning` line.
# ---------------------------------------------------------------------------

_METERED_TYPES = ("llm", "agent", "workflow")


def _on_pause_signal(signum, frame):
    _STATE.pause_requested = True


def _install_pause_handler():
    # `_signal`, the C module: `signal` imports `enum` and with it ~4 ms of start-up (see
    # runtime/README.md).
    import _signal
    _STATE.pause_requested = False
    try:
        _signal.signal(_signal.SIGUSR1, _on_pause_signal)
    except (ValueError, OSError, AttributeError):
        pass  # not the main thread, or no SIGUSR1 here: pausing is not possible


def _pause_before(run, node):
    """Whether the run pauses instead of starting `node`; sets run.paused when it does."""
    if run.paused is not None:
        return True
    nid = node["id"]
    if getattr(_STATE, "pause_requested", False):
        why = "paused by request before node '%s'" % nid
    elif nid in (run.workflow.get("break_before") or ()):
        if node.get("pinned") is not None or _skip_reason(node, run.results) is not None:
            return False  # it would not run: no reason to stop in front of it
        why = "paused before node '%s' (break_before)" % nid
    else:
        return False
    with _STATE.run_lock:
        if run.paused is None:
            run.paused = {"type": "Paused", "message": why, "traceback": "", "node": nid}
    return True


_PAUSE_TYPES = ("Paused", "ChildPaused")


def _failed_as(error):
    """The status of a node (or item, or iteration) that ended with `error`: `cancelled` when
    it did not finish only because the run is pausing (items left unstarted, a child paused
    with it; resume runs it again), else `error` — it did not fail."""
    if getattr(_STATE, "pause_requested", False) and error.get("type") in _PAUSE_TYPES:
        return "cancelled"
    return "error"


def _not_retried_for_pause(error, attempt):
    """The error of an attempt whose retry the pause stopped: the run pauses instead of failing
    (resume runs the node again), and the attempt's own failure is kept in the message."""
    return {"type": "Paused", "traceback": error.get("traceback") or "",
            "message": "not retried: the execution is pausing (attempt %d failed: %s: %s)"
                       % (attempt, error.get("type") or "Error", error.get("message") or "")}


def _pause_failure(run, node, error):
    """True (and the run paused before `node`) when `node` failed only because the run is
    pausing: a child execution paused with it, or items left unstarted. Resume runs it again."""
    if _failed_as(error) != "cancelled":
        return False
    with _STATE.run_lock:
        if run.paused is None:
            run.paused = {"type": "Paused", "message": "paused by request during node '%s' (%s)"
                          % (node["id"], error.get("message")), "traceback": "", "node": node["id"]}
    return True


def _cost_limit(run, node):
    """Raises CostLimit when `node` would start a metered call past the execution's limit."""
    limit = run.workflow.get("max_cost_usd")
    if limit is None or node.get("type") not in _METERED_TYPES:
        return
    with _STATE.run_lock:
        total = run.cost_usd
    if total >= float(limit) - _cost_slack(float(limit)):
        run.fatal = True
        raise NodeError("the execution's cost reached $%.6f, its limit (max_cost_usd) is $%.6f: "
                        "node '%s' was not started" % (total, float(limit), node["id"]),
                        "CostLimit")


def _cost_slack(limit):
    """How far a sum of costs may be from the limit and still count as at it: ten calls of
    $0.10 add up to 0.9999999999999999, which has reached $1."""
    return 1e-9 * max(1.0, limit)


def _cost_past(total, limit):
    """Whether `total` is past `limit`, not merely at it (_cost_slack)."""
    return total > float(limit) + _cost_slack(float(limit))


def _cost_overrun(run):
    """The CostLimit error of a run whose total ended past its limit though no call was refused:
    calls running side by side all started below it (an item's, a node's beside it), or the
    last call cost more than was left.  They were paid for; the execution did not stay within
    its limit, and does not end `success`.  None when it did."""
    limit = run.workflow.get("max_cost_usd")
    if limit is None or run.workflow.get("cost_limit_is_share"):
        # A parent's share (this is its sub-workflow): the parent counts what was spent against
        # its own limit, and answers for a total past that.
        return None
    limit = float(limit)
    with _STATE.run_lock:
        total = run.cost_usd
    if not _cost_past(total, limit):
        return None
    return {"node": None, "type": "CostLimit", "traceback": "",
            "message": "the execution's cost ended at $%.6f, past its limit (max_cost_usd) of "
                       "$%.6f: calls that started below the limit ended past it (node '%s' "
                       "took the total past it)" % (total, limit, run.cost_crossed_by)}


def _cost_reused(run, node, pin):
    """A resume's reused output (a node's or an item's) counts what it cost when it was made:
    a resume spends from the same limit as the run it continues, not from a new one.  The
    runner says what a `workflow` node's children spent (`spent_usd`); an llm or agent output
    says it itself."""
    spent = pin.get("spent_usd")
    output = pin.get("output")
    # A for_each node reused whole: its output is its items'.
    for one in ([{"cost_usd": spent}] if spent is not None
                else output if isinstance(output, list) else [output]):
        # The warning threshold, if crossed, was said when the money was spent.
        _cost_add(run, node, one, warn=False)


def _cost_reserve(run, node):
    """For a sub-workflow about to start under a max_cost_usd: the limit it runs with, held
    until it ends (_cost_release; then what it spent counts instead).  What is left and not held
    by children running beside it, shared between this child and the ones that may still start
    beside it (a for_each node's max_concurrent, the workflow's max_parallel): children side by
    side never spend more together than the execution had left.  None without a limit."""
    limit = run.workflow.get("max_cost_usd") if run is not None else None
    if limit is None:
        return None
    slots = run.max_parallel
    if node.get("for_each") is not None:
        try:
            slots = max(slots, int(node.get("max_concurrent") or 1))
        except (TypeError, ValueError):
            pass
    with _STATE.run_lock:
        left = max(0.0, float(limit) - run.cost_usd - run.cost_reserved)
        share = left / max(1, slots - run.children_running)
        run.cost_reserved += share
        run.children_running += 1
    return share


def _cost_release(run, share):
    if share is None:
        return
    with _STATE.run_lock:
        run.cost_reserved = max(0.0, run.cost_reserved - share)
        run.children_running -= 1


def _cost_add(run, node, output, warn=True):
    """Counts a metered call's cost; warns once when the total reaches warn_cost_usd."""
    if node.get("type") not in _METERED_TYPES or not isinstance(output, dict):
        return
    cost = output.get("cost_usd")
    if isinstance(cost, bool) or not isinstance(cost, (int, float)) or not cost >= 0:
        return
    threshold = run.workflow.get("warn_cost_usd")
    limit = run.workflow.get("max_cost_usd")
    with _STATE.run_lock:
        run.cost_usd += float(cost)
        total = run.cost_usd
        if limit is not None and run.cost_crossed_by is None and _cost_past(total, limit):
            run.cost_crossed_by = node["id"]
        crossed = threshold is not None and not run.cost_warned and total >= float(threshold)
        if crossed:
            run.cost_warned = True
    if crossed and warn:
        emit_log(node["id"], "warning",
                 "the execution's cost reached $%.6f, past its warning threshold "
                 "(warn_cost_usd) of $%.6f" % (total, float(threshold)))

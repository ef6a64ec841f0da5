# ---------------------------------------------------------------------------
# runtime/core/62_loops.py: `for_each` and `repeat`
#
# Both are modifiers of any node: the node's handler runs once per item (with
# `item` and `index` in scope) or once per iteration (with `iteration`, 1, 2,
# …, and `previous`, the last iteration's output). Each item or iteration has
# its own node_start/node_end (carrying "item" or "iteration") and its own
# retries; the node itself is bracketed by a node_start/node_end of its own,
# whose output is the list of item outputs in index order, or the last
# iteration's output.
# ---------------------------------------------------------------------------

def _part_scope(run, **extra):
    scope = dict(run.scope)
    scope.update(extra)
    return scope


def _items_error(failed, total):
    # An item refused by the cost limit ends the execution as CostLimit, as a node would.
    limited = [f for f in failed if f[1].get("type") == "CostLimit"]
    first = (limited or failed)[0]
    message = "%d of %d items failed; item %d: %s: %s" % (
        len(failed), total, first[0], first[1].get("type"), first[1].get("message"))
    return {"type": "CostLimit" if limited else "ItemsFailed", "message": message,
            "traceback": first[1].get("traceback") or ""}


def _run_for_each(run, node):
    nid = node["id"]
    t0 = time.perf_counter()
    try:
        items = render(node.get("for_each"), run.scope)
        if not isinstance(items, list):
            raise NodeError("for_each: expected a list, got %s" % _json_type(items), "TypeError")
    except TemplateError as e:
        e.loc.append("for_each")
        run.node_start(nid, 1)
        _loop_failed(run, node, _error_info(e), t0)
        return
    except (Exception, SystemExit) as e:
        run.node_start(nid, 1)
        _loop_failed(run, node, _error_info(e), t0)
        return
    # The node's own start says how many items it has (for "3/10 items" displays).
    run.node_start(nid, 1, None, len(items))
    try:
        limit = max(1, int(node.get("max_concurrent") or 1))
    except (TypeError, ValueError):
        limit = 1
    if node.get("type") == "code" and isinstance((node.get("params") or {}).get("cwd"), _T):
        # Each item's own directory would be the process's for all: one item at a time (else
        # an item waits for another's directory, and the wait counts against its timeout).
        limit = 1
    fail_fast = node.get("fail_fast", True) is not False
    reused = node.get("reuse_items") or {}
    total = len(items)
    outputs = [None] * total
    failed = []
    pausing = []
    # Items not started because another node failed for good (the run is ending).
    cut = []
    state = {"stop": False}
    failed_at = []

    def one(i):
        key = str(i)
        if key in reused:
            outputs[i] = reused[key].get("output")
            _cost_reused(run, node, reused[key])
            run.node_end(nid, "reused", 0, 0.0, None, outputs[i], None,
                         [("from_execution", reused[key].get("from_execution"))], part=("item", i))
            return
        if getattr(_STATE, "pause_requested", False):
            # Pausing: no new item starts (resume runs it).
            run.node_end(nid, "skipped", 0, 0.0, None, None, None,
                         [("reason", "the execution is pausing")], part=("item", i))
            with _STATE.run_lock:
                pausing.append(i)
            return
        scope = _part_scope(run, item=items[i], index=i)

        refused = []

        def may_start():
            # Under the run lock: why it may not start is what held at that moment.
            if state["stop"]:
                refused.append("an earlier item failed (fail_fast)")
            elif run.error is not None:
                refused.append("not started: " + (run.ending() or "the run failed"))
                cut.append(i)
            return not refused

        def on_failure(error):
            # Before the failing item's end is written: no item starts after it.
            failed.append((i, error))
            if fail_fast:
                state["stop"] = True
                if not failed_at and error.get("type") not in _PAUSE_TYPES and ends_run():
                    failed_at.append(time.monotonic())
                    # Nor does any node (64_schedule.py): the run is ending.
                    if run.failing_since is None:
                        run.failing_since = failed_at[0]
                        run.failing_why = "item %d of node '%s' failed" % (i, nid)

        ran = run.attempts(node, scope, ("item", i), may_start, on_failure)
        if ran is None:
            run.node_end(nid, "skipped", 0, 0.0, None, None, None,
                         [("reason", refused[0])], part=("item", i))
        elif ran[4] is None:
            outputs[i] = ran[3]

    def ends_run():
        # After a failure that lets the execution go on (on_error: continue) the nodes after
        # this one run: its items are waited for, never left running beside them.
        return run.fatal or node.get("on_error", "stop") != "continue"

    def give_up_at():
        # As nodes running beside a failed one (64_schedule.py): the items still running get
        # _FAILED_GRACE_S to end on their own, then the node fails with them still running
        # (the runner records them cancelled).
        return failed_at[0] + _FAILED_GRACE_S if failed_at else None

    if _run_parts(one, total, limit, give_up_at):
        failed.sort(key=lambda f: f[0])
        error = _items_error(failed, total)
        with _STATE.run_lock:
            if run.error is None:
                # The node's row is the runner's to end (it is still running, with items):
                # failed, with this error.
                run.error = dict(error, node=nid)
        return
    duration = (time.perf_counter() - t0) * 1000.0
    paused_items = [f for f in failed if f[1].get("type") in _PAUSE_TYPES]
    # Items the pause cut short (recorded cancelled) did not fail: a real failure beside them
    # is the node's error alone.
    real = [f for f in failed if f[1].get("type") not in _PAUSE_TYPES]
    if (pausing or paused_items) and not real:
        # Those never started (recorded skipped) and those cut short, said apart.
        said = []
        if pausing:
            said.append("%d of %d items did not start" % (len(pausing), total))
        if paused_items:
            said.append("%d%s did not finish" % (
                len(paused_items), "" if pausing else " of %d items" % total))
        error = {"type": "Paused", "traceback": "",
                 "message": "%s (the execution is pausing)" % " and ".join(said)}
    elif real:
        real.sort(key=lambda f: f[0])
        error = _items_error(real, total)
    else:
        error = None
    if error is not None:
        status = _failed_as(error)
        run.node_end(nid, status, 1, duration, {"items": total}, None, error)
        run.finish(nid, status, 1, duration, None, error)
        run.fail(node, error)
        return
    if cut:
        # Another node failed for good while items were left: the node did not finish, and
        # its output (the list of every item's) does not exist.
        error = {"type": "Cancelled", "traceback": "",
                 "message": "%d of %d items did not start: %s"
                            % (len(cut), total, run.ending() or "the run failed")}
        run.node_end(nid, "cancelled", 1, duration, {"items": total}, None, error)
        run.finish(nid, "cancelled", 1, duration, None, error)
        return
    status = _loop_status(node)
    run.node_end(nid, status, 1, duration, {"items": total}, outputs, None)
    run.finish(nid, status, 1, duration, outputs, None)


def _ordinal(n):
    return "%d%s" % (n, "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th"))


def _loop_status(node):
    """A looping node that a test mocked ends `mocked`, as its items or iterations did."""
    return "success" if node.get("mock") is None else "mocked"


def _run_parts(one, total, limit, give_up_at=None):
    """Calls one(i) for i in 0..total, at most `limit` at a time, in index order.  `give_up_at()`
    says when to stop waiting for the running ones (a time.monotonic(), or None: never); then
    those not started yet are called at once (each records itself skipped: nothing starts after
    a failure) and True is returned, the others left running."""
    if limit <= 1 or total <= 1:
        for i in range(total):
            one(i)
        return False
    import threading
    cv = threading.Condition()
    state = {"next": 0, "running": 0}

    def worker(i):
        try:
            one(i)
        finally:
            with cv:
                state["running"] -= 1
                cv.notify_all()

    with cv:
        while state["next"] < total or state["running"]:
            while state["next"] < total and state["running"] < limit:
                i = state["next"]
                state["next"] += 1
                state["running"] += 1
                t = threading.Thread(target=worker, args=(i,), daemon=True)
                t.start()
            at = give_up_at() if give_up_at is not None else None
            if at is None:
                cv.wait()
                continue
            left = at - time.monotonic()
            if left > 0:
                cv.wait(left)
                continue
            rest = range(state["next"], total)
            state["next"] = total
            break
        else:
            return False
    for i in rest:
        one(i)
    return True


def _loop_failed(run, node, error, t0):
    nid = node["id"]
    duration = (time.perf_counter() - t0) * 1000.0
    status = _failed_as(error)
    run.node_end(nid, status, 1, duration, None, None, error)
    run.finish(nid, status, 1, duration, None, error)
    run.fail(node, error)


def _run_repeat(run, node):
    nid = node["id"]
    t0 = time.perf_counter()
    spec = node.get("repeat") or {}
    until = spec.get("until")
    try:
        limit = max(1, int(spec.get("max_iterations") or 1))
    except (TypeError, ValueError):
        limit = 1
    run.node_start(nid, 1)
    previous = None
    iteration = 0
    done = False
    while iteration < limit:
        iteration += 1
        scope = _part_scope(run, iteration=iteration, previous=previous)
        status, _, _, output, error = run.attempts(node, scope, ("iteration", iteration))
        if error is not None:
            _loop_failed(run, node, error, t0)
            return
        previous = output
        try:
            done, _ = evaluate_condition(until, _part_scope(run, iteration=iteration,
                                                            previous=previous, output=output))
        except TemplateError as e:
            e.loc.extend(["until", "repeat"])
            _loop_failed(run, node, _error_info(e), t0)
            return
        except (Exception, SystemExit) as e:
            _loop_failed(run, node, _error_info(e), t0)
            return
        if done or run.error is not None:
            break
    duration = (time.perf_counter() - t0) * 1000.0
    if not done and iteration < limit and run.error is not None:
        # Another node failed for good: no further iteration starts, and `until` never held.
        error = {"type": "Cancelled", "traceback": "",
                 "message": "no iteration after the %s: %s"
                            % (_ordinal(iteration), run.ending() or "the run failed")}
        run.node_end(nid, "cancelled", 1, duration, {"iterations": iteration}, None, error)
        run.finish(nid, "cancelled", 1, duration, None, error)
        return
    if not done:
        error = {"type": "RepeatLimit",
                 "message": "repeat reached max_iterations (%d) without `until` holding" % limit,
                 "traceback": ""}
        run.node_end(nid, "error", 1, duration, {"iterations": iteration}, previous, error)
        run.finish(nid, "error", 1, duration, None, error)
        run.fail(node, error)
        return
    status = _loop_status(node)
    run.node_end(nid, status, 1, duration, {"iterations": iteration}, previous, None)
    run.finish(nid, status, 1, duration, previous, None)

# ---------------------------------------------------------------------------
# runtime/core/64_schedule.py: which node runs when
#
# With max_parallel 1 (the default) nodes run one after another in plan order,
# exactly as written. With N > 1 a node starts as soon as every node it
# depends on (its deps and the conditions guarding it) has ended, at most N at
# once, in threads of this one process; among ready nodes plan order wins, in
# the record too: a node's thread says it started (_announce) before the next
# ready node's thread is started, so their node_start events are in that order.
# Once the run pauses (see 66_limits.py) nothing new starts and running nodes
# finish. After a node fails for good (on_error: stop) nothing new starts, and
# the nodes running beside it get _FAILED_GRACE_S to end on their own: a quick
# one ends as it would have (the record does not depend on which of two
# near-simultaneous ends came first), a slow one — `sleep 100` would hold the
# execution to its timeout, which would then be reported as its error — ends
# with the process, and the runner records it cancelled, "stopped because node
# '<id>' failed".
#
# Output of nodes running side by side cannot be told apart on fd 1, so then
# what a node prints through sys.stdout/sys.stderr (its print(), a command's
# output, an LLM node's warnings) goes out line by line as `log` events naming
# the node (see _NodeOutput); only what foreign code writes straight to the
# file descriptors stays unattributed.
# ---------------------------------------------------------------------------

# How long nodes running beside a failed one may take to end on their own (see above): enough
# for a quick node to end as it would have, short enough that a failure is reported at once.
_FAILED_GRACE_S = 2.0

# In a thread the scheduler started for a node: the event its first node_start (or node_end, for
# a node that does not start: pinned, skipped) sets (see _announce).
_LAUNCH = _thread._local()
# The longest the scheduler waits for that: a node says it started within microseconds; were
# one ever not to, the next would start anyway, only perhaps out of plan order in the record.
_LAUNCH_WAIT_S = 5.0


def _announce():
    """In a node's thread, once its first event is out: the scheduler may start the next."""
    launched = getattr(_LAUNCH, "event", None)
    if launched is not None:
        _LAUNCH.event = None
        launched.set()


def _concurrent(run):
    if run.max_parallel > 1:
        return True
    for node in run.workflow.get("nodes") or ():
        try:
            if node.get("for_each") is not None and int(node.get("max_concurrent") or 1) > 1:
                return True
        except (TypeError, ValueError):
            pass
    return False


def _runs_alone(node):
    return node.get("type") == "code" and (node.get("params") or {}).get("cwd") is not None


def _schedule(run):
    nodes = list(run.workflow.get("nodes") or ())
    _STATE.by_thread = _concurrent(run)
    if run.max_parallel <= 1:
        for node in nodes:
            if run.error is not None or _pause_before(run, node):
                break
            run.run_node(node)
        return
    import threading
    cv = threading.Condition()
    ended = set()
    running = {}

    def upstream(node):
        ups = list(node.get("deps") or ())
        ups.extend(g[0] for g in node.get("guards") or ())
        return ups

    alone = {"running": False}

    def worker(node, launched):
        _LAUNCH.event = launched
        try:
            run.run_node(node)
        finally:
            launched.set()  # before taking cv, which the scheduler may hold while it waits
            with cv:
                if _runs_alone(node):
                    alone["running"] = False
                ended.add(node["id"])
                running.pop(node["id"], None)
                cv.notify_all()

    failed_at = None
    with cv:
        pending = nodes
        while True:
            ending = run.error is not None or run.failing_since is not None
            if not ending and run.paused is None:
                i = 0
                while i < len(pending) and len(running) < run.max_parallel:
                    node = pending[i]
                    if all(u in ended for u in upstream(node)):
                        # A node with its own working directory runs alone (the directory is
                        # the process's): not beside a running node, and none beside it.
                        if _runs_alone(node) and running or alone["running"]:
                            break
                        if _pause_before(run, node):
                            break
                        pending.pop(i)
                        alone["running"] = _runs_alone(node)
                        running[node["id"]] = True
                        launched = threading.Event()
                        threading.Thread(target=worker, args=(node, launched), daemon=True).start()
                        launched.wait(_LAUNCH_WAIT_S)
                    else:
                        i += 1
            if not running:
                break
            if ending:
                if failed_at is None:
                    failed_at = run.failing_since or time.monotonic()
                left = _FAILED_GRACE_S - (time.monotonic() - failed_at)
                if left <= 0 and run.error is not None:
                    break
                # Past the grace with no error yet: the failing for_each node sets it as its
                # own grace ends (the same moment), then returns.
                cv.wait(left if left > 0 else 0.01)
                continue
            cv.wait()

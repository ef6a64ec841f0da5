# ---------------------------------------------------------------------------
# node type: workflow — runs another workflow file as a linked child execution
# params (rendered): {"workflow": absolute path of the child file, "inputs": {}}
#   ->  the child execution's output
# The child runs in its own runner, `flowrun __sub`, started here as a plain
# subprocess (an argv list, no shell) inside this execution's process tree, so
# a stop or timeout of this execution reaches it: the sub runner stops its
# child execution on SIGTERM, and the child's own process tree dies with the
# sub runner (its lifeline). The inputs reach it on stdin as JSON. The sub
# runner prints one JSON line when the child execution starts and one with its
# result; the environment this execution's runner set says where flowrun and
# the database are (FLOWRUN_SUB_EXE, FLOWRUN_SUB_DB) and how deep this
# execution is (FLOWRUN_SUB_DEPTH), and the kill grace, timeout and offline
# mode its child inherits (FLOWRUN_SUB_KILL_GRACE_MS, _TIMEOUT_MS, _OFFLINE). Under a
# max_cost_usd, what this execution has left is the child's limit (or the child's own, when
# lower), and what the child spent (the result's cost_usd) counts here (66_limits.py).
# ---------------------------------------------------------------------------


def node_workflow(ctx, params):
    exe = os.environ.get("FLOWRUN_SUB_EXE")
    db = os.environ.get("FLOWRUN_SUB_DB")
    if not exe or not db:
        raise NodeError("workflow: a sub-workflow runs only under flowrun's runner (flowrun run), "
                        "which records the child execution; this script was started by hand",
                        "SubWorkflow")
    path = params.get("workflow")
    inputs = params.get("inputs")
    if inputs is None:
        inputs = {}
    if not isinstance(inputs, dict):
        raise NodeError("workflow: inputs must be an object, got %s" % _json_type(inputs),
                        "ValueError")
    try:
        depth = int(os.environ.get("FLOWRUN_SUB_DEPTH") or 0)
    except ValueError:
        depth = 0
    scope = ctx.scope
    argv = [exe, "--db", db, "__sub",
            "--parent", str(scope["execution"]["id"]),
            "--node", str(ctx.id),
            "--depth", str(depth + 1),
            "--python", sys.executable,
            "--mode", os.environ.get("FLOWRUN_MODE") or "test"]
    grace = os.environ.get("FLOWRUN_SUB_KILL_GRACE_MS")
    if grace:
        argv += ["--kill-grace-ms", grace]
    timeout = os.environ.get("FLOWRUN_SUB_TIMEOUT_MS")
    if timeout:
        argv += ["--timeout-ms", timeout]
    if os.environ.get("FLOWRUN_SUB_OFFLINE") == "1":
        argv.append("--offline")
    if ctx.node.get("for_each") is not None and isinstance(scope.get("index"), int):
        argv += ["--item", str(scope["index"])]
    share = _cost_reserve(ctx.run, ctx.node)
    if share is not None:
        argv += ["--max-cost-usd", repr(share)]
    argv += ["--", path]
    try:
        return _workflow_run(ctx, argv, inputs, path, exe)
    finally:
        _cost_release(ctx.run, share)


def _workflow_run(ctx, argv, inputs, path, exe):
    """Runs the sub-workflow runner `argv`: the child's output, or the NodeError that says how
    it ended."""
    import json
    import subprocess
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                close_fds=True)
    except OSError as e:
        raise NodeError("workflow: cannot start flowrun (%s): %s" % (exe, e), "SubWorkflow")
    result = None
    try:
        try:
            proc.stdin.write(_dumps(inputs).encode("utf-8"))
            proc.stdin.close()
        except BrokenPipeError:
            pass
        for line in proc.stdout:
            try:
                msg = json.loads(line.decode("utf-8", "replace"))
            except ValueError:
                continue
            if not isinstance(msg, dict):
                continue
            if msg.get("event") == "started":
                ctx.log("child execution %s started: %s" % (msg.get("execution_id"), path))
            elif msg.get("event") == "result":
                result = msg
    finally:
        proc.stdout.close()
        code = proc.wait()
    if result is None:
        raise NodeError("workflow: the sub-workflow runner for %s ended (exit %s) without a result"
                        % (path, code), "SubWorkflow")
    child = result.get("execution_id")
    cost = result.get("cost_usd")
    spent = {"cost_usd": cost if isinstance(cost, (int, float)) and not isinstance(cost, bool) else 0.0}
    ctx.spent = spent
    if result.get("status") == "success":
        output = result.get("output")
        if isinstance(output, dict) and output.get("$flowrun_truncated") is True:
            raise NodeError("child execution %s (%s) succeeded, but its output is %s bytes: more than "
                            "a sub-workflow passes back (FLOWRUN_MAX_PAYLOAD_BYTES, 1 MiB by "
                            "default); return less from it, or a path to a file"
                            % (child, path, output.get("bytes")), "SubWorkflow", spent)
        return output
    err = result.get("error") or {}
    what = "%s: %s" % (err.get("type") or "Error", err.get("message") or "")
    if child and result.get("status") == "paused" and (
            getattr(_STATE, "pause_requested", False)
            or (result.get("parent_pausing") and _pause_signal_comes())):
        # Paused with its parent (see 66_limits.py): the parent pauses too, and its resume
        # runs this child again.
        raise NodeError("child execution %s (%s) paused: %s" % (child, path, what), "ChildPaused",
                        spent)
    if child and result.get("status") == "paused":
        raise NodeError("child execution %s (%s) was paused on its own (flowrun pause %s): "
                        "`flowrun resume %s` finishes it; a resume of this execution runs it again"
                        % (child, path, child, child), "SubWorkflow", spent)
    if child and err.get("type") == "CostLimit" and result.get("limit_from_parent"):
        # The child was refused a call by what this execution gave it: so is this execution.
        # (Its own lower limit is its failure alone: the node fails, on_error decides.)
        ctx.run.fatal = True
        raise NodeError("child execution %s (%s) reached the cost limit: %s" % (child, path, what),
                        "CostLimit", spent)
    if child:
        raise NodeError("child execution %s (%s) ended %s: %s"
                        % (child, path, result.get("status"), what), "SubWorkflow", spent)
    raise NodeError("the child workflow %s did not start: %s" % (path, what),
                    err.get("type") or "SubWorkflow")


def _pause_signal_comes():
    """A child paused with this execution (its result says the pause was asked of this one too)
    can end before this execution's runner has told it (SIGUSR1): waits for that, up to 5 s, so
    that this execution pauses too rather than failing the node."""
    deadline = time.monotonic() + 5.0
    while not getattr(_STATE, "pause_requested", False):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


HANDLERS["workflow"] = node_workflow

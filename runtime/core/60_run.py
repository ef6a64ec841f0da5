# ---------------------------------------------------------------------------
# runtime/core/60_run.py: running the nodes
# ---------------------------------------------------------------------------

# The node types that may take a while, whose input is sent as soon as it is known
# (`node_input`) rather than only with their end: what a reader of a hung node needs.
_EARLY_INPUT = ("code", "command", "http_request", "llm", "agent", "workflow", "delay")


class _Ctx(object):
    """What a handler gets besides its params."""

    def __init__(self, node, scope, attempt):
        self.node = node
        self.id = node.get("id")
        self.scope = scope
        self.attempt = attempt
        self._input = None
        self.timeout_ms = node.get("timeout_ms")
        # What a call spent when its output does not say (a sub-workflow's): {"cost_usd": x}.
        self.spent = None
        self.run = None
        self.part = None

    @property
    def input(self):
        return self._input

    @input.setter
    def input(self, value):
        # Recorded as soon as it is known, not only at the node's end: the input of a node that
        # hangs, times out or is stopped is what its reader needs most.
        self._input = value
        if value is not None and self.run is not None and self.node.get("type") in _EARLY_INPUT:
            self.run.node_input(self.id, self.attempt, self.part, value)

    def log(self, *args, **kwargs):
        level = kwargs.pop("level", "info")
        if kwargs:
            raise TypeError("log() got unexpected keyword arguments: " + ", ".join(sorted(kwargs)))
        lv = _LOG_LEVELS.get(str(level).lower())
        if lv is None:
            raise ValueError("log(): level must be one of info, warning, error, debug (got %r)" % (level,))
        # Named with its item or iteration: side by side, nothing else could tell them apart.
        emit_log(self.id, lv, " ".join(to_text(a) for a in args), None, self.part)

    def dep_outputs(self):
        """{dep id: output} of the node's direct upstream nodes."""
        out = {}
        nodes = self.scope["nodes"]
        for dep in self.node.get("deps") or ():
            entry = nodes.get(dep)
            if entry is not None:
                out[dep] = entry.get("output")
            elif dep == "trigger":
                out[dep] = self.scope["trigger"]
        return out


def _mock_outcome(mock, attempt):
    """The output of a mocked attempt (see crates/codegen/src/mock.rs); raises its error. The
    last outcome listed repeats for further attempts."""
    attempts = mock.get("attempts") or [{"output": None}]
    outcome = attempts[min(attempt, len(attempts)) - 1]
    if "error" in outcome:
        e = outcome.get("error") or {}
        raise NodeError(to_text(e.get("message")), e.get("type") or "MockError")
    return plain_copy(outcome.get("output"))


def _part_mock(mock, part):
    """The mock of one item (iteration) of a node mocked item by item (`each`, in order; the
    last repeats), else the node's mock as it is."""
    each = mock.get("each") if mock is not None else None
    if not each or part is None:
        return mock
    kind, n = part
    at = n if kind == "item" else n - 1  # items count from 0, iterations from 1
    return each[min(max(at, 0), len(each) - 1)]


def _offline_error(node):
    return NodeError("node %s (%s) is not mocked and this run is offline: it would make network "
                     "requests, so it was not run" % (node.get("id"), node.get("type")), "Offline")


def _skip_reason(node, results):
    """Why `node` is skipped, or None when it runs. A node runs when all its
    upstream nodes have ended; it is skipped only on a branch a condition did
    not take, or when every upstream node it depends on was skipped (so a node
    after an if/else runs, and sees the skipped side's output as null)."""
    for guard in node.get("guards") or ():
        cond, branch = guard[0], guard[1]
        entry = results.get(cond)
        if entry is None or entry["status"] not in _OK_STATUSES:
            return "branch not taken by %s" % cond
        out = entry["output"]
        result = out.get("result") if isinstance(out, dict) else None
        if bool(result) != bool(branch):
            return "branch not taken by %s" % cond
    deps = node.get("deps") or ()
    if deps and all((results.get(d) or {}).get("status") == "skipped" for d in deps):
        return "every upstream skipped"
    return None


class _Run(object):
    def __init__(self, workflow, trigger, execution):
        self.workflow = workflow
        self.results = {}
        self.scope = {"trigger": trigger, "nodes": self.results, "execution": execution}
        self.summaries = []
        self.last_output = None
        # The output of the last node in the workflow's order that gave one, not of the last to
        # finish: with nodes side by side, which that is depends on timing.
        self.last_position = -1
        self.positions = dict((n.get("id"), i) for i, n in enumerate(workflow.get("nodes") or ()))
        self.error = None
        # When a failure that will end the run happened, before run.error says so: a for_each
        # item's, while the node waits for its other items (62_loops.py). Nothing new starts.
        self.failing_since = None
        self.failing_why = None
        self.fatal = False
        # Set when the run pauses (see 66_limits.py): the Paused error saying where.
        self.paused = None
        self.cost_usd = 0.0
        self.cost_warned = False
        # The node whose cost took the total past max_cost_usd, if one did (66_limits.py).
        self.cost_crossed_by = None
        # Held by sub-workflows running now (66_limits.py, _cost_reserve): what each may spend.
        self.cost_reserved = 0.0
        self.children_running = 0
        try:
            self.max_parallel = max(1, int(workflow.get("max_parallel") or 1))
        except (TypeError, ValueError):
            self.max_parallel = 1

    def node_start(self, node_id, attempt, part=None, items=None):
        fields = [("event", '"node_start"'), ("node", _dumps(node_id)),
                  ("attempt", str(int(attempt))), ("ts", str(_now_ms()))]
        if part is not None:
            fields.append((part[0], str(int(part[1]))))
        if items is not None:
            fields.append(("items", str(int(items))))
        # Raw stderr lines after this mark are this node's (this item's or iteration's: `at each
        # item 3`); with nodes running side by side they are attributed line by line instead
        # (see _NodeOutput), so the mark says none.
        if _STATE.by_thread:
            mark = b"at -"
        elif part is not None:
            mark = b"at %s %s %d" % (_encode(node_id), _encode(part[0]), int(part[1]))
        else:
            mark = b"at " + _encode(node_id)
        _emit_event(fields, mark)
        _announce()

    def node_input(self, node_id, attempt, part, value):
        """`node_input`: what a running node (attempt, item or iteration) was given."""
        fields = [("event", '"node_input"'), ("node", _dumps(node_id)),
                  ("attempt", str(int(attempt))), ("input", _payload(value))]
        if part is not None:
            fields.append((part[0], str(int(part[1]))))
        _emit_event(fields)

    def node_end(self, node_id, status, attempt, duration, input_, output, error, extra=None,
                 part=None):
        fields = [
            ("event", '"node_end"'),
            ("node", _dumps(node_id)),
            ("status", _dumps(status)),
            ("attempt", str(int(attempt))),
            ("duration_ms", _ms(duration)),
            ("ts", str(_now_ms())),
            ("input", _payload(input_)),
            ("output", _payload(output)),
            ("error", _error_payload(error)),
        ]
        if part is not None:
            fields.append((part[0], str(int(part[1]))))
        if extra:
            for k, v in extra:
                fields.append((k, _dumps(v)))
        # stderr written from here on belongs to no node (until the next node_start).
        _emit_event(fields, b"at -")
        _announce()

    def finish(self, node_id, status, attempt, duration, output, error):
        with _STATE.run_lock:
            self.results[node_id] = {"output": output, "status": status, "error": error}
            self.summaries.append({"id": node_id, "status": status, "attempt": attempt,
                                   "duration_ms": round(duration, 3)})
            position = self.positions.get(node_id, -1)
            if status in _OK_STATUSES and position >= self.last_position:
                self.last_output, self.last_position = output, position

    def fail(self, node, error):
        """A node failed for good: the execution stops unless it may continue. A node that
        did not finish because the run is pausing (a paused child, items not started) pauses
        the run instead."""
        if _pause_failure(self, node, error):
            return
        with _STATE.run_lock:
            if self.fatal or node.get("on_error", "stop") != "continue":
                if self.error is None:
                    self.error = dict(error, node=node["id"])

    def run_all(self):
        _schedule(self)

    def run_node(self, node):
        nid = node["id"]
        pinned = node.get("pinned")
        if pinned is not None:
            status = pinned.get("status") or "pinned"
            output = pinned.get("output")
            extra = None
            if pinned.get("from_execution") is not None:
                extra = [("from_execution", pinned["from_execution"])]
            if status == "reused":
                _cost_reused(self, node, pinned)
            self.node_end(nid, status, 0, 0.0, None, output, None, extra)
            self.finish(nid, status, 0, 0.0, output, None)
            return
        reason = _skip_reason(node, self.results)
        if reason is not None:
            self.node_end(nid, "skipped", 0, 0.0, None, None, None, [("reason", reason)])
            self.finish(nid, "skipped", 0, 0.0, None, None)
            return
        if node.get("for_each") is not None:
            _run_for_each(self, node)
            return
        if node.get("repeat") is not None:
            _run_repeat(self, node)
            return
        status, attempt, duration, output, error = self.attempts(node, self.scope)
        self.finish(nid, status, attempt, duration, output, error)
        if error is not None:
            self.fail(node, error)

    def attempts(self, node, scope, part=None, may_start=None, on_failure=None):
        """Runs the node's handler in `scope` until it succeeds or its retries are
        spent, with a node_start/node_end per attempt (for `part`: ("item", i) or
        ("iteration", k)). Returns (status, attempt, duration, output, error), or None
        when `may_start()` says no. `may_start` (before the first node_start) and
        `on_failure` (before the last node_end of a failure) run under the run lock,
        so a start is either before a failure or sees it."""
        nid = node["id"]
        retry = node.get("retry") or {}
        try:
            max_attempts = max(1, int(retry.get("max_attempts") or 1))
            backoff = float(retry.get("backoff_ms") or 0)
            factor = retry.get("factor")
            factor = 2.0 if factor is None else float(factor)
        except (TypeError, ValueError):
            max_attempts, backoff, factor = 1, 0.0, 2.0
        handler = HANDLERS.get(node.get("type"))
        # A test's mock replaces the handler's call: templates, attempts, retries and on_error
        # are as usual. Offline, a node that would make requests fails at once, never retried.
        mock = _part_mock(node.get("mock"), part)
        offline = bool(node.get("offline"))
        if offline:
            max_attempts = 1
        attempt = 0
        while True:
            attempt += 1
            if attempt == 1 and may_start is not None:
                with _STATE.run_lock:
                    if not may_start():
                        return None
                    self.node_start(nid, attempt, part)
            else:
                self.node_start(nid, attempt, part)
            ctx = _Ctx(node, scope, attempt)
            ctx.run, ctx.part = self, part
            _OUTPUT_OWNER.node = nid
            _OUTPUT_OWNER.part = part
            t0 = time.perf_counter()
            error = None
            output = None
            try:
                if offline:
                    raise _offline_error(node)
                _cost_limit(self, node)
                if handler is None:
                    raise NodeError("no handler for node type %r in this script" % (node.get("type"),))
                params = node.get("params") or {}
                if not getattr(handler, "raw_params", False):
                    params = render(params, scope)
                    if getattr(handler, "own_input", False):
                        ctx._input = params  # the handler says what its input is, and sends it
                    else:
                        ctx.input = params
                if mock is not None:
                    output = _mock_outcome(mock, attempt)
                else:
                    output = handler(ctx, params)
            except KeyboardInterrupt as e:
                error = _error_info(e)
                self.fatal = True
            except (Exception, SystemExit) as e:
                error = _error_info(e)
            _flush_node_output()
            _OUTPUT_OWNER.node = None
            duration = (time.perf_counter() - t0) * 1000.0
            if error is None:
                status = "success" if mock is None else "mocked"
                _cost_add(self, node, output if ctx.spent is None else ctx.spent)
                self.node_end(nid, status, attempt, duration, ctx.input, output, None,
                              part=part)
                return status, attempt, duration, output, None
            _cost_add(self, node, error)
            status = _failed_as(error)
            # A retry is new work: none starts for a run that is ending (another node failed
            # for good), whether before this attempt failed or during its backoff; nor for one
            # that is pausing, nor for an attempt the pause cut short (a child paused with the
            # run): resume runs the node again.
            would_retry = attempt < max_attempts and not self.fatal and status == "error"
            pausing = would_retry and getattr(_STATE, "pause_requested", False)
            retries_left = would_retry and not pausing
            ending = self.ending() if retries_left else None
            if retries_left and ending is None:
                try:
                    wait = backoff * (factor ** (attempt - 1))
                except (OverflowError, ZeroDivisionError):
                    wait = _MAX_BACKOFF_MS
                if not (wait >= 0):  # NaN or negative
                    wait = 0.0
                wait_ms = int(round(min(wait, _MAX_BACKOFF_MS)))
                if mock is not None:
                    # A mocked failure waits for nothing: a test suite does not sleep through
                    # the backoff of a rate limit that never happened.
                    wait_ms = 0
                self.node_end(nid, "error", attempt, duration, ctx.input, None, error,
                              [("retrying", True), ("retry_in_ms", wait_ms)], part=part)
                if self.backoff(wait_ms):
                    continue
                # The retry announced is withdrawn: this attempt's end is said again as the
                # last (the ledger allows that, as an error or cancelled only).
                ending = self.ending()
                pausing = ending is None
                ending = ending or "the run is ending"
            last = None if ending is None else [("reason", "not retried: " + ending)]
            if pausing:
                error, status = _not_retried_for_pause(error, attempt), "cancelled"
                last = [("reason", "not retried: the execution is pausing")]
            if on_failure is not None:
                with _STATE.run_lock:
                    on_failure(error)
            self.node_end(nid, status, attempt, duration, ctx.input, None, error, last, part=part)
            return status, attempt, duration, None, error

    def ending(self):
        """Why the run is ending, if it is: a node, or a for_each node's item, failed for good
        and the run does not go on after it (on_error: stop).  None while it goes on."""
        error = self.error
        if error is not None:
            return "node '%s' failed" % error.get("node") if error.get("node") else "the run failed"
        if self.failing_since is not None:
            return self.failing_why or "the run failed"
        return None

    def backoff(self, wait_ms):
        """Waits wait_ms before a retry, in slices, so that a run that starts ending meanwhile
        (another node failing beside this one) is not held up by it: True if the retry may
        start, False if the run is ending or pausing."""
        deadline = time.monotonic() + wait_ms / 1000.0
        while self.ending() is None and not getattr(_STATE, "pause_requested", False):
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            time.sleep(min(left, _BACKOFF_SLICE_S))
        return False

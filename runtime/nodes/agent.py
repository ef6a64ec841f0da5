# ---------------------------------------------------------------------------
# node type: agent — a coding-agent CLI run headless, in its streaming JSON mode
# params (rendered): {"agent": "claude_code" | "codex" | "gemini", "command":
#   str (the executable), "prompt": str, "cwd": str | None, "model": str |
#   None, "max_turns": int | None, "permission_mode": str | None,
#   "allowed_tools": [str], "resume_session": str | None, "args": [str],
#   "env": {k: v}, "connections": [{"name", "env"}], "hidden_env": [str]
#   (connection variables the agent must not get), "prices": {model:
#   [input, output, cache_read?, cache_write?]} | None (USD per million tokens)}
# output: {"text", "session_id", "model", "usage": {"input_tokens",
#   "output_tokens", "cache_read_tokens", "cache_write_tokens"}, "cost_usd",
#   "cost_source": "reported" | "price_table" | None, "turns", "duration_ms",
#   "exit_code"}
#
# The command lines (the prompt never goes through a shell):
#   claude -p [--allowedTools T…] --output-format stream-json --verbose
#          [--model M] [--max-turns N] [--permission-mode P] [--resume ID] ARGS
#          (prompt on stdin)
#   codex exec --json [--model M] [--sandbox P] ARGS [resume ID] -  (prompt on stdin)
#   gemini --output-format stream-json [--model M] [--approval-mode P]
#          [--allowed-tools T]… [--resume ID] ARGS --prompt=PROMPT  (stdin: /dev/null)
# Every JSON event the CLI prints becomes a one-line summary log (info, or
# warning/error for failures) and the event itself as a `debug` log line
# (capped); flowrun redacts both like every log line.
#
# Usage is normalised: input_tokens are input tokens neither read from nor
# written to the prompt cache (Claude's input_tokens; Codex's and Gemini's
# input minus cached), cache_read_tokens the cache hits, cache_write_tokens
# the cache writes (Claude only). Claude repeats a message's usage on every
# event of that message, so usage counts once per message id.
#
# Endings that are failures, not successes: no final result event, a result
# that reports an error (Claude `is_error`, Codex `turn.failed`, Gemini
# status "error"), an empty result, a non-zero exit. A CLI still running 5 s
# after its final result has its process group ended (SIGTERM, then SIGKILL)
# and the node keeps the result. timeout_ms bounds the whole run (the group
# is killed). The CLI runs in its own process group (a new session), still
# inside the execution's process tree, so a stop or timeout of the
# execution ends it too.
# ---------------------------------------------------------------------------

_AGENT_RESULT_GRACE_S = 5.0
_AGENT_TERM_GRACE_S = 1.0
_AGENT_DRAIN_S = 0.5
_AGENT_DEFAULT_TIMEOUT_MS = 3600000
_AGENT_MAX_LINE = 8 << 20
_AGENT_LOG_JSON_CHARS = 16384
_AGENT_SUMMARY_CHARS = 200


def _agent_line(text, n=_AGENT_SUMMARY_CHARS):
    """One line of at most n characters."""
    text = " ".join(to_text(text).split())
    return text if len(text) <= n else text[:n - 1] + "…"


def _agent_plain(text):
    """text without terminal escape sequences (colours)."""
    if "\x1b" not in text:
        return text
    import re
    return re.sub(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07]*\x07|.)", "", text)


def _agent_brief(value):
    """A tool call's arguments in a few words: the command, path or pattern
    when there is one, else the compact JSON."""
    if isinstance(value, dict):
        for key in ("command", "cmd", "file_path", "path", "absolute_path", "pattern",
                    "query", "url", "description", "prompt"):
            if isinstance(value.get(key), (str, list)):
                v = value[key]
                return _agent_line(" ".join(to_text(x) for x in v) if isinstance(v, list) else v, 120)
    return _agent_line(_dumps(value), 120)


def _agent_argv(p):
    """(argv, stdin text or None) for the node's CLI."""
    agent, cmd = p["agent"], to_text(p["command"])
    model, mode, resume = p.get("model"), p.get("permission_mode"), p.get("resume_session")
    tools = [to_text(t) for t in p.get("allowed_tools") or []]
    extra = [to_text(a) for a in p.get("args") or []]
    if agent == "claude_code":
        argv = [cmd, "-p"]
        if tools:
            argv += ["--allowedTools"] + tools
        argv += ["--output-format", "stream-json", "--verbose"]
        if model:
            argv += ["--model", to_text(model)]
        if p.get("max_turns") is not None:
            argv += ["--max-turns", str(int(p["max_turns"]))]
        if mode:
            argv += ["--permission-mode", to_text(mode)]
        if resume:
            argv += ["--resume", resume]
        return argv + extra, p["prompt"]
    if agent == "codex":
        argv = [cmd, "exec", "--json"]
        if model:
            argv += ["--model", to_text(model)]
        if mode:
            argv += ["--sandbox", to_text(mode)]
        argv += extra
        if resume:
            argv += ["resume", resume]
        return argv + ["-"], p["prompt"]
    if agent == "gemini":
        argv = [cmd, "--output-format", "stream-json"]
        if model:
            argv += ["--model", to_text(model)]
        if mode:
            argv += ["--approval-mode", to_text(mode)]
        for t in tools:
            argv += ["--allowed-tools", t]
        if resume:
            argv += ["--resume", resume]
        return argv + extra + ["--prompt=" + p["prompt"]], None
    raise NodeError("agent: unknown agent %r" % (agent,), "ValueError")


class _AgentRun(object):
    """What the CLI's events said so far."""

    def __init__(self, agent, model):
        self.agent = agent
        self.session_id = None
        self.model = model
        self.final = None       # the final result event, once seen
        self.failure = None     # what the final event says went wrong
        self.text = ""
        self.cost = None        # reported by the CLI
        self.turns = 0
        self.by_message = {}    # Claude: message id -> its usage
        self.usage = None       # (input, output, cache_read, cache_write)
        self.per_model = None   # Gemini: {model: usage tuple}
        self.last_error = None
        self.turn_text = []     # Gemini: the current model turn's text
        self.said = []          # Gemini: text not summarised yet
        self.in_turn = False

    def tokens(self):
        if self.by_message:
            total = [0, 0, 0, 0]
            for u in self.by_message.values():
                for i, v in enumerate(_agent_claude_usage(u)):
                    total[i] += v
            return tuple(total)
        return self.usage


def _agent_int(v):
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else 0


def _agent_claude_usage(u):
    u = u if isinstance(u, dict) else {}
    return (_agent_int(u.get("input_tokens")), _agent_int(u.get("output_tokens")),
            _agent_int(u.get("cache_read_input_tokens")),
            _agent_int(u.get("cache_creation_input_tokens")))


def _agent_claude(run, ev):
    kind, out = ev.get("type"), []
    if kind == "system":
        if ev.get("subtype") == "init":
            run.session_id = ev.get("session_id") or run.session_id
            run.model = ev.get("model") or run.model
            out.append(("info", "session %s started · model %s" % (run.session_id, run.model)))
        else:
            out.append(("info", "system: %s" % _agent_line(ev.get("subtype") or "")))
    elif kind == "assistant":
        msg = ev.get("message") if isinstance(ev.get("message"), dict) else {}
        key = msg.get("id") or ev.get("uuid") or len(run.by_message)
        if isinstance(msg.get("usage"), dict):
            run.by_message[key] = msg["usage"]  # repeated per content block: once per message
        run.model = msg.get("model") or run.model
        for block in msg.get("content") or ():
            if not isinstance(block, dict):
                continue
            if block.get("type") == "text" and block.get("text"):
                out.append(("info", "says: " + _agent_line(block["text"])))
            elif block.get("type") == "tool_use":
                out.append(("info", "tool %s: %s" % (block.get("name"), _agent_brief(block.get("input")))))
            elif block.get("type") == "thinking":
                out.append(("info", "thinks: " + _agent_line(block.get("thinking") or "…")))
    elif kind == "user":
        msg = ev.get("message") if isinstance(ev.get("message"), dict) else {}
        content = msg.get("content")
        for block in content if isinstance(content, list) else ():
            if isinstance(block, dict) and block.get("type") == "tool_result":
                body = block.get("content")
                if isinstance(body, list):
                    body = " ".join(to_text(b.get("text", "")) for b in body if isinstance(b, dict))
                bad = block.get("is_error") is True
                out.append(("warning" if bad else "info",
                            "tool %s: %s" % ("error" if bad else "result", _agent_line(body or ""))))
    elif kind == "result":
        run.final = ev
        run.session_id = ev.get("session_id") or run.session_id
        run.text = ev.get("result") if isinstance(ev.get("result"), str) else ""
        cost = ev.get("total_cost_usd", ev.get("cost_usd"))
        run.cost = cost if isinstance(cost, (int, float)) and not isinstance(cost, bool) else None
        run.turns = _agent_int(ev.get("num_turns")) or len(run.by_message)
        if isinstance(ev.get("usage"), dict):
            run.usage = _agent_claude_usage(ev["usage"])
        subtype = ev.get("subtype") or "success"
        if ev.get("is_error") is True or subtype != "success":
            errors = ev.get("errors") if isinstance(ev.get("errors"), list) else []
            detail = run.text or "; ".join(to_text(e) for e in errors) or "no message"
            run.failure = "is_error: true (subtype %s): %s" % (subtype, _agent_line(detail, 500))
        out.append(("error" if run.failure else "info", "result: %s · %d turns%s" % (
            "error" if run.failure else subtype, run.turns,
            " · $%.4f" % run.cost if run.cost is not None else "")))
    return out


def _agent_codex(run, ev):
    kind, out = ev.get("type"), []
    item = ev.get("item") if isinstance(ev.get("item"), dict) else {}
    itype = item.get("type")
    if kind == "thread.started":
        run.session_id = ev.get("thread_id") or run.session_id
        out.append(("info", "thread %s started" % run.session_id))
    elif kind == "turn.started":
        out.append(("info", "turn started"))
    elif kind == "item.started" and itype == "command_execution":
        out.append(("info", "runs: " + _agent_line(item.get("command") or "")))
    elif kind == "item.completed":
        if itype == "agent_message":
            run.text = to_text(item.get("text") or "")
            out.append(("info", "says: " + _agent_line(run.text)))
        elif itype == "reasoning":
            out.append(("info", "thinks: " + _agent_line(item.get("text") or "")))
        elif itype == "command_execution":
            ok = item.get("status") == "completed" and item.get("exit_code") in (0, None)
            out.append(("info" if ok else "warning", "ran: %s → %s (exit %s)" % (
                _agent_line(item.get("command") or "", 120), item.get("status"), item.get("exit_code"))))
        elif itype == "file_change":
            changes = ", ".join("%s %s" % (c.get("kind"), c.get("path")) for c in item.get("changes") or ()
                                if isinstance(c, dict))
            out.append(("info" if item.get("status") != "failed" else "warning",
                        "edits: " + _agent_line(changes)))
        elif itype == "mcp_tool_call":
            out.append(("info" if item.get("status") != "failed" else "warning", "tool %s.%s: %s" % (
                item.get("server"), item.get("tool"), _agent_brief(item.get("arguments")))))
        elif itype == "web_search":
            out.append(("info", "searches: " + _agent_line(item.get("query") or "")))
        elif itype == "todo_list":
            todo = [t for t in item.get("items") or () if isinstance(t, dict)]
            out.append(("info", "plan: %d of %d done" % (sum(1 for t in todo if t.get("completed")), len(todo))))
        elif itype == "error":
            out.append(("warning", "error: " + _agent_line(item.get("message") or "")))
    elif kind == "turn.completed":
        run.final, run.failure = ev, None
        run.turns += 1
        u = ev.get("usage") if isinstance(ev.get("usage"), dict) else {}
        cached = _agent_int(u.get("cached_input_tokens"))
        run.usage = (max(0, _agent_int(u.get("input_tokens")) - cached), _agent_int(u.get("output_tokens")), cached, 0)
        out.append(("info", "turn completed · %d in / %d out" % (_agent_int(u.get("input_tokens")), run.usage[1])))
    elif kind == "turn.failed":
        run.final = ev
        err = ev.get("error") if isinstance(ev.get("error"), dict) else {}
        run.failure = "turn.failed: " + _agent_line(err.get("message") or run.last_error or "no message", 500)
        out.append(("error", run.failure))
    elif kind == "error":
        run.last_error = to_text(ev.get("message") or "")
        out.append(("error", "error: " + _agent_line(run.last_error)))
    return out


def _agent_gemini_said(run, out):
    if run.said:
        out.append(("info", "says: " + _agent_line("".join(run.said))))
        run.said = []


def _agent_gemini_usage(s):
    cached = _agent_int(s.get("cached"))
    plain = s.get("input") if isinstance(s.get("input"), int) else _agent_int(s.get("input_tokens")) - cached
    return (max(0, plain), _agent_int(s.get("output_tokens")), cached, 0)


def _agent_gemini(run, ev):
    kind, out = ev.get("type"), []
    if kind != "message" or ev.get("role") != "assistant":
        _agent_gemini_said(run, out)
    if kind == "init":
        run.session_id = ev.get("session_id") or run.session_id
        run.model = ev.get("model") or run.model
        out.append(("info", "session %s started · model %s" % (run.session_id, run.model)))
    elif kind in ("message", "tool_use") and (kind == "tool_use" or ev.get("role") == "assistant"):
        if not run.in_turn:
            run.in_turn = True
            run.turns += 1
        if kind == "tool_use":
            out.append(("info", "tool %s: %s" % (ev.get("tool_name"), _agent_brief(ev.get("parameters")))))
        else:
            run.turn_text.append(to_text(ev.get("content") or ""))
            run.said.append(to_text(ev.get("content") or ""))
    elif kind == "message":
        out.append(("info", "prompt: " + _agent_line(ev.get("content") or "")))
    elif kind == "tool_result":
        run.in_turn, run.turn_text = False, []  # the model answers again: a new turn
        bad = ev.get("status") == "error"
        err = ev.get("error") if isinstance(ev.get("error"), dict) else {}
        out.append(("warning" if bad else "info", "tool %s: %s" % (
            "error" if bad else "result", _agent_line(err.get("message") if bad else ev.get("output") or ""))))
    elif kind == "error":
        run.last_error = to_text(ev.get("message") or "")
        out.append(("warning" if ev.get("severity") == "warning" else "error",
                    "%s: %s" % (ev.get("severity") or "error", _agent_line(run.last_error))))
    elif kind == "result":
        run.final = ev
        if not run.in_turn:
            run.turns += 1  # a model turn that said nothing (after tool results, or at all)
        run.text = "".join(run.turn_text)
        stats = ev.get("stats") if isinstance(ev.get("stats"), dict) else {}
        run.usage = _agent_gemini_usage(stats)
        models = stats.get("models")
        if isinstance(models, dict) and models:
            run.per_model = dict((m, _agent_gemini_usage(s if isinstance(s, dict) else {})) for m, s in models.items())
        if ev.get("status") != "success":
            err = ev.get("error") if isinstance(ev.get("error"), dict) else {}
            run.failure = 'status "%s": %s' % (ev.get("status"), _agent_line(
                err.get("message") or run.last_error or "no message", 500))
        out.append(("error" if run.failure else "info", "result: %s · %d in / %d out" % (
            ev.get("status"), _agent_int(stats.get("input_tokens")), run.usage[1])))
    return out


_AGENT_FEED = {"claude_code": _agent_claude, "codex": _agent_codex, "gemini": _agent_gemini}


def _agent_price(prices, model):
    """The price entry of `model`: exact, else the longest name it starts
    with followed by "-" (a dated snapshot), else None."""
    if not prices or not model:
        return None
    if model in prices:
        return prices[model]
    best = None
    for name in prices:
        if len(model) > len(name) and model.startswith(name) and model[len(name)] == "-":
            if best is None or len(name) > len(best):
                best = name
    return prices[best] if best is not None else None


def _agent_cost(prices, model, usage):
    """USD for `usage` at the table's price of `model`, or None when the
    model or the price of a kind of token it used is not listed."""
    entry = _agent_price(prices, model)
    if not isinstance(entry, list) or usage is None:
        return None
    total = 0.0
    for i, n in enumerate(usage):
        if n:
            if i >= len(entry) or not isinstance(entry[i], (int, float)):
                return None
            total += n * entry[i]
    return total / 1e6


def _agent_priced(run, prices):
    """(cost_usd, cost_source)."""
    if run.cost is not None:
        return run.cost, "reported"
    if run.per_model:
        costs = [_agent_cost(prices, m, u) for m, u in run.per_model.items()]
        cost = None if any(c is None for c in costs) else sum(costs)
    else:
        cost = _agent_cost(prices, run.model, run.tokens())
    return (round(cost, 8), "price_table") if cost is not None else (None, None)


def _agent_end(proc, sig):
    """Signals the agent's whole process group (its pid: it leads a session)."""
    import signal
    try:
        os.killpg(proc.pid, getattr(signal, sig))
    except (ProcessLookupError, PermissionError):
        pass


class _AgentPipes(object):
    """Writes the prompt to stdin while reading stdout (JSON lines) and
    stderr (echoed, the tail kept) without blocking on any of them."""

    def __init__(self, proc, stdin_bytes, on_line):
        import selectors
        self.proc, self.on_line = proc, on_line
        self.sel = selectors.DefaultSelector()
        self.buf, self.skipping = bytearray(), False
        self.err_tail = b""
        self.sel.register(proc.stdout, selectors.EVENT_READ)
        self.sel.register(proc.stderr, selectors.EVENT_READ)
        self.pending = memoryview(stdin_bytes) if stdin_bytes is not None else None
        if self.pending is not None:
            os.set_blocking(proc.stdin.fileno(), False)
            self.sel.register(proc.stdin, selectors.EVENT_WRITE)

    def open(self):
        return bool(self.sel.get_map())

    def step(self, timeout):
        if not self.open():
            time.sleep(max(0.0, min(timeout, 0.05)))
            return
        for key, _ in self.sel.select(timeout=max(0.0, timeout)):
            f = key.fileobj
            if f is self.proc.stdin:
                try:
                    self.pending = self.pending[os.write(f.fileno(), self.pending[:65536]):]
                except (BrokenPipeError, OSError):
                    self.pending = self.pending[:0]
                if not self.pending:
                    self.sel.unregister(f)
                    f.close()
                continue
            chunk = os.read(f.fileno(), 65536)
            if not chunk:
                self.sel.unregister(f)
            elif f is self.proc.stderr:
                self.err_tail = (self.err_tail + chunk)[-4096:]
                sys.stderr.write(chunk.decode("utf-8", "replace"))
                sys.stderr.flush()
            else:
                self.take(chunk)

    def take(self, chunk):
        while chunk:
            i = chunk.find(b"\n")
            if not self.skipping:
                self.buf += chunk if i < 0 else chunk[:i]
                if len(self.buf) > _AGENT_MAX_LINE:
                    self.on_line(None)  # an event too long to keep: dropped, and said so
                    self.buf, self.skipping = bytearray(), True
            if i < 0:
                return
            if not self.skipping:
                line, self.buf = bytes(self.buf), bytearray()
                self.on_line(line)
            self.skipping = False
            chunk = chunk[i + 1:]

    def close(self):
        if self.buf and not self.skipping:
            self.on_line(bytes(self.buf))
        self.buf = bytearray()
        for key in list(self.sel.get_map().values()):
            self.sel.unregister(key.fileobj)
        self.sel.close()
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if f is not None:
                try:
                    f.close()
                except OSError:
                    pass


def node_agent(ctx, params):
    import subprocess
    agent, command = params["agent"], to_text(params["command"])
    prompt = to_text(params.get("prompt"))
    if not prompt.strip():
        raise NodeError("agent: the prompt is empty", "ValueError")
    params = dict(params, prompt=prompt)
    if "resume_session" in params:
        resume = to_text(params["resume_session"]).strip() if params["resume_session"] is not None else ""
        if not resume:
            raise NodeError("agent: resume_session is empty: there is no session to continue "
                            "(did the node it comes from report a session_id?)", "ValueError")
        params["resume_session"] = resume
    argv, stdin_text = _agent_argv(params)
    if os.sep in argv[0]:
        argv[0] = os.path.abspath(argv[0])  # relative to the run's directory, not the node's cwd
    cwd = to_text(params["cwd"]) if params.get("cwd") else None
    shown = dict((k, v) for k, v in params.items() if k not in ("prices", "hidden_env"))
    shown["argv"] = argv if stdin_text is not None else argv[:-1] + ["--prompt=…"]
    ctx.input = shown
    run = _AgentRun(agent, to_text(params["model"]) if params.get("model") else None)
    feed = _AGENT_FEED[agent]

    def on_line(line):
        if line is None:
            ctx.log("%s printed an event longer than %d bytes; it was skipped" % (command, _AGENT_MAX_LINE),
                    level="warning")
            return
        text = line.decode("utf-8", "replace").strip()
        if not text:
            return
        try:
            ev = _decode_json(text)
        except (ValueError, RecursionError):
            ev = None
        if not isinstance(ev, dict):
            ctx.log(_agent_line(text, 500))
            return
        for level, summary in feed(run, ev):
            ctx.log(summary, level=level)
        if len(text) > _AGENT_LOG_JSON_CHARS:
            text = text[:_AGENT_LOG_JSON_CHARS] + "… [%d characters cut]" % (len(text) - _AGENT_LOG_JSON_CHARS)
        ctx.log(text, level="debug")

    timeout_ms = ctx.timeout_ms or _AGENT_DEFAULT_TIMEOUT_MS
    started = time.monotonic()
    deadline = started + timeout_ms / 1000.0
    env = program_env(params, params.get("hidden_env") or ())
    try:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, close_fds=True,
                                stdin=subprocess.PIPE if stdin_text is not None else subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    except OSError as e:
        problem = _no_dir_message("agent", cwd)
        if problem is not None:
            raise NodeError(problem, "FileNotFoundError")
        where = " in %s" % cwd if cwd else ""
        raise NodeError("agent: cannot run %s%s: %s" % (argv[0], where, e.strerror or e), type(e).__name__)
    pipes = _AgentPipes(proc, None if stdin_text is None else stdin_text.encode("utf-8"), on_line)
    result_at = exited_at = None
    ended = None  # "timeout" or "hang": flowrun ended the CLI's process group
    term_at = None
    try:
        while True:
            now = time.monotonic()
            alive = proc.poll() is None
            if not alive and exited_at is None:
                exited_at = now
            if run.final is not None and result_at is None:
                result_at = now
            if alive and ended is None and now >= deadline:
                _agent_end(proc, "SIGKILL")
                ended = "hang" if run.final is not None else "timeout"
            elif alive and ended is None and result_at is not None and now >= result_at + _AGENT_RESULT_GRACE_S:
                ctx.log("%s was still running %g s after its final result: ending its process group"
                        % (command, _AGENT_RESULT_GRACE_S), level="warning")
                _agent_end(proc, "SIGTERM")
                ended, term_at = "hang", now
            elif alive and term_at is not None and now >= term_at + _AGENT_TERM_GRACE_S:
                _agent_end(proc, "SIGKILL")
                term_at = None
            if exited_at is not None and (not pipes.open() or now >= exited_at + (0.1 if ended else _AGENT_DRAIN_S)):
                break  # (what the CLI left running may hold its pipes open)
            wait = 0.25
            for t in (deadline, (result_at or 0) + _AGENT_RESULT_GRACE_S, (term_at or 0) + _AGENT_TERM_GRACE_S):
                if t > now:
                    wait = min(wait, t - now)
            pipes.step(wait if alive else min(wait, 0.05))
    finally:
        pipes.close()
        if proc.poll() is None:
            _agent_end(proc, "SIGKILL")
        proc.wait()
    duration_ms = int((time.monotonic() - started) * 1000)
    code = proc.returncode
    stderr_tail = _agent_plain(pipes.err_tail.decode("utf-8", "replace")).strip()
    tail = (": " + _agent_line(stderr_tail[-500:], 500)) if stderr_tail else ""
    if ended == "timeout":
        raise NodeError("%s did not finish within the node's timeout of %d ms; its process group was killed"
                        % (command, timeout_ms), "Timeout")
    tokens = run.tokens()
    cost, source = _agent_priced(run, params.get("prices"))
    if tokens is not None:
        ctx.log("%s: %d in (+%d cache read, %d cache write) / %d out tokens, cost %s" % (
            command, tokens[0], tokens[2], tokens[3], tokens[1],
            "$%.6f (%s)" % (cost, "reported" if source == "reported" else "price table")
            if cost is not None else "unknown"))
    usage = tokens or (None, None, None, None)
    usage = {"input_tokens": usage[0], "output_tokens": usage[1],
             "cache_read_tokens": usage[2], "cache_write_tokens": usage[3]}
    # A run that fails after using tokens still cost them: the error says so, and the
    # execution's totals and cost limit count it.
    spent = {"usage": usage if tokens is not None else None, "cost_usd": cost}
    if run.final is None:
        said = " (its last error: %s)" % _agent_line(run.last_error, 500) if run.last_error else ""
        raise NodeError("%s ended (exit code %s) without its final result event%s%s"
                        % (command, code, said, tail), "AgentNoResult", spent)
    if run.failure:
        raise NodeError("%s reported an error: %s (exit code %s)" % (command, run.failure, code),
                        "AgentFailed", spent)
    if ended is None and code != 0:
        raise NodeError("%s exited with code %s after its final result%s" % (command, code, tail),
                        "AgentExitCode", spent)
    if not run.text.strip():
        raise NodeError("%s's final result is empty: the agent gave no answer (exit code %s)"
                        % (command, code), "AgentEmptyResult", spent)
    return {"text": run.text, "session_id": run.session_id, "model": run.model,
            "usage": usage, "cost_usd": cost, "cost_source": source, "turns": run.turns,
            "duration_ms": duration_ms, "exit_code": code}


node_agent.own_input = True  # sets ctx.input itself
HANDLERS["agent"] = node_agent

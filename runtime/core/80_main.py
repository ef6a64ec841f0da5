# ---------------------------------------------------------------------------
# runtime/core/80_main.py: startup
# ---------------------------------------------------------------------------

def _apply_defaults(schema, data):
    """Fill missing properties that have a "default", recursively, also inside a default just
    filled in, so that applying them again changes nothing (the runner applied them before it
    validated the trigger: the nodes must see what it validated). The runner's apply_defaults
    (crates/codegen/src/json.rs) is the same rule."""
    if not isinstance(schema, dict) or not isinstance(data, dict):
        return
    props = schema.get("properties")
    if not isinstance(props, dict):
        return
    for name, sub in props.items():
        if not isinstance(sub, dict):
            continue
        if name not in data:
            if "default" not in sub:
                continue
            data[name] = plain_copy(sub["default"])
        _apply_defaults(sub, data[name])


def _read_nonce():
    """The nonce the runner wrote as the first line of stdin (FLOWRUN_NONCE_ON_STDIN=1): never in
    the environment, where /proc/<pid>/environ would show it to any process of the user. Run by
    hand, a random one."""
    if os.environ.pop("FLOWRUN_NONCE_ON_STDIN", None) == "1" and sys.stdin is not None:
        try:
            line = sys.stdin.buffer.readline(256).strip().decode("ascii", "replace")
        except (OSError, ValueError, AttributeError):
            line = ""
        if line:
            return line
    return os.urandom(8).hex()


def _read_trigger():
    """Returns (data, None) or (None, message)."""
    stdin = sys.stdin
    if stdin is None:
        return {}, None
    try:
        if stdin.isatty():
            return {}, None  # run by hand without `< trigger.json`
        raw = stdin.buffer.read()
    except (OSError, ValueError, AttributeError):
        return {}, None
    try:
        # A byte-order mark is dropped by hand: the "utf-8-sig" codec is looked up and imported
        # at run time, "utf-8" is built in.
        text = (raw[3:] if raw[:3] == b"\xef\xbb\xbf" else raw).decode("utf-8")
    except UnicodeDecodeError as e:
        return None, "trigger data is not valid UTF-8: %s" % e
    if not text.strip():
        return {}, None
    try:
        return _decode_json(text), None
    except ValueError as e:
        return None, "trigger data is not valid JSON: %s" % e
    except RecursionError:
        return None, "trigger data is not valid JSON: nested too deeply"


def _install_streams():
    """Wrap sys.stdout/sys.stderr to track line starts; make them UTF-8 with
    backslashreplace so that printing any text never fails a node."""
    import _thread
    _STATE.lock = _thread.allocate_lock()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(encoding="utf-8", errors="backslashreplace")
        except Exception:
            pass
    if sys.stdout is not None and not isinstance(sys.stdout, _LineTracker):
        sys.stdout = _LineTracker(sys.stdout, "stdout")
    if isinstance(sys.stdout, _LineTracker):
        _STATE.out = sys.stdout
    if sys.stderr is not None and not isinstance(sys.stderr, _LineTracker):
        sys.stderr = _LineTracker(sys.stderr, "stderr")
    if isinstance(sys.stderr, _LineTracker):
        _STATE.err = sys.stderr


def _emit_result(status, output, error, duration, summaries):
    body = ",".join([
        '"status":' + _dumps(status),
        '"output":' + _payload(output),
        '"error":' + _error_payload(error),
        '"duration_ms":' + _ms(duration),
        '"nodes":' + _dumps(summaries),
    ])
    _emit_lines([_STATE.prefix + b"result-start", _encode("{" + body + "}"),
                  _STATE.prefix + b"result-end"], last=True)


def _outcome(run):
    """(status, output, error) of a run that ended: a failure wins over a pause; the output is
    the workflow's `output` when it has one, else the last node's."""
    if run.error is not None:
        return "error", run.last_output, run.error
    over = _cost_overrun(run)
    if over is not None:
        return "error", run.last_output, over
    if run.paused is not None:
        return "paused", None, run.paused
    if "output" not in run.workflow:
        return "success", run.last_output, None
    try:
        return "success", render(run.workflow["output"], run.scope), None
    except (Exception, RecursionError) as e:
        error = _error_info(e)
        error["message"] = "the workflow's `output`: " + error["message"]
        error["node"] = None
        return "error", None, error


def prepare_for_fork(workflow):
    """Run by a warm template (runtime/warm/template.py) once per script, before it forks
    executions of it: what every execution would otherwise repeat (compiling a code node's
    source, say) is done once and inherited.  Never runs workflow code, and leaves nothing an
    execution could tell from a cold start but the time saved; a hook that fails is skipped,
    and the execution then does that work itself, as a cold one does."""
    for hook in FORK_PREPARE:
        try:
            hook(workflow)
        except Exception:
            pass


# The most problems `--check` lists (a few hundred bytes each); it says when there are more.
_CHECK_MAX_PROBLEMS = 100


def check_only(workflow):
    """`script --check` (flowrun validate): the problems the start checks find (the first
    _CHECK_MAX_PROBLEMS), as one JSON line on stdout ({"problems": [{"error": …, "where": …}],
    "more": bool}), then exit 0.  Reads nothing, runs
    no node and speaks no protocol: compiling a code node's source defines its function and runs
    none of its body."""
    global CHECK_ONLY
    CHECK_ONLY = True
    problems, more = [], False
    for check in START_CHECKS:
        for error, where in check(workflow):
            if len(problems) == _CHECK_MAX_PROBLEMS:
                more = True
                break
            # Not its traceback: it quotes the source line, which may be megabytes long.
            error.pop("traceback", None)
            problems.append({"error": error, "where": where})
    sys.stdout.write(_dumps({"problems": problems, "more": more}) + "\n")
    sys.stdout.flush()
    sys.exit(0)


def main(workflow):
    if sys.argv[1:] == ["--check"]:
        check_only(workflow)
    t0 = time.perf_counter()
    nonce = _read_nonce()
    _STATE.prefix = ("@@flowrun:" + nonce + ":").encode("utf-8")
    try:
        mp = int(os.environ.get("FLOWRUN_MAX_PAYLOAD_BYTES") or _DEFAULT_MAX_PAYLOAD)
        _STATE.max_payload = mp if mp > 0 else _DEFAULT_MAX_PAYLOAD
    except ValueError:
        _STATE.max_payload = _DEFAULT_MAX_PAYLOAD
    _install_streams()
    _install_pause_handler()
    _own_sources_in_linecache()

    execution = {
        "id": os.environ.get("FLOWRUN_EXECUTION_ID") or os.urandom(16).hex(),
        "mode": os.environ.get("FLOWRUN_MODE") or "manual",
        "workflow_id": workflow.get("id"),
    }
    run = None
    try:
        trigger, problem = _read_trigger()
        if problem is not None:
            error = {"node": None, "type": "InvalidTrigger", "message": problem, "traceback": ""}
            _emit_result("error", None, error, (time.perf_counter() - t0) * 1000.0, [])
            sys.exit(1)
        _apply_defaults(workflow.get("inputs"), trigger)
        run = _Run(workflow, trigger, execution)
        for check in START_CHECKS:
            for error, _where in check(run.workflow):
                run.error = error
                break
            if run.error is not None:
                break
        if run.error is None:
            run.run_all()
        status, output, error = _outcome(run)
        _emit_result(status, output, error, (time.perf_counter() - t0) * 1000.0, run.summaries)
        code = 1 if status == "error" else 0
    except SystemExit:
        raise
    except BaseException as e:  # a bug in the runtime or an interrupt
        error = _error_info(e)
        error = {"node": None, "type": error["type"], "message": "flowrun runtime failure: " + error["message"],
                 "traceback": error["traceback"]}
        _emit_result("error", run.last_output if run else None, error,
                     (time.perf_counter() - t0) * 1000.0, run.summaries if run else [])
        code = 1
    sys.exit(code)

# ---------------------------------------------------------------------------
# node type: command — runs a program (argv, or a shell string with shell=true)
# params: {"argv": [str] | None, "command": str | None, "command_quoting":
#   ["word" | "double" | "single"] | None, "shell": bool, "cwd": str | None,
#   "env": {k: v}, "stdin": str | None, "allow_failure": bool,
#   "max_output_bytes": int, "connections": [{"name", "env"}]}
# Params are rendered here (raw_params): in a shell line each template value
# is quoted for where it sits, as codegen found it (crates/codegen/src/
# shell.rs, one entry of command_quoting per reference): "word" makes it one
# single-quoted shell word, "double" escapes it for inside "...", "single"
# for inside '...'. A value never becomes shell code.
# output: {"exit_code", "stdout", "stderr"} (+ "stdout_cut_bytes" /
#   "stderr_cut_bytes" when the output was longer than max_output_bytes)
# The program stays in the execution's process group, so a stop or timeout
# of the execution ends it too. Its output is also streamed to the logs.
# ---------------------------------------------------------------------------

_COMMAND_DEFAULT_TIMEOUT_MS = 600000


def _command_collect(proc, stdin_bytes, limit, deadline):
    """Reads both pipes (and writes stdin) without deadlock, keeping the first
    `limit` bytes of each stream and counting the rest; echoes lines to our
    own stdout/stderr so the runner shows them live. Returns (out, err,
    out_cut, err_cut, timed_out)."""
    import selectors
    sel = selectors.DefaultSelector()
    kept = {proc.stdout: bytearray(), proc.stderr: bytearray()}
    cut = {proc.stdout: 0, proc.stderr: 0}
    echo = {proc.stdout: sys.stdout, proc.stderr: sys.stderr}
    sel.register(proc.stdout, selectors.EVENT_READ)
    sel.register(proc.stderr, selectors.EVENT_READ)
    pending = memoryview(stdin_bytes) if stdin_bytes else None
    if pending is not None:
        os.set_blocking(proc.stdin.fileno(), False)
        sel.register(proc.stdin, selectors.EVENT_WRITE)
    else:
        proc.stdin.close()
    timed_out = False
    while sel.get_map():
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            break
        for key, _ in sel.select(timeout=min(left, 0.5)):
            f = key.fileobj
            if f is proc.stdin:
                try:
                    n = os.write(f.fileno(), pending[:65536])
                    pending = pending[n:]
                except BrokenPipeError:
                    pending = pending[:0]
                if not pending:
                    sel.unregister(f)
                    f.close()
                continue
            chunk = os.read(f.fileno(), 65536)
            if not chunk:
                sel.unregister(f)
                continue
            room = limit - len(kept[f])
            kept[f] += chunk[:max(room, 0)]
            cut[f] += max(0, len(chunk) - max(room, 0))
            stream = echo[f]
            stream.write(chunk.decode("utf-8", "replace"))
            stream.flush()
    sel.close()
    return bytes(kept[proc.stdout]), bytes(kept[proc.stderr]), cut[proc.stdout], cut[proc.stderr], timed_out


def _command_quote(value, quoting):
    """`value`'s text, quoted for its place in a shell line."""
    text = to_text(value)
    if quoting == "word":
        return "'" + text.replace("'", "'\"'\"'") + "'"
    if quoting == "double":
        for c in ("\\", "$", "`", '"'):
            text = text.replace(c, "\\" + c)
        return text
    if quoting == "single":
        return text.replace("'", "'\\''")
    raise NodeError("command: unknown quoting %r for a template value (a script from "
                    "another flowrun version?)" % (quoting,), "ValueError")


def _command_shell_line(line, quoting, scope):
    """The shell line with every template value quoted for its place."""
    if type(line) is not _T:
        return to_text(line)
    refs = [p for p in line.parts if type(p) is _R]
    if len(refs) != len(quoting or ()):
        raise NodeError("command: the shell line's quoting does not match its templates "
                        "(a script from another flowrun version?)", "ValueError")
    out = []
    values = iter(quoting)
    for p in line.parts:
        if type(p) is _R:
            out.append(_command_quote(_resolve(p, scope, False), next(values)))
        else:
            out.append(p if type(p) is str else to_text(p))
    return "".join(out)


def node_command(ctx, params):
    import subprocess
    line = params.get("command")
    quoting = params.get("command_quoting")
    params = render(dict((k, v) for k, v in params.items()
                         if k not in ("command", "command_quoting")), ctx.scope)
    shell = bool(params.get("shell"))
    try:
        params["command"] = _command_shell_line(line, quoting, ctx.scope) if shell else render(line, ctx.scope)
    except TemplateError as e:
        e.loc.append("command")
        raise
    ctx.input = params
    if shell:
        args = params["command"]
    else:
        args = [to_text(a) for a in params.get("argv") or []]
        if not args:
            raise NodeError("command: argv is empty", "ValueError")
    env = program_env(params)
    stdin = params.get("stdin")
    stdin_bytes = None if stdin is None else (stdin if isinstance(stdin, str) else to_text(stdin)).encode("utf-8")
    cwd = params.get("cwd")
    timeout_ms = ctx.timeout_ms or _COMMAND_DEFAULT_TIMEOUT_MS
    limit = int(params.get("max_output_bytes") or 1048576)
    try:
        proc = subprocess.Popen(args, shell=shell, cwd=cwd or None, env=env,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, close_fds=True)
    except FileNotFoundError as e:
        problem = _no_dir_message("command", cwd)
        if problem is not None:
            raise NodeError(problem, "FileNotFoundError")
        where = " in %s" % cwd if cwd else ""
        raise NodeError("command: cannot run %s%s: %s" % (to_text(args if shell else args[0]), where, e.strerror), "FileNotFoundError")
    except (PermissionError, NotADirectoryError, OSError) as e:
        raise NodeError("command: cannot run %s: %s" % (to_text(args if shell else args[0]), e), type(e).__name__)
    deadline = time.monotonic() + timeout_ms / 1000.0
    exited = None
    try:
        out, err, out_cut, err_cut, timed_out = _command_collect(proc, stdin_bytes, limit, deadline)
        exited = proc.poll()
    finally:
        if proc.poll() is None:
            try:
                remaining = deadline - time.monotonic()
                proc.wait(timeout=max(0.0, remaining))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                timed_out = True
    if timed_out and exited is not None:
        # The command ended, but something it started in the background kept its output open.
        raise NodeError("command exited (status %d), but its stdout or stderr was still open "
                        "after %d ms: a process it left running holds it (redirect what runs in "
                        "the background: `cmd > /dev/null 2>&1 &`)" % (exited, timeout_ms), "Timeout")
    if timed_out:
        raise NodeError("command timed out after %d ms and was killed" % timeout_ms, "Timeout")
    result = {"exit_code": proc.returncode,
              "stdout": out.decode("utf-8", "replace"),
              "stderr": err.decode("utf-8", "replace")}
    if out_cut:
        result["stdout_cut_bytes"] = out_cut
    if err_cut:
        result["stderr_cut_bytes"] = err_cut
    if proc.returncode != 0 and not params.get("allow_failure"):
        tail = result["stderr"].strip()[-500:]
        raise NodeError("command exited with code %d%s" % (proc.returncode, (": " + tail) if tail else ""), "CommandFailed")
    return result


node_command.raw_params = True
HANDLERS["command"] = node_command

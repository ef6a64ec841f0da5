# ---------------------------------------------------------------------------
# node type: code — runs Python source as a function body
# params: {"code": "<source>", "connections"?: [{"name", "env"}]}  (the
#   source is data, never templated)
#
# The body sees `trigger`, `nodes` ({id: {"output", "status", "error"}} of the
# nodes finished so far), `execution` and `log(*args, level="info")` — and
# `item`, `index` in a for_each node, `iteration`, `previous` in a repeat
# node (None elsewhere); its
# `return` value is the output.  trigger/nodes/execution are deep copies, so
# mutating them affects neither other nodes nor a retry.  A declared
# connection is read from the environment, as a command node's program does
# (`os.environ["GROQ_API_KEY"]`, which is also where provider SDKs look): the
# runner binds it before the run starts and redacts it from everything.
#
# The function is built from the parsed module: its statements become the body
# of a FunctionDef, compiled with filename "<node ID>", so tracebacks and
# SyntaxErrors carry the user's own line numbers.  `_ast` (the C module behind
# `ast`) is used directly: importing `ast` itself costs ~7 ms of startup.
# ---------------------------------------------------------------------------
import _ast

_code_ARGS = ("trigger", "nodes", "execution", "log", "item", "index", "iteration", "previous")
_code_CACHE = {}
# Per compiled source: the arguments its code may read (_code_reads).
_code_READS = {}

# Names by which code could reach its frame's locals (or run code that does) other than by
# naming them: code that mentions one of these may read every argument.
_code_INTROSPECTION = frozenset((
    "locals", "vars", "eval", "exec", "globals", "compile", "__import__", "getattr", "sys",
    "inspect", "traceback", "f_locals", "f_back", "tb_frame", "gi_frame", "cr_frame", "ag_frame",
    "_getframe", "currentframe", "stack", "trace", "__dict__", "__code__", "__closure__",
    "__globals__", "__builtins__", "importlib", "builtins"))


def _code_walk(tree):
    """Every node of `tree` (`ast.walk`, without importing `ast`: `_ast` is what the runtime
    has loaded)."""
    todo = [tree]
    while todo:
        n = todo.pop()
        yield n
        for field in n._fields:
            v = getattr(n, field, None)
            if isinstance(v, _ast.AST):
                todo.append(v)
            elif isinstance(v, list):
                todo.extend(x for x in v if isinstance(x, _ast.AST))


def _code_reads(tree):
    """The arguments a node's code may read: those it names (a name, an attribute, an import,
    a string), or all of them when it could reach its frame another way. What it cannot read
    needs no copy: an item of a long for_each that reads neither `nodes` nor `trigger` copies
    neither (a deep copy of every node's output per item made such a node quadratic)."""
    names = set()
    for n in _code_walk(tree):
        if isinstance(n, _ast.Name):
            names.add(n.id)
        elif isinstance(n, _ast.Attribute):
            names.add(n.attr)
        elif isinstance(n, _ast.alias):
            names.update(n.name.split("."))
            if n.asname:
                names.add(n.asname)
        elif isinstance(n, _ast.Constant) and isinstance(n.value, str):
            names.add(n.value)
    if names & _code_INTROSPECTION:
        return frozenset(_code_ARGS)
    return frozenset(a for a in _code_ARGS if a in names)


def _code_func_name(node_id):
    name = "".join(c if (c.isalnum() or c == "_") else "_" for c in str(node_id))
    if not name or name[0].isdigit():
        name = "node_" + name
    return name


def _code_formats_tracebacks(source):
    """Whether the source may format tracebacks itself (then linecache must
    know it before it runs, not only when the runtime reports an error)."""
    for word in ("traceback", "logging", "linecache", "exc_info", "pdb", "inspect"):
        if word in source:
            return True
    return False


def _code_located(node, lineno):
    node.lineno = lineno
    node.col_offset = 0
    node.end_lineno = lineno
    node.end_col_offset = 0
    return node


def _code_compile(node_id, source, cache=True):
    key = (node_id, source)
    fn = _code_CACHE.get(key)
    if fn is not None:
        return fn
    filename = "<node %s>" % node_id
    register_source(filename, source, _code_formats_tracebacks(source))
    module = compile(source, filename, "exec", _ast.PyCF_ONLY_AST, dont_inherit=True)
    _code_READS[key] = _code_reads(module)
    body = list(module.body)
    last = 1
    if body:
        last = getattr(body[-1], "end_lineno", None) or body[-1].lineno
    else:
        body = [_code_located(_ast.Pass(), 1)]
    args = _ast.arguments(
        posonlyargs=[],
        args=[_code_located(_ast.arg(arg=a, annotation=None, type_comment=None), 1) for a in _code_ARGS],
        vararg=None, kwonlyargs=[], kw_defaults=[], kwarg=None, defaults=[])
    name = _code_func_name(node_id)
    func = _ast.FunctionDef(name=name, args=args, body=body, decorator_list=[],
                            returns=None, type_comment=None)
    if "type_params" in _ast.FunctionDef._fields:
        func.type_params = []
    _code_located(func, 1)
    func.end_lineno = last
    wrapper = _ast.Module(body=[func], type_ignores=[])
    try:
        code = compile(wrapper, filename, "exec", dont_inherit=True)
    except SyntaxError as e:
        # errors found after parsing (import *, nonlocal, await...) carry no
        # source text: add the user's line so the report shows it
        if e.text is None and e.lineno:
            lines = source.splitlines()
            if 0 < e.lineno <= len(lines):
                e.text = lines[e.lineno - 1] + "\n"
        raise
    namespace = {"__name__": "__flowrun_node__"}
    exec(code, namespace)
    # unbind it: a global named after the node would shadow a builtin the
    # code may use (a node called `len`)
    fn = namespace.pop(name)
    if cache:
        _code_CACHE[key] = fn
    return fn


# Sources longer than this are compiled by the execution, as cold: the template compiles
# before it answers the runner, which waits 2 s (a 5 MB source takes seconds).
_code_PREPARE_MAX = 100000


def _code_prepare_for_fork(workflow):
    """Compiles each code node's source (a literal: it is never templated) into the cache, so
    that executions forked from a warm template skip it: ~0.5 ms a node.  Compiling defines the
    node's function and runs nothing of its body.  Left for the execution, as in a cold run: a
    source that does not compile, and one whose compilation warns (a SyntaxWarning goes to the
    stderr of whoever compiles it: the execution's log, not the template's).  Warnings are
    made errors through the C module's filters: importing `warnings` here would change how
    every execution prints one (with its source line, which a cold run does not show)."""
    for node in workflow.get("nodes") or ():
        source = (node.get("params") or {}).get("code")
        # As the start check: a pinned or mocked node never runs, and is not compiled (its
        # source would register in linecache, and decide for the others, as cold it does not).
        if (node.get("type") != "code" or not isinstance(source, str)
                or node.get("pinned") is not None or node.get("mock") is not None):
            continue
        if len(source) > _code_PREPARE_MAX:
            continue
        try:
            _code_with_warnings("error", _code_compile, node["id"], source)
        except Exception:
            pass


FORK_PREPARE.append(_code_prepare_for_fork)


def _code_check_syntax(workflow):
    """The start check (START_CHECKS): each code node that will run (neither pinned nor
    mocked) and whose source does not compile, in the order of `nodes`, then those of its
    sub-workflows (_code_sub_problems), as (error, where): `error` the execution's error naming
    that node, `where` the source's line and column and, for a sub-workflow's, its file and node
    (for `flowrun validate`).  A run stops at the first and no node runs — not those before it,
    whose requests and commands would have been made for a run bound to fail (a Python file
    with a syntax error anywhere runs none of its lines either); `--check` lists them all.
    Compiled as the node would compile it, into the cache the node then takes it from, with
    warnings made errors; a source that fails so is compiled again with warnings ignored, and
    not kept: only an error then is the source's own, and one that merely warns warns in the
    node's log when it runs, as before.  A source a warm template compiled is in the cache
    already."""
    for node in workflow.get("nodes") or ():
        source = (node.get("params") or {}).get("code")
        if (node.get("type") != "code" or not isinstance(source, str)
                or node.get("pinned") is not None or node.get("mock") is not None):
            continue
        try:
            _code_with_warnings("error", _code_compile, node["id"], source)
            continue
        except Exception:
            pass
        try:
            _code_with_warnings("ignore", _code_compile, node["id"], source, False)
            continue
        except Exception as e:  # SyntaxError, and RecursionError or MemoryError on deep nesting
            error = _error_info(e)
            where = _code_where(e, error)
        error["message"] = "its source does not compile, so no node ran: " + error["message"]
        yield dict(error, node=node["id"]), where
    for problem in _code_sub_problems(workflow):
        yield problem


def _code_sub_problems(workflow):
    """Then the code nodes of the sub-workflows a `workflow` node would run (its `sub_code`,
    from the child files and the files below them, read when this script was made): a source
    that does not compile would fail the child only once it started, after the nodes before it
    here had run.  Compiled with warnings ignored (the child shows those when it runs) and not
    kept: the child compiles its own.  Named after its file, so neither its lines nor its
    cache entry are taken for a node of this workflow with the same id.  A source longer than
    _code_PREPARE_MAX is left to the child (compiling one twice would cost seconds), but for
    `script --check` (CHECK_ONLY), which says whether the workflow would run."""
    for node in workflow.get("nodes") or ():
        if (node.get("type") != "workflow" or node.get("pinned") is not None
                or node.get("mock") is not None):
            continue
        for sub in node.get("sub_code") or ():
            if len(sub.get("code") or "") > _code_PREPARE_MAX and not CHECK_ONLY:
                continue  # compiling it twice would cost seconds: the child finds its own error
            file = str(sub.get("file"))
            label = "%s in %s" % (sub.get("node"), os.path.basename(file))
            try:
                _code_with_warnings("ignore", _code_compile, label, sub.get("code") or "", False)
                continue
            except Exception as e:  # SyntaxError, and RecursionError or MemoryError
                error = _error_info(e)
                where = _code_where(e, error)
                if isinstance(e, SyntaxError) and e.lineno:
                    error["message"] = "%s (line %d)" % (e.msg, e.lineno)
            error["message"] = ("code node '%s' of %s does not compile, so no node ran: %s"
                                % (sub.get("node"), file, error["message"]))
            where.update(file=file, node=sub.get("node"))
            yield dict(error, node=node["id"]), where


def _code_where(e, error):
    """Where in its source a compile error is (`error` its _error_info): the error itself and
    its line and column, when it is a SyntaxError."""
    if isinstance(e, SyntaxError):
        return {"error": e.msg, "line": e.lineno, "column": e.offset}
    return {"error": "%s: %s" % (error["type"], error["message"]), "line": None, "column": None}


def _code_with_warnings(action, f, *args):
    """f(*args) with every warning's action `action`, set through the C module's filters
    (importing `warnings` would change how every execution prints one)."""
    import _warnings
    rule = (action, None, Warning, None, 0)
    _warnings.filters.insert(0, rule)
    _warnings._filters_mutated()
    try:
        return f(*args)
    finally:
        _warnings.filters.remove(rule)
        _warnings._filters_mutated()


START_CHECKS.append(_code_check_syntax)


def node_code(ctx, params):
    source = params.get("code")
    if not isinstance(source, str):
        raise NodeError("code: the code parameter must be a string of Python source", "TypeError")
    scope = ctx.scope
    if ctx.part is not None and ctx.part[0] == "item":
        # An item's input is its own: the item and its index (the outputs of the node's
        # upstream nodes are the same for every item, and recording them per item made a
        # for_each over a long list quadratic, in time and in the store).
        ctx.input = {"item": scope.get("item"), "index": scope.get("index")}
    else:
        ctx.input = ctx.dep_outputs()
    for conn in params.get("connections") or ():
        connection_secret(conn)  # a clear error, not a KeyError, if it is not bound
    fn = _code_compile(ctx.id, source)
    # Its own copy of what it reads (what it changes stays its own); what it cannot read is
    # passed as it is.
    reads = _code_READS.get((ctx.id, source), _code_ARGS)
    own = lambda name, value: plain_copy(value) if name in reads else value
    with _STATE.run_lock:  # other nodes may be finishing meanwhile
        nodes = own("nodes", scope["nodes"])
    args = (own("trigger", scope["trigger"]), nodes, own("execution", scope["execution"]),
            ctx.log, own("item", scope.get("item")), scope.get("index"),
            scope.get("iteration"), own("previous", scope.get("previous")))
    cwd = params.get("cwd")
    if cwd is None:
        return fn(*args)
    _code_enter_dir(to_text(cwd))
    try:
        return fn(*args)
    finally:
        _code_leave_dir()


# The node's own `cwd`: the process's working directory while it runs. The scheduler runs such
# a node alone (64_schedule.py), and its items one at a time when `cwd` is a template (62_loops.py);
# items of a fixed `cwd` overlap, sharing it (the first to enter changes it, the last to leave
# changes it back). An item whose `cwd` is another directory would wait until they have all left.
_code_DIR = {"depth": 0, "back": None, "at": None, "cv": None}


def _code_dir_cv():
    with _STATE.run_lock:
        if _code_DIR["cv"] is None:
            import threading
            _code_DIR["cv"] = threading.Condition()
        return _code_DIR["cv"]


def _code_enter_dir(path):
    cv = _code_dir_cv()
    with cv:
        while _code_DIR["depth"] > 0:
            if os.path.realpath(os.path.join(_code_DIR["back"], path)) == _code_DIR["at"]:
                break
            cv.wait()
        if _code_DIR["depth"] == 0:
            back = os.getcwd()
            try:
                os.chdir(path)
            except OSError as e:
                raise NodeError(_no_dir_message("code", path)
                                or "code: cannot run in %r: %s" % (path, e.strerror or e),
                                type(e).__name__)
            _code_DIR["back"], _code_DIR["at"] = back, os.getcwd()
        _code_DIR["depth"] += 1


def _code_leave_dir():
    cv = _code_dir_cv()
    with cv:
        _code_DIR["depth"] -= 1
        if _code_DIR["depth"] == 0:
            os.chdir(_code_DIR["back"])
            cv.notify_all()


node_code.own_input = True  # sets ctx.input itself
HANDLERS["code"] = node_code

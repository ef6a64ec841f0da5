# ---------------------------------------------------------------------------
# runtime/core/50_errors.py: errors
# ---------------------------------------------------------------------------

_CODE_SOURCES = {}  # "<node ID>" -> source, for linecache (see register_source)
# Whether the sources are in linecache before any error (see register_source).
_SOURCES_SHOWN = [False]


def register_source(filename, source, eager=False):
    """Make `source` visible to tracebacks under `filename`.  Importing linecache costs ~7 ms,
    so the sources go there before anything fails only once a code node that may format
    tracebacks itself is compiled (`eager`: then all of them, and every one after); otherwise
    the runtime puts there the sources of a traceback it formats (_format_traceback).  Whether
    linecache happens to be loaded does not decide it: a warm execution's template may have it
    loaded (for another script), a cold one not, and a warning's source line (shown when its
    source is there) would differ."""
    _CODE_SOURCES[filename] = source
    if eager:
        _SOURCES_SHOWN[0] = True
    if _SOURCES_SHOWN[0]:
        # Through `import`, not sys.modules: a node in another thread may be importing it
        # right now, and the module found there would be half made; `import` waits for it.
        import linecache
        # A list: nodes running side by side may register theirs meanwhile.
        for name, text in (list(_CODE_SOURCES.items()) if eager else [(filename, source)]):
            _linecache_put(linecache, name, text)


def _linecache_put(linecache, filename, source):
    lines = source.splitlines(True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    linecache.cache[filename] = (len(source), None, lines, filename)


def _own_sources_in_linecache():
    """linecache as a cold start of this script has it: a warm one is a fork of a template that
    prepared other scripts too, whose code nodes put their sources there under the same kind of
    name ("<node c>"): those go, and this script's own are there only as register_source would
    have put them."""
    linecache = sys.modules.get("linecache")
    if linecache is None:
        return
    for name in [n for n in linecache.cache if n.startswith("<node ")]:
        del linecache.cache[name]
    if _SOURCES_SHOWN[0]:
        for name, source in _CODE_SOURCES.items():
            _linecache_put(linecache, name, source)


def _own_file():
    return _own_file.__code__.co_filename


def _format_traceback(exc):
    if isinstance(exc, NodeError):
        return "%s: %s\n" % (_error_type(exc), exc)
    import linecache
    import traceback
    # The sources of the files this traceback shows, not all of them: putting every code node's
    # source there for each error made 4,000 errors of 4,000 code nodes cost 12 s.
    for fn in _traceback_files(exc):
        src = _CODE_SOURCES.get(fn)
        if src is not None:
            _linecache_put(linecache, fn, src)
    own = _own_file()
    tbs = []
    tb = exc.__traceback__
    while tb is not None:
        tbs.append(tb)
        tb = tb.tb_next
    start = None
    for t in tbs:
        if t.tb_frame.f_code.co_filename != own:
            start = t
            break
    if start is None and isinstance(exc, SyntaxError):
        return "".join(traceback.format_exception_only(type(exc), exc))
    if start is None:
        start = exc.__traceback__
    return "".join(traceback.format_exception(type(exc), exc, start))


try:
    _EXCEPTION_GROUP = BaseExceptionGroup  # noqa: F821 (3.11+)
except NameError:
    _EXCEPTION_GROUP = ()


def _traceback_files(exc):
    """The file names a formatted `exc` shows lines of: its frames', a SyntaxError's own, and
    those of the exceptions it was raised from or while handling, or groups (3.11+)."""
    names, seen, todo = set(), set(), [exc]
    while todo and len(seen) < 1000:
        exc = todo.pop()
        if exc is None or id(exc) in seen:
            continue
        seen.add(id(exc))
        if isinstance(exc, SyntaxError) and isinstance(exc.filename, str):
            names.add(exc.filename)
        tb = exc.__traceback__
        while tb is not None:
            names.add(tb.tb_frame.f_code.co_filename)
            tb = tb.tb_next
        todo.extend((exc.__cause__, exc.__context__))
        if isinstance(exc, _EXCEPTION_GROUP):
            todo.extend(exc.exceptions)
    return names


def _error_type(exc):
    return getattr(exc, "error_type", None) or type(exc).__name__


def _memory_message(message):
    """MemoryError usually has no message: say what ran out, and name the limit when the runner
    set one (`flowrun run --max-memory-mb`, passed as FLOWRUN_MAX_MEMORY_MB)."""
    text = "out of memory"
    limit = os.environ.get("FLOWRUN_MAX_MEMORY_MB")
    if limit:
        text += (" (the workflow's process is limited to %s MiB of address space"
                 " by --max-memory-mb)" % limit)
    return text + (": " + message if message else "")


def _error_info(exc):
    try:
        message = str(exc)
    except Exception:
        message = _safe_repr(exc)
    if isinstance(exc, SystemExit):
        message = "sys.exit(%s) called in the node" % ("" if exc.code is None else _safe_repr(exc.code))
    elif isinstance(exc, MemoryError):
        message = _memory_message(message)
    try:
        tb = _format_traceback(exc)
    except Exception as e2:  # never let formatting hide the real error
        tb = "%s: %s\n(traceback unavailable: %s)\n" % (_error_type(exc), message, _safe_repr(e2))
    info = {"type": _error_type(exc), "message": message, "traceback": tb}
    spent = getattr(exc, "spent", None)
    if isinstance(spent, dict):
        for k in ("usage", "cost_usd"):
            if spent.get(k) is not None:
                info[k] = spent[k]
    return info


def _no_dir_message(kind, cwd):
    """For a node (`kind`) that could not start in its `cwd`: when the directory is not there,
    says where it was looked for and from where (relative to the execution's working directory,
    the workflow file's), which the OSError's "No such file or directory" does not; else None."""
    if not cwd or os.path.isdir(cwd):
        return None
    return ("%s: the working directory %s does not exist (a relative cwd is taken from %s, "
            "the workflow's directory)" % (kind, os.path.abspath(cwd), os.getcwd()))

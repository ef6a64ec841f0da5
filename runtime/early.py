# flowrun early start: a cold interpreter started before its execution is known
# (crates/executor/src/early.rs); run as `python -I -S -u CACHE/early-<hash>.py`.
# It waits on stdin for the file to run and the execution's environment (8 bytes of length,
# big-endian, then NUL-separated: the file, then names and values), takes that environment as
# its own, and runs the file as `python -I -S -u FILE` would; stdin then holds what the
# execution reads.  Stdin closing first means the runner let it go: it ends quietly.  No import
# here beyond what the interpreter has loaded as it started; the file runs in a __main__ holding
# none of this one's names (os and sys are the function's own, as __main__ is emptied).
import os, sys


def _flowrun_early(os=os, sys=sys):
    # What the interpreter set in its own environment as it started (PEP 538's LC_CTYPE, when
    # the locale is C): a cold start of the execution would set the same, the variables that
    # decide it being the same (the runner hands an execution over only then).
    try:
        with open("/proc/self/environ", "rb") as f:
            given = set(f.read().split(b"\0"))
    except OSError:
        given = None
    started = [] if given is None else [
        (k, v) for k, v in os.environb.items() if k + b"=" + v not in given]

    def read(n):
        data = b""
        while len(data) < n:
            chunk = os.read(0, n - len(data))
            if not chunk:
                os._exit(0)
            data += chunk
        return data

    fields = read(int.from_bytes(read(8), "big")).split(b"\0")
    path = os.fsdecode(fields[0])
    env = os.environb
    env.clear()
    for i in range(1, len(fields) - 1, 2):
        env[fields[i]] = fields[i + 1]
    for k, v in started:
        env[k] = v
    if "time" in sys.modules:
        sys.modules["time"].tzset()
    main = sys.modules["__main__"].__dict__
    for name in list(main):
        if name not in ("__name__", "__doc__", "__package__", "__spec__", "__annotations__",
                        "__builtins__"):
            del main[name]
    machinery = sys.modules["_frozen_importlib_external"]
    with open(path, "rb") as f:
        data = f.read()
    if path.endswith(".pyc"):
        if data[:4] != machinery.MAGIC_NUMBER:
            raise RuntimeError("Bad magic number in .pyc file")
        code = __import__("marshal").loads(memoryview(data)[16:])
        main["__loader__"] = machinery.SourcelessFileLoader("__main__", path)
    else:
        code = compile(data, path, "exec", dont_inherit=True)
        main["__loader__"] = machinery.SourceFileLoader("__main__", path)
    main["__file__"] = path
    main["__cached__"] = None
    sys.argv[:] = [path]
    return code, main


exec(*_flowrun_early())

# ---------------------------------------------------------------------------
# node type: delay — sleeps
# params: {"ms": int | float | numeric string}  (already rendered)  ->  {}
# ---------------------------------------------------------------------------
import time


def node_delay(ctx, params):
    ms = params.get("ms", 0)
    if isinstance(ms, bool):
        ms = None
    elif isinstance(ms, str):
        try:
            ms = float(ms.strip())
        except ValueError:
            ms = None
    if not isinstance(ms, (int, float)) or ms != ms or ms < 0 or ms == float("inf"):
        raise NodeError("delay: ms must be a non-negative number of milliseconds, got %s"
                        % to_text(params.get("ms")), "ValueError")
    if ms:
        time.sleep(ms / 1000.0)
    return {}


HANDLERS["delay"] = node_delay

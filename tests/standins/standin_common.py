"""What the three agent CLI stand-ins (claude, codex, gemini in this directory) share.

The stand-ins print each CLI's documented streaming JSON events (see the comment at the top of
each) for flowrun's tests and examples, without a model behind them. What they do is chosen by
the environment, which an `agent` node sets with its `env` field:

  STANDIN_SCENARIO  ok (default) | no_cost | is_error | no_result | empty_result |
                    exit_nonzero | hang_after_result | slow | env
  STANDIN_SLEEP     seconds the `slow` scenario waits before answering (default 30)
  STANDIN_SHOW_ENV  comma-separated variable names the `env` scenario reports
  STANDIN_RECORD    a file to which each run appends {"argv", "stdin", "cwd"} as a JSON line

Sessions are kept under $HOME as each CLI keeps them (simplified), so a second run can resume
one: an unknown session id is an error, as with the real CLIs, and a resumed session's answer
quotes the first prompt of the session. Standard library only.
"""
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid


def scenario():
    return os.environ.get("STANDIN_SCENARIO", "ok")


def emit(event):
    sys.stdout.write(json.dumps(event, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def now_iso():
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


def new_id():
    return str(uuid.uuid4())


def fail(message, code=1):
    sys.stderr.write(message + "\n")
    sys.stderr.flush()
    sys.exit(code)


def record(argv, stdin_text):
    path = os.environ.get("STANDIN_RECORD")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"argv": argv, "stdin": stdin_text, "cwd": os.getcwd()}) + "\n")


def listing():
    """The working directory's entries, as a tool would show them."""
    return "\n".join(sorted(os.listdir("."))) or "(empty directory)"


def env_report():
    """`NAME=value` (or `NAME=<unset>`) for each variable in STANDIN_SHOW_ENV."""
    names = [n.strip() for n in os.environ.get("STANDIN_SHOW_ENV", "").split(",") if n.strip()]
    return ", ".join("%s=%s" % (n, os.environ.get(n, "<unset>")) for n in names)


def project_key(cwd):
    return hashlib.sha256(os.path.realpath(cwd).encode()).hexdigest()[:16]


class Sessions(object):
    """One JSON file per session under `root`."""

    def __init__(self, root):
        self.root = root

    def load(self, sid):
        try:
            with open(os.path.join(self.root, sid + ".json")) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def save(self, sid, session):
        os.makedirs(self.root, exist_ok=True)
        with open(os.path.join(self.root, sid + ".json"), "w") as f:
            json.dump(session, f)


def answer(prompt, session):
    """The final answer: what was asked and, for a resumed session, its first prompt."""
    if os.environ.get("STANDIN_SCENARIO") == "env":
        return "environment: " + env_report()
    first = session["prompts"][0]
    if len(session["prompts"]) > 1:
        return "Continuing session %s (earlier: %r). Done: %s" % (session["id"], first, prompt)
    return "Done: %s" % prompt


def before_answer():
    """The `slow` scenario's wait."""
    if scenario() == "slow":
        time.sleep(float(os.environ.get("STANDIN_SLEEP", "30")))


def after_result():
    """What the scenario does once the final event is out."""
    s = scenario()
    if s == "exit_nonzero":
        sys.exit(2)
    if s == "hang_after_result":
        # A CLI that never exits: a child holding stdout open, and SIGTERM ignored, so only a
        # kill of the whole process group ends it.
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        time.sleep(120)

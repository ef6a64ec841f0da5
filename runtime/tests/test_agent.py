"""The agent node's pure parts: command lines, event reading, usage and prices.

The whole node (processes, endings, logs) is tested against the stand-in CLIs of
tests/standins/ by tests/it/agents.rs; here the runtime is loaded as the script would be
(core parts, then nodes/agent.py, in one namespace) without running anything.
"""
import os
import unittest

from harness import RUNTIME_DIR, runtime_core


def load_runtime():
    ns = {"__name__": "flowrun_runtime"}
    with open(os.path.join(RUNTIME_DIR, "nodes", "agent.py"), encoding="utf-8") as f:
        agent = f.read()
    exec(compile(runtime_core() + "\n\n\n" + agent, "<runtime>", "exec"), ns)
    return ns


RT = load_runtime()


def params(agent, **kw):
    p = {"agent": agent, "command": {"claude_code": "claude"}.get(agent, agent),
         "prompt": "-- do it; $(rm -rf /)", "model": None, "max_turns": None,
         "permission_mode": None, "allowed_tools": [], "args": []}
    p.update(kw)
    return p


class CommandLines(unittest.TestCase):
    def test_claude_gets_its_flags_and_the_prompt_on_stdin(self):
        argv, stdin = RT["_agent_argv"](params(
            "claude_code", model="opus", max_turns=3, permission_mode="acceptEdits",
            allowed_tools=["Read", "Bash(git:*)"], resume_session="s-1", args=["--debug"]))
        self.assertEqual(argv, ["claude", "-p", "--allowedTools", "Read", "Bash(git:*)",
                                "--output-format", "stream-json", "--verbose", "--model", "opus",
                                "--max-turns", "3", "--permission-mode", "acceptEdits",
                                "--resume", "s-1", "--debug"])
        self.assertEqual(stdin, "-- do it; $(rm -rf /)")

    def test_codex_resumes_with_its_subcommand_and_reads_stdin(self):
        argv, stdin = RT["_agent_argv"](params(
            "codex", model="gpt-5-codex", permission_mode="read-only", resume_session="t-1",
            args=["--skip-git-repo-check"]))
        self.assertEqual(argv, ["codex", "exec", "--json", "--model", "gpt-5-codex", "--sandbox",
                                "read-only", "--skip-git-repo-check", "resume", "t-1", "-"])
        self.assertEqual(stdin, "-- do it; $(rm -rf /)")

    def test_gemini_gets_the_prompt_attached_to_its_option(self):
        argv, stdin = RT["_agent_argv"](params(
            "gemini", permission_mode="yolo", allowed_tools=["read_file", "a,b"]))
        self.assertEqual(argv, ["gemini", "--output-format", "stream-json", "--approval-mode",
                                "yolo", "--allowed-tools", "read_file", "--allowed-tools", "a,b",
                                "--prompt=-- do it; $(rm -rf /)"])
        self.assertIsNone(stdin)


def feed(agent, events):
    run = RT["_AgentRun"](agent, None)
    logs = []
    for ev in events:
        logs.extend(RT["_AGENT_FEED"][agent](run, ev))
    return run, logs


class Events(unittest.TestCase):
    def test_claude_usage_counts_once_per_message_id(self):
        u1 = {"input_tokens": 3, "output_tokens": 5, "cache_read_input_tokens": 7,
              "cache_creation_input_tokens": 11}
        u1_final = dict(u1, output_tokens=9)
        u2 = {"input_tokens": 1, "output_tokens": 2}
        run, logs = feed("claude_code", [
            {"type": "system", "subtype": "init", "session_id": "s", "model": "claude-x"},
            {"type": "assistant", "message": {"id": "m1", "content": [{"type": "text", "text": "a\nb"}], "usage": u1}},
            {"type": "assistant", "message": {"id": "m1", "content": [
                {"type": "tool_use", "name": "Read", "input": {"file_path": "/x.py"}}], "usage": u1_final}},
            {"type": "assistant", "message": {"id": "m2", "content": [], "usage": u2}},
            {"type": "result", "subtype": "success", "is_error": False, "result": "ok",
             "num_turns": 2, "session_id": "s"},
        ])
        # The last usage of a message stands for it (repeats are not added up).
        self.assertEqual(run.tokens(), (4, 11, 7, 11))
        self.assertEqual((run.text, run.turns, run.failure, run.cost), ("ok", 2, None, None))
        self.assertIn(("info", "says: a b"), logs)
        self.assertIn(("info", "tool Read: /x.py"), logs)

    def test_claude_error_results_say_why(self):
        run, _ = feed("claude_code", [{"type": "result", "subtype": "error_during_execution",
                                       "is_error": True, "errors": ["boom"]}])
        self.assertEqual(run.failure, "is_error: true (subtype error_during_execution): boom")

    def test_codex_usage_separates_cached_input(self):
        run, _ = feed("codex", [
            {"type": "thread.started", "thread_id": "t"},
            {"type": "item.completed", "item": {"id": "i", "type": "agent_message", "text": "hi"}},
            {"type": "turn.completed", "usage": {"input_tokens": 100, "cached_input_tokens": 60,
                                                 "output_tokens": 7}},
        ])
        self.assertEqual(run.tokens(), (40, 7, 60, 0))
        self.assertEqual((run.session_id, run.text, run.turns), ("t", "hi", 1))

    def test_gemini_text_is_the_last_turns_and_turns_count_model_calls(self):
        base = [{"type": "init", "session_id": "g", "model": "gemini-2.5-pro"},
                {"type": "message", "role": "user", "content": "q"},
                {"type": "message", "role": "assistant", "content": "let me ", "delta": True},
                {"type": "message", "role": "assistant", "content": "look", "delta": True},
                {"type": "tool_use", "tool_name": "ls", "tool_id": "1", "parameters": {}},
                {"type": "tool_result", "tool_id": "1", "status": "success", "output": "x"}]
        result = {"type": "result", "status": "success", "stats": {
            "input_tokens": 10, "cached": 4, "input": 6, "output_tokens": 3,
            "models": {"gemini-2.5-pro": {"input_tokens": 10, "cached": 4, "input": 6,
                                          "output_tokens": 3}}}}
        run, logs = feed("gemini", base + [
            {"type": "message", "role": "assistant", "content": "done", "delta": True}, result])
        self.assertEqual((run.text, run.turns), ("done", 2))
        self.assertIn(("info", "says: let me look"), logs)
        self.assertEqual(run.tokens(), (6, 3, 4, 0))
        run, _ = feed("gemini", base + [result])
        self.assertEqual((run.text, run.turns), ("", 2))


class Messages(unittest.TestCase):
    def test_terminal_colours_are_taken_out_of_what_a_cli_printed(self):
        plain = RT["_agent_plain"]
        self.assertEqual(plain("\x1b[31mnot trusted\x1b[0m, see \x1b]8;;u\x07link"), "not trusted, see link")
        self.assertEqual(plain("plain"), "plain")


class Prices(unittest.TestCase):
    PRICES = {"m": [1.0, 2.0], "m-large": [10.0, 20.0, 1.0], "c": [3.0, 15.0, 0.3, 3.75]}

    def test_exact_then_longest_dated_prefix(self):
        price = RT["_agent_price"]
        self.assertEqual(price(self.PRICES, "m"), [1.0, 2.0])
        self.assertEqual(price(self.PRICES, "m-large-2025"), [10.0, 20.0, 1.0])
        self.assertEqual(price(self.PRICES, "m-2025"), [1.0, 2.0])
        self.assertIsNone(price(self.PRICES, "mx"))
        self.assertIsNone(price(self.PRICES, None))

    def test_every_kind_of_token_used_needs_a_price(self):
        cost = RT["_agent_cost"]
        self.assertAlmostEqual(cost(self.PRICES, "c", (1e6, 1e6, 1e6, 1e6)), 3 + 15 + 0.3 + 3.75)
        self.assertAlmostEqual(cost(self.PRICES, "m", (1e6, 1e6, 0, 0)), 3.0)
        self.assertIsNone(cost(self.PRICES, "m", (1e6, 1e6, 5, 0)))  # cached, unpriced
        self.assertIsNone(cost(self.PRICES, "unknown", (1, 1, 0, 0)))

    def test_a_reported_cost_wins(self):
        run = RT["_AgentRun"]("claude_code", "c")
        run.usage = (1000000, 0, 0, 0)
        self.assertEqual(RT["_agent_priced"](run, self.PRICES), (3.0, "price_table"))
        run.cost = 0.5
        self.assertEqual(RT["_agent_priced"](run, self.PRICES), (0.5, "reported"))
        run = RT["_AgentRun"]("codex", None)
        run.usage = (1, 1, 0, 0)
        self.assertEqual(RT["_agent_priced"](run, self.PRICES), (None, None))


if __name__ == "__main__":
    unittest.main()

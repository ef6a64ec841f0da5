#!/usr/bin/env python3
"""A local stand-in for an OpenAI-style chat API (Groq, OpenAI) and Anthropic's messages API,
for trying workflows without a key or network:

    python3 examples/llm_standin.py 8999 &
    FLOWRUN_GROQ_BASE_URL=http://127.0.0.1:8999/openai/v1 GROQ_API_KEY=gsk-stand-in-key \\
        flowrun run examples/http-to-groq.json --input '{"query": "hi"}'

It answers every chat request by echoing the last user message, with made-up token counts.
A second argument makes it take that many milliseconds per answer, as a real model does
(`python3 examples/llm_standin.py 8999 700`): handy to watch `for_each` items run side by side.
"""
import json
import sys
import time

DELAY_MS = 0
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        if DELAY_MS:
            time.sleep(DELAY_MS / 1000.0)
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
        last = next((m["content"] for m in reversed(body.get("messages", [])) if m.get("role") == "user"), "")
        text = "You asked: %s" % last
        if self.path.endswith("/v1/messages"):
            reply = {"id": "msg_standin", "type": "message", "role": "assistant", "model": body.get("model"),
                     "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
                     "usage": {"input_tokens": len(last.split()) + 5, "output_tokens": len(text.split())}}
        else:
            reply = {"id": "chatcmpl-standin", "object": "chat.completion", "model": body.get("model"),
                     "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                     "usage": {"prompt_tokens": len(last.split()) + 5, "completion_tokens": len(text.split()),
                               "total_tokens": len(last.split()) + 5 + len(text.split())}}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt, *args):
        sys.stderr.write("standin: " + fmt % args + "\n")


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8999
    DELAY_MS = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()

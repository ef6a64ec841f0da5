# ---------------------------------------------------------------------------
# node type: llm — one chat completion, in the provider's own wire format
# params (rendered): {"provider": "groq"|"openai"|"openai_compatible"|
#   "anthropic", "model", "messages": [{role, content}] | None, "prompt": str |
#   None, "system": str | None, "temperature"?, "max_tokens"?, "connection":
#   {"name", "env"}, "base_url": str | None, "base_url_env": str,
#   "default_base_url": str, "price": {"input_per_mtok", "output_per_mtok"} |
#   None, "max_retries": int, "stream"?: true}
# output: {"content", "model", "usage": {"input_tokens", "output_tokens"},
#   "cost_usd"}  (cost_usd is null when the model's price is unknown)
# 429 and 5xx answers are retried inside the node, waiting what Retry-After
# asks for (else 500 ms, doubling); connection errors after 500 ms, doubling;
# all within the node's timeout.  base_url: the node's, else the variable
# base_url_env, else the provider's default (openai_compatible has none).
# stream: true asks for the answer as server-sent events (OpenAI-style
# `data: {choices: [{delta: {content}}]}` … `data: [DONE]`; Anthropic's
# message_start / content_block_delta / message_delta / message_stop) and
# sends the text as `node_delta` events while it arrives, at most one per
# 50 ms; the output is the same as without it.
# ---------------------------------------------------------------------------

_LLM_DEFAULT_TIMEOUT_MS = 120000


def _llm_messages(params):
    messages = []
    for m in params.get("messages") or []:
        if not isinstance(m, dict) or "role" not in m:
            raise NodeError("llm: each message needs a role and content, got %s" % to_text(m), "ValueError")
        messages.append({"role": to_text(m["role"]), "content": to_text(m.get("content"))})
    if params.get("prompt") is not None:
        messages.append({"role": "user", "content": to_text(params["prompt"])})
    if not messages:
        raise NodeError("llm: nothing to send (no messages and no prompt)", "ValueError")
    return messages


def _llm_request(params, secret, messages):
    """(url, headers, body) in the provider's wire format."""
    provider = params["provider"]
    base_env = params.get("base_url_env") or ""
    base = (params.get("base_url") or os.environ.get(base_env)
            or params.get("default_base_url") or "").rstrip("/")
    if not base:
        raise NodeError("%s: no base URL: give the node a `base_url` or set the environment variable %s "
                        "(like http://localhost:11434/v1)" % (provider, base_env), "MissingBaseUrl")
    system = params.get("system")
    body = {"model": params["model"]}
    if provider == "anthropic":
        sys_parts = [system] if system else []
        chat = []
        for m in messages:
            if m["role"] == "system":
                sys_parts.append(m["content"])
            else:
                chat.append(m)
        body["messages"] = chat
        body["max_tokens"] = params.get("max_tokens") or 1024
        if sys_parts:
            body["system"] = "\n\n".join(sys_parts)
        headers = {"x-api-key": secret, "anthropic-version": "2023-06-01",
                   "content-type": "application/json"}
        url = base + "/v1/messages"
    else:
        if system:
            messages = [{"role": "system", "content": system}] + messages
        body["messages"] = messages
        if params.get("max_tokens") is not None:
            body["max_tokens"] = params["max_tokens"]
        headers = {"Authorization": "Bearer " + secret, "Content-Type": "application/json"}
        url = base + "/chat/completions"
    if params.get("temperature") is not None:
        body["temperature"] = params["temperature"]
    if params.get("stream"):
        body["stream"] = True
        if provider == "openai":
            # OpenAI sends usage in a last chunk only when asked (Groq sends it in
            # x_groq.usage, other compatible servers in the last chunk or not at all).
            body["stream_options"] = {"include_usage": True}
    return url, headers, body


_LLM_DELTA_EVERY = 0.05


class _LlmStream(object):
    """Reads a streamed answer (server-sent events) as its bytes arrive, keeps
    the text, model and usage, and sends the text on as node_delta events at
    most every 50 ms."""

    def __init__(self, provider, ctx):
        self.provider = provider
        self.node = ctx.id
        self.part = getattr(_OUTPUT_OWNER, "part", None)
        self.buf = b""
        self.event = None
        self.data = []
        self.text = []
        self.unsent = []
        self.sent_at = 0.0
        self.model = None
        self.in_tok = None
        self.out_tok = None
        self.done = False

    def feed(self, chunk):
        self.buf += chunk
        while True:
            nl = self.buf.find(b"\n")
            if nl < 0:
                return
            line = self.buf[:nl].rstrip(b"\r").decode("utf-8", "replace")
            self.buf = self.buf[nl + 1:]
            self._line(line)

    def _line(self, line):
        if not line:
            if self.data:
                self._message(self.event, "\n".join(self.data))
            self.event, self.data = None, []
        elif line.startswith(":"):
            pass
        else:
            field, _, value = line.partition(":")
            if value.startswith(" "):
                value = value[1:]
            if field == "event":
                self.event = value
            elif field == "data":
                self.data.append(value)

    def _message(self, event, data):
        if data == "[DONE]":
            self.done = True
            return
        try:
            msg = _decode_json(data)
        except ValueError:
            raise NodeError("%s: a streamed event is not JSON: %s" % (self.provider, data[:300]), "ProtocolError")
        if not isinstance(msg, dict):
            return
        kind = msg.get("type") or event
        if self.provider == "anthropic":
            self._anthropic(kind, msg)
        else:
            self._openai(msg)

    def _anthropic(self, kind, msg):
        if kind == "message_start":
            m = msg.get("message") or {}
            self.model = m.get("model") or self.model
            u = m.get("usage") or {}
            self.in_tok = u.get("input_tokens", self.in_tok)
            self.out_tok = u.get("output_tokens", self.out_tok)
        elif kind == "content_block_delta":
            d = msg.get("delta") or {}
            if d.get("type") == "text_delta":
                self._text(d.get("text") or "")
        elif kind == "message_delta":
            u = msg.get("usage") or {}
            self.out_tok = u.get("output_tokens", self.out_tok)
            if u.get("input_tokens") is not None:
                self.in_tok = u["input_tokens"]
        elif kind == "message_stop":
            self.done = True
        elif kind == "error":
            e = msg.get("error") or {}
            raise NodeError("anthropic: the stream ended with an error: %s: %s"
                            % (e.get("type"), e.get("message")), "HttpError")

    def _openai(self, msg):
        if msg.get("error"):
            e = msg["error"]
            raise NodeError("%s: the stream ended with an error: %s"
                            % (self.provider, e.get("message") if isinstance(e, dict) else e), "HttpError")
        self.model = msg.get("model") or self.model
        usage = msg.get("usage") or (msg.get("x_groq") or {}).get("usage")
        if usage:
            self.in_tok = usage.get("prompt_tokens", self.in_tok)
            self.out_tok = usage.get("completion_tokens", self.out_tok)
        for choice in msg.get("choices") or ():
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                piece = (choice.get("delta") or {}).get("content")
                if piece:
                    self._text(piece)

    def _text(self, piece):
        self.text.append(piece)
        self.unsent.append(piece)
        if time.monotonic() - self.sent_at >= _LLM_DELTA_EVERY:
            self.flush()

    def flush(self):
        if not self.unsent:
            return
        fields = [("event", '"node_delta"'), ("node", _dumps(self.node)),
                  ("text", _dumps("".join(self.unsent)))]
        if self.part is not None:
            fields.append((self.part[0], str(int(self.part[1]))))
        self.unsent = []
        self.sent_at = time.monotonic()
        _emit_event(fields)

    def result(self):
        self.feed(b"\n\n")
        self.flush()
        if not self.done:
            raise NodeError("%s: the stream ended before the answer did (no %s)"
                            % (self.provider, "message_stop" if self.provider == "anthropic" else "[DONE]"),
                            "ProtocolError")
        return "".join(self.text), self.model, self.in_tok, self.out_tok


def _llm_parse(provider, data):
    """(content, model, input_tokens, output_tokens) from a response body."""
    if not isinstance(data, dict):
        raise ValueError("the response is not a JSON object")
    usage = data.get("usage") or {}
    if provider == "anthropic":
        parts = [b.get("text", "") for b in data.get("content") or [] if isinstance(b, dict) and b.get("type") == "text"]
        return ("".join(parts), data.get("model"), usage.get("input_tokens"), usage.get("output_tokens"))
    choices = data.get("choices") or []
    if not choices:
        raise ValueError("the response has no choices")
    msg = choices[0].get("message") or {}
    return (msg.get("content") or "", data.get("model"), usage.get("prompt_tokens"), usage.get("completion_tokens"))


def node_llm(ctx, params):
    provider = params["provider"]
    secret = connection_secret(params["connection"])
    messages = _llm_messages(params)
    url, headers, body = _llm_request(params, secret, messages)
    ctx.input = {"provider": provider, "url": url, "request": body}  # before the call
    payload = _dumps(body).encode("utf-8")
    timeout_ms = ctx.timeout_ms or _LLM_DEFAULT_TIMEOUT_MS
    deadline = time.monotonic() + timeout_ms / 1000.0
    max_retries = int(params.get("max_retries", 2))
    tries = 0
    while True:
        tries += 1
        remaining = int((deadline - time.monotonic()) * 1000)
        if remaining <= 0:
            raise NodeError("%s: no time left within the node's timeout of %d ms" % (provider, timeout_ms), "Timeout")
        stream = _LlmStream(provider, ctx) if params.get("stream") else None
        try:
            resp = http_call("POST", url, headers, payload, remaining, secret_headers=("x-api-key",),
                             on_data=stream.feed if stream else None)
        except NodeError as e:
            # A stream that broke after text went out is not tried again: the
            # viewers would see the answer twice.
            partial = stream is not None and stream.text
            if getattr(e, "error_type", None) == "ConnectionError" and tries <= max_retries and not partial:
                wait = 500 * (2 ** (tries - 1))
                ctx.log("%s: %s; retrying in %d ms" % (provider, e, wait), level="warning")
                time.sleep(min(wait / 1000.0, max(0, deadline - time.monotonic())))
                continue
            raise
        if resp.status == 429 or resp.status >= 500:
            if tries <= max_retries:
                wait = retry_after_ms(resp, 500 * (2 ** (tries - 1)))
                left = int((deadline - time.monotonic()) * 1000)
                if wait >= left:
                    raise NodeError("%s: HTTP %d and the server asks to wait %d ms, more than the %d ms left of the node's timeout"
                                    % (provider, resp.status, wait, left), "RateLimited" if resp.status == 429 else "HttpError")
                ctx.log("%s: HTTP %d; retrying in %d ms (attempt %d of %d)"
                        % (provider, resp.status, wait, tries + 1, max_retries + 1), level="warning")
                time.sleep(wait / 1000.0)
                continue
        if resp.status >= 400:
            text = resp.text()
            excerpt = text[:500] + ("…" if len(text) > 500 else "")
            kind = "RateLimited" if resp.status == 429 else "HttpError"
            raise NodeError("%s chat request failed after %d tr%s: HTTP %d from %s: %s"
                            % (provider, tries, "y" if tries == 1 else "ies", resp.status, url, excerpt), kind)
        if stream is not None:
            content, model, in_tok, out_tok = stream.result()
            break
        try:
            content, model, in_tok, out_tok = _llm_parse(provider, resp.json())
        except ValueError as e:
            raise NodeError("%s: unexpected response (%s): %s" % (provider, e, resp.text()[:300]), "ProtocolError")
        break
    price = params.get("price")
    cost = None
    if price and in_tok is not None and out_tok is not None:
        cost = round((in_tok * price["input_per_mtok"] + out_tok * price["output_per_mtok"]) / 1e6, 8)
    return {"content": content, "model": model or params["model"],
            "usage": {"input_tokens": in_tok, "output_tokens": out_tok}, "cost_usd": cost}


node_llm.own_input = True  # sets ctx.input itself
HANDLERS["llm"] = node_llm

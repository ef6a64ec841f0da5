# ---------------------------------------------------------------------------
# node type: llm — one chat completion, in the provider's own wire format
# params (rendered): {"provider": "groq"|"openai"|"openai_compatible"|
#   "anthropic", "model", "messages": [{role, content}] | None, "prompt": str |
#   None, "system": str | None, "temperature"?, "max_tokens"?, "connection":
#   {"name", "env"}, "base_url": str | None, "base_url_env": str,
#   "default_base_url": str, "price": {"input_per_mtok", "output_per_mtok"} |
#   None, "max_retries": int}
# output: {"content", "model", "usage": {"input_tokens", "output_tokens"},
#   "cost_usd"}  (cost_usd is null when the model's price is unknown)
# 429 and 5xx answers are retried inside the node, waiting what Retry-After
# asks for (else 500 ms, doubling); connection errors after 500 ms, doubling;
# all within the node's timeout.  base_url: the node's, else the variable
# base_url_env, else the provider's default (openai_compatible has none).
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
    return url, headers, body


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
        try:
            resp = http_call("POST", url, headers, payload, remaining, secret_headers=("x-api-key",))
        except NodeError as e:
            if getattr(e, "error_type", None) == "ConnectionError" and tries <= max_retries:
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
        try:
            content, model, in_tok, out_tok = _llm_parse(provider, resp.json())
        except ValueError as e:
            raise NodeError("%s: unexpected response (%s): %s" % (provider, e, resp.text()[:300]), "ProtocolError")
        break
    price = params.get("price")
    cost = None
    if price and in_tok is not None and out_tok is not None:
        cost = round((in_tok * price["input_per_mtok"] + out_tok * price["output_per_mtok"]) / 1e6, 8)
    ctx.input = {"provider": provider, "url": url, "request": body}
    return {"content": content, "model": model or params["model"],
            "usage": {"input_tokens": in_tok, "output_tokens": out_tok}, "cost_usd": cost}


HANDLERS["llm"] = node_llm

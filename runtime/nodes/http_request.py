# ---------------------------------------------------------------------------
# node type: http_request — one HTTP call with the stdlib (no package needed)
# params (rendered): {"method", "url", "headers": {}, "query": {}, "json"?,
#   "body"?, "follow_redirects": bool, "allow_status": [int], "connection":
#   {"name", "env"} | None, "auth": {"type": "bearer"|"header"|"query"|"basic",
#   "name"?}, "max_body_bytes": int}
# output: {"status", "headers", "body"} (body parsed when the response is JSON)
# ---------------------------------------------------------------------------

_HTTP_REQUEST_DEFAULT_TIMEOUT_MS = 30000


def _http_request_url(url, query):
    if not query:
        return url
    import urllib.parse
    pairs = []
    for k, v in query.items():
        if isinstance(v, list):
            pairs.extend((str(k), to_text(x)) for x in v)
        elif v is not None:
            pairs.append((str(k), to_text(v)))
    sep = "&" if "?" in url else "?"
    return url + sep + urllib.parse.urlencode(pairs)


def node_http_request(ctx, params):
    method = (params.get("method") or "GET").upper()
    url = to_text(params.get("url"))
    headers = dict(params.get("headers") or {})
    query = dict(params.get("query") or {})
    conn = params.get("connection")
    if conn:
        secret = connection_secret(conn)
        auth = params.get("auth") or {"type": "bearer"}
        kind = auth.get("type") or "bearer"
        if kind == "bearer":
            headers["Authorization"] = "Bearer " + secret
        elif kind == "header":
            headers[auth.get("name") or "Authorization"] = secret
        elif kind == "query":
            query[auth.get("name") or "key"] = secret
        elif kind == "basic":
            import base64
            headers["Authorization"] = "Basic " + base64.b64encode(secret.encode("utf-8")).decode("ascii")
    body = None
    if "json" in params and params.get("json") is not None:
        body = _dumps(params["json"]).encode("utf-8")
        if not any(k.lower() == "content-type" for k in headers):
            headers["Content-Type"] = "application/json"
    elif params.get("body") is not None:
        raw = params["body"]
        body = (raw if isinstance(raw, str) else to_text(raw)).encode("utf-8")
    full_url = _http_request_url(url, query)
    timeout_ms = ctx.timeout_ms or _HTTP_REQUEST_DEFAULT_TIMEOUT_MS
    resp = http_call(method, full_url, headers, body, timeout_ms,
                     follow_redirects=params.get("follow_redirects", True),
                     max_body_bytes=params.get("max_body_bytes"))
    limit = params.get("max_body_bytes")
    truncated = limit is not None and len(resp.body) > limit
    if truncated:
        resp.body = resp.body[:limit]
    ctype = (resp.header("content-type") or "").lower()
    text = resp.text()
    body_out = text
    if ("json" in ctype or ctype == "") and text.strip() and not truncated:
        try:
            body_out = resp.json()
        except ValueError:
            body_out = text
    out = {"status": resp.status, "headers": dict(resp.headers), "body": body_out}
    if truncated:
        out["body_truncated_at"] = limit
    allowed = params.get("allow_status") or []
    if resp.status >= 400 and resp.status not in allowed:
        excerpt = text[:500] + ("…" if len(text) > 500 else "")
        raise NodeError("HTTP %d %s from %s %s: %s"
                        % (resp.status, resp.reason, method, resp.url, excerpt), "HttpError")
    return out


HANDLERS["http_request"] = node_http_request

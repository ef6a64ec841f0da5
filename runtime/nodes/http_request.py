# ---------------------------------------------------------------------------
# node type: http_request — one HTTP call with the stdlib (no package needed)
# params (rendered): {"method", "url", "headers": {}, "query": {}, "json"?,
#   "body"?, "follow_redirects": bool, "max_redirects": int, "allow_status":
#   [int], "connection": {"name", "env"} | None, "auth": {"type": "bearer"|
#   "header"|"query"|"basic", "name"?}, "max_body_bytes": int}
# output: {"status", "headers": {name: "v1, v2"}, "headers_all": {name:
#   ["v1", "v2"]}, "body"} — body parsed when the response is JSON, text when
#   it is text; a binary body (an image, application/octet-stream, anything
#   not text) is {"body": null, "body_base64", "content_type"}, byte for byte.
#   Header names are lower-cased. "body_truncated_at" when max_body_bytes cut
#   the (decoded) body.
# ---------------------------------------------------------------------------

_HTTP_REQUEST_DEFAULT_TIMEOUT_MS = 30000
_HTTP_REQUEST_TEXT_TYPES = ("json", "xml", "javascript", "ecmascript", "yaml", "x-www-form-urlencoded",
                            "graphql", "csv", "html")


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


def _http_request_utf8(data, truncated):
    """data as UTF-8 text, or None when it is not UTF-8 (a cut body may end
    inside a character)."""
    for cut in range(4 if truncated else 1):
        try:
            return data[:len(data) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
    return None


def _http_request_text(resp):
    """The body as text, or None when it is binary."""
    if resp.encoded:  # a Content-Encoding the stdlib does not decode (br, zstd)
        return None
    if not resp.body:
        return ""
    mime = (resp.header("content-type") or "").split(";")[0].strip().lower()
    if mime.startswith("text/") or resp.charset() or any(t in mime for t in _HTTP_REQUEST_TEXT_TYPES):
        return resp.text()
    if mime:
        return None
    return _http_request_utf8(resp.body, resp.truncated)  # no Content-Type: text when it is UTF-8


def _http_request_auth(params, headers, query):
    """Adds the connection's secret; returns (header names, query name) that
    must not follow a redirect to another origin."""
    conn = params.get("connection")
    if not conn:
        return (), None
    secret = connection_secret(conn)
    auth = params.get("auth") or {"type": "bearer"}
    kind = auth.get("type") or "bearer"
    if kind == "bearer":
        headers["Authorization"] = "Bearer " + secret
    elif kind == "header":
        name = auth.get("name") or "Authorization"
        headers[name] = secret
        return (name,), None
    elif kind == "query":
        name = auth.get("name") or "key"
        query[name] = secret
        return (), name
    elif kind == "basic":
        import base64
        headers["Authorization"] = "Basic " + base64.b64encode(secret.encode("utf-8")).decode("ascii")
    return (), None


def node_http_request(ctx, params):
    method = (params.get("method") or "GET").upper()
    url = to_text(params.get("url"))
    headers = dict(params.get("headers") or {})
    query = dict(params.get("query") or {})
    secret_headers, secret_query = _http_request_auth(params, headers, query)
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
    limit = params.get("max_body_bytes")
    resp = http_call(method, full_url, headers, body, timeout_ms,
                     follow_redirects=params.get("follow_redirects", True),
                     max_redirects=params.get("max_redirects", 10),
                     max_body_bytes=limit, secret_headers=secret_headers,
                     secret_query=secret_query)
    ctype = resp.header("content-type")
    text = _http_request_text(resp)
    out = {"status": resp.status, "headers": resp.header_dict(), "headers_all": resp.header_lists()}
    if text is None:
        import base64
        out["body"] = None
        out["body_base64"] = base64.b64encode(resp.body).decode("ascii")
        out["content_type"] = ctype
        excerpt = "(%d bytes of %s)" % (len(resp.body), ctype or "binary data")
    else:
        out["body"] = text
        lower = (ctype or "").lower()
        if ("json" in lower or not lower) and text.strip() and not resp.truncated:
            try:
                out["body"] = resp.json()
            except ValueError:
                pass
        excerpt = text[:500] + ("…" if len(text) > 500 else "")
    if resp.truncated:
        out["body_truncated_at"] = limit
    allowed = params.get("allow_status") or []
    if resp.status >= 400 and resp.status not in allowed:
        raise NodeError("HTTP %d %s from %s %s: %s"
                        % (resp.status, resp.reason, method, resp.url, excerpt), "HttpError")
    return out


HANDLERS["http_request"] = node_http_request

# ---------------------------------------------------------------------------
# runtime/core/70_http.py: HTTP, shared by the http_request and llm node types
# (stdlib only; urllib is imported here, on first use, because it costs ~40 ms
# of startup)
# ---------------------------------------------------------------------------

class HttpResponse(object):
    def __init__(self, status, reason, headers, body, url):
        self.status = status
        self.reason = reason
        self.headers = headers  # list of (name, value), names lower-cased
        self.body = body        # bytes
        self.url = url          # final URL after redirects

    def header(self, name):
        name = name.lower()
        for k, v in self.headers:
            if k == name:
                return v
        return None

    def text(self):
        charset = "utf-8"
        ctype = self.header("content-type") or ""
        for part in ctype.split(";")[1:]:
            k, _, v = part.strip().partition("=")
            if k.lower() == "charset" and v:
                charset = v.strip('"')
        try:
            return self.body.decode(charset, "replace")
        except LookupError:
            return self.body.decode("utf-8", "replace")

    def json(self):
        return _decode_json(self.text())


def connection_secret(conn):
    """The value bound to a connection ({"name", "env"}), or a NodeError."""
    value = os.environ.get(conn.get("env") or "")
    if not value:
        raise NodeError("connection %s is not bound: set the environment variable %s"
                        % (conn.get("name"), conn.get("env")), "ConnectionNotBound")
    return value


def http_call(method, url, headers=None, body=None, timeout_ms=None,
              follow_redirects=True, max_redirects=10, max_body_bytes=None):
    """One HTTP request. Returns an HttpResponse for every status (4xx/5xx
    too); raises NodeError for connection problems and timeouts."""
    import socket
    import urllib.error
    import urllib.request

    class _Redirects(urllib.request.HTTPRedirectHandler):
        max_redirections = max_redirects

        def redirect_request(self, req, fp, code, msg, hdrs, newurl):
            if not follow_redirects:
                return None
            return urllib.request.HTTPRedirectHandler.redirect_request(
                self, req, fp, code, msg, hdrs, newurl)

    opener = urllib.request.build_opener(_Redirects)
    req = urllib.request.Request(url, data=body, method=method.upper())
    for k, v in (headers or {}).items():
        req.add_header(str(k), to_text(v))
    timeout = None if timeout_ms is None else max(0.001, timeout_ms / 1000.0)
    try:
        try:
            resp = opener.open(req, timeout=timeout)
        except urllib.error.HTTPError as e:
            resp = e
        status = resp.getcode() if hasattr(resp, "getcode") else resp.code
        reason = getattr(resp, "reason", "") or ""
        hdrs = [(k.lower(), v) for k, v in resp.headers.items()] if resp.headers else []
        if max_body_bytes is None:
            data = resp.read()
        else:
            data = resp.read(max_body_bytes + 1)
        final_url = resp.geturl() if hasattr(resp, "geturl") else url
        resp.close()
    except urllib.error.HTTPError as e:  # a redirect loop, or too many redirects
        raise NodeError("%s %s: %s" % (method.upper(), url, e), "HttpError")
    except urllib.error.URLError as e:
        reason = e.reason
        if isinstance(reason, socket.timeout) or "timed out" in str(reason):
            raise NodeError("%s %s: timed out after %s ms" % (method.upper(), url, timeout_ms), "Timeout")
        raise NodeError("%s %s: could not connect: %s" % (method.upper(), url, reason), "ConnectionError")
    except (socket.timeout, TimeoutError):
        raise NodeError("%s %s: timed out after %s ms" % (method.upper(), url, timeout_ms), "Timeout")
    except (ConnectionError, OSError) as e:
        raise NodeError("%s %s: connection failed: %s" % (method.upper(), url, e), "ConnectionError")
    except ValueError as e:  # unknown url type and the like
        raise NodeError("%s %s: %s" % (method.upper(), url, e), "ValueError")
    return HttpResponse(status, reason, hdrs, data, final_url)


def retry_after_ms(resp, default_ms):
    """Milliseconds a Retry-After header asks for (seconds or an HTTP date)."""
    value = resp.header("retry-after")
    if not value:
        return default_ms
    try:
        return max(0, int(float(value) * 1000))
    except ValueError:
        pass
    try:
        import email.utils
        when = email.utils.parsedate_to_datetime(value).timestamp()
        return max(0, int((when - time.time()) * 1000))
    except Exception:
        return default_ms

# ---------------------------------------------------------------------------
# runtime/core/70_http.py: HTTP, shared by the http_request and llm node types
# (stdlib only: http.client, zlib; imported on first use, for startup time).
#
# What http_call does the way curl and requests do it:
#   * the URL is quoted like requests quotes it (spaces, non-ASCII, IDNA
#     hosts); a bad URL is a one-line InvalidURL error;
#   * redirects (followed by default, at most max_redirects): 301/302 turn a
#     method other than GET/HEAD into a GET without a body, 303 turns anything
#     but HEAD into one, 307/308 keep the method and the body; one more than
#     max_redirects is the error TooManyRedirects.  When a redirect leaves
#     the origin (scheme, host or port changes) Authorization, Cookie,
#     Proxy-Authorization, Host, the caller's secret headers and the caller's
#     secret query parameter are not sent on (curl's rule; requests strips
#     Authorization likewise);
#   * Accept-Encoding: gzip, deflate (what zlib decodes) unless the caller
#     asks otherwise; such bodies are decoded, zlib or raw deflate alike;
#   * timeout_ms bounds the whole call: connecting, sending, the headers
#     and every read of the body (each socket operation gets what is left of
#     one deadline), across redirects.  A server trickling bytes cannot keep
#     a node past its timeout.
# ---------------------------------------------------------------------------

_HTTP_REDIRECT_CODES = (301, 302, 303, 307, 308)
# Never sent to another origin after a redirect, whoever set them.
_HTTP_CROSS_ORIGIN_DROP = ("authorization", "proxy-authorization", "cookie", "host")
_HTTP_URL_SAFE = "!#$%&'()*+,/:;=?@[]~"
_HTTP_READ_CHUNK = 65536


class HttpResponse(object):
    def __init__(self, status, reason, headers, body, url, truncated=False, encoded=None):
        self.status = status
        self.reason = reason
        self.headers = headers      # list of (name, value), names lower-cased, repeats kept
        self.body = body            # bytes, decoded from gzip/deflate
        self.url = url              # final URL after redirects
        self.truncated = truncated  # the body was cut at max_body_bytes
        self.encoded = encoded      # a Content-Encoding left as it came (not gzip/deflate)

    def header(self, name):
        name = name.lower()
        for k, v in self.headers:
            if k == name:
                return v
        return None

    def header_dict(self):
        """{name: value}, repeated headers joined with ", " (as requests does)."""
        out = {}
        for k, v in self.headers:
            out[k] = out[k] + ", " + v if k in out else v
        return out

    def header_lists(self):
        """{name: [value, ...]}: every value of every header, in arrival order."""
        out = {}
        for k, v in self.headers:
            out.setdefault(k, []).append(v)
        return out

    def charset(self):
        ctype = self.header("content-type") or ""
        for part in ctype.split(";")[1:]:
            k, _, v = part.strip().partition("=")
            if k.lower() == "charset" and v:
                return v.strip().strip('"')
        return None

    def text(self):
        try:
            return self.body.decode(self.charset() or "utf-8", "replace")
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


def program_env(params, hidden=()):
    """The environment of a program a node runs (command, agent): ours without the variables
    in `hidden` and flowrun's own protocol ones, plus the node's connections
    (params["connections"]: [{"name", "env"}]) and its `env` (a None value removes one)."""
    env = dict(os.environ)
    for k in [k for k in env if k.startswith("FLOWRUN_LIFELINE") or k in hidden]:
        del env[k]
    for conn in params.get("connections") or ():
        env[conn["env"]] = connection_secret(conn)
    for k, v in (params.get("env") or {}).items():
        if v is None:
            env.pop(str(k), None)
        else:
            env[str(k)] = to_text(v)
    return env


def _http_requote(text):
    """Quotes what must be quoted in a URL part the way requests' requote_uri
    does: spaces become %20, non-ASCII its UTF-8 bytes, escapes of unreserved
    characters are decoded (%41 is A), other valid %XX escapes stay (upper-
    cased) and so do reserved characters; when some '%' starts no escape,
    every '%' becomes %25."""
    import urllib.parse
    pieces = text.split("%")
    out = [pieces[0]]
    for piece in pieces[1:]:
        code = piece[:2]
        if len(code) < 2 or any(c not in "0123456789abcdefABCDEF" for c in code):
            return urllib.parse.quote(text, safe=_HTTP_URL_SAFE.replace("%", ""))
        c = chr(int(code, 16))
        unreserved = c.isalnum() and c.isascii() or c in "-._~"
        out.append((c if unreserved else "%" + code.upper()) + piece[2:])
    return urllib.parse.quote("".join(out), safe=_HTTP_URL_SAFE)


class _HttpTarget(object):
    """A URL split for sending: scheme, host, port, request target."""

    def __init__(self, url):
        import urllib.parse
        url = url.lstrip()
        parts = urllib.parse.urlsplit(url)
        scheme = parts.scheme.lower()
        if not scheme:
            raise ValueError("no scheme; did you mean http://%s?" % url)
        if scheme not in ("http", "https"):
            raise ValueError("unsupported scheme %r: only http and https" % scheme)
        host = parts.hostname
        if not host:
            raise ValueError("no host")
        port = parts.port  # ValueError for a port that is no number or out of range
        try:
            host.encode("ascii")
        except UnicodeEncodeError:
            try:
                host = host.encode("idna").decode("ascii")
            except UnicodeError as e:
                raise ValueError("host %r is not a valid international name (%s)" % (host, e))
        if any(c in host for c in " \t\r\n/\\"):
            raise ValueError("invalid host %r" % host)
        self.scheme = scheme
        self.host = host
        self.port = port or (443 if scheme == "https" else 80)
        netloc = "[%s]" % host if ":" in host else host
        if parts.port:
            netloc += ":%d" % parts.port
        path = _http_requote(parts.path) or "/"
        query = _http_requote(parts.query)
        self.target = path + ("?" + query if query else "")
        self.url = scheme + "://" + netloc + self.target
        self.userinfo = None
        if parts.username is not None:
            self.userinfo = (urllib.parse.unquote(parts.username),
                             urllib.parse.unquote(parts.password or ""))

    def origin(self):
        return (self.scheme, self.host, self.port)

    def without_query_param(self, name):
        """This URL without the query parameter `name` (every occurrence)."""
        import urllib.parse
        path, sep, query = self.url.partition("?")
        if not sep:
            return self.url
        kept = [p for p in query.split("&")
                if urllib.parse.unquote_plus(p.partition("=")[0]) != name]
        return path + ("?" + "&".join(kept) if kept else "")


_HTTP_CLASSES = []


def _http_classes():
    """(Connection, SecureConnection): http.client connections whose socket
    gets, before each operation, what is left of the call's deadline as its
    timeout.  Defined on first use (http.client, io and ssl cost startup)."""
    if _HTTP_CLASSES:
        return _HTTP_CLASSES
    import http.client
    import io
    import socket

    class DeadlineSocket(object):
        def __init__(self, sock, deadline):
            self._sock = sock
            self._deadline = deadline

        def _arm(self):
            if self._deadline is not None:
                left = self._deadline - time.monotonic()
                if left <= 0:
                    raise socket.timeout("timed out")
                self._sock.settimeout(left)

        def sendall(self, data, *args):
            self._arm()
            return self._sock.sendall(data, *args)

        def recv_into(self, buf, *args):
            self._arm()
            return self._sock.recv_into(buf, *args)

        def makefile(self, mode="rb", *args, **kwargs):
            return io.BufferedReader(DeadlineReader(self))

        def close(self):
            # http.client closes the connection's socket once it has the
            # response of a `Connection: close` answer, and reads the body
            # after: the real socket is closed by release(), at the end.
            pass

        def __getattr__(self, name):
            return getattr(self._sock, name)

    class DeadlineReader(io.RawIOBase):
        def __init__(self, sock):
            io.RawIOBase.__init__(self)
            self._sock = sock

        def readable(self):
            return True

        def readinto(self, buf):
            return self._sock.recv_into(buf)

    class Releasing(object):
        deadline = None
        raw_sock = None

        def wrap(self):
            self.raw_sock = self.sock
            self.sock = DeadlineSocket(self.sock, self.deadline)

        def release(self):
            """Closes the connection and its socket."""
            self.close()
            if self.raw_sock is not None:
                self.raw_sock.close()

    class Connection(Releasing, http.client.HTTPConnection):
        def connect(self):
            http.client.HTTPConnection.connect(self)
            self.wrap()

    class SecureConnection(Releasing, http.client.HTTPSConnection):
        def connect(self):
            http.client.HTTPSConnection.connect(self)
            self.wrap()

    _HTTP_CLASSES.extend([Connection, SecureConnection])
    return _HTTP_CLASSES


def _http_proxy(target):
    """The proxy URL the environment asks for this target (http_proxy,
    https_proxy, no_proxy, as urllib reads them), or None."""
    if not any(k.lower() in ("http_proxy", "https_proxy") for k in os.environ):
        return None
    import urllib.request
    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(target.scheme)
    if not proxy or urllib.request.proxy_bypass_environment(target.host, proxies):
        return None
    return proxy if "://" in proxy else "http://" + proxy


def _http_open(method, target, headers, body, deadline):
    """Sends one request; returns (connection, http.client response)."""
    import base64
    Connection, SecureConnection = _http_classes()
    left = None if deadline is None else max(0.001, deadline - time.monotonic())
    proxy = _http_proxy(target)
    request_target = target.target
    names = set(k.lower() for k, _ in headers)
    extra = []
    if proxy:
        p = _HttpTarget(proxy)
        proxy_auth = {}
        if p.userinfo:
            proxy_auth["Proxy-Authorization"] = "Basic " + base64.b64encode(
                ("%s:%s" % p.userinfo).encode("utf-8")).decode("ascii")
        if target.scheme == "https":
            conn = SecureConnection(p.host, p.port, timeout=left)
            conn.set_tunnel(target.host, target.port, headers=proxy_auth)
        else:
            conn = Connection(p.host, p.port, timeout=left)
            request_target = target.url
            extra.extend(proxy_auth.items())
    elif target.scheme == "https":
        conn = SecureConnection(target.host, target.port, timeout=left)
    else:
        conn = Connection(target.host, target.port, timeout=left)
    conn.deadline = deadline
    if target.userinfo and "authorization" not in names:
        extra.append(("Authorization", "Basic " + base64.b64encode(
            ("%s:%s" % target.userinfo).encode("utf-8")).decode("ascii")))
    if "user-agent" not in names:
        extra.append(("User-Agent", "flowrun"))
    if "accept" not in names:
        extra.append(("Accept", "*/*"))
    if "accept-encoding" not in names:
        extra.append(("Accept-Encoding", "gzip, deflate"))
    if "content-length" not in names and "transfer-encoding" not in names:
        if body is not None:
            extra.append(("Content-Length", str(len(body))))
        elif method in ("POST", "PUT", "PATCH"):
            extra.append(("Content-Length", "0"))
    try:
        conn.putrequest(method, request_target, skip_host="host" in names,
                        skip_accept_encoding=True)
        for k, v in list(headers) + extra:
            conn.putheader(k, v)
        conn.endheaders(body)
        return conn, conn.getresponse()
    except BaseException:
        conn.release()
        raise


class _HttpDecoder(object):
    """Incremental gzip / deflate decoding (deflate: zlib-wrapped or raw,
    whichever the server sent, as urllib3 does; gzip: every member)."""

    def __init__(self, kind):
        import zlib
        self._zlib = zlib
        self._kind = kind
        self._obj = zlib.decompressobj(16 + zlib.MAX_WBITS if kind == "gzip" else zlib.MAX_WBITS)
        self._probe = b"" if kind == "deflate" else None  # input kept until deflate's form is known

    def feed(self, data, max_len):
        """Decoded bytes of `data`, at most max_len of them (0: no limit)."""
        zlib = self._zlib
        if self._probe is not None:
            self._probe += data
            try:
                out = self._obj.decompress(data, max_len)
            except zlib.error:
                self._obj = zlib.decompressobj(-zlib.MAX_WBITS)
                data, self._probe = self._probe, None
                return self._obj.decompress(data, max_len)
            if out:
                self._probe = None
            return out
        out = self._obj.decompress(data, max_len)
        while (self._kind == "gzip" and self._obj.eof and self._obj.unused_data
               and not (max_len and len(out) >= max_len)):
            rest = self._obj.unused_data
            self._obj = zlib.decompressobj(16 + zlib.MAX_WBITS)
            out += self._obj.decompress(rest, max_len - len(out) if max_len else 0)
        return out

    def flush(self):
        return self._obj.flush()


def _http_read_body(resp, limit, on_data=None):
    """(body bytes, truncated, encoding left as is): reads to the end, or to
    one byte past `limit` of the decoded body.  With `on_data`, each piece of
    the decoded body goes to it as it arrives instead (the body is b"")."""
    coding = (resp.getheader("content-encoding") or "").strip().lower()
    kind = {"gzip": "gzip", "x-gzip": "gzip", "deflate": "deflate"}.get(coding)
    decoder = _HttpDecoder(kind) if kind else None
    if on_data is not None:
        # read1: what has arrived, without waiting for a whole buffer (a stream
        # of server-sent events comes a few bytes at a time).
        while True:
            chunk = resp.read1(_HTTP_READ_CHUNK)
            if not chunk:
                if decoder is not None:
                    rest = decoder.flush()
                    if rest:
                        on_data(rest)
                break
            data = decoder.feed(chunk, 0) if decoder else chunk
            if data:
                on_data(data)
        return b"", False, None
    cap = None if limit is None else limit + 1
    out = bytearray()
    while cap is None or len(out) < cap:
        want = _HTTP_READ_CHUNK if cap is None or decoder else min(_HTTP_READ_CHUNK, cap - len(out))
        chunk = resp.read(want)
        if not chunk:
            if decoder is not None:
                out += decoder.flush()
            break
        out += decoder.feed(chunk, 0 if cap is None else cap - len(out)) if decoder else chunk
    truncated = cap is not None and len(out) > limit
    if truncated:
        del out[limit:]
    encoded = coding if coding and decoder is None and coding != "identity" else None
    return bytes(out), truncated, encoded


def _http_redirect(status, method, body, headers):
    """(method, body, headers) of the request that follows a redirect."""
    if (status == 303 and method != "HEAD") or (status in (301, 302) and method not in ("GET", "HEAD")):
        dropped = ("content-type", "content-length", "transfer-encoding")
        return "GET", None, [(k, v) for k, v in headers if k.lower() not in dropped]
    return method, body, headers


def _http_one_line(value):
    return " ".join(to_text(value).split())


def http_call(method, url, headers=None, body=None, timeout_ms=None,
              follow_redirects=True, max_redirects=10, max_body_bytes=None,
              secret_headers=(), secret_query=None, on_data=None):
    """One HTTP call (following redirects). Returns an HttpResponse for every
    status (4xx/5xx too); raises a one-line NodeError for a bad URL, a
    connection problem, a timeout, too many redirects or a body that does not
    decode. timeout_ms bounds the whole call. secret_headers and
    secret_query name what must not follow a redirect to another origin.
    on_data: called with each piece of a 2xx answer's body as it arrives (a
    stream); that response's body is then empty."""
    import http.client
    import socket
    method = method.upper()
    deadline = None if timeout_ms is None else time.monotonic() + timeout_ms / 1000.0
    headers = [(str(k), to_text(v)) for k, v in (headers or {}).items()]
    secret = set(_HTTP_CROSS_ORIGIN_DROP) | set(h.lower() for h in secret_headers)
    shown = url

    def fail(what, kind):
        raise NodeError("%s %s: %s" % (method, shown, _http_one_line(what)), kind)

    try:
        target = _HttpTarget(to_text(url))
    except ValueError as e:
        fail("invalid URL: %s" % e, "InvalidURL")
    shown = target.url
    hops = 0
    try:
        while True:
            conn, resp = _http_open(method, target, headers, body, deadline)
            try:
                location = resp.getheader("location")
                if follow_redirects and location and resp.status in _HTTP_REDIRECT_CODES:
                    if hops >= max_redirects:
                        last = shown
                        shown = url
                        fail("more than %d redirects (the last one: HTTP %d from %s to %s)"
                             % (max_redirects, resp.status, last, location), "TooManyRedirects")
                    hops += 1
                    import urllib.parse
                    try:  # http.client reads header bytes as latin-1; servers send UTF-8
                        location = location.encode("latin-1").decode("utf-8")
                    except UnicodeError:
                        pass
                    try:
                        nxt = _HttpTarget(urllib.parse.urljoin(target.url, location))
                    except ValueError as e:
                        fail("redirect (HTTP %d) to an invalid URL %r: %s" % (resp.status, location, e),
                             "InvalidURL")
                    method, body, headers = _http_redirect(resp.status, method, body, headers)
                    if nxt.origin() != target.origin():
                        headers = [(k, v) for k, v in headers if k.lower() not in secret]
                        if secret_query:
                            nxt = _HttpTarget(nxt.without_query_param(secret_query))
                    target = nxt
                    shown = target.url
                    continue
                stream = on_data if on_data is not None and 200 <= resp.status < 300 else None
                data, truncated, encoded = _http_read_body(resp, max_body_bytes, stream)
                hdrs = [(k.lower(), v) for k, v in resp.getheaders()]
                return HttpResponse(resp.status, resp.reason or "", hdrs, data, target.url,
                                    truncated, encoded)
            finally:
                conn.release()
    except NodeError:
        raise
    except (socket.timeout, TimeoutError):
        fail("timed out after %s ms" % timeout_ms, "Timeout")
    except socket.gaierror as e:
        fail("could not resolve host %s: %s" % (target.host, e), "ConnectionError")
    except http.client.RemoteDisconnected as e:
        fail("the server closed the connection without answering: %s" % e, "ConnectionError")
    except http.client.IncompleteRead as e:
        fail("the connection ended inside the body (%d bytes read)" % len(e.partial), "ConnectionError")
    except http.client.HTTPException as e:
        fail("not a valid HTTP response: %s: %s" % (type(e).__name__, e), "BadResponse")
    except ConnectionRefusedError as e:
        fail("could not connect: %s" % e, "ConnectionError")
    except OSError as e:  # resets, unreachable networks, TLS errors
        fail("connection failed: %s" % e, "ConnectionError")
    except Exception as e:
        import zlib
        if isinstance(e, zlib.error):
            fail("the %s body does not decode: %s" % (resp.getheader("content-encoding"), e),
                 "ContentDecodingError")
        if isinstance(e, ValueError):  # a header value with a line break, and the like
            fail(e, "ValueError")
        raise


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

//! Who may talk to the server: the checks every request passes before a handler sees it.
//!
//! In this order:
//! 1. `Host` must name loopback (`127.0.0.1`, `localhost`, `[::1]`, any port) or the address the
//!    server was told to bind: a web page on another name that resolves to 127.0.0.1 (DNS
//!    rebinding) gets `421 Misdirected Request`.
//! 2. A request with an `Origin` (a browser) must come from the server's own origin (the page it
//!    serves: `http://` + a loopback name + exactly its port) or an origin given with
//!    `--allow-origin`, else `403`. Allowed origins get CORS headers and their preflight
//!    (`OPTIONS`) answered, without a token (browsers send none with a preflight).
//! 3. `Authorization: Bearer <token>`, compared in constant time, else `401`. The web page
//!    (`GET /`, `/index.html`) is the one exception: it holds no data, so it needs no token.
//! 4. A declared body (`Content-Length`) over `--max-body-bytes` gets `413` before it is read;
//!    a chunked one is cut at the same limit by the body extractor.

use crate::AppState;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::net::IpAddr;

/// The server's security settings.
pub struct Policy {
    /// 64 hex digits.
    pub token: String,
    /// Normalized (`scheme://host[:port]`, lower case, no trailing slash).
    pub allow_origins: Vec<String>,
    pub max_body_bytes: usize,
    /// The address the server listens on: also accepted as `Host` when it is not loopback.
    pub bind: IpAddr,
    /// The port it listens on: its own origin (`http://127.0.0.1:PORT`) is always allowed.
    pub port: u16,
}

impl Policy {
    /// May a request with this `Origin` header value go on?
    pub fn origin_allowed(&self, origin: &str) -> bool {
        let o = canonical(origin);
        self.allow_origins.contains(&o) || own_origin(&o, self.bind, self.port)
    }
}

/// Splits `name[:port]` (`[v6]:port` too) into the name and `:port` (or `""`).
fn split_host(host: &str) -> Option<(&str, &str)> {
    if host.starts_with('[') {
        host.find(']').map(|i| (&host[..=i], &host[i + 1..]))
    } else {
        Some(match host.rfind(':') {
            Some(i) => (&host[..i], &host[i..]),
            None => (host, ""),
        })
    }
}

/// Is `origin` (lower case) the server's own: `http://`, a name [`host_allowed`] accepts, and
/// exactly `port` (omitted only when it is 80, as browsers write it)?
pub fn own_origin(origin: &str, bind: IpAddr, port: u16) -> bool {
    let Some(host) = origin.strip_prefix("http://") else {
        return false;
    };
    let Some((_, p)) = split_host(host) else {
        return false;
    };
    let port_ok = if p.is_empty() {
        port == 80
    } else {
        p[1..] == port.to_string()
    };
    port_ok && host_allowed(host, bind)
}

/// An `Origin` as compared: lower case, without one trailing `/` after a host.
fn canonical(origin: &str) -> String {
    let o = origin.trim().to_ascii_lowercase();
    match o.strip_suffix('/') {
        Some(rest) if !rest.ends_with('/') => rest.to_string(),
        _ => o,
    }
}

/// Checks and normalizes an origin the server is told to allow: `scheme://host[:port]` (any
/// scheme: `http://localhost:5173`, `app://editor`; a scheme other than http(s) may have no host:
/// `file://`) or `null` (what sandboxed pages, local files and some desktop editors send). No path,
/// no wildcard.
pub fn normalize_origin(o: &str) -> Result<String, String> {
    let o = canonical(o);
    if o == "null" {
        return Ok(o);
    }
    let problem = match o.split_once("://") {
        None => Some("no scheme"),
        Some((scheme, host)) => {
            let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_lowercase())
                && scheme
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b));
            let web = matches!(scheme, "http" | "https");
            if !scheme_ok {
                Some("not a valid scheme")
            } else if host.is_empty() && web {
                Some("no host")
            } else if host.contains(['/', '*', '?', '#', ' ', '@']) {
                Some("a path, wildcard or other part that an origin does not have")
            } else {
                None
            }
        }
    };
    match problem {
        None => Ok(o),
        Some(p) => Err(format!(
            "'{o}': {p}; expected an origin like http://localhost:5173, app://editor, file:// or null (scheme, host and port; no path, no wildcard)"
        )),
    }
}

/// Compares without an early exit, so the time taken does not tell how much of a guess was right.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Is `host` (a `Host` header value) a loopback name, with an optional port?
pub fn host_allowed(host: &str, bind: IpAddr) -> bool {
    let host = host.trim().to_ascii_lowercase();
    let Some((name, port)) = split_host(&host) else {
        return false;
    };
    let port_ok = port.is_empty()
        || (port.len() > 1
            && port.len() <= 6
            && port.starts_with(':')
            && port[1..].bytes().all(|b| b.is_ascii_digit()));
    if !port_ok {
        return false;
    }
    if matches!(name, "127.0.0.1" | "localhost" | "[::1]") {
        return true;
    }
    // Listening on a non-loopback address: its literal IP is a fine Host too.
    if !bind.is_loopback() && !bind.is_unspecified() {
        let literal = match bind {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
        };
        return name == literal;
    }
    false
}

fn refuse(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": code, "message": message})),
    )
        .into_response()
}

fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let v = headers.get(header::AUTHORIZATION)?.as_bytes();
    let scheme = v.get(..7)?;
    if scheme.eq_ignore_ascii_case(b"bearer ") {
        Some(v[7..].trim_ascii())
    } else {
        None
    }
}

fn add_cors(resp: &mut Response, origin: &HeaderValue) {
    let h = resp.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    h.append(header::VARY, HeaderValue::from_static("Origin"));
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Location"),
    );
}

/// Runs the request once its body is read (at most `max` bytes), whatever the handler does with
/// it: one answered with its body unread — a query or a path refused before the body is taken, a
/// handler that takes none — had hyper close the connection when the body had not all arrived
/// yet, and the client's next request on it failed ("Peer disconnected", twice in the suite).
async fn read_body_first(req: Request, next: Next, max: usize) -> Response {
    let sized = req.headers().contains_key(header::CONTENT_LENGTH);
    let (parts, body) = req.into_parts();
    match axum::body::to_bytes(body, max).await {
        Ok(bytes) => {
            next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
                .await
        }
        // Without a length, a body over the limit ends here.
        Err(_) if !sized => too_large(max),
        Err(_) => {
            let mut r = refuse(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "the request body could not be read to its end",
            );
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            r
        }
    }
}

/// Does the request carry a body (a length over 0, or chunks)?
fn carries_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
}

/// A refusal given before the request's body is read (a wrong host, origin or token: the body
/// of a request not the user's is not read). With a body on its way, the connection cannot
/// carry another request, and `Connection: close` says so: without it a client sent its next
/// request down the connection hyper was closing ("Peer disconnected", seen as a flaky
/// `serve_page::the_servers_own_origin_may_call_the_api_…` after a 403).
fn refused_unread(has_body: bool, status: StatusCode, code: &str, message: &str) -> Response {
    let mut r = refuse(status, code, message);
    if has_body {
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    r
}

/// The middleware in front of every route.
pub async fn guard(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let policy = &app.security;
    let headers = req.headers();
    let has_body = carries_body(headers);
    // hyper caps what it buffers of a head, not the head: one that arrives in a single read is
    // parsed whatever its size.
    let head = req.uri().to_string().len()
        + headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum::<usize>();
    if head > crate::listen::MAX_HEAD_BYTES {
        let mut r = refuse(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "head_too_large",
            &format!(
                "the request line and headers are {head} bytes; at most {} KiB are taken",
                crate::listen::MAX_HEAD_BYTES >> 10
            ),
        );
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return r;
    }
    // Two Host headers (RFC 9112: a 400), or a request line naming another host than the
    // header: which one would a proxy in between have checked?
    if headers.get_all(header::HOST).iter().count() > 1 {
        return refused_unread(
            has_body,
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the request has more than one Host header",
        );
    }
    let named = req.uri().authority().map(|a| a.as_str().to_string());
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string);
    if let (Some(n), Some(h)) = (&named, &host)
        && !n.eq_ignore_ascii_case(h)
    {
        return refused_unread(
            has_body,
            StatusCode::BAD_REQUEST,
            "bad_request",
            &format!("the request line names host '{n}', its Host header '{h}'"),
        );
    }
    let host = host.or(named);
    match host {
        Some(h) if host_allowed(&h, policy.bind) => {}
        Some(h) => {
            return refused_unread(
                has_body,
                StatusCode::MISDIRECTED_REQUEST,
                "forbidden_host",
                &format!(
                    "Host '{h}' is not a loopback name; use http://127.0.0.1, http://localhost or http://[::1]"
                ),
            );
        }
        None => {
            return refused_unread(
                has_body,
                StatusCode::MISDIRECTED_REQUEST,
                "forbidden_host",
                "the request has no Host header",
            );
        }
    }
    // One origin or none: a second one (no browser sends two) could carry what the first hides.
    if headers.get_all(header::ORIGIN).iter().nth(1).is_some() {
        return refused_unread(
            has_body,
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the request has more than one Origin header",
        );
    }
    let origin = match headers.get(header::ORIGIN) {
        None => None,
        Some(o) => {
            let allowed = o.to_str().ok().is_some_and(|s| policy.origin_allowed(s));
            if !allowed {
                return refused_unread(
                    has_body,
                    StatusCode::FORBIDDEN,
                    "forbidden_origin",
                    &format!(
                        "origin '{}' is not allowed: only the server's own page and the origins the server was started to allow may call it",
                        String::from_utf8_lossy(o.as_bytes())
                    ),
                );
            }
            Some(o.clone())
        }
    };
    if req.method() == Method::OPTIONS {
        if let Some(o) = &origin {
            if headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD) {
                let mut resp = StatusCode::NO_CONTENT.into_response();
                add_cors(&mut resp, o);
                let h = resp.headers_mut();
                h.insert(
                    header::ACCESS_CONTROL_ALLOW_METHODS,
                    HeaderValue::from_static("GET, POST, PUT, DELETE, OPTIONS"),
                );
                h.insert(
                    header::ACCESS_CONTROL_ALLOW_HEADERS,
                    HeaderValue::from_static("Authorization, Content-Type, Last-Event-ID"),
                );
                h.insert(
                    header::ACCESS_CONTROL_MAX_AGE,
                    HeaderValue::from_static("600"),
                );
                return resp;
            }
        }
    }
    let page = matches!(*req.method(), Method::GET | Method::HEAD)
        && super::page::is_page_path(req.uri().path());
    let authenticated =
        bearer(headers).is_some_and(|t| constant_time_eq(t, policy.token.as_bytes()));
    if authenticated {
        // This connection is the user's: it is never closed to make room for others.
        if let Some(mark) = req.extensions().get::<crate::listen::ConnMark>() {
            mark.authenticated();
        }
    }
    let mut resp = if page {
        next.run(req).await
    } else if !authenticated {
        let mut r = refused_unread(
            has_body,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong bearer token: send 'Authorization: Bearer TOKEN' with the token from the file `flowrun serve` printed",
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"flowrun\""),
        );
        r
    } else if headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > policy.max_body_bytes as u64)
    {
        too_large(policy.max_body_bytes)
    } else {
        read_body_first(req, next, policy.max_body_bytes).await
    };
    if let Some(o) = &origin {
        add_cors(&mut resp, o);
    }
    resp
}

/// `413` with the limit in the message, refused on its `Content-Length`: the body is not read,
/// so the connection cannot carry another request. `Connection: close` says so, or a client
/// sends its next request down a connection the server is closing ("peer disconnected": seen
/// as a flaky `serve_security::error_messages_name_no_cli_flag`).
pub fn too_large(max: usize) -> Response {
    let mut r = crate::api::error::ApiError::too_large(max).into_response();
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        for ok in [
            "127.0.0.1",
            "127.0.0.1:8080",
            "localhost",
            "LOCALHOST:1",
            "[::1]",
            "[::1]:7780",
        ] {
            assert!(host_allowed(ok, lo), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:80",
            "127.0.0.1.evil.example",
            "localhost.evil",
            "127.0.0.2",
            "[::2]:80",
            "127.0.0.1:",
            "127.0.0.1:80a",
            "",
        ] {
            assert!(!host_allowed(bad, lo), "{bad}");
        }
        let lan: IpAddr = "192.168.1.5".parse().unwrap();
        assert!(host_allowed("192.168.1.5:7780", lan));
        assert!(!host_allowed("192.168.1.6:7780", lan));
    }

    #[test]
    fn own_origins() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        for ok in [
            "http://127.0.0.1:7780",
            "http://localhost:7780",
            "http://[::1]:7780",
        ] {
            assert!(own_origin(ok, lo, 7780), "{ok}");
        }
        for bad in [
            "http://127.0.0.1:7781",
            "http://127.0.0.1:77800",
            "http://127.0.0.1",
            "https://127.0.0.1:7780",
            "http://evil.example:7780",
            "http://127.0.0.1.evil.example:7780",
            "http://127.0.0.1:7780/x",
            "null",
            "",
        ] {
            assert!(!own_origin(bad, lo, 7780), "{bad}");
        }
        assert!(own_origin("http://localhost", lo, 80));
        let lan: IpAddr = "192.168.1.5".parse().unwrap();
        assert!(own_origin("http://192.168.1.5:7780", lan, 7780));
        let policy = Policy {
            token: crate::token::new_token(),
            allow_origins: vec!["http://localhost:5173".into()],
            max_body_bytes: 1,
            bind: lo,
            port: 7780,
        };
        assert!(policy.origin_allowed("http://LOCALHOST:7780/"));
        assert!(policy.origin_allowed("http://localhost:5173"));
        assert!(!policy.origin_allowed("http://localhost:5174"));
    }

    #[test]
    fn origins_and_comparison() {
        assert_eq!(
            normalize_origin("http://LocalHost:5173/").unwrap(),
            "http://localhost:5173"
        );
        assert_eq!(normalize_origin("null").unwrap(), "null");
        assert_eq!(normalize_origin(" NULL ").unwrap(), "null");
        assert_eq!(normalize_origin("file://").unwrap(), "file://");
        assert_eq!(normalize_origin("app://Editor").unwrap(), "app://editor");
        assert_eq!(
            normalize_origin("vscode-webview://abc123").unwrap(),
            "vscode-webview://abc123"
        );
        for bad in [
            "*",
            "localhost:5173",
            "http://a/b",
            "http://",
            "https://*.example",
            "1app://x",
            "app://x?y",
            "nul",
            "",
        ] {
            assert!(normalize_origin(bad).is_err(), "{bad}");
        }
        assert!(!normalize_origin("*").unwrap_err().contains("--"));
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let policy = Policy {
            token: crate::token::new_token(),
            allow_origins: ["null", "file://", "app://editor"]
                .iter()
                .map(|o| normalize_origin(o).unwrap())
                .collect(),
            max_body_bytes: 1,
            bind: lo,
            port: 7780,
        };
        for ok in [
            "null",
            "file://",
            "FILE://",
            "app://editor",
            "app://editor/",
        ] {
            assert!(policy.origin_allowed(ok), "{ok}");
        }
        for bad in ["file:", "app://other", "app://editor.evil", "http://editor"] {
            assert!(!policy.origin_allowed(bad), "{bad}");
        }
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"abc", b"abd"));
    }
}

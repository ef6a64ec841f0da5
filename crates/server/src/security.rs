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
use std::path::{Path, PathBuf};

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
        let o = origin.trim_end_matches('/').to_ascii_lowercase();
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

/// A random bearer token: 32 bytes from the OS generator, as hex.
pub fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `$FLOWRUN_CACHE_DIR/serve/`, else `$XDG_RUNTIME_DIR/flowrun/`, else `<cache dir>/serve/`;
/// one file per port, so several servers do not overwrite each other's token.
pub fn default_token_file(port: u16) -> PathBuf {
    let name = format!("serve-{port}.token");
    if std::env::var_os("FLOWRUN_CACHE_DIR").is_some_and(|v| !v.is_empty()) {
        return flowrun_app::paths::cache_dir().join("serve").join(name);
    }
    if let Some(run) = std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        return PathBuf::from(run).join("flowrun").join(name);
    }
    flowrun_app::paths::cache_dir().join("serve").join(name)
}

/// Writes the token with mode 0600. `own_dir`: the directory is flowrun's (the default path)
/// and is made private (0700) whatever it was; otherwise it is only created private when missing.
pub fn write_token_file(path: &Path, token: &str, own_dir: bool) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if own_dir || !dir.exists() {
        flowrun_app::paths::private_dir(dir)?;
    }
    flowrun_app::paths::write_private(path, format!("{token}\n").as_bytes())
}

/// Checks and normalizes an `--allow-origin` value.
pub fn normalize_origin(o: &str) -> Result<String, String> {
    let o = o.trim().trim_end_matches('/').to_ascii_lowercase();
    let rest = o
        .strip_prefix("http://")
        .or_else(|| o.strip_prefix("https://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains('/') && !host.contains('*') => Ok(o),
        _ => Err(format!(
            "--allow-origin {o}: expected an origin like http://localhost:5173 (scheme, host and port; no path, no wildcard)"
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

/// The middleware in front of every route.
pub async fn guard(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let policy = &app.security;
    let headers = req.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.as_str().to_string()));
    match host {
        Some(h) if host_allowed(&h, policy.bind) => {}
        Some(h) => {
            return refuse(
                StatusCode::MISDIRECTED_REQUEST,
                "forbidden_host",
                &format!(
                    "Host '{h}' is not a loopback name; use http://127.0.0.1, http://localhost or http://[::1]"
                ),
            );
        }
        None => {
            return refuse(
                StatusCode::MISDIRECTED_REQUEST,
                "forbidden_host",
                "the request has no Host header",
            );
        }
    }
    let origin = match headers.get(header::ORIGIN) {
        None => None,
        Some(o) => {
            let allowed = o.to_str().ok().is_some_and(|s| policy.origin_allowed(s));
            if !allowed {
                return refuse(
                    StatusCode::FORBIDDEN,
                    "forbidden_origin",
                    &format!(
                        "origin '{}' is not allowed; start the server with --allow-origin ORIGIN to allow it",
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
                    HeaderValue::from_static("GET, POST, OPTIONS"),
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
    let mut resp = if page {
        next.run(req).await
    } else if !bearer(headers).is_some_and(|t| constant_time_eq(t, policy.token.as_bytes())) {
        let mut r = refuse(
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
        next.run(req).await
    };
    if let Some(o) = &origin {
        add_cors(&mut resp, o);
    }
    resp
}

/// `413` with the limit in the message.
pub fn too_large(max: usize) -> Response {
    refuse(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        &format!("the request body is larger than {max} bytes (--max-body-bytes)"),
    )
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
            token: new_token(),
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
    fn origins_and_tokens() {
        assert_eq!(
            normalize_origin("http://LocalHost:5173/").unwrap(),
            "http://localhost:5173"
        );
        assert!(normalize_origin("*").is_err());
        assert!(normalize_origin("localhost:5173").is_err());
        assert!(normalize_origin("http://a/b").is_err());
        let t = new_token();
        assert_eq!(t.len(), 64);
        assert!(constant_time_eq(t.as_bytes(), t.as_bytes()));
        assert!(!constant_time_eq(t.as_bytes(), &t.as_bytes()[1..]));
        assert!(!constant_time_eq(b"abc", b"abd"));
    }
}

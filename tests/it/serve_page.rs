//! The web page of `flowrun serve` (`GET /`): served without a token but behind the `Host`
//! check, with a strict Content-Security-Policy; the server's own origin may call the API (with
//! the token), foreign origins may not; the embedded HTML loads nothing from elsewhere and never
//! inserts markup from data.

use crate::support::serve::{Reply, World, raw};
use serde_json::json;

/// The page as the binary serves it, with the nonce put back to its placeholder.
fn page_source() -> String {
    let w = World::new();
    let s = w.serve(&[]);
    let r = s.request("GET", "/", None, &[]);
    let nonce = csp_nonce(r.header("content-security-policy").unwrap());
    r.text.replace(&nonce, "__NONCE__")
}

fn quick() -> serde_json::Value {
    json!({"id": "quick", "name": "Quick", "description": "one set node",
           "nodes": [{"id": "only", "type": "set", "fields": {"n": "{{ trigger.n }}"}}]})
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

/// The nonce of `script-src 'nonce-…'` in a CSP header.
fn csp_nonce(csp: &str) -> String {
    let start =
        csp.find("script-src 'nonce-").expect("a script nonce") + "script-src 'nonce-".len();
    csp[start..].split('\'').next().unwrap().to_string()
}

fn assert_page(r: &Reply, what: &str) {
    assert_eq!(r.status, 200, "{what}: {}", r.text);
    let ct = r.header("content-type").unwrap_or_default();
    assert!(ct.starts_with("text/html"), "{what}: content-type {ct}");
    let csp = r.header("content-security-policy").expect("a CSP header");
    assert!(csp.contains("default-src 'self'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!csp.contains("unsafe-eval"), "{csp}");
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert!(r.text.contains("<title>flowrun</title>"), "{what}");
    // The inline script and style carry the nonce the header allows, and no placeholder is left.
    let nonce = csp_nonce(csp);
    assert_eq!(nonce.len(), 32, "{csp}");
    assert!(r.text.contains(&format!("<script nonce=\"{nonce}\">")));
    assert!(r.text.contains(&format!("<style nonce=\"{nonce}\">")));
    assert!(!r.text.contains("__NONCE__"));
}

#[test]
fn page_is_served_without_a_token_but_behind_the_host_check() {
    let w = World::new();
    let s = w.serve(&[]);

    let root = s.request("GET", "/", None, &[]);
    assert_page(&root, "GET /");
    let index = s.request("GET", "/index.html", None, &[]);
    assert_page(&index, "GET /index.html");
    // A fresh nonce per response.
    assert_ne!(
        csp_nonce(root.header("content-security-policy").unwrap()),
        csp_nonce(index.header("content-security-policy").unwrap())
    );
    // With a token too, and from the server's own origin.
    let origin = s.url.clone();
    assert_page(
        &s.request("GET", "/", None, &[("Origin", &origin)]),
        "own origin",
    );

    // The API itself still needs the token; other paths are no page.
    assert_eq!(s.request("GET", "/api/workflows", None, &[]).status, 401);
    assert_eq!(s.request("GET", "/index.htm", None, &[]).status, 401);
    assert_eq!(s.request("POST", "/", Some("{}".into()), &[]).status, 401);

    // DNS rebinding: a foreign Host gets no page.
    let (status, body) = raw(
        &s.addr,
        "GET / HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 421, "{body}");
    assert!(body.contains("forbidden_host"), "{body}");
    assert!(!body.contains("<html"), "{body}");
    let (status, _) = raw(
        &s.addr,
        &format!(
            "GET /index.html HTTP/1.1\r\nHost: 127.0.0.1.evil.example:{}\r\nConnection: close\r\n\r\n",
            port_of(&s.addr)
        ),
    );
    assert_eq!(status, 421);
    // A loopback Host is fine over a raw socket as well.
    let (status, body) = raw(
        &s.addr,
        "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200);
    assert!(body.contains("<title>flowrun</title>"));

    // A page of a foreign origin cannot load it either.
    let r = s.request("GET", "/", None, &[("Origin", "http://evil.example")]);
    assert_eq!(r.status, 403, "{}", r.text);
    assert_eq!(r.body["error"], "forbidden_origin");
}

#[test]
fn the_servers_own_origin_may_call_the_api_and_foreign_ones_may_not() {
    let w = World::new();
    w.save("quick.json", &quick());
    let s = w.serve(&[]);
    let port = port_of(&s.addr);
    let auth = format!("Bearer {}", s.token);
    let body = json!({"trigger": {"n": 3}}).to_string();
    let post = |origin: &str, auth: &str| {
        s.request(
            "POST",
            "/api/workflows/quick/executions?wait=true",
            Some(body.clone()),
            &[("Origin", origin), ("Authorization", auth)],
        )
    };

    // What the page sends: its own origin and the token.
    for own in [
        s.url.clone(),
        format!("http://localhost:{port}"),
        format!("http://[::1]:{port}"),
    ] {
        let r = post(&own, &auth);
        assert_eq!(r.status, 200, "{own}: {}; {}", r.text, s.stderr());
        assert_eq!(r.body["status"], "success", "{}", r.text);
        assert_eq!(r.body["output"]["n"], 3, "{}", r.text);
        assert_eq!(r.header("access-control-allow-origin"), Some(own.as_str()));
    }
    // Its GETs and the event stream too.
    let r = s.request(
        "GET",
        "/api/executions?limit=10",
        None,
        &[("Origin", &s.url), ("Authorization", &auth)],
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["executions"].as_array().unwrap().len(), 3);
    let id = r.body["executions"][0]["id"].as_str().unwrap().to_string();
    let r = s.request(
        "GET",
        &format!("/api/executions/{id}/events"),
        None,
        &[("Origin", &s.url), ("Authorization", &auth)],
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.text.contains("event: execution_end"), "{}", r.text);
    assert!(r.text.contains("event: end"), "{}", r.text);

    // Own origin without the token: still 401.
    let r = post(&s.url, "Bearer wrong");
    assert_eq!(r.status, 401, "{}", r.text);

    // Foreign origins, including near misses of the own one: 403, nothing runs.
    for foreign in [
        "http://evil.example".to_string(),
        format!("http://evil.example:{port}"),
        format!("http://127.0.0.1.evil.example:{port}"),
        format!("http://127.0.0.1:{}", port.wrapping_add(1)),
        format!("https://127.0.0.1:{port}"),
        format!("http://127.0.0.1:{port}0"),
        "http://127.0.0.1".to_string(),
        "null".to_string(),
    ] {
        let r = post(&foreign, &auth);
        assert_eq!(r.status, 403, "{foreign}: {}", r.text);
        assert_eq!(r.body["error"], "forbidden_origin", "{foreign}");
        assert_eq!(r.header("access-control-allow-origin"), None, "{foreign}");
    }
    let r = s.get("/api/executions?limit=10");
    assert_eq!(r.body["executions"].as_array().unwrap().len(), 3);
}

#[test]
fn the_page_is_self_contained_and_inserts_no_markup() {
    let html = page_source();
    for bad in [
        "src=\"http",
        "href=\"http",
        "src='http",
        "href='http",
        "src=\"//",
        "href=\"//",
        "url(http",
        "url(//",
        "@import",
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "new Function",
        "EventSource(",
        "localStorage",
        " onclick=",
        " onload=",
        " style=\"",
    ] {
        assert!(!html.contains(bad), "page.html contains {bad:?}");
    }
    // What it is for: the token in sessionStorage, sent as a bearer token, and the endpoints.
    for needed in [
        "sessionStorage",
        "\"Authorization\": \"Bearer \"",
        "Last-Event-ID",
        "/api/workflows",
        "/executions",
        "/events",
        "/stop",
        "/api/executions?",
        "/api/events",
        "getReader()",
        "textContent",
    ] {
        assert!(html.contains(needed), "page.html lacks {needed:?}");
    }
    // One inline script and one inline style, both with the nonce slot; no other script tags.
    assert_eq!(html.matches("<script").count(), 1);
    assert_eq!(html.matches("<script nonce=\"__NONCE__\">").count(), 1);
    assert_eq!(html.matches("<style nonce=\"__NONCE__\">").count(), 1);
}

/// The script parses (a syntax check by Node.js, which must be installed: `.ci/run` sees to it).
#[test]
fn the_pages_script_is_valid_javascript() {
    let node = crate::support::serve::node();
    let html = page_source();
    let start =
        html.find("<script nonce=\"__NONCE__\">").unwrap() + "<script nonce=\"__NONCE__\">".len();
    let end = html[start..].find("</script>").unwrap() + start;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("page.js");
    std::fs::write(&file, &html[start..end]).unwrap();
    let out = std::process::Command::new(node)
        .arg("--check")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "node --check: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

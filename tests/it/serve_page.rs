//! The web page of `flowrun serve` (`GET /`): served without a token but behind the `Host`
//! check, with a strict Content-Security-Policy; the server's own origin may call the API (with
//! the token), foreign origins may not; the embedded HTML loads nothing from elsewhere and never
//! inserts markup from data.

use crate::support::serve::{Reply, World, raw};
use serde_json::json;

/// The file the binary embeds.
fn page_source() -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/server/src/page.html");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
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
        "/api/executions?limit=10",
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

/// Runs the page's own script in Node.js against a real server: the DOM is a minimal stand-in
/// (elements by id, text, classes, clicks), `fetch` and streams are Node's, the server is real.
/// Reads commands on stdin, one JSON object a line: `{"token": T}` pastes a token,
/// `{"follow": ID}` opens an execution, `{"dump": true}` prints what the page shows.
const PAGE_DRIVER: &str = r#"
const vm = require("vm");
const fs = require("fs");
const readline = require("readline");
const [scriptFile, base] = process.argv.slice(2);
// As in a browser, a rejected promise nobody awaits (a list refresh while the server is down)
// is only logged.
process.on("unhandledRejection", (e) => console.error("unhandled:", String(e)));
class El {
  constructor(tag) { this.tag = tag; this.kids = []; this.own = ""; this.className = ""; this.value = ""; this.title = ""; this.on = {}; this.scrollTop = 0; this.scrollHeight = 0;
    const el = this;
    this.classList = {
      add: (c) => { if (!el.classes().includes(c)) el.className = (el.className + " " + c).trim(); },
      remove: (c) => { el.className = el.classes().filter((x) => x !== c).join(" "); },
      toggle: (c, on) => { if (on === undefined ? !el.classes().includes(c) : on) el.classList.add(c); else el.classList.remove(c); },
      contains: (c) => el.classes().includes(c),
    };
  }
  classes() { return this.className.split(/\s+/).filter(Boolean); }
  get textContent() { return this.own + this.kids.map((k) => (typeof k === "string" ? k : k.textContent)).join(""); }
  set textContent(v) { this.own = String(v); this.kids = []; }
  append(...xs) { this.kids.push(...xs); }
  replaceChildren(...xs) { this.own = ""; this.kids = [...xs]; }
  addEventListener(type, f) { (this.on[type] = this.on[type] || []).push(f); }
  click() { for (const f of this.on.click || []) f({}); }
}
const ids = new Map();
const document = {
  getElementById: (id) => { if (!ids.has(id)) ids.set(id, new El("div")); return ids.get(id); },
  createElement: (tag) => new El(tag),
  querySelectorAll: () => [],
};
const store = new Map();
const sessionStorage = { getItem: (k) => (store.has(k) ? store.get(k) : null), setItem: (k, v) => store.set(k, String(v)), removeItem: (k) => store.delete(k) };
const ctx = vm.createContext({ document, sessionStorage, console, setTimeout, clearTimeout, AbortController, TextDecoder, URL,
  fetch: (path, init) => fetch(new URL(path, base), init) });
vm.runInContext(fs.readFileSync(scriptFile, "utf8"), ctx);
const $ = (id) => document.getElementById(id);
readline.createInterface({ input: process.stdin }).on("line", (line) => {
  const cmd = JSON.parse(line);
  if (cmd.token) { $("token").value = cmd.token; $("save-token").click(); }
  if (cmd.follow) vm.runInContext("follow(" + JSON.stringify(cmd.follow) + ")", ctx);
  if (cmd.dump) {
    const status = $("ex-status");
    const icon = status.kids[0];
    console.log(JSON.stringify({ message: $("message").textContent, status: status.textContent, icon: icon ? icon.title : null }));
  }
});
"#;

/// The page's script, driven by [`PAGE_DRIVER`].
struct Page {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Page {
    fn open(w: &World, url: &str) -> Page {
        let html = page_source();
        let tag = "<script nonce=\"__NONCE__\">";
        let start = html.find(tag).unwrap() + tag.len();
        let end = html[start..].find("</script>").unwrap() + start;
        let script = w.path("page.js");
        std::fs::write(&script, &html[start..end]).unwrap();
        let driver = w.path("driver.js");
        std::fs::write(&driver, PAGE_DRIVER).unwrap();
        let mut child = std::process::Command::new(crate::support::serve::node())
            .arg(&driver)
            .arg(&script)
            .arg(url)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        Page {
            child,
            stdin,
            lines,
        }
    }

    fn send(&mut self, cmd: serde_json::Value) {
        use std::io::Write;
        writeln!(self.stdin, "{cmd}").unwrap();
    }

    fn dump(&mut self) -> serde_json::Value {
        self.send(json!({"dump": true}));
        let line = self
            .lines
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the page answers");
        serde_json::from_str(&line).unwrap()
    }

    /// Dumps until `f` holds (at most 30 s).
    fn wait(&mut self, what: &str, f: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let d = self.dump();
            if f(&d) {
                return d;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the page never {what}: {d}"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn after_a_restart_with_a_new_token_the_page_asks_for_it_and_shows_no_failure() {
    let w = World::new();
    w.save("slow.json", &crate::serve::slow());
    let file = w.path("page.token");
    let file_arg = file.to_str().unwrap().to_string();
    let mut first = w.serve(&["--token-file", &file_arg]);
    let id = first.start("/api/workflows/slow/executions", &json!({}));
    let mut page = Page::open(&w, &first.url);
    page.send(json!({"token": first.token}));
    page.send(json!({"follow": id}));
    page.wait("showed the run", |d| d["icon"] == "running");

    // The server dies in the middle of the stream (kill -9: the page gets no end) and comes back
    // on the same port with a new token (its token file was removed).
    std::fs::remove_file(&file).unwrap();
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    let second = w.serve_opts(crate::support::serve::ServeOpts {
        extra: &["--token-file", &file_arg],
        port: Some(first.port()),
        ..Default::default()
    });
    assert_ne!(second.token, first.token);
    let d = page.wait("asked for the new token", |d| {
        d["message"]
            .as_str()
            .unwrap()
            .contains("the server restarted")
    });
    // A refused token says nothing about the execution: it is not shown as failed.
    assert_ne!(d["icon"], "error", "{d}");
    assert!(d["status"].as_str().unwrap().contains("not known"), "{d}");

    // With the new token the page follows the execution again and shows how it really ended.
    page.send(json!({"token": second.token}));
    // (The new server recovered the execution of the dead one as `interrupted`.)
    let d = page.wait("showed the end", |d| d["icon"] == "interrupted");
    assert!(d["status"].as_str().unwrap().contains("interrupted"), "{d}");
    assert_eq!(d["message"], "", "{d}");
}

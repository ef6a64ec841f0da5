//! Who may talk to `flowrun serve`: every refusal (Host, Origin, token, body size), the token
//! file across restarts and the token files it refuses, the origins of desktop editors, and error
//! messages worded for API clients (no CLI flags).

use crate::serve::quick;
use crate::support::serve::{ServeOpts, World, raw};
use crate::support::{assert_code, mode, stderr};
use serde_json::{Value, json};
use std::os::unix::fs::PermissionsExt;

/// A port nothing listens on now (the next server takes it).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn set_mode(p: &std::path::Path, m: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
}

/// `flowrun serve --port 0 --token-file PATH`, which must refuse to start: its stderr.
fn refused(w: &World, path: &std::path::Path) -> String {
    let out = w.cmd([
        "serve",
        "--port",
        "0",
        "--token-file",
        path.to_str().unwrap(),
    ]);
    assert_code(&out, 2, &format!("serve --token-file {}", path.display()));
    let err = stderr(&out);
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains("--token-file"), "{err}");
    err
}

#[test]
fn the_token_survives_a_restart_and_the_old_one_keeps_working() {
    let w = World::new();
    let file = w.path("editor.token");
    let file_arg = file.to_str().unwrap().to_string();
    let mut first = w.serve(&["--token-file", &file_arg]);
    let token = first.token.clone();
    assert_eq!(first.token_file, file);
    assert_eq!(mode(&file), 0o600);
    assert_eq!(first.terminate(), Some(0));
    // The explicit file stays, and the next start uses its token again.
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), token);
    let second = w.serve(&["--token-file", &file_arg]);
    assert_eq!(second.token, token);
    assert!(
        second.stderr().contains("used again"),
        "{}",
        second.stderr()
    );
    // What a page or editor kept from before the restart still works.
    let r = second.request(
        "GET",
        "/api",
        None,
        &[("Authorization", &format!("Bearer {token}"))],
    );
    assert_eq!(r.status, 200, "{}", r.text);
    drop(second);

    // The default file (one per port, in the cache directory) is kept too when the port is
    // fixed: the same port gets the same token.
    let port = free_port();
    let fixed = ServeOpts {
        port: Some(port),
        ..ServeOpts::default()
    };
    let mut one = w.serve_opts(fixed);
    let (token, default_file) = (one.token.clone(), one.token_file.clone());
    assert!(default_file.starts_with(w.cache_dir()), "{default_file:?}");
    assert_eq!(one.terminate(), Some(0));
    assert!(default_file.exists(), "the default token file is kept");
    let two = w.serve_opts(ServeOpts {
        port: Some(port),
        ..ServeOpts::default()
    });
    assert_eq!(two.token_file, default_file);
    assert_eq!(two.token, token);
}

#[test]
fn token_files_that_are_not_ours_are_refused_and_left_alone() {
    let w = World::new();

    // `/` and a directory: not a file path (this used to panic).
    let err = refused(&w, std::path::Path::new("/"));
    assert!(err.contains("not a file path"), "{err}");
    std::fs::create_dir(w.path("adir")).unwrap();
    let err = refused(&w, &w.path("adir"));
    assert!(err.contains("a directory"), "{err}");

    // A symbolic link, even to a good token file: not followed.
    let good = w.path("good.token");
    std::fs::write(&good, format!("{}\n", "a".repeat(64))).unwrap();
    set_mode(&good, 0o600);
    std::os::unix::fs::symlink(&good, w.path("link.token")).unwrap();
    let err = refused(&w, &w.path("link.token"));
    assert!(err.contains("symbolic link"), "{err}");

    // A file that holds something else: not overwritten.
    let notes = w.path("notes.txt");
    std::fs::write(&notes, "my notes\n").unwrap();
    let err = refused(&w, &notes);
    assert!(err.contains("does not hold a flowrun token"), "{err}");
    assert_eq!(std::fs::read_to_string(&notes).unwrap(), "my notes\n");

    // Another user's file.
    // SAFETY: geteuid cannot fail.
    let other = if unsafe { libc::geteuid() } == 0 {
        let p = w.path("theirs.token");
        std::fs::write(&p, format!("{}\n", "b".repeat(64))).unwrap();
        set_mode(&p, 0o600);
        std::os::unix::fs::chown(&p, Some(65534), Some(65534)).unwrap();
        p
    } else {
        std::path::PathBuf::from("/etc/passwd")
    };
    let err = refused(&w, &other);
    assert!(err.contains("belongs to another user"), "{err}");

    // The default path is checked the same way, and the message says how to choose another.
    let dir = w.cache_dir().join("serve");
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    std::fs::create_dir(dir.join(format!("serve-{port}.token"))).unwrap();
    let out = w.cmd(["serve", "--port", &port.to_string()]);
    assert_code(
        &out,
        2,
        "serve on a port whose default token file is a directory",
    );
    let err = stderr(&out);
    assert!(
        err.contains("a directory") && err.contains("--token-file PATH"),
        "{err}"
    );
}

#[test]
fn a_token_file_with_a_loose_mode_gets_a_new_token_and_an_empty_one_is_filled() {
    let w = World::new();
    let loose = w.path("loose.token");
    let old = "c".repeat(64);
    std::fs::write(&loose, format!("{old}\n")).unwrap();
    set_mode(&loose, 0o644);
    let s = w.serve(&["--token-file", loose.to_str().unwrap()]);
    assert_ne!(s.token, old, "a token others could read is not used again");
    assert_eq!(s.token.len(), 64);
    assert_eq!(mode(&loose), 0o600);
    assert!(s.stderr().contains("had mode 0644"), "{}", s.stderr());
    drop(s);

    // `mktemp` makes an empty 0600 file: a place for the token.
    let empty = w.path("empty.token");
    std::fs::write(&empty, "").unwrap();
    set_mode(&empty, 0o600);
    let s = w.serve(&["--token-file", empty.to_str().unwrap()]);
    assert_eq!(s.token.len(), 64);
    assert_eq!(
        std::fs::read_to_string(&empty).unwrap(),
        format!("{}\n", s.token)
    );
}

#[test]
fn desktop_editor_origins_are_allowed_only_when_given() {
    let w = World::new();
    w.save(
        "quick.json",
        &json!({"id": "quick", "nodes": [{"id": "only", "type": "set", "fields": {"n": 1}}]}),
    );
    let editors = ["null", "file://", "app://flowrun-editor"];
    let s = w.serve(&[
        "--allow-origin",
        "null",
        "--allow-origin",
        "file://",
        "--allow-origin",
        "APP://flowrun-editor",
    ]);
    assert!(
        s.stderr().contains("Origin null is allowed"),
        "{}",
        s.stderr()
    );
    let auth = format!("Bearer {}", s.token);
    for origin in editors {
        let r = s.request(
            "POST",
            "/api/workflows/quick/executions?wait=true",
            Some("{}".into()),
            &[("Origin", origin), ("Authorization", &auth)],
        );
        assert_eq!(r.status, 200, "{origin}: {}", r.text);
        assert_eq!(r.body["status"], "success", "{origin}");
        assert_eq!(r.header("access-control-allow-origin"), Some(origin));
        // The preflight a browser engine sends first.
        let r = s.request(
            "OPTIONS",
            "/api/executions",
            None,
            &[
                ("Origin", origin),
                ("Access-Control-Request-Method", "POST"),
                ("Access-Control-Request-Headers", "authorization"),
            ],
        );
        assert_eq!(r.status, 204, "{origin}: {}", r.text);
        assert_eq!(r.header("access-control-allow-origin"), Some(origin));
    }
    for other in ["app://other", "file:", "nul", "http://flowrun-editor"] {
        let r = s.request(
            "GET",
            "/api",
            None,
            &[("Origin", other), ("Authorization", &auth)],
        );
        assert_eq!(r.status, 403, "{other}: {}", r.text);
        assert!(
            !r.body["message"].as_str().unwrap().contains("--"),
            "{}",
            r.text
        );
    }
    drop(s);

    // Without the flags none of them is allowed: `null` never is by default.
    let s = w.serve(&[]);
    let auth = format!("Bearer {}", s.token);
    for origin in editors {
        let r = s.request(
            "GET",
            "/api",
            None,
            &[("Origin", origin), ("Authorization", &auth)],
        );
        assert_eq!(r.status, 403, "{origin}: {}", r.text);
    }

    // What is no origin is refused at start-up, naming the flag.
    for bad in ["http://localhost:5173/path", "*", "localhost:5173"] {
        let out = w.cmd(["serve", "--port", "0", "--allow-origin", bad]);
        assert_code(&out, 2, &format!("--allow-origin {bad}"));
        assert!(stderr(&out).contains("--allow-origin"), "{}", stderr(&out));
    }
}

#[test]
fn error_messages_name_no_cli_flag() {
    let w = World::new();
    let s = w.serve_opts(ServeOpts {
        extra: &["--max-body-bytes", "100"],
        no_workflows: true,
        ..ServeOpts::default()
    });
    let r = s.post(
        "/api/executions",
        &json!({"workflow": {"id": "x".repeat(200), "nodes": []}}),
    );
    assert_eq!(r.status, 413, "{}", r.text);
    assert_eq!(r.body["max_body_bytes"], 100);
    let r2 = s.post("/api/workflows/hello/executions", &json!({}));
    assert_eq!(r2.status, 404, "{}", r2.text);
    assert!(
        r2.body["message"]
            .as_str()
            .unwrap()
            .contains("no workflows directory"),
        "{}",
        r2.text
    );
    let r3 = s.request("GET", "/api", None, &[]);
    assert_eq!(r3.status, 401);
    for r in [r, r2, r3] {
        let m = r.body["message"].as_str().unwrap();
        assert!(!m.contains("--"), "{m}");
    }
}

#[test]
fn every_security_refusal() {
    let w = World::new();
    w.save("quick.json", &quick());
    let srv = w.serve(&[
        "--allow-origin",
        "http://localhost:5173",
        "--max-body-bytes",
        "1024",
    ]);
    let auth = format!("Bearer {}", srv.token);

    // The token: 64 hex digits, in a 0600 file in a 0700 directory.
    assert_eq!(srv.token.len(), 64);
    assert!(srv.token.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(mode(&srv.token_file), 0o600);
    assert_eq!(mode(srv.token_file.parent().unwrap()), 0o700);
    assert!(srv.token_file.starts_with(w.cache_dir()));

    // No token, a wrong one, another scheme: 401.
    let r = srv.request("GET", "/api/workflows", None, &[]);
    assert_eq!(r.status, 401, "{}", r.text);
    assert_eq!(r.body["error"], "unauthorized");
    assert!(r.header("www-authenticate").unwrap().starts_with("Bearer"));
    let wrong = format!("Bearer {}", "0".repeat(64));
    let r = srv.request("GET", "/api/workflows", None, &[("Authorization", &wrong)]);
    assert_eq!(r.status, 401);
    let short = format!("Bearer {}", &srv.token[..63]);
    assert_eq!(
        srv.request("GET", "/api", None, &[("Authorization", &short)])
            .status,
        401
    );
    let basic = format!("Basic {}", srv.token);
    assert_eq!(
        srv.request("GET", "/api", None, &[("Authorization", &basic)])
            .status,
        401
    );
    // Starting an execution needs the token too.
    let r = srv.request(
        "POST",
        "/api/workflows/quick/executions",
        Some("{}".into()),
        &[],
    );
    assert_eq!(r.status, 401);

    // A foreign Host (DNS rebinding), even with the token: 421.
    let (status, body) = raw(
        &srv.addr,
        &format!(
            "GET /api/workflows HTTP/1.1\r\nHost: evil.example:{}\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n",
            srv.addr.rsplit(':').next().unwrap()
        ),
    );
    assert_eq!(status, 421, "{body}");
    assert!(body.contains("forbidden_host"), "{body}");
    let (status, _) = raw(
        &srv.addr,
        &format!("GET /api HTTP/1.1\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(status, 421, "no Host at all");
    // A loopback Host beside a foreign one, or a request line naming a foreign host: 400.
    let port = srv.addr.rsplit(':').next().unwrap();
    // So does a second Origin beside the server's own.
    for head in [
        format!("GET /api HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nHost: evil.example\r\n"),
        format!("GET http://evil.example/api HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"),
        format!(
            "GET /api HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: http://127.0.0.1:{port}\r\nOrigin: http://evil.example\r\n"
        ),
    ] {
        let (status, body) = raw(
            &srv.addr,
            &format!("{head}Authorization: {auth}\r\nConnection: close\r\n\r\n"),
        );
        assert_eq!(status, 400, "{head}: {body}");
    }
    // A head over 64 KiB, even in one piece: 431, said in JSON.
    let (status, body) = raw(
        &srv.addr,
        &format!(
            "GET /api HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: {auth}\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
            "a".repeat(100_000)
        ),
    );
    assert_eq!(status, 431, "{body}");
    assert!(body.contains("head_too_large"), "{body}");
    for ok in ["localhost", "127.0.0.1", "[::1]"] {
        let (status, body) = raw(
            &srv.addr,
            &format!(
                "GET /api HTTP/1.1\r\nHost: {ok}:{}\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n",
                srv.addr.rsplit(':').next().unwrap()
            ),
        );
        assert_eq!(status, 200, "{ok}: {body}");
    }

    // A foreign Origin, even with the token: 403; an allowed one gets CORS headers.
    let r = srv.request(
        "GET",
        "/api/workflows",
        None,
        &[("Authorization", &auth), ("Origin", "http://evil.example")],
    );
    assert_eq!(r.status, 403, "{}", r.text);
    assert_eq!(r.body["error"], "forbidden_origin");
    assert_eq!(r.header("access-control-allow-origin"), None);
    let r = srv.request(
        "POST",
        "/api/workflows/quick/executions",
        Some("{}".into()),
        &[("Authorization", &auth), ("Origin", "null")],
    );
    assert_eq!(r.status, 403);
    let r = srv.request(
        "GET",
        "/api/workflows",
        None,
        &[
            ("Authorization", &auth),
            ("Origin", "http://localhost:5173"),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("http://localhost:5173")
    );
    // Preflight of an allowed origin (browsers send no token with it) and of a foreign one.
    let r = srv.request(
        "OPTIONS",
        "/api/executions",
        None,
        &[
            ("Origin", "http://localhost:5173"),
            ("Access-Control-Request-Method", "POST"),
            (
                "Access-Control-Request-Headers",
                "authorization, content-type",
            ),
        ],
    );
    assert_eq!(r.status, 204, "{}", r.text);
    // An editor elsewhere saves and deletes workflows too.
    let methods = r.header("access-control-allow-methods").unwrap();
    for m in ["GET", "POST", "PUT", "DELETE"] {
        assert!(methods.contains(m), "{methods}");
    }
    assert!(
        r.header("access-control-allow-headers")
            .unwrap()
            .contains("Authorization")
    );
    let r = srv.request(
        "OPTIONS",
        "/api/executions",
        None,
        &[
            ("Origin", "http://evil.example"),
            ("Access-Control-Request-Method", "POST"),
        ],
    );
    assert_eq!(r.status, 403);
    // The allowed origin still needs the token.
    let r = srv.request(
        "GET",
        "/api/workflows",
        None,
        &[("Origin", "http://localhost:5173")],
    );
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("http://localhost:5173")
    );

    // A body over --max-body-bytes: 413.
    let big = json!({"workflow": quick(), "trigger": {"pad": "x".repeat(2000)}});
    let r = srv.post("/api/executions", &big);
    assert_eq!(r.status, 413, "{}", r.text);
    assert_eq!(r.body["error"], "payload_too_large");
    // A chunked body (no Content-Length) is cut at the same limit.
    let chunk = big.to_string();
    let (status, body) = raw(
        &srv.addr,
        &format!(
            "POST /api/executions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {auth}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
            chunk.len()
        ),
    );
    assert_eq!(status, 413, "{body}");
    // A small one is fine.
    let r = srv.post(
        "/api/executions?wait=true",
        &json!({"workflow": quick(), "trigger": {"n": 1}}),
    );
    assert_eq!(r.status, 200, "{}", r.text);

    // Only that last one ran.
    let history: Value = serde_json::from_str(&w.cli_ok(&["history", "--json"])).unwrap();
    assert_eq!(history.as_array().unwrap().len(), 1, "{history}");
}

//! What only the `flowrun serve` tests need on top of `tests/common`: a real server process on an
//! ephemeral port with the database and cache of a common [`Env`] plus a workflows directory, a
//! real HTTP client, an SSE reader, and a raw-socket request for headers a client library will
//! not send (a foreign `Host`).
//!
//! [`Server`] kills its process when dropped, also when a test panics.

#![allow(dead_code)]

pub use crate::support::node::{node, npm_package};
use crate::support::{Env, assert_success};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// One test's world: a common [`Env`] (database, cache, empty `TMPDIR`), whose paths and
/// commands it derefs to, with a workflows directory in its temp dir.
pub struct World {
    pub env: Env,
}

crate::support::derefs_to_env!(World);

impl Default for World {
    fn default() -> Self {
        Self::new()
    }
}

impl World {
    pub fn new() -> World {
        let w = World { env: Env::new() };
        std::fs::create_dir_all(w.workflows()).expect("workflows dir");
        w
    }

    pub fn workflows(&self) -> PathBuf {
        self.path("workflows")
    }

    /// Writes a saved workflow into the workflows directory.
    pub fn save(&self, file: &str, definition: &Value) -> PathBuf {
        self.write_workflow(&format!("workflows/{file}"), definition)
    }

    pub fn save_text(&self, file: &str, text: &str) -> PathBuf {
        self.write_file(&format!("workflows/{file}"), text)
    }

    /// `flowrun ARGS…` that must succeed; its stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cmd(args);
        assert_success(&out, &format!("flowrun {args:?}"));
        String::from_utf8(out.stdout).expect("stdout is UTF-8")
    }

    /// `flowrun serve --port 0 --workflows DIR EXTRA…`, started and ready.
    pub fn serve(&self, extra: &[&str]) -> Server {
        self.serve_with(extra, &[])
    }

    pub fn serve_with(&self, extra: &[&str], env: &[(&str, &str)]) -> Server {
        self.serve_opts(ServeOpts {
            extra,
            env,
            ..ServeOpts::default()
        })
    }

    /// `flowrun serve` as `o` says, started and ready.
    pub fn serve_opts(&self, o: ServeOpts) -> Server {
        let ServeOpts {
            extra,
            env,
            port,
            no_workflows,
            nofile,
            program,
            ignored,
            stack,
            cpus,
            fsize,
        } = o;
        let stderr_path = self.path(&format!(
            "serve-{}.stderr",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let mut cmd = match program {
            Some(p) => self.command_of(p),
            None => self.command(),
        };
        cmd.arg("serve")
            .arg("--port")
            .arg(port.unwrap_or(0).to_string());
        if !no_workflows {
            cmd.arg("--workflows").arg(self.workflows());
        }
        cmd.args(extra)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_path).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let limits = [
            (libc::RLIMIT_NOFILE, nofile),
            (libc::RLIMIT_STACK, stack),
            (libc::RLIMIT_FSIZE, fsize),
        ];
        let ignored = ignored.to_vec();
        use std::os::unix::process::CommandExt;
        // SAFETY: only setrlimit, signal and sched_setaffinity (system calls) between fork and
        // exec.
        unsafe {
            cmd.pre_exec(move || {
                if let Some(n) = cpus {
                    let mut set: libc::cpu_set_t = std::mem::zeroed();
                    (0..n).for_each(|cpu| libc::CPU_SET(cpu, &mut set));
                    if libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                for (resource, n) in limits.iter().filter_map(|(r, n)| Some((*r, (*n)?))) {
                    let limit = libc::rlimit {
                        rlim_cur: n,
                        rlim_max: n,
                    };
                    if libc::setrlimit(resource, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                for &sig in &ignored {
                    libc::signal(sig, libc::SIG_IGN);
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("flowrun serve starts");
        let stdout = child.stdout.take().unwrap();
        // The guard exists before anything can panic, so the process never outlives the test.
        let mut server = Server {
            child,
            url: String::new(),
            addr: String::new(),
            token: String::new(),
            token_file: PathBuf::new(),
            stderr_path,
            agent: agent(),
        };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next().and_then(Result::ok);
            let second = lines.next().and_then(Result::ok);
            let _ = tx.send((first, second));
            // Keep reading so the server never blocks on a full pipe.
            for _ in lines {}
        });
        let (first, second) = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("no URL from flowrun serve; {}", server.stderr()));
        let first =
            first.unwrap_or_else(|| panic!("flowrun serve printed nothing; {}", server.stderr()));
        let url = first
            .strip_prefix("flowrun serve: listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {first}"))
            .to_string();
        let second = second.expect("a second line");
        let token_file = PathBuf::from(
            second
                .strip_prefix("token file: ")
                .unwrap_or_else(|| panic!("unexpected second line: {second}")),
        );
        server.token = std::fs::read_to_string(&token_file)
            .expect("token file")
            .trim()
            .to_string();
        server.addr = url.trim_start_matches("http://").to_string();
        server.url = url;
        server.token_file = token_file;
        server
    }
}

/// How to start `flowrun serve` besides the defaults (`--port 0 --workflows DIR`).
#[derive(Default)]
pub struct ServeOpts<'a> {
    pub extra: &'a [&'a str],
    pub env: &'a [(&'a str, &'a str)],
    /// A fixed port instead of 0.
    pub port: Option<u16>,
    /// Without `--workflows`.
    pub no_workflows: bool,
    /// The server's file-descriptor limit (soft and hard).
    pub nofile: Option<u64>,
    /// Another copy of the binary to run.
    pub program: Option<&'a std::path::Path>,
    /// Signals the server starts with ignored, as under `nohup` or in a shell's background job.
    pub ignored: &'a [i32],
    /// The server's stack limit in bytes (a quarter of it is what an exec takes, ARG_MAX).
    pub stack: Option<u64>,
    /// Runs the server on its first `n` CPUs only: the cores it sizes itself by.
    pub cpus: Option<usize>,
    /// The largest file the server may write (RLIMIT_FSIZE), as on a full disk.
    pub fsize: Option<u64>,
}

/// The test's own HTTP client: no proxy from the developer's shell either.
fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .proxy(None)
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// A running `flowrun serve`; killed when dropped.
pub struct Server {
    pub child: Child,
    /// `http://127.0.0.1:PORT`
    pub url: String,
    /// `127.0.0.1:PORT`
    pub addr: String,
    pub token: String,
    pub token_file: PathBuf,
    stderr_path: PathBuf,
    agent: ureq::Agent,
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// An HTTP answer: status and JSON body (`Value::Null` when the body is not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Value,
    pub text: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn reply(resp: ureq::http::Response<ureq::Body>) -> Reply {
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let text = resp.into_body().read_to_string().unwrap_or_default();
    Reply {
        status,
        headers,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    }
}

impl Server {
    /// What the server wrote on stderr so far (for failure messages).
    /// The server's stderr, and whether its process still runs: a request that fails with a
    /// closed connection and an empty stderr tells apart a server that died (by a signal, say)
    /// from one that closed the connection.
    pub fn stderr(&self) -> String {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()));
        // The state follows the command's closing parenthesis: `Z` is exited, not yet reaped.
        let state = match stat.as_deref().ok().and_then(|s| s.rsplit_once(") ")) {
            Some((_, rest)) if rest.starts_with('Z') => "exited".to_string(),
            Some((_, rest)) => format!("running (state {})", &rest[..1]),
            None => "gone".to_string(),
        };
        format!(
            "server process {}: {state}; server stderr:\n{}",
            self.child.id(),
            std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
        )
    }

    pub fn port(&self) -> u16 {
        self.addr.rsplit(':').next().unwrap().parse().unwrap()
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn auth(&self) -> String {
        format!("Bearer {}", self.token)
    }

    /// `GET path` with the token.
    pub fn get(&self, path: &str) -> Reply {
        self.request("GET", path, None, &[("Authorization", &self.auth())])
    }

    /// `POST path` with the token and a JSON body.
    pub fn post(&self, path: &str, body: &Value) -> Reply {
        self.request(
            "POST",
            path,
            Some(body.to_string()),
            &[("Authorization", &self.auth())],
        )
    }

    /// Any request; `headers` are all it sends besides what the client adds (Host, …).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let url = format!("{}{path}", self.url);
        let mut req = ureq::http::Request::builder().method(method).uri(&url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = match body {
            Some(b) => self.agent.run(
                req.header("Content-Type", "application/json")
                    .body(b)
                    .unwrap(),
            ),
            None => self.agent.run(req.body(()).unwrap()),
        };
        match res {
            Ok(resp) => reply(resp),
            Err(e) => panic!("{method} {path}: {e}; {}", self.stderr()),
        }
    }

    /// `PUT path` with the token and a JSON body.
    pub fn put(&self, path: &str, body: &Value) -> Reply {
        self.request(
            "PUT",
            path,
            Some(body.to_string()),
            &[("Authorization", &self.auth())],
        )
    }

    /// `DELETE path` with the token.
    pub fn delete(&self, path: &str) -> Reply {
        self.request("DELETE", path, None, &[("Authorization", &self.auth())])
    }

    /// Starts an execution and returns its id (asserting `202`).
    pub fn start(&self, path: &str, body: &Value) -> String {
        let r = self.post(path, body);
        assert_eq!(r.status, 202, "{path}: {}; {}", r.text, self.stderr());
        r.body["id"].as_str().expect("an id").to_string()
    }

    /// Polls `GET /api/executions/{id}` until its status is final (at most 30 s).
    pub fn wait_final(&self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = self.get(&format!("/api/executions/{id}"));
            assert_eq!(r.status, 200, "{}", r.text);
            let s = r.body["status"].as_str().unwrap_or("").to_string();
            if s != "running" && s != "queued" {
                return r.body;
            }
            assert!(Instant::now() < deadline, "{id} still {s} after 30 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Polls until `f(record)` holds (at most 20 s).
    pub fn wait_until(&self, id: &str, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let r = self.get(&format!("/api/executions/{id}"));
            if r.status == 200 && f(&r.body) {
                return r.body;
            }
            assert!(Instant::now() < deadline, "{id}: never {what}: {}", r.text);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Opens the SSE stream of an execution (`last_event_id` as the header).
    pub fn events(&self, id: &str, last_event_id: Option<u64>) -> Sse {
        self.sse(&format!("/api/executions/{id}/events"), last_event_id)
    }

    /// Opens an SSE stream at `path` (`last_event_id` as the header).
    pub fn sse(&self, path: &str, last_event_id: Option<u64>) -> Sse {
        let url = format!("{}{path}", self.url);
        let mut req = self.agent.get(&url).header("Authorization", &self.auth());
        if let Some(n) = last_event_id {
            req = req.header("Last-Event-ID", &n.to_string());
        }
        let resp = req.call().expect("events request");
        assert_eq!(resp.status().as_u16(), 200);
        assert_eq!(
            resp.headers()
                .get("x-accel-buffering")
                .and_then(|v| v.to_str().ok()),
            Some("no"),
            "proxies must not buffer the stream"
        );
        let ct = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        assert!(ct.starts_with("text/event-stream"), "content-type {ct}");
        Sse {
            reader: Box::new(BufReader::new(resp.into_body().into_reader())),
        }
    }

    /// Sends SIGTERM and waits for the process (at most 30 s); returns its exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        self.end_with(libc::SIGTERM)
    }

    /// Sends `signal` and waits for the process (at most 30 s); returns its exit code.
    pub fn end_with(&mut self, signal: i32) -> Option<i32> {
        // SAFETY: signalling our own child by pid.
        unsafe {
            libc::kill(self.pid(), signal);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "the server did not exit after signal {signal}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// One Server-Sent Event.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub id: Option<String>,
    pub event: String,
    pub data: String,
}

impl Message {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("{}: {e}", self.data))
    }

    pub fn seq(&self) -> u64 {
        self.id
            .as_deref()
            .expect("an id")
            .parse()
            .expect("a number")
    }
}

/// Reads an SSE stream message by message.
pub struct Sse {
    reader: Box<dyn BufRead + Send>,
}

impl Sse {
    /// The next message, `None` at the end of the stream. Comments (keep-alives) are skipped.
    pub fn next_message(&mut self) -> Option<Message> {
        let mut id = None;
        let mut event = String::from("message");
        let mut data: Vec<String> = Vec::new();
        let mut any = false;
        loop {
            let mut line = String::new();
            if self
                .reader
                .read_line(&mut line)
                .expect("reading the stream")
                == 0
            {
                return None;
            }
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if any {
                    return Some(Message {
                        id,
                        event,
                        data: data.join("\n"),
                    });
                }
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            any = true;
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line, ""),
            };
            match field {
                "id" => id = Some(value.to_string()),
                "event" => event = value.to_string(),
                "data" => data.push(value.to_string()),
                _ => {}
            }
        }
    }

    /// Every message up to and including `end`; asserts the stream then closes.
    pub fn read_to_end(&mut self) -> Vec<Message> {
        let mut out = Vec::new();
        while let Some(m) = self.next_message() {
            let end = m.event == "end";
            out.push(m);
            if end {
                assert!(
                    self.next_message().is_none(),
                    "the stream goes on after end"
                );
                return out;
            }
        }
        panic!("the stream closed without an end event: {out:?}");
    }
}

/// Sends `request` (raw HTTP/1.1 text) to `addr` and returns the status and body.
pub fn raw(addr: &str, request: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_string();
    (status, body)
}

impl Sse {
    /// The next raw line of the stream (comments included), without its line ending; `None` at
    /// the end of the stream.
    pub fn next_line(&mut self) -> Option<String> {
        let mut line = String::new();
        match self
            .reader
            .read_line(&mut line)
            .expect("reading the stream")
        {
            0 => None,
            _ => Some(line.trim_end_matches(['\n', '\r']).to_string()),
        }
    }
}

//! A small real HTTP/1.1 server for the integration tests, on 127.0.0.1 and an ephemeral port.
//!
//! It stands in for LLM providers (OpenAI-style chat completions and Anthropic messages, in
//! their real wire formats) and for any HTTP endpoint an `http_request` node calls. Every
//! request is recorded (method, target, headers, body, parsed JSON, arrival time) so tests can
//! assert on exactly what flowrun sent. Answers come from a queue of scripted replies first,
//! then from a handler closure. Every answer carries `Connection: close`.

#![allow(dead_code)]

use serde_json::{Value, json};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One scripted answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Wait this long (after reading the request) before answering.
    pub delay: Duration,
    /// Send the answer one byte at a time, this long apart (a trickling server).
    pub trickle: Option<Duration>,
    /// A streamed answer: the body in these pieces, `Transfer-Encoding: chunked`, each piece
    /// after waiting its duration (`body` is then unused).
    pub chunks: Vec<(Vec<u8>, Duration)>,
}

impl Reply {
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status,
            headers: vec![("Content-Type".into(), content_type.into())],
            body: body.into(),
            delay: Duration::ZERO,
            trickle: None,
            chunks: Vec::new(),
        }
    }

    /// A streamed answer of server-sent events: each `(event, data)` as one chunk, `every`
    /// apart (`event` None: a `data:` line alone, as OpenAI sends them).
    pub fn sse(events: Vec<(Option<&str>, String)>, every: Duration) -> Reply {
        let mut r = Reply::new(200, "text/event-stream; charset=utf-8", Vec::new());
        r.headers.push(("Cache-Control".into(), "no-cache".into()));
        for (event, data) in events {
            let mut text = String::new();
            if let Some(e) = event {
                text.push_str(&format!("event: {e}\n"));
            }
            text.push_str(&format!("data: {data}\n\n"));
            r.chunks.push((text.into_bytes(), every));
        }
        r
    }

    /// An OpenAI-style streamed chat completion (`stream: true`, as OpenAI, Groq and
    /// compatible servers send it): one `chat.completion.chunk` per piece of `pieces`, a last
    /// chunk with the usage and no choices (`stream_options.include_usage`), then `[DONE]`.
    pub fn openai_stream(
        model: &str,
        pieces: &[&str],
        prompt_tokens: u64,
        completion: u64,
        every: Duration,
    ) -> Reply {
        let chunk = |delta: Value, finish: Value| {
            json!({"id": "chatcmpl-test-1", "object": "chat.completion.chunk", "created": 1_700_000_000u64,
                   "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            .to_string()
        };
        let mut events = vec![(
            None,
            chunk(json!({"role": "assistant", "content": ""}), Value::Null),
        )];
        for p in pieces {
            events.push((None, chunk(json!({"content": p}), Value::Null)));
        }
        events.push((None, chunk(json!({}), json!("stop"))));
        events.push((
            None,
            json!({"id": "chatcmpl-test-1", "object": "chat.completion.chunk", "model": model, "choices": [],
                   "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
                             "total_tokens": prompt_tokens + completion}})
            .to_string(),
        ));
        events.push((None, "[DONE]".to_string()));
        Reply::sse(events, every)
    }

    /// An Anthropic streamed message (`stream: true`): `message_start` (with the input
    /// tokens), `content_block_start`, a `ping`, one `content_block_delta` per piece,
    /// `content_block_stop`, `message_delta` (with the output tokens), `message_stop`.
    pub fn anthropic_stream(
        model: &str,
        pieces: &[&str],
        input_tokens: u64,
        output: u64,
        every: Duration,
    ) -> Reply {
        let mut events = vec![
            (
                Some("message_start"),
                json!({"type": "message_start", "message": {
                "id": "msg_test_1", "type": "message", "role": "assistant", "model": model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": input_tokens, "output_tokens": 1}}})
                .to_string(),
            ),
            (
                Some("content_block_start"),
                json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "text", "text": ""}})
                .to_string(),
            ),
            (Some("ping"), json!({"type": "ping"}).to_string()),
        ];
        for p in pieces {
            events.push((
                Some("content_block_delta"),
                json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": p}})
                .to_string(),
            ));
        }
        events.push((
            Some("content_block_stop"),
            json!({"type": "content_block_stop", "index": 0}).to_string(),
        ));
        events.push((
            Some("message_delta"),
            json!({"type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": null},
            "usage": {"output_tokens": output}})
            .to_string(),
        ));
        events.push((
            Some("message_stop"),
            json!({"type": "message_stop"}).to_string(),
        ));
        Reply::sse(events, every)
    }

    pub fn json(status: u16, value: &Value) -> Reply {
        Reply::new(status, "application/json", value.to_string())
    }

    pub fn text(status: u16, text: &str) -> Reply {
        Reply::new(status, "text/plain; charset=utf-8", text)
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn delay(mut self, d: Duration) -> Reply {
        self.delay = d;
        self
    }

    /// Sends the whole answer, status line and headers included, one byte every `every`.
    pub fn trickle(mut self, every: Duration) -> Reply {
        self.trickle = Some(every);
        self
    }

    /// A redirect to `location` (a path on this server or a full URL).
    pub fn redirect(status: u16, location: &str) -> Reply {
        Reply::text(status, "moved").header("Location", location)
    }

    /// An OpenAI chat-completions answer (Groq and OpenAI-compatible servers answer the same).
    pub fn openai_chat(model: &str, content: &str, prompt_tokens: u64, completion: u64) -> Reply {
        Reply::json(
            200,
            &json!({
                "id": "chatcmpl-test-1",
                "object": "chat.completion",
                "created": 1_700_000_000u64,
                "model": model,
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop"
                }],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion,
                    "total_tokens": prompt_tokens + completion
                }
            }),
        )
    }

    /// An Anthropic messages answer.
    pub fn anthropic_message(model: &str, text: &str, input_tokens: u64, output: u64) -> Reply {
        Reply::json(
            200,
            &json!({
                "id": "msg_test_1",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn",
                "stop_sequence": null,
                "usage": {"input_tokens": input_tokens, "output_tokens": output}
            }),
        )
    }

    /// An OpenAI-style error body.
    pub fn openai_error(status: u16, message: &str) -> Reply {
        Reply::json(
            status,
            &json!({"error": {"message": message, "type": "server_error", "code": status}}),
        )
    }
}

/// One request the server received.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The request target as sent: path and query.
    pub target: String,
    /// Header names lowercased, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The body parsed as JSON, when it is JSON.
    pub json: Option<Value>,
    /// When the request line arrived.
    pub at: Instant,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The path without the query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// The decoded query pairs, in order.
    pub fn query(&self) -> Vec<(String, String)> {
        let Some((_, q)) = self.target.split_once('?') else {
            return Vec::new();
        };
        q.split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (percent_decode(k), percent_decode(v))
            })
            .collect()
    }

    /// The JSON body; panics with the raw body when it is not JSON.
    pub fn body_json(&self) -> &Value {
        self.json.as_ref().unwrap_or_else(|| {
            panic!(
                "request body is not JSON: {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// `application/x-www-form-urlencoded` decoding (`+` is a space).
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

type Handler = Box<dyn Fn(&Request) -> Reply + Send + Sync>;

struct State {
    queue: VecDeque<Reply>,
    requests: Vec<Request>,
}

/// The running server; it stops accepting when dropped.
pub struct Server {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl Server {
    /// A server whose answers come from the queue (see [`Server::push`]) and, once it is
    /// empty, from `handler`.
    pub fn start(handler: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> Server {
        Server::start_on(0, handler)
    }

    /// [`Server::start`] on a given port of 127.0.0.1 (0: an ephemeral one), e.g. one that a
    /// client was already told to use, for a server that comes up late.
    pub fn start_on(
        port: u16,
        handler: impl Fn(&Request) -> Reply + Send + Sync + 'static,
    ) -> Server {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("bind 127.0.0.1:{port}: {e}"));
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            queue: VecDeque::new(),
            requests: Vec::new(),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Arc<Handler> = Arc::new(Box::new(handler));
        let accept = {
            let state = state.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let state = state.clone();
                    let handler = handler.clone();
                    std::thread::spawn(move || serve(conn, &state, &handler));
                }
            })
        };
        Server {
            addr,
            state,
            stop,
            accept: Some(accept),
        }
    }

    /// A server that answers only from the queue, and 599 (a test bug) when it runs dry.
    pub fn scripted(replies: impl IntoIterator<Item = Reply>) -> Server {
        let s = Server::start(|r| {
            Reply::text(
                599,
                &format!("test server: no scripted reply left for {}", r.target),
            )
        });
        for r in replies {
            s.push(r);
        }
        s
    }

    /// Queues a reply for the next request.
    pub fn push(&self, reply: Reply) {
        self.state.lock().unwrap().queue.push_back(reply);
    }

    /// `http://127.0.0.1:PORT` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        self.state.lock().unwrap().requests.clone()
    }

    /// The one request received; panics (listing them) when there is not exactly one.
    pub fn only_request(&self) -> Request {
        let reqs = self.requests();
        assert_eq!(
            reqs.len(),
            1,
            "expected exactly one request, got {:?}",
            reqs.iter()
                .map(|r| format!("{} {}", r.method, r.target))
                .collect::<Vec<_>>()
        );
        reqs.into_iter().next().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

fn serve(conn: TcpStream, state: &Mutex<State>, handler: &Handler) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = conn.set_write_timeout(Some(Duration::from_secs(10)));
    let Some(req) = read_request(&conn) else {
        return;
    };
    let reply = {
        let mut st = state.lock().unwrap();
        st.requests.push(req.clone());
        st.queue.pop_front()
    };
    let reply = reply.unwrap_or_else(|| handler(&req));
    if !reply.delay.is_zero() {
        std::thread::sleep(reply.delay);
    }
    let _ = write_reply(&conn, &reply, req.method == "HEAD");
}

fn read_request(conn: &TcpStream) -> Option<Request> {
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let at = Instant::now();
    let mut parts = line.trim_end().splitn(3, ' ');
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let version = parts.next()?;
    if method.is_empty() || !version.starts_with("HTTP/1.") {
        return None;
    }
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end_matches(['\r', '\n']);
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    assert!(
        !headers
            .iter()
            .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked")),
        "the test server does not parse chunked request bodies"
    );
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).ok()?;
    let json = serde_json::from_slice(&body).ok();
    Some(Request {
        method,
        target,
        headers,
        body,
        json,
        at,
    })
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        307 => "Temporary Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// A streamed answer: chunked, each piece after its pause.
fn write_chunked(mut conn: &TcpStream, r: &Reply) -> std::io::Result<()> {
    let mut out = format!("HTTP/1.1 {} {}\r\n", r.status, reason(r.status));
    for (k, v) in &r.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
    conn.write_all(out.as_bytes())?;
    conn.flush()?;
    for (piece, pause) in &r.chunks {
        std::thread::sleep(*pause);
        conn.write_all(format!("{:x}\r\n", piece.len()).as_bytes())?;
        conn.write_all(piece)?;
        conn.write_all(b"\r\n")?;
        conn.flush()?;
    }
    conn.write_all(b"0\r\n\r\n")?;
    conn.flush()?;
    let _ = conn.shutdown(std::net::Shutdown::Write);
    Ok(())
}

fn write_reply(mut conn: &TcpStream, r: &Reply, head: bool) -> std::io::Result<()> {
    if !r.chunks.is_empty() && !head {
        return write_chunked(conn, r);
    }
    let mut out = format!("HTTP/1.1 {} {}\r\n", r.status, reason(r.status));
    for (k, v) in &r.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        r.body.len()
    ));
    let mut bytes = out.into_bytes();
    if !head {
        bytes.extend_from_slice(&r.body);
    }
    match r.trickle {
        Some(every) => {
            for b in bytes {
                conn.write_all(&[b])?;
                conn.flush()?;
                std::thread::sleep(every);
            }
        }
        None => conn.write_all(&bytes)?,
    }
    conn.flush()?;
    let _ = conn.shutdown(std::net::Shutdown::Write);
    Ok(())
}

/// A TCP port on 127.0.0.1 with nothing listening (bound, then released).
pub fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    port
}

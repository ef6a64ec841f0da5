//! `flowrun serve` under clients that misbehave or never stop: slow request heads (slowloris)
//! past the file-descriptor limit, idle connections, long idle streams, and a real `EventSource`
//! that reconnects after the end; a queue of large definitions; and a database another process
//! holds for writing.

use crate::serve::{quick, slow};
use crate::support::serve::{ServeOpts, World, node, npm_package};
use serde_json::{Value, json};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A slowloris: `n` connections that each send a request head one byte a second, reconnecting
/// when the server closes them. Stops when dropped (and after 90 s in any case).
struct Trickler {
    stop: Arc<AtomicBool>,
    connected: Arc<AtomicUsize>,
    closed_by_server: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Trickler {
    fn start(addr: &str, n: usize) -> Trickler {
        let stop = Arc::new(AtomicBool::new(false));
        let connected = Arc::new(AtomicUsize::new(0));
        let closed_by_server = Arc::new(AtomicUsize::new(0));
        let addr: std::net::SocketAddr = addr.parse().unwrap();
        let head = format!(
            "GET /api HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: {}\r\n\r\n",
            "z".repeat(200)
        )
        .into_bytes();
        let (s, c, k) = (stop.clone(), connected.clone(), closed_by_server.clone());
        let thread = std::thread::spawn(move || {
            let open = || TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok();
            let mut conns: Vec<(Option<TcpStream>, usize)> = Vec::new();
            for _ in 0..n {
                conns.push((open(), 0));
                c.fetch_add(1, Ordering::SeqCst);
            }
            let end = Instant::now() + Duration::from_secs(90);
            while !s.load(Ordering::SeqCst) && Instant::now() < end {
                for (conn, sent) in conns.iter_mut() {
                    let ok = match conn {
                        Some(stream) => stream.write_all(&head[*sent..*sent + 1]).is_ok(),
                        None => false,
                    };
                    if ok {
                        // Never the last byte: the head is never complete.
                        *sent = (*sent + 1) % (head.len() - 1);
                    } else {
                        if conn.is_some() {
                            k.fetch_add(1, Ordering::SeqCst);
                        }
                        *conn = open();
                        *sent = 0;
                    }
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        });
        Trickler {
            stop,
            connected,
            closed_by_server,
            thread: Some(thread),
        }
    }
}

impl Drop for Trickler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn trickling_connections_past_the_fd_limit_do_not_shut_out_the_user() {
    let w = World::new();
    // 256 file descriptors: the server caps itself at 256 - 32 - 8 * 2 = 208 connections.
    let s = w.serve_opts(ServeOpts {
        extra: &["--max-concurrent", "2"],
        nofile: Some(256),
        ..ServeOpts::default()
    });
    let attack = Trickler::start(&s.addr, 400);
    crate::support::wait_for("400 trickling connections", || {
        (attack.connected.load(Ordering::SeqCst) == 400).then_some(())
    });
    // A few rounds of trickling, so every slot the server has is taken.
    std::thread::sleep(Duration::from_secs(3));

    // The user's requests (with the token) answer at once; without the cap and the shedding
    // they would wait behind the attack, or never be accepted (EMFILE), for minutes.
    for i in 0..5 {
        let started = Instant::now();
        let r = s.get("/api");
        let took = started.elapsed();
        assert_eq!(r.status, 200, "request {i}: {}", r.text);
        eprintln!(
            "request {i} during the attack: {took:?} ({} connections closed by the server so far)",
            attack.closed_by_server.load(Ordering::SeqCst)
        );
        assert!(
            took < Duration::from_secs(8),
            "request {i} took {took:?} during the attack (the head timeout is 10 s); {}",
            s.stderr()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // An execution runs and its stream reads to the end during the attack as well.
    w.save("quick.json", &quick());
    let id = s.start(
        "/api/workflows/quick/executions",
        &json!({"trigger": {"n": 1}}),
    );
    let msgs = s.events(&id, None).read_to_end();
    assert_eq!(msgs.last().unwrap().event, "end");
    assert!(
        attack.closed_by_server.load(Ordering::SeqCst) > 0,
        "the server closed none of the trickling connections"
    );
    drop(attack);
    assert_eq!(s.get("/api").status, 200);
}

/// Reads from `stream` until the server closes it (EOF or reset), at most `max`; returns when.
fn wait_closed(
    stream: &mut TcpStream,
    max: Duration,
    mut tick: impl FnMut(&mut TcpStream),
) -> Duration {
    let started = Instant::now();
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return started.elapsed(),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return started.elapsed(),
        }
        assert!(started.elapsed() < max, "still open after {max:?}");
        tick(stream);
    }
}

#[test]
fn slow_heads_and_idle_connections_are_closed_after_10_s() {
    let w = World::new();
    let s = w.serve(&[]);
    let addr = s.addr.clone();
    // A head that trickles in a byte every half second: closed ~10 s after the connection
    // opened, however many bytes keep coming.
    let trickle = std::thread::spawn(move || {
        let mut c = TcpStream::connect(&addr).unwrap();
        let head = b"GET /api HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz\r\n";
        let mut i = 0;
        wait_closed(&mut c, Duration::from_secs(40), |c| {
            let _ = c.write_all(&head[i % head.len()..i % head.len() + 1]);
            i += 1;
        })
    });
    // A kept-alive connection that goes quiet after one request: closed too.
    let mut idle = TcpStream::connect(&s.addr).unwrap();
    idle.write_all(
        format!(
            "GET /api HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n\r\n",
            s.token
        )
        .as_bytes(),
    )
    .unwrap();
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    let idle_for = wait_closed(&mut idle, Duration::from_secs(40), |_| {});
    let trickled_for = trickle.join().unwrap();
    for (what, t) in [
        ("trickling head", trickled_for),
        ("idle connection", idle_for),
    ] {
        assert!(
            t >= Duration::from_secs(9) && t < Duration::from_secs(40),
            "{what} closed after {t:?}"
        );
    }
    assert_eq!(s.get("/api").status, 200);
}

#[test]
fn an_idle_stream_gets_a_heartbeat_within_10_s() {
    let w = World::new();
    w.save("slow.json", &slow());
    let s = w.serve(&[]);
    let id = s.start("/api/workflows/slow/executions", &json!({}));
    let mut sse = s.events(&id, None);
    let mut last_message = Instant::now();
    let gap = loop {
        let line = sse.next_line().expect("the stream stays open");
        if line.starts_with(':') {
            break last_message.elapsed();
        }
        if !line.is_empty() {
            last_message = Instant::now();
        }
    };
    // 10 s, with room for a busy machine; it was 15 s.
    assert!(
        gap < Duration::from_millis(13_500),
        "first heartbeat after {gap:?}"
    );
    let r = s.post(&format!("/api/executions/{id}/stop?wait=true"), &json!({}));
    assert_eq!(r.status, 200, "{}", r.text);
}

/// The `eventsource` npm package: a WHATWG-conformant `EventSource` that reconnects with
/// `Last-Event-ID` like a browser does.
const EVENTSOURCE: &str = "eventsource@3.0.7";

/// Follows one stream with a real `EventSource` until it is closed for good (or 25 s), and
/// prints what it saw as JSON.
const CLIENT: &str = r#"
const { EventSource } = require(process.env.EVENTSOURCE_DIR);
const [url, token] = process.argv.slice(2);
const seen = { opens: 0, kinds: [], ids: [], errors: [] };
const es = new EventSource(url, {
  fetch: (input, init) => fetch(input, { ...init, headers: { ...init.headers, Authorization: "Bearer " + token } }),
});
es.addEventListener("open", () => { seen.opens += 1; });
for (const kind of ["execution_start", "node_start", "node_end", "log", "execution_end", "end"]) {
  es.addEventListener(kind, (e) => { seen.kinds.push(kind); seen.ids.push(e.lastEventId); });
}
es.addEventListener("error", (e) => { seen.errors.push({ code: e.code === undefined ? null : e.code, readyState: es.readyState }); });
const started = Date.now();
const timer = setInterval(() => {
  if (es.readyState === EventSource.CLOSED || Date.now() - started > 25000) {
    clearInterval(timer);
    seen.readyState = es.readyState;
    seen.ms = Date.now() - started;
    es.close();
    console.log(JSON.stringify(seen));
  }
}, 50);
"#;

#[test]
fn a_real_event_source_stops_reconnecting_after_the_end() {
    let w = World::new();
    w.save("quick.json", &quick());
    let s = w.serve(&[]);
    let id = s.start(
        "/api/workflows/quick/executions",
        &json!({"trigger": {"n": 1}}),
    );
    s.wait_final(&id);
    let script = w.path("client.js");
    std::fs::write(&script, CLIENT).unwrap();
    let out = std::process::Command::new(node())
        .arg(&script)
        .arg(format!("{}/api/executions/{id}/events", s.url))
        .arg(&s.token)
        .env("EVENTSOURCE_DIR", npm_package(EVENTSOURCE))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "node: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"));
    // Everything once, through `end`…
    let kinds = seen["kinds"].as_array().unwrap();
    assert_eq!(kinds.first().unwrap(), "execution_start", "{seen}");
    assert_eq!(kinds.last().unwrap(), "end", "{seen}");
    assert_eq!(
        kinds.iter().filter(|k| *k == "execution_end").count(),
        1,
        "{seen}"
    );
    // …then one reconnect, with the last id, answered 204: closed for good (readyState 2), not
    // reconnecting every few seconds.
    assert_eq!(seen["opens"], 1, "{seen}");
    assert_eq!(seen["readyState"], 2, "{seen}");
    let errors = seen["errors"].as_array().unwrap();
    assert_eq!(errors.last().unwrap()["code"], 204, "{seen}");
    // The ids were 1..n, the last one `execution_end`'s seq: the reconnect sent it as
    // `Last-Event-ID` (without one the server answers 200 and replays everything).
    let ids: Vec<&str> = seen["ids"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i.as_str().filter(|i| !i.is_empty()))
        .collect();
    let n = w.events(&id).len();
    let expected: Vec<String> = (1..=n).map(|i| i.to_string()).collect();
    assert_eq!(ids, expected, "{seen}");
}

#[test]
fn serve_keeps_answering_while_another_process_holds_the_database() {
    let w = World::new();
    w.save(
        "later.json",
        &json!({
            "id": "later",
            "nodes": [
                {"id": "begin", "type": "code", "code": "return 1"},
                {"id": "wait", "type": "delay", "ms": 1500},
                {"id": "end", "type": "code", "code": "return 2"}
            ]
        }),
    );
    // On two CPUs, whatever this machine has: serve then runs one async worker.
    let s = w.serve_opts(ServeOpts {
        cpus: Some(2),
        ..ServeOpts::default()
    });
    // Two executions running, whose writes will wait for the store's lock or the database.
    let ids: Vec<String> = (0..2)
        .map(|_| s.start("/api/workflows/later/executions", &json!({"trigger": {}})))
        .collect();
    for id in &ids {
        s.wait_until(id, "begin recorded", |r| {
            r["nodes"].as_array().is_some_and(|ns| {
                ns.iter()
                    .any(|n| n["node_id"] == "begin" && n["status"] == "success")
            })
        });
    }
    // `GET /api` needs no store: it answers within 5 s, however long the database is held.
    let answers = |when: &str| {
        for i in 0..3 {
            let (tx, rx) = std::sync::mpsc::channel();
            let (url, token) = (s.url.clone(), s.token.clone());
            std::thread::spawn(move || {
                let r = ureq::get(format!("{url}/api"))
                    .header("Authorization", format!("Bearer {token}"))
                    .call()
                    .map(|mut r| r.body_mut().read_json::<Value>().unwrap());
                let _ = tx.send(r);
            });
            match rx.recv_timeout(Duration::from_secs(5)) {
                Ok(Ok(info)) => assert_eq!(
                    (&info["running"], &info["queued"]),
                    (&json!(2), &json!(0)),
                    "{when}: {info}"
                ),
                Ok(Err(e)) => panic!("GET /api {i} {when}: {e}"),
                Err(_) => panic!("GET /api {i} {when}: no answer in 5 s; {}", s.stderr()),
            }
        }
    };
    // Another process takes the database for writing. The executions' next writes, as their
    // delays end, wait for it (up to 30 s) in their tasks: one in SQLite's busy wait, the
    // other for the store's lock. Each gives its async worker's other tasks to another thread
    // first (serve has one worker, which otherwise slept).
    let holder = w.db_rw();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    answers("while the executions wait for the database");
    // A third is submitted: its row waits for the store, with the queue's lock held; the
    // counts are read without that lock.
    let third = {
        let (url, token) = (s.url.clone(), s.token.clone());
        std::thread::spawn(move || {
            ureq::post(format!("{url}/api/workflows/later/executions"))
                .header("Authorization", format!("Bearer {token}"))
                .send_json(json!({"trigger": {}}))
                .map(|mut r| r.body_mut().read_json::<Value>().unwrap())
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    answers("while a submission waits for the store");
    holder.execute_batch("ROLLBACK").unwrap();
    drop(holder);
    let third = third
        .join()
        .unwrap()
        .expect("the third execution is accepted");
    let ids = [ids, vec![third["id"].as_str().expect("an id").to_string()]].concat();

    // The executions' writes went through once the database was free: their records are whole.
    for id in &ids {
        let rec = s.wait_final(id);
        assert_eq!(rec["status"], "success", "{rec}");
        let ended: Vec<&str> = rec["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["status"] == "success")
            .map(|n| n["node_id"].as_str().unwrap())
            .collect();
        assert_eq!(ended, ["begin", "wait", "end"], "{rec}");
    }
}

fn rss_kib(pid: i32) -> u64 {
    crate::support::faults::status_field_kb(pid, "VmRSS").expect("the server's VmRSS")
}

#[test]
fn streams_whose_clients_do_not_read_hold_a_page_not_the_record() {
    let w = World::new();
    // ~8 MB of log events, stored by `flowrun run`: followed through the store.
    let wf = w.save(
        "loud.json",
        &json!({"id": "loud", "nodes": [
            {"id": "talk", "type": "code",
             "code": "for i in range(20000):\n    print('%05d ' % i + 'x' * 400)\nreturn {}"}]}),
    );
    let out = w.cli_ok(&["run", wf.to_str().unwrap(), "--json"]);
    let id = serde_json::from_str::<Value>(&out).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let s = w.serve(&[]);
    assert_eq!(s.get("/api/executions").status, 200);
    let before = rss_kib(s.pid());
    let head = format!(
        "GET /api/executions/{id}/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n\r\n",
        s.token
    );
    let mut clients = Vec::new();
    for _ in 0..30 {
        let mut c = TcpStream::connect(&s.addr).unwrap();
        c.write_all(head.as_bytes()).unwrap();
        clients.push(c); // never read
    }
    std::thread::sleep(Duration::from_secs(3));
    let t = Instant::now();
    assert_eq!(s.get("/api/executions").status, 200);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    let grew = rss_kib(s.pid()).saturating_sub(before);
    // Each stream had read the whole record (~9 MB) and held it: 30 of them took the server
    // past 250 MB. Now each holds a page and its buffer (~400 KB) besides the connection's.
    assert!(grew < 80 * 1024, "the server grew by {grew} KiB");
    // A client that reads gets every event, in order, to the end.
    drop(clients);
    let msgs = s.events(&id, None).read_to_end();
    let logs = msgs.iter().filter(|m| m.event == "log").count();
    assert!(logs >= 20000, "{logs} log events");
    assert_eq!(msgs.last().unwrap().event, "end");
}

/// A server keeps a running execution's every event for viewers that join late; once a loud
/// one has ended, the memory they took is given back (it stayed with the allocator: 13 MB ->
/// 112 MB for 160,000 lines, for as long as the server ran).
#[test]
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn memory_a_loud_execution_took_is_given_back_after_it() {
    let w = World::new();
    w.save(
        "loud.json",
        &json!({"id": "loud", "nodes": [
            {"id": "talk", "type": "code",
             "code": "for i in range(100000):\n    print('line %d of a long enough log' % i)\nreturn {}"}]}),
    );
    let s = w.serve(&[]);
    let before = rss_kib(s.pid());
    let r = s.post("/api/workflows/loud/executions?wait=true", &json!({}));
    assert_eq!(r.body["status"], "success", "{}", r.text);
    let peak = crate::support::faults::status_field_kb(s.pid(), "VmHWM").unwrap();
    assert!(
        peak > before + 25 * 1024,
        "not loud enough to show: {before} -> {peak} KiB"
    );
    // Given back a moment after the end (1 s), not at once: polled.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut now = rss_kib(s.pid());
    while now > before + 15 * 1024 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        now = rss_kib(s.pid());
    }
    assert!(
        now <= before + 15 * 1024,
        "the server still holds {now} KiB after a loud execution (before {before}, peak {peak})"
    );
}

/// Executions waiting to start hold their whole definitions: the queue takes at most 64 MiB of
/// them (and 10,000 executions), and refuses the next with `503 queue_full` rather than hold it
/// (40 queued 4 MB definitions took the server to 533 MB before). Room comes back as they go.
#[test]
fn the_queue_holds_a_bounded_share_of_definitions() {
    let w = World::new();
    w.save("slow.json", &slow());
    let s = w.serve(&["--max-concurrent", "1"]);
    let blocker = s.start("/api/workflows/slow/executions", &json!({}));
    let big = json!({"workflow": {"id": "big", "name": "N".repeat(9 << 20),
        "nodes": [{"id": "a", "type": "template", "template": "hi"}]}});
    let mut queued = Vec::new();
    for _ in 0..8 {
        let r = s.post("/api/executions", &big);
        if r.status != 202 {
            assert_eq!(r.status, 503, "{}", r.text);
            assert_eq!(r.body["error"], "queue_full", "{}", r.text);
            assert!(
                r.body["message"]
                    .as_str()
                    .unwrap()
                    .contains("7 executions wait")
            );
            break;
        }
        assert_eq!(r.body["status"], "queued", "{}", r.text);
        queued.push(r.body["id"].as_str().unwrap().to_string());
    }
    assert_eq!(
        queued.len(),
        7,
        "9 MiB each, held ~4 times while queued: seven fit in 256 MiB"
    );
    // A small one still fits, and a big one does once one of those is gone.
    let small = s.post("/api/workflows/slow/executions", &json!({}));
    assert_eq!(small.status, 202, "{}", small.text);
    let stopped = s.post(&format!("/api/executions/{}/stop", queued[0]), &json!({}));
    assert!(stopped.status < 300, "{}", stopped.text);
    assert_eq!(s.post("/api/executions", &big).status, 202);
    // What a request's `env` holds counts too; more of it than an exec takes is refused at once
    // (it failed each execution at its spawn).
    let env: serde_json::Map<String, Value> = (0..20)
        .map(|i| (format!("V{i}"), json!("a".repeat(120_000))))
        .collect();
    let r = s.post("/api/workflows/slow/executions", &json!({ "env": env }));
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(r.text.contains("KiB together"), "{}", r.text);
    let stopped = s.post(&format!("/api/executions/{blocker}/stop"), &json!({}));
    assert!(stopped.status < 300, "{}", stopped.text);
}

/// A store that cannot record an execution's end (a full disk): the record is never a success,
/// and the server keeps answering. (Whether the end itself is written depends on how full the
/// database and its WAL are when it comes: a row left `running` so is ended by a stop, below.)
#[test]
fn an_execution_on_a_full_disk_is_never_a_success_and_serve_keeps_answering() {
    let w = World::new();
    // 3,000 log lines of 1 KiB: more than a database limited to 1 MiB can hold.
    w.save(
        "chatty.json",
        &json!({ "id": "chatty", "nodes": [{ "id": "chatty", "type": "code",
            "code": "for i in range(3000):\n    print(i, 'z' * 1000)\nreturn 'done'" }] }),
    );
    let s = w.serve_opts(ServeOpts {
        fsize: Some(1 << 20),
        ignored: &[libc::SIGXFSZ],
        ..ServeOpts::default()
    });
    let id = s.start("/api/workflows/chatty/executions", &json!({"trigger": {}}));
    let status = || s.get(&format!("/api/executions/{id}")).body["status"].clone();
    // Its run takes well under a second; its end has a few to be written, if it can be.
    let deadline = Instant::now() + Duration::from_secs(5);
    while status() == "running" && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_ne!(status(), "success");
    assert_eq!(s.get("/api").status, 200);
}

/// A row this server ran whose end the store did not take stays `running`, and no recovery
/// ends it (its runner, the server, is alive): a stop of it ends it (it waited for a restart).
#[test]
fn a_stop_ends_a_row_the_server_ran_whose_end_the_store_did_not_take() {
    let w = World::new();
    w.save("quick.json", &quick());
    let s = w.serve(&[]);
    let r = s.post(
        "/api/workflows/quick/executions?wait=true",
        &json!({"trigger": {"n": 1}}),
    );
    assert_eq!(r.body["status"], "success", "{}", r.text);
    let id = r.body["id"].as_str().unwrap().to_string();
    // As a failed write of its end leaves it (its runner: this server's pid and start time).
    rusqlite::Connection::open(w.db_path())
        .unwrap()
        .execute(
            "UPDATE executions SET status = 'running', finished_at = NULL WHERE id = ?1",
            [&id],
        )
        .unwrap();
    assert_eq!(
        s.get(&format!("/api/executions/{id}")).body["status"],
        "running"
    );
    let r = s.post(&format!("/api/executions/{id}/stop"), &json!({}));
    assert!(r.status < 500, "{}", r.text);
    let record = s.wait_final(&id);
    assert_eq!(record["status"], "cancelled", "{record}");
}

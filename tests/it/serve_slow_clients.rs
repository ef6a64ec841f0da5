//! Clients of the event streams that stop reading: what they hold of the server is bounded —
//! a stream of an execution that has ended lets them go, and the server-wide stream's messages
//! are small whatever the executions hold. And a request whose body comes late.

use crate::support::serve::{Message, World};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::FromRawFd;
use std::time::{Duration, Instant};

/// A connection to 127.0.0.1:`port` whose receive buffer is 4 KiB (set before it connects, so
/// the window stays small): a client that stops reading has the server's data wait at once.
fn small_window(port: u16) -> TcpStream {
    // SAFETY: a socket we create, configure and hand to a TcpStream, which owns it.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0);
        let size: libc::c_int = 4096;
        let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            len,
        );
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_be_bytes([127, 0, 0, 1]).to_be(),
            },
            sin_zero: [0; 8],
        };
        let at = (&addr as *const libc::sockaddr_in).cast::<libc::sockaddr>();
        let n = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        assert_eq!(libc::connect(fd, at, n), 0, "connect");
        TcpStream::from_raw_fd(fd)
    }
}

/// A stalled viewer of an execution that ends is let go after `LET_GO` (10 s without taking
/// anything after the end): its stream ends
/// without `end`, and a reconnection with its `Last-Event-ID` is served the rest from the store.
/// Waiting on held the execution's whole in-memory record (every event) for as long as the
/// client did not read: ~6 MB a stalled viewer here.
#[test]
fn a_stalled_viewer_of_an_ended_execution_is_let_go() {
    let w = World::new();
    let s = w.serve(&[]);
    let wf = json!({"id": "loud", "nodes": [{"id": "talk", "type": "code",
        "code": "import time\ntime.sleep(1.5)\nfor i in range(15000):\n    print('%05d ' % i + 'x' * 500)\nreturn {}"}]});
    let id = s.start("/api/executions", &json!({ "workflow": wf }));
    // Followed live (a queued execution's viewer reads the store, a page at a time).
    s.wait_until(&id, "running", |r| r["status"] == "running");
    let mut c = small_window(s.port());
    let head = format!(
        "GET /api/executions/{id}/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n\r\n",
        s.token
    );
    c.write_all(head.as_bytes()).unwrap();
    let ended = s.wait_final(&id);
    assert_eq!(ended["status"], "success", "{ended}");
    let since_end = Instant::now();
    // Not reading: the server gives up on this client once it has taken nothing for 10 s since
    // the end (the connection's buffers take a little more for a few seconds).
    std::thread::sleep(Duration::from_secs(25));
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut got = Vec::new();
    let read = c.read_to_end(&mut got);
    assert!(
        read.is_ok(),
        "the stream was not ended {:?} after the execution: {read:?}",
        since_end.elapsed()
    );
    let text = String::from_utf8_lossy(&got);
    assert!(!text.contains("event: end"), "the whole stream came");
    let last: u64 = text
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .filter_map(|n| n.trim().parse().ok())
        .max()
        .expect("some events came first");
    // Reconnecting where it stopped: the rest, from the store, to the end.
    let rest: Vec<Message> = s.events(&id, Some(last)).read_to_end();
    assert_eq!(rest.last().unwrap().event, "end");
    let logs = |ms: &[Message]| ms.iter().filter(|m| m.event == "log").count();
    let seen = text.matches("event: log").count();
    assert!(seen < 15000, "{seen} log events before the stream ended");
    assert!(seen + logs(&rest) >= 15000, "{seen} + {}", logs(&rest));
}

/// `GET /api/events` carries each execution's summary with every text cut to 1,000 characters:
/// a workflow named with megabytes (or a long traceback) made each message that large, and a
/// client that did not read held 1,280 of them (the channel's 1,024 and its own 256).
#[test]
fn the_server_wide_stream_carries_short_texts_whatever_an_execution_holds() {
    let w = World::new();
    let s = w.serve(&[]);
    let mut feed = s.sse("/api/events", None);
    let name = "N".repeat(300_000);
    let wf = json!({"id": "named", "name": name,
        "nodes": [{"id": "a", "type": "template", "template": "hi"}]});
    let id = s.start("/api/executions", &json!({ "workflow": wf }));
    s.wait_final(&id);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut kinds = Vec::new();
    while kinds.len() < 2 {
        assert!(Instant::now() < deadline, "{kinds:?}");
        let m = feed.next_message().expect("the stream goes on");
        let v: Value = serde_json::from_str(&m.data).unwrap();
        if v["id"] != id.as_str() {
            continue;
        }
        let shown = v["workflow_name"].as_str().unwrap();
        assert_eq!(
            shown.chars().count(),
            1001,
            "{} bytes of data",
            m.data.len()
        );
        assert!(shown.ends_with('…') && shown.starts_with("NNN"));
        assert!(m.data.len() < 4096, "{} bytes", m.data.len());
        kinds.push(m.event);
    }
    assert_eq!(kinds, ["execution_start", "execution_end"]);
    // The list itself has the name in full.
    let listed = s.get("/api/executions");
    assert_eq!(listed.body["executions"][0]["workflow_name"], json!(name));
}

/// A request whose body arrives after its head is answered once the body is in, on a connection
/// that then serves the next request, whatever the endpoint does with the body — takes none
/// (stop, pause), or refuses the query before taking it: answered before it, the connection was
/// closed under the client, whose next request failed ("Peer disconnected", twice in the suite).
#[test]
fn a_body_that_comes_late_leaves_the_connection_usable() {
    let w = World::new();
    let s = w.serve(&[]);
    let mut c = TcpStream::connect(("127.0.0.1", s.port())).unwrap();
    c.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    for (action, status) in [
        ("POST /api/executions/ffffffffffffffff/stop", "404"),
        ("POST /api/executions/ffffffffffffffff/pause", "404"),
        ("GET /api/executions/ffffffffffffffff?foo=1", "400"),
        ("PUT /api/workflows/late?foo=1", "400"),
        ("POST /api/validate?foo=1", "400"),
    ] {
        let head = format!(
            "{action} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n",
            s.token
        );
        c.write_all(head.as_bytes()).unwrap();
        let mut buf = [0u8; 4096];
        let early = c.read(&mut buf);
        assert!(
            early.is_err(),
            "{action}: answered before its body: {:?}",
            early.map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
        );
        c.write_all(b"{}").unwrap();
        let mut answer = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !String::from_utf8_lossy(&answer).contains("}") && Instant::now() < deadline {
            if let Ok(n) = c.read(&mut buf) {
                assert!(n > 0, "{action}: the connection was closed");
                answer.extend_from_slice(&buf[..n]);
            }
        }
        let text = String::from_utf8_lossy(&answer);
        assert!(
            text.starts_with(&format!("HTTP/1.1 {status}")),
            "{action}: {text}"
        );
        assert!(
            !text.to_ascii_lowercase().contains("connection: close"),
            "{text}"
        );
    }
}

/// A request refused before its body is read — not the user's (a wrong token, a foreign origin,
/// a Host that is not a loopback name) — is answered at once, body unread, with `Connection:
/// close`, and the connection is closed: a client that sent its next request down it instead
/// ("Peer disconnected" after a 403, seen as a flaky `serve_page` test) is told not to.
#[test]
fn a_request_refused_before_its_body_is_read_closes_the_connection_and_says_so() {
    let w = World::new();
    let s = w.serve(&[]);
    for (extra, status) in [
        ("Authorization: Bearer wrong\r\n".to_string(), "401"),
        (
            format!(
                "Authorization: Bearer {}\r\nOrigin: http://evil.example\r\n",
                s.token
            ),
            "403",
        ),
    ] {
        let mut c = TcpStream::connect(("127.0.0.1", s.port())).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // The head only: the body (2 bytes) never comes.
        let head = format!(
            "POST /api/validate HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}Content-Type: application/json\r\nContent-Length: 2\r\n\r\n"
        );
        c.write_all(head.as_bytes()).unwrap();
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match c.read(&mut buf) {
                Ok(0) => break, // closed, as it said
                Ok(n) => answer.extend_from_slice(&buf[..n]),
                Err(e) => panic!(
                    "{status}: not closed ({e}): {}",
                    String::from_utf8_lossy(&answer)
                ),
            }
        }
        let text = String::from_utf8_lossy(&answer).to_ascii_lowercase();
        assert!(text.starts_with(&format!("http/1.1 {status}")), "{text}");
        assert!(text.contains("connection: close"), "{text}");
    }
}

/// A long execution's events are not all held in the server's memory (a `for_each` over a long
/// list is two events an item): a viewer that joins late reads the first ones from the store,
/// then the rest live, every event once and in order.
#[test]
fn a_late_viewer_of_a_long_execution_gets_every_event_in_order() {
    let w = World::new();
    w.save(
        "many.json",
        &json!({"id": "many", "nodes": [
            {"id": "each", "type": "template", "template": "{{ item }}",
             "for_each": "{{ trigger.items }}"},
            {"id": "wait", "type": "delay", "ms": 5000, "after": ["each"]}]}),
    );
    let s = w.serve(&[]);
    let items: Vec<u32> = (0..60_000).collect();
    let id = s.start(
        "/api/workflows/many/executions",
        &json!({"trigger": {"items": items}}),
    );
    // Joins once the items have ended (their events are stored), while the execution runs.
    crate::support::wait_for("the items' events", || {
        let stored: i64 = w
            .db()
            .query_row(
                "SELECT count(*) FROM events WHERE execution_id = ?1",
                [&id],
                |r| r.get(0),
            )
            .ok()?;
        (stored > 120_001).then_some(())
    });
    let msgs = s.events(&id, None).read_to_end();
    let seqs: Vec<u64> = msgs
        .iter()
        .filter(|m| m.event != "end")
        .map(|m| m.seq())
        .collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    let item_ends = msgs
        .iter()
        .filter(|m| m.event == "node_end" && m.json().get("item").is_some())
        .count();
    assert_eq!(item_ends, 60_000);
    assert_eq!(msgs.last().unwrap().event, "end");
}

//! `llm` nodes with `stream: true` through `flowrun serve`: the runtime reads the provider's
//! server-sent events (OpenAI-style and Anthropic, from the stand-in in
//! `support/llm_server.rs`), the viewers get `node_delta` events while the answer arrives — at
//! most ~20 a second, redacted even when a secret is split across pieces, not numbered and not
//! stored — and the stored output is the whole answer.

use crate::support::llm_server::{Reply, Server as Llm};
use crate::support::serve::{Message, World};
use serde_json::{Value, json};
use std::time::Duration;

const KEY: &str = "sk-stream-test-9c4e1b7a2f";

fn workflow(provider: &str, base: &str) -> Value {
    json!({
        "id": "streamy",
        "connections": {"prov": {"env": "OPENAI_API_KEY"}},
        "nodes": [
            {"id": "ask", "name": "Ask the model", "type": "llm", "provider": provider, "model": "m-1",
             "connection": "prov", "prompt": "Say something", "stream": true, "base_url": base},
            {"id": "after", "type": "template", "template": "{{ nodes.ask.output.content }}!"}
        ]
    })
}

/// Starts the workflow with the key as a per-request secret and reads its whole stream.
fn run(w: &World, wf: Value) -> (String, Vec<Message>) {
    let s = w.serve(&[]);
    let id = s.start(
        "/api/executions",
        &json!({"workflow": wf, "secrets": {"OPENAI_API_KEY": KEY}}),
    );
    let msgs = s.events(&id, None).read_to_end();
    (id, msgs)
}

fn deltas(msgs: &[Message]) -> Vec<Value> {
    msgs.iter()
        .filter(|m| m.event == "node_delta")
        .map(Message::json)
        .collect()
}

/// The numbered events (all but deltas and `end`) are 1..N without gaps.
fn check_numbering(msgs: &[Message]) {
    let ids: Vec<u64> = msgs
        .iter()
        .filter(|m| m.event != "node_delta" && m.event != "end")
        .map(Message::seq)
        .collect();
    assert_eq!(ids, (1..=ids.len() as u64).collect::<Vec<_>>());
    for m in msgs.iter().filter(|m| m.event == "node_delta") {
        assert_eq!(m.id, None, "deltas are not numbered: {m:?}");
    }
}

fn check_record(w: &World, id: &str, answer: &str, tokens: (u64, u64)) {
    let out = w.cli_ok(&["show", id, "--json"]);
    let rec: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rec["status"], "success", "{rec}");
    let ask = rec["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node_id"] == "ask")
        .unwrap();
    assert_eq!(ask["output"]["content"], answer);
    assert_eq!(ask["output"]["model"], "m-1");
    assert_eq!(ask["output"]["usage"]["input_tokens"], tokens.0);
    assert_eq!(ask["output"]["usage"]["output_tokens"], tokens.1);
    assert_eq!(rec["output"]["text"], format!("{answer}!"));
    // Deltas are for viewers only: none is stored.
    let events = w.events(id);
    assert!(!events.is_empty());
    assert!(events.iter().all(|e| e.kind != "node_delta"));
}

#[test]
fn openai_style_stream_reaches_viewers_as_it_arrives() {
    let w = World::new();
    let pieces = ["The ", "answer ", "is ", "forty", "-two", "."];
    let llm = Llm::scripted([Reply::openai_stream(
        "m-1",
        &pieces,
        11,
        6,
        Duration::from_millis(120),
    )]);
    let (id, msgs) = run(&w, workflow("openai", &llm.url("")));
    check_numbering(&msgs);
    let d = deltas(&msgs);
    let text: String = d.iter().map(|e| e["text"].as_str().unwrap()).collect();
    assert_eq!(text, pieces.concat());
    assert!(
        d.len() >= 3,
        "the text came in several deltas as it arrived: {d:?}"
    );
    for e in &d {
        assert_eq!(e["node"], "ask");
        assert_eq!(e["execution_id"], id.as_str());
        assert!(e.get("seq").is_none(), "{e}");
    }
    // Deltas come between the node's start and its end.
    let kinds: Vec<&str> = msgs.iter().map(|m| m.event.as_str()).collect();
    let start = msgs
        .iter()
        .position(|m| m.event == "node_start" && m.json()["node"] == "ask")
        .unwrap();
    let end = msgs
        .iter()
        .position(|m| m.event == "node_end" && m.json()["node"] == "ask")
        .unwrap();
    let first = kinds.iter().position(|k| *k == "node_delta").unwrap();
    let last = kinds.iter().rposition(|k| *k == "node_delta").unwrap();
    assert!(start < first && last < end, "{kinds:?}");
    // The request asked for a stream with usage.
    let body = llm.only_request().body_json().clone();
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"]["include_usage"], true);
    check_record(&w, &id, &pieces.concat(), (11, 6));
}

#[test]
fn anthropic_stream_with_usage_in_message_start_and_delta() {
    let w = World::new();
    let pieces = ["Hello", " from", " Claude", "."];
    let llm = Llm::scripted([Reply::anthropic_stream(
        "m-1",
        &pieces,
        25,
        9,
        Duration::from_millis(80),
    )]);
    let (id, msgs) = run(&w, workflow("anthropic", &llm.url("")));
    check_numbering(&msgs);
    let text: String = deltas(&msgs)
        .iter()
        .map(|e| e["text"].as_str().unwrap())
        .collect();
    assert_eq!(text, pieces.concat());
    assert_eq!(llm.only_request().body_json()["stream"], true);
    check_record(&w, &id, &pieces.concat(), (25, 9));
}

#[test]
fn a_fast_stream_is_coalesced_and_a_split_secret_never_shows() {
    let w = World::new();
    // 200 tiny pieces with no pause, the key among them cut in three.
    let mut pieces: Vec<String> = (0..200).map(|i| format!("w{i} ")).collect();
    pieces.insert(100, KEY[..5].to_string());
    pieces.insert(101, KEY[5..12].to_string());
    pieces.insert(102, format!("{} ", &KEY[12..]));
    let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
    let llm = Llm::scripted([Reply::openai_stream(
        "m-1",
        &refs,
        1,
        2,
        Duration::from_millis(2),
    )]);
    let (_id, msgs) = run(&w, workflow("openai", &llm.url("")));
    let d = deltas(&msgs);
    // ~0.4 s of arrivals at most ~20 a second: far fewer deltas than pieces.
    assert!(
        d.len() < 60,
        "{} deltas for {} pieces",
        d.len(),
        pieces.len()
    );
    let text: String = d.iter().map(|e| e["text"].as_str().unwrap()).collect();
    assert_eq!(
        text,
        pieces.concat().replace(KEY, "[REDACTED:OPENAI_API_KEY]")
    );
    for m in &msgs {
        for part in [&KEY[..5], &KEY[5..12], &KEY[12..]] {
            assert!(
                !m.data.contains(part),
                "a piece of the key went out: {}",
                m.data
            );
        }
    }
    assert!(
        !w.db_bytes().windows(KEY.len()).any(|b| b == KEY.as_bytes()),
        "the key is in the store"
    );
}

#[test]
fn a_viewer_that_joins_mid_stream_gets_the_text_so_far_first() {
    let w = World::new();
    let pieces = ["one ", "two ", "three ", "four ", "five ", "six ", "seven"];
    let llm = Llm::scripted([Reply::openai_stream(
        "m-1",
        &pieces,
        1,
        7,
        Duration::from_millis(300),
    )]);
    let s = w.serve(&[]);
    let id = s.start(
        "/api/executions",
        &json!({"workflow": workflow("openai", &llm.url("")), "secrets": {"OPENAI_API_KEY": KEY}}),
    );
    // Join once some text has gone out.
    let mut first = s.events(&id, None);
    let mut seen = String::new();
    while !seen.contains("two") {
        let m = first
            .next_message()
            .expect("a delta with \"two\" before the end");
        if m.event == "node_delta" {
            seen.push_str(m.json()["text"].as_str().unwrap());
        }
    }
    let late = s.events(&id, None).read_to_end();
    let d = deltas(&late);
    assert_eq!(d[0]["so_far"], true, "{d:?}");
    assert!(
        d[0]["text"].as_str().unwrap().starts_with("one two"),
        "{d:?}"
    );
    // So-far text, then the rest appended, gives the whole answer.
    let mut text = String::new();
    for e in &d {
        if e["so_far"] == true {
            text.clear();
        }
        text.push_str(e["text"].as_str().unwrap());
    }
    assert_eq!(text, pieces.concat());
}

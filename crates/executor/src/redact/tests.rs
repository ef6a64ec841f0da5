use super::*;
use serde_json::json;

const KEY: &str = "sk-test-7f3a9c1e5b";
const MARK: &str = "[REDACTED:KEY]";

fn redactor(secret: &str) -> Redactor {
    Redactor::new(&[("KEY".into(), secret.into())])
}

#[test]
fn redacts_raw_and_json_escaped() {
    let r = redactor("s3cr\"et");
    assert_eq!(r.text("a s3cr\"et b".into()), "a [REDACTED:KEY] b");
    assert_eq!(
        r.text(r#"{"x":"s3cr\"et"}"#.into()),
        r#"{"x":"[REDACTED:KEY]"}"#
    );
    // JSON text inside a JSON string (a payload preview): escaped twice.
    let inner = json!({ "x": "s3cr\"et" }).to_string();
    let outer = json!({ "preview": inner }).to_string();
    assert!(outer.contains(r#"s3cr\\\"et"#), "{outer}");
    assert_eq!(r.text(outer), r#"{"preview":"{\"x\":\"[REDACTED:KEY]\"}"}"#);
    // As Python's json.dumps writes non-ASCII by default.
    let r = redactor("clé-secrète-1");
    assert_eq!(
        r.text(r#"{"k": "cl\u00e9-secr\u00e8te-1"}"#.into()),
        r#"{"k": "[REDACTED:KEY]"}"#
    );
    assert_eq!(r.text("nothing".into()), "nothing");
}

#[test]
fn values_are_redacted_and_the_structure_is_not() {
    let r = redactor("e");
    let mut v = json!({
        "event": "node_end", "exit_code": 0, "text": "hello e", "e": 1,
        "list": ["e", true, null, 2.5], "usage": { "input_tokens": 3 }
    });
    r.value(&mut v);
    let m = "[REDACTED:KEY]";
    assert_eq!(
        v,
        json!({
            "event": format!("nod{m}_{m}nd"), "exit_code": 0, "text": format!("h{m}llo {m}"),
            "e": 1, "list": [m, true, null, 2.5], "usage": { "input_tokens": 3 }
        })
    );
    // Keys and numbers: only a long secret, equal or inside.
    let r = Redactor::new(&[
        ("ONE".into(), "1".into()),
        ("N".into(), "12345678901".into()),
    ]);
    let mut v = json!({ "a": 1, "b": 10, "c": 12345678901u64, "d": 9123456789012u64, "1": "1",
                        "k12345678901": 0 });
    r.value(&mut v);
    assert_eq!(
        v,
        json!({ "a": 1, "b": 10, "c": "[REDACTED:N]", "d": "9[REDACTED:N]2", "1": "[REDACTED:ONE]",
                "k[REDACTED:N]": 0 })
    );
}

#[test]
fn errors_keep_their_type() {
    let r = redactor("e");
    let mut e = ErrorInfo::new("ValueError", "bad e");
    e.traceback = Some("line e".into());
    e.node = Some("node".into());
    r.error(&mut e);
    assert_eq!(e.kind, "ValueError");
    assert_eq!(e.node.as_deref(), Some("node"));
    assert_eq!(e.message, "bad [REDACTED:KEY]");
    assert_eq!(
        e.traceback.as_deref(),
        Some("lin[REDACTED:KEY] [REDACTED:KEY]")
    );
}

#[test]
fn encoded_forms_are_redacted() {
    // Expected encodings as Python computes them (base64, urllib.parse).
    let r = redactor("p@ss w/rd?~>>>xy");
    for form in [
        "cEBzcyB3L3JkP34+Pj54eQ==",
        "cEBzcyB3L3JkP34+Pj54eQ",
        "cEBzcyB3L3JkP34-Pj54eQ==",
        "cEBzcyB3L3JkP34-Pj54eQ",
        "7040737320772f72643f7e3e3e3e7879",
        "7040737320772F72643F7E3E3E3E7879",
        "p%40ss%20w/rd%3F~%3E%3E%3Exy",
        "p%40ss%20w%2Frd%3F~%3E%3E%3Exy",
        "p%40ss+w%2Frd%3F~%3E%3E%3Exy",
    ] {
        assert_eq!(
            r.string(format!("a {form} b")),
            "a [REDACTED:KEY] b",
            "{form}"
        );
        assert_eq!(
            r.text(format!("a {form} b")),
            "a [REDACTED:KEY] b",
            "{form}"
        );
    }
    // Too short to be told from ordinary text: "ok" is b2s=, 6f6b in hex.
    let r = redactor("ok");
    assert_eq!(r.string("b2s= 6f6b".into()), "b2s= 6f6b");
}

/// Whether any `window` consecutive bytes of `secret` can be read back from base64 `text`, at
/// any of the four character offsets.
fn base64_reveals(text: &str, secret: &[u8], window: usize) -> bool {
    (0..4).any(|off| {
        let chars: Vec<u8> = text.bytes().skip(off).collect();
        let mut bytes = Vec::new();
        for group in chars.chunks(4) {
            if let Ok(b) = STANDARD.decode(group) {
                bytes.extend(b);
            } else {
                bytes.push(0);
            }
        }
        secret
            .windows(window)
            .any(|w| bytes.windows(window).any(|b| b == w))
    })
}

#[test]
fn base64_inside_a_longer_text_is_redacted_at_every_alignment() {
    let secret = "p@ss w/rd?~>>>xy";
    let r = redactor(secret);
    for prefix in ["", "B", "Be", "Bea", "Bearer ", "user:"] {
        for suffix in ["", "!", "!!", "!!!"] {
            let data = format!("{prefix}{secret}{suffix}");
            let text = STANDARD.encode(&data);
            assert!(base64_reveals(&text, secret.as_bytes(), 3), "{text}");
            let out = r.string(format!("Basic {text}"));
            assert!(out.contains(MARK), "{out}");
            let left = out.replace("[REDACTED:KEY]", "");
            assert!(
                !base64_reveals(&left, secret.as_bytes(), 3),
                "{data:?}: {text} -> {out}"
            );
        }
    }
}

#[test]
fn a_secret_cut_at_the_end_of_a_string_or_line() {
    let r = redactor(KEY);
    assert_eq!(r.string("aaa sk-test-7f3a".into()), "aaa [REDACTED:KEY]");
    // Fewer than MIN_TAIL bytes are kept as they are; an unrelated string is untouched.
    assert_eq!(r.string("sk-".into()), "sk-");
    let mut c = Carry::default();
    assert_eq!(
        r.line("aaa sk-test-7f3a9c1e".into(), true, &mut c),
        "aaa [REDACTED:KEY]"
    );
    assert!(c.0.is_empty(), "a cut line continues nothing");
    assert_eq!(r.line("5b".into(), false, &mut c), "5b");
    assert_eq!(
        r.line(format!("{KEY} and sk-t"), true, &mut c),
        "[REDACTED:KEY] and [REDACTED:KEY]"
    );
    assert_eq!(r.line("plain line".into(), false, &mut c), "plain line");
    assert!(Redactor::new(&[]).is_empty());
    assert_eq!(Redactor::new(&[]).line("x".into(), true, &mut c), "x");
}

#[test]
fn a_secret_split_over_two_lines_is_redacted_at_every_split() {
    let r = redactor(KEY);
    for i in 1..KEY.len() {
        let (a, b) = KEY.split_at(i);
        let mut c = Carry::default();
        let one = r.line(format!("key: {a}"), false, &mut c);
        let two = r.line(format!("{b} (end)"), false, &mut c);
        assert!(
            two.starts_with(MARK) && two.ends_with(" (end)"),
            "{i}: {two}"
        );
        if i >= MIN_TAIL {
            assert_eq!(one, format!("key: {MARK}"), "{i}");
        } else {
            assert_eq!(one, format!("key: {a}"), "{i}: too short to tell alone");
        }
        // The same inside one string value.
        let s = r.string(format!("key: {a}\n{b} (end)"));
        assert!(!s.contains(b) && s.ends_with(" (end)"), "{i}: {s}");
        // Another stream's line in between is another carry: stdout and stderr are separate.
        let mut other = Carry::default();
        let mut c = Carry::default();
        r.line(format!("key: {a}"), false, &mut c);
        assert_eq!(r.line("x".into(), false, &mut other), "x");
        assert!(r.line(b.into(), false, &mut c).starts_with(MARK));
    }
    // CRLF line ends.
    assert_eq!(
        r.string(format!("key: {}\r\n{}\r\n", &KEY[..9], &KEY[9..])),
        format!("key: {MARK}\r\n{MARK}\r\n")
    );
    // A line that merely starts like the end of a secret, after an unrelated line, is kept.
    let mut c = Carry::default();
    r.line("nothing here".into(), false, &mut c);
    assert_eq!(r.line("5b and more".into(), false, &mut c), "5b and more");
}

#[test]
fn a_multi_line_secret_printed_line_by_line() {
    let pem = "-----BEGIN KEY-----\nMIIBVgIBADANBgkq\nhkiG9w0BAQEFAASC\n-----END KEY-----";
    let r = redactor(pem);
    let mut c = Carry::default();
    let printed = format!("key:\n{pem}\nafter");
    let out: Vec<String> = printed
        .split('\n')
        .map(|l| r.line(l.into(), false, &mut c))
        .collect();
    assert_eq!(out, ["key:", MARK, MARK, MARK, MARK, "after"]);
    assert_eq!(r.string(printed), format!("key:\n{MARK}\nafter"));
}

/// Streams `pieces` the way the executor sends `node_delta` text: release what may go, redact
/// it, keep the rest for the next piece.
fn stream(r: &Redactor, pieces: &[&str]) -> Vec<String> {
    let mut pending = String::new();
    let mut out = Vec::new();
    for (i, p) in pieces.iter().enumerate() {
        pending.push_str(p);
        let n = r.releasable(&pending, i + 1 == pieces.len());
        let sent: String = pending.drain(..n).collect();
        out.push(r.text(sent));
    }
    out
}

#[test]
fn a_secret_split_across_streamed_pieces_is_redacted_whole() {
    let r = redactor(KEY);
    // Split at every place: the secret never goes out, not even in part.
    for cut1 in 1..KEY.len() {
        for cut2 in cut1 + 1..KEY.len() {
            let pieces = [
                &format!("the key is {}", &KEY[..cut1])[..],
                &KEY[cut1..cut2],
                &format!("{} and more text after it", &KEY[cut2..]),
                " end",
            ];
            let sent = stream(&r, &pieces);
            let all = sent.concat();
            assert_eq!(all, format!("the key is {MARK} and more text after it end"));
            for s in &sent {
                assert!(!s.contains(&KEY[..3]) || s.contains(MARK), "{sent:?}");
            }
        }
    }
    // Without secrets, everything goes at once.
    let none = Redactor::default();
    assert_eq!(stream(&none, &["ab", "cd"]), ["ab", "cd"]);
    // Text that could not begin a secret is held back only a few bytes.
    let sent = stream(&r, &["x".repeat(500).as_str(), "y"]);
    assert_eq!(sent[0].len(), 500 - (MIN_TAIL - 1));
    // A short secret (no prefix search for it) split in two is still caught.
    let short = redactor("abc");
    let sent = stream(&short, &["xx a", "bc yy", "z"]);
    assert_eq!(sent.concat(), "xx [REDACTED:KEY] yyz");
    assert!(!sent[0].contains('a'), "{sent:?}");
}

#[test]
fn a_long_secret_is_redacted_split_at_any_point() {
    // A service account's JSON key is a few kilobytes: its forms (base64, hex, percent-encoded)
    // are longer. Splits at a few places, and a repetitive value (long borders in its prefix
    // function).
    let secret: String = (0..3000)
        .map(|i| ["ab", "漢", "x", "\"", "\\"][i % 5])
        .collect::<String>()
        + "end-of-key";
    for value in [secret.clone(), "ab".repeat(2000)] {
        let r = redactor(&value);
        for i in [MIN_TAIL, 100, value.len() / 2, value.len() - 1] {
            let mut i = i;
            while !value.is_char_boundary(i) {
                i += 1;
            }
            let (a, b) = value.split_at(i);
            let mut c = Carry::default();
            assert_eq!(
                r.line(format!("k: {a}"), false, &mut c),
                format!("k: {MARK}")
            );
            assert!(r.line(format!("{b} end"), false, &mut c).starts_with(MARK));
        }
        let hex: String = value.bytes().map(|b| format!("{b:02x}")).collect();
        assert_eq!(r.string(format!("[{hex}]")), format!("[{MARK}]"));
    }
}

#[test]
fn a_secret_as_python_repr_writes_it_is_redacted() {
    // What Python itself prints: `repr` of the secret alone and inside a dict, per secret.
    let secrets = [
        "it's a \"key\"",
        "it's-no-double",
        "back\\slash\ttab\nnew\rret",
        "ctl\u{1}\u{7f}\u{85}nbsp\u{a0}shy\u{ad}",
        "ls\u{2028}zw\u{200b}bom\u{feff}pua\u{e000}",
        "ok-é-ß-😀-漢字",
        "tag\u{e0041}-pua\u{f0000}",
    ];
    let input = serde_json::to_string(&secrets).unwrap();
    let mut child = std::process::Command::new("python3")
        .args([
            "-I",
            "-S",
            "-c",
            "import json,sys\nfor s in json.load(sys.stdin):\n    print(repr(s)); print({'k': s})",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2 * secrets.len(), "{text}");
    for (i, secret) in secrets.iter().enumerate() {
        let r = redactor(secret);
        let (alone, in_dict) = (lines[2 * i], lines[2 * i + 1]);
        let quote = &alone[..1];
        assert_eq!(
            r.text(alone.to_string()),
            format!("{quote}[REDACTED:KEY]{quote}"),
            "{secret:?} printed as {alone}"
        );
        assert_eq!(
            r.text(in_dict.to_string()),
            format!("{{'k': {quote}[REDACTED:KEY]{quote}}}"),
            "{secret:?} printed as {in_dict}"
        );
    }
}

//! What a person sees: `run` on a real pseudo-terminal (its controlling terminal, as in a
//! shell), the bytes it writes replayed on a terminal emulator (vt100) of a given width; and
//! `show`, `logs`, `history` printing what a workflow controls.

use crate::support::faults::{Fx, WATCHDOG};
use crate::support::*;
use serde_json::json;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a workflow controls, with escape sequences that would clear the screen, retitle the
/// window and reverse text if they reached the terminal raw.
const EVIL: &str = "\u{1b}[2J\u{1b}]0;pwned\u{7}\u{202e}";

/// `s` as a Python string literal (a JSON string is one).
fn py(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// A `run` on a pseudo-terminal `cols` wide: everything it wrote, and the screen at the end.
struct PtyRun {
    raw: Vec<u8>,
    screen: vt100::Parser,
}

/// Runs `flowrun ARGS` on a new pty `cols` columns wide; when `interrupt_at` appears in what it
/// wrote, types Ctrl-C.
fn run_on_pty(fx: &Fx, args: &[&str], cols: u16, interrupt_at: Option<&str>) -> PtyRun {
    let size = nix::pty::Winsize {
        ws_row: 40,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&size), None).expect("openpty");
    let slave = pty.slave.as_raw_fd();
    let mut cmd = fx.command();
    // Colours as a user's terminal gets them.
    cmd.env_remove("NO_COLOR");
    cmd.args(args)
        .stdin(pty.slave.try_clone().unwrap())
        .stdout(pty.slave.try_clone().unwrap())
        .stderr(pty.slave.try_clone().unwrap());
    // SAFETY: setsid and ioctl are async-signal-safe; nothing is allocated.
    unsafe {
        cmd.pre_exec(move || {
            libc::setsid();
            if libc::ioctl(slave, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("spawn flowrun on a pty");
    drop(cmd);
    drop(pty.slave);
    let raw = Arc::new(Mutex::new(Vec::new()));
    let mut master = std::fs::File::from(pty.master);
    let mut reader = master.try_clone().unwrap();
    let sink = raw.clone();
    let reading = std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        // Ends with EIO once no process holds the pty's other side.
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    let started = Instant::now();
    let mut interrupted = interrupt_at.is_none();
    loop {
        if !interrupted {
            let seen = String::from_utf8_lossy(&raw.lock().unwrap()).into_owned();
            if seen.contains(interrupt_at.unwrap()) {
                master.write_all(b"\x03").unwrap();
                interrupted = true;
            }
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if started.elapsed() > WATCHDOG {
            let _ = child.kill();
            panic!(
                "flowrun on a pty did not end: {}",
                String::from_utf8_lossy(&raw.lock().unwrap())
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    reading.join().unwrap();
    let raw = std::mem::take(&mut *raw.lock().unwrap());
    let mut screen = vt100::Parser::new(40, cols, 0);
    screen.process(&raw);
    PtyRun { raw, screen }
}

impl PtyRun {
    fn rows(&self) -> Vec<String> {
        let cols = self.screen.screen().size().1;
        self.screen.screen().rows(0, cols).collect()
    }
}

fn slow_workflow(fx: &Fx) -> std::path::PathBuf {
    fx.workflow(
        "slow",
        &json!({ "id": "slow", "name": format!("Slow {EVIL} name"), "nodes": [
            { "id": "first", "type": "code",
              "code": "import time\ntime.sleep(3)\nreturn 'x' * 300" },
            { "id": "second", "type": "code", "after": ["first"],
              "code": format!("import time\nprint({})\nprint('second is running', flush=True)\ntime.sleep(60)\nreturn 1", py(&format!("log {EVIL} line"))) }
        ]}),
    )
}

#[test]
fn ctrl_c_on_a_narrow_terminal_leaves_a_clean_screen() {
    let fx = Fx::new();
    let wf = slow_workflow(&fx);
    let run = run_on_pty(
        &fx,
        &["run", wf.to_str().unwrap()],
        50,
        Some("second is running"),
    );
    let rows = run.rows();
    let screen = rows.join("\n");
    // No spinner line is left behind after Ctrl-C (it said "step 2 of 2").
    assert!(!screen.contains("step "), "a stale spinner line:\n{screen}");
    assert!(
        // Stopped, not failed: its own mark.
        rows.iter().any(|r| r.starts_with("■ second")),
        "no line for the stopped node:\n{screen}"
    );
    assert!(screen.contains("cancelled in"), "{screen}");
    // The 300-character preview was cut to the width, not wrapped onto the next lines.
    let first = rows
        .iter()
        .position(|r| r.starts_with("✓ first"))
        .expect(&screen);
    assert!(rows[first].ends_with('…'), "{:?}", rows[first]);
    assert!(
        !rows[first + 1].contains("xxx"),
        "the preview wrapped:\n{screen}"
    );
    // What the workflow controls is shown, not obeyed: the screen was not cleared (the title is
    // still there), the escapes are visible text, the window title is untouched.
    assert!(
        screen.contains("Slow \\x1b[2J\\x1b]0;pwned\\x07\\u{202e} name (slow)"),
        "{screen}"
    );
    assert!(screen.contains("log \\x1b[2J"), "{screen}");
    let raw_text = String::from_utf8_lossy(&run.raw);
    for sent in ["\u{1b}[2J", "\u{1b}]0;pwned", "\u{202e}"] {
        assert!(!raw_text.contains(sent), "{sent:?} reached the terminal");
    }
    // The spinner shows the running node's time (not the execution's: 'first' took 3 s), and
    // which step it is.
    let raw = String::from_utf8_lossy(&run.raw);
    let frame = raw
        .split('\r')
        .rfind(|f| f.contains("second code · step 2 of 2"))
        .unwrap_or_else(|| panic!("no spinner frame for 'second': {raw:?}"));
    let shown = console_strip(frame);
    let secs: u64 = shown
        .trim_end()
        .rsplit(' ')
        .next()
        .and_then(|t| t.strip_suffix('s'))
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no elapsed time in {shown:?}"));
    assert!(
        secs < 3,
        "the spinner shows the execution's time: {shown:?}"
    );
}

fn console_strip(s: &str) -> String {
    let mut p = vt100::Parser::new(1, 200, 0);
    p.process(s.as_bytes());
    p.screen().contents()
}

#[test]
fn a_successful_run_on_a_terminal_shows_its_output_indented() {
    let fx = Fx::new();
    let run = run_on_pty(
        &fx,
        &[
            "run",
            example("hello.json").to_str().unwrap(),
            "--input",
            r#"{"name": "Ada"}"#,
        ],
        80,
        None,
    );
    let screen = run.rows().join("\n");
    assert!(
        screen.contains("{\n  \"message\": \"Hello, Ada!\","),
        "{screen}"
    );
    assert!(!screen.contains("step "), "{screen}");
}

/// A log line's level, when it is not `info`, is shown beside it — on `run`'s terminal and in
/// `logs` — coloured only on a terminal: it was in `--json` and `--events jsonl` alone, so an
/// error logged by a code node read like any other line.
#[test]
fn log_levels_are_shown_live_and_in_logs() {
    let fx = Fx::new();
    let wf = fx.workflow(
        "levels",
        &json!({ "id": "levels", "nodes": [
            { "id": "talk", "type": "code",
              "code": "log('all fine')\nlog('disk almost full', level='warn')\nlog('lost a file', level='error')\nlog('details', level='debug')\nreturn 1" }
        ]}),
    );
    let run = run_on_pty(&fx, &["run", wf.to_str().unwrap()], 80, None);
    let screen = run.rows().join("\n");
    for line in [
        "  talk │ all fine",
        "  talk warning │ disk almost full",
        "  talk error │ lost a file",
        "  talk debug │ details",
    ] {
        assert!(
            screen.contains(line),
            "no {line:?} on the screen:\n{screen}"
        );
    }
    let colored = |raw: &[u8]| {
        let raw = String::from_utf8_lossy(raw);
        raw.contains("\u{1b}[33mwarning\u{1b}[0m") && raw.contains("\u{1b}[31merror\u{1b}[0m")
    };
    assert!(colored(&run.raw), "{:?}", String::from_utf8_lossy(&run.raw));
    let id = fx.only_execution_id();
    let out = fx.cmd(["logs", &id]);
    assert_success(&out, "logs");
    let text = stdout(&out);
    let ends: Vec<&str> = text
        .lines()
        .map(|l| l.split_once(" talk ").map_or(l, |(_, end)| end))
        .collect();
    assert_eq!(
        ends,
        [
            "[log] | all fine",
            "[log] warning | disk almost full",
            "[log] error | lost a file",
            "[log] debug | details"
        ],
        "{text}"
    );
    assert!(!text.contains('\u{1b}'), "colours on a pipe: {text:?}");
    let logs = run_on_pty(&fx, &["logs", &id], 100, None);
    assert!(
        colored(&logs.raw),
        "{:?}",
        String::from_utf8_lossy(&logs.raw)
    );
}

#[test]
fn show_logs_and_history_neutralise_what_the_workflow_wrote() {
    let env = Env::new();
    let wf = env.write_workflow(
        "evil.json",
        &json!({ "id": "evil", "name": format!("Evil {EVIL}"), "nodes": [
            { "id": "n", "type": "code",
              "code": format!("print({})\nraise ValueError({})", py(&format!("log {EVIL}")), py(&format!("error {EVIL}"))) }
        ]}),
    );
    let out = env.run(&wf, &json!({ "t": EVIL }).to_string(), &[]);
    assert_code(&out, 1, "run");
    let id = env.only_execution_id();
    for args in [
        vec!["show", id.as_str()],
        vec!["logs", id.as_str()],
        vec!["history"],
    ] {
        let out = env.cmd(&args);
        assert_success(&out, &format!("{args:?}"));
        let text = stdout(&out);
        for c in ['\u{1b}', '\u{7}', '\u{202e}'] {
            assert!(!text.contains(c), "{args:?} wrote {c:?} raw:\n{text}");
        }
    }
    let shown = stdout(&env.cmd(["show", &id]));
    assert!(
        shown.contains("Evil \\x1b[2J\\x1b]0;pwned\\x07\\u{202e}"),
        "{shown}"
    );
    assert!(shown.contains("error \\x1b[2J"), "{shown}");
    let logs = stdout(&env.cmd(["logs", &id]));
    assert!(logs.contains("log \\x1b[2J"), "{logs}");
    // stderr of `run` too.
    assert!(!stderr(&out).contains('\u{1b}'), "{}", stderr(&out));
    // JSON stays exact: show --json gives back the very text.
    let record = env.show_json(&id);
    assert_eq!(record["workflow_name"], json!(format!("Evil {EVIL}")));
    let raw = stdout(&env.cmd(["show", &id, "--json"]));
    assert!(
        !raw.contains('\u{1b}') && !raw.contains('\u{202e}'),
        "{raw}"
    );
}

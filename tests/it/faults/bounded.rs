//! Bounded resources: output floods, huge lines, a 100 MB trigger, non-UTF-8 output, `max_memory`.

use crate::support::faults::*;
use serde_json::json;
use std::time::Duration;

// ---------------------------------------------------------------------------------------------
// Bounded resources
// ---------------------------------------------------------------------------------------------

const MIB: u64 = 1 << 20;
/// Generous bound on the runner's peak RSS whatever the child prints.
const MAX_RUNNER_RSS_KB: u64 = 100 * 1024;

#[test]
fn stdout_flood_and_a_huge_line_keep_memory_and_logs_bounded() {
    let fx = Fx::new();
    // 1 GiB of 1 KiB lines, then one 200 MiB line without a newline (1 MiB writes), plus 16 MiB
    // on stderr; then the node returns and a later node uses its output.
    let wf = fx.workflow(
        "flood",
        &json!({ "id": "flood", "nodes": [
            code_node("flood", r#"
                out = sys.stdout.buffer
                lines = (b'y' * 1023 + b'\n') * 1024
                for _ in range(1024):
                    out.write(lines)
                sys.stderr.buffer.write((b'e' * 1023 + b'\n') * (16 * 1024))
                chunk = b'x' * (1 << 20)
                for _ in range(200):
                    out.write(chunk)
                out.flush()
                return 'flooded'
            "#),
            { "id": "after", "type": "code", "code": "return nodes['flood']['output'] + '!'" },
        ]}),
    );
    let cap = 1_000_000u64;
    let out = fx
        .spawn_run(
            &wf,
            &trigger(&fx),
            &["--timeout-ms", "60000", "--max-log-bytes", &cap.to_string()],
        )
        .wait(WATCHDOG);
    out.assert_code(0);
    let total = (1024 + 16 + 200) * MIB;
    let secs = out.elapsed.as_secs_f64();
    eprintln!(
        "flood: {} MiB in {secs:.2} s = {:.0} MiB/s; runner peak RSS {} kB",
        total / MIB,
        (total / MIB) as f64 / secs,
        out.peak_hwm_kb
    );
    assert!(out.peak_hwm_kb > 0, "RSS was never sampled");
    assert!(
        out.peak_hwm_kb < MAX_RUNNER_RSS_KB,
        "runner peak RSS {} kB",
        out.peak_hwm_kb
    );

    let id = fx.only_execution_id();
    let e = fx.execution(&id);
    assert_eq!(e.status, "success", "{e:?}");
    assert_eq!(e.output, Some(json!("flooded!")));
    assert_eq!(fx.node(&id, "flood").status, "success");
    assert_eq!(fx.node(&id, "after").status, "success");
    assert!(e.log_bytes as u64 <= cap, "{e:?}");
    assert!(e.log_bytes_cut as u64 > 1024 * MIB, "{e:?}");
    let stored: u64 = fx.log_lines(&id).iter().map(|(_, l)| l.len() as u64).sum();
    assert!(stored <= cap + 64 * 1024, "stored {stored} log bytes");
    fx.assert_clean(&id);
}

#[test]
fn an_endless_flood_of_empty_lines_is_cut_and_times_out_on_time() {
    let fx = Fx::new();
    // Empty lines have no bytes of their own: they must still use up the log budget, or every
    // one becomes a stored row and the runner falls ever further behind (and past its timeout).
    let wf = fx.workflow(
        "newlines",
        &json!({ "id": "newlines", "nodes": [
            code_node("newlines", r#"
                note(os.getpid())
                chunk = b'\n' * (1 << 20)
                while True:
                    sys.stdout.buffer.write(chunk)
            "#),
        ]}),
    );
    let cap = 200_000u64;
    let out = fx
        .spawn_run(
            &wf,
            &trigger(&fx),
            &["--timeout-ms", "2000", "--max-log-bytes", &cap.to_string()],
        )
        .wait(WATCHDOG);
    out.assert_code(124);
    eprintln!(
        "empty lines: timed out after {:.2} s; runner peak RSS {} kB",
        out.elapsed.as_secs_f64(),
        out.peak_hwm_kb
    );
    assert!(out.elapsed < Duration::from_secs(8), "{out}");
    assert!(out.peak_hwm_kb < MAX_RUNNER_RSS_KB, "{}", out.peak_hwm_kb);
    let id = fx.only_execution_id();
    let e = fx.execution(&id);
    assert_eq!(e.status, "timeout", "{e:?}");
    assert_eq!(fx.node(&id, "newlines").status, "timeout");
    let kept = fx.log_lines(&id).len() as u64;
    assert!(kept > 0, "no lines kept");
    assert!(
        kept <= cap / 64 + 1,
        "{kept} log lines stored under a {cap} byte budget"
    );
    assert!(e.log_bytes as u64 <= cap, "{e:?}");
    assert!(e.log_bytes_cut > 1_000_000, "{e:?}");
    // The warning says what was kept in the terms `show` uses, and why that is under the cap.
    let lines = fx.log_lines(&id);
    let warning = format!(
        "flowrun: log limit reached (--max-log-bytes {cap}, which counts 64 bytes a line besides its text): {} bytes of {} lines kept;",
        e.log_bytes,
        lines.len() - 1
    );
    assert!(
        lines.iter().any(|(_, l)| l.starts_with(&warning)),
        "{warning}: {:?}",
        lines.last()
    );
    assert_pids_gone(&pids(&fx), e.pgid.unwrap());
    fx.assert_clean(&id);
}

#[test]
fn a_huge_unterminated_line_on_fd1_does_not_swallow_the_node_end() {
    let fx = Fx::new();
    // Written straight to fd 1, as a subprocess would: the runtime cannot know the line is
    // unfinished, so its node_end marker follows 200 MiB of output on the same line.
    let wf = fx.workflow(
        "rawline",
        &json!({ "id": "rawline", "nodes": [
            code_node("raw", r#"
                chunk = b'x' * (1 << 20)
                for _ in range(200):
                    os.write(1, chunk)
                return 'raw'
            "#),
            code_node("after", r#"
                os.write(1, b'partial output without newline')
                return nodes['raw']['output'] + '!'
            "#),
        ]}),
    );
    let out = fx
        .spawn_run(&wf, &trigger(&fx), &["--max-log-bytes", "100000"])
        .wait(WATCHDOG);
    out.assert_code(0);
    eprintln!(
        "raw line: 200 MiB in {:.2} s; runner peak RSS {} kB",
        out.elapsed.as_secs_f64(),
        out.peak_hwm_kb
    );
    assert!(out.peak_hwm_kb < MAX_RUNNER_RSS_KB, "{}", out.peak_hwm_kb);
    let id = fx.only_execution_id();
    let e = fx.execution(&id);
    assert_eq!(e.status, "success", "{e:?}");
    assert_eq!(e.output, Some(json!("raw!")));
    let nodes = fx.nodes(&id);
    assert_eq!(fx.node(&id, "raw").status, "success", "{nodes:?}");
    assert_eq!(fx.node(&id, "raw").output, Some(json!("raw")));
    assert_eq!(fx.node(&id, "after").status, "success", "{nodes:?}");
    assert!(e.log_bytes_cut as u64 >= 200 * MIB - 100_000, "{e:?}");
    fx.assert_clean(&id);
}

#[test]
fn a_100_mb_trigger_on_stdin_does_not_deadlock() {
    let fx = Fx::new();
    let wf = fx.workflow(
        "big-input",
        &json!({ "id": "big-input", "nodes": [
            { "id": "len", "type": "code", "code": "return len(trigger['blob'])" },
        ]}),
    );
    let n = 100_000_000usize;
    let input = fx.path("input.json");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&input).unwrap());
        f.write_all(b"{\"blob\": \"").unwrap();
        let chunk = vec![b'a'; 1 << 20];
        let mut left = n;
        while left > 0 {
            let k = left.min(chunk.len());
            f.write_all(&chunk[..k]).unwrap();
            left -= k;
        }
        f.write_all(b"\"}").unwrap();
    }
    let out = fx
        .spawn(&[
            "run",
            wf.to_str().unwrap(),
            "--input-file",
            input.to_str().unwrap(),
            "--timeout-ms",
            "60000",
        ])
        .wait(WATCHDOG);
    out.assert_code(0);
    eprintln!("100 MB trigger: {:.2} s", out.elapsed.as_secs_f64());
    let id = fx.only_execution_id();
    let e = fx.execution(&id);
    assert_eq!(e.status, "success", "{e:?}");
    assert_eq!(e.output, Some(json!(n)));
    fx.assert_clean(&id);
}

#[test]
fn non_utf8_output_is_recorded_lossily() {
    let fx = Fx::new();
    let wf = fx.workflow(
        "bytes",
        &json!({ "id": "bytes", "nodes": [
            code_node("bytes", r#"
                sys.stdout.buffer.write(b'out \xff\xfe end\n')
                sys.stdout.flush()
                sys.stderr.buffer.write(b'err \xc3\x28 end\n')
                sys.stderr.flush()
                os.write(1, b'raw \x80\n')
                return 'ok'
            "#),
        ]}),
    );
    let out = fx.run(&wf, &trigger(&fx), &[]);
    out.assert_code(0);
    let id = fx.only_execution_id();
    assert_eq!(fx.execution(&id).status, "success");
    let logs = fx.log_lines(&id);
    for want in [
        ("stdout", "out \u{fffd}\u{fffd} end"),
        ("stderr", "err \u{fffd}( end"),
        ("stdout", "raw \u{fffd}"),
    ] {
        assert!(
            logs.iter().any(|(s, l)| s == want.0 && l == want.1),
            "no {want:?} in {logs:?}"
        );
    }
    let shown = fx.flowrun(&["logs", &id]);
    shown.assert_code(0);
    assert!(shown.stdout.contains("out \u{fffd}\u{fffd} end"), "{shown}");
    fx.assert_clean(&id);
}

#[test]
fn max_memory_reports_memory_error_with_the_limit() {
    let fx = Fx::new();
    let wf = fx.workflow(
        "hog",
        &json!({ "id": "hog", "nodes": [
            { "id": "hog", "type": "code", "code": "block = bytearray(1 << 30)\nreturn len(block)" },
        ]}),
    );
    let out = fx.run(&wf, &json!({}), &["--max-memory-mb", "200"]);
    out.assert_code(1);
    let id = fx.only_execution_id();
    let e = fx.execution(&id);
    assert_eq!(e.status, "error", "{e:?}");
    let hog = fx.node(&id, "hog");
    assert_eq!(hog.status, "error");
    let err = hog.error.unwrap();
    assert_eq!(err["type"], "MemoryError", "{err}");
    let msg = err["message"].as_str().unwrap();
    assert!(
        msg.contains("200 MiB") && msg.contains("--max-memory-mb"),
        "the message does not explain the limit: {msg}"
    );
    assert!(out.stderr.contains("MemoryError"), "{out}");
    fx.assert_clean(&id);

    // Code that does not handle a failed allocation crashes instead: the error still points at
    // the limit.
    let crash = fx.workflow(
        "crash",
        &json!({ "id": "crash", "nodes": [
            { "id": "crash", "type": "code",
              "code": "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)" },
        ]}),
    );
    fx.run(&crash, &json!({}), &["--max-memory-mb", "200"])
        .assert_code(1);
    let id = fx.ids().pop().unwrap();
    let e = fx.execution(&id);
    assert_eq!(e.status, "error");
    assert_eq!(e.exit.as_deref(), Some("killed by SIGSEGV"));
    let msg = e.error_message();
    assert!(
        msg.contains("killed by SIGSEGV")
            && msg.contains("200 MiB")
            && msg.contains("--max-memory-mb"),
        "{msg}"
    );
    assert_eq!(fx.node(&id, "crash").status, "error");
    fx.assert_clean(&id);
}

//! `flowrun test -j N`: how many cases run at once. The next cases are prepared while one runs
//! (crates/app/src/testing/run.rs), but no more than N executions ever run, and a case's row is
//! written only as it starts.

use crate::support::*;
use crate::workflow_tests::{case, test_json};
use serde_json::json;

/// With `-j 1` each case's execution starts after the one before it has ended: in the record
/// (no row written ahead of its start), in what its node did, and in the duration the report
/// gives (which leaves out the time a prepared case waited for its turn).
#[test]
fn one_job_runs_the_cases_one_after_another() {
    let env = Env::new();
    env.write_workflow(
        "nap.json",
        &json!({"id": "nap", "nodes": [{"id": "nap", "type": "code",
            "code": "import time\nt0 = time.time()\ntime.sleep(1.5)\nreturn {'from': t0, 'to': time.time()}"}]}),
    );
    env.write_file(
        "nap.test.yaml",
        "workflow: ./nap.json\ncases:\n  - name: one\n  - name: two\n  - name: three\n",
    );
    let (code, report, err) = test_json(&env, &["nap.test.yaml", "-j", "1"], &[]);
    assert_eq!(code, 0, "{err}\n{report:#}");
    let ids = env.execution_ids();
    assert_eq!(ids.len(), 3, "{ids:?}");
    let rows: Vec<_> = ids.iter().map(|id| env.execution(id)).collect();
    for pair in rows.windows(2) {
        let ended = pair[0].finished_at.expect("ended");
        assert!(
            pair[1].started_at >= ended,
            "execution {} started at {} before {} ended at {ended}",
            pair[1].id,
            pair[1].started_at,
            pair[0].id
        );
        let (a, b) = (
            pair[0].output.as_ref().unwrap(),
            pair[1].output.as_ref().unwrap(),
        );
        assert!(b["from"].as_f64() >= a["to"].as_f64(), "{a} then {b}");
    }
    for (name, row) in ["one", "two", "three"].iter().zip(&rows) {
        let took = case(&report, name)["attempts"][0]["duration_ms"]
            .as_f64()
            .unwrap();
        // Its execution, and its preparing and checking (milliseconds; hundreds on a busy
        // machine); waiting for the case before it would add that one's 1.5 s.
        let ran = (row.finished_at.expect("ended") - row.started_at) as f64;
        assert!(
            took >= ran - 1.0 && took < ran + 1000.0,
            "case {name} took {took} ms, its execution {ran} ms\n{report:#}"
        );
    }
}

/// With `-j 1` the cases start in their order, whatever each takes to prepare: a case may count
/// on what the one before it left (here a file), as the escape tests' `look` case does. The
/// first workflow has 400 nodes and takes far longer to check and generate than the second; a
/// skipped case and one its schema refuses, which run nothing, come between them.
#[test]
fn one_job_starts_the_cases_in_their_order_however_long_each_takes_to_prepare() {
    let env = Env::new();
    let mut nodes = vec![json!({"id": "first", "type": "code",
        "code": "open('mark', 'w').write('first')\nreturn 1"})];
    for i in 0..400 {
        nodes.push(json!({"id": format!("n{i}"), "type": "set", "fields": {"i": i}}));
    }
    let inputs = json!({"type": "object", "properties": {"n": {"type": "integer"}}});
    env.write_workflow(
        "big.json",
        &json!({"id": "big", "inputs": inputs, "nodes": nodes}),
    );
    env.write_workflow(
        "small.json",
        &json!({"id": "small", "nodes": [{"id": "second", "type": "code",
            "code": "return open('mark').read()"}]}),
    );
    env.write_file(
        "a_big.test.yaml",
        "workflow: ./big.json\ncases:\n  - name: big\n  - name: skipped\n    skip: true\n  - name: refused\n    trigger: { n: x }\n    refused: { contains: \"n\" }\n",
    );
    env.write_file(
        "b_small.test.yaml",
        "workflow: ./small.json\ncases:\n  - name: small\n    expect: { output: first }\n",
    );
    let (code, report, err) = test_json(&env, &[".", "-j", "1"], &[]);
    assert_eq!(code, 0, "{err}\n{report:#}");
    let ids = env.execution_ids();
    let workflows: Vec<String> = ids.iter().map(|id| env.execution(id).workflow_id).collect();
    assert_eq!(workflows, ["big", "small"]);
}

/// With `--retries`, a failed case runs again right after it failed, as it did before cases
/// were prepared ahead, not after the case prepared meanwhile.
#[test]
fn a_retry_runs_before_the_next_case() {
    let env = Env::new();
    env.write_workflow(
        "flaky.json",
        &json!({"id": "flaky", "nodes": [{"id": "n", "type": "code",
            "code": "import os\nopen('order', 'a').write('flaky\\n')\nif not os.path.exists('tried'):\n    open('tried', 'w').close()\n    raise RuntimeError('first try')\nreturn 1"}]}),
    );
    env.write_workflow(
        "next.json",
        &json!({"id": "next", "nodes": [{"id": "n", "type": "code",
            "code": "open('order', 'a').write('next\\n')\nreturn 1"}]}),
    );
    env.write_file(
        "a.test.yaml",
        "workflow: ./flaky.json\ncases:\n  - name: flaky\n",
    );
    env.write_file(
        "b.test.yaml",
        "workflow: ./next.json\ncases:\n  - name: next\n",
    );
    let (code, report, err) = test_json(&env, &[".", "-j", "1", "--retries", "1"], &[]);
    assert_eq!(code, 0, "{err}\n{report:#}");
    assert_eq!(case(&report, "flaky")["verdict"], "flaky", "{report:#}");
    let order = std::fs::read_to_string(env.path("order")).unwrap();
    assert_eq!(order, "flaky\nflaky\nnext\n");
}

/// Ctrl-C while cases wait for their turn: each is reported skipped (interrupted), also one
/// that could not have started (here an environment variable no process can be given), which
/// is not prepared once the interruption has come; the case that was running is interrupted.
#[test]
fn cases_waiting_their_turn_at_ctrl_c_are_skipped_whatever_they_are() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let env = Env::new();
    let (mut child, _) = start_slow_suite(
        &env,
        "  - name: first\n  - name: second\n  - name: bad env\n    env: { \"A=B\": x }\n  - name: fourth\n",
        &["--json"],
    );
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let mut text = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut text).unwrap();
    let report: serde_json::Value = serde_json::from_str(&text).expect("a JSON report");
    assert_eq!(
        report["summary"],
        "0 passed, 0 failed, 1 interrupted, 3 skipped; interrupted by Ctrl-C (SIGINT)",
        "{report:#}"
    );
    assert_eq!(
        case(&report, "first")["verdict"],
        "interrupted",
        "{report:#}"
    );
    assert_eq!(case(&report, "first")["attempts"][0]["status"], "cancelled");
    assert_eq!(report["totals"]["interrupted"], 1, "{report:#}");
    for name in ["second", "bad env", "fourth"] {
        assert_eq!(case(&report, name)["verdict"], "skipped", "{report:#}");
        assert_eq!(case(&report, name)["skip_reason"], "interrupted");
    }
}

/// `flowrun test slow.test.yaml -j 1 ARGS…`, its stdout piped, on a workflow whose one node
/// waits 30 s, with `cases` (the YAML under `cases:`); returns once the first case's node runs,
/// with the child and that execution's id.
pub(crate) fn start_slow_suite(
    env: &Env,
    cases: &str,
    args: &[&str],
) -> (std::process::Child, String) {
    env.write_workflow(
        "slow.json",
        &json!({"id": "slow", "nodes": [{"id": "wait", "type": "delay", "ms": 30000}]}),
    );
    env.write_file(
        "slow.test.yaml",
        &format!("workflow: ./slow.json\ncases:\n{cases}"),
    );
    let child = env
        .command()
        .args(["test", "slow.test.yaml", "-j", "1"])
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let id = wait_for("the first case to run", || {
        let id = env.try_execution_ids()?.first()?.clone();
        (env.try_node(&id, "wait")?.status == "running").then_some(id)
    });
    (child, id)
}

/// `flowrun stop ID` of a case's execution is answered by the suite's runner, as one of `flowrun
/// run` is: the execution ends stopped by request (not forced after the runner "did not
/// respond"), that case fails, and the suite goes on with the next.
#[test]
fn a_case_stopped_from_another_terminal_ends_at_once_and_the_suite_goes_on() {
    let env = Env::new();
    let (child, id) = start_slow_suite(
        &env,
        "  - name: stuck\n  - name: next\n    timeout_ms: 100\n",
        &[],
    );
    let stop = env.command().args(["stop", &id]).output().unwrap();
    assert!(stop.status.success(), "{stop:?}");
    let e = env.execution(&id);
    assert_eq!(e.status, "cancelled", "{e:?}");
    let message = e.error_message();
    assert!(
        message.contains("stopped by request") && !message.contains("did not respond"),
        "{message}"
    );
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("✗ slow.test.yaml:3 › stuck"), "{text}");
    assert_eq!(env.execution_ids().len(), 2, "the next case ran: {text}");
    // Its mocks (none here) are not stored: it is not resumed or run again on its own.
    for again in ["resume", "rerun"] {
        let out = env.command().args([again, &id]).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{again}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("was a case of a workflow test"), "{err}");
    }
}

/// Ctrl-C during the retry of a case that failed: it stays failed, its failure reported (the
/// interruption only kept it from being tried again), as when Ctrl-C comes between attempts; a
/// case interrupted at its first attempt is `interrupted`.
#[test]
fn ctrl_c_during_a_retry_leaves_a_failed_case_failed() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let env = Env::new();
    let flag = env.path("tried");
    let code = format!(
        "import os, time\np = {:?}\nif not os.path.exists(p):\n    open(p, 'w').close()\n    raise ValueError('first try fails')\ntime.sleep(30)\nreturn 1",
        flag.display().to_string()
    );
    env.write_workflow(
        "flaky.json",
        &json!({"id": "flaky", "nodes": [{"id": "step", "type": "code", "code": code}]}),
    );
    env.write_file(
        "flaky.test.yaml",
        "workflow: ./flaky.json\ncases:\n  - name: fails then hangs\n",
    );
    let child = env
        .command()
        .args(["test", "flaky.test.yaml", "--retries", "1", "--json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the retry to run", || {
        let ids = env.try_execution_ids()?;
        (ids.len() == 2 && env.try_node(&ids[1], "step")?.status == "running").then_some(())
    });
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
    let c = case(&report, "fails then hangs");
    assert_eq!(c["verdict"], "failed", "{report:#}");
    let attempts = c["attempts"].as_array().unwrap();
    assert_eq!(
        attempts.len(),
        1,
        "the failed attempt, reported: {report:#}"
    );
    assert!(
        attempts[0]["error"]
            .as_str()
            .unwrap()
            .contains("first try fails"),
        "{report:#}"
    );
    assert_eq!(
        report["summary"], "0 passed, 1 failed; interrupted by Ctrl-C (SIGINT)",
        "{report:#}"
    );
}

/// `quick.test.yaml`: one case of a one-node workflow, passing.
fn quick_suite(env: &Env) {
    env.write_workflow(
        "quick.json",
        &json!({"id": "quick", "nodes": [{"id": "a", "type": "template", "template": "hi"}]}),
    );
    env.write_file(
        "quick.test.yaml",
        "workflow: ./quick.json\ncases:\n  - name: ok\n",
    );
}

/// A suite killed before its end (SIGKILL, a CI job's hard timeout) leaves a `--junit` report
/// that says it did not finish — from the moment the suite starts, replacing an earlier run's
/// results — not an empty file, nor those results; the finished run's report replaces it.
#[test]
fn a_killed_suite_leaves_a_report_that_says_it_did_not_finish() {
    let env = Env::new();
    let junit = env.path("reports/junit.xml");
    std::fs::create_dir_all(junit.parent().unwrap()).unwrap();
    std::fs::write(
        &junit,
        "<testsuites tests=\"7\">an earlier run's</testsuites>",
    )
    .unwrap();
    let junit_arg = junit.to_str().unwrap();
    let unfinished = r#"
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
assert root.get("errors") == "1", root.attrib
error = root.find("testsuite/testcase/error")
assert error.get("type") == "did not finish", error.attrib
assert "did not finish" in error.get("message"), error.attrib
print("ok")
"#;
    let (mut child, _) = crate::workflow_tests_jobs::start_slow_suite(
        &env,
        "  - name: first\n",
        &["--junit", junit_arg],
    );
    crate::workflow_tests_ci::check_junit(&junit, unfinished);
    child.kill().unwrap();
    child.wait().unwrap();
    crate::workflow_tests_ci::check_junit(&junit, unfinished);
    let left: Vec<_> = std::fs::read_dir(junit.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 1, "no temporary file left beside it: {left:?}");

    // Run to its end, the real report replaces it.
    quick_suite(&env);
    let out = env.cmd(["test", "quick.test.yaml", "--junit", junit_arg]);
    assert_success(&out, "the quick suite");
    crate::workflow_tests_ci::check_junit(
        &junit,
        "import sys, xml.etree.ElementTree as ET\nr = ET.parse(sys.argv[1]).getroot()\nassert r.get('tests') == '1' and r.get('errors') == '0', r.attrib\nprint('ok')",
    );
}

/// A report path that is a link is written through it (the link stays); one that is not a file
/// (`--junit /dev/stdout` into a pipe) gets the report once, in place, with nothing ahead of it.
#[test]
fn junit_through_a_link_or_into_a_pipe() {
    let env = Env::new();
    quick_suite(&env);
    let real = env.path("real.xml");
    let link = env.path("link.xml");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let out = env.cmd(["test", "quick.test.yaml", "--junit", link.to_str().unwrap()]);
    assert_success(&out, "through a link");
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let xml = std::fs::read_to_string(&real).unwrap();
    assert!(
        xml.contains("tests=\"1\" failures=\"0\" errors=\"0\""),
        "{xml}"
    );

    let out = env.cmd(["test", "quick.test.yaml", "--junit", "/dev/stdout"]);
    assert_success(&out, "into the pipe of stdout");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.matches("<?xml").count(), 1, "{text}");
    assert!(!text.contains("did not finish"), "{text}");
    assert!(
        std::fs::symlink_metadata("/dev/stdout").is_ok_and(|m| !m.is_file()),
        "/dev/stdout itself is untouched"
    );
}

//! `flowrun test` as CI uses it: partitions, retries and flaky cases, JUnit XML (checked with a
//! real XML parser), exit codes, located errors for bad test files, GitHub annotations, history,
//! and the repository's own examples.

use crate::support::*;
use crate::workflow_tests::{case, test_json};
use serde_json::{Value, json};
use std::collections::BTreeSet;

fn names(report: &Value) -> Vec<String> {
    report["files"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|f| f["cases"].as_array().cloned().unwrap_or_default())
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn partitions_cover_every_case_exactly_once() {
    let env = Env::new();
    env.write_workflow(
        "w.json",
        &json!({"id": "w", "nodes": [{"id": "a", "type": "set", "fields": {}}]}),
    );
    // Skipped cases are selected and reported like any other, and start no process: the shards
    // are about selection.
    let mut all = BTreeSet::new();
    for f in 0..3 {
        let mut text = String::from("workflow: ./w.json\ncases:\n");
        for c in 0..(4 + f) {
            let name = format!("file {f} case {c}");
            text.push_str(&format!(
                "  - {{ name: \"{name}\", skip: partition test }}\n"
            ));
            all.insert(name);
        }
        env.write_file(&format!("t{f}.test.yaml"), &text);
    }
    for kind in ["hash", "count"] {
        let (code, report, _) = test_json(&env, &[".", "--partition", &format!("{kind}:1/1")], &[]);
        assert_eq!(code, 0);
        let one: BTreeSet<String> = names(&report).into_iter().collect();
        assert_eq!(one, all, "{kind}:1/1 is everything");
        let mut seen: Vec<String> = Vec::new();
        let mut sizes = Vec::new();
        for k in 1..=3 {
            let (code, report, err) =
                test_json(&env, &[".", "--partition", &format!("{kind}:{k}/3")], &[]);
            assert_eq!(code, 0, "{err}");
            let shard = names(&report);
            sizes.push(shard.len());
            assert!(
                err.trim_end()
                    .ends_with(&format!("0 passed, 0 failed, {} skipped", shard.len())),
                "{err}"
            );
            seen.extend(shard);
        }
        let unique: BTreeSet<String> = seen.iter().cloned().collect();
        assert_eq!(
            seen.len(),
            all.len(),
            "{kind}: no case in two shards: {seen:?}"
        );
        assert_eq!(unique, all, "{kind}: every case in a shard");
        if kind == "count" {
            assert_eq!(sizes, [5, 5, 5], "count shards are even");
        }
    }
    let out = env.cmd(["test", ".", "--partition", "hash:4/3"]);
    assert_code(&out, 2, "K > N");
}

fn flaky_workflow(env: &Env) {
    // Fails on its first run, passes on later ones: the count lives in a file beside the
    // workflow (cases run in the workflow's directory).
    env.write_workflow(
        "flaky.json",
        &json!({"id": "flaky", "nodes": [{"id": "count", "type": "code", "code":
            "import os\np = os.environ['COUNTER']\nn = int(open(p).read()) + 1 if os.path.exists(p) else 1\nopen(p, 'w').write(str(n))\nreturn {'runs': n}"}]}),
    );
    env.write_file(
        "flaky.test.yaml",
        "workflow: ./flaky.json\ncases:\n  - name: passes the second time\n    env: { COUNTER: a.txt }\n    expect:\n      output.runs: { ge: 2 }\n  - name: always fails\n    env: { COUNTER: b.txt }\n    expect:\n      output.runs: 0\n  - name: skipped\n    skip: true\n",
    );
}

#[test]
fn retries_mark_a_flaky_case_and_junit_is_valid_xml() {
    let env = Env::new();
    flaky_workflow(&env);
    let junit = env.path("reports/junit.xml");
    let (code, report, err) = test_json(
        &env,
        &[
            "flaky.test.yaml",
            "--retries",
            "2",
            "--junit",
            junit.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 1, "a case failed\n{err}");
    assert_eq!(report["summary"], "0 passed, 1 failed, 1 flaky, 1 skipped");
    assert!(
        err.trim_end()
            .ends_with("0 passed, 1 failed, 1 flaky, 1 skipped"),
        "{err}"
    );
    let flaky = case(&report, "passes the second time");
    assert_eq!(flaky["verdict"], "flaky");
    assert_eq!(flaky["attempts"].as_array().unwrap().len(), 2);
    assert!(
        err.contains("↻ flaky.test.yaml › passes the second time (flaky: passed on attempt 2 of 3"),
        "{err}"
    );
    assert_eq!(
        case(&report, "always fails")["attempts"]
            .as_array()
            .unwrap()
            .len(),
        3,
        "1 + 2 retries"
    );
    // The report, read back by Python's XML parser and checked element by element.
    let check = r#"
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
assert root.tag == "testsuites", root.tag
suites = root.findall("testsuite")
assert len(suites) == 1, len(suites)
s = suites[0]
assert s.get("name") == "flaky.test.yaml" and s.get("tests") == "3", s.attrib
assert s.get("failures") == "1" and s.get("skipped") == "1" and s.get("errors") == "0", s.attrib
cases = {c.get("name"): c for c in s.findall("testcase")}
assert set(cases) == {"passes the second time", "always fails", "skipped"}, cases
for c in cases.values():
    float(c.get("time")); int(c.get("line")); assert not c.get("time").startswith("-")
    assert c.get("classname") == "flaky.test.yaml"
f = cases["always fails"].find("failure")
assert f is not None and f.get("type") == "AssertionError"
assert f.get("message") == "output.runs: equals 0 (actual: 3)", f.get("message")
assert "expected: 0" in f.text and "actual:   3" in f.text and "flowrun show" in f.text, f.text
assert cases["skipped"].find("skipped") is not None
fl = cases["passes the second time"]
assert fl.find("failure") is None and len(fl.findall("flakyFailure")) == 1
assert "actual:   1" in fl.find("flakyFailure").text
print("ok")
"#;
    check_junit(&junit, check);
}

/// Reads a JUnit report back with Python's XML parser and runs `check` on it (a script that
/// gets the report's path as `sys.argv[1]` and prints `ok` when every assertion held).
pub(crate) fn check_junit(junit: &std::path::Path, check: &str) {
    let out = std::process::Command::new("python3")
        .args(["-I", "-c", check])
        .arg(junit)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok",
        "JUnit XML check failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(junit).unwrap_or_default()
    );
}

#[test]
fn junit_has_one_suite_per_file_and_survives_hostile_names() {
    let env = Env::new();
    env.write_workflow("w.json", &json!({"id": "w", "nodes": [{"id": "a", "type": "set", "fields": {"v": "{{ trigger.v }}"}}]}));
    env.write_file("a.test.yaml", "workflow: ./w.json\ncases:\n  - name: \"<&>\\\"' \\u0001 ]]>\"\n    trigger: { v: \"x\\u0002<y>\" }\n    expect: { output.v: \"z\" }\n");
    env.write_file("b.test.json", r#"{"workflow": "./w.json", "cases": [{"name": "ok", "trigger": {"v": 1}, "expect": {"output.v": 1}}]}"#);
    let out = env.cmd(["test", ".", "--junit", "junit.xml"]);
    assert_code(&out, 1, "one case fails");
    let check = r#"
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
suites = {s.get("name"): s for s in root.findall("testsuite")}
assert set(suites) == {"./a.test.yaml", "./b.test.json"}, suites
bad = suites["./a.test.yaml"].find("testcase")
assert bad.get("name").startswith("<&>\"' "), bad.get("name")
assert "x\\u0002<y>" in bad.find("failure").text, bad.find("failure").text
assert "\ufffd" in bad.get("name")
assert suites["./b.test.json"].find("testcase").find("failure") is None
print("ok")
"#;
    check_junit(&env.path("junit.xml"), check);
}

/// What a test file names and what an execution says reach the terminal and a CI log as text:
/// no escape sequence, and no line of its own (a GitHub workflow command).
#[test]
fn a_report_shows_hostile_names_and_errors_without_obeying_them() {
    let env = Env::new();
    env.write_workflow("w.json", &json!({"id": "w", "nodes": [{"id": "c", "type": "code",
        "code": "raise RuntimeError('bad\\x1b[31mRED\\x1b]0;TITLE\\x07\\n::error title=injected::from the workflow')"}]}));
    env.write_file("w.test.yaml", "workflow: ./w.json\ncases:\n  - name: \"evil \\e[31mred\\n::warning::by name\\u202E\\x7f\"\n    expect: { status: success }\n  - name: skipped\n    skip: \"why \\e]0;pwned\\a\\n::notice::x\"\n");
    let mut cmd = env.flowrun();
    cmd.args(["test", "w.test.yaml"])
        .env("GITHUB_ACTIONS", "true");
    let out = output(&mut cmd);
    assert_code(&out, 1, "the case fails");
    let text = stdout(&out);
    for c in ['\x1b', '\x07', '\x7f', '\u{202e}'] {
        assert!(!text.contains(c), "{text:?}");
    }
    for line in text.lines() {
        assert!(
            !line.starts_with("::warning::by") && !line.starts_with("::notice::"),
            "{text}"
        );
        assert!(!line.starts_with("::error title=injected"), "{text}");
    }
    assert!(text.contains("bad\\x1b[31mRED"), "{text}");
    assert!(
        text.contains("evil \\x1b[31mred\\x0a::warning::by name"),
        "{text}"
    );
    assert!(
        text.contains("why \\x1b]0;pwned\\x07\\x0a::notice::x"),
        "{text}"
    );
    // `--json` keeps the exact text, with nothing a terminal would obey or reorder raw.
    let out = env.cmd(["test", "w.test.yaml", "--json"]);
    assert_code(&out, 1, "the case fails");
    let raw = stdout(&out);
    for c in ['\x1b', '\x07', '\x7f', '\u{202e}'] {
        assert!(!raw.contains(c), "--json wrote {c:?} raw:\n{raw}");
    }
    let doc: serde_json::Value = serde_json::from_str(&raw).expect("--json is JSON");
    assert_eq!(
        doc["files"][0]["cases"][0]["name"],
        json!("evil \x1b[31mred\n::warning::by name\u{202e}\x7f")
    );
    // An invalid file's problems name its keys: on stderr too, no line of theirs.
    env.write_file(
        "bad.test.yaml",
        "workflow: ./w.json\ncases:\n  - name: x\n    \"bogus\\n::error::INJECTED\": 1\n",
    );
    let out = env.cmd(["test", "bad.test.yaml"]);
    assert_code(&out, 2, "invalid");
    let err = stderr(&out);
    assert!(err.contains("unknown field 'bogus"), "{err}");
    assert!(err.lines().all(|l| !l.starts_with("::")), "{err}");
}

/// `--env KEY` takes the value from flowrun's own environment, as `run` does, and a secret given
/// as `--env KEY=VALUE` (on the command line, where `ps` shows it) is warned about.
#[test]
fn env_takes_a_name_alone_and_warns_of_a_secret_on_the_command_line() {
    let env = Env::new();
    env.write_workflow(
        "w.json",
        &json!({"id": "w", "connections": {"svc": {"env": "SVC_KEY"}},
        "nodes": [{"id": "c", "type": "code", "connections": ["svc"],
                   "code": "import os\nreturn {'n': len(os.environ['SVC_KEY'])}"}]}),
    );
    env.write_file(
        "w.test.yaml",
        "workflow: ./w.json\ncases:\n  - name: bound\n    expect: { output.n: 11 }\n",
    );
    let mut cmd = env.flowrun();
    cmd.args(["test", "w.test.yaml", "--env", "SVC_KEY"])
        .env("SVC_KEY", "from-my-env");
    let out = output(&mut cmd);
    assert_code(&out, 0, "bound from the environment");
    assert!(!stderr(&out).contains("warning"), "{}", describe(&out));
    let out = env.cmd(["test", "w.test.yaml", "--env", "SVC_KEY=on-the-line"]);
    assert_code(&out, 0, "bound on the command line");
    assert!(
        stderr(&out).contains("warning: --env SVC_KEY=… puts a secret on the command line"),
        "{}",
        describe(&out)
    );
}

/// A link to a test file in a searched directory is run (it was skipped without a word: a CI
/// job passed, running fewer cases than it had); an empty list of cases is named as such, and a
/// case without a name has its other problems reported too.
#[test]
fn a_linked_test_file_is_found_and_empty_or_nameless_cases_are_named() {
    let env = Env::new();
    env.write_workflow(
        "w.json",
        &json!({"id": "w", "nodes": [{"id": "a", "type": "set", "fields": {}}]}),
    );
    std::fs::create_dir(env.path("shared")).unwrap();
    std::fs::create_dir(env.path("suite")).unwrap();
    env.write_file(
        "shared/w.test.yaml",
        "workflow: ../w.json\ncases:\n  - name: linked\n",
    );
    std::os::unix::fs::symlink(
        env.path("shared/w.test.yaml"),
        env.path("suite/w.test.yaml"),
    )
    .unwrap();
    let out = env.cmd(["test", "suite"]);
    assert_code(&out, 0, "the linked file's case ran");
    // Its `workflow:` is relative to the link's directory, not the file's: one level deeper,
    // `../w.json` is suite/w.json, which is not there.
    std::fs::create_dir(env.path("suite/deeper")).unwrap();
    std::os::unix::fs::symlink(
        env.path("shared/w.test.yaml"),
        env.path("suite/deeper/w.test.yaml"),
    )
    .unwrap();
    let deep = env.cmd(["test", "suite/deeper"]);
    assert_code(&deep, 2, "resolved from the link's directory");
    assert!(
        stderr(&deep).contains("suite/deeper/../w.json"),
        "{}",
        describe(&deep)
    );
    std::fs::remove_file(env.path("suite/deeper/w.test.yaml")).unwrap();
    assert!(
        stdout(&out).trim_end().ends_with("1 passed, 0 failed"),
        "{}",
        describe(&out)
    );
    // One file named several ways runs once; the link, a test file of its own, runs too.
    let abs = env.path("shared/w.test.yaml");
    let out = env.cmd([
        "test",
        "shared/w.test.yaml",
        "./shared/w.test.yaml",
        abs.to_str().unwrap(),
        "shared",
        "suite",
    ]);
    assert_code(&out, 0, "each file once");
    assert!(
        stdout(&out).trim_end().ends_with("2 passed, 0 failed"),
        "{}",
        describe(&out)
    );
    env.write_file("empty.test.yaml", "workflow: ./w.json\ncases: []\n");
    let out = env.cmd(["test", "empty.test.yaml"]);
    assert_code(&out, 2, "no cases");
    assert!(
        stderr(&out).contains("the list of cases is empty"),
        "{}",
        describe(&out)
    );
    // A case without a name has its other problems reported too.
    env.write_file(
        "nameless.test.yaml",
        "workflow: ./w.json\ncases:\n  - timeout_ms: -1\n    tirgger: {}\n",
    );
    let out = env.cmd(["test", "nameless.test.yaml"]);
    assert_code(&out, 2, "invalid");
    let err = stderr(&out);
    for want in [
        "a case needs a name",
        "timeout_ms",
        "unknown field 'tirgger'",
    ] {
        assert!(err.contains(want), "{want:?} in {}", describe(&out));
    }
}

#[test]
fn a_bad_test_file_is_exit_2_with_file_line_case_and_path() {
    let env = Env::new();
    env.write_workflow(
        "w.json",
        &json!({"id": "w", "nodes": [{"id": "a", "type": "set", "fields": {}}]}),
    );
    env.write_file(
        "bad.test.yaml",
        "workflow: ./w.json\ncases:\n  - name: one\n    expect:\n      output.x: { contians: 1 }\n      nodes.nope.status: success\n    mock:\n      ghost: 1\n  - name: two\n    snapshto: true\n",
    );
    env.write_file(
        "ok.test.yaml",
        "workflow: ./w.json\ncases:\n  - name: fine\n",
    );
    let out = env.cmd(["test", "."]);
    assert_code(&out, 2, "invalid test file");
    let err = stderr(&out);
    for line in [
        "error: ./bad.test.yaml:5: case \"one\": cases[0].expect[\"output.x\"]: unknown operator 'contians'",
        "error: ./bad.test.yaml:6: case \"one\": cases[0].expect[\"nodes.nope.status\"]: the workflow has no node 'nope'; its nodes are: a",
        "error: ./bad.test.yaml:8: case \"one\": cases[0].mock.ghost: the workflow has no node 'ghost' to mock",
        "error: ./bad.test.yaml:10: case \"two\": cases[1].snapshto: unknown field 'snapshto'",
        "1 invalid test file(s); nothing was run",
    ] {
        assert!(err.contains(line), "missing {line:?} in:\n{err}");
    }
    assert_eq!(env.execution_count(), 0, "nothing ran");
    // On GitHub Actions, each is an annotation too.
    let mut cmd = env.flowrun();
    cmd.args(["test", "bad.test.yaml"])
        .env("GITHUB_ACTIONS", "true");
    let out = output(&mut cmd);
    assert!(
        stdout(&out).contains(
            "::error file=bad.test.yaml,line=5,title=invalid test file::unknown operator 'contians'"
        ),
        "{}",
        describe(&out)
    );
    // An invalid workflow is exit 2, naming it.
    env.write_file(
        "w.json",
        "{\"id\": \"w\", \"nodes\": [{\"id\": \"a\", \"type\": \"sett\"}]}",
    );
    let out = env.cmd(["test", "ok.test.yaml"]);
    assert_code(&out, 2, "invalid workflow");
    assert!(
        stderr(&out).contains("ok.test.yaml:1: workflow: the workflow ./w.json is invalid"),
        "{}",
        describe(&out)
    );
    // No test files at all.
    std::fs::create_dir(env.path("empty")).unwrap();
    let out = env.cmd(["test", "empty"]);
    assert_code(&out, 2, "no test files");
    // A pipe is refused, not waited for; nesting past 128 levels at once, with its place
    // (100,000 levels took 20 s to refuse).
    let fifo = env.path("fifo.test.yaml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let out = env.cmd(["test", "fifo.test.yaml"]);
    assert_code(&out, 2, "a pipe");
    assert!(
        stderr(&out).contains("not a regular file"),
        "{}",
        describe(&out)
    );
    std::fs::remove_file(&fifo).unwrap();
    let depth = 100_000;
    env.write_file(
        "deep.test.yaml",
        &format!(
            "workflow: ./w.json\ncases:\n  - name: deep\n    trigger: {{x: {}{}}}\n",
            "[".repeat(depth),
            "]".repeat(depth)
        ),
    );
    let t = std::time::Instant::now();
    let out = env.cmd(["test", "deep.test.yaml"]);
    assert_code(&out, 2, "too deep");
    assert!(t.elapsed().as_secs() < 5, "{:?}", t.elapsed());
    assert!(
        stderr(&out).contains("deep.test.yaml:4: invalid YAML: nesting is deeper than 128"),
        "{}",
        describe(&out)
    );
}

#[test]
fn exit_codes_annotations_and_history() {
    let env = Env::new();
    env.write_workflow("w.json", &json!({"id": "w", "nodes": [{"id": "a", "type": "set", "fields": {"v": "{{ trigger.v }}"}}]}));
    env.write_file("w.test.yaml", "workflow: ./w.json\ncases:\n  - name: passes\n    trigger: { v: 1 }\n    expect:\n      output.v: 1\n  - name: fails\n    trigger: { v: 2 }\n    expect:\n      status: success\n      output.v: 1\n");
    // --filter: the cases any of the filters picks; one that picks nothing is a mistake (a typo
    // in a CI job), even beside one that picks some.
    for (filters, code, want) in [
        (&["pases"][..], 2, "--filter pases: no case"),
        (&["passes"], 0, "1 passed, 0 failed"),
        (&["passes", "fails"], 1, "1 passed, 1 failed"),
        (&["passes", "Fails"], 2, "--filter Fails: no case"),
        (
            &["Fails", "passes", "x"],
            2,
            "--filter Fails, --filter x: no case's name or test file's path contains any of them",
        ),
        // An empty one would pick every case (`--filter "$UNSET"` in a CI job).
        (
            &[""],
            2,
            "invalid value '' for '--filter <TEXT>': empty: it would pick every case",
        ),
    ] {
        let mut args = vec!["test", "w.test.yaml"];
        for f in filters {
            args.extend(["--filter", f]);
        }
        let out = env.cmd(args);
        assert_code(&out, code, &format!("--filter {filters:?}"));
        let text = if code == 2 {
            stderr(&out)
        } else {
            stdout(&out)
        };
        assert!(text.contains(want), "{}", describe(&out));
    }
    let mut cmd = env.flowrun();
    cmd.args(["test", "w.test.yaml"])
        .env("GITHUB_ACTIONS", "true");
    let out = output(&mut cmd);
    assert_code(&out, 1, "a case failed");
    let text = stdout(&out);
    assert!(
        text.contains("::error file=w.test.yaml,line=11,title=flowrun test › fails::output.v: equals%0A  expected: 1%0A  actual:   2%0Adetails: flowrun show "),
        "{text}"
    );
    assert!(text.trim_end().ends_with("1 passed, 1 failed"), "{text}");
    // Test executions are stored with mode test-suite and left out of history unless --all.
    let out = env.run(&env.path("w.json"), r#"{"v": 3}"#, &[]);
    assert_code(&out, 0, "a plain run");
    let listed = env.history_json(&[]);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["mode"], "test");
    let all = env.history_json(&["--all"]);
    assert_eq!(all.len(), 6);
    assert_eq!(all.iter().filter(|e| e["mode"] == "test-suite").count(), 5);
    // As text, --all has a MODE column to tell them apart.
    let text = stdout(&env.cmd(["history", "--all"]));
    let modes = |m: &str| {
        text.lines()
            .filter(|l| l.contains(&format!("  {m:<10}  ")))
            .count()
    };
    assert_eq!(
        (modes("MODE"), modes("test-suite"), modes("test")),
        (1, 5, 1),
        "{text}"
    );
}

/// Ctrl-C, SIGTERM (how CI cancels a job, and `timeout` and `docker stop` end a command) and
/// SIGHUP (the terminal closed): the running case is stopped, no other starts, and the report —
/// the last line, the JUnit document — is written, saying so.
#[test]
fn ctrl_c_or_sigterm_stops_the_running_cases_and_starts_no_more() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    for (signal, by) in [
        (Signal::SIGINT, "Ctrl-C (SIGINT)"),
        (Signal::SIGTERM, "SIGTERM"),
        (Signal::SIGHUP, "SIGHUP"),
    ] {
        let env = Env::new();
        let junit = env.path("junit.xml");
        let junit_arg = junit.to_str().unwrap();
        let (mut child, id) = crate::workflow_tests_jobs::start_slow_suite(
            &env,
            "  - name: first\n  - name: second\n",
            &["--junit", junit_arg],
        );
        kill(Pid::from_raw(child.id() as i32), signal).unwrap();
        let started = std::time::Instant::now();
        let status = child.wait().unwrap();
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "stopped long before the delay ends"
        );
        assert_eq!(status.code(), Some(130), "{signal}");
        assert_eq!(env.execution(&id).status, "cancelled");
        assert_eq!(
            env.execution_ids(),
            std::slice::from_ref(&id),
            "the second case never started"
        );
        let mut text = String::new();
        std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut text).unwrap();
        // The running case was stopped by the interruption, not failed, and it ran, unlike
        // the one the interruption kept from starting.
        assert!(
            text.contains("⊘ slow.test.yaml › first (interrupted after "),
            "{text}"
        );
        assert!(
            text.contains(&format!("stopped while it ran; details: flowrun show {id}")),
            "{text}"
        );
        assert!(
            text.contains("○ slow.test.yaml › second (skipped: interrupted)"),
            "{text}"
        );
        assert!(
            text.trim_end().ends_with(&format!(
                "0 passed, 0 failed, 1 interrupted, 1 skipped; interrupted by {by}"
            )),
            "{text}"
        );
        let xml = std::fs::read_to_string(&junit).expect("the JUnit document is written");
        assert_eq!(
            xml.matches("<skipped message=\"interrupted\"").count(),
            1,
            "{xml}"
        );
        assert_eq!(xml.matches("type=\"interrupted\"").count(), 1, "{xml}");
        assert!(
            xml.contains("tests=\"2\" failures=\"0\" errors=\"1\" skipped=\"1\""),
            "{xml}"
        );
    }
}

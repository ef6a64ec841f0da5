//! Reading history: `logs --follow`/`show` from another process, id prefixes, `history` filters.

use super::{
    HOUR, code, finish, gated, history_ids, id_of, now_ms, pairs, parent, path_str, record,
    rename_execution, rows_of, set_started_at, spawn,
};
use crate::support::*;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::time::Duration;

// ---------------------------------------------------------------------------------------------
// 5. logs --follow and show of a running execution, from a second process
// ---------------------------------------------------------------------------------------------

#[test]
fn follow_and_show_a_running_execution_from_another_process() {
    let env = Env::new();
    let wf = env.write_workflow(
        "live.json",
        &json!({
            "id": "live",
            "nodes": [
                code("first", "print('line 1')\nreturn 1"),
                gated("slow", "import sys\nfor i in (2, 3, 4):\n    print('line %d' % i)\n    time.sleep(0.05)\nsys.stderr.write('line 5\\n')"),
                code("last", "import time\nfor i in (6, 7, 8):\n    print('line %d' % i)\n    time.sleep(0.05)\nreturn 3")
            ]
        }),
    );
    let input = json!({"gate": env.path("gate")}).to_string();
    let run = spawn(&env, &["run", path_str(&wf), "--input", &input]);
    let id = wait_for("the execution row", || {
        env.try_execution_ids().and_then(|ids| ids.first().cloned())
    });
    // The run is held at the gate inside `slow`.
    wait_for("'slow' to start", || {
        env.try_node(&id, "slow").filter(|n| n.status == "running")
    });

    let out = env.cmd(["show", &id]);
    assert_success(&out, "show during the run");
    let text = stdout(&out);
    assert!(
        text.starts_with(&format!("execution {id}  running")),
        "{text}"
    );
    assert!(text.contains("✓ first  success"), "{text}");
    assert!(text.contains("… slow  running"), "{text}");
    // The node still to come is listed as waiting, in plan order after the running one.
    assert!(text.contains("· last  waiting"), "{text}");
    assert!(
        text.find("… slow").unwrap() < text.find("· last").unwrap(),
        "{text}"
    );
    let shown = env.show_json(&id);
    assert_eq!(shown["status"], "running");
    let nodes = record_node_statuses(&shown);
    // The JSON view lists the planned node still to come as pending.
    assert_eq!(
        nodes,
        pairs(&[
            ("first", "success"),
            ("slow", "running"),
            ("last", "pending")
        ])
    );
    assert_eq!(shown["nodes"][0]["output"], json!(1));

    // Follow by a unique prefix; it prints what is there and keeps going while the run waits.
    let mut follow = spawn(&env, &["logs", &id[..8], "--follow"]);
    let mut reader = BufReader::new(follow.stdout.take().unwrap());
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.ends_with("| line 5")) {
        let mut line = String::new();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "follow ended early: {seen:?}"
        );
        seen.push(line.trim_end().to_string());
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        follow.try_wait().unwrap().is_none(),
        "logs --follow ended while the execution was running"
    );
    assert_eq!(env.execution(&id).status, "running");

    // Let the run end; follow prints the rest and exits by itself.
    env.write_file("gate", "");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut reader, &mut rest).unwrap();
    assert!(finish(follow, "logs --follow").success());
    assert!(finish(run, "the run").success());
    seen.extend(rest.lines().map(str::to_string));
    let expected = [
        "first | line 1",
        "slow | line 2",
        "slow | line 3",
        "slow | line 4",
        "slow [stderr] | line 5",
        "last | line 6",
        "last | line 7",
        "last | line 8",
    ];
    assert_eq!(seen.len(), expected.len(), "{seen:#?}");
    for (line, want) in seen.iter().zip(expected) {
        assert!(line.ends_with(want), "{line:?} should end with {want:?}");
    }
    let plain = env.cmd(["logs", &id]);
    assert_success(&plain, "logs");
    assert_eq!(stdout(&plain).lines().collect::<Vec<_>>(), seen);
    assert_eq!(env.execution(&id).status, "success");
    let shown = stdout(&env.cmd(["show", &id]));
    assert!(shown.contains("✓ last  success"), "{shown}");
}

// ---------------------------------------------------------------------------------------------
// 6. id prefixes
// ---------------------------------------------------------------------------------------------

#[test]
fn prefixes_resolve_when_unique_and_fail_when_ambiguous_or_unknown() {
    let env = Env::new();
    let wf = env.write_workflow(
        "p.json",
        &json!({"id": "p", "nodes": [code("say", "print('said ' + trigger['w'])\nreturn trigger['w']")]}),
    );
    for (w, new_id) in [
        ("one", "abc1000000000001"),
        ("two", "abc2000000000002"),
        ("three", "fed3000000000003"),
    ] {
        let out = env.run(&wf, &json!({"w": w}).to_string(), &["--json"]);
        assert_success(&out, "run");
        rename_execution(&env, &id_of(&out), new_id);
    }

    // Unique prefixes.
    let out = env.cmd(["show", "abc1", "--json"]);
    assert_success(&out, "show by prefix");
    assert_eq!(record(&out)["id"], "abc1000000000001");
    assert_eq!(record(&out)["trigger"], json!({"w": "one"}));
    let out = env.cmd(["show", "fed"]);
    assert_success(&out, "show by a short prefix");
    assert!(stdout(&out).starts_with("execution fed3000000000003"));
    // In capitals too, as the API's list filter takes them.
    let out = env.cmd(["show", "FED3"]);
    assert_success(&out, "show by a prefix in capitals");
    assert!(stdout(&out).starts_with("execution fed3000000000003"));
    let out = env.cmd(["logs", "abc2"]);
    assert_success(&out, "logs by prefix");
    assert!(
        stdout(&out).trim_end().ends_with("say | said two"),
        "{}",
        stdout(&out)
    );
    let out = env.cmd(["rerun", "abc2", "--json"]);
    assert_success(&out, "rerun by prefix");
    let rerun = id_of(&out);
    assert_eq!(
        parent(&env, &rerun),
        (Some("abc2000000000002".into()), Some("rerun".into()))
    );
    assert_eq!(env.execution(&rerun).output, Some(json!("two")));
    // A known id for it too, so the prefixes below mean the same on every run.
    rename_execution(&env, &rerun, "fed4000000000004");

    // Ambiguous: exit 2, naming the candidates, for every command that takes an id.
    for args in [
        vec!["show", "abc"],
        vec!["logs", "abc"],
        vec!["rerun", "abc"],
        vec!["resume", "abc"],
        vec!["delete", "abc"],
        vec!["stop", "abc"],
    ] {
        let out = env.cmd(&args);
        assert_code(&out, 2, &format!("{args:?} with an ambiguous prefix"));
        assert!(
            stderr(&out).lines().any(|l| l
                == "error: 'abc' matches several executions: abc1000000000001, abc2000000000002"),
            "{args:?}\n{}",
            describe(&out)
        );
    }
    // Unknown: exit 2, "no execution matches".
    for args in [
        vec!["show", "nosuch"],
        vec!["logs", "nosuch"],
        vec!["rerun", "nosuch"],
        vec!["delete", "nosuch"],
        vec!["show", "0123456789abcdef"],
    ] {
        let out = env.cmd(&args);
        assert_code(&out, 2, &format!("{args:?} with an unknown id"));
        assert!(
            stderr(&out).contains(&format!("no execution matches '{}'", args[1])),
            "{args:?}\n{}",
            describe(&out)
        );
    }
    // Nothing was deleted or started by the refused commands.
    assert_eq!(env.execution_count(), 4);

    // More than five candidates: the first five, then "…".
    {
        let db = env.db_rw();
        for i in 3..=7 {
            db.execute_batch(&format!(
                "CREATE TEMP TABLE t AS SELECT * FROM executions WHERE id = 'abc1000000000001';
                 UPDATE t SET id = 'abc{i}00000000000{i}';
                 INSERT INTO executions SELECT * FROM t;
                 DROP TABLE t;"
            ))
            .unwrap();
        }
    }
    let out = env.cmd(["show", "abc"]);
    assert_code(&out, 2, "show with seven candidates");
    assert!(
        stderr(&out).contains(
            "abc1000000000001, abc2000000000002, abc3000000000003, abc4000000000004, abc5000000000005, …"
        ),
        "{}",
        describe(&out)
    );

    // delete by prefix; afterwards a shorter prefix can become unique.
    let out = env.cmd(["delete", "abc2", "abc3", "abc4", "abc5", "abc6", "abc7"]);
    assert_success(&out, "delete by prefixes");
    assert!(
        stdout(&out).starts_with("deleted 6 executions"),
        "{}",
        stdout(&out)
    );
    assert_eq!(rows_of(&env, &["abc2000000000002"]), (0, 0));
    assert_eq!(env.execution_count(), 3);
    let out = env.cmd(["show", "ab", "--json"]);
    assert_success(&out, "show with a prefix that became unique");
    assert_eq!(record(&out)["id"], "abc1000000000001");
}

// ---------------------------------------------------------------------------------------------
// 7. history filters and --json
// ---------------------------------------------------------------------------------------------

#[test]
fn history_filters_by_workflow_status_and_time_and_prints_stable_json() {
    let env = Env::new();
    let ok = env.write_workflow(
        "ok.json",
        &json!({"id": "wf-ok", "name": "OK flow", "nodes": [code("x", "return 1")]}),
    );
    let bad = env.write_workflow(
        "bad.json",
        &json!({"id": "wf-bad", "nodes": [code("boom", "raise ValueError('nope')")]}),
    );
    let mut made = Vec::new();
    for (f, code_) in [(&ok, 0), (&ok, 0), (&bad, 1), (&ok, 0)] {
        let out = env.run(f, "{}", &["--json"]);
        assert_code(&out, code_, "run");
        made.push(id_of(&out));
    }
    let (old_2020, three_h, bad_id, newest) = (&made[0], &made[1], &made[2], &made[3]);
    let t2020 = 1_579_082_400_000; // 2020-01-15T10:00:00Z
    set_started_at(&env, old_2020, t2020);
    set_started_at(&env, three_h, now_ms() - 3 * HOUR);

    // Newest first.
    assert_eq!(
        history_ids(&env, &[]),
        vec![
            newest.clone(),
            bad_id.clone(),
            three_h.clone(),
            old_2020.clone()
        ]
    );
    assert_eq!(
        history_ids(&env, &["-n", "2"]),
        vec![newest.clone(), bad_id.clone()]
    );
    assert_eq!(history_ids(&env, &["--limit", "1"]), vec![newest.clone()]);
    assert_eq!(
        history_ids(&env, &["--workflow", "wf-ok"]),
        vec![newest.clone(), three_h.clone(), old_2020.clone()]
    );
    assert_eq!(
        history_ids(&env, &["--workflow", "wf-bad"]),
        vec![bad_id.clone()]
    );
    assert!(history_ids(&env, &["--workflow", "nosuch"]).is_empty());
    assert_eq!(
        history_ids(&env, &["--status", "error"]),
        vec![bad_id.clone()]
    );
    assert_eq!(
        history_ids(&env, &["--status", "success", "-n", "2"]),
        vec![newest.clone(), three_h.clone()]
    );
    assert!(history_ids(&env, &["--status", "running"]).is_empty());
    assert_eq!(
        history_ids(&env, &["--since", "1h"]),
        vec![newest.clone(), bad_id.clone()]
    );
    assert_eq!(
        history_ids(&env, &["--since", "4h", "--until", "1h"]),
        vec![three_h.clone()]
    );
    assert_eq!(
        history_ids(&env, &["--until", "1h"]),
        vec![three_h.clone(), old_2020.clone()]
    );
    assert_eq!(
        history_ids(&env, &["--since", "2020-01-15", "--until", "2020-01-16"]),
        vec![old_2020.clone()]
    );
    assert_eq!(
        history_ids(
            &env,
            &[
                "--since",
                "2020-01-15T10:00:00Z",
                "--until",
                "2020-01-15T10:00:01Z"
            ]
        ),
        vec![old_2020.clone()],
        "--since is inclusive"
    );
    assert!(
        history_ids(
            &env,
            &["--since", "2020-01-15T10:00:01Z", "--until", "2021-01-01"]
        )
        .is_empty()
    );
    assert!(
        history_ids(
            &env,
            &["--since", "2020-01-01", "--until", "2020-01-15T10:00:00Z"]
        )
        .is_empty(),
        "--until is exclusive"
    );
    assert_eq!(
        history_ids(
            &env,
            &[
                "--workflow",
                "wf-ok",
                "--status",
                "success",
                "--since",
                "2021-01-01"
            ]
        ),
        vec![newest.clone(), three_h.clone()]
    );

    // The documented fields, exactly.
    let listed = env.history_json(&[]);
    let want: std::collections::BTreeSet<&str> = [
        "id",
        "workflow_id",
        "workflow_name",
        "status",
        "mode",
        "started_at",
        "finished_at",
        "duration_ms",
        "error",
        "parent_id",
        "relation",
        "input_tokens",
        "output_tokens",
        "cost_usd",
    ]
    .into_iter()
    .collect();
    for e in &listed {
        let keys: std::collections::BTreeSet<&str> =
            e.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, want, "{e}");
    }
    let okrow = &listed[0];
    assert_eq!(okrow["workflow_id"], "wf-ok");
    assert_eq!(okrow["workflow_name"], "OK flow");
    assert_eq!(okrow["status"], "success");
    assert_eq!(okrow["mode"], "test");
    assert!(okrow["started_at"].as_i64().unwrap() > t2020);
    assert!(okrow["finished_at"].as_i64().unwrap() >= okrow["started_at"].as_i64().unwrap());
    assert!(okrow["duration_ms"].as_f64().unwrap() > 0.0);
    for k in [
        "error",
        "parent_id",
        "relation",
        "input_tokens",
        "output_tokens",
        "cost_usd",
    ] {
        assert_eq!(okrow[k], Value::Null, "{k}: {okrow}");
    }
    let badrow = &listed[1];
    assert_eq!(badrow["status"], "error");
    assert_eq!(badrow["workflow_name"], "wf-bad");
    assert_eq!(badrow["error"]["type"], "ValueError", "{badrow}");
    assert!(
        badrow["error"]["message"]
            .as_str()
            .unwrap()
            .contains("nope")
    );
    assert_eq!(listed[3]["started_at"], json!(t2020));

    // The table: one line per execution plus the header, filters applied.
    let out = env.cmd(["history", "--workflow", "wf-ok", "--since", "2021-01-01"]);
    assert_success(&out, "history");
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].starts_with("ID"), "{text}");
    assert!(
        lines[1].starts_with(newest.as_str()) && lines[1].contains("success"),
        "{text}"
    );
    assert!(
        lines[2].starts_with(three_h.as_str()) && lines[2].contains("3 h ago"),
        "{text}"
    );
    assert!(
        !text.contains("ERROR"),
        "no execution listed failed:\n{text}"
    );
    // A failed one says why in a word, last, the column named once one has failed.
    let text = stdout(&env.cmd(["history", "-n", "0"]));
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].trim_end().ends_with("  ERROR"), "{text}");
    let bad = lines.iter().find(|l| l.contains("wf-bad")).expect("listed");
    assert!(bad.ends_with("  ValueError in node 'boom'"), "{text}");
    let ok = lines.iter().find(|l| l.contains("wf-ok")).expect("listed");
    assert!(ok.ends_with("ago)"), "{text}");
    assert_eq!(
        lines[0].find("ERROR"),
        bad.find("ValueError"),
        "in its column:\n{text}"
    );

    // Bad filter values are usage errors.
    for args in [
        ["history", "--status", "nosuch"],
        ["history", "--since", "yesterday"],
        ["history", "--until", "3x"],
    ] {
        let out = env.cmd(args);
        assert_code(&out, 2, &format!("{args:?}"));
    }
}

/// A paused execution did not fail: `history` gives it no error (its record's error says where
/// it paused, before that node ran), while a failed one's says why.
#[test]
fn history_gives_a_paused_execution_no_error() {
    let env = Env::new();
    let wf = env.write_workflow(
        "two.json",
        &json!({"id": "two", "nodes": [
            {"id": "a", "type": "template", "template": "x"},
            {"id": "b", "type": "template", "template": "y"}]}),
    );
    assert_code(&env.run(&wf, "{}", &["--break-before", "b"]), 75, "paused");
    let text = stdout(&env.cmd(["history"]));
    assert!(text.contains("paused"), "{text}");
    assert!(
        !text.contains("ERROR") && !text.contains("Paused"),
        "{text}"
    );
}

/// A node or execution that took under a tenth of a millisecond shows its microseconds in
/// `show` and `history`: it printed `0.0 ms`, which reads as nothing done.
#[test]
fn durations_under_a_tenth_of_a_millisecond_show_their_microseconds() {
    let env = Env::new();
    let wf = env.write_workflow(
        "quick.json",
        &json!({"id": "quick", "nodes": [code("n", "return 1")]}),
    );
    assert_success(&env.run(&wf, "{}", &[]), "run");
    let id = env.only_execution_id();
    // Recorded durations this short, whatever this machine's took.
    let db = env.db_rw();
    let set = |sql: &str| db.execute(sql, rusqlite::params![id]).unwrap();
    assert_eq!(
        set("UPDATE executions SET duration_ms = 0.042 WHERE id = ?1"),
        1
    );
    assert_eq!(
        set("UPDATE node_executions SET duration_ms = 0.02 WHERE execution_id = ?1"),
        1
    );
    drop(db);
    let shown = stdout(&env.cmd(["show", &id]));
    assert!(
        shown.contains(", took 42 µs") && shown.contains("✓ n  success  20 µs"),
        "{shown}"
    );
    let listed = stdout(&env.cmd(["history"]));
    assert!(
        listed.contains(" 42 µs") && !listed.contains("0.0 ms"),
        "{listed}"
    );
}

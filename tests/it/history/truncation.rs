//! Oversized outputs and triggers stored truncated, and resuming after a node timeout.

use super::{
    code, count, id_of, ids, output_of, pairs, path_str, statuses, tracked, trail, trail_input,
    write_json,
};
use crate::support::*;
use serde_json::json;

// ---------------------------------------------------------------------------------------------
// 9. truncation
// ---------------------------------------------------------------------------------------------

#[test]
fn an_oversized_output_is_stored_truncated_but_downstream_gets_it_whole() {
    let env = Env::new();
    let size = 1_200_000;
    let wf = env.write_workflow(
        "huge.json",
        &json!({
            "id": "huge",
            "nodes": [
                tracked("big", &format!("return 'x' * {size}")),
                tracked("measure", "return len(nodes['big']['output'])"),
                tracked("gate", "import os\nif os.path.exists(trigger['flag']):\n    raise ValueError('flag')\nreturn nodes['measure']['output']")
            ]
        }),
    );
    env.write_file("fail.flag", "");
    let out = env.run(&wf, &trail_input(&env), &["--json"]);
    assert_code(&out, 1, "run failing at gate");
    let first = id_of(&out);
    let stored = output_of(&env, &first, "big");
    assert_eq!(
        stored["$flowrun_truncated"],
        json!(true),
        "{}",
        &stored.to_string()[..200.min(stored.to_string().len())]
    );
    assert!(
        stored["bytes"].as_u64().unwrap() >= size,
        "bytes: {}",
        stored["bytes"]
    );
    assert!(stored["preview"].as_str().unwrap().starts_with("\"xxx"));
    let raw: i64 = count(
        &env,
        &format!("SELECT MAX(LENGTH(output)) FROM node_executions WHERE execution_id = '{first}'"),
    );
    assert!(raw < 64 * 1024, "a stored output is {raw} bytes");
    assert_eq!(output_of(&env, &first, "measure"), json!(size));
    let shown = env.cmd(["show", &first]);
    assert_success(&shown, "show");
    let text = stdout(&shown);
    assert!(
        text.contains(&format!("[truncated: {} bytes in all", stored["bytes"])),
        "{}",
        &text[..text.len().min(2000)]
    );

    // A truncated output cannot be reused: resume runs the node again, and downstream again
    // gets the whole value.
    std::fs::remove_file(env.path("fail.flag")).unwrap();
    let out = env.cmd(["resume", &first, "--json"]);
    assert_success(&out, "resume");
    let second = id_of(&out);
    assert_eq!(
        trail(&env),
        ids(&["big", "measure", "gate", "big", "measure", "gate"])
    );
    assert_eq!(
        statuses(&env, &second),
        pairs(&[
            ("big", "success"),
            ("measure", "success"),
            ("gate", "success")
        ])
    );
    assert_eq!(output_of(&env, &second, "gate"), json!(size));
    assert_eq!(env.execution(&second).output, Some(json!(size)));
}

#[test]
fn rerun_of_an_execution_whose_trigger_was_truncated_asks_for_the_data() {
    let env = Env::new();
    let wf = env.write_workflow(
        "bigin.json",
        &json!({"id": "bigin", "nodes": [code("n", "return len(trigger['s'])")]}),
    );
    let size = 1_100_000;
    let input = write_json(&env, "in.json", &json!({"s": "y".repeat(size)}));
    let out = env.cmd([
        "run",
        path_str(&wf),
        "--input-file",
        path_str(&input),
        "--json",
    ]);
    assert_success(&out, "run with a big trigger");
    let first = id_of(&out);
    assert_eq!(env.execution(&first).output, Some(json!(size)));
    let stored = env.execution(&first).trigger;
    assert_eq!(stored["$flowrun_truncated"], json!(true));
    let bytes = stored["bytes"].as_u64().unwrap();
    assert!(bytes > size as u64);

    // The stored marker is not the data: rerun and resume refuse to run with it…
    for verb in ["rerun", "resume"] {
        let out = env.cmd([verb, &first]);
        assert_code(&out, 2, &format!("{verb} of a truncated trigger"));
        assert!(
            stderr(&out).contains(&format!(
                "the trigger data of execution {first} ({bytes} bytes) was over the storage limit"
            )),
            "{}",
            describe(&out)
        );
    }
    assert_eq!(env.execution_count(), 1);
    // …and run when it is given again.
    let out = env.cmd(["rerun", &first, "--input-file", path_str(&input), "--json"]);
    assert_success(&out, "rerun with the trigger given again");
    assert_eq!(env.execution(&id_of(&out)).output, Some(json!(size)));
}

#[test]
fn resume_after_a_node_timeout_runs_from_the_timed_out_node() {
    let env = Env::new();
    let mut slow = tracked(
        "slow",
        "import os, time\nif os.path.exists(trigger['flag']):\n    time.sleep(30)\nreturn 'done'",
    );
    slow["timeout_ms"] = json!(300);
    let wf = env.write_workflow(
        "to.json",
        &json!({
            "id": "to",
            "nodes": [
                tracked("before", "return 'b'"),
                slow,
                tracked("after", "return nodes['slow']['output'] + '!'")
            ]
        }),
    );
    env.write_file("fail.flag", "");
    let out = env.run(
        &wf,
        &trail_input(&env),
        &["--json", "--kill-grace-ms", "200"],
    );
    assert_code(&out, 124, "run with a node timing out");
    let first = id_of(&out);
    assert_eq!(env.execution(&first).status, "timeout");
    assert_eq!(
        statuses(&env, &first),
        pairs(&[("before", "success"), ("slow", "timeout")])
    );
    std::fs::remove_file(env.path("fail.flag")).unwrap();
    let out = env.cmd(["resume", &first, "--json"]);
    assert_success(&out, "resume after the timeout");
    let second = id_of(&out);
    assert_eq!(trail(&env), ids(&["before", "slow", "slow", "after"]));
    assert_eq!(
        statuses(&env, &second),
        pairs(&[
            ("before", "reused"),
            ("slow", "success"),
            ("after", "success")
        ])
    );
    assert_eq!(output_of(&env, &second, "after"), json!("done!"));
    assert!(
        stderr(&out).contains(&format!(
            "resume: 'slow' runs (it ended timeout in {first})"
        )),
        "{}",
        stderr(&out)
    );
}

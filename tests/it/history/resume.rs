//! `resume` from the failed node, with new input, and with a changed file.

use super::{
    from_execution, id_of, ids, output_of, pairs, parent, path_str, statuses, tracked, trail,
    trail_input,
};
use crate::support::*;
use serde_json::{Value, json};
use std::path::PathBuf;

// ---------------------------------------------------------------------------------------------
// 2. resume from the failed node
// ---------------------------------------------------------------------------------------------

/// n1 → n2 → n3 → n4, each appending to the trail; n3 fails while the flag file exists. n1's
/// output is different on every run (so a reused output is told from a recomputed one).
fn chain(env: &Env) -> PathBuf {
    env.write_workflow(
        "chain.json",
        &json!({
            "id": "chain",
            "nodes": [
                tracked("n1", "import uuid\nreturn {'token': uuid.uuid4().hex}"),
                tracked("n2", "return {'token': nodes['n1']['output']['token'], 'step': 2}"),
                tracked("n3", "import os\nif os.path.exists(trigger['flag']):\n    raise ValueError('flag is set')\nreturn nodes['n2']['output']['step'] + 1"),
                tracked("n4", "return {'token': nodes['n2']['output']['token'], 'step': nodes['n3']['output'] + 1}")
            ]
        }),
    )
}

#[test]
fn resume_reruns_only_the_failed_node_and_later_ones() {
    let env = Env::new();
    let wf = chain(&env);
    env.write_file("fail.flag", "");
    let out = env.run(&wf, &trail_input(&env), &["--json"]);
    assert_code(&out, 1, "run with n3 failing");
    let first = id_of(&out);
    assert_eq!(trail(&env), ids(&["n1", "n2", "n3"]));
    assert_eq!(
        statuses(&env, &first),
        pairs(&[("n1", "success"), ("n2", "success"), ("n3", "error")])
    );
    let token = output_of(&env, &first, "n1")["token"].clone();
    assert!(token.is_string());

    // Still failing: only n3 runs again, n1 and n2 come from the first execution.
    let out = env.cmd(["resume", &first, "--json"]);
    assert_code(&out, 1, "resume while n3 still fails");
    let second = id_of(&out);
    assert_eq!(trail(&env), ids(&["n1", "n2", "n3", "n3"]));
    assert_eq!(
        statuses(&env, &second),
        pairs(&[("n1", "reused"), ("n2", "reused"), ("n3", "error")])
    );
    assert_eq!(from_execution(&env, &second, "n1"), Some(first.clone()));
    assert_eq!(from_execution(&env, &second, "n2"), Some(first.clone()));
    assert_eq!(from_execution(&env, &second, "n3"), None);
    assert_eq!(
        parent(&env, &second),
        (Some(first.clone()), Some("resume".into()))
    );
    let err = stderr(&out);
    assert!(
        err.contains(&format!("resume: 'n3' runs (it ended error in {first})")),
        "{err}"
    );
    assert!(
        err.contains(&format!("resume: 'n4' runs (it did not run in {first})")),
        "{err}"
    );
    assert!(
        err.contains(&format!("resume: reusing n1, n2 from {first}")),
        "{err}"
    );

    // Fixed: resuming the resume runs n3 and n4 once; the reused nodes still point at the
    // execution that really produced them, not at the resume in between.
    std::fs::remove_file(env.path("fail.flag")).unwrap();
    let out = env.cmd(["resume", &second, "--json"]);
    assert_success(&out, "resume after the fix");
    let third = id_of(&out);
    assert!(
        stderr(&out).contains(&format!(
            "resume: reusing n1, n2 from {first} (reused by {second})\n"
        )),
        "the note names where the outputs come from, as show does: {}",
        stderr(&out)
    );
    assert_eq!(trail(&env), ids(&["n1", "n2", "n3", "n3", "n3", "n4"]));
    assert_eq!(
        statuses(&env, &third),
        pairs(&[
            ("n1", "reused"),
            ("n2", "reused"),
            ("n3", "success"),
            ("n4", "success")
        ])
    );
    assert_eq!(from_execution(&env, &third, "n1"), Some(first.clone()));
    assert_eq!(from_execution(&env, &third, "n2"), Some(first.clone()));
    assert_eq!(from_execution(&env, &third, "n3"), None);
    assert_eq!(
        parent(&env, &third),
        (Some(second.clone()), Some("resume".into()))
    );
    // Downstream saw the reused outputs, not recomputed ones.
    assert_eq!(output_of(&env, &third, "n1")["token"], token);
    assert_eq!(
        output_of(&env, &third, "n4"),
        json!({"token": token, "step": 4})
    );
    assert_eq!(
        env.execution(&third).output,
        Some(json!({"token": token, "step": 4}))
    );
    let shown = env.cmd(["show", &third]);
    assert_success(&shown, "show of the resume");
    let text = stdout(&shown);
    assert!(text.contains(&format!("resume     of {second}")), "{text}");
    for node in ["n1", "n2"] {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("● {node}  reused")))
            .unwrap_or_else(|| panic!("no reused line for {node}\n{text}"));
        assert!(
            line.ends_with(&format!("(from execution {first})")),
            "{line}"
        );
    }
    let shown = env.show_json(&third);
    let nodes = shown["nodes"].as_array().unwrap();
    assert_eq!(nodes[0]["from_execution"], json!(first));
    assert_eq!(nodes[3]["from_execution"], Value::Null);

    // Resuming a success reuses everything, each from its producer; nothing runs.
    let out = env.cmd(["resume", &third, "--json"]);
    assert_success(&out, "resume of a success");
    let fourth = id_of(&out);
    assert!(
        stderr(&out).contains(&format!(
            "resume: reusing n1, n2 from {first} (reused by {third}); n3, n4 from {third}\n"
        )),
        "{}",
        stderr(&out)
    );
    assert_eq!(trail(&env).len(), 6, "nothing ran: {:?}", trail(&env));
    assert_eq!(
        statuses(&env, &fourth),
        pairs(&[
            ("n1", "reused"),
            ("n2", "reused"),
            ("n3", "reused"),
            ("n4", "reused")
        ])
    );
    assert_eq!(from_execution(&env, &fourth, "n1"), Some(first.clone()));
    assert_eq!(from_execution(&env, &fourth, "n3"), Some(third.clone()));
    assert_eq!(from_execution(&env, &fourth, "n4"), Some(third.clone()));
    assert_eq!(env.execution(&fourth).output, env.execution(&third).output);
}

#[test]
fn resume_with_input_gives_the_running_nodes_the_new_trigger() {
    let env = Env::new();
    // `a` does not read the trigger (it is reused); `b` and `c` do (they run again, since the
    // trigger data changed: same definition, different inputs).
    let wf = env.write_workflow(
        "inp.json",
        &json!({
            "id": "inp",
            "nodes": [
                { "id": "a", "type": "set", "fields": { "k": "constant" } },
                tracked("b", "return 'b'"),
                tracked("c", "if trigger['fail']:\n    raise ValueError('asked to fail')\nreturn trigger['fail']"),
            ]
        }),
    );
    let mut input: Value = serde_json::from_str(&trail_input(&env)).unwrap();
    input["fail"] = json!(true);
    let out = env.run(&wf, &input.to_string(), &["--json"]);
    assert_code(&out, 1, "run asked to fail");
    let first = id_of(&out);
    input["fail"] = json!(false);
    let out = env.cmd(["resume", &first, "--input", &input.to_string(), "--json"]);
    assert_success(&out, "resume with fail: false");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("'b' runs (it reads the trigger data, which changed)"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let second = id_of(&out);
    assert_eq!(trail(&env), ids(&["b", "c", "b", "c"]));
    assert_eq!(
        statuses(&env, &second),
        pairs(&[("a", "reused"), ("b", "success"), ("c", "success")])
    );
    assert_eq!(output_of(&env, &second, "c"), json!(false));
    assert_eq!(env.execution(&second).trigger["fail"], json!(false));

    // The same trigger again: nothing that succeeded runs again.
    let out = env.cmd(["resume", &second, "--input", &input.to_string(), "--json"]);
    assert_success(&out, "resume with the same input");
    let third = id_of(&out);
    assert_eq!(trail(&env), ids(&["b", "c", "b", "c"]));
    assert_eq!(
        statuses(&env, &third),
        pairs(&[("a", "reused"), ("b", "reused"), ("c", "reused")])
    );
}

// ---------------------------------------------------------------------------------------------
// 3. resume with a changed file
// ---------------------------------------------------------------------------------------------

/// a → b → c, and d (after a only, independent of b and c); c fails until fixed.
fn diamond(b_body: &str, c_body: &str) -> Value {
    json!({
        "id": "edit",
        "nodes": [
            tracked("a", "return 10"),
            tracked("b", b_body),
            tracked("c", c_body),
            tracked("d", "return nodes['a']['output'] * 100")
        ]
    })
}

#[test]
fn resume_with_a_changed_file_reruns_the_changed_node_and_its_dependants_only() {
    let env = Env::new();
    let b1 = "return nodes['a']['output'] + 1";
    let c_bug = "return nodes['b']['output'] / 0";
    let c_fixed = "return nodes['b']['output'] * 2";
    let wf = env.write_workflow("edit.json", &diamond(b1, c_bug));
    let out = env.run(&wf, &trail_input(&env), &["--json"]);
    assert_code(&out, 1, "run with a bug in c");
    let first = id_of(&out);
    assert_eq!(trail(&env), ids(&["a", "b", "c"]));

    // Fix c in the file: c runs (changed and failed), d never ran; a and b are reused.
    env.write_workflow("edit.json", &diamond(b1, c_fixed));
    let out = env.cmd(["resume", &first, "--file", path_str(&wf), "--json"]);
    assert_success(&out, "resume with c fixed");
    let second = id_of(&out);
    assert_eq!(trail(&env), ids(&["a", "b", "c", "c", "d"]));
    assert_eq!(
        statuses(&env, &second),
        pairs(&[
            ("a", "reused"),
            ("b", "reused"),
            ("c", "success"),
            ("d", "success")
        ])
    );
    assert_eq!(output_of(&env, &second, "c"), json!(22));
    assert!(
        stderr(&out).contains("resume: 'c' runs (its definition changed)"),
        "{}",
        stderr(&out)
    );

    // Change b: b and c (its dependant) run; a and d (independent of b) are reused, pointing
    // at the executions that produced them.
    let b2 = "return nodes['a']['output'] + 5";
    env.write_workflow("edit.json", &diamond(b2, c_fixed));
    let out = env.cmd(["resume", &second, "--file", path_str(&wf), "--json"]);
    assert_success(&out, "resume with b changed");
    let third = id_of(&out);
    assert_eq!(trail(&env), ids(&["a", "b", "c", "c", "d", "b", "c"]));
    assert_eq!(
        statuses(&env, &third),
        pairs(&[
            ("a", "reused"),
            ("b", "success"),
            ("c", "success"),
            ("d", "reused")
        ])
    );
    assert_eq!(from_execution(&env, &third, "a"), Some(first.clone()));
    assert_eq!(from_execution(&env, &third, "d"), Some(second.clone()));
    assert_eq!(output_of(&env, &third, "b"), json!(15));
    assert_eq!(output_of(&env, &third, "c"), json!(30));
    assert_eq!(output_of(&env, &third, "d"), json!(1000));
    let err = stderr(&out);
    assert!(
        err.contains("resume: 'b' runs (its definition changed)"),
        "{err}"
    );
    assert!(err.contains("resume: 'c' runs ('b' runs again)"), "{err}");
    // The new definition is what the execution ran.
    let def = env
        .snapshot_text(&env.execution(&third).snapshot_hash)
        .unwrap();
    assert!(def.contains("+ 5"), "{def}");

    // A new node in the file runs; everything unchanged is reused.
    let mut wf3 = diamond(b2, c_fixed);
    wf3["nodes"].as_array_mut().unwrap().push(tracked(
        "e",
        "return nodes['c']['output'] + nodes['d']['output']",
    ));
    env.write_workflow("edit.json", &wf3);
    let out = env.cmd(["resume", &third, "--file", path_str(&wf), "--json"]);
    assert_success(&out, "resume with a new node");
    let fourth = id_of(&out);
    assert_eq!(trail(&env).last().map(String::as_str), Some("e"));
    assert_eq!(trail(&env).len(), 8);
    assert_eq!(output_of(&env, &fourth, "e"), json!(1030));
    assert!(stderr(&out).contains("resume: 'e' runs (it is new)"));
}

/// A paused execution stays `paused` once resumed (the resume is another execution): its
/// record says where it went on — `show`, `show --json` (`later_runs`) — and resuming it again
/// says it was resumed before.
#[test]
fn a_resumed_execution_says_where_it_went_on() {
    let env = Env::new();
    let wf = env.write_workflow(
        "bp.json",
        &json!({ "id": "bp", "nodes": [
            { "id": "one", "type": "code", "code": "return 1" },
            { "id": "two", "type": "code", "code": "return 2" }
        ]}),
    );
    let out = env.run(&wf, "{}", &["--break-before", "two"]);
    assert_code(&out, 75, "run --break-before two");
    let paused = env.only_execution_id();
    let out = env.cmd(["resume", &paused, "--json"]);
    assert_success(&out, "resume");
    let first = id_of(&out);
    assert!(!stderr(&out).contains("resumed before"), "{}", stderr(&out));
    let out = env.cmd(["resume", &paused, "--json"]);
    assert_success(&out, "resume again");
    let second = id_of(&out);
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "note: execution {paused} was resumed before, as {first} (success); this resumes it again"
        )),
        "{err}"
    );
    let out = env.cmd(["rerun", &paused, "--json"]);
    assert_success(&out, "rerun");
    let rerun = id_of(&out);

    let record = env.show_json(&paused);
    assert_eq!(
        record["status"], "paused",
        "a resume leaves the paused record as it was"
    );
    let later: Vec<(Value, Value, Value)> = record["later_runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["id"].clone(), l["relation"].clone(), l["status"].clone()))
        .collect();
    assert_eq!(
        later,
        vec![
            (json!(first), json!("resume"), json!("success")),
            (json!(second), json!("resume"), json!("success")),
            (json!(rerun), json!("rerun"), json!("success")),
        ]
    );
    assert_eq!(env.show_json(&first)["later_runs"], json!([]));
    let text = String::from_utf8_lossy(&env.cmd(["show", &paused]).stdout).into_owned();
    assert!(
        text.contains(&format!(
            "resumed    as {first} (success), {second} (success)\n"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("re-run     as {rerun} (success)\n")),
        "{text}"
    );
}

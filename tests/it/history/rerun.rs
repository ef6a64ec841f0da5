//! `rerun`: outputs reproduced from the snapshot, the parent link, and what is refused.

use super::{code, finish, gated, id_of, output_of, outputs, parent, path_str, record, spawn};
use crate::support::*;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// 1. rerun
// ---------------------------------------------------------------------------------------------

fn deterministic(factor: i64, version: &str) -> Value {
    json!({
        "id": "det",
        "name": "Deterministic",
        "nodes": [
            code("double", &format!("return trigger['n'] * {factor}")),
            {"id": "label", "type": "set",
             "fields": {"value": "{{ nodes.double.output }}", "version": version}},
            code("sum", "return {'sum': nodes['label']['output']['value'] + 1, 'v': nodes['label']['output']['version']}")
        ]
    })
}

#[test]
fn rerun_reproduces_outputs_links_its_parent_and_uses_the_snapshot() {
    let env = Env::new();
    let wf = env.write_workflow("det.json", &deterministic(2, "v1"));
    let out = env.run(&wf, r#"{"n": 21}"#, &["--json"]);
    assert_success(&out, "run");
    let first = id_of(&out);
    assert_eq!(
        outputs(&env, &first),
        vec![
            ("double".into(), "success".into(), json!(42)),
            (
                "label".into(),
                "success".into(),
                json!({"value": 42, "version": "v1"})
            ),
            (
                "sum".into(),
                "success".into(),
                json!({"sum": 43, "v": "v1"})
            ),
        ]
    );

    // Same node outputs, a new execution that says which one it re-ran.
    let out = env.cmd(["rerun", &first, "--json"]);
    assert_success(&out, "rerun");
    let again = id_of(&out);
    assert_ne!(again, first);
    assert_eq!(outputs(&env, &again), outputs(&env, &first));
    assert_eq!(
        parent(&env, &again),
        (Some(first.clone()), Some("rerun".into()))
    );
    assert_eq!(parent(&env, &first), (None, None));
    let rec = record(&out);
    assert_eq!(rec["parent_id"], json!(first));
    assert_eq!(rec["relation"], "rerun");
    assert_eq!(env.execution(&again).trigger, json!({"n": 21}));
    assert_eq!(
        env.execution(&again).snapshot_hash,
        env.execution(&first).snapshot_hash
    );
    let shown = env.cmd(["show", &again]);
    assert_success(&shown, "show");
    assert!(
        stdout(&shown).contains(&format!("rerun      of {first}")),
        "show names the parent\n{}",
        stdout(&shown)
    );
    let shown = env.show_json(&again);
    assert_eq!(shown["parent_id"], json!(first));
    assert_eq!(shown["relation"], "rerun");
    let listed = env.history_json(&[]);
    let row = listed.iter().find(|e| e["id"] == json!(again)).unwrap();
    assert_eq!(row["parent_id"], json!(first));
    assert_eq!(row["relation"], "rerun");

    // --input overrides the trigger data.
    let out = env.cmd(["rerun", &first, "--input", r#"{"n": 5}"#, "--json"]);
    assert_success(&out, "rerun --input");
    let overridden = id_of(&out);
    assert_eq!(env.execution(&overridden).trigger, json!({"n": 5}));
    assert_eq!(output_of(&env, &overridden, "double"), json!(10));
    assert_eq!(
        output_of(&env, &overridden, "sum"),
        json!({"sum": 11, "v": "v1"})
    );
    assert_eq!(
        parent(&env, &overridden),
        (Some(first.clone()), Some("rerun".into()))
    );

    // The file changes on disk: rerun still runs the definition the execution ran…
    env.write_workflow("det.json", &deterministic(3, "v2"));
    let out = env.cmd(["rerun", &first, "--json"]);
    assert_success(&out, "rerun after the file changed");
    let snap = id_of(&out);
    assert_eq!(outputs(&env, &snap), outputs(&env, &first));
    assert_eq!(
        env.execution(&snap).snapshot_hash,
        env.execution(&first).snapshot_hash
    );

    // …and `--file` runs the file as it is now, still recorded as a rerun of the first.
    let out = env.cmd(["rerun", &first, "--file", path_str(&wf), "--json"]);
    assert_success(&out, "rerun --file");
    let fresh = id_of(&out);
    assert_eq!(env.execution(&fresh).trigger, json!({"n": 21}));
    assert_eq!(output_of(&env, &fresh, "double"), json!(63));
    assert_eq!(
        output_of(&env, &fresh, "sum"),
        json!({"sum": 64, "v": "v2"})
    );
    assert_ne!(
        env.execution(&fresh).snapshot_hash,
        env.execution(&first).snapshot_hash
    );
    assert_eq!(
        parent(&env, &fresh),
        (Some(first.clone()), Some("rerun".into()))
    );
    let new_def = env
        .snapshot_text(&env.execution(&fresh).snapshot_hash)
        .unwrap();
    assert!(new_def.contains("v2"), "{new_def}");
}

#[test]
fn rerun_of_a_running_or_unknown_execution_is_refused() {
    let env = Env::new();
    let out = env.cmd(["rerun", "0123456789abcdef"]);
    assert_code(&out, 2, "rerun of an unknown id");
    assert!(stderr(&out).contains("no execution matches '0123456789abcdef'"));
    let out = env.cmd(["resume", "0123456789abcdef"]);
    assert_code(&out, 2, "resume of an unknown id");
    assert_eq!(env.execution_count(), 0);

    let wf = env.write_workflow(
        "gate.json",
        &json!({"id": "gate", "nodes": [gated("wait", "")]}),
    );
    let input = json!({"gate": env.path("gate")}).to_string();
    let run = spawn(&env, &["run", path_str(&wf), "--input", &input]);
    let id = wait_for("the execution row", || {
        env.try_execution_ids().and_then(|ids| ids.first().cloned())
    });
    for verb in ["rerun", "resume"] {
        let out = env.cmd([verb, &id]);
        assert_code(&out, 2, &format!("{verb} of a running execution"));
        assert!(
            stderr(&out).contains("is still running"),
            "{}",
            describe(&out)
        );
    }
    env.write_file("gate", "");
    assert!(finish(run, "the gated run").success());
    assert_eq!(env.execution_count(), 1);
}

/// Trigger data `rerun` and `resume` refuse is refused in `run`'s words, naming what gave it
/// (`--input: …`, `--input-file F: …`) and with its hint for single quotes: `rerun` said
/// `--input is not valid JSON: …`, and a refusal by the `inputs` schema named no flag.
#[test]
fn rerun_and_resume_refuse_trigger_data_as_run_does() {
    let env = Env::new();
    let wf = env.write_workflow(
        "typed.json",
        &json!({"id": "typed",
                "inputs": {"type": "object", "properties": {"n": {"type": "integer"}}},
                "nodes": [code("fail", "raise ValueError(trigger.get('n'))")]}),
    );
    assert_code(&env.run(&wf, r#"{"n": 1}"#, &[]), 1, "the first run fails");
    let first = env.only_execution_id();
    env.write_file("bad.json", "bad json");
    for (given, what) in [
        (vec!["--input", "bad json"], "--input: invalid input:"),
        (vec!["--input", "{'n': 1}"], "--input: invalid input:"),
        (
            vec!["--input-file", "bad.json"],
            "--input-file bad.json: invalid input:",
        ),
        (vec!["--input", r#"{"n": "x"}"#], "--input: invalid input:"),
    ] {
        let mut run = vec!["run", path_str(&wf)];
        run.extend(&given);
        let by_run = env.cmd(&run);
        assert_code(&by_run, 2, &format!("run {given:?}"));
        assert!(
            stderr(&by_run).starts_with(&format!("error: {what}")),
            "{}",
            describe(&by_run)
        );
        for verb in ["rerun", "resume"] {
            let mut again = vec![verb, first.as_str()];
            again.extend(&given);
            let out = env.cmd(&again);
            assert_code(&out, 2, &format!("{verb} {given:?}"));
            // After what a resume plans to run again (`resume: 'fail' runs …`), if it says it.
            assert!(
                stderr(&out).ends_with(&stderr(&by_run)),
                "{verb} {given:?}: {}\nrun said: {}",
                describe(&out),
                stderr(&by_run)
            );
        }
    }
    assert_eq!(env.execution_count(), 1, "nothing refused was recorded");
}

//! Pins: a definition-pinned node on resume, `--pin` on rerun and resume.

use super::{
    code, from_execution, id_of, ids, output_of, pairs, path_str, statuses, tracked, trail,
    trail_input, write_json,
};
use crate::support::*;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// 4. pins
// ---------------------------------------------------------------------------------------------

#[test]
fn a_definition_pinned_node_stays_pinned_on_resume_and_is_never_run() {
    let env = Env::new();
    let marker = env.path("pinned-ran");
    let mut src = code(
        "src",
        &format!(
            "open({:?}, 'w').write('ran')\nreturn {{'v': 'real'}}",
            marker.display().to_string()
        ),
    );
    src["pinned"] = json!({"v": "pinned-value"});
    let wf = env.write_workflow(
        "pinres.json",
        &json!({
            "id": "pinres",
            "nodes": [
                src,
                tracked("mid", "return nodes['src']['output']['v'] + '!'"),
                tracked("gate", "import os\nif os.path.exists(trigger['flag']):\n    raise ValueError('flag')\nreturn nodes['mid']['output']")
            ]
        }),
    );
    env.write_file("fail.flag", "");
    let out = env.run(&wf, &trail_input(&env), &["--json"]);
    assert_code(&out, 1, "run failing at gate");
    let first = id_of(&out);
    assert_eq!(
        statuses(&env, &first),
        pairs(&[("src", "pinned"), ("mid", "success"), ("gate", "error")])
    );
    std::fs::remove_file(env.path("fail.flag")).unwrap();
    let out = env.cmd(["resume", &first, "--json"]);
    assert_success(&out, "resume");
    let second = id_of(&out);
    assert_eq!(
        statuses(&env, &second),
        pairs(&[("src", "pinned"), ("mid", "reused"), ("gate", "success")])
    );
    assert_eq!(from_execution(&env, &second, "src"), None);
    assert_eq!(from_execution(&env, &second, "mid"), Some(first.clone()));
    assert_eq!(
        output_of(&env, &second, "src"),
        json!({"v": "pinned-value"})
    );
    assert_eq!(output_of(&env, &second, "gate"), json!("pinned-value!"));
    assert_eq!(trail(&env), ids(&["mid", "gate", "gate"]));
    assert!(!marker.exists(), "the pinned node's code ran");
    let shown = stdout(&env.cmd(["show", &second]));
    assert!(shown.contains("● src  pinned"), "{shown}");

    // A new pinned value in the file: the node stays pinned, what reads it runs again.
    let mut changed: Value = serde_json::from_str(&std::fs::read_to_string(&wf).unwrap()).unwrap();
    changed["nodes"][0]["pinned"] = json!({"v": "new-pin"});
    env.write_workflow("pinres.json", &changed);
    let out = env.cmd(["resume", &second, "--file", path_str(&wf), "--json"]);
    assert_success(&out, "resume with a new pinned value");
    let third = id_of(&out);
    assert_eq!(
        statuses(&env, &third),
        pairs(&[("src", "pinned"), ("mid", "success"), ("gate", "success")])
    );
    assert_eq!(output_of(&env, &third, "gate"), json!("new-pin!"));
    assert_eq!(trail(&env), ids(&["mid", "gate", "gate", "mid", "gate"]));
    assert!(
        stderr(&out).contains("resume: 'mid' runs ('src' is pinned to a new output)"),
        "{}",
        stderr(&out)
    );
    assert!(!marker.exists(), "the pinned node's code ran");
}

#[test]
fn pin_on_rerun_and_resume_replaces_the_node_and_downstream_sees_it() {
    let env = Env::new();
    let wf = env.write_workflow(
        "pins.json",
        &json!({
            "id": "pins",
            "nodes": [
                tracked("src", "return {'v': 1}"),
                tracked("mid", "return nodes['src']['output']['v'] * 10"),
                tracked("gate", "import os\nif os.path.exists(trigger['flag']):\n    raise ValueError('flag')\nreturn 'open'"),
                tracked("end", "return nodes['mid']['output'] + 1")
            ]
        }),
    );
    let pin = write_json(&env, "src.json", &json!({"v": 5}));
    let pin_arg = format!("src={}", pin.display());
    let out = env.run(&wf, &trail_input(&env), &["--json"]);
    assert_success(&out, "run");
    let first = id_of(&out);
    assert_eq!(output_of(&env, &first, "end"), json!(11));

    // rerun --pin: src does not run, everything downstream sees the pinned output.
    std::fs::remove_file(env.path("trail.txt")).unwrap();
    let out = env.cmd(["rerun", &first, "--pin", &pin_arg, "--json"]);
    assert_success(&out, "rerun --pin");
    let pinned = id_of(&out);
    assert_eq!(trail(&env), ids(&["mid", "gate", "end"]));
    assert_eq!(
        statuses(&env, &pinned),
        pairs(&[
            ("src", "pinned"),
            ("mid", "success"),
            ("gate", "success"),
            ("end", "success")
        ])
    );
    assert_eq!(output_of(&env, &pinned, "end"), json!(51));

    // resume --pin of a failed execution: the pin wins over reuse, and the nodes that read the
    // pinned node run again instead of reusing outputs computed from the old value.
    env.write_file("fail.flag", "");
    let out = env.run(&wf, &trail_input(&env), &["--json"]);
    assert_code(&out, 1, "run failing at gate");
    let failed = id_of(&out);
    std::fs::remove_file(env.path("fail.flag")).unwrap();
    std::fs::remove_file(env.path("trail.txt")).unwrap();
    let out = env.cmd(["resume", &failed, "--pin", &pin_arg, "--json"]);
    assert_success(&out, "resume --pin");
    let resumed = id_of(&out);
    assert_eq!(
        statuses(&env, &resumed),
        pairs(&[
            ("src", "pinned"),
            ("mid", "success"),
            ("gate", "success"),
            ("end", "success")
        ])
    );
    assert_eq!(trail(&env), ids(&["mid", "gate", "end"]));
    assert_eq!(output_of(&env, &resumed, "mid"), json!(50));
    assert_eq!(output_of(&env, &resumed, "end"), json!(51));
    assert_eq!(from_execution(&env, &resumed, "src"), None);
    assert!(
        stderr(&out).contains("resume: 'mid' runs ('src' is pinned to a new output)"),
        "{}",
        stderr(&out)
    );

    // Pinned to the output it had: what read it is reused.
    env.write_file("fail.flag", "");
    let out = env.run(&wf, &trail_input(&env), &["--json"]);
    assert_code(&out, 1, "run failing at gate");
    let failed = id_of(&out);
    std::fs::remove_file(env.path("fail.flag")).unwrap();
    std::fs::remove_file(env.path("trail.txt")).unwrap();
    let same = write_json(&env, "same.json", &json!({"v": 1}));
    let out = env.cmd([
        "resume",
        &failed,
        "--pin",
        &format!("src={}", same.display()),
        "--json",
    ]);
    assert_success(&out, "resume --pin with the recorded output");
    let resumed = id_of(&out);
    assert_eq!(
        statuses(&env, &resumed),
        pairs(&[
            ("src", "pinned"),
            ("mid", "reused"),
            ("gate", "success"),
            ("end", "success")
        ])
    );
    assert_eq!(trail(&env), ids(&["gate", "end"]));
    assert_eq!(output_of(&env, &resumed, "end"), json!(11));

    // A pin for a node that never ran in the resumed execution.
    let end_pin = write_json(&env, "end.json", &json!("pinned end"));
    env.write_file("fail.flag", "");
    let out = env.run(&wf, &trail_input(&env), &["--json"]);
    assert_code(&out, 1, "run failing at gate");
    let failed = id_of(&out);
    std::fs::remove_file(env.path("fail.flag")).unwrap();
    std::fs::remove_file(env.path("trail.txt")).unwrap();
    let out = env.cmd([
        "resume",
        &failed,
        "--pin",
        &format!("end={}", end_pin.display()),
        "--json",
    ]);
    assert_success(&out, "resume --pin of a node that did not run");
    let resumed = id_of(&out);
    assert_eq!(
        statuses(&env, &resumed),
        pairs(&[
            ("src", "reused"),
            ("mid", "reused"),
            ("gate", "success"),
            ("end", "pinned")
        ])
    );
    assert_eq!(trail(&env), ids(&["gate"]));
    assert_eq!(env.execution(&resumed).output, Some(json!("pinned end")));
}

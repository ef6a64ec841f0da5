//! `command` nodes with `shell: true`: every template value is quoted for where it sits in the
//! line — a word of its own, inside `"…"`, inside `'…'`, inside `$( … )` — so trigger data
//! never becomes shell code; places where no quoting is safe are validation errors.

use crate::support::*;
use serde_json::json;

/// Values that would run code, expand, split or glob if pasted into a shell line as they are.
const HOSTILE: &[&str] = &[
    "x'; echo INJECTED >&2; echo '",
    "x\"; echo INJECTED >&2; echo \"",
    "$(echo INJECTED >&2)",
    "`echo INJECTED >&2`",
    "a\nb; echo INJECTED >&2",
    "; echo INJECTED >&2",
    "&& echo INJECTED >&2",
    "|| echo INJECTED >&2",
    "; touch PWNED",
    "$(touch PWNED)",
    "> PWNED",
    "*",
    "?ecoy",
    "[d]*",
    "~",
    "{a,b}",
    "$HOME",
    "${HOME}",
    "$((6*7))",
    "!",
    "# not a comment",
    "\\",
    "a\\",
    "'",
    "\"",
    "",
    "  two  spaces  ",
    "-n",
    "--help",
    "LD_PRELOAD=/nope x",
    "héllo wörld ✓ 日本語 🚀",
];

#[test]
fn template_values_in_a_shell_line_stay_data() {
    let env = Env::new();
    let work = env.path("work");
    std::fs::create_dir(&work).unwrap();
    // Something for an unquoted glob to find.
    std::fs::write(work.join("decoy"), "").unwrap();
    let nodes: Vec<_> = (0..HOSTILE.len())
        .map(|i| {
            let v = format!("{{{{ trigger.v[{i}] }}}}");
            json!({
                "id": format!("c{i}"), "type": "command", "shell": true, "cwd": work,
                "command": format!(
                    "printf '[%s]\\n' {v} --x={v}. \"<{v}>\" '<{v}>' \"$(printf '%s' {v})\""
                )
            })
        })
        .collect();
    let file = env.write_workflow("wf.json", &json!({ "id": "shell", "nodes": nodes }));
    let input = json!({ "v": HOSTILE }).to_string();
    let out = env.run(&file, &input, &[]);
    assert_code(&out, 0, "run");
    let mut left: Vec<String> = std::fs::read_dir(&work)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["decoy"], "the lines created files");
    let id = env.only_execution_id();
    for (i, value) in HOSTILE.iter().enumerate() {
        let row = env.node(&id, &format!("c{i}"));
        let o = row.output();
        let expected = format!(
            "[{value}]\n[--x={value}.]\n[<{value}>]\n[<{value}>]\n[{}]\n",
            value.trim_end_matches('\n')
        );
        assert_eq!(
            o["stdout"], expected,
            "value {value:?}: ran {:?}",
            row.input
        );
        // An injected `echo INJECTED >&2` would have written here.
        assert_eq!(o["stderr"], "", "value {value:?}");
    }
}

#[test]
fn a_value_where_no_quoting_is_safe_is_a_validation_error() {
    let env = Env::new();
    for (line, why) in [
        ("echo `echo {{ trigger.x }}`", "backticks"),
        ("echo \\{{ trigger.x }}", "backslash"),
        ("echo ${{ trigger.x }}", "follows `$`"),
        ("echo ${X:-{{ trigger.x }}}", "${"),
        ("cat <<EOF\n{{ trigger.x }}\nEOF", "here-document"),
        ("echo hi # {{ trigger.x }}", "comment"),
    ] {
        let file = env.write_workflow(
            "wf.json",
            &json!({ "id": "bad-shell", "nodes": [
                { "id": "cmd", "type": "command", "shell": true, "command": line }
            ]}),
        );
        let out = env.cmd(["validate", file.to_str().unwrap()]);
        assert_code(&out, 2, line);
        let err = stderr(&out);
        assert!(
            err.contains("command") && err.contains("{{ trigger.x }}") && err.contains(why),
            "{line}: {err}"
        );
        assert!(err.contains("env"), "says what to do instead: {err}");
        let out = env.run(&file, r#"{"x": "; echo INJECTED"}"#, &[]);
        assert_code(&out, 2, line);
    }
    assert_eq!(env.execution_count(), 0);
}

//! The generated script: hostile field values stay data, the output is deterministic, and the
//! script runs by hand with the same protocol the runner reads.

use crate::support::*;
use proptest::prelude::*;
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Command, Stdio};

/// `python3 -c "import ast,sys; ast.parse(...)"`: the file is valid Python.
fn assert_parses(script: &Path) {
    let out = Command::new("python3")
        .args([
            "-I",
            "-c",
            "import ast,sys; ast.parse(open(sys.argv[1], encoding='utf-8').read())",
        ])
        .arg(script)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{} is not valid Python:\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Values that have broken code generators before: quotes of every kind, escapes, line
/// breaks Python or editors honour, NUL, bidi controls, emoji, lone `}}`, and text that would be
/// code if it ever escaped its string literal.
fn hostile_values(pwned: &Path) -> Vec<String> {
    let p = pwned.display();
    vec![
        "it's \"quoted\"".into(),
        "'''triple single'''".into(),
        "\"\"\"triple double\"\"\"".into(),
        "back\\slash \\n \\x00 \\u2028 \\".into(),
        "trailing backslash \\".into(),
        "line1\nline2".into(),
        "carriage\rreturn\r\n".into(),
        "nul\u{0}byte".into(),
        "line\u{2028}separator\u{2029}paragraph".into(),
        "bidi \u{202E}desrever\u{202C} \u{2066}isolate\u{2069}".into(),
        "emoji 😀👩‍👩‍👧 and ünïcødé 日本語".into(),
        "closing }} without opening } }".into(),
        format!("'); import os; os.system('touch {p}') #"),
        format!("\"); import os; os.system(\"touch {p}\") #"),
        format!("'''); import os; os.system('touch {p}') #"),
        format!("\\'); import os; os.system('touch {p}') #"),
        format!("\n__import__('os').system('touch {p}')\n"),
        format!("\u{2028}__import__('os').system('touch {p}')"),
        "# -*- coding: latin-1 -*-".into(),
        "\t\u{b}\u{c}\u{1b}[31mansi\u{1b}[0m\u{7f}\u{85}".into(),
        "%s %r {0} {name} $HOME `id`".into(),
        String::new(),
    ]
}

#[test]
fn hostile_values_stay_data() {
    let env = Env::new();
    let pwned = env.path("pwned");
    let values = hostile_values(&pwned);
    let wf_name = values.join(" | ");
    let mut fields = serde_json::Map::new();
    for (i, v) in values.iter().enumerate() {
        fields.insert(format!("v{i}"), json!(v));
    }
    // Hostile keys too, and a nested list.
    fields.insert(values[12].clone(), json!("hostile key"));
    fields.insert("list".into(), json!(values.clone()));
    let template_text = format!(
        "{} {{{{ trigger.who }}}} {}",
        values[..11].join("·"),
        values[11..].join("·")
    );
    let node_names: Vec<&String> = values.iter().take(3).collect();
    let workflow = json!({
        "id": "hostile",
        "name": wf_name,
        "description": values[12],
        "nodes": [
            {"id": "fields", "name": node_names[0], "notes": values[13], "type": "set", "fields": fields},
            {"id": "text", "name": node_names[1], "type": "template", "template": template_text},
            {"id": "names", "name": node_names[2], "type": "code",
             "code": "import __main__\nwf = __main__.WORKFLOW\nreturn {'name': wf['name'], 'node_names': [n['name'] for n in wf['nodes']]}"}
        ]
    });
    let file = env.write_workflow("hostile.json", &workflow);

    // The script parses, and none of the injection text became code.
    let script = env.path("hostile.py");
    let out = env.cmd([
        std::ffi::OsStr::new("codegen"),
        file.as_os_str(),
        std::ffi::OsStr::new("-o"),
        script.as_os_str(),
    ]);
    assert_success(&out, "codegen -o");
    assert_parses(&script);
    let text = std::fs::read_to_string(&script).unwrap();
    for bad in [
        '\u{0}', '\u{2028}', '\u{2029}', '\u{202E}', '\u{2066}', '\r', '\u{85}',
    ] {
        assert!(
            !text.contains(bad),
            "the script contains a raw U+{:04X}",
            bad as u32
        );
    }

    // Running it gives every value back unchanged.
    let who = values[0].clone() + &values[7] + &values[9];
    let out = env.run(&file, &json!({ "who": who }).to_string(), &[]);
    assert_success(&out, "run hostile.json");
    assert!(
        !pwned.exists(),
        "the injection ran: {} exists",
        pwned.display()
    );

    let id = env.only_execution_id();
    let record = env.show_json(&id);
    assert_eq!(record["status"], "success");
    assert_eq!(record["workflow_name"], json!(wf_name));
    let output = |node: &str| -> Value {
        record["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["node_id"] == node)
            .unwrap_or_else(|| panic!("no node {node}"))["output"]
            .clone()
    };
    assert_eq!(output("fields"), Value::Object(fields));
    let expected_text = format!(
        "{} {who} {}",
        values[..11].join("·"),
        values[11..].join("·")
    );
    assert_eq!(output("text"), json!({ "text": expected_text }));
    assert_eq!(
        output("names"),
        json!({"name": wf_name, "node_names": node_names})
    );
    // The stored snapshot is the definition, byte for byte in meaning.
    let e = env.execution(&id);
    let snap: Value = serde_json::from_str(&env.snapshot_text(&e.snapshot_hash).unwrap()).unwrap();
    assert_eq!(snap, workflow);
    assert!(!pwned.exists());
}

#[test]
fn hostile_yaml_values_stay_data() {
    let env = Env::new();
    let pwned = env.path("pwned");
    let p = pwned.display();
    // YAML has its own escapes: double-quoted scalars with \0, \L (U+2028), \u202E, \x85.
    let yaml = format!(
        "id: hostile-yaml\n\
         name: \"'); import os; os.system('touch {p}') #\"\n\
         nodes:\n\
         \x20 - id: s\n\
         \x20   type: set\n\
         \x20   fields:\n\
         \x20     a: \"nul\\0 ls\\L bidi\\u202E nel\\N end\"\n\
         \x20     b: \"''' triple '''\"\n\
         \x20     c: |\n\
         \x20       multi\n\
         \x20       \"\"\"line\"\"\" \\ }}}}\n"
    );
    let file = env.write_file("hostile.yaml", &yaml);
    let script = env.path("hostile_yaml.py");
    let out = env.cmd([
        std::ffi::OsStr::new("codegen"),
        file.as_os_str(),
        std::ffi::OsStr::new("-o"),
        script.as_os_str(),
    ]);
    assert_success(&out, "codegen of hostile YAML");
    assert_parses(&script);
    let out = env.run(&file, "{}", &[]);
    assert_success(&out, "run hostile.yaml");
    assert!(!pwned.exists(), "the injection ran");
    let id = env.only_execution_id();
    let rec = env.show_json(&id);
    assert_eq!(
        rec["nodes"][0]["output"],
        json!({
            "a": "nul\u{0} ls\u{2028} bidi\u{202E} nel\u{85} end",
            "b": "''' triple '''",
            "c": "multi\n\"\"\"line\"\"\" \\ }}\n"
        })
    );
    assert_eq!(
        rec["workflow_name"],
        json!(format!("'); import os; os.system('touch {p}') #"))
    );
}

#[test]
fn codegen_is_deterministic_and_matches_the_script_that_runs() {
    let env = Env::new();
    for example_name in ["hello.json", "branch.yaml"] {
        let file = example(example_name);
        let a = env.cmd([std::ffi::OsStr::new("codegen"), file.as_os_str()]);
        let b = env.cmd([std::ffi::OsStr::new("codegen"), file.as_os_str()]);
        assert_success(&a, "codegen");
        assert_success(&b, "codegen");
        assert!(!a.stdout.is_empty());
        assert!(a.stdout == b.stdout, "codegen {example_name} twice differs");
        // -o writes the same bytes.
        let out_file = env.path(&format!("{example_name}.py"));
        let c = env.cmd([
            std::ffi::OsStr::new("codegen"),
            file.as_os_str(),
            std::ffi::OsStr::new("-o"),
            out_file.as_os_str(),
        ]);
        assert_success(&c, "codegen -o");
        assert!(c.stdout.is_empty(), "{}", describe(&c));
        assert!(
            std::fs::read(&out_file).unwrap() == a.stdout,
            "codegen -o wrote other bytes than codegen printed"
        );
        assert_parses(&out_file);
    }

    // The script the runner caches and runs is the one `codegen` prints, kept private.
    let out = env.run(&example("hello.json"), "{}", &[]);
    assert_success(&out, "run hello");
    let printed = env
        .cmd([
            std::ffi::OsStr::new("codegen"),
            example("hello.json").as_os_str(),
        ])
        .stdout;
    let scripts_dir = env.cache_dir().join("scripts");
    let scripts: Vec<_> = std::fs::read_dir(&scripts_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "py"))
        .collect();
    assert_eq!(scripts.len(), 1, "{scripts:?}");
    assert!(
        std::fs::read(&scripts[0]).unwrap() == printed,
        "the cached script differs from `flowrun codegen`"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&scripts[0]), 0o600, "script mode");
    assert_eq!(mode(&scripts_dir), 0o700, "scripts dir mode");
    assert_eq!(mode(&env.cache_dir()), 0o700, "cache dir mode");
}

#[test]
fn script_runs_by_hand_with_the_protocol() {
    let env = Env::new();
    let script = env.path("hello.py");
    let out = env.cmd([
        std::ffi::OsStr::new("codegen"),
        example("hello.json").as_os_str(),
        std::ffi::OsStr::new("-o"),
        script.as_os_str(),
    ]);
    assert_success(&out, "codegen -o");
    let trigger = env.write_file("trigger.json", r#"{"name": "Ada"}"#);
    let out = Command::new("python3")
        .arg(&script)
        .stdin(Stdio::from(std::fs::File::open(&trigger).unwrap()))
        .env_remove("FLOWRUN_NONCE")
        .output()
        .expect("python3 runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "python3 script.py failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    let marker = |l: &str| l.starts_with("@@flowrun:");
    assert!(
        lines.iter().any(|l| marker(l) && l.contains(":event ")),
        "{text}"
    );
    // One nonce for the whole run.
    let nonces: std::collections::BTreeSet<&str> = lines
        .iter()
        .filter(|l| marker(l))
        .map(|l| l.split(':').nth(1).unwrap())
        .collect();
    assert_eq!(nonces.len(), 1, "{text}");
    let start = lines
        .iter()
        .position(|l| marker(l) && l.ends_with(":result-start"))
        .unwrap_or_else(|| panic!("no result-start:\n{text}"));
    let end = lines
        .iter()
        .position(|l| marker(l) && l.ends_with(":result-end"))
        .unwrap_or_else(|| panic!("no result-end:\n{text}"));
    assert!(start < end && end == lines.len() - 1, "{text}");
    let result: Value = serde_json::from_str(&lines[start + 1..end].join("\n")).unwrap();
    assert_eq!(result["status"], "success");
    assert_eq!(result["output"]["message"], "Hello, Ada!");
    // Each event line is JSON with an `event` field.
    let prefix = format!("@@flowrun:{}:event ", nonces.iter().next().unwrap());
    let kinds: Vec<String> = lines
        .iter()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(|j| {
            serde_json::from_str::<Value>(j).unwrap()["event"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| *k == "node_start").count(),
        4,
        "{kinds:?}"
    );
    assert_eq!(kinds.iter().filter(|k| *k == "node_end").count(), 4);
}

/// The modules a plain workflow's script must not import on its way: each costs milliseconds of
/// every cold start (`signal` pulls in `enum`, `functools` and `collections`, ~4.5 ms; `json` and
/// `re` ~7 ms; the `utf-8-sig` codec is looked up and imported), and a node that needs one
/// imports it itself. Measured with `-X importtime`, which lists every import as it happens.
#[test]
fn a_plain_workflow_imports_nothing_slow_at_start() {
    let env = Env::new();
    let script = env.path("w3.py");
    let w3 = repo_root().join("bench/w3.json");
    let out = env.cmd([
        std::ffi::OsStr::new("codegen"),
        w3.as_os_str(),
        std::ffi::OsStr::new("-o"),
        script.as_os_str(),
    ]);
    assert_success(&out, "codegen -o");
    // With a byte-order mark, which the runtime drops without the utf-8-sig codec.
    let trigger = env.write_file("trigger.json", "\u{feff}{\"name\": \"Ada\", \"n\": 3}");
    let out = Command::new("python3")
        .args(["-I", "-S", "-u", "-X", "importtime"])
        .arg(&script)
        .stdin(Stdio::from(std::fs::File::open(&trigger).unwrap()))
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(r#""node":"answer","status":"success""#)
            && stdout.contains(r#""name":"Ada""#),
        "{stdout}"
    );
    let imported: Vec<&str> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("import time:"))
        .filter_map(|l| l.rsplit('|').next())
        .map(str::trim)
        .collect();
    assert!(
        imported.contains(&"_ast"),
        "the code node's import is listed: {imported:?}"
    );
    for slow in [
        "signal",
        "enum",
        "functools",
        "collections",
        "re",
        "json",
        "encodings.utf_8_sig",
        "ast",
    ] {
        assert!(
            !imported.contains(&slow),
            "{slow} imported at start: {imported:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// pyliteral::string round-trips through Python for arbitrary strings
// ---------------------------------------------------------------------------------------------

/// Strings biased towards what is hard to escape, plus arbitrary Unicode.
fn nasty_string() -> impl Strategy<Value = String> {
    let special = prop::sample::select(vec![
        '\'',
        '"',
        '\\',
        '\n',
        '\r',
        '\t',
        '\0',
        '\u{b}',
        '\u{c}',
        '\u{1b}',
        '\u{7f}',
        '\u{85}',
        '\u{a0}',
        '\u{ad}',
        '\u{200b}',
        '\u{200d}',
        '\u{2028}',
        '\u{2029}',
        '\u{202a}',
        '\u{202e}',
        '\u{2066}',
        '\u{2069}',
        '\u{feff}',
        '\u{fffd}',
        '\u{ffff}',
        '\u{10ffff}',
        '😀',
        'é',
        '\u{301}',
        '日',
        '{',
        '}',
        'x',
        'N',
        'u',
        'U',
        '0',
        '#',
    ]);
    prop_oneof![
        prop::collection::vec(special, 0..24).prop_map(|v| v.into_iter().collect()),
        any::<String>(),
        "[\\x00-\\x7f]{0,24}",
    ]
}

/// Evaluates each line of `lines` with `ast.literal_eval` in one Python process; returns the
/// values as JSON, or the error text for a line that is not a plain `str` literal.
fn eval_literals(lines: &[String]) -> Vec<Result<String, String>> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("literals.txt");
    std::fs::write(&file, lines.join("\n")).unwrap();
    let program = r#"
import ast, json, sys
data = open(sys.argv[1], encoding="utf-8", newline="").read()
for line in data.split("\n"):
    try:
        v = ast.literal_eval(line)
        if type(v) is not str:
            raise TypeError("not a str: %r" % type(v))
        print(json.dumps({"ok": v}))
    except Exception as e:
        print(json.dumps({"err": "%s: %s" % (type(e).__name__, e)}))
"#;
    let out = Command::new("python3")
        .args(["-I", "-S", "-c", program])
        .arg(&file)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            match v.get("ok") {
                Some(Value::String(s)) => Ok(s.clone()),
                _ => Err(v["err"].as_str().unwrap_or("?").to_string()),
            }
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn pyliteral_string_round_trips(strings in prop::collection::vec(nasty_string(), 200)) {
        let literals: Vec<String> = strings
            .iter()
            .map(|s| {
                let mut out = String::new();
                flowrun_codegen::pyliteral::string(s, &mut out);
                out
            })
            .collect();
        for (s, lit) in strings.iter().zip(&literals) {
            // One line of printable ASCII or non-ASCII letters/digits: nothing that ends a line,
            // a string or changes how the source reads.
            prop_assert!(
                lit.chars().all(|c| (' '..='~').contains(&c) || (!c.is_ascii() && c.is_alphanumeric())),
                "literal of {:?} has a raw special character: {}", s, lit
            );
        }
        let values = eval_literals(&literals);
        prop_assert_eq!(values.len(), strings.len());
        for ((s, lit), v) in strings.iter().zip(&literals).zip(values) {
            prop_assert_eq!(v, Ok(s.clone()), "literal {}", lit);
        }
    }
}
